// libFuzzer entry for the chat template renderer (src/chat/chat_template.cpp and
// the Jinja interpreter, src/chat/jinja*.cpp). Built with -DKVFIT_FUZZ=ON; see
// tests/fuzz/README.md for how to build and run it.
//
// Input: a Jinja template, optionally followed by NUL-separated messages
// written "role:content" (without any, a small fixed conversation is used).
// Whatever the input, rendering must return text or throw kvfit::Error:
// never crash, hang, exhaust memory or throw anything else.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "common.h"
#include "chat/jinja.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string input(reinterpret_cast<const char *>(data), size);
    const size_t nul = input.find('\0');
    const std::string source = input.substr(0, nul);

    std::vector<kvfit::ChatMessage> messages;
    if (nul == std::string::npos) {
        messages = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}};
    } else {
        size_t pos = nul + 1;
        while (pos <= input.size() && messages.size() < 64) {
            size_t end = input.find('\0', pos);
            if (end == std::string::npos) end = input.size();
            const std::string chunk = input.substr(pos, end - pos);
            const size_t colon = chunk.find(':');
            if (colon == std::string::npos) messages.push_back({"user", chunk});
            else messages.push_back({chunk.substr(0, colon), chunk.substr(colon + 1)});
            pos = end + 1;
        }
    }

    // Directly, under tight limits, so that runaway templates end fast.
    kvfit::jinja::Limits limits;
    limits.max_steps = 200000;
    limits.max_output_bytes = size_t(1) << 20;
    limits.max_alloc_bytes = uint64_t(8) << 20;
    limits.max_items = 10000;
    limits.max_depth = 64;
    bool over_limit = false;
    try {
        using kvfit::jinja::Value;
        const kvfit::jinja::Template tmpl(source, limits);
        kvfit::jinja::RenderOptions options;
        options.limits = limits;
        options.now = 0;
        std::vector<Value> list;
        for (const auto &m : messages)
            list.push_back(Value::dict({{Value::string("role"), Value::string(m.role)},
                                        {Value::string("content"), Value::string(m.content)}}));
        const kvfit::jinja::Vars vars = {{"messages", Value::list(std::move(list))},
                                         {"add_generation_prompt", Value::boolean(true)},
                                         {"bos_token", Value::string("<s>")}};
        const std::string out = tmpl.render(vars, options);
        if (out.size() > limits.max_output_bytes) std::abort();
    } catch (const kvfit::Error &e) {
        if (std::strlen(e.what()) == 0) std::abort();  // every error explains itself
        over_limit = e.status() == KVFIT_E_UNSUPPORTED && std::strstr(e.what(), "more than");
    }

    // Then through the chat layer, as kvfit_chat_apply calls it (its limits
    // are far larger, so only for what stayed within the tight ones).
    if (!over_limit) {
        kvfit::ChatTemplateTokens tokens;
        tokens.bos = "<s>";
        tokens.eos = "</s>";
        try {
            kvfit::chat_template_render(source, messages, size % 2 == 0, tokens, 1738584000);
        } catch (const kvfit::Error &e) {
            if (std::strlen(e.what()) == 0) std::abort();
        }
    }
    return 0;
}
