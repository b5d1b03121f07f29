// A small Jinja2 interpreter for chat templates: the subset of the language
// that the tokenizer.chat_template of GGUF models uses, rendered the way
// Hugging Face transformers renders it (jinja2 with trim_blocks and
// lstrip_blocks, the loopcontrols extension, an immutable sandbox, its own
// tojson filter and the raise_exception / strftime_now globals).
//
// Everything runs under limits (template size, nesting depth, call depth,
// output size, bytes built, a step budget), so no input can crash it,
// exhaust the stack or memory, or make it run unbounded (each limit ends a
// render within about a second). Errors are kvfit::Error:
//   KVFIT_E_UNSUPPORTED  the template uses something this interpreter does
//                        not implement, is malformed, or exceeds a limit;
//   KVFIT_E_TEMPLATE     the template failed while rendering: it called
//                        raise_exception, or did something jinja2 also
//                        refuses (an attribute of an undefined value, 'a' + 1).
// Messages carry the template line.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvfit {
namespace jinja {

struct HeapObject;

// A value of the template language: undefined, none, a boolean, integer,
// float, string, list (or tuple), dict, or one of the interpreter's own
// objects (namespaces, loop state, functions). Copies share their contents;
// lists and dicts never change once made.
class Value {
public:
    enum Kind : uint8_t { UNDEFINED, NONE, BOOL, INT, FLOAT, STRING, LIST, DICT, OBJECT, FUNCTION };

    Value() = default;  // undefined
    static Value none();
    static Value boolean(bool b);
    static Value integer(int64_t i);
    static Value number(double d);
    static Value string(std::string s);
    static Value list(std::vector<Value> items, bool tuple = false);
    static Value dict(std::vector<std::pair<Value, Value>> items);  // later duplicates replace earlier keys

    Kind kind() const { return kind_; }

    // Internal representation, for the interpreter.
    bool b() const { return b_; }
    int64_t i() const { return i_; }
    double f() const { return f_; }
    const HeapObject *heap() const { return heap_.get(); }
    const std::shared_ptr<HeapObject> &heap_ptr() const { return heap_; }
    static Value from_heap(Kind kind, std::shared_ptr<HeapObject> heap);

private:
    Kind kind_ = UNDEFINED;
    union {
        bool b_;
        int64_t i_ = 0;
        double f_;
    };
    std::shared_ptr<HeapObject> heap_;
};

// What a render may use. The defaults suit chat templates; the fuzzer uses
// smaller ones.
struct Limits {
    size_t max_source_bytes = size_t(1) << 20;  // the template text
    int max_depth = 64;  // nesting of expressions, blocks and values (rendering may nest 4 times that,
                         // through macros: up to about 128 KiB of stack in a release build)
    int max_call_depth = 32;                    // macro calls within macro calls
    size_t max_output_bytes = size_t(64) << 20;  // the rendered text, and any one string
    size_t max_items = size_t(1) << 20;          // elements of one list (list * n, a + b, ...)
    uint64_t max_alloc_bytes = uint64_t(256) << 20;  // strings and lists built, in all (freed or not)
    uint64_t max_steps = 20000000;  // work units: one per node evaluated or item copied, per 64 bytes
                                    // of string built or 8 bytes searched or decoded (~50 ns each)
};

// Variables a template is rendered with.
using Vars = std::vector<std::pair<std::string, Value>>;

struct RenderOptions {
    Limits limits;
    // The time strftime_now formats: < 0 means the current local time (as
    // Hugging Face renders it); otherwise these seconds since the epoch, in UTC.
    int64_t now = -1;
};

class Template {
public:
    // Parses Jinja source. Throws kvfit::Error(KVFIT_E_UNSUPPORTED) for a
    // syntax error, a construct not supported here, or a limit exceeded.
    explicit Template(std::string_view source, const Limits &limits = Limits());
    ~Template();
    Template(Template &&) noexcept;
    Template &operator=(Template &&) noexcept;

    // Renders with the given variables; throws kvfit::Error as described at
    // the top of this file. Safe to call from several threads at once.
    std::string render(const Vars &vars, const RenderOptions &options = RenderOptions()) const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

// True if s is valid UTF-8 (the interpreter reads anything else as U+FFFD).
bool utf8_is_valid(std::string_view s);

}  // namespace jinja
}  // namespace kvfit
