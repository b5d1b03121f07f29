// Chat templates of the common model families, recognised from the Jinja text
// in tokenizer.chat_template (kvfit does not run Jinja) or chosen by name.
#pragma once

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

}  // namespace kvfit
