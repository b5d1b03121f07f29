// Chat templates: a model's own Jinja template (tokenizer.chat_template)
// rendered by kvfit's Jinja interpreter (src/chat/jinja.h) exactly as Hugging
// Face transformers renders it, and built-in renderings of the common
// families, chosen by name or recognised in a template's text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvfit {

struct ChatMessage {
    std::string role;
    std::string content;
};

// Family name ("chatml", "llama3", "llama2", "gemma", ...) recognised in a
// template's text; "" if nothing matched.
const char *chat_template_detect(const std::string &jinja);

// The system prompt a template inserts when the conversation has none (as
// SmolLM2's does), or "" if it inserts none.
std::string chat_template_default_system(const std::string &jinja);

// Static name if known (so the C API can return it), nullptr otherwise.
const char *chat_template_canonical_name(const std::string &name);

// Renders messages in the named family's format, exactly as the model's own
// template would (including default system prompts that the template
// injects where one is given in `default_system`). Throws
// kvfit::Error(KVFIT_E_ARG) for an unknown name.
std::string chat_template_apply(const std::string &name, const std::vector<ChatMessage> &messages, bool add_assistant,
                                const std::string &default_system = "");

// True if `text` is Jinja source rather than a template name: it contains
// "{{", "{%" or "{#".
bool chat_template_is_jinja(const std::string &text);

// The texts a template sees as bos_token and eos_token; nullopt leaves the
// variable undefined (a model without that token).
struct ChatTemplateTokens {
    std::optional<std::string> bos, eos;
};

// Renders messages with a Jinja chat template as Hugging Face transformers
// does: jinja2 with trim_blocks and lstrip_blocks, and the variables
// messages (a list of {"role", "content"}), add_generation_prompt,
// bos_token, eos_token, and tools and documents set to none. strftime_now
// formats `now` (seconds since the epoch, in UTC), or the current local time
// when now < 0. Throws kvfit::Error:
//   KVFIT_E_UNSUPPORTED  the template uses what kvfit's interpreter lacks, is
//                        malformed, or exceeds its limits (the message says
//                        where and suggests naming a built-in template);
//   KVFIT_E_TEMPLATE     the template refused the conversation (its
//                        raise_exception) or failed on it as jinja2 would;
//   KVFIT_E_ARG          a role or content that is not valid UTF-8.
std::string chat_template_render(const std::string &jinja, const std::vector<ChatMessage> &messages,
                                 bool add_generation_prompt, const ChatTemplateTokens &tokens, int64_t now = -1);

}  // namespace kvfit
