// Unit tests of the chat templates (src/chat/chat_template.cpp): each family
// renders a conversation byte for byte as expected, families are recognised
// from their Jinja text, SmolLM2's built-in system prompt is found and
// reproduced exactly, and unknown names are refused. Then the Jinja
// interpreter (src/chat/jinja*.cpp): real models' templates and a set of
// snippets render byte for byte as jinja2 does (tests/data/
// chat_template_cases.txt, recorded by tests/peer/render_templates.py),
// errors come back as statuses with clear messages, hostile templates end
// within the limits, and kvfit_chat_apply renders a model's own template.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "common.h"
#include "gguf/gguf.h"
#include "chat/jinja.h"
#include "kvfit.h"
#include "testutil.h"

// cmocka.h last: its fail() macro would rewrite the declaration of
// kvfit::fail in common.h (and anything else named fail).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
extern "C" {  // cmocka 1.1 does not declare all of its functions extern "C"
#include <cmocka.h>
}

using kvfit::chat_template_apply;
using kvfit::chat_template_canonical_name;
using kvfit::chat_template_default_system;
using kvfit::chat_template_detect;
using kvfit::ChatMessage;

// tokenizer.chat_template of SmolLM2-135M-Instruct, as stored in its GGUF
// (the newlines inside the string literals are real newlines there).
static const char *kSmolLM2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
static const char *kSmolDefault = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

// Representative snippets of other families' templates.
static const char *kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
static const char *kLlama2 =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
static const char *kGemma =
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first_user_prefix = messages[0]['content'] + "
    "'\n\n' %}{% endif %}{% for message in loop_messages %}{{ '<start_of_turn>' + role + '\n' }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";
static const char *kZephyr =
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + "
    "'<|endoftext|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}";

// system + user + assistant + user, with some whitespace that the trimming
// families (llama3, gemma) remove and the others keep.
static std::vector<ChatMessage> conversation() {
    return {
        {"system", "You are terse."},
        {"user", "Hi there"},
        {"assistant", " Hello!\n"},
        {"user", "What is 2+2?"},
    };
}

static void assert_renders(const char *family, const std::vector<ChatMessage> &msgs, bool add_assistant,
                           const std::string &default_system, const std::string &expected) {
    std::string got = chat_template_apply(family, msgs, add_assistant, default_system);
    if (got != expected) fail_msg("%s rendered\n[%s]\nexpected\n[%s]", family, got.c_str(), expected.c_str());
}

static void test_chatml(void **state) {
    (void)state;
    assert_renders("chatml", conversation(), true, "",
                   "<|im_start|>system\nYou are terse.<|im_end|>\n"
                   "<|im_start|>user\nHi there<|im_end|>\n"
                   "<|im_start|>assistant\n Hello!\n<|im_end|>\n"
                   "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                   "<|im_start|>assistant\n");
    assert_renders("chatml", conversation(), false, "",
                   "<|im_start|>system\nYou are terse.<|im_end|>\n"
                   "<|im_start|>user\nHi there<|im_end|>\n"
                   "<|im_start|>assistant\n Hello!\n<|im_end|>\n"
                   "<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
}

// What SmolLM2's Jinja produces (checked against the template by hand: a
// system turn with the built-in prompt only when the first message is not a
// system message, and none at all for an empty conversation).
static void test_smollm2_exact(void **state) {
    (void)state;
    const std::string jinja = kSmolLM2;
    assert_string_equal(chat_template_detect(jinja), "chatml");
    const std::string def = chat_template_default_system(jinja);
    assert_string_equal(def.c_str(), kSmolDefault);

    // No system message: the built-in one is inserted.
    assert_renders(
        "chatml", {{"user", "Hello"}}, true, def,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\n");
    assert_renders(
        "chatml", {{"user", "Hi there"}, {"assistant", "Hello!"}, {"user", "What is 2+2?"}}, false, def,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
    // A system message of the caller's replaces it.
    assert_renders("chatml", {{"system", "Be brief."}, {"user", "Hello"}}, true, def,
                   "<|im_start|>system\nBe brief.<|im_end|>\n"
                   "<|im_start|>user\nHello<|im_end|>\n"
                   "<|im_start|>assistant\n");
    // The check is on the first message only, as the template's loop.first.
    assert_renders(
        "chatml", {{"user", "Hello"}, {"system", "Late."}}, false, def,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>system\nLate.<|im_end|>\n");
    // Empty conversation: the loop never runs, only the generation prompt.
    assert_renders("chatml", {}, true, def, "<|im_start|>assistant\n");
    assert_renders("chatml", {}, false, def, "");
}

static void test_llama3(void **state) {
    (void)state;
    assert_renders("llama3", conversation(), true, "",
                   "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n");
    assert_renders("llama3", {{"user", "Hi"}}, false, "", "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
    // A default system prompt works for any family.
    assert_renders("llama3", {{"user", "Hi"}}, true, "Be brief.",
                   "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void test_llama2(void **state) {
    (void)state;
    // llama.cpp's rendering with system support; BOS comes from the tokenizer.
    const std::string expected =
        "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\n"
        "Hi there [/INST] Hello!\n</s>"
        "[INST] What is 2+2? [/INST]";
    assert_renders("llama2", conversation(), true, "", expected);
    assert_renders("llama2", conversation(), false, "", expected);  // the model answers after [/INST] anyway
    assert_renders("llama2", {{"user", "Hi"}, {"assistant", "Yo"}}, true, "", "[INST] Hi [/INST]Yo</s>");
}

static void test_gemma(void **state) {
    (void)state;
    assert_renders("gemma", conversation(), true, "",
                   "<start_of_turn>user\nYou are terse.\n\nHi there<end_of_turn>\n"
                   "<start_of_turn>model\nHello!<end_of_turn>\n"
                   "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
                   "<start_of_turn>model\n");
    assert_renders("gemma", {{"user", " Hi "}}, false, "", "<start_of_turn>user\nHi<end_of_turn>\n");
}

static void test_zephyr(void **state) {
    (void)state;
    assert_renders("zephyr", conversation(), true, "",
                   "<|system|>\nYou are terse.<|endoftext|>\n"
                   "<|user|>\nHi there<|endoftext|>\n"
                   "<|assistant|>\n Hello!\n<|endoftext|>\n"
                   "<|user|>\nWhat is 2+2?<|endoftext|>\n"
                   "<|assistant|>\n");
}

static void test_detect(void **state) {
    (void)state;
    assert_string_equal(chat_template_detect(kSmolLM2), "chatml");
    assert_string_equal(chat_template_detect(kLlama3), "llama3");
    assert_string_equal(chat_template_detect(kLlama2), "llama2");
    assert_string_equal(chat_template_detect(kGemma), "gemma");
    assert_string_equal(chat_template_detect(kZephyr), "zephyr");
    // Mistral's instruct template uses the same [INST] markers.
    assert_string_equal(chat_template_detect("{{ bos_token }}{% for message in messages %}"
                                             "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endfor %}"),
                        "llama2");
    // Look-alikes that render differently are not claimed.
    assert_string_equal(chat_template_detect("{{'<|im_start|>' + message['role'] + '<|im_sep|>'}}"), "");  // Phi-4
    assert_string_equal(chat_template_detect("{{'<|user|>\n' + m + '<|end|>\n<|assistant|>\n'}}"), "");    // Phi-3
    assert_string_equal(chat_template_detect("[SYSTEM_PROMPT]{{ s }}[/SYSTEM_PROMPT][INST]"), "");         // Mistral v7
    assert_string_equal(chat_template_detect("{{ messages }}"), "");
    assert_string_equal(chat_template_detect(""), "");
    // A family name stands for itself.
    assert_string_equal(chat_template_detect("Gemma"), "gemma");
}

static void test_names(void **state) {
    (void)state;
    assert_string_equal(chat_template_canonical_name("ChatML"), "chatml");
    assert_string_equal(chat_template_canonical_name("LLAMA3"), "llama3");
    assert_string_equal(chat_template_canonical_name("llama2"), "llama2");
    assert_string_equal(chat_template_canonical_name("gemma"), "gemma");
    assert_string_equal(chat_template_canonical_name("Zephyr"), "zephyr");
    assert_string_equal(chat_template_canonical_name("gemma3"), "gemma");
    assert_null(chat_template_canonical_name("vicuna"));
    assert_null(chat_template_canonical_name(""));
    // Static: the C API hands the pointer out.
    assert_ptr_equal(chat_template_canonical_name("CHATML"), chat_template_canonical_name("chatml"));
    // apply() is case-insensitive too.
    assert_renders("ChatML", {{"user", "x"}}, false, "", "<|im_start|>user\nx<|im_end|>\n");
}

static void test_unknown_name(void **state) {
    (void)state;
    try {
        chat_template_apply("vicuna", conversation(), true);
        fail_msg("accepted an unknown template");
    } catch (const kvfit::Error &e) {
        assert_int_equal(e.status(), KVFIT_E_ARG);
        std::string msg = e.what();
        assert_true(msg.find("unknown chat template 'vicuna'") != std::string::npos);
        assert_true(msg.find("known: chatml, llama3, llama2, gemma") != std::string::npos);
    }
}

static void test_default_system(void **state) {
    (void)state;
    // Escaped newlines (as when a template was written with "\\n" in JSON).
    assert_string_equal(chat_template_default_system("{{ '<|im_start|>system\\nYou are \\'Bob\\'.<|im_end|>\\n' }}"
                                                     "{{ '<|im_start|>user\\n' }}")
                            .c_str(),
                        "You are 'Bob'.");
    // Qwen2.5-style: a content-built system turn first, then the fixed default.
    assert_string_equal(chat_template_default_system(
                            "{%- if tools %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
                            "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a "
                            "helpful assistant.<|im_end|>\\n' }}{%- endif %}")
                            .c_str(),
                        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    // Plain chatml builds the system turn from the message only: no default.
    assert_string_equal(
        chat_template_default_system("{% for message in messages %}{{'<|im_start|>' + message['role'] + "
                                     "'\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}")
            .c_str(),
        "");
    assert_string_equal(
        chat_template_default_system("{{'<|im_start|>system\n' + message['content'] + '<|im_end|>\n'}}").c_str(), "");
    // Raw template text outside any block counts; a literal that is only
    // the opening of a turn built from code does not.
    assert_string_equal(chat_template_default_system("{% if messages[0]['role'] != 'system' %}<|im_start|>system\n"
                                                     "You are raw.<|im_end|>\n{% endif %}")
                            .c_str(),
                        "You are raw.");
    assert_string_equal(chat_template_default_system("{{ '<|im_start|>' }}{{ 'x' }}<|im_start|>system\n{{ sys }}"
                                                     "<|im_end|>")
                            .c_str(),
                        "");
    // Text in comments and in code outside literals is not template output.
    assert_string_equal(chat_template_default_system("{# <|im_start|>system\nNot me.<|im_end|> #}<|im_start|>").c_str(),
                        "");
    // Llama 3 with a fixed system turn.
    assert_string_equal(chat_template_default_system(
                            "{% if messages[0]['role'] != 'system' %}{{ '<|start_header_id|>system<|end_header_id|>"
                            "\n\nYou are Llama.<|eot_id|>' }}{% endif %}<|start_header_id|>")
                            .c_str(),
                        "You are Llama.");
    assert_string_equal(chat_template_default_system(kLlama3).c_str(), "");
    assert_string_equal(chat_template_default_system(kGemma).c_str(), "");
    assert_string_equal(chat_template_default_system("").c_str(), "");
}

// ---- the Jinja interpreter ----------------------------------------------------

// strftime_now renders this moment in the recorded cases (2025-02-03 12:00 UTC).
static const int64_t kFixedNow = 1738584000;

static std::string unescape(const std::string &s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\' || i + 1 >= s.size()) {
            out += s[i];
            continue;
        }
        const char c = s[++i];
        if (c == 'n') out += '\n';
        else if (c == 'r') out += '\r';
        else if (c == 't') out += '\t';
        else if (c == 'x' && i + 2 < s.size()) {
            out += char(std::stoi(s.substr(i + 1, 2), nullptr, 16));
            i += 2;
        } else out += c;
    }
    return out;
}

static std::string read_text(const char *path) {
    size_t size = 0;
    char *data = test_read_file(path, &size);
    if (!data) fail_msg("cannot read %s", path);
    std::string s(data, size);
    free(data);
    return s;
}

// One recorded case: a model template over a conversation, or a snippet.
struct Case {
    std::string where;  // "template/case" for messages
    std::string source;
    kvfit::ChatTemplateTokens tokens;
    bool add_generation_prompt = true;
    std::vector<ChatMessage> messages;
    bool expect_error = false;
    std::string error_kind, expected;  // the rendering, or the error message
};

static std::vector<Case> load_cases(size_t &n_templates, size_t &n_snippets) {
    const std::string text = read_text(test_repo_data("chat_template_cases.txt"));
    std::vector<Case> cases;
    std::string tmpl_name, tmpl_source;
    kvfit::ChatTemplateTokens tokens;
    Case cur;
    n_templates = n_snippets = 0;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t eol = text.find('\n', pos);
        if (eol == std::string::npos) eol = text.size();
        const std::string line = text.substr(pos, eol - pos);
        pos = eol + 1;
        if (line.empty() || line[0] == '#') continue;
        const size_t sp = line.find(' ');
        const std::string key = line.substr(0, sp);
        const std::string rest = sp == std::string::npos ? "" : line.substr(sp + 1);
        if (key == "template") {
            const size_t sp2 = rest.find(' ');
            tmpl_name = rest.substr(0, sp2);
            const std::string file = "chat_templates/" + rest.substr(sp2 + 1);
            tmpl_source = read_text(test_repo_data(file.c_str()));
            tokens = kvfit::ChatTemplateTokens();
            ++n_templates;
        } else if (key == "bos") {
            tokens.bos = unescape(rest);
        } else if (key == "eos") {
            tokens.eos = unescape(rest);
        } else if (key == "case") {
            cur = Case();
            cur.where = tmpl_name + "/" + rest;
            cur.source = tmpl_source;
            cur.tokens = tokens;
        } else if (key == "snippet") {
            cur = Case();
            cur.where = "snippet " + rest;
            cur.tokens.bos = "<s>";
            cur.tokens.eos = "</s>";
            cur.messages = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}};
            ++n_snippets;
        } else if (key == "source") {
            cur.source = unescape(rest);
        } else if (key == "add_generation_prompt") {
            cur.add_generation_prompt = rest == "1";
        } else if (key == "message") {
            const size_t sp2 = rest.find(' ');
            cur.messages.push_back({rest.substr(0, sp2), sp2 == std::string::npos ? "" : unescape(rest.substr(sp2 + 1))});
        } else if (key == "expect") {
            cur.expected = unescape(rest);
        } else if (key == "error") {
            const size_t sp2 = rest.find(' ');
            cur.expect_error = true;
            cur.error_kind = rest.substr(0, sp2);
            cur.expected = sp2 == std::string::npos ? "" : unescape(rest.substr(sp2 + 1));
        } else if (key == "end") {
            cases.push_back(cur);
        } else {
            fail_msg("chat_template_cases.txt: unknown line '%s'", line.c_str());
        }
    }
    return cases;
}

// Every recorded case renders byte for byte as jinja2 rendered it, or fails
// as it failed: raise_exception and jinja2's undefined errors give
// KVFIT_E_TEMPLATE; what jinja2 itself rejects as syntax gives
// KVFIT_E_UNSUPPORTED.
static void test_jinja_matches_jinja2(void **state) {
    (void)state;
    size_t n_templates, n_snippets;
    const std::vector<Case> cases = load_cases(n_templates, n_snippets);
    assert_true(n_templates >= 4);
    assert_true(cases.size() > 100);
    int failures = 0;
    for (const Case &c : cases) {
        std::string got;
        kvfit_status status = KVFIT_OK;
        std::string error;
        try {
            got = kvfit::chat_template_render(c.source, c.messages, c.add_generation_prompt, c.tokens, kFixedNow);
        } catch (const kvfit::Error &e) {
            status = e.status();
            error = e.what();
        }
        bool ok;
        if (!c.expect_error) {
            ok = status == KVFIT_OK && got == c.expected;
        } else if (c.error_kind == "syntax") {
            ok = status == KVFIT_E_UNSUPPORTED;
        } else {
            ok = status == KVFIT_E_TEMPLATE;
            if (c.error_kind == "raise") ok = ok && error.find(c.expected) != std::string::npos;
        }
        if (!ok) {
            ++failures;
            if (status == KVFIT_OK)
                print_error("%s: rendered\n[%s]\nexpected %s\n[%s]\n", c.where.c_str(), got.c_str(),
                            c.expect_error ? ("error " + c.error_kind).c_str() : "", c.expected.c_str());
            else
                print_error("%s: failed with %s: %s\nexpected %s\n[%s]\n", c.where.c_str(), kvfit_status_str(status),
                            error.c_str(), c.expect_error ? ("error " + c.error_kind).c_str() : "", c.expected.c_str());
        }
    }
    if (failures) fail_msg("%d of %zu cases differ from jinja2", failures, cases.size());
    printf("%zu cases (%zu templates, %zu snippets) match jinja2\n", cases.size(), n_templates, n_snippets);
}

// The fixture of SmolLM2's template is the one in its GGUF, and the C API
// renders a model's own template: SmolLM2's through kvfit_chat_apply(model,
// NULL) exactly as the recorded case.
static void test_model_template_through_c_api(void **state) {
    (void)state;
    const char *path = test_default_model();
    if (!path) {
        printf("skipped: the default model is missing; run `make models`\n");
        skip();
    }
    auto file = kvfit::GGUFFile::open(path);
    const auto jinja = file->get_string("tokenizer.chat_template");
    assert_true(jinja.has_value());
    assert_true(*jinja == read_text(test_repo_data("chat_templates/smollm2.jinja")));

    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.vocab_only = true;
    kvfit_model *m = nullptr;
    assert_int_equal(kvfit_model_load(path, &mp, &m), KVFIT_OK);
    assert_string_equal(kvfit_model_chat_template(m), "chatml");
    const kvfit_chat_message msgs[] = {{"user", "One"}, {"assistant", "Two"}, {"user", "Three"}, {"assistant", "Four"}};
    char buf[1024];
    size_t len = 0;
    assert_int_equal(kvfit_chat_apply(m, nullptr, msgs, 4, false, buf, sizeof buf, &len), KVFIT_OK);
    size_t nt, ns;
    bool found = false;
    for (const Case &c : load_cases(nt, ns))
        if (c.where == "smollm2/no_system_multi_turn_no_prompt") {
            assert_string_equal(buf, c.expected.c_str());
            found = true;
        }
    assert_true(found);

    // Jinja text in place of a name renders with the model's special tokens.
    assert_int_equal(kvfit_chat_apply(m, "{{ bos_token }}|{{ eos_token }}|{{ messages|length }}", msgs, 4, true, buf,
                                      sizeof buf, &len),
                     KVFIT_OK);
    assert_string_equal(buf, "<|im_start|>|<|im_end|>|4");
    // A template that refuses the conversation fails with its message.
    assert_int_equal(kvfit_chat_apply(m, "{{ raise_exception('no thanks') }}", msgs, 1, true, buf, sizeof buf, &len),
                     KVFIT_E_TEMPLATE);
    assert_non_null(strstr(kvfit_last_error(), "no thanks"));
    kvfit_model_free(m);
}

// A copy of the default model whose tokenizer.chat_template is replaced by
// `jinja` (padded with a comment to the original's length), loaded vocab-only;
// null if the model is missing.
static kvfit_model *model_with_template(const std::string &jinja) {
    const char *path = test_default_model();
    if (!path) return nullptr;
    std::string bytes = read_text(path);
    const std::string original = read_text(test_repo_data("chat_templates/smollm2.jinja"));
    const size_t at = bytes.find(original);
    assert_true(at != std::string::npos);
    assert_true(jinja.size() + 4 <= original.size());
    bytes.replace(at, original.size(), jinja + "{#" + std::string(original.size() - jinja.size() - 4, ' ') + "#}");
    const char *tmp = getenv("TMPDIR");
    std::string copy = std::string(tmp && *tmp ? tmp : "/tmp") + "/kvfit-chat-XXXXXX";
    const int fd = mkstemp(&copy[0]);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
    fclose(f);
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.vocab_only = true;
    kvfit_model *m = nullptr;
    assert_int_equal(kvfit_model_load(copy.c_str(), &mp, &m), KVFIT_OK);
    remove(copy.c_str());
    return m;
}

// A model whose own template kvfit cannot render fails with a message that
// says so and how to go on; it is not rendered as chatml behind the
// caller's back. A template of no known family still renders.
static void test_model_template_errors(void **state) {
    (void)state;
    const kvfit_chat_message msg = {"user", "Hi"};
    char buf[512];
    size_t len = 0;
    kvfit_model *m = model_with_template("{% filter upper %}{{ messages[0].content }}{% endfilter %}");
    if (!m) {
        printf("skipped: the default model is missing; run `make models`\n");
        skip();
    }
    assert_string_equal(kvfit_model_chat_template(m), "custom");
    assert_int_equal(kvfit_chat_apply(m, nullptr, &msg, 1, true, buf, sizeof buf, &len), KVFIT_E_UNSUPPORTED);
    assert_non_null(strstr(kvfit_last_error(), "the 'filter' tag is not supported"));
    assert_non_null(strstr(kvfit_last_error(), "name a built-in template"));
    // Naming one works.
    assert_int_equal(kvfit_chat_apply(m, "chatml", &msg, 1, true, buf, sizeof buf, &len), KVFIT_OK);
    assert_string_equal(buf, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    kvfit_model_free(m);

    m = model_with_template("{% for m in messages %}[{{ m.role | upper }}] {{ m.content }}\n{% endfor %}"
                            "{% if add_generation_prompt %}[ASSISTANT] {% endif %}");
    assert_non_null(m);
    assert_string_equal(kvfit_model_chat_template(m), "custom");
    assert_int_equal(kvfit_chat_apply(m, nullptr, &msg, 1, true, buf, sizeof buf, &len), KVFIT_OK);
    assert_string_equal(buf, "[USER] Hi\n[ASSISTANT] ");
    kvfit_model_free(m);

    m = model_with_template("{% if messages[0].role != 'system' %}{{ raise_exception('a system turn first') }}"
                            "{% endif %}");
    assert_non_null(m);
    assert_int_equal(kvfit_chat_apply(m, nullptr, &msg, 1, true, buf, sizeof buf, &len), KVFIT_E_TEMPLATE);
    assert_non_null(strstr(kvfit_last_error(), "a system turn first"));
    assert_string_equal(kvfit_status_str(KVFIT_E_TEMPLATE), "KVFIT_E_TEMPLATE");
    kvfit_model_free(m);
}

// Gemma's tokenizer adds BOS itself, so a rendered "<bos>" at the start is
// left out of kvfit_chat_apply's text (the tokenizer would double it).
static void test_bos_left_to_tokenizer(void **state) {
    (void)state;
    const std::string path = std::string(KVFIT_MODELS_DIR) + "/gemma-3-270m-q4_k_m.gguf";
    if (FILE *f = fopen(path.c_str(), "rb")) {
        fclose(f);
    } else {
        printf("skipped: %s is missing\n", path.c_str());
        skip();
    }
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.vocab_only = true;
    kvfit_model *m = nullptr;
    assert_int_equal(kvfit_model_load(path.c_str(), &mp, &m), KVFIT_OK);
    const std::string gemma = read_text(test_repo_data("chat_templates/gemma3.jinja"));
    const kvfit_chat_message msg = {"user", "Hello!"};
    char buf[256];
    size_t len = 0;
    assert_int_equal(kvfit_chat_apply(m, gemma.c_str(), &msg, 1, true, buf, sizeof buf, &len), KVFIT_OK);
    assert_string_equal(buf, "<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n");
    int32_t ids[64];
    size_t n = 0;
    assert_int_equal(kvfit_tokenize(m, buf, len, true, true, ids, 64, &n), KVFIT_OK);
    assert_int_equal(ids[0], 2);  // one <bos>, from the tokenizer
    assert_true(ids[1] != 2);
    // Non-alternating roles: Gemma's own raise_exception.
    const kvfit_chat_message two[] = {{"user", "a"}, {"user", "b"}};
    assert_int_equal(kvfit_chat_apply(m, gemma.c_str(), two, 2, true, buf, sizeof buf, &len), KVFIT_E_TEMPLATE);
    assert_non_null(strstr(kvfit_last_error(), "Conversation roles must alternate user/assistant/user/assistant/..."));
    // The file carries no template of its own: its architecture's format, the
    // same text Gemma's Jinja template renders.
    assert_string_equal(kvfit_model_chat_template(m), "gemma");
    assert_int_equal(kvfit_chat_apply(m, nullptr, &msg, 1, true, buf, sizeof buf, &len), KVFIT_OK);
    assert_string_equal(buf, "<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n");
    kvfit_model_free(m);
}

static kvfit_status render_status(const std::string &source, std::string *error = nullptr,
                                  const std::vector<ChatMessage> &msgs = {{"user", "hi"}}) {
    try {
        kvfit::chat_template_render(source, msgs, true, kvfit::ChatTemplateTokens(), kFixedNow);
        return KVFIT_OK;
    } catch (const kvfit::Error &e) {
        if (error) *error = e.what();
        return e.status();
    }
}

static void expect_error(const std::string &source, kvfit_status status, const char *message_part) {
    std::string error;
    const kvfit_status got = render_status(source, &error);
    if (got != status || error.find(message_part) == std::string::npos)
        fail_msg("template [%.200s]\ngave %s: %s\nexpected %s with '%s'", source.c_str(), kvfit_status_str(got),
                 error.c_str(), kvfit_status_str(status), message_part);
}

// What the interpreter lacks, a malformed template and a template's own
// refusal each come back as a status with a message naming the line.
static void test_jinja_errors(void **state) {
    (void)state;
    expect_error("{% call foo() %}x{% endcall %}", KVFIT_E_UNSUPPORTED, "the 'call' tag is not supported");
    expect_error("a\n{% include 'other.jinja' %}", KVFIT_E_UNSUPPORTED, "line 2: the 'include' tag is not supported");
    expect_error("{% for x in xs recursive %}{% endfor %}", KVFIT_E_UNSUPPORTED, "recursive for loops");
    expect_error("{{ x | no_such_filter }}", KVFIT_E_UNSUPPORTED, "no filter named 'no_such_filter'");
    expect_error("{{ x is no_such_test }}", KVFIT_E_UNSUPPORTED, "no test named 'no_such_test'");
    expect_error("{% if true %}\n\n{{ 'a' | wordcount }}{% endif %}", KVFIT_E_UNSUPPORTED,
                 "line 3: the filter 'wordcount' is not supported");
    expect_error("{{ '%d items' % 3 }}", KVFIT_E_UNSUPPORTED, "string formatting");
    expect_error("{{ 'abc'.zfill(5) }}", KVFIT_E_UNSUPPORTED, "the string method 'zfill' is not supported");
    expect_error("{% if x %}no end", KVFIT_E_UNSUPPORTED, "unexpected end of template");
    expect_error("{{ 'unterminated }}", KVFIT_E_UNSUPPORTED, "unterminated string");
    expect_error("{{ (1 }}", KVFIT_E_UNSUPPORTED, "line 1:");
    expect_error("{% endfor %}", KVFIT_E_UNSUPPORTED, "unknown tag 'endfor'");
    expect_error("{% break %}", KVFIT_E_UNSUPPORTED, "'break' outside of a loop");
    expect_error("{{ 99999999999999999999 }}", KVFIT_E_UNSUPPORTED, "too large");
    expect_error("{{ 9223372036854775807 + 1 }}", KVFIT_E_UNSUPPORTED, "integer overflow");
    expect_error(std::string("{{ '\xff' }}"), KVFIT_E_UNSUPPORTED, "not valid UTF-8");
    // Unsupported constructs name the way out.
    expect_error("{% filter upper %}x{% endfilter %}", KVFIT_E_UNSUPPORTED, "name a built-in template (chatml");

    expect_error("line one\n{{ raise_exception('Only user and assistant roles are supported!') }}", KVFIT_E_TEMPLATE,
                 "line 2: the template raised an exception: Only user and assistant roles are supported!");
    expect_error("{{ messages[5].role }}", KVFIT_E_TEMPLATE, "list object has no element 5");
    expect_error("{{ undefined_thing.attr }}", KVFIT_E_TEMPLATE, "'undefined_thing' is undefined");
    expect_error("{{ 'a' + 1 }}", KVFIT_E_TEMPLATE, "can only concatenate str");
    expect_error("{{ 1 / 0 }}", KVFIT_E_TEMPLATE, "division by zero");
    expect_error("{% set x = 1 %}{% set x.y = 2 %}", KVFIT_E_TEMPLATE, "non-namespace");
    expect_error("{% for a, b in [[1, 2, 3]] %}{% endfor %}", KVFIT_E_TEMPLATE, "too many values to unpack");
    expect_error("{{ range(1000000) | length }}", KVFIT_E_TEMPLATE, "Range too big");

    // Invalid UTF-8 in a message is the caller's error.
    std::string error;
    assert_int_equal(render_status("{{ messages[0].content }}", &error, {{"user", "\xc3("}}), KVFIT_E_ARG);
}

// Hostile templates end, quickly, with an error instead of exhausting the
// stack, memory or time.
static void test_jinja_limits(void **state) {
    (void)state;
    const auto start = std::chrono::steady_clock::now();
    auto repeat = [](const std::string &s, int n) {
        std::string out;
        for (int i = 0; i < n; ++i) out += s;
        return out;
    };
    const int deep = 20000;  // far past the limit, and within the template size limit
    const char *nesting = "nested more than";
    expect_error("{{ " + repeat("(", deep) + "1" + repeat(")", deep) + " }}", KVFIT_E_UNSUPPORTED, nesting);
    expect_error("{{ " + repeat("[", deep) + repeat("]", deep) + " }}", KVFIT_E_UNSUPPORTED, nesting);
    expect_error("{{ " + repeat("{'a': ", deep) + "1" + repeat("}", deep) + " }}", KVFIT_E_UNSUPPORTED, nesting);
    expect_error("{{ " + repeat("not ", deep) + "x }}", KVFIT_E_UNSUPPORTED, nesting);
    expect_error("{{ " + repeat("-", deep) + "1 }}", KVFIT_E_UNSUPPORTED, nesting);
    expect_error("{{ x" + repeat("|trim", deep) + " }}", KVFIT_E_UNSUPPORTED, nesting);
    expect_error("{{ x" + repeat(".a", deep) + " }}", KVFIT_E_UNSUPPORTED, nesting);
    expect_error("{{ x" + repeat("()", deep) + " }}", KVFIT_E_UNSUPPORTED, nesting);
    expect_error("{{ 1" + repeat(" if 1 else 2", deep) + " }}", KVFIT_E_UNSUPPORTED, nesting);
    expect_error(repeat("{% if true %}", deep) + repeat("{% endif %}", deep), KVFIT_E_UNSUPPORTED, nesting);
    expect_error(repeat("{% for x in [1] %}", deep) + repeat("{% endfor %}", deep), KVFIT_E_UNSUPPORTED, nesting);
    // Long flat chains are fine.
    assert_int_equal(render_status("{{ 1" + repeat(" + 1", deep) + " }}"), KVFIT_OK);
    assert_int_equal(render_status("{{ 'a'" + repeat(" ~ 'a'", deep) + " }}"), KVFIT_OK);
    // Values built deeper and deeper at render time.
    expect_error("{% set ns = namespace(v=[]) %}{% for i in range(100000) %}{% set ns.v = [ns.v] %}{% endfor %}",
                 KVFIT_E_UNSUPPORTED, nesting);
    // A namespace inside itself would be a cycle.
    expect_error("{% set ns = namespace(a=1) %}{% set ns.me = [ns] %}", KVFIT_E_UNSUPPORTED, "namespace");
    expect_error("{% set ns = namespace() %}{% set ns.g = messages | select('sameas', ns) %}", KVFIT_E_UNSUPPORTED,
                 "namespace");
    expect_error("{% set ns = namespace() %}{% for x in [ns] %}{% set ns.l = loop %}{% endfor %}", KVFIT_E_UNSUPPORTED,
                 "namespace");
    // Recursion.
    expect_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", KVFIT_E_UNSUPPORTED, "macro calls nested");
    // Work and size.
    expect_error("{% set r = range(100000) | list %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}",
                 KVFIT_E_UNSUPPORTED, "steps");
    expect_error("{% set r = range(100000) | list %}{% for a in r %}{% for b in r %}{% break %}{% endfor %}{% endfor %}",
                 KVFIT_E_UNSUPPORTED, "steps");
    expect_error("{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
                 KVFIT_E_UNSUPPORTED, "bytes");
    // Work hidden in single operations is charged too: searching, comparing
    // and indexing big strings.
    expect_error("{% set s = 'a' * 4000000 %}{% set t = 'a' * 2000000 ~ 'b' %}{% for i in range(100000) %}"
                 "{% if t in s %}{% endif %}{% endfor %}",
                 KVFIT_E_UNSUPPORTED, "steps");
    expect_error("{% set s = 'a' * 4000000 %}{% set t = 'a' * 4000000 %}{% for i in range(100000) %}"
                 "{% if s == t %}{% endif %}{% endfor %}",
                 KVFIT_E_UNSUPPORTED, "steps");
    expect_error("{% set s = '\u00e9' * 2000000 %}{% for i in range(100000) %}{{ s[i] }}{% endfor %}",
                 KVFIT_E_UNSUPPORTED, "steps");
    expect_error("{% set s = ' ' * 4000000 %}{% for i in range(100000) %}{{ s | trim }}{% endfor %}",
                 KVFIT_E_UNSUPPORTED, "steps");
    expect_error("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
                 KVFIT_E_UNSUPPORTED, "bytes");
    expect_error("{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
                 KVFIT_E_UNSUPPORTED, "items");
    expect_error("{{ 'x' * 9000000000000000000 }}", KVFIT_E_UNSUPPORTED, "bytes");
    expect_error("{{ [1, 2] * 9000000000000000000 }}", KVFIT_E_UNSUPPORTED, "items");
    expect_error("{{ (('x' * 1000000) ~ ('y' * 1000000)) * 100000 }}", KVFIT_E_UNSUPPORTED, "bytes");
    expect_error(std::string(size_t(2) << 20, 'x'), KVFIT_E_UNSUPPORTED, "more than");
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // Sanitizer builds run several times slower; tests/sanitize.sh says by how much.
    const char *scale_env = getenv("KVFIT_TEST_TIME_SCALE");
    const double scale = scale_env && atof(scale_env) >= 1 ? atof(scale_env) : 1.0;
    printf("hostile templates refused in %.2f s (limit %.0f s)\n", seconds, 60 * scale);
    assert_true(seconds < 60 * scale);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml),       cmocka_unit_test(test_smollm2_exact),
        cmocka_unit_test(test_llama3),       cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_gemma),        cmocka_unit_test(test_zephyr),
        cmocka_unit_test(test_detect),       cmocka_unit_test(test_names),
        cmocka_unit_test(test_unknown_name), cmocka_unit_test(test_default_system),
        cmocka_unit_test(test_jinja_matches_jinja2), cmocka_unit_test(test_model_template_through_c_api),
        cmocka_unit_test(test_bos_left_to_tokenizer), cmocka_unit_test(test_model_template_errors),
        cmocka_unit_test(test_jinja_errors),
        cmocka_unit_test(test_jinja_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
