// Unit tests of the chat templates (src/chat_template.cpp): each family
// renders a conversation byte for byte as expected, families are recognised
// from their Jinja text, SmolLM2's built-in system prompt is found and
// reproduced exactly, and unknown names are refused.
#include <string>
#include <vector>

#include "chat_template.h"
#include "common.h"

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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml),       cmocka_unit_test(test_smollm2_exact),
        cmocka_unit_test(test_llama3),       cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_gemma),        cmocka_unit_test(test_zephyr),
        cmocka_unit_test(test_detect),       cmocka_unit_test(test_names),
        cmocka_unit_test(test_unknown_name), cmocka_unit_test(test_default_system),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
