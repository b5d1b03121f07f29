#include "chat/chat_template.h"

#include <cctype>
#include <cstring>

#include "common.h"
#include "chat/jinja.h"

namespace kvfit {

namespace {

// Canonical family names. Their order is the order the "known:" list in
// error messages shows.
const char *const kFamilies[] = {"chatml", "llama3", "llama2", "gemma", "zephyr"};

// Other spellings people bring from elsewhere. "llama2-sys" is llama.cpp's
// name for the variant our "llama2" renders (system prompt in <<SYS>>).
struct Alias {
    const char *alias;
    const char *family;
};
const Alias kAliases[] = {
    {"llama-3", "llama3"}, {"llama-2", "llama2"}, {"llama2-sys", "llama2"}, {"gemma2", "gemma"}, {"gemma3", "gemma"},
};

bool contains(const std::string &s, const char *needle) { return s.find(needle) != std::string::npos; }

bool starts_with(const std::string &s, size_t at, const char *prefix) {
    return s.compare(at, std::strlen(prefix), prefix) == 0;
}

std::string to_lower(const std::string &s) {
    std::string out(s);
    for (char &c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

// What Jinja's `| trim` and Python's str.strip() do for ASCII whitespace.
std::string trim(const std::string &s) {
    const char *ws = " \t\n\v\f\r";
    size_t b = s.find_first_not_of(ws);
    if (b == std::string::npos) return std::string();
    size_t e = s.find_last_not_of(ws);
    return s.substr(b, e - b + 1);
}

std::string known_list() {
    std::string out;
    for (const char *f : kFamilies) {
        if (!out.empty()) out += ", ";
        out += f;
    }
    return out;
}

// Skips one newline at s[pos] as a template writes it: a real newline (the
// JSON in tokenizer_config.json was decoded) or the escape "\n" inside a
// Jinja string literal. Returns false if there is none.
bool skip_newline(const std::string &s, size_t &pos) {
    if (pos < s.size() && s[pos] == '\n') {
        pos += 1;
        return true;
    }
    if (starts_with(s, pos, "\\n")) {
        pos += 2;
        return true;
    }
    return false;
}

// Reads the prompt of a fixed system turn starting at `pos` (just after
// `open` and its newlines) up to `close`. Inside a string literal (quote is
// its quote character) Jinja's escapes are undone and the literal must not
// end first; in raw template text, a {{ }} or {% %} must not come first.
// Either way a turn built from message['content'] is not taken for a default.
bool read_fixed_text(const std::string &jinja, size_t pos, char quote, const char *close, std::string &text) {
    text.clear();
    while (pos < jinja.size()) {
        if (starts_with(jinja, pos, close)) return !text.empty();
        const char c = jinja[pos];
        if (quote) {
            if (c == quote) return false;
            if (c == '\\' && pos + 1 < jinja.size()) {
                static const char kEscaped[] = "ntr\\'\"", kMeant[] = "\n\t\r\\'\"";
                const char e = jinja[pos + 1];
                const char *hit = e ? std::strchr(kEscaped, e) : nullptr;
                if (hit) {
                    text += kMeant[hit - kEscaped];
                } else {  // unknown escapes stay as written, as in Python
                    text += c;
                    text += e;
                }
                pos += 2;
                continue;
            }
        } else if (c == '{' && pos + 1 < jinja.size()) {
            const char n = jinja[pos + 1];
            if (n == '{' || n == '%' || n == '#') return false;
        }
        text += c;
        pos += 1;
    }
    return false;
}

// Finds a system turn written out as fixed text (`open`, n_newlines
// newlines, the prompt, `close`) either in raw template text or inside one
// string literal of a {{ }} / {% %} block. A small lexer tracks which of
// the two (or neither: template code, comments) each position is in.
std::string find_fixed_system(const std::string &jinja, const char *open, int n_newlines, const char *close) {
    enum { RAW, CODE, STRING, COMMENT } state = RAW;
    char quote = 0;
    std::string text;
    for (size_t pos = 0; pos < jinja.size();) {
        if ((state == RAW || state == STRING) && starts_with(jinja, pos, open)) {
            size_t p = pos + std::strlen(open);
            bool ok = true;
            for (int i = 0; i < n_newlines && ok; ++i) ok = skip_newline(jinja, p);
            if (ok && read_fixed_text(jinja, p, state == STRING ? quote : '\0', close, text)) return text;
        }
        const char c = jinja[pos];
        switch (state) {
            case RAW:
                if (starts_with(jinja, pos, "{{") || starts_with(jinja, pos, "{%")) {
                    state = CODE;
                    pos += 2;
                    continue;
                }
                if (starts_with(jinja, pos, "{#")) {
                    state = COMMENT;
                    pos += 2;
                    continue;
                }
                break;
            case CODE:
                if (c == '\'' || c == '"') {
                    state = STRING;
                    quote = c;
                } else if (starts_with(jinja, pos, "}}") || starts_with(jinja, pos, "%}")) {
                    state = RAW;
                    pos += 2;
                    continue;
                }
                break;
            case STRING:
                if (c == '\\') {
                    pos += 2;
                    continue;
                }
                if (c == quote) state = CODE;
                break;
            case COMMENT:
                if (starts_with(jinja, pos, "#}")) {
                    state = RAW;
                    pos += 2;
                    continue;
                }
                break;
        }
        pos += 1;
    }
    return std::string();
}

}  // namespace

const char *chat_template_canonical_name(const std::string &name) {
    const std::string n = to_lower(name);
    for (const char *f : kFamilies)
        if (n == f) return f;
    for (const Alias &a : kAliases)
        if (n == a.alias) return a.family;
    return nullptr;
}

const char *chat_template_detect(const std::string &jinja) {
    // A bare family name is accepted too, as llama.cpp does.
    if (const char *name = chat_template_canonical_name(jinja)) return name;

    // Checked in llama.cpp's order, since some templates carry several
    // families' markers. Families that share a marker with ours but render
    // differently give "" rather than a wrong format.
    if (contains(jinja, "<|im_start|>")) {
        if (contains(jinja, "<|im_sep|>")) return "";          // Phi-4
        if (contains(jinja, "<end_of_utterance>")) return "";  // SmolVLM: <|im_start|> as BOS only
        return "chatml";
    }
    if (jinja.compare(0, 7, "mistral") == 0 || contains(jinja, "[INST]")) {
        if (contains(jinja, "[SYSTEM_PROMPT]")) return "";  // Mistral v7: its own system block
        return "llama2";
    }
    if (contains(jinja, "<|assistant|>") && contains(jinja, "<|end|>")) return "";   // Phi-3
    if (contains(jinja, "[gMASK]")) return "";                                       // ChatGLM
    if (contains(jinja, "<|assistant|>") && contains(jinja, "<|user|>")) return "";  // Falcon 3, GLM-Edge
    // Zephyr (StableLM 2 style): turns named "<|role|>" and closed by <|endoftext|>.
    if (contains(jinja, "<|endoftext|>") &&
        (contains(jinja, "<|user|>") || contains(jinja, "'<|' + message['role'] + '|>'")))
        return "zephyr";
    if (contains(jinja, "bos_token + message['role']")) return "";  // Monarch
    if (contains(jinja, "<start_of_turn>")) return "gemma";
    if (contains(jinja, "<|start_header_id|>") && contains(jinja, "<|end_header_id|>")) return "llama3";
    return "";
}

std::string chat_template_default_system(const std::string &jinja) {
    const std::string family = chat_template_detect(jinja);
    if (family == "chatml") return find_fixed_system(jinja, "<|im_start|>system", 1, "<|im_end|>");
    if (family == "llama3")
        return find_fixed_system(jinja, "<|start_header_id|>system<|end_header_id|>", 2, "<|eot_id|>");
    return std::string();
}

std::string chat_template_apply(const std::string &name, const std::vector<ChatMessage> &messages, bool add_assistant,
                                const std::string &default_system) {
    const char *family = chat_template_canonical_name(name);
    if (!family) throw Error(KVFIT_E_ARG, "unknown chat template '" + name + "' (known: " + known_list() + ")");
    const std::string f = family;

    // The default system prompt behaves as if the caller had sent it first,
    // but only for a non-empty conversation that has no system turn of its
    // own (SmolLM2's template tests loop.first inside the message loop).
    std::vector<const ChatMessage *> chat;
    chat.reserve(messages.size() + 1);
    ChatMessage injected{"system", default_system};
    if (!default_system.empty() && !messages.empty() && messages[0].role != "system") chat.push_back(&injected);
    for (const ChatMessage &m : messages) chat.push_back(&m);

    std::string out;
    if (f == "chatml") {
        for (const ChatMessage *m : chat) out += "<|im_start|>" + m->role + "\n" + m->content + "<|im_end|>\n";
        if (add_assistant) out += "<|im_start|>assistant\n";
    } else if (f == "llama3") {
        // Llama 3's template trims each message. Its leading bos_token is
        // left to the tokenizer, which adds BOS itself.
        for (const ChatMessage *m : chat)
            out += "<|start_header_id|>" + m->role + "<|end_header_id|>\n\n" + trim(m->content) + "<|eot_id|>";
        if (add_assistant) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    } else if (f == "llama2") {
        // As llama.cpp renders Llama 2 chat with system support: the first
        // "<s>" comes from the tokenizer, a finished assistant turn ends with
        // "</s>" and the next turn reopens with "[INST] ". The model answers
        // right after " [/INST]", so add_assistant has nothing to add.
        out += "[INST] ";
        bool in_turn = true;
        for (const ChatMessage *m : chat) {
            if (!in_turn) {
                out += "[INST] ";
                in_turn = true;
            }
            if (m->role == "system") {
                out += "<<SYS>>\n" + m->content + "\n<</SYS>>\n\n";
            } else if (m->role == "user") {
                out += m->content + " [/INST]";
            } else {
                out += m->content + "</s>";
                in_turn = false;
            }
        }
    } else if (f == "gemma") {
        // Gemma has no system role: the system text opens the next user
        // turn, separated by a blank line. Contents are trimmed as Gemma's
        // template does; "assistant" is called "model".
        std::string pending_system;
        for (const ChatMessage *m : chat) {
            if (m->role == "system") {
                pending_system += trim(m->content);
                continue;
            }
            const std::string role = m->role == "assistant" ? std::string("model") : m->role;
            out += "<start_of_turn>" + role + "\n";
            if (!pending_system.empty() && role != "model") {
                out += pending_system + "\n\n";
                pending_system.clear();
            }
            out += trim(m->content) + "<end_of_turn>\n";
        }
        if (add_assistant) out += "<start_of_turn>model\n";
    } else {  // zephyr
        for (const ChatMessage *m : chat) out += "<|" + m->role + "|>\n" + m->content + "<|endoftext|>\n";
        if (add_assistant) out += "<|assistant|>\n";
    }
    return out;
}

bool chat_template_is_jinja(const std::string &text) {
    return contains(text, "{{") || contains(text, "{%") || contains(text, "{#");
}

std::string chat_template_render(const std::string &jinja, const std::vector<ChatMessage> &messages,
                                 bool add_generation_prompt, const ChatTemplateTokens &tokens, int64_t now) {
    using jinja::Value;
    size_t input_bytes = jinja.size();
    std::vector<Value> list;
    list.reserve(messages.size());
    for (size_t i = 0; i < messages.size(); ++i) {
        const ChatMessage &m = messages[i];
        if (!jinja::utf8_is_valid(m.role) || !jinja::utf8_is_valid(m.content))
            fail(KVFIT_E_ARG, "message %zu is not valid UTF-8", i);
        input_bytes += m.role.size() + m.content.size();
        list.push_back(Value::dict({{Value::string("role"), Value::string(m.role)},
                                    {Value::string("content"), Value::string(m.content)}}));
    }
    jinja::Vars vars = {
        {"messages", Value::list(std::move(list))},
        {"add_generation_prompt", Value::boolean(add_generation_prompt)},
        {"tools", Value::none()},
        {"documents", Value::none()},
    };
    if (tokens.bos) vars.emplace_back("bos_token", Value::string(*tokens.bos));
    if (tokens.eos) vars.emplace_back("eos_token", Value::string(*tokens.eos));

    // Room for any real conversation, proportional to its size; a template
    // that needs more is looping or blowing up.
    jinja::RenderOptions options;
    options.now = now;
    options.limits.max_steps = 20000000 + 2000 * uint64_t(messages.size()) + 4 * uint64_t(input_bytes);
    options.limits.max_output_bytes = (size_t(16) << 20) + 8 * input_bytes;
    options.limits.max_alloc_bytes = (uint64_t(128) << 20) + 64 * uint64_t(input_bytes);
    try {
        const jinja::Template tmpl(jinja, options.limits);
        return tmpl.render(vars, options);
    } catch (const Error &e) {
        if (e.status() == KVFIT_E_UNSUPPORTED)
            throw Error(e.status(), std::string("kvfit cannot render this chat template (") + e.what() +
                                        "); name a built-in template (" + known_list() + ") instead");
        if (e.status() == KVFIT_E_TEMPLATE)
            throw Error(e.status(), std::string("the chat template failed on this conversation: ") + e.what());
        throw;
    }
}

}  // namespace kvfit
