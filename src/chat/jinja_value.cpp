// Values of the Jinja interpreter and the Python semantics they follow:
// truth, equality, ordering, str(), repr() and json.dumps().
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "chat/jinja_impl.h"

namespace kvfit {
namespace jinja {

namespace {

std::string vformat(const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    const int n = std::vsnprintf(nullptr, 0, fmt, ap);
    std::string out(n > 0 ? size_t(n) : 0, '\0');
    if (n > 0) std::vsnprintf(&out[0], size_t(n) + 1, fmt, ap2);
    va_end(ap2);
    return out;
}

// Values nested deeper than this are not walked (a guard on top of the
// depth limit enforced when containers are built).
constexpr int kMaxWalkDepth = 1024;

void check_walk_depth(int depth) {
    if (depth > kMaxWalkDepth) unsupported("values nested more than %d deep", kMaxWalkDepth);
}

}  // namespace

void unsupported(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string msg = vformat(fmt, ap);
    va_end(ap);
    throw Error(KVFIT_E_UNSUPPORTED, msg);
}

void runtime_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string msg = vformat(fmt, ap);
    va_end(ap);
    throw Error(KVFIT_E_TEMPLATE, msg);
}

// ---- construction -------------------------------------------------------------

Value Value::none() {
    Value v;
    v.kind_ = NONE;
    return v;
}

Value Value::boolean(bool b) {
    Value v;
    v.kind_ = BOOL;
    v.i_ = 0;
    v.b_ = b;
    return v;
}

Value Value::integer(int64_t i) {
    Value v;
    v.kind_ = INT;
    v.i_ = i;
    return v;
}

Value Value::number(double d) {
    Value v;
    v.kind_ = FLOAT;
    v.f_ = d;
    return v;
}

Value Value::string(std::string s) {
    auto obj = std::make_shared<StringObject>();
    obj->s = std::move(s);
    return from_heap(STRING, std::move(obj));
}

Value Value::list(std::vector<Value> items, bool tuple) {
    auto obj = std::make_shared<ListObject>();
    obj->tuple = tuple;
    for (const Value &v : items) {
        obj->depth = std::max(obj->depth, value_depth(v) + 1);
        obj->has_ns = obj->has_ns || value_has_ns(v);
    }
    obj->items = std::move(items);
    return from_heap(LIST, std::move(obj));
}

Value Value::dict(std::vector<std::pair<Value, Value>> items) {
    auto obj = std::make_shared<DictObject>();
    for (auto &kv : items) {
        obj->depth = std::max({obj->depth, value_depth(kv.first) + 1, value_depth(kv.second) + 1});
        obj->has_ns = obj->has_ns || value_has_ns(kv.first) || value_has_ns(kv.second);
        bool replaced = false;
        for (auto &old : obj->items)
            if (equals(old.first, kv.first)) {
                old.second = std::move(kv.second);
                replaced = true;
                break;
            }
        if (!replaced) obj->items.push_back(std::move(kv));
    }
    return from_heap(DICT, std::move(obj));
}

Value Value::from_heap(Kind kind, std::shared_ptr<HeapObject> heap) {
    Value v;
    v.kind_ = kind;
    v.heap_ = std::move(heap);
    return v;
}

Value make_undefined(std::string hint) {
    auto obj = std::make_shared<UndefinedObject>();
    obj->hint = std::move(hint);
    return Value::from_heap(Value::UNDEFINED, std::move(obj));
}

std::string undefined_hint(const Value &v) {
    if (v.kind() == Value::UNDEFINED && v.heap()) return static_cast<const UndefinedObject *>(v.heap())->hint;
    return "value is undefined";
}

Value make_function(FunctionObject::Type type, std::string name, Value self, const Node *macro) {
    auto obj = std::make_shared<FunctionObject>();
    obj->type = type;
    obj->name = std::move(name);
    obj->has_ns = value_has_ns(self);
    obj->depth = value_depth(self) + 1;
    obj->self = std::move(self);
    obj->macro = macro;
    return Value::from_heap(Value::FUNCTION, std::move(obj));
}

IteratorObject *iterator_of(const Value &v) {
    if (v.kind() != Value::OBJECT) return nullptr;
    return dynamic_cast<IteratorObject *>(v.heap_ptr().get());
}

Value make_iterator(const char *kind, const std::vector<Value> &captured,
                    std::function<std::vector<Value>(State &)> source) {
    auto it = std::make_shared<IteratorObject>();
    it->kind = kind;
    it->source = std::move(source);
    for (const Value &v : captured) {
        it->has_ns = it->has_ns || value_has_ns(v);
        it->depth = std::max(it->depth, value_depth(v) + 1);
    }
    return Value::from_heap(Value::OBJECT, std::move(it));
}

std::vector<Value> IteratorObject::take(State &st, size_t n) {
    if (!ready) {
        ready = true;
        auto source_fn = std::move(source);
        source = nullptr;
        items = source_fn(st);
    }
    const size_t end = n >= items.size() - cursor ? items.size() : cursor + n;
    std::vector<Value> out(items.begin() + long(cursor), items.begin() + long(end));
    cursor = end;
    return out;
}

bool is_namespace(const Value &v) {
    return v.kind() == Value::OBJECT && dynamic_cast<const NamespaceObject *>(v.heap()) != nullptr;
}

NamespaceObject &namespace_of(const Value &v) { return *static_cast<NamespaceObject *>(v.heap_ptr().get()); }

int value_depth(const Value &v) { return v.heap() && v.kind() != Value::STRING ? v.heap()->depth : 0; }

bool value_has_ns(const Value &v) { return v.heap() && v.heap()->has_ns; }

const Value *DictObject::find(const Value &key) const {
    for (const auto &kv : items)
        if (equals(kv.first, key)) return &kv.second;
    return nullptr;
}

const Value *DictObject::find(std::string_view key) const {
    for (const auto &kv : items)
        if (kv.first.kind() == Value::STRING && str_of(kv.first) == key) return &kv.second;
    return nullptr;
}

bool NamespaceObject::get_attr(const std::string &name, Value &out) const {
    for (const auto &kv : attrs)
        if (kv.first == name) {
            out = kv.second;
            return true;
        }
    return false;
}

void NamespaceObject::set_attr(const std::string &name, const Value &v) {
    depth = std::max(depth, value_depth(v) + 1);
    for (auto &kv : attrs)
        if (kv.first == name) {
            kv.second = v;
            return;
        }
    attrs.emplace_back(name, v);
}

bool LoopObject::get_attr(const std::string &name, Value &out) const {
    const auto &it = list_of(items).items;
    if (name == "index") out = Value::integer(index0 + 1);
    else if (name == "index0") out = Value::integer(index0);
    else if (name == "revindex") out = Value::integer(length - index0);
    else if (name == "revindex0") out = Value::integer(length - index0 - 1);
    else if (name == "first") out = Value::boolean(index0 == 0);
    else if (name == "last") out = Value::boolean(index0 == length - 1);
    else if (name == "length") out = Value::integer(length);
    else if (name == "depth") out = Value::integer(1);
    else if (name == "depth0") out = Value::integer(0);
    else if (name == "previtem")
        out = index0 > 0 ? it[size_t(index0 - 1)] : make_undefined("there is no previous item");
    else if (name == "nextitem")
        out = index0 + 1 < length ? it[size_t(index0 + 1)] : make_undefined("there is no next item");
    else return false;
    return true;
}

Value State::new_list(std::vector<Value> items, bool tuple) {
    check_items(items.size());
    Value v = Value::list(std::move(items), tuple);
    if (value_depth(v) > limits.max_depth) unsupported("values nested more than %d deep", limits.max_depth);
    return v;
}

Value State::new_range(int64_t start, int64_t stop, int64_t step) {
    __int128 n = 0;
    if (step > 0 && stop > start) n = ((__int128)stop - start + step - 1) / step;
    if (step < 0 && stop < start) n = ((__int128)start - stop - step - 1) / -step;
    if (n > (__int128)limits.max_items) unsupported("a list of more than %zu items", limits.max_items);
    std::vector<Value> items;
    items.reserve(size_t(n));
    for (int64_t i = 0; i < int64_t(n); ++i) items.push_back(Value::integer(int64_t(start + (__int128)i * step)));
    Value r = new_list(std::move(items));
    auto &obj = *static_cast<ListObject *>(r.heap_ptr().get());
    obj.range = true;
    obj.start = start;
    obj.stop = stop;
    obj.step = step;
    return r;
}

Value State::new_dict(std::vector<std::pair<Value, Value>> items) {
    check_items(items.size());
    step(items.size() * items.size() / 16);  // duplicate keys are looked for pairwise
    Value v = Value::dict(std::move(items));
    if (value_depth(v) > limits.max_depth) unsupported("values nested more than %d deep", limits.max_depth);
    return v;
}

Value *Frame::find(const std::string &name) {
    for (Frame *f = this; f; f = f->parent)
        for (auto &kv : f->vars)
            if (kv.first == name) return &kv.second;
    return nullptr;
}

void Frame::set(const std::string &name, const Value &v) {
    for (auto &kv : vars)
        if (kv.first == name) {
            kv.second = v;
            return;
        }
    vars.emplace_back(name, v);
}

// ---- Python semantics -----------------------------------------------------------

const char *type_name(const Value &v) {
    switch (v.kind()) {
        case Value::UNDEFINED: return "Undefined";
        case Value::NONE: return "NoneType";
        case Value::BOOL: return "bool";
        case Value::INT: return "int";
        case Value::FLOAT: return "float";
        case Value::STRING: return "str";
        case Value::LIST:
            return list_of(v).view ? list_of(v).view : list_of(v).range ? "range" : list_of(v).tuple ? "tuple" : "list";
        case Value::DICT: return "dict";
        case Value::OBJECT: return object_of(v).type_name();
        case Value::FUNCTION: return "function";
    }
    return "object";
}

bool truthy(const Value &v) {
    switch (v.kind()) {
        case Value::UNDEFINED:
        case Value::NONE: return false;
        case Value::BOOL: return v.b();
        case Value::INT: return v.i() != 0;
        case Value::FLOAT: return v.f() != 0;
        case Value::STRING: return !str_of(v).empty();
        case Value::LIST: return !list_of(v).items.empty();
        case Value::DICT: return !dict_of(v).items.empty();
        default: return true;
    }
}

namespace {

bool is_number(const Value &v) {
    return v.kind() == Value::BOOL || v.kind() == Value::INT || v.kind() == Value::FLOAT;
}

int64_t as_int(const Value &v) { return v.kind() == Value::BOOL ? int64_t(v.b()) : v.i(); }

// Compares an integer with a double exactly, as Python does.
int compare_int_double(int64_t a, double b) {
    if (std::isnan(b)) return 2;  // unordered
    if (b >= 9.3e18) return -1;
    if (b <= -9.3e18) return 1;
    const double fb = std::floor(b);
    const int64_t ib = int64_t(fb);
    if (a < ib) return -1;
    if (a > ib) return 1;
    return fb < b ? -1 : 0;
}

// -1, 0, 1, or 2 for unordered (NaN).
int compare_numbers(const Value &a, const Value &b) {
    if (a.kind() != Value::FLOAT && b.kind() != Value::FLOAT) {
        const int64_t x = as_int(a), y = as_int(b);
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.kind() == Value::FLOAT && b.kind() == Value::FLOAT) {
        const double x = a.f(), y = b.f();
        if (std::isnan(x) || std::isnan(y)) return 2;
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.kind() == Value::FLOAT) {
        const int r = compare_int_double(as_int(b), a.f());
        return r == 2 ? 2 : -r;
    }
    return compare_int_double(as_int(a), b.f());
}

}  // namespace

State *&charged_state() {
    static thread_local State *state = nullptr;
    return state;
}

namespace {
void charge(const Value &a) {
    if (State *st = charged_state()) st->touch(a.kind() == Value::STRING ? str_of(a).size() : 0);
}
}  // namespace

bool equals(const Value &a, const Value &b, int depth) {
    check_walk_depth(depth);
    charge(a);
    if (is_number(a) && is_number(b)) return compare_numbers(a, b) == 0;
    if (a.kind() != b.kind()) return false;
    switch (a.kind()) {
        case Value::UNDEFINED:
        case Value::NONE: return true;
        case Value::STRING: return str_of(a) == str_of(b);
        case Value::LIST: {
            const ListObject &x = list_of(a), &y = list_of(b);
            if (x.tuple != y.tuple || x.range != y.range || x.view != y.view || x.items.size() != y.items.size())
                return false;
            if (x.view && std::strcmp(x.view, "dict_values") == 0) return a.heap() == b.heap();
            for (size_t i = 0; i < x.items.size(); ++i)
                if (!equals(x.items[i], y.items[i], depth + 1)) return false;
            return true;
        }
        case Value::DICT: {
            const DictObject &x = dict_of(a), &y = dict_of(b);
            if (x.items.size() != y.items.size()) return false;
            for (const auto &kv : x.items) {
                const Value *other = y.find(kv.first);
                if (!other || !equals(kv.second, *other, depth + 1)) return false;
            }
            return true;
        }
        default: return a.heap() == b.heap();
    }
}

int compare(const Value &a, const Value &b, const char *op, int depth) {
    check_walk_depth(depth);
    charge(a);
    if (is_number(a) && is_number(b)) {
        const int r = compare_numbers(a, b);
        return r == 2 ? 2 : r;
    }
    if (a.kind() == Value::STRING && b.kind() == Value::STRING) {
        // UTF-8 byte order is code point order.
        const int r = str_of(a).compare(str_of(b));
        return r < 0 ? -1 : r > 0 ? 1 : 0;
    }
    if (a.kind() == Value::LIST && b.kind() == Value::LIST && list_of(a).tuple == list_of(b).tuple &&
        !list_of(a).range && !list_of(b).range && !list_of(a).view && !list_of(b).view) {
        const auto &x = list_of(a).items, &y = list_of(b).items;
        for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
            if (equals(x[i], y[i], depth + 1)) continue;
            return compare(x[i], y[i], op, depth + 1);
        }
        return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
    }
    runtime_error("'%s' not supported between instances of '%s' and '%s'", op, type_name(a), type_name(b));
}

namespace {

void append_repr(State &st, std::string &out, const Value &v, int depth);

void append_str(State &st, std::string &out, const Value &v, int depth) {
    switch (v.kind()) {
        case Value::UNDEFINED: return;
        case Value::NONE: out += "None"; return;
        case Value::BOOL: out += v.b() ? "True" : "False"; return;
        case Value::INT: out += std::to_string(v.i()); return;
        case Value::FLOAT: out += float_repr(v.f()); return;
        case Value::STRING: out += str_of(v); return;
        default: append_repr(st, out, v, depth);
    }
}

void append_repr(State &st, std::string &out, const Value &v, int depth) {
    check_walk_depth(depth);
    st.check_growing(out.size());
    switch (v.kind()) {
        case Value::UNDEFINED: out += "Undefined"; return;  // what jinja2 shows inside a container
        case Value::STRING:
            st.step(str_of(v).size() / 16);
            out += string_repr(str_of(v));
            return;
        case Value::LIST: {
            const ListObject &l = list_of(v);
            if (l.range) {
                out += "range(" + std::to_string(l.start) + ", " + std::to_string(l.stop);
                if (l.step != 1) out += ", " + std::to_string(l.step);
                out += ')';
                return;
            }
            if (l.view) out += std::string(l.view) + "(";
            out += l.tuple ? '(' : '[';
            for (size_t i = 0; i < l.items.size(); ++i) {
                if (i) out += ", ";
                append_repr(st, out, l.items[i], depth + 1);
            }
            if (l.tuple && l.items.size() == 1) out += ',';
            out += l.tuple ? ')' : ']';
            if (l.view) out += ')';
            return;
        }
        case Value::DICT: {
            out += '{';
            bool first = true;
            for (const auto &kv : dict_of(v).items) {
                if (!first) out += ", ";
                first = false;
                append_repr(st, out, kv.first, depth + 1);
                out += ": ";
                append_repr(st, out, kv.second, depth + 1);
            }
            out += '}';
            return;
        }
        case Value::OBJECT:
            if (is_namespace(v)) {
                out += "<Namespace {";
                bool first = true;
                for (const auto &kv : namespace_of(v).attrs) {
                    if (!first) out += ", ";
                    first = false;
                    out += string_repr(kv.first);
                    out += ": ";
                    append_repr(st, out, kv.second, depth + 1);
                }
                out += "}>";
                return;
            }
            unsupported("printing a %s object", object_of(v).type_name());
        case Value::FUNCTION: unsupported("printing the function '%s'", function_of(v).name.c_str());
        default: append_str(st, out, v, depth);
    }
}

}  // namespace

std::string to_str(State &st, const Value &v) {
    if (v.kind() == Value::STRING) return str_of(v);
    std::string out;
    append_str(st, out, v, 0);
    st.check_string(out.size());
    return out;
}

std::string to_repr(State &st, const Value &v) {
    std::string out;
    append_repr(st, out, v, 0);
    st.check_string(out.size());
    return out;
}

namespace {

void json_escape(std::string &out, char32_t c) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(c));
    out += buf;
}

// One ASCII character as json.dumps writes it inside a string.
void json_ascii(std::string &out, char c) {
    switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
            if (static_cast<unsigned char>(c) < 0x20) json_escape(out, char32_t(c));
            else out += c;
    }
}

void json_string(std::string &out, std::string_view s, bool ensure_ascii) {
    out += '"';
    if (!ensure_ascii || is_ascii(s)) {
        // Bytes of multi-byte characters (>= 0x80) pass through unchanged.
        for (char c : s) json_ascii(out, c);
    } else {
        for (char32_t c : utf8_decode(s)) {
            if (c < 0x80) {
                json_ascii(out, char(c));
            } else if (c < 0x10000) {
                json_escape(out, c);
            } else {
                const char32_t u = c - 0x10000;
                json_escape(out, 0xD800 + (u >> 10));
                json_escape(out, 0xDC00 + (u & 0x3FF));
            }
        }
    }
    out += '"';
}

std::string json_key(State &st, const Value &k) {
    switch (k.kind()) {
        case Value::STRING: return str_of(k);
        case Value::NONE: return "null";
        case Value::BOOL: return k.b() ? "true" : "false";
        case Value::INT: return std::to_string(k.i());
        case Value::FLOAT: {
            const double d = k.f();
            if (std::isnan(d)) return "NaN";
            if (std::isinf(d)) return d < 0 ? "-Infinity" : "Infinity";
            return float_repr(d);
        }
        default: runtime_error("keys must be str, int, float, bool or None, not %s", type_name(k));
    }
}

void append_json(State &st, std::string &out, const Value &v, const JsonOptions &opt, int level) {
    check_walk_depth(level);
    st.check_growing(out.size());
    st.step();
    auto newline = [&](int lvl) {
        if (!opt.indent_set) return;
        out += '\n';
        for (int i = 0; i < lvl; ++i) out += opt.indent;
    };
    switch (v.kind()) {
        case Value::NONE: out += "null"; return;
        case Value::BOOL: out += v.b() ? "true" : "false"; return;
        case Value::INT: out += std::to_string(v.i()); return;
        case Value::FLOAT: {
            const double d = v.f();
            if (std::isnan(d)) out += "NaN";
            else if (std::isinf(d)) out += d < 0 ? "-Infinity" : "Infinity";
            else out += float_repr(d);
            return;
        }
        case Value::STRING:
            st.step(str_of(v).size() / 16);
            json_string(out, str_of(v), opt.ensure_ascii);
            return;
        case Value::LIST: {
            if (list_of(v).range || list_of(v).view)
                runtime_error("Object of type %s is not JSON serializable", type_name(v));
            const auto &items = list_of(v).items;
            if (items.empty()) {
                out += "[]";
                return;
            }
            out += '[';
            for (size_t i = 0; i < items.size(); ++i) {
                if (i) out += opt.item_sep;
                newline(level + 1);
                append_json(st, out, items[i], opt, level + 1);
            }
            newline(level);
            out += ']';
            return;
        }
        case Value::DICT: {
            std::vector<std::pair<std::string, const Value *>> items;
            for (const auto &kv : dict_of(v).items) items.emplace_back(json_key(st, kv.first), &kv.second);
            if (opt.sort_keys) {
                for (const auto &kv : dict_of(v).items)
                    if (kv.first.kind() != Value::STRING) unsupported("tojson(sort_keys=true) with keys that are not strings");
                std::stable_sort(items.begin(), items.end(),
                                 [](const auto &a, const auto &b) { return a.first < b.first; });
            }
            if (items.empty()) {
                out += "{}";
                return;
            }
            out += '{';
            for (size_t i = 0; i < items.size(); ++i) {
                if (i) out += opt.item_sep;
                newline(level + 1);
                json_string(out, items[i].first, opt.ensure_ascii);
                out += opt.key_sep;
                append_json(st, out, *items[i].second, opt, level + 1);
            }
            newline(level);
            out += '}';
            return;
        }
        default: runtime_error("Object of type %s is not JSON serializable", type_name(v));
    }
}

}  // namespace

std::string to_json(State &st, const Value &v, const JsonOptions &opt) {
    std::string out;
    append_json(st, out, v, opt, 0);
    st.check_string(out.size());
    return out;
}

std::vector<Value> iterate(State &st, const Value &v) {
    switch (v.kind()) {
        case Value::UNDEFINED: return {};
        case Value::LIST: st.step(list_of(v).items.size()); return list_of(v).items;
        case Value::DICT: {
            st.step(dict_of(v).items.size());
            std::vector<Value> keys;
            for (const auto &kv : dict_of(v).items) keys.push_back(kv.first);
            return keys;
        }
        case Value::STRING: {
            const std::string &s = str_of(v);
            std::vector<Value> chars;
            st.check_items(s.size());
            if (is_ascii(s)) {
                for (char c : s) chars.push_back(Value::string(std::string(1, c)));
            } else {
                for (char32_t c : utf8_decode(s)) {
                    std::string one;
                    utf8_append(one, c);
                    chars.push_back(Value::string(std::move(one)));
                }
            }
            return chars;
        }
        default:
            if (IteratorObject *it = iterator_of(v)) return it->take(st, SIZE_MAX);
            if (v.kind() == Value::OBJECT && !is_namespace(v)) unsupported("iterating over the loop variable");
            runtime_error("'%s' object is not iterable", type_name(v));
    }
}

}  // namespace jinja
}  // namespace kvfit
