#!/usr/bin/env python3
"""Records what chat templates render, as the reference for kvfit's Jinja interpreter.

Each template in tests/data/chat_templates/ is rendered with jinja2 set up the way Hugging Face
transformers renders chat templates (trim_blocks and lstrip_blocks on, the loopcontrols
extension, an immutable sandbox, transformers' own tojson filter and its raise_exception and
strftime_now globals), over a set of conversations. The results go to
tests/data/chat_template_cases.txt, which tests/test_chat_template.cpp compares kvfit's
rendering with, byte for byte.

Where a local GGUF carries the template (tokenizer.chat_template), the fixture is checked
against it (or rewritten with --update-fixtures); bos_token and eos_token come from the GGUF's
vocabulary when the file is there and from the table below otherwise.

    python3 tests/peer/render_templates.py            # rewrite the cases file
    python3 tests/peer/render_templates.py --check    # fail if the cases file is stale

Needs only jinja2 (pip install jinja2). Not run by the build or by ctest.
"""

import argparse
import copy
import json
import os
import struct
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIXTURES = os.path.join(REPO, "tests", "data", "chat_templates")
OUT = os.path.join(REPO, "tests", "data", "chat_template_cases.txt")

# strftime_now renders this moment; the C++ test passes the same time (UTC seconds).
FIXED_NOW = datetime(2025, 2, 3, 12, 0, 0)
FIXED_NOW_EPOCH = 1738584000

# name, fixture, GGUF that may carry the template and the special tokens, and the
# special tokens of the model's tokenizer_config.json for when that GGUF is absent.
TEMPLATES = [
    ("smollm2", "smollm2.jinja", "models/SmolLM2-135M-Instruct.Q4_1.gguf", "<|im_start|>", "<|im_end|>"),
    ("gemma3", "gemma3.jinja", "models/gemma-3-270m-q4_k_m.gguf", "<bos>", "<eos>"),
    ("qwen2.5", "qwen2.5.jinja", None, None, "<|im_end|>"),
    ("llama3.2", "llama3.2.jinja", None, "<|begin_of_text|>", "<|eot_id|>"),
]


# ---------------------------------------------------------------- GGUF metadata

def gguf_metadata(path):
    """The key/value metadata of a GGUF file (the tensors are not read)."""
    scalars = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    with open(path, "rb") as f:
        def read(fmt):
            size = struct.calcsize("<" + fmt)
            return struct.unpack("<" + fmt, f.read(size))[0]

        def read_str():
            return f.read(read("Q")).decode("utf-8", "surrogateescape")

        def read_value(kind):
            if kind in scalars:
                return read(scalars[kind])
            if kind == 8:
                return read_str()
            if kind == 9:
                item_kind, count = read("I"), read("Q")
                return [read_value(item_kind) for _ in range(count)]
            raise ValueError("%s: unknown GGUF value type %d" % (path, kind))

        if f.read(4) != b"GGUF":
            raise ValueError("%s is not a GGUF file" % path)
        read("I")  # version
        read("Q")  # tensor count
        meta = {}
        for _ in range(read("Q")):
            key = read_str()
            meta[key] = read_value(read("I"))
        return meta


# ---------------------------------------------------------------- jinja2 as transformers has it

def hf_environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return FIXED_NOW.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


# ---------------------------------------------------------------- conversations

UNICODE = "héllo wörld — 日本語, emoji 🙂 and a zero-width joiner 👩\u200d💻"
SPECIAL = "quotes ' \" and \\ backslashes, braces {{ x }} {% if %} {# c #}, tags <|im_end|> <end_of_turn>\ttab"

CONVERSATIONS = [
    ("user", [("user", "Hello!")]),
    ("system_user", [("system", "You are terse."), ("user", "What is 2+2?")]),
    ("multi_turn", [("system", "You are terse."), ("user", "Hi there"), ("assistant", " Hello!\n"),
                    ("user", "What is 2+2?")]),
    ("no_system_multi_turn", [("user", "One"), ("assistant", "Two"), ("user", "Three"), ("assistant", "Four")]),
    ("unicode", [("user", UNICODE), ("assistant", "日本語で答えます。"), ("user", "Ελληνικά, русский, עברית")]),
    ("special_chars", [("system", "  padded system  \n"), ("user", SPECIAL), ("assistant", "\n\nline1\r\nline2\n\n"),
                       ("user", "")]),
    ("whitespace_only", [("user", " \t\n ")]),
    ("non_alternating", [("user", "First"), ("user", "Second")]),
    ("assistant_first", [("assistant", "I start."), ("user", "Fine.")]),
    ("late_system", [("user", "Hi"), ("system", "Late system"), ("assistant", "Ok")]),
    ("tool_turns", [("user", "Weather?"), ("assistant", "Let me check."), ("tool", "{\"temp\": 21}"),
                    ("tool", "sunny"), ("assistant", "21 and sunny.")]),
    ("ipython_turn", [("system", "sys"), ("user", "Run it"), ("ipython", "42")]),
    ("empty", []),
    ("long", [("user" if i % 2 == 0 else "assistant", "turn %d %s" % (i, "x" * i)) for i in range(24)]),
]


# Small templates over the language features chat templates use, rendered with the variables of
# SNIPPET_VARIABLES: they pin down semantics the four real templates do not reach.
SNIPPETS = [
    # output, literals and whitespace control
    "plain text", "{{ 'a' }}{{ \"b\" }}{{ 'c' 'd' }}", "{{ 1 }} {{ -2 }} {{ 1.5 }} {{ 1e3 }} {{ 2.0 }} {{ 0.1 + 0.2 }}",
    "{{ 1_000 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1.5e-7 }} {{ 1e16 }} {{ 1e15 }} {{ 123456789.123456789 }}",
    "{{ none }} {{ None }} {{ true }} {{ True }} {{ false }}", "{{ undefined_name }}|", "{{ [1, 'a', none, true, 2.5] }}",
    "{{ {'k': 'v', 'n': [1, {'x': none}]} }}", "{{ (1, 2) }} {{ (1,) }} {{ () }} {{ 1, 2 }}", "{{ \"it's\" }} {{ 'say \"hi\"' }} {{ [\"it's\", 'a\"b'] }}",
    "{{ 'tab\\there\\nnewline \\\\ back \\x41 \\u00e9 \\101 \\q' }}", "{{ ['\\n', '\\t', '\\x01', '\\u00a0', '\\u2028'] }}",
    "  {% if true %}\n  x\n  {% endif %}\n  y", "{%- if true -%}\n  a  \n{%- endif -%}\n  b", "{{- '  x' -}}  \n y",
    "a  {%+ if true %}b{% endif +%}\nc", "x {#+ c +#}\ny", "{# comment #}\nafter", "  {# indented comment #}\nz",
    "{% if true %}\r\nwin\r\n{% endif %}\r\n", "line\n", "line\n\n", "a\n{% raw %}{{ x }}{% endraw %}\nb",
    "{%- raw -%}  {% if %}  {%- endraw -%}  after", "{{ 'a' }}\n{{ 'b' }}\n", "{% if true %}x{% endif %}\n{% if false %}y{% endif %}\nz",
    "\t{% for i in [1, 2] %}\n\t{{ i }}\n\t{% endfor %}\n", "{% for i in [1, 2] %}{{ i }}\n{% endfor %}",
    "{% for i in [1,2] -%}\n  {{ i }}\n{%- endfor %}", "x {{- ' ' -}} y", "{{ 'x' }}   {% if true %}   y{% endif %}",
    "\u00a0{% if true %}nbsp{% endif %}", "{{ '\u3000' }}{%- if true %}q{% endif %}",
    # operators
    "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }}",
    "{{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 2 ** -1 }} {{ 7 // 2.0 }} {{ 7 % 2.5 }} {{ -7.5 // 2 }} {{ 4 / 2 }}",
    "{{ 'a' + 'b' ~ 'c' }} {{ 1 ~ 2 }} {{ 'x' * 3 }} {{ 3 * 'x' }} {{ [1] * 2 }} {{ 'a' * -1 }}|", "{{ [1, 2] + [3] }} {{ (1,) + (2,) }}",
    "{{ 1 == 1.0 }} {{ true == 1 }} {{ 1 + true }} {{ 'a' == 'a' }} {{ [1] == [1] }} {{ [1] == (1,) }} {{ none == none }}",
    "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 2 >= 2 }} {{ 1 != 2 }}",
    "{{ true and 'x' }} {{ false or 'y' }} {{ 0 or [] }} {{ 'a' and 0 }} {{ none or 'd' }} {{ not 0 }} {{ not 'a' }}",
    "{{ 'x' in ['x'] }} {{ 'a' in {'a': 1} }} {{ 'ell' in 'hello' }} {{ 'z' not in 'abc' }} {{ 3 not in [1, 2] }}",
    "{{ u ~ 'a' }} {{ u == u }} {{ u is defined }} {{ 'x' in u }} {{ u | length }} {{ not u }}",
    "{{ 'a' if true else 'b' }} {{ 'a' if false else 'b' }} {{ 'a' if false }}| {{ 1 if 0 else 2 if 0 else 3 }}",
    "{{ -(3) }} {{ +3 }} {{ -3.5 }} {{ - -3 }} {{ -true }}", "{{ 1 - 1.0 }} {{ -0.0 }} {{ 0.0 }} {{ 1e300 * 1e300 }} {{ 10 / 4 }}",
    # variables and scoping
    "{% set x = 5 %}{% for i in [1, 2] %}[{{ x }}]{% set x = i %}[{{ x }}]{% endfor %}[{{ x }}]",
    "{% for i in [1, 2] %}{% if i == 2 %}[{{ x }}]{% endif %}{% set x = i %}{% endfor %}[{{ x }}]",
    "{% if true %}{% set y = 3 %}{% endif %}{{ y }}", "{% set a, b = 1, 2 %}{{ a }}{{ b }}", "{% set a, b = 'xy' %}{{ b }}{{ a }}",
    "{% set x %}  hi {{ 1 }}\n{% endset %}[{{ x }}]", "{% set messages = messages[1:] %}{{ messages | length }}",
    "{% set ns = namespace(a=1, b='x') %}{% for i in [1, 2, 3] %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}{{ ns.b }}",
    "{% set ns = namespace() %}{% set ns.found = false %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }}",
    "{% set ns = namespace(a=1) %}{{ ns }}", "{% set ns = namespace({'k': 2}) %}{{ ns.k }}", "{{ namespace(a=1).a }} {{ namespace(a=1).b }}|",
    "{% set x = 1 %}{% macro f() %}{{ x }}{% endmacro %}{% set x = 2 %}{{ f() }}",
    "{% macro f() %}{{ y }}{% endmacro %}{% for y in [7] %}[{{ f() }}]{% endfor %}",
    "{% macro f(a, b='B', c=none) %}[{{ a }}{{ b }}{{ c }}]{% endmacro %}{{ f(1) }}{{ f(1, 2) }}{{ f(1, c=3) }}{{ f() }}",
    "{% macro render(m) -%}\n<{{ m.role }}>{{ m.content | trim }}\n{%- endmacro %}{% for m in messages %}{{ render(m) }}{% endfor %}",
    "{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }}",
    # loops
    "{% for x in [1, 2, 3] if x > 1 %}{{ loop.index }}/{{ loop.length }}{{ loop.first }}{{ loop.last }};{% else %}none{% endfor %}",
    "{% for x in 'ab' %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.previtem }}|{{ loop.nextitem }}|{{ loop.cycle('o', 'e') }};{% endfor %}",
    "{% for x in [] %}a{% else %}b{% endfor %}", "{% for k in {'a': 1, 'b': 2} %}{{ k }}{% endfor %}",
    "{% for a, b in [[1, 2], [3, 4]] %}{{ a }}{{ b }}{% endfor %}", "{% for k, v in {'x': 1, 'y': 2}.items() %}{{ k }}={{ v }};{% endfor %}",
    "{% for k, v in {'x': 1} | items %}{{ k }}{{ v }}{% endfor %}", "{% for i in range(3) %}{{ i }}{% endfor %} {{ range(1, 10, 3) | list }} {{ range(5, 0, -2) | list }}",
    "{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    "{% for o in [1, 2] %}{% for i in [1, 2] %}{{ loop.index }}{{ o }}{% if i == 2 %}{% break %}{% endif %}{% endfor %}{{ loop.index }};{% endfor %}",
    "{% for m in messages %}{{ loop.index0 }}:{{ m.role }}{% if not loop.last %},{% endif %}{% endfor %}",
    "{% for m in messages %}{% if loop.index0 > 0 %}{{ messages[loop.index0 - 1].role }}>{% endif %}{{ m['role'] }} {% endfor %}",
    "{% for x in u %}never{% endfor %}ok", "{{ loop }}|", "{% for x in [1] %}{% set loop_copy = loop.index %}{% endfor %}{{ loop_copy }}|",
    "{% for i in range(3) %}{{ i }}{% if i == 1 %}{% break %}{% endif %}{% else %}[else after break]{% endfor %}",
    "{% for i in range(3) %}{% continue %}{% else %}[else after continue]{% endfor %}{% for i in [1] if false %}{% else %}[no items]{% endfor %}",
    "{% if messages | selectattr('role', 'equalto', 'tool') %}a generator is true{% endif %} {{ messages | selectattr('role', 'equalto', 'tool') | list | length }}",
    "{% set g = messages | map(attribute='role') %}{{ g | first }} {{ g | list }} {{ g | list }}",
    "{{ range(3) }} {{ range(1, 10, 3) }} {{ range(10)[::2] }} {{ range(10)[5:2] }} {{ range(10)[::-1] }} {{ range(3) | string }} {{ range(4).stop }}",
    "{{ [1, 2, 1].count(1) }} {{ ['a', 'b'].index('b') }} {{ {'a': 1}.keys() }} {{ {'a': 1}.values() }} {{ {'a': 1}.items() }} {{ 'a' in {'a': 1}.keys() }}",
    "{{ [1].append(2) }}", "{{ 3 | indent }}", "{{ u | int }}", "{% set x = 7 %}{{ x[:2] }}", "{{ messages[0][1:] }}",
    # attributes and subscripts
    "{{ messages[0].role }} {{ messages[0]['role'] }} {{ messages.0.role }} {{ messages[-1].content }} {{ messages[1:] | length }}",
    "{{ messages[5] }}|{{ messages[0].nope }}|{{ messages[0]['nope'] }}|", "{{ {'a': 1}.a }} {{ {'items': 1}['items'] }} {{ {'a': 1}.get('a') }} {{ {'a': 1}.get('b') }} {{ {'a': 1}.get('b', 3) }}",
    "{{ [1, 2, 3][1:] }} {{ [1, 2, 3][-1] }} {{ [1, 2, 3][::2] }} {{ [1, 2, 3][::-1] }} {{ 'abc'[-5:10] }} {{ 'hello'[1:-1] }} {{ 'héllo'[1:3] }}",
    "{{ 'abcdef'[::-2] }} {{ [1, 2, 3, 4][3:0:-1] }} {{ (1, 2, 3)[1:] }} {{ 'abc'[5:] }}| {{ 'abc'[0] }}{{ 'héllo'[1] }}{{ 'abc'[-1] }}",
    "{{ {'a': 1}.keys() | list }} {{ {'a': 1}.values() | list }} {{ {'a': 1}['a'] }} {{ messages[0].get('content') }}",
    # filters
    "{{ '  x  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ ' \\u3000x\\xa0 ' | trim }}|{{ none | trim }}|{{ u | trim }}|",
    "{{ 'héllo' | length }} {{ [1, 2] | length }} {{ {'a': 1} | length }} {{ u | length }} {{ 'ab' | count }}",
    "{{ 'Hello' | upper }} {{ 'Hello' | lower }} {{ 'hello world' | capitalize }} {{ 'hello world-x (y) [z] <w>' | title }} {{ 'ÉCOLE ß' | lower }} {{ 'straße' | upper }}",
    "{{ u | default('d') }} {{ '' | default('d') }} {{ '' | default('d', true) }} {{ none | default('d') }} {{ 0 | d(5, true) }}",
    "{{ [1, 2] | join(', ') }} {{ ['a', 'b'] | join }} {{ 'abc' | join('-') }} {{ messages | join(',', attribute='role') }}",
    "{{ [1, 2] | first }} {{ [1, 2] | last }} {{ 'ab' | first }} {{ 'ab' | last }} {{ [] | first }}| {{ {'x': 1} | first }}",
    "{{ {'b': 1, 'a': [1, 'é\\n', none, true, 1.5]} | tojson }}", "{{ [1, 2] | tojson(indent=4) }}", "{{ {'a': {'b': []}, 'c': {}} | tojson(indent=2) }}",
    "{{ 'é<>&\\'' | tojson }} {{ 'é' | tojson(ensure_ascii=true) }} {{ '🙂' | tojson(ensure_ascii=true) }} {{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}",
    "{{ {'a': 1, 'b': [1, 2]} | tojson(separators=(',', ':')) }} {{ messages[0] | tojson }} {{ 1.0 | tojson }} {{ none | tojson }}",
    "{{ 'x' | string }}{{ 5 | string }}{{ none | string }}{{ [1] | string }}{{ u | string }}|",
    "{{ 3.7 | int }} {{ '12' | int }} {{ ' 12 ' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ '3.5' | int }} {{ '0x1A' | int(0, 16) }} {{ true | int }} {{ none | int }}",
    "{{ '3.5' | float }} {{ 2 | float }} {{ 'x' | float }} {{ '1e3' | float }} {{ '-inf' | float }}",
    "{{ 'abcb' | replace('b', 'X') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'ab' | replace('', '-') }}",
    "{{ {'a': 1, 'b': 2} | items | list }} {{ 'ab' | list }} {{ {'x': 1} | list }} {{ [3, 1, 2] | sort }} {{ ['b', 'A', 'a'] | sort }} {{ ['b', 'A'] | sort(case_sensitive=true) }}",
    "{{ [3, 1, 2] | sort(reverse=true) }} {{ messages | sort(attribute='role') | map(attribute='role') | join(',') }} {{ [1, 2] | reverse | list }} {{ 'abc' | reverse }}",
    "{{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ messages | rejectattr('role', 'eq', 'user') | map(attribute='role') | list }}",
    "{{ messages | map(attribute='content') | map('upper') | join('|') }} {{ [1, 0, 2] | select | list }} {{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3] | reject('even') | list }}",
    "{{ messages | selectattr('role', 'in', ['user', 'system']) | list | length }} {{ [1, 2] | map('string') | join }} {{ messages | map(attribute='x', default='-') | join }}",
    "{{ [3, 1] | max }} {{ [3, 1] | min }} {{ ['b', 'A'] | max }} {{ [1, 2] | sum }} {{ [1.5, 2] | sum }} {{ -3 | abs }} {{ 'x' | safe }} {{ '<a href=\"x\">' | e }}",
    "{{ 'a\\nb\\n\\nc' | indent }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(first=true, blank=true) }}|{{ 'x' | indent('> ') }}",
    "{{ {'b': 1, 'A': 3, 'a': 2} | dictsort }} {{ {'b': 1, 'a': 2} | dictsort(by='value', reverse=true) }} {{ ['a', 'B', 'b', 'a', 1] | unique | list }} {{ messages | unique(attribute='role') | list | length }}",
    "{{ 2.5 | round }} {{ 3.5 | round }} {{ 2.675 | round(2) }} {{ 1.15 | round(1) }} {{ 3 | round }} {{ 2.7 | round(0, 'floor') }} {{ 2.1 | round(1, 'ceil') }} {{ -0.5 | round }}",
    "{{ messages[0] | attr('role') }}| {{ ({'items': 1} | attr('items')) is callable }}|",
    # tests
    "{{ x is defined }} {{ x is undefined }} {{ none is none }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} {{ u is iterable }}",
    "{{ 3 is number }} {{ 3 is integer }} {{ 3.0 is float }} {{ true is boolean }} {{ true is number }} {{ true is integer }} {{ 4 is even }} {{ 3 is odd }} {{ 6 is divisibleby 3 }} {{ 6 is divisibleby(4) }}",
    "{{ 'a' is lower }} {{ 'A' is upper }} {{ 1 is eq 1 }} {{ 1 is ne 2 }} {{ 1 is lt 2 }} {{ 2 is ge 2 }} {{ 'a' is in 'abc' }} {{ 1 is in [1] }} {{ true is true }} {{ 0 is false }}",
    "{{ none is not none }} {{ 'x' is not string }} {{ messages is sequence }} {{ messages[0] is mapping }} {{ range is callable }} {{ 1 is sameas 1 }}",
    # string methods
    "{{ '  x  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ ' x '.lstrip() }}|{{ ' x '.rstrip() }}|{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'abc'.startswith('b') }}",
    "{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a b c'.rsplit(' ', 1) }} {{ ' a b c '.split(none, 1) }} {{ ' a b c '.rsplit(none, 1) }} {{ ''.split() }} {{ ''.split(',') }}",
    "{{ 'hello world'.title() }} {{ \"they're bill's\".title() }} {{ 'Hello'.upper() }}{{ 'Hello'.lower() }}{{ 'aBC'.capitalize() }} {{ 'abcabc'.replace('b', 'X', 1) }}",
    "{{ 'abc'.find('c') }} {{ 'abc'.find('z') }} {{ 'héllo'.find('l') }} {{ 'abcabc'.rfind('b') }} {{ 'aaa'.count('a') }} {{ '-'.join(['a', 'b']) }} {{ 'a\\nb\\r\\nc'.splitlines() }}",
    "{{ '12'.isdigit() }} {{ 'ab'.isalpha() }} {{ ' '.isspace() }} {{ 'ab1'.isalnum() }} {{ 'ab'.islower() }} {{ 'AB'.isupper() }} {{ ''.isdigit() }}",
    "{{ messages[1].content.upper() }} {{ (messages | last).content.strip('!') }} {{ messages[1]['content'].startswith('H') }}",
    # globals
    "{{ raise_exception('custom refusal') }}", "{% if messages | length > 2 %}{{ raise_exception('too long: ' ~ messages | length) }}{% endif %}",
    "{{ strftime_now('%Y-%m-%d %H:%M:%S %a %A %b %B %d %j %p %y %%') }}", "{{ dict(a=1, b='x') }} {{ dict() }}",
    "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools }}|{{ documents }}|{{ tools is none }}|{{ custom_tools is defined }}",
    "{{ bos_token + messages[0]['content'] + eos_token }}",
    # runtime errors jinja2 raises too
    "{{ u.attr }}", "{{ u['k'] }}", "{{ u + 'a' }}", "{{ messages[5].role }}", "{{ 'a' + 1 }}", "{{ 1 + 'a' }}", "{{ 1 / 0 }}", "{{ 3 % 0 }}",
    "{{ 1 < 'a' }}", "{{ none < 1 }}", "{{ [1] + (2,) }}", "{{ - 'a' }}", "{{ 1 in 'abc' }}", "{{ 'x' in 3 }}", "{% for x in none %}{% endfor %}",
    "{% for x in 3 %}{% endfor %}", "{% for a, b in [[1, 2, 3]] %}{% endfor %}", "{% set x = 1 %}{% set x.y = 2 %}", "{{ 'abc'.split('') }}",
    "{{ none | length }}", "{{ 3 is odd(1) }}", "{{ [1, 2][0:1:0] }}", "{{ range(200000) | length }}", "{{ 'a'.nope() }}", "{{ u() }}", "{{ 5() }}",
    "{% macro f(a) %}{% endmacro %}{{ f(1, 2) }}", "{% macro f(a) %}{% endmacro %}{{ f(b=1) }}", "{{ {'a': 1} | tojson(indent=none, bad=1) }}", "{{ u | tojson }}",
    # syntax errors
    "{{ x | no_such_filter }}", "{{ x is no_such_test }}", "{% foo %}", "{% if x %}", "{% endif %}", "{{ 'unterminated }}", "{{ (1 }}", "{{ 1 + }}",
    "{{ messages | first['role'] }}", "{% for x in %}{% endfor %}", "{{ }}", "{% set %}", "{% macro f(a=1, b) %}{% endmacro %}", "{{ 'a' if }}",
    "{{ x is defined is defined }}", "{% break %}", "{# unterminated comment", "{% raw %}no end", "{{ 1 2 }}", "{{ a.1b }}", "text {{ x ]}}",
]

SNIPPET_VARIABLES = {
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                 {"role": "assistant", "content": "Hello!"}],
    "add_generation_prompt": True,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "tools": None,
    "documents": None,
}


def render_snippet(env, source):
    """('expect', text) or ('error', kind, message); kind: syntax, raise, undefined or runtime."""
    try:
        template = env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:  # includes TemplateAssertionError
        return ("error", "syntax", str(e))
    except SyntaxError as e:  # the compiled Python itself, e.g. a break outside a loop
        return ("error", "syntax", "%s: %s" % (type(e).__name__, e.msg))
    try:
        # a fresh copy each time: some filters change what they are given (indent's +=)
        return ("expect", template.render(**copy.deepcopy(SNIPPET_VARIABLES)))
    except jinja2.exceptions.UndefinedError as e:
        return ("error", "undefined", str(e))
    except jinja2.exceptions.TemplateSyntaxError as e:
        return ("error", "syntax", str(e))
    except jinja2.exceptions.TemplateError as e:
        kind = "raise" if type(e) is jinja2.exceptions.TemplateError else "runtime"
        return ("error", kind, str(e))
    except Exception as e:  # TypeError, ValueError, ZeroDivisionError, OverflowError ...
        return ("error", "runtime", "%s: %s" % (type(e).__name__, e))


def escape(s):
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def render_case(template, bos, eos, messages, add_generation_prompt):
    """('expect', text) or ('error', kind, message)."""
    variables = {
        "messages": [{"role": r, "content": c} for r, c in messages],
        "add_generation_prompt": add_generation_prompt,
        # transformers passes these two even when the caller has none
        "tools": None,
        "documents": None,
    }
    if bos is not None:
        variables["bos_token"] = bos
    if eos is not None:
        variables["eos_token"] = eos
    try:
        return ("expect", template.render(**variables))
    except jinja2.exceptions.UndefinedError as e:
        return ("error", "undefined", str(e))
    except jinja2.exceptions.TemplateError as e:
        return ("error", "raise", str(e))


def load_template(name, fixture, gguf, bos, eos, update_fixtures):
    path = os.path.join(FIXTURES, fixture)
    with open(path, encoding="utf-8", newline="") as f:
        source = f.read()
    gguf_path = os.path.join(REPO, gguf) if gguf else None
    origin = "fixture"
    if gguf_path and os.path.exists(gguf_path):
        meta = gguf_metadata(gguf_path)
        tokens = meta.get("tokenizer.ggml.tokens", [])
        if "tokenizer.ggml.bos_token_id" in meta:
            bos = tokens[meta["tokenizer.ggml.bos_token_id"]]
        if "tokenizer.ggml.eos_token_id" in meta:
            eos = tokens[meta["tokenizer.ggml.eos_token_id"]]
        in_gguf = meta.get("tokenizer.chat_template")
        if in_gguf is not None:
            origin = "checked against " + os.path.basename(gguf)
            if in_gguf != source:
                if not update_fixtures:
                    sys.exit("%s differs from the template in %s (run with --update-fixtures)" % (path, gguf))
                with open(path, "w", encoding="utf-8", newline="") as f:
                    f.write(in_gguf)
                source = in_gguf
    return source, bos, eos, origin


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    ap.add_argument("--update-fixtures", action="store_true",
                    help="rewrite a fixture that differs from the template in its GGUF")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()

    env = hf_environment()
    lines = [
        "# Expected renderings of chat templates: written by tests/peer/render_templates.py, do not edit.",
        "# jinja2 %s, set up as Hugging Face transformers renders chat templates (trim_blocks," % jinja2.__version__,
        "# lstrip_blocks, loopcontrols, immutable sandbox, its tojson, raise_exception and strftime_now).",
        "# Variables: messages, add_generation_prompt, bos_token, eos_token, tools=None, documents=None.",
        "# strftime_now formats %s (UTC seconds %d)." % (FIXED_NOW.isoformat(), FIXED_NOW_EPOCH),
        "#",
        "# template NAME FILE        the template in tests/data/chat_templates/FILE",
        "# bos TEXT / eos TEXT       bos_token and eos_token (absent line: undefined)",
        "# case NAME                 then: add_generation_prompt 0|1, message ROLE CONTENT..., and",
        "# expect TEXT               the rendering, or",
        "# error KIND MESSAGE        a failure: KIND raise (raise_exception) or undefined (jinja2 UndefinedError)",
        "# Text is UTF-8 with \\\\, \\n, \\r, \\t and \\xHH escapes.",
    ]
    for name, fixture, gguf, bos, eos in TEMPLATES:
        source, bos, eos, origin = load_template(name, fixture, gguf, bos, eos, args.update_fixtures)
        template = env.from_string(source)
        lines.append("")
        lines.append("template %s %s" % (name, fixture))
        lines.append("# %s" % origin)
        if bos is not None:
            lines.append("bos " + escape(bos))
        if eos is not None:
            lines.append("eos " + escape(eos))
        for conv_name, messages in CONVERSATIONS:
            for agp in (True, False):
                result = render_case(template, bos, eos, messages, agp)
                lines.append("case %s%s" % (conv_name, "" if agp else "_no_prompt"))
                lines.append("add_generation_prompt %d" % agp)
                for role, content in messages:
                    lines.append("message %s %s" % (role, escape(content)))
                if result[0] == "expect":
                    lines.append("expect " + escape(result[1]))
                else:
                    lines.append("error %s %s" % (result[1], escape(result[2])))
                lines.append("end")
    lines.append("")
    lines.append("# Snippets: variables messages (system 'Be brief.', user 'Hi', assistant 'Hello!'),")
    lines.append("# add_generation_prompt true, bos_token '<s>', eos_token '</s>', tools and documents none.")
    lines.append("# error syntax: jinja2 rejects the template itself (kvfit: KVFIT_E_UNSUPPORTED).")
    for i, source in enumerate(SNIPPETS):
        result = render_snippet(env, source)
        lines.append("snippet %d" % (i + 1))
        lines.append("source " + escape(source))
        if result[0] == "expect":
            lines.append("expect " + escape(result[1]))
        else:
            lines.append("error %s %s" % (result[1], escape(result[2])))
        lines.append("end")
    text = "\n".join(lines) + "\n"

    if args.check:
        with open(args.out, encoding="utf-8", newline="") as f:
            if f.read() != text:
                sys.exit("%s is stale: run tests/peer/render_templates.py" % args.out)
        print("%s is up to date" % args.out)
        return
    with open(args.out, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    print("wrote %s" % args.out)


if __name__ == "__main__":
    main()
