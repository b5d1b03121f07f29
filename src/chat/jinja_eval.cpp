// The evaluator of the Jinja interpreter: expressions with Python's operator
// semantics and statements with jinja2's scoping (a for loop's body gets a
// fresh scope on every iteration; if blocks share their parent's; macros see
// the template's top level).
#include <climits>
#include <cmath>

#include "chat/jinja_impl.h"

namespace kvfit {
namespace jinja {

struct Template::Impl {
    Body body;
};

namespace {

enum class Flow { NORMAL, BREAK, CONTINUE };

// Bounds the evaluator's recursion (expressions within macros within loops...).
struct Depth {
    State &st;
    static constexpr int kFactor = 4;
    explicit Depth(State &s) : st(s) {
        if (st.call_depth_runtime >= st.limits.max_depth * kFactor)
            unsupported("the template nests more than %d levels deep while rendering", st.limits.max_depth * kFactor);
        ++st.call_depth_runtime;
    }
    ~Depth() { --st.call_depth_runtime; }
};

[[noreturn]] void undefined_error(const Value &v) { runtime_error("%s", undefined_hint(v).c_str()); }

bool int_like(const Value &v) { return v.kind() == Value::INT || v.kind() == Value::BOOL; }
bool numeric(const Value &v) { return int_like(v) || v.kind() == Value::FLOAT; }
int64_t int_of(const Value &v) { return v.kind() == Value::BOOL ? int64_t(v.b()) : v.i(); }
double double_of(const Value &v) { return v.kind() == Value::FLOAT ? v.f() : double(int_of(v)); }

[[noreturn]] void overflow() { unsupported("integer overflow (integers here are 64-bit)"); }

const char *op_symbol(Op op) {
    switch (op) {
        case Op::ADD: return "+";
        case Op::SUB: return "-";
        case Op::MUL: return "*";
        case Op::DIV: return "/";
        case Op::FLOORDIV: return "//";
        case Op::MOD: return "%";
        case Op::POW: return "**";
        case Op::LT: return "<";
        case Op::LE: return "<=";
        case Op::GT: return ">";
        case Op::GE: return ">=";
        default: return "?";
    }
}

[[noreturn]] void bad_operands(Op op, const Value &a, const Value &b) {
    runtime_error("unsupported operand type(s) for %s: '%s' and '%s'", op_symbol(op), type_name(a), type_name(b));
}

Value repeat(State &st, const Value &seq, int64_t n) {
    if (n < 0) n = 0;
    if (seq.kind() == Value::STRING) {
        const std::string &s = str_of(seq);
        if (n > 0 && s.size() > st.limits.max_output_bytes / size_t(n))
            unsupported("a string of more than %zu bytes", st.limits.max_output_bytes);
        st.check_string(s.size() * size_t(n));
        std::string out;
        out.reserve(s.size() * size_t(n));
        for (int64_t i = 0; i < n; ++i) out += s;
        return Value::string(std::move(out));
    }
    const ListObject &l = list_of(seq);
    if (l.range || l.view) runtime_error("unsupported operand type(s) for *: '%s' and 'int'", type_name(seq));
    if (n > 0 && l.items.size() > st.limits.max_items / size_t(n))
        unsupported("a list of more than %zu items", st.limits.max_items);
    std::vector<Value> items;
    items.reserve(l.items.size() * size_t(n));
    for (int64_t i = 0; i < n; ++i) items.insert(items.end(), l.items.begin(), l.items.end());
    return st.new_list(std::move(items), l.tuple);
}

double py_fmod(double a, double b) {
    double mod = std::fmod(a, b);
    if (mod != 0) {
        if ((b < 0) != (mod < 0)) mod += b;
    } else {
        mod = std::copysign(0.0, b);
    }
    return mod;
}

double py_floordiv(double a, double b) {
    const double mod = std::fmod(a, b);
    double div = (a - mod) / b;
    if (mod != 0 && (b < 0) != (mod < 0)) div -= 1.0;
    if (div == 0) return std::copysign(0.0, a / b);
    double floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
    return floordiv;
}

int64_t int_pow(int64_t base, int64_t exp) {
    int64_t result = 1;
    while (exp > 0) {
        if (exp & 1) {
            if (__builtin_mul_overflow(result, base, &result)) overflow();
        }
        exp >>= 1;
        if (exp > 0 && __builtin_mul_overflow(base, base, &base)) overflow();
    }
    return result;
}

}  // namespace

// a op b for the arithmetic operators.
Value binary_op(State &st, Op op, const Value &a, const Value &b) {
    // Python tries the left operand's method first: "str % x" formats.
    if (op == Op::MOD && a.kind() == Value::STRING) unsupported("Python's %% string formatting is not supported");
    if (a.kind() == Value::UNDEFINED) undefined_error(a);
    if (b.kind() == Value::UNDEFINED) undefined_error(b);
    const bool ints = int_like(a) && int_like(b);
    const bool nums = numeric(a) && numeric(b);
    switch (op) {
        case Op::ADD:
            if (ints) {
                int64_t r;
                if (__builtin_add_overflow(int_of(a), int_of(b), &r)) overflow();
                return Value::integer(r);
            }
            if (nums) return Value::number(double_of(a) + double_of(b));
            if (a.kind() == Value::STRING && b.kind() == Value::STRING) {
                st.check_string(str_of(a).size() + str_of(b).size());
                return Value::string(str_of(a) + str_of(b));
            }
            if (a.kind() == Value::LIST && b.kind() == Value::LIST && list_of(a).tuple == list_of(b).tuple &&
                !list_of(a).range && !list_of(b).range && !list_of(a).view && !list_of(b).view) {
                std::vector<Value> items = list_of(a).items;
                items.insert(items.end(), list_of(b).items.begin(), list_of(b).items.end());
                return st.new_list(std::move(items), list_of(a).tuple);
            }
            if (a.kind() == Value::STRING || (a.kind() == Value::LIST && !list_of(a).range && !list_of(a).view))
                runtime_error("can only concatenate %s (not \"%s\") to %s", type_name(a), type_name(b), type_name(a));
            bad_operands(op, a, b);
        case Op::SUB:
            if (ints) {
                int64_t r;
                if (__builtin_sub_overflow(int_of(a), int_of(b), &r)) overflow();
                return Value::integer(r);
            }
            if (nums) return Value::number(double_of(a) - double_of(b));
            bad_operands(op, a, b);
        case Op::MUL:
            if (ints) {
                int64_t r;
                if (__builtin_mul_overflow(int_of(a), int_of(b), &r)) overflow();
                return Value::integer(r);
            }
            if (nums) return Value::number(double_of(a) * double_of(b));
            if (int_like(a) && (b.kind() == Value::STRING || b.kind() == Value::LIST)) return repeat(st, b, int_of(a));
            if (int_like(b) && (a.kind() == Value::STRING || a.kind() == Value::LIST)) return repeat(st, a, int_of(b));
            bad_operands(op, a, b);
        case Op::DIV:
            if (nums) {
                if (double_of(b) == 0) runtime_error("division by zero");
                return Value::number(double_of(a) / double_of(b));
            }
            bad_operands(op, a, b);
        case Op::FLOORDIV:
        case Op::MOD:
            if (ints) {
                const int64_t x = int_of(a), y = int_of(b);
                if (y == 0) runtime_error("integer division or modulo by zero");
                if (x == INT64_MIN && y == -1) {
                    if (op == Op::MOD) return Value::integer(0);
                    overflow();
                }
                int64_t q = x / y, r = x % y;
                if (r != 0 && ((r < 0) != (y < 0))) {
                    q -= 1;
                    r += y;
                }
                return Value::integer(op == Op::MOD ? r : q);
            }
            if (nums) {
                if (double_of(b) == 0) runtime_error("float division by zero");
                return Value::number(op == Op::MOD ? py_fmod(double_of(a), double_of(b))
                                                   : py_floordiv(double_of(a), double_of(b)));
            }
            if (op == Op::MOD && a.kind() == Value::STRING)
                unsupported("Python's %% string formatting is not supported");
            bad_operands(op, a, b);
        case Op::POW:
            if (ints && int_of(b) >= 0) return Value::integer(int_pow(int_of(a), int_of(b)));
            if (nums) {
                const double x = double_of(a), y = double_of(b);
                if (x == 0 && y < 0) runtime_error("0.0 cannot be raised to a negative power");
                if (x < 0 && y != std::floor(y)) unsupported("a negative number to a fractional power (a complex number)");
                const double r = std::pow(x, y);
                if (std::isinf(r) && !std::isinf(x) && !std::isinf(y)) runtime_error("(34, 'Numerical result out of range')");
                return Value::number(r);
            }
            bad_operands(op, a, b);
        default: break;
    }
    unsupported("operator %d", int(op));
}

namespace {

bool contains(State &st, const Value &needle, const Value &hay) {
    switch (hay.kind()) {
        case Value::STRING:
            if (needle.kind() != Value::STRING)
                runtime_error("'in <string>' requires string as left operand, not %s", type_name(needle));
            st.touch(str_of(hay).size() + str_of(needle).size());
            return find_sub(str_of(hay), str_of(needle)) != std::string::npos;
        case Value::LIST:
            for (const Value &v : list_of(hay).items) {
                st.step();
                if (equals(needle, v)) return true;
            }
            return false;
        case Value::DICT: return dict_of(hay).find(needle) != nullptr;
        case Value::UNDEFINED: return false;
        default:
            if (iterator_of(hay)) {
                for (const Value &v : iterate(st, hay))
                    if (equals(needle, v)) return true;
                return false;
            }
            runtime_error("argument of type '%s' is not iterable", type_name(hay));
    }
}

bool compare_op(State &st, Op op, const Value &a, const Value &b) {
    switch (op) {
        case Op::EQ: return equals(a, b);
        case Op::NE: return !equals(a, b);
        case Op::IN: return contains(st, a, b);
        case Op::NOTIN: return !contains(st, a, b);
        default: break;
    }
    if (a.kind() == Value::UNDEFINED) undefined_error(a);
    if (b.kind() == Value::UNDEFINED) undefined_error(b);
    const int c = compare(a, b, op_symbol(op));
    if (c == 2) return false;  // NaN
    switch (op) {
        case Op::LT: return c < 0;
        case Op::LE: return c <= 0;
        case Op::GT: return c > 0;
        default: return c >= 0;
    }
}

Args eval_args(State &st, const Expr &e, Frame &frame) {
    Args args;
    const size_t n_kw = e.kwnames.size();
    const size_t n_pos = e.args.size() - 1 - n_kw;
    for (size_t i = 0; i < n_pos; ++i) args.pos.push_back(eval(st, *e.args[1 + i], frame));
    for (size_t i = 0; i < n_kw; ++i) args.kw.emplace_back(e.kwnames[i], eval(st, *e.args[1 + n_pos + i], frame));
    return args;
}

std::string object_desc(const Value &v) { return std::string(type_name(v)) + " object"; }

Value lookup(State &st, const std::string &name, Frame &frame) {
    if (Value *v = frame.find(name)) return *v;
    for (const auto &kv : st.vars)
        if (kv.first == name) return kv.second;
    if (is_global_function(name)) return make_function(FunctionObject::GLOBAL, name);
    return make_undefined("'" + name + "' is undefined");
}

}  // namespace

Value eval(State &st, const Expr &e, Frame &frame) {
    Depth depth(st);
    st.step();
    st.line = e.line;
    switch (e.kind) {
        case ExprKind::LITERAL: return e.value;
        case ExprKind::NAME: return lookup(st, e.name, frame);
        case ExprKind::LIST:
        case ExprKind::TUPLE: {
            std::vector<Value> items;
            items.reserve(e.args.size());
            for (const auto &a : e.args) items.push_back(eval(st, *a, frame));
            return st.new_list(std::move(items), e.kind == ExprKind::TUPLE);
        }
        case ExprKind::DICT: {
            std::vector<std::pair<Value, Value>> items;
            for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
                Value k = eval(st, *e.args[i], frame);
                if (k.kind() == Value::LIST && !list_of(k).tuple) runtime_error("unhashable type: 'list'");
                if (k.kind() == Value::DICT) runtime_error("unhashable type: 'dict'");
                items.emplace_back(std::move(k), eval(st, *e.args[i + 1], frame));
            }
            return st.new_dict(std::move(items));
        }
        case ExprKind::GETATTR: {
            const Value obj = eval(st, *e.args[0], frame);
            st.line = e.line;
            if (obj.kind() == Value::UNDEFINED) undefined_error(obj);
            Value out;
            if (get_attribute(st, obj, e.name, out)) return out;
            return make_undefined("'" + object_desc(obj) + "' has no attribute '" + e.name + "'");
        }
        case ExprKind::GETITEM: {
            const Value obj = eval(st, *e.args[0], frame);
            const Value key = eval(st, *e.args[1], frame);
            st.line = e.line;
            if (obj.kind() == Value::UNDEFINED) undefined_error(obj);
            Value out;
            if (get_item(st, obj, key, out)) return out;
            if (key.kind() == Value::STRING)
                return make_undefined("'" + object_desc(obj) + "' has no attribute '" + str_of(key) + "'");
            return make_undefined(object_desc(obj) + " has no element " + to_repr(st, key));
        }
        case ExprKind::SLICE: {
            const Value obj = eval(st, *e.args[0], frame);
            Value parts[3];
            for (int i = 0; i < 3; ++i) parts[i] = e.args[1 + i] ? eval(st, *e.args[1 + i], frame) : Value::none();
            st.line = e.line;
            if (obj.kind() == Value::UNDEFINED) undefined_error(obj);
            return slice(st, obj, parts[0], parts[1], parts[2]);
        }
        case ExprKind::CALL: {
            const Value callee = eval(st, *e.args[0], frame);
            Args args = eval_args(st, e, frame);
            st.line = e.line;
            return call_value(st, callee, args);
        }
        case ExprKind::FILTER:
        case ExprKind::TEST: {
            const Value subject = eval(st, *e.args[0], frame);
            Args args = eval_args(st, e, frame);
            st.line = e.line;
            const char *what = e.kind == ExprKind::FILTER ? "filter" : "test";
            if (!e.fn) unsupported("the %s '%s' is not supported", what, e.name.c_str());
            args.fname = e.name.c_str();
            if (subject.kind() == Value::STRING) st.touch(str_of(subject).size());  // string filters read it all
            return e.fn(st, subject, args);
        }
        case ExprKind::UNARY: {
            const Value v = eval(st, *e.args[0], frame);
            if (e.op == Op::NOT) return Value::boolean(!truthy(v));
            if (v.kind() == Value::UNDEFINED) undefined_error(v);
            if (int_like(v)) {
                if (e.op == Op::POS) return Value::integer(int_of(v));
                if (int_of(v) == INT64_MIN) overflow();
                return Value::integer(-int_of(v));
            }
            if (v.kind() == Value::FLOAT) return Value::number(e.op == Op::NEG ? -v.f() : v.f());
            runtime_error("bad operand type for unary %s: '%s'", e.op == Op::NEG ? "-" : "+", type_name(v));
        }
        case ExprKind::BINARY: {
            Value acc = eval(st, *e.args[0], frame);
            for (size_t i = 0; i < e.ops.size(); ++i) {
                const Op op = e.ops[i];
                if (op == Op::AND) {
                    if (!truthy(acc)) return acc;
                    acc = eval(st, *e.args[i + 1], frame);
                } else if (op == Op::OR) {
                    if (truthy(acc)) return acc;
                    acc = eval(st, *e.args[i + 1], frame);
                } else {
                    const Value rhs = eval(st, *e.args[i + 1], frame);
                    st.line = e.line;
                    acc = binary_op(st, op, acc, rhs);
                }
            }
            return acc;
        }
        case ExprKind::CONCAT: {
            std::string out;
            for (const auto &a : e.args) {
                out += to_str(st, eval(st, *a, frame));
                st.check_growing(out.size());
            }
            return st.new_string(std::move(out));
        }
        case ExprKind::COMPARE: {
            Value left = eval(st, *e.args[0], frame);
            for (size_t i = 0; i < e.ops.size(); ++i) {
                Value right = eval(st, *e.args[i + 1], frame);
                st.line = e.line;
                if (!compare_op(st, e.ops[i], left, right)) return Value::boolean(false);
                left = std::move(right);
            }
            return Value::boolean(true);
        }
        case ExprKind::COND:
            if (truthy(eval(st, *e.args[0], frame))) return eval(st, *e.args[1], frame);
            if (e.args[2]) return eval(st, *e.args[2], frame);
            return make_undefined("the inline if-expression on line " + std::to_string(e.line) +
                                  " evaluated to false and no else section was defined.");
    }
    unsupported("expression kind %d", int(e.kind));
}

namespace {

Flow render_body(State &st, const Body &body, Frame &frame, std::string &out);

void append_output(State &st, std::string &out, const std::string &s) {
    st.step(s.size() / 64);
    if (out.size() + s.size() > st.limits.max_output_bytes)
        unsupported("the output exceeds %zu bytes", st.limits.max_output_bytes);
    out += s;
}

// Binds a for or set target: one name takes the value, several unpack it.
void assign(State &st, Frame &frame, const std::vector<std::string> &names, const Value &v) {
    if (names.size() == 1) {
        frame.set(names[0], v);
        return;
    }
    if (v.kind() == Value::UNDEFINED) undefined_error(v);
    const std::vector<Value> items = iterate(st, v);
    if (items.size() > names.size())
        runtime_error("too many values to unpack (expected %zu)", names.size());
    if (items.size() < names.size())
        runtime_error("not enough values to unpack (expected %zu, got %zu)", names.size(), items.size());
    for (size_t i = 0; i < names.size(); ++i) frame.set(names[i], items[i]);
}

Flow render_for(State &st, const Node &n, Frame &frame, std::string &out) {
    const Value iterable = eval(st, *n.expr, frame);
    st.line = n.line;
    std::vector<Value> items = iterate(st, iterable);
    if (n.cond) {
        std::vector<Value> kept;
        for (const Value &item : items) {
            Frame f;
            f.parent = &frame;
            assign(st, f, n.names, item);
            if (truthy(eval(st, *n.cond, f))) kept.push_back(item);
        }
        items = std::move(kept);
    }
    // As jinja2 compiles it, the else block runs unless an iteration ran to
    // its end: when there were no items, and also after a break (or a
    // continue) in the last iteration run.
    bool run_else = true;
    const int64_t length = int64_t(items.size());
    // The loop variable keeps the items: the list itself when that is what
    // was iterated, else a new one.
    const bool plain = iterable.kind() == Value::LIST && !n.cond && !list_of(iterable).range;
    const Value list = plain ? iterable : st.new_list(std::move(items));
    for (int64_t i = 0; i < length; ++i) {
        st.step(4);  // a scope and a loop object per iteration
        Frame f;
        f.parent = &frame;
        assign(st, f, n.names, list_of(list).items[size_t(i)]);
        auto loop = std::make_shared<LoopObject>();
        loop->items = list;
        loop->index0 = i;
        loop->length = length;
        loop->has_ns = value_has_ns(list);
        loop->depth = value_depth(list) + 1;
        f.set("loop", Value::from_heap(Value::OBJECT, std::move(loop)));
        const Flow flow = render_body(st, n.bodies[0], f, out);
        if (flow == Flow::BREAK) break;
        if (flow == Flow::NORMAL) run_else = false;
    }
    if (run_else && n.bodies.size() > 1) {
        Frame f;
        f.parent = &frame;
        return render_body(st, n.bodies[1], f, out);  // a break there belongs to an outer loop
    }
    return Flow::NORMAL;
}

Flow render_node(State &st, const Node &n, Frame &frame, std::string &out) {
    Depth depth(st);
    st.step();
    st.line = n.line;
    switch (n.kind) {
        case NodeKind::TEXT: append_output(st, out, n.text); return Flow::NORMAL;
        case NodeKind::OUTPUT: {
            const Value v = eval(st, *n.expr, frame);
            st.line = n.line;
            append_output(st, out, to_str(st, v));
            return Flow::NORMAL;
        }
        case NodeKind::IF:
            for (size_t i = 0; i < n.exprs.size(); ++i) {
                if (truthy(eval(st, *n.exprs[i], frame))) return render_body(st, n.bodies[i], frame, out);
            }
            if (n.bodies.size() > n.exprs.size()) return render_body(st, n.bodies.back(), frame, out);
            return Flow::NORMAL;
        case NodeKind::FOR: return render_for(st, n, frame, out);
        case NodeKind::SET: assign(st, frame, n.names, eval(st, *n.expr, frame)); return Flow::NORMAL;
        case NodeKind::SET_ATTR: {
            Value *target = frame.find(n.names[0]);
            Value ns;
            if (target) {
                ns = *target;
            } else {
                for (const auto &kv : st.vars)
                    if (kv.first == n.names[0]) ns = kv.second;
            }
            if (!is_namespace(ns)) runtime_error("cannot assign attribute on non-namespace object");
            const Value v = eval(st, *n.expr, frame);
            st.line = n.line;
            if (value_has_ns(v)) unsupported("storing a namespace, or something holding one, in a namespace");
            if (value_depth(v) + 1 > st.limits.max_depth)
                unsupported("values nested more than %d deep", st.limits.max_depth);
            namespace_of(ns).set_attr(n.text, v);
            return Flow::NORMAL;
        }
        case NodeKind::SET_BLOCK: {
            Frame f;
            f.parent = &frame;
            std::string captured;
            render_body(st, n.bodies[0], f, captured);
            frame.set(n.names[0], Value::string(std::move(captured)));
            return Flow::NORMAL;
        }
        case NodeKind::MACRO:
            frame.set(n.text, make_function(FunctionObject::MACRO, n.text, Value(), &n));
            return Flow::NORMAL;
        case NodeKind::BREAK: return Flow::BREAK;
        case NodeKind::CONTINUE: return Flow::CONTINUE;
    }
    return Flow::NORMAL;
}

Flow render_body(State &st, const Body &body, Frame &frame, std::string &out) {
    for (const auto &n : body) {
        const Flow flow = render_node(st, *n, frame, out);
        if (flow != Flow::NORMAL) return flow;
    }
    return Flow::NORMAL;
}

Value call_macro(State &st, const FunctionObject &fn, Args &args) {
    const Node &m = *fn.macro;
    if (st.call_depth >= st.limits.max_call_depth)
        unsupported("macro calls nested more than %d deep", st.limits.max_call_depth);
    if (args.pos.size() > m.names.size())
        runtime_error("macro '%s' takes not more than %zu argument(s)", m.text.c_str(), m.names.size());
    for (const auto &kw : args.kw) {
        bool known = false;
        for (const auto &p : m.names) known = known || p == kw.first;
        if (!known) runtime_error("macro '%s' takes no keyword argument '%s'", m.text.c_str(), kw.first.c_str());
    }
    Frame f;
    f.parent = &st.root;
    const size_t first_default = m.names.size() - m.exprs.size();
    for (size_t i = 0; i < m.names.size(); ++i) {
        Value v;
        bool given = false;
        if (i < args.pos.size()) {
            v = args.pos[i];
            given = true;
        }
        for (const auto &kw : args.kw)
            if (kw.first == m.names[i]) {
                if (given) runtime_error("macro '%s' got multiple values for argument '%s'", m.text.c_str(), kw.first.c_str());
                v = kw.second;
                given = true;
            }
        if (!given) {
            if (i >= first_default) v = eval(st, *m.exprs[i - first_default], f);
            else v = make_undefined("parameter '" + m.names[i] + "' was not provided");
        }
        f.set(m.names[i], v);
    }
    ++st.call_depth;
    std::string out;
    try {
        render_body(st, m.bodies[0], f, out);
    } catch (...) {
        --st.call_depth;
        throw;
    }
    --st.call_depth;
    return Value::string(std::move(out));
}

}  // namespace

Value call_value(State &st, const Value &callee, Args &args) {
    if (callee.kind() == Value::UNDEFINED) undefined_error(callee);
    if (callee.kind() != Value::FUNCTION) runtime_error("'%s' object is not callable", type_name(callee));
    const FunctionObject &fn = function_of(callee);
    args.fname = fn.name.c_str();
    switch (fn.type) {
        case FunctionObject::MACRO: return call_macro(st, fn, args);
        case FunctionObject::METHOD: return call_method(st, fn, args);
        default: return call_global(st, fn, args);
    }
}

// ---- Template -----------------------------------------------------------------

Template::Template(std::string_view source, const Limits &limits) : impl_(new Impl) {
    impl_->body = parse_template(source, limits);
}

Template::~Template() = default;
Template::Template(Template &&) noexcept = default;
Template &Template::operator=(Template &&) noexcept = default;

std::string Template::render(const Vars &vars, const RenderOptions &options) const {
    State st(options.limits, vars);
    st.now = options.now;
    std::string out;
    // Comparisons charge this render for their work; renders nest never.
    struct Charged {
        State *saved;
        explicit Charged(State *s) : saved(charged_state()) { charged_state() = s; }
        ~Charged() { charged_state() = saved; }
    } charged(&st);
    try {
        render_body(st, impl_->body, st.root, out);
    } catch (const Error &e) {
        throw Error(e.status(), strfmt("line %d: %s", st.line, e.what()));
    }
    return out;
}

}  // namespace jinja
}  // namespace kvfit
