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
