// Internals of the Jinja interpreter (src/chat/jinja.h): value objects, text
// helpers, the syntax tree and the render state shared by jinja_*.cpp.
#pragma once

#include <cstdarg>
#include <functional>
#include <string>
#include <vector>

#include "common.h"
#include "chat/jinja.h"

namespace kvfit {
namespace jinja {

// ---- errors ---------------------------------------------------------------

// KVFIT_E_UNSUPPORTED: not implemented here, malformed, or over a limit.
[[noreturn]] void unsupported(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// KVFIT_E_TEMPLATE: an error jinja2 raises as well, at render time.
[[noreturn]] void runtime_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// ---- heap objects -----------------------------------------------------------

struct HeapObject {
    virtual ~HeapObject() = default;
    int depth = 1;        // nesting of containers below and including this one
    bool has_ns = false;  // reaches a namespace (which must never contain itself)
};

struct StringObject : HeapObject {
    std::string s;
};

// Why a value is undefined, for error messages ("'x' is undefined").
struct UndefinedObject : HeapObject {
    std::string hint;
};

struct ListObject : HeapObject {
    std::vector<Value> items;
    bool tuple = false;
    bool range = false;  // what range() returns: prints as range(start, stop[, step])
    int64_t start = 0, stop = 0, step = 1;
    const char *view = nullptr;  // "dict_keys", "dict_values", "dict_items": a dict's views
};

struct DictObject : HeapObject {
    std::vector<std::pair<Value, Value>> items;  // insertion order, unique keys
    const Value *find(const Value &key) const;
    const Value *find(std::string_view key) const;
};

// Objects with attributes: namespace() results and the loop variable.
struct Object : HeapObject {
    virtual const char *type_name() const = 0;
    virtual bool get_attr(const std::string &name, Value &out) const = 0;
};

struct NamespaceObject : Object {
    std::vector<std::pair<std::string, Value>> attrs;
    const char *type_name() const override { return "Namespace"; }
    bool get_attr(const std::string &name, Value &out) const override;
    void set_attr(const std::string &name, const Value &v);
};

struct LoopObject : Object {
    Value items;  // the list iterated
    int64_t index0 = 0, length = 0;
    const char *type_name() const override { return "LoopContext"; }
    bool get_attr(const std::string &name, Value &out) const override;
};

struct State;

// What jinja2's map, select, items, reverse... return: a one-pass iterator
// whose items are computed when first consumed (so are its errors).
struct IteratorObject : Object {
    std::string kind = "generator";
    std::function<std::vector<Value>(State &)> source;
    std::vector<Value> items;
    size_t cursor = 0;
    bool ready = false;
    const char *type_name() const override { return kind.c_str(); }
    bool get_attr(const std::string &, Value &) const override { return false; }
    // Up to n of the items not yet consumed (all of them for SIZE_MAX).
    std::vector<Value> take(State &st, size_t n);
};

struct Node;

struct FunctionObject : HeapObject {
    enum Type { GLOBAL, METHOD, MACRO } type = GLOBAL;
    std::string name;             // global or method name; the macro's name
    Value self;                   // METHOD: the object it is bound to
    const Node *macro = nullptr;  // MACRO: its definition (owned by the template)
};

// Typed access (the kind must match).
inline const std::string &str_of(const Value &v) { return static_cast<const StringObject *>(v.heap())->s; }
inline const ListObject &list_of(const Value &v) { return *static_cast<const ListObject *>(v.heap()); }
inline const DictObject &dict_of(const Value &v) { return *static_cast<const DictObject *>(v.heap()); }
inline const Object &object_of(const Value &v) { return *static_cast<const Object *>(v.heap()); }
inline const FunctionObject &function_of(const Value &v) { return *static_cast<const FunctionObject *>(v.heap()); }

Value make_undefined(std::string hint);
std::string undefined_hint(const Value &v);  // "'x' is undefined" or similar
Value make_function(FunctionObject::Type type, std::string name, Value self = Value(), const Node *macro = nullptr);
bool is_namespace(const Value &v);
IteratorObject *iterator_of(const Value &v);  // null unless v is one
// `captured`: every value the source holds on to (for the namespace and
// depth checks).
Value make_iterator(const char *kind, const std::vector<Value> &captured,
                    std::function<std::vector<Value>(State &)> source);
NamespaceObject &namespace_of(const Value &v);
int value_depth(const Value &v);
bool value_has_ns(const Value &v);

// ---- text -------------------------------------------------------------------

// UTF-8 to code points and back (invalid bytes decode as U+FFFD).
std::u32string utf8_decode(std::string_view s);
void utf8_append(std::string &out, char32_t c);
std::string utf8_encode(const std::u32string &s);
size_t utf8_length(std::string_view s);  // code points
bool is_ascii(std::string_view s);
// Python's str.isspace() for one code point (what \s, strip() and split() use).
bool py_isspace(char32_t c);
char32_t to_upper_simple(char32_t c);
char32_t to_lower_simple(char32_t c);
bool is_cased(char32_t c);
std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_strip(std::string_view s, const Value *chars, bool left, bool right);

// Substring search in O(haystack + needle) time whatever the input (the
// standard library's may take their product); npos if absent.
size_t find_sub(std::string_view hay, std::string_view needle, size_t from = 0);
size_t rfind_sub(std::string_view hay, std::string_view needle);

// Python's repr() of a float and of a string.
std::string float_repr(double d);
std::string string_repr(std::string_view s);

// ---- the render state -------------------------------------------------------

struct State;

// Python semantics of the operators; `st` is charged for the work done.
bool truthy(const Value &v);
bool equals(const Value &a, const Value &b, int depth = 0);
int compare(const Value &a, const Value &b, const char *op, int depth = 0);  // <0, 0, >0; TypeError if unordered
std::string to_str(State &st, const Value &v);                            // str()
std::string to_repr(State &st, const Value &v);                           // repr()
const char *type_name(const Value &v);                                    // Python's name of the type

struct JsonOptions {
    bool ensure_ascii = false;
    bool indent_set = false;
    std::string indent;
    std::string item_sep = ", ", key_sep = ": ";
    bool sort_keys = false;
};
std::string to_json(State &st, const Value &v, const JsonOptions &opt);

// Iterating: lists and tuples, a dict's keys, a string's characters, nothing
// for undefined; TypeError for the rest.
std::vector<Value> iterate(State &st, const Value &v);

// ---- syntax tree ------------------------------------------------------------

enum class Op : uint8_t {
    ADD, SUB, MUL, DIV, FLOORDIV, MOD, POW, AND, OR,  // binary
    NOT, NEG, POS,                                     // unary
    EQ, NE, LT, LE, GT, GE, IN, NOTIN,                 // comparisons
};

enum class ExprKind : uint8_t {
    LITERAL,   // value
    NAME,      // name
    LIST,      // args
    TUPLE,     // args
    DICT,      // args: key, value, key, value, ...
    GETATTR,   // args[0].name
    GETITEM,   // args[0][args[1]]
    SLICE,     // args[0][args[1]:args[2]:args[3]], each of 1..3 may be null
    CALL,      // args[0](args[1..]), the last kwnames.size() are keywords
    FILTER,    // args[0] | name(args[1..])
    TEST,      // args[0] is name(args[1..])
    UNARY,     // op args[0]
    BINARY,    // args[0] op args[1]
    CONCAT,    // args[0] ~ args[1] ~ ...
    COMPARE,   // args[0] ops[0] args[1] ops[1] args[2] ...
    COND,      // args[1] if args[0] else args[2] (null: undefined)
};

struct Args;
using Builtin = Value (*)(State &st, const Value &subject, Args &args);

struct Expr {
    ExprKind kind = ExprKind::LITERAL;
    Op op = Op::ADD;
    int line = 0;
    int depth = 1;
    std::string name;
    Value value;
    std::vector<std::unique_ptr<Expr>> args;
    std::vector<std::string> kwnames;
    std::vector<Op> ops;
    Builtin fn = nullptr;  // FILTER and TEST: resolved when parsed
};
using ExprPtr = std::unique_ptr<Expr>;

enum class NodeKind : uint8_t {
    TEXT,       // text
    OUTPUT,     // {{ expr }}
    IF,         // exprs[i] -> bodies[i]; an extra body is the else
    FOR,        // for names in expr [if cond]: bodies[0], else bodies[1]
    SET,        // names = expr (several names unpack)
    SET_ATTR,   // names[0].text = expr
    SET_BLOCK,  // names[0] = rendered bodies[0]
    MACRO,      // text(names...) with exprs the defaults of the last params: bodies[0]
    BREAK,
    CONTINUE,
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
    NodeKind kind = NodeKind::TEXT;
    int line = 0;
    std::string text;
    std::vector<std::string> names;
    ExprPtr expr, cond;
    std::vector<ExprPtr> exprs;
    std::vector<Body> bodies;
};

// Parses source into a body (throws KVFIT_E_UNSUPPORTED with the line).
Body parse_template(std::string_view source, const Limits &limits);

// ---- builtins -------------------------------------------------------------

// Arguments of a filter, test, method or global function call.
struct Args {
    std::vector<Value> pos;
    std::vector<std::pair<std::string, Value>> kw;
    const char *fname = "";
    // The argument at position i or named `name`; `def` if neither is given.
    Value get(size_t i, const char *name, const Value &def = Value());
    bool has(size_t i, const char *name) const;
    // Fails unless every argument was consumed by get()/has() and at most
    // `n_pos` were positional.
    void done(size_t n_pos);

private:
    std::vector<bool> kw_used_;
};

Builtin find_filter(const std::string &name);
Builtin find_test(const std::string &name);
bool is_jinja_filter(const std::string &name);  // a jinja2 filter not implemented here
bool is_jinja_test(const std::string &name);
// name.attr of a value: dict keys, methods of strings and dicts, attributes of
// namespaces and loops; false if there is none.
bool get_attribute(State &st, const Value &obj, const std::string &name, Value &out);
// value[key] with Python's rules: lists/tuples/strings by integer, dicts by key.
bool get_item(State &st, const Value &obj, const Value &key, Value &out);
Value call_method(State &st, const FunctionObject &fn, Args &args);
Value call_global(State &st, const FunctionObject &fn, Args &args);
bool is_global_function(const std::string &name);
Value slice(State &st, const Value &obj, const Value &start, const Value &stop, const Value &step);

// The render in progress on this thread, which equals() and compare()
// charge for their work (null outside a render).
State *&charged_state();

// Everything a render needs, passed by reference through the evaluator.
struct Frame {
    Frame *parent = nullptr;
    std::vector<std::pair<std::string, Value>> vars;
    Value *find(const std::string &name);
    void set(const std::string &name, const Value &v);
};

struct State {
    const Limits &limits;
    const Vars &vars;
    int64_t now = -1;
    uint64_t steps = 0;
    int call_depth = 0;          // macro calls in progress
    int call_depth_runtime = 0;  // evaluator recursion
    int line = 0;
    uint64_t allocated = 0;  // bytes of strings and list items built so far
    Frame root;

    State(const Limits &l, const Vars &v) : limits(l), vars(v) {}
    // Charges for work on every character of a string of n bytes.
    void touch(size_t n) { step(1 + n / 8); }
    void step(uint64_t n = 1) {
        steps += n;
        if (steps > limits.max_steps)
            unsupported("the template needs more than %llu steps", (unsigned long long)limits.max_steps);
    }
    void allocate(uint64_t bytes) {
        allocated += bytes;
        if (allocated > limits.max_alloc_bytes)
            unsupported("the template builds more than %llu bytes of values",
                        (unsigned long long)limits.max_alloc_bytes);
    }
    // Charges for building a string of n bytes and checks its size.
    void check_string(size_t n) {
        step(1 + n / 64);
        if (n > limits.max_output_bytes)
            unsupported("a string of more than %zu bytes", limits.max_output_bytes);
        allocate(n);
    }
    // While a string grows piece by piece: its size so far (check_string
    // charges for the finished one).
    void check_growing(size_t n) {
        step();
        if (n > limits.max_output_bytes)
            unsupported("a string of more than %zu bytes", limits.max_output_bytes);
    }
    void check_items(size_t n) {
        step(1 + n);
        if (n > limits.max_items) unsupported("a list of more than %zu items", limits.max_items);
        allocate(uint64_t(n) * sizeof(Value));
    }
    Value new_string(std::string s) {
        check_string(s.size());
        return Value::string(std::move(s));
    }
    Value new_list(std::vector<Value> items, bool tuple = false);
    Value new_range(int64_t start, int64_t stop, int64_t step);
    Value new_dict(std::vector<std::pair<Value, Value>> items);
};

// Evaluates an expression; calls a callable value; a op b for arithmetic.
Value eval(State &st, const Expr &e, Frame &frame);
Value binary_op(State &st, Op op, const Value &a, const Value &b);
Value call_value(State &st, const Value &callee, Args &args);

}  // namespace jinja
}  // namespace kvfit
