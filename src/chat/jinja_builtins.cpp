// Filters, tests, global functions and the methods of strings and dicts that
// chat templates call, with the behaviour of jinja2 and Python (and of
// Hugging Face's tojson, raise_exception and strftime_now).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <ctime>

#include "chat/jinja_impl.h"

namespace kvfit {
namespace jinja {

// ---- arguments --------------------------------------------------------------------

Value Args::get(size_t i, const char *name, const Value &def) {
    kw_used_.resize(kw.size(), false);
    for (size_t k = 0; k < kw.size(); ++k)
        if (kw[k].first == name) {
            if (i < pos.size()) runtime_error("%s() got multiple values for argument '%s'", fname, name);
            kw_used_[k] = true;
            return kw[k].second;
        }
    if (i < pos.size()) return pos[i];
    return def;
}

bool Args::has(size_t i, const char *name) const {
    if (i < pos.size()) return true;
    for (const auto &k : kw)
        if (k.first == name) return true;
    return false;
}

void Args::done(size_t n_pos) {
    if (pos.size() > n_pos) runtime_error("%s() takes at most %zu positional argument(s) (%zu given)", fname, n_pos, pos.size());
    kw_used_.resize(kw.size(), false);
    for (size_t k = 0; k < kw.size(); ++k)
        if (!kw_used_[k]) runtime_error("%s() got an unexpected keyword argument '%s'", fname, kw[k].first.c_str());
}

namespace {

bool int_like(const Value &v) { return v.kind() == Value::INT || v.kind() == Value::BOOL; }
int64_t int_of(const Value &v) { return v.kind() == Value::BOOL ? int64_t(v.b()) : v.i(); }
bool numeric(const Value &v) { return int_like(v) || v.kind() == Value::FLOAT; }

int64_t need_int(const Value &v, const char *what) {
    if (!int_like(v)) runtime_error("%s must be an integer, not '%s'", what, type_name(v));
    return int_of(v);
}

const std::string &need_str(const Value &v, const char *what) {
    if (v.kind() != Value::STRING) runtime_error("%s must be str, not %s", what, type_name(v));
    return str_of(v);
}

// str(), with undefined as "" (jinja2's soft_str).
std::string soft_str(State &st, const Value &v) { return to_str(st, v); }

// ---- strings ----

std::string title_case_first(char32_t c) {
    if (c == 0xDF) return "Ss";
    std::string out;
    utf8_append(out, to_upper_simple(c));
    return out;
}

std::string py_capitalize(std::string_view s) {
    const std::u32string u = utf8_decode(s);
    if (u.empty()) return std::string();
    std::string out = title_case_first(u[0]);
    out += py_lower(utf8_encode(u.substr(1)));
    return out;
}

// Python's str.title().
std::string py_title(std::string_view s) {
    std::string out;
    bool prev_cased = false;
    for (char32_t c : utf8_decode(s)) {
        if (prev_cased) utf8_append(out, c == 0x3A3 ? 0x3C3 : to_lower_simple(c));
        else out += title_case_first(c);
        prev_cased = is_cased(c);
    }
    return out;
}

// jinja2's title filter: the first letter of every word upper, the rest
// lower; words start after '-', whitespace, '(', '{', '[' or '<'.
std::string jinja_title(std::string_view s) {
    std::string out;
    std::u32string word;
    auto flush = [&]() {
        if (word.empty()) return;
        out += py_upper(utf8_encode(word.substr(0, 1)));
        out += py_lower(utf8_encode(word.substr(1)));
        word.clear();
    };
    for (char32_t c : utf8_decode(s)) {
        if (c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace(c)) {
            flush();
            utf8_append(out, c);
        } else {
            word += c;
        }
    }
    flush();
    return out;
}

std::string py_replace(State &st, const std::string &s, const std::string &old, const std::string &repl, int64_t count) {
    std::string out;
    if (count < 0) count = INT64_MAX;
    if (old.empty()) {
        // An empty pattern matches before every character and at the end.
        const std::u32string u = utf8_decode(s);
        int64_t n = 0;
        for (size_t i = 0; i <= u.size(); ++i) {
            if (n < count) {
                out += repl;
                ++n;
            }
            if (i < u.size()) utf8_append(out, u[i]);
            st.check_growing(out.size());
        }
        return out;
    }
    size_t pos = 0;
    int64_t n = 0;
    while (n < count) {
        const size_t hit = find_sub(s, old, pos);
        if (hit == std::string::npos) break;
        out.append(s, pos, hit - pos);
        out += repl;
        pos = hit + old.size();
        ++n;
        st.check_growing(out.size());
    }
    out.append(s, pos, std::string::npos);
    st.check_string(out.size());
    return out;
}

// Python's str.split / rsplit.
Value py_split(State &st, const std::string &s, const Value &sep, int64_t maxsplit, bool from_right) {
    std::vector<std::string> parts;
    if (sep.kind() == Value::NONE || sep.kind() == Value::UNDEFINED) {
        const std::u32string u = utf8_decode(s);
        std::vector<std::pair<size_t, size_t>> words;  // [begin, end) in code points
        size_t i = 0;
        while (i < u.size()) {
            while (i < u.size() && py_isspace(u[i])) ++i;
            if (i >= u.size()) break;
            size_t j = i;
            while (j < u.size() && !py_isspace(u[j])) ++j;
            words.emplace_back(i, j);
            i = j;
        }
        if (maxsplit < 0 || size_t(maxsplit) >= words.size()) {
            for (const auto &w : words) parts.push_back(utf8_encode(u.substr(w.first, w.second - w.first)));
        } else if (!from_right) {
            for (size_t k = 0; k < size_t(maxsplit); ++k)
                parts.push_back(utf8_encode(u.substr(words[k].first, words[k].second - words[k].first)));
            // The rest runs from its first word to the end, whitespace and all.
            parts.push_back(utf8_encode(u.substr(words[size_t(maxsplit)].first)));
        } else {
            const size_t first_split = words.size() - size_t(maxsplit);
            parts.push_back(utf8_encode(u.substr(0, words[first_split - 1].second)));
            for (size_t k = first_split; k < words.size(); ++k)
                parts.push_back(utf8_encode(u.substr(words[k].first, words[k].second - words[k].first)));
        }
    } else {
        const std::string &d = need_str(sep, "separator");
        if (d.empty()) runtime_error("empty separator");
        std::vector<size_t> hits;
        st.touch(s.size());
        for (size_t p = find_sub(s, d); p != std::string::npos; p = find_sub(s, d, p + d.size())) hits.push_back(p);
        if (maxsplit >= 0 && size_t(maxsplit) < hits.size()) {
            if (from_right) hits.erase(hits.begin(), hits.end() - maxsplit);
            else hits.resize(size_t(maxsplit));
        }
        // rsplit finds separators from the right; for overlapping patterns
        // ("aaa".rsplit("aa")) that differs from the left-to-right scan.
        if (from_right && d.size() > 1) {
            hits.clear();
            size_t end = s.size();
            while (maxsplit < 0 || hits.size() < size_t(maxsplit)) {
                if (end < d.size()) break;
                const size_t p = rfind_sub(std::string_view(s).substr(0, end), d);
                if (p == std::string::npos) break;
                hits.insert(hits.begin(), p);
                end = p;
            }
        }
        size_t b = 0;
        for (size_t h : hits) {
            parts.push_back(s.substr(b, h - b));
            b = h + d.size();
        }
        parts.push_back(s.substr(b));
    }
    std::vector<Value> items;
    for (auto &p : parts) items.push_back(Value::string(std::move(p)));
    return st.new_list(std::move(items));
}

// Python's str.splitlines(): \n, \r, \r\n, \v, \f, \x1c-\x1e, \x85, \u2028, \u2029.
std::vector<std::string> splitlines(std::string_view s, bool keepends) {
    std::vector<std::string> out;
    const std::u32string u = utf8_decode(s);
    size_t b = 0;
    for (size_t i = 0; i < u.size(); ++i) {
        const char32_t c = u[i];
        const bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || (c >= 0x1C && c <= 0x1E) ||
                         c == 0x85 || c == 0x2028 || c == 0x2029;
        if (!brk) continue;
        size_t e = i + 1;
        if (c == '\r' && i + 1 < u.size() && u[i + 1] == '\n') e = i + 2;
        out.push_back(utf8_encode(u.substr(b, (keepends ? e : i) - b)));
        b = e;
        i = e - 1;
    }
    if (b < u.size()) out.push_back(utf8_encode(u.substr(b)));
    return out;
}

// Index of a code point from a byte offset.
int64_t cp_index(const std::string &s, size_t byte) { return int64_t(utf8_length(std::string_view(s).substr(0, byte))); }

bool matches_affix(const std::string &s, const Value &affix, bool prefix, const char *method) {
    auto one = [&](const std::string &a) {
        if (a.size() > s.size()) return false;
        return prefix ? s.compare(0, a.size(), a) == 0 : s.compare(s.size() - a.size(), a.size(), a) == 0;
    };
    if (affix.kind() == Value::STRING) return one(str_of(affix));
    if (affix.kind() == Value::LIST && list_of(affix).tuple) {
        for (const Value &a : list_of(affix).items)
            if (one(need_str(a, "tuple for startswith/endswith"))) return true;
        return false;
    }
    runtime_error("%s first arg must be str or a tuple of str, not %s", method, type_name(affix));
}

// ---- numbers ----

// Python's int(str, base) for the bases chat templates use; false if invalid.
bool parse_int(const std::string &text, int base, int64_t &out) {
    std::string s = py_strip(text, nullptr, true, true);
    bool neg = false;
    size_t p = 0;
    if (p < s.size() && (s[p] == '+' || s[p] == '-')) neg = s[p++] == '-';
    if (s.size() > p + 1 && s[p] == '0') {
        const char k = char(std::tolower(static_cast<unsigned char>(s[p + 1])));
        const int pb = k == 'x' ? 16 : k == 'o' ? 8 : k == 'b' ? 2 : 0;
        if (pb && (base == pb || base == 0)) {
            base = pb;
            p += 2;
            if (p < s.size() && s[p] == '_') ++p;
        }
    }
    if (base == 0) base = 10;
    std::string digits;
    for (size_t i = p; i < s.size(); ++i) {
        if (s[i] == '_' && i > p && i + 1 < s.size() && s[i + 1] != '_') continue;
        digits += s[i];
    }
    if (digits.empty()) return false;
    uint64_t v = 0;
    auto r = std::from_chars(digits.data(), digits.data() + digits.size(), v, base);
    if (r.ec == std::errc::result_out_of_range) unsupported("integer overflow (integers here are 64-bit)");
    if (r.ec != std::errc() || r.ptr != digits.data() + digits.size()) return false;
    if (v > uint64_t(INT64_MAX) + (neg ? 1 : 0)) unsupported("integer overflow (integers here are 64-bit)");
    out = neg ? int64_t(0 - v) : int64_t(v);
    return true;
}

// Python's float(str); false if invalid.
bool parse_float(const std::string &text, double &out) {
    std::string s = py_strip(text, nullptr, true, true);
    std::string low = py_lower(s);
    size_t p = 0;
    bool neg = false;
    if (p < low.size() && (low[p] == '+' || low[p] == '-')) neg = low[p++] == '-';
    const std::string rest = low.substr(p);
    if (rest == "inf" || rest == "infinity") {
        out = neg ? -HUGE_VAL : HUGE_VAL;
        return true;
    }
    if (rest == "nan") {
        out = std::nan("");
        return true;
    }
    std::string clean;
    for (size_t i = 0; i < rest.size(); ++i) {
        const char c = rest[i];
        if (c == '_') {
            if (i == 0 || i + 1 >= rest.size() || !std::isdigit(static_cast<unsigned char>(rest[i - 1])) ||
                !std::isdigit(static_cast<unsigned char>(rest[i + 1])))
                return false;
            continue;
        }
        if (!std::isdigit(static_cast<unsigned char>(c)) && c != '.' && c != 'e' && c != '+' && c != '-') return false;
        clean += c;
    }
    if (clean.empty() || (clean[0] != '.' && !std::isdigit(static_cast<unsigned char>(clean[0])))) return false;
    double d = 0;
    auto r = std::from_chars(clean.data(), clean.data() + clean.size(), d);
    if (r.ptr != clean.data() + clean.size()) return false;
    if (r.ec == std::errc::result_out_of_range) {
        const size_t e = clean.find('e');
        d = e != std::string::npos && clean[e + 1] == '-' ? 0.0 : HUGE_VAL;
    } else if (r.ec != std::errc()) {
        return false;
    }
    out = neg ? -d : d;
    return true;
}

// ---- attribute paths (map(attribute=), selectattr, sort(attribute=)) ----

Value get_path(State &st, const Value &obj, const Value &path) {
    std::vector<std::string> parts;
    if (path.kind() == Value::INT) {
        Value out;
        return get_item(st, obj, path, out) ? out : make_undefined("no element");
    }
    const std::string &p = need_str(path, "attribute");
    size_t b = 0;
    while (true) {
        const size_t dot = p.find('.', b);
        parts.push_back(p.substr(b, dot == std::string::npos ? std::string::npos : dot - b));
        if (dot == std::string::npos) break;
        b = dot + 1;
    }
    Value cur = obj;
    for (const std::string &part : parts) {
        Value out;
        bool ok;
        int64_t idx;
        if (!part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
            parse_int(part, 10, idx)) {
            ok = get_item(st, cur, Value::integer(idx), out);
        } else {
            ok = get_item(st, cur, Value::string(part), out);
        }
        if (!ok) return make_undefined("'" + std::string(type_name(cur)) + " object' has no attribute '" + part + "'");
        cur = out;
    }
    return cur;
}

// ---- filters -----------------------------------------------------------------------

Value f_trim(State &st, const Value &v, Args &a) {
    const Value chars = a.get(0, "chars", Value::none());
    a.done(1);
    return st.new_string(py_strip(soft_str(st, v), &chars, true, true));
}

Value f_length(State &st, const Value &v, Args &a) {
    a.done(0);
    switch (v.kind()) {
        case Value::STRING: return Value::integer(int64_t(utf8_length(str_of(v))));
        case Value::LIST: return Value::integer(int64_t(list_of(v).items.size()));
        case Value::DICT: return Value::integer(int64_t(dict_of(v).items.size()));
        case Value::UNDEFINED: return Value::integer(0);
        default: runtime_error("object of type '%s' has no len()", type_name(v));
    }
}

Value f_upper(State &st, const Value &v, Args &a) {
    a.done(0);
    return st.new_string(py_upper(soft_str(st, v)));
}

Value f_lower(State &st, const Value &v, Args &a) {
    a.done(0);
    return st.new_string(py_lower(soft_str(st, v)));
}

Value f_capitalize(State &st, const Value &v, Args &a) {
    a.done(0);
    return st.new_string(py_capitalize(soft_str(st, v)));
}

Value f_title(State &st, const Value &v, Args &a) {
    a.done(0);
    return st.new_string(jinja_title(soft_str(st, v)));
}

Value f_default(State &st, const Value &v, Args &a) {
    const Value def = a.get(0, "default_value", Value::string(""));
    const Value boolean = a.get(1, "boolean", Value::boolean(false));
    a.done(2);
    if (v.kind() == Value::UNDEFINED || (truthy(boolean) && !truthy(v))) return def;
    return v;
}

Value f_join(State &st, const Value &v, Args &a) {
    const Value d = a.get(0, "d", Value::string(""));
    const Value attribute = a.get(1, "attribute", Value::none());
    a.done(2);
    const std::string sep = soft_str(st, d);
    std::string out;
    bool first = true;
    for (const Value &item : iterate(st, v)) {
        if (!first) out += sep;
        first = false;
        out += soft_str(st, attribute.kind() == Value::NONE ? item : get_path(st, item, attribute));
        st.check_growing(out.size());
    }
    return st.new_string(std::move(out));
}

Value f_first(State &st, const Value &v, Args &a) {
    a.done(0);
    if (v.kind() == Value::STRING) {
        const std::u32string u = utf8_decode(str_of(v).substr(0, 4));
        if (u.empty()) return make_undefined("No first item, sequence was empty.");
        std::string one;
        utf8_append(one, u[0]);
        return Value::string(one);
    }
    if (IteratorObject *it = iterator_of(v)) {
        const std::vector<Value> one = it->take(st, 1);
        return one.empty() ? make_undefined("No first item, sequence was empty.") : one.front();
    }
    const std::vector<Value> items = iterate(st, v);
    return items.empty() ? make_undefined("No first item, sequence was empty.") : items.front();
}

Value f_last(State &st, const Value &v, Args &a) {
    a.done(0);
    if (v.kind() == Value::OBJECT) runtime_error("'%s' object is not reversible", type_name(v));
    const std::vector<Value> items = iterate(st, v);
    return items.empty() ? make_undefined("No last item, sequence was empty.") : items.back();
}

// Hugging Face's tojson: json.dumps(x, ensure_ascii=False, indent=None,
// separators=None, sort_keys=False), without jinja2's HTML escaping.
Value f_tojson(State &st, const Value &v, Args &a) {
    const Value ensure_ascii = a.get(0, "ensure_ascii", Value::boolean(false));
    const Value indent = a.get(1, "indent", Value::none());
    const Value separators = a.get(2, "separators", Value::none());
    const Value sort_keys = a.get(3, "sort_keys", Value::boolean(false));
    a.done(4);
    JsonOptions opt;
    opt.ensure_ascii = truthy(ensure_ascii);
    opt.sort_keys = truthy(sort_keys);
    if (indent.kind() != Value::NONE) {
        opt.indent_set = true;
        if (indent.kind() == Value::STRING) {
            opt.indent = str_of(indent);
        } else if (int_like(indent)) {
            const int64_t n = int_of(indent);
            if (n > 64) unsupported("tojson indent of %lld", (long long)n);
            opt.indent = std::string(n > 0 ? size_t(n) : 0, ' ');
        } else {
            runtime_error("tojson indent must be an integer or a string");
        }
        opt.item_sep = ",";
    }
    if (separators.kind() != Value::NONE) {
        if (separators.kind() != Value::LIST || list_of(separators).items.size() != 2)
            runtime_error("tojson separators must be a pair of strings");
        opt.item_sep = need_str(list_of(separators).items[0], "item separator");
        opt.key_sep = need_str(list_of(separators).items[1], "key separator");
    }
    return st.new_string(to_json(st, v, opt));
}

Value f_string(State &st, const Value &v, Args &a) {
    a.done(0);
    return v.kind() == Value::STRING ? v : st.new_string(soft_str(st, v));
}

Value f_int(State &st, const Value &v, Args &a) {
    const Value def = a.get(0, "default", Value::integer(0));
    const Value base = a.get(1, "base", Value::integer(10));
    a.done(2);
    int64_t out;
    switch (v.kind()) {
        case Value::UNDEFINED: runtime_error("%s", undefined_hint(v).c_str());
        case Value::INT: return v;
        case Value::BOOL: return Value::integer(int_of(v));
        case Value::FLOAT: {
            const double d = v.f();
            if (std::isnan(d)) return def;
            if (std::isinf(d)) runtime_error("cannot convert float infinity to integer");
            if (d >= 9.2e18 || d <= -9.2e18) unsupported("integer overflow (integers here are 64-bit)");
            return Value::integer(int64_t(d));
        }
        case Value::STRING: {
            const int64_t b = need_int(base, "base");
            if (b != 0 && (b < 2 || b > 36)) runtime_error("int() base must be >= 2 and <= 36, or 0");
            if (parse_int(str_of(v), int(b), out)) return Value::integer(out);
            double d;
            if (parse_float(str_of(v), d)) {
                if (std::isnan(d)) return def;
                if (std::isinf(d)) runtime_error("cannot convert float infinity to integer");
                if (d >= 9.2e18 || d <= -9.2e18) unsupported("integer overflow (integers here are 64-bit)");
                return Value::integer(int64_t(d));
            }
            return def;
        }
        default: return def;
    }
}

Value f_float(State &st, const Value &v, Args &a) {
    const Value def = a.get(0, "default", Value::number(0.0));
    a.done(1);
    double d;
    switch (v.kind()) {
        case Value::UNDEFINED: runtime_error("%s", undefined_hint(v).c_str());
        case Value::INT:
        case Value::BOOL: return Value::number(double(int_of(v)));
        case Value::FLOAT: return v;
        case Value::STRING: return parse_float(str_of(v), d) ? Value::number(d) : def;
        default: return def;
    }
}

Value f_replace(State &st, const Value &v, Args &a) {
    const Value old = a.get(0, "old"), repl = a.get(1, "new"), count = a.get(2, "count", Value::none());
    a.done(3);
    if (!a.has(0, "old") || !a.has(1, "new")) runtime_error("replace() needs the old and new strings");
    const int64_t n = count.kind() == Value::NONE ? -1 : need_int(count, "count");
    return Value::string(py_replace(st, soft_str(st, v), soft_str(st, old), soft_str(st, repl), n));
}

Value dict_items(State &st, const Value &v) {
    std::vector<Value> pairs;
    for (const auto &kv : dict_of(v).items) pairs.push_back(Value::list({kv.first, kv.second}, true));
    return st.new_list(std::move(pairs));
}

Value f_items(State &st, const Value &v, Args &a) {
    a.done(0);
    return make_iterator("generator", {v}, [v](State &s) -> std::vector<Value> {
        if (v.kind() == Value::UNDEFINED) return {};
        if (v.kind() != Value::DICT) runtime_error("Can only get item pairs from a mapping.");
        return list_of(dict_items(s, v)).items;
    });
}

Value f_list(State &st, const Value &v, Args &a) {
    a.done(0);
    return st.new_list(iterate(st, v));
}

Value f_reverse(State &st, const Value &v, Args &a) {
    a.done(0);
    if (v.kind() == Value::STRING) {
        std::u32string u = utf8_decode(str_of(v));
        std::reverse(u.begin(), u.end());
        return Value::string(utf8_encode(u));
    }
    if (iterator_of(v)) {  // not reversible: jinja2 makes a list of it
        std::vector<Value> items = iterate(st, v);
        std::reverse(items.begin(), items.end());
        return st.new_list(std::move(items));
    }
    const char *kind = v.kind() == Value::LIST ? (list_of(v).range ? "range_iterator"
                                                  : list_of(v).tuple ? "reversed"
                                                                     : "list_reverseiterator")
                       : v.kind() == Value::DICT ? "dict_reversekeyiterator"
                                                 : "reversed";
    if (v.kind() != Value::LIST && v.kind() != Value::DICT && v.kind() != Value::UNDEFINED)
        runtime_error("argument must be iterable");
    return make_iterator(kind, {v}, [v](State &s) {
        std::vector<Value> items = iterate(s, v);
        std::reverse(items.begin(), items.end());
        return items;
    });
}

// The sort key of an item: the attribute if asked, lowercased strings unless
// case_sensitive.
Value sort_key(State &st, const Value &item, const Value &attribute, bool case_sensitive) {
    Value k = attribute.kind() == Value::NONE ? item : get_path(st, item, attribute);
    if (!case_sensitive && k.kind() == Value::STRING) {
        st.touch(str_of(k).size());
        k = Value::string(py_lower(str_of(k)));
    }
    return k;
}

Value f_sort(State &st, const Value &v, Args &a) {
    const bool reverse = truthy(a.get(0, "reverse", Value::boolean(false)));
    const bool case_sensitive = truthy(a.get(1, "case_sensitive", Value::boolean(false)));
    const Value attribute = a.get(2, "attribute", Value::none());
    a.done(3);
    std::vector<Value> items = iterate(st, v);
    std::vector<std::pair<Value, size_t>> keyed;
    for (size_t i = 0; i < items.size(); ++i) keyed.emplace_back(sort_key(st, items[i], attribute, case_sensitive), i);
    st.step(items.size() * 20);
    std::stable_sort(keyed.begin(), keyed.end(), [&](const auto &x, const auto &y) {
        const int c = reverse ? compare(y.first, x.first, "<") : compare(x.first, y.first, "<");
        return c == -1;
    });
    std::vector<Value> out;
    for (const auto &k : keyed) out.push_back(items[k.second]);
    return st.new_list(std::move(out));
}

Value f_dictsort(State &st, const Value &v, Args &a) {
    const bool case_sensitive = truthy(a.get(0, "case_sensitive", Value::boolean(false)));
    const Value by = a.get(1, "by", Value::string("key"));
    const bool reverse = truthy(a.get(2, "reverse", Value::boolean(false)));
    a.done(3);
    if (v.kind() != Value::DICT) runtime_error("dictsort() needs a mapping, not %s", type_name(v));
    const std::string &b = need_str(by, "dictsort by");
    if (b != "key" && b != "value") runtime_error("You can only sort by either \"key\" or \"value\"");
    const size_t pos = b == "key" ? 0 : 1;
    std::vector<std::pair<Value, Value>> keyed;  // (sort key, pair)
    const Value pairs = dict_items(st, v);  // held: the loop reads into it
    for (const Value &pair : list_of(pairs).items) {
        Value k = list_of(pair).items[pos];
        keyed.emplace_back(sort_key(st, k, Value::none(), case_sensitive), pair);
    }
    st.step(keyed.size() * 20);
    std::stable_sort(keyed.begin(), keyed.end(), [&](const auto &x, const auto &y) {
        return (reverse ? compare(y.first, x.first, "<") : compare(x.first, y.first, "<")) == -1;
    });
    std::vector<Value> out;
    for (auto &k : keyed) out.push_back(k.second);
    return st.new_list(std::move(out));
}

Value f_unique(State &st, const Value &v, Args &a) {
    const bool case_sensitive = truthy(a.get(0, "case_sensitive", Value::boolean(false)));
    const Value attribute = a.get(1, "attribute", Value::none());
    a.done(2);
    return make_iterator("generator", {v, attribute}, [=](State &s) {
        std::vector<Value> out, seen;
        for (const Value &item : iterate(s, v)) {
            const Value k = sort_key(s, item, attribute, case_sensitive);
            bool dup = false;
            for (const Value &x : seen) {
                s.step();
                if (equals(x, k)) {
                    dup = true;
                    break;
                }
            }
            if (dup) continue;
            seen.push_back(k);
            out.push_back(item);
        }
        return out;
    });
}

// jinja2's round: Python's round() (to the nearest, ties to even, on the
// exact binary value) or math.floor / math.ceil at a precision.
Value f_round(State &st, const Value &v, Args &a) {
    const Value precision_v = a.get(0, "precision", Value::integer(0));
    const Value method_v = a.get(1, "method", Value::string("common"));
    a.done(2);
    const std::string &method = need_str(method_v, "round method");
    if (method != "common" && method != "floor" && method != "ceil")
        runtime_error("method must be common, ceil or floor");
    const int64_t precision = need_int(precision_v, "precision");
    if (!numeric(v)) runtime_error("type %s doesn't define __round__ method", type_name(v));
    if (precision < 0 || precision > 30) unsupported("round() to %lld digits", (long long)precision);
    if (method == "common" && int_like(v)) return Value::integer(int_of(v));
    const double d = v.kind() == Value::FLOAT ? v.f() : double(int_of(v));
    if (!std::isfinite(d)) {
        if (method == "common") return Value::number(d);
        runtime_error("cannot convert float infinity or NaN to integer");
    }
    if (method == "common") {
        char buf[512];
        auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::fixed, int(precision));
        if (r.ec != std::errc()) unsupported("round() of %g", d);
        double out = 0;
        std::from_chars(buf, r.ptr, out);
        return Value::number(out);
    }
    const double scale = std::pow(10.0, double(precision));
    const double x = method == "floor" ? std::floor(d * scale) : std::ceil(d * scale);
    return Value::number(x / scale);
}

Value f_minmax(State &st, const Value &v, Args &a, bool want_max) {
    const bool case_sensitive = truthy(a.get(0, "case_sensitive", Value::boolean(false)));
    const Value attribute = a.get(1, "attribute", Value::none());
    a.done(2);
    const std::vector<Value> items = iterate(st, v);
    if (items.empty()) return make_undefined("No aggregated item, sequence was empty.");
    size_t best = 0;
    Value best_key = sort_key(st, items[0], attribute, case_sensitive);
    for (size_t i = 1; i < items.size(); ++i) {
        const Value k = sort_key(st, items[i], attribute, case_sensitive);
        const int c = compare(k, best_key, "<");
        if ((want_max && c == 1) || (!want_max && c == -1)) {
            best = i;
            best_key = k;
        }
    }
    return items[best];
}
Value f_min(State &st, const Value &v, Args &a) { return f_minmax(st, v, a, false); }
Value f_max(State &st, const Value &v, Args &a) { return f_minmax(st, v, a, true); }

Value f_sum(State &st, const Value &v, Args &a) {
    const Value attribute = a.get(0, "attribute", Value::none());
    Value acc = a.get(1, "start", Value::integer(0));
    a.done(2);
    for (const Value &item : iterate(st, v))
        acc = binary_op(st, Op::ADD, acc, attribute.kind() == Value::NONE ? item : get_path(st, item, attribute));
    return acc;
}

Value f_abs(State &st, const Value &v, Args &a) {
    a.done(0);
    if (int_like(v)) {
        if (int_of(v) == INT64_MIN) unsupported("integer overflow (integers here are 64-bit)");
        return Value::integer(int_of(v) < 0 ? -int_of(v) : int_of(v));
    }
    if (v.kind() == Value::FLOAT) return Value::number(std::fabs(v.f()));
    runtime_error("bad operand type for abs(): '%s'", type_name(v));
}

Value f_safe(State &st, const Value &v, Args &a) {
    a.done(0);
    return v;
}

Value f_escape(State &st, const Value &v, Args &a) {
    a.done(0);
    std::string out;
    for (char c : soft_str(st, v)) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&#34;"; break;
            case '\'': out += "&#39;"; break;
            default: out += c;
        }
    }
    return st.new_string(std::move(out));
}

Value f_indent(State &st, const Value &v, Args &a) {
    const Value width = a.get(0, "width", Value::integer(4));
    const bool first = truthy(a.get(1, "first", Value::boolean(false)));
    const bool blank = truthy(a.get(2, "blank", Value::boolean(false)));
    a.done(3);
    std::string indention;
    if (width.kind() == Value::STRING) {
        indention = str_of(width);
    } else {
        const int64_t n = need_int(width, "width");
        if (n > 1024) unsupported("indent of %lld", (long long)n);
        indention = std::string(n > 0 ? size_t(n) : 0, ' ');
    }
    // jinja2 appends a newline with +=, which only a string takes.
    if (v.kind() == Value::UNDEFINED) runtime_error("%s", undefined_hint(v).c_str());
    if (v.kind() != Value::STRING) runtime_error("unsupported operand type(s) for +=: '%s' and 'str'", type_name(v));
    std::vector<std::string> lines = splitlines(str_of(v) + "\n", false);
    std::string out;
    if (blank) {
        for (size_t i = 0; i < lines.size(); ++i) {
            if (i) out += "\n" + indention;
            out += lines[i];
        }
    } else {
        out = lines.empty() ? std::string() : lines[0];
        for (size_t i = 1; i < lines.size(); ++i) {
            out += "\n";
            if (!lines[i].empty()) out += indention;
            out += lines[i];
            st.check_growing(out.size());
        }
    }
    if (first) out = indention + out;
    return st.new_string(std::move(out));
}

Value f_attr(State &st, const Value &v, Args &a) {
    const Value name = a.get(0, "name");
    a.done(1);
    if (v.kind() == Value::UNDEFINED) return make_undefined(undefined_hint(v));
    Value out;
    const std::string &n = need_str(name, "attribute name");
    // attr() reads attributes only: a dict's methods, not its keys.
    if (v.kind() == Value::DICT && dict_of(v).find(n)) {
        static const char *const kMethods[] = {"get", "items", "keys", "values"};
        bool method = false;
        for (const char *m : kMethods) method = method || n == m;
        if (!method) return make_undefined("'dict object' has no attribute '" + n + "'");
    }
    if (get_attribute(st, v, n, out)) return out;
    return make_undefined("'" + std::string(type_name(v)) + " object' has no attribute '" + n + "'");
}

Builtin find_test_or_fail(const Value &name) {
    const std::string &n = need_str(name, "test name");
    Builtin t = find_test(n);
    if (!t) {
        if (is_jinja_test(n)) unsupported("the test '%s' is not supported", n.c_str());
        runtime_error("no test named '%s'", n.c_str());
    }
    return t;
}

// select / reject / selectattr / rejectattr
Value select_impl(State &st, const Value &v, Args &a, bool by_attr, bool keep) {
    size_t i = 0;
    Value attribute;
    if (by_attr) {
        if (a.pos.empty()) runtime_error("%s() needs an attribute", a.fname);
        attribute = a.pos[i++];
    }
    Builtin test = nullptr;
    Args targs;
    targs.fname = "";
    if (i < a.pos.size()) {
        test = find_test_or_fail(a.pos[i++]);
        targs.pos.assign(a.pos.begin() + long(i), a.pos.end());
        targs.fname = str_of(a.pos[i - 1]).c_str();
    }
    targs.kw = a.kw;
    const std::string test_name = targs.fname;
    std::vector<Value> captured = a.pos;
    captured.push_back(v);
    for (const auto &kw : a.kw) captured.push_back(kw.second);
    return make_iterator("generator", captured, [=](State &s) {
        std::vector<Value> out;
        for (const Value &item : iterate(s, v)) {
            s.step();
            const Value x = by_attr ? get_path(s, item, attribute) : item;
            Args copy = targs;
            copy.fname = test_name.c_str();
            const bool ok = test ? truthy(test(s, x, copy)) : truthy(x);
            if (ok == keep) out.push_back(item);
        }
        return out;
    });
}
Value f_select(State &st, const Value &v, Args &a) { return select_impl(st, v, a, false, true); }
Value f_reject(State &st, const Value &v, Args &a) { return select_impl(st, v, a, false, false); }
Value f_selectattr(State &st, const Value &v, Args &a) { return select_impl(st, v, a, true, true); }
Value f_rejectattr(State &st, const Value &v, Args &a) { return select_impl(st, v, a, true, false); }

Value f_map(State &st, const Value &v, Args &a) {
    if (a.pos.empty()) {
        const Value attribute = a.get(99, "attribute");
        const Value def = a.get(99, "default");
        const bool has_def = a.has(99, "default");
        a.done(0);
        if (attribute.kind() == Value::UNDEFINED) runtime_error("map() needs a filter name or attribute=");
        return make_iterator("generator", {v, attribute, def}, [=](State &s) {
            std::vector<Value> items;
            for (const Value &item : iterate(s, v)) {
                Value x = get_path(s, item, attribute);
                if (x.kind() == Value::UNDEFINED && has_def) x = def;
                items.push_back(x);
            }
            return items;
        });
    }
    const std::string name = need_str(a.pos[0], "filter name");
    Builtin f = find_filter(name);
    if (!f) {
        if (is_jinja_filter(name)) unsupported("the filter '%s' is not supported", name.c_str());
        runtime_error("no filter named '%s'", name.c_str());
    }
    Args fargs;
    fargs.pos.assign(a.pos.begin() + 1, a.pos.end());
    fargs.kw = a.kw;
    std::vector<Value> captured = a.pos;
    captured.push_back(v);
    for (const auto &kw : a.kw) captured.push_back(kw.second);
    return make_iterator("generator", captured, [=](State &s) {
        std::vector<Value> items;
        for (const Value &item : iterate(s, v)) {
            Args copy = fargs;
            copy.fname = name.c_str();
            items.push_back(f(s, item, copy));
        }
        return items;
    });
}

struct NamedBuiltin {
    const char *name;
    Builtin fn;
};

const NamedBuiltin kFilters[] = {
    {"abs", f_abs},         {"attr", f_attr},
    {"capitalize", f_capitalize}, {"count", f_length},
    {"d", f_default},       {"default", f_default},
    {"dictsort", f_dictsort}, {"round", f_round},
    {"unique", f_unique},
    {"e", f_escape},        {"escape", f_escape},
    {"first", f_first},     {"float", f_float},
    {"forceescape", f_escape}, {"indent", f_indent},
    {"int", f_int},         {"items", f_items},
    {"join", f_join},       {"last", f_last},
    {"length", f_length},   {"list", f_list},
    {"lower", f_lower},     {"map", f_map},
    {"max", f_max},         {"min", f_min},
    {"reject", f_reject},   {"rejectattr", f_rejectattr},
    {"replace", f_replace}, {"reverse", f_reverse},
    {"safe", f_safe},       {"select", f_select},
    {"selectattr", f_selectattr}, {"sort", f_sort},
    {"string", f_string},   {"sum", f_sum},
    {"title", f_title},     {"tojson", f_tojson},
    {"trim", f_trim},       {"upper", f_upper},
};

// jinja2's other filters: recognised, so that a template using one fails
// only when it gets there, with a clear message.
const char *const kOtherFilters[] = {"batch",     "center", "filesizeformat", "format",    "groupby",
                                     "pprint",    "random", "slice",          "striptags", "truncate",
                                     "urlencode", "urlize", "wordcount",      "wordwrap",  "xmlattr"};

// ---- tests -------------------------------------------------------------------------

Value yes(bool b) { return Value::boolean(b); }

Value t_defined(State &, const Value &v, Args &a) { a.done(0); return yes(v.kind() != Value::UNDEFINED); }
Value t_undefined(State &, const Value &v, Args &a) { a.done(0); return yes(v.kind() == Value::UNDEFINED); }
Value t_none(State &, const Value &v, Args &a) { a.done(0); return yes(v.kind() == Value::NONE); }
Value t_boolean(State &, const Value &v, Args &a) { a.done(0); return yes(v.kind() == Value::BOOL); }
Value t_false(State &, const Value &v, Args &a) { a.done(0); return yes(v.kind() == Value::BOOL && !v.b()); }
Value t_true(State &, const Value &v, Args &a) { a.done(0); return yes(v.kind() == Value::BOOL && v.b()); }
Value t_integer(State &, const Value &v, Args &a) { a.done(0); return yes(v.kind() == Value::INT); }
Value t_float(State &, const Value &v, Args &a) { a.done(0); return yes(v.kind() == Value::FLOAT); }
Value t_number(State &, const Value &v, Args &a) { a.done(0); return yes(numeric(v)); }
Value t_string(State &, const Value &v, Args &a) { a.done(0); return yes(v.kind() == Value::STRING); }
Value t_mapping(State &, const Value &v, Args &a) { a.done(0); return yes(v.kind() == Value::DICT); }
Value t_callable(State &, const Value &v, Args &a) { a.done(0); return yes(v.kind() == Value::FUNCTION); }
Value t_iterable(State &, const Value &v, Args &a) {
    a.done(0);
    const auto k = v.kind();
    return yes(k == Value::STRING || k == Value::LIST || k == Value::DICT || k == Value::UNDEFINED ||
               (k == Value::OBJECT && !is_namespace(v)));
}
Value t_sequence(State &, const Value &v, Args &a) {
    a.done(0);
    const auto k = v.kind();
    return yes(k == Value::STRING || k == Value::LIST || k == Value::DICT || k == Value::UNDEFINED);
}
// Python's str.islower() / isupper(): some cased letter, all in that case.
bool all_cased_as(const std::string &s, bool lower) {
    bool any = false;
    for (char32_t c : utf8_decode(s)) {
        if (!is_cased(c)) continue;
        any = true;
        if ((lower ? to_lower_simple(c) : to_upper_simple(c)) != c) return false;
    }
    return any;
}
Value t_lower(State &st, const Value &v, Args &a) {
    a.done(0);
    return yes(all_cased_as(soft_str(st, v), true));
}
Value t_upper(State &st, const Value &v, Args &a) {
    a.done(0);
    return yes(all_cased_as(soft_str(st, v), false));
}
Value t_odd(State &st, const Value &v, Args &a) {
    a.done(0);
    return yes(equals(binary_op(st, Op::MOD, v, Value::integer(2)), Value::integer(1)));
}
Value t_even(State &st, const Value &v, Args &a) {
    a.done(0);
    return yes(equals(binary_op(st, Op::MOD, v, Value::integer(2)), Value::integer(0)));
}
Value t_divisibleby(State &st, const Value &v, Args &a) {
    const Value num = a.get(0, "num");
    a.done(1);
    return yes(equals(binary_op(st, Op::MOD, v, num), Value::integer(0)));
}
Value t_eq(State &, const Value &v, Args &a) { const Value o = a.get(0, "other"); a.done(1); return yes(equals(v, o)); }
Value t_ne(State &, const Value &v, Args &a) { const Value o = a.get(0, "other"); a.done(1); return yes(!equals(v, o)); }
Value t_order(const Value &v, Args &a, const char *op) {
    const Value o = a.get(0, "other");
    a.done(1);
    const int c = compare(v, o, op);
    if (c == 2) return yes(false);
    if (op[0] == '<') return yes(op[1] ? c <= 0 : c < 0);
    return yes(op[1] ? c >= 0 : c > 0);
}
Value t_lt(State &, const Value &v, Args &a) { return t_order(v, a, "<"); }
Value t_le(State &, const Value &v, Args &a) { return t_order(v, a, "<="); }
Value t_gt(State &, const Value &v, Args &a) { return t_order(v, a, ">"); }
Value t_ge(State &, const Value &v, Args &a) { return t_order(v, a, ">="); }
Value t_in(State &st, const Value &v, Args &a) {
    const Value seq = a.get(0, "seq");
    a.done(1);
    switch (seq.kind()) {
        case Value::STRING:
            if (v.kind() != Value::STRING) runtime_error("'in <string>' requires string as left operand");
            st.touch(str_of(seq).size());
            return yes(find_sub(str_of(seq), str_of(v)) != std::string::npos);
        case Value::DICT: return yes(dict_of(seq).find(v) != nullptr);
        default:
            for (const Value &x : iterate(st, seq))
                if (equals(v, x)) return yes(true);
            return yes(false);
    }
}
Value t_sameas(State &, const Value &v, Args &a) {
    const Value o = a.get(0, "other");
    a.done(1);
    if (v.kind() != o.kind()) return yes(false);
    if (v.kind() == Value::NONE || v.kind() == Value::UNDEFINED) return yes(v.kind() == Value::NONE);
    if (v.kind() == Value::BOOL) return yes(v.b() == o.b());
    if (v.heap() || o.heap()) return yes(v.heap() == o.heap());
    return yes(equals(v, o) && v.kind() == Value::INT && v.i() >= -5 && v.i() <= 256);  // CPython's small ints
}
Value t_escaped(State &, const Value &, Args &a) { a.done(0); return yes(false); }

const NamedBuiltin kTests[] = {
    {"!=", t_ne},         {"<", t_lt},           {"<=", t_le},
    {"==", t_eq},         {">", t_gt},           {">=", t_ge},
    {"boolean", t_boolean}, {"callable", t_callable}, {"defined", t_defined},
    {"divisibleby", t_divisibleby}, {"eq", t_eq}, {"equalto", t_eq},
    {"escaped", t_escaped}, {"even", t_even},    {"false", t_false},
    {"float", t_float},   {"ge", t_ge},          {"greaterthan", t_gt},
    {"gt", t_gt},         {"in", t_in},          {"integer", t_integer},
    {"iterable", t_iterable}, {"le", t_le},      {"lessthan", t_lt},
    {"lower", t_lower},   {"lt", t_lt},          {"mapping", t_mapping},
    {"ne", t_ne},         {"none", t_none},      {"number", t_number},
    {"odd", t_odd},       {"sameas", t_sameas},  {"sequence", t_sequence},
    {"string", t_string}, {"true", t_true},      {"undefined", t_undefined},
    {"upper", t_upper},
};

const char *const kOtherTests[] = {"filter", "test"};

// ---- methods -----------------------------------------------------------------------

const char *const kStringMethods[] = {"capitalize", "count",   "endswith", "find",    "isalnum",    "isalpha",
                                      "isdigit",    "islower", "isspace",  "isupper", "join",       "lower",
                                      "lstrip",     "replace", "rfind",    "rsplit",  "rstrip",     "split",
                                      "splitlines", "startswith", "strip", "title",   "upper"};
const char *const kOtherStringMethods[] = {"casefold",  "center",     "encode",     "expandtabs", "format",
                                           "format_map", "index",     "isascii",    "isdecimal",  "isidentifier",
                                           "isnumeric", "isprintable", "istitle",   "ljust",      "maketrans",
                                           "partition", "removeprefix", "removesuffix", "rindex",  "rjust",
                                           "rpartition", "swapcase",  "translate",  "zfill"};
const char *const kDictMethods[] = {"get", "items", "keys", "values"};
const char *const kOtherDictMethods[] = {"clear", "copy", "fromkeys", "pop", "popitem", "setdefault", "update"};
const char *const kListMethods[] = {"append", "clear", "copy",   "count", "extend",
                                    "index",  "insert", "pop",   "remove", "reverse", "sort"};

template <size_t N>
bool in_list(const char *const (&list)[N], const std::string &name) {
    for (const char *n : list)
        if (name == n) return true;
    return false;
}

Value string_method(State &st, const std::string &name, const std::string &s, Args &a) {
    st.touch(s.size());
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
        const Value chars = a.get(0, "chars", Value::none());
        a.done(1);
        return st.new_string(py_strip(s, &chars, name != "rstrip", name != "lstrip"));
    }
    if (name == "split" || name == "rsplit") {
        const Value sep = a.get(0, "sep", Value::none());
        const int64_t maxsplit = need_int(a.get(1, "maxsplit", Value::integer(-1)), "maxsplit");
        a.done(2);
        return py_split(st, s, sep, maxsplit, name == "rsplit");
    }
    if (name == "startswith" || name == "endswith") {
        const Value affix = a.get(0, "prefix");
        if (a.has(1, "start")) unsupported("%s() with start/end positions is not supported", name.c_str());
        a.done(1);
        return Value::boolean(matches_affix(s, affix, name == "startswith", name.c_str()));
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
        a.done(0);
        if (name == "upper") return st.new_string(py_upper(s));
        if (name == "lower") return st.new_string(py_lower(s));
        if (name == "title") return st.new_string(py_title(s));
        return st.new_string(py_capitalize(s));
    }
    if (name == "replace") {
        const Value old = a.get(0, "old"), repl = a.get(1, "new");
        const int64_t count = need_int(a.get(2, "count", Value::integer(-1)), "count");
        a.done(3);
        return Value::string(py_replace(st, s, need_str(old, "replace() argument 1"), need_str(repl, "replace() argument 2"), count));
    }
    if (name == "find" || name == "rfind" || name == "count") {
        const std::string &sub = need_str(a.get(0, "sub"), (name + "() argument").c_str());
        if (a.has(1, "start")) unsupported("%s() with start/end positions is not supported", name.c_str());
        a.done(1);
        if (name == "count") {
            if (sub.empty()) return Value::integer(int64_t(utf8_length(s)) + 1);
            int64_t n = 0;
            for (size_t p = find_sub(s, sub); p != std::string::npos; p = find_sub(s, sub, p + sub.size())) ++n;
            return Value::integer(n);
        }
        const size_t p = name == "find" ? find_sub(s, sub) : rfind_sub(s, sub);
        return Value::integer(p == std::string::npos ? -1 : cp_index(s, p));
    }
    if (name == "join") {
        const Value items = a.get(0, "iterable");
        a.done(1);
        std::string out;
        size_t i = 0;
        for (const Value &item : iterate(st, items)) {
            if (item.kind() != Value::STRING)
                runtime_error("sequence item %zu: expected str instance, %s found", i, type_name(item));
            if (i++) out += s;
            out += str_of(item);
            st.check_growing(out.size());
        }
        return st.new_string(std::move(out));
    }
    if (name == "splitlines") {
        const bool keepends = truthy(a.get(0, "keepends", Value::boolean(false)));
        a.done(1);
        std::vector<Value> items;
        for (auto &l : splitlines(s, keepends)) items.push_back(Value::string(std::move(l)));
        return st.new_list(std::move(items));
    }
    static const char *const kPredicates[] = {"isspace", "isdigit", "isalpha", "isalnum", "islower", "isupper"};
    if (!in_list(kPredicates, name)) unsupported("the string method '%s' is not supported", name.c_str());
    a.done(0);
    const std::u32string u = utf8_decode(s);
    if (name == "isspace")
        return yes(!u.empty() && std::all_of(u.begin(), u.end(), [](char32_t c) { return py_isspace(c); }));
    if (name == "isdigit")
        return yes(!u.empty() && std::all_of(u.begin(), u.end(), [](char32_t c) { return c >= '0' && c <= '9'; }));
    if (name == "isalpha")
        return yes(!u.empty() && std::all_of(u.begin(), u.end(), [](char32_t c) { return is_cased(c); }));
    if (name == "isalnum")
        return yes(!u.empty() &&
                   std::all_of(u.begin(), u.end(), [](char32_t c) { return is_cased(c) || (c >= '0' && c <= '9'); }));
    if (name == "islower" || name == "isupper") return yes(all_cased_as(s, name == "islower"));
    unsupported("the string method '%s' is not supported", name.c_str());
}

}  // namespace

Builtin find_filter(const std::string &name) {
    for (const auto &f : kFilters)
        if (name == f.name) return f.fn;
    return nullptr;
}

Builtin find_test(const std::string &name) {
    for (const auto &t : kTests)
        if (name == t.name) return t.fn;
    return nullptr;
}

bool is_jinja_filter(const std::string &name) { return in_list(kOtherFilters, name); }
bool is_jinja_test(const std::string &name) { return in_list(kOtherTests, name); }

bool get_attribute(State &st, const Value &obj, const std::string &name, Value &out) {
    if (!name.empty() && name[0] == '_') return false;  // the sandbox hides private attributes
    switch (obj.kind()) {
        case Value::DICT:
            if (in_list(kDictMethods, name) || in_list(kOtherDictMethods, name)) {
                out = make_function(FunctionObject::METHOD, name, obj);
                return true;
            }
            if (const Value *v = dict_of(obj).find(name)) {
                out = *v;
                return true;
            }
            return false;
        case Value::STRING:
            if (in_list(kStringMethods, name) || in_list(kOtherStringMethods, name)) {
                out = make_function(FunctionObject::METHOD, name, obj);
                return true;
            }
            return false;
        case Value::LIST:
            if (list_of(obj).range) {
                const ListObject &r = list_of(obj);
                if (name == "start" || name == "stop" || name == "step") {
                    out = Value::integer(name == "start" ? r.start : name == "stop" ? r.stop : r.step);
                    return true;
                }
                if (name != "count" && name != "index") return false;
            }
            if (list_of(obj).view) return false;
            if (in_list(kListMethods, name)) {
                out = make_function(FunctionObject::METHOD, name, obj);
                return true;
            }
            return false;
        case Value::OBJECT:
            if (dynamic_cast<const LoopObject *>(obj.heap()) && (name == "cycle" || name == "changed")) {
                out = make_function(FunctionObject::METHOD, name, obj);
                return true;
            }
            return object_of(obj).get_attr(name, out);
        default: return false;
    }
}

bool get_item(State &st, const Value &obj, const Value &key, Value &out) {
    if (obj.kind() == Value::LIST && list_of(obj).view) return false;  // views are not subscriptable
    switch (obj.kind()) {
        case Value::LIST:
        case Value::STRING: {
            if (!int_like(key)) {
                if (key.kind() == Value::STRING) return get_attribute(st, obj, str_of(key), out);
                return false;
            }
            int64_t i = int_of(key);
            if (obj.kind() == Value::LIST) {
                const auto &items = list_of(obj).items;
                const int64_t n = int64_t(items.size());
                if (i < 0) i += n;
                if (i < 0 || i >= n) return false;
                out = items[size_t(i)];
                return true;
            }
            const std::string &s = str_of(obj);
            st.touch(s.size());
            if (is_ascii(s)) {
                const int64_t n = int64_t(s.size());
                if (i < 0) i += n;
                if (i < 0 || i >= n) return false;
                out = Value::string(std::string(1, s[size_t(i)]));
                return true;
            }
            const std::u32string u = utf8_decode(s);
            const int64_t n = int64_t(u.size());
            if (i < 0) i += n;
            if (i < 0 || i >= n) return false;
            std::string one;
            utf8_append(one, u[size_t(i)]);
            out = Value::string(one);
            return true;
        }
        case Value::DICT:
            if (const Value *v = dict_of(obj).find(key)) {
                out = *v;
                return true;
            }
            return key.kind() == Value::STRING && get_attribute(st, obj, str_of(key), out);
        case Value::OBJECT: return key.kind() == Value::STRING && get_attribute(st, obj, str_of(key), out);
        default: return false;
    }
}

Value slice(State &st, const Value &obj, const Value &start_v, const Value &stop_v, const Value &step_v) {
    // jinja2 compiles slices to plain Python subscripts, so anything but a
    // sequence fails.
    if (obj.kind() == Value::DICT) runtime_error("unhashable type: 'slice'");
    if ((obj.kind() != Value::LIST && obj.kind() != Value::STRING) || (obj.kind() == Value::LIST && list_of(obj).view))
        runtime_error("'%s' object is not subscriptable", type_name(obj));
    auto index = [](const Value &v, const char *what) -> int64_t {
        if (!int_like(v)) runtime_error("slice indices must be integers or None or have an __index__ method");
        return int_of(v);
    };
    const int64_t step = step_v.kind() == Value::NONE ? 1 : index(step_v, "step");
    if (step == 0) runtime_error("slice step cannot be zero");
    std::u32string u;
    const bool is_str = obj.kind() == Value::STRING;
    if (is_str) st.touch(str_of(obj).size());
    const bool ascii = is_str && is_ascii(str_of(obj));
    if (is_str && !ascii) u = utf8_decode(str_of(obj));
    const int64_t len = is_str ? (ascii ? int64_t(str_of(obj).size()) : int64_t(u.size()))
                               : int64_t(list_of(obj).items.size());
    // CPython's PySlice_AdjustIndices.
    int64_t start, stop;
    if (step > 0) {
        start = start_v.kind() == Value::NONE ? 0 : index(start_v, "start");
        stop = stop_v.kind() == Value::NONE ? len : index(stop_v, "stop");
        if (start < 0) start = std::max<int64_t>(start + len, 0);
        if (start > len) start = len;
        if (stop < 0) stop = std::max<int64_t>(stop + len, 0);
        if (stop > len) stop = len;
    } else {
        start = start_v.kind() == Value::NONE ? len - 1 : index(start_v, "start");
        stop = stop_v.kind() == Value::NONE ? -1 : index(stop_v, "stop");
        if (start_v.kind() != Value::NONE) {
            if (start < 0) start = std::max<int64_t>(start + len, -1);
            if (start >= len) start = len - 1;
        }
        if (stop_v.kind() != Value::NONE) {
            if (stop < 0) stop = std::max<int64_t>(stop + len, -1);
            if (stop >= len) stop = len - 1;
        }
    }
    std::vector<int64_t> picks;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        picks.push_back(i);
        if (step > 0 ? i > INT64_MAX - step : i < INT64_MIN - step) break;
    }
    st.step(picks.size());
    if (is_str) {
        std::string out;
        for (int64_t i : picks) {
            if (ascii) out += str_of(obj)[size_t(i)];
            else utf8_append(out, u[size_t(i)]);
        }
        return Value::string(std::move(out));
    }
    const ListObject &l = list_of(obj);
    if (l.range) {
        int64_t a, b, c;
        if (__builtin_mul_overflow(start, l.step, &a) || __builtin_add_overflow(a, l.start, &a) ||
            __builtin_mul_overflow(stop, l.step, &b) || __builtin_add_overflow(b, l.start, &b) ||
            __builtin_mul_overflow(step, l.step, &c))
            unsupported("integer overflow (integers here are 64-bit)");
        return st.new_range(a, b, c);
    }
    std::vector<Value> items;
    for (int64_t i : picks) items.push_back(l.items[size_t(i)]);
    return st.new_list(std::move(items), l.tuple);
}

Value call_method(State &st, const FunctionObject &fn, Args &a) {
    const Value &self = fn.self;
    const std::string &name = fn.name;
    switch (self.kind()) {
        case Value::STRING: return string_method(st, name, str_of(self), a);
        case Value::DICT:
            if (name == "get") {
                const Value key = a.get(0, "key");
                const Value def = a.get(1, "default", Value::none());
                a.done(2);
                const Value *v = dict_of(self).find(key);
                return v ? *v : def;
            }
            if (name == "items" || name == "keys" || name == "values" || name == "copy") {
                a.done(0);
                if (name == "copy") return self;  // values never change, so a copy is the same dict
                std::vector<Value> out;
                if (name == "items") out = list_of(dict_items(st, self)).items;
                else
                    for (const auto &kv : dict_of(self).items) out.push_back(name == "keys" ? kv.first : kv.second);
                Value view = st.new_list(std::move(out));
                static_cast<ListObject *>(view.heap_ptr().get())->view =
                    name == "items" ? "dict_items" : name == "keys" ? "dict_keys" : "dict_values";
                return view;
            }
            if (name == "fromkeys") unsupported("dict.fromkeys() is not supported");
            runtime_error("access to attribute '%s' of 'dict' object is unsafe.", name.c_str());
        case Value::LIST:
            if (name == "count" || name == "index") {
                const Value x = a.get(0, "value");
                if (a.has(1, "start")) unsupported("list.index() with start/end positions is not supported");
                a.done(1);
                const auto &items = list_of(self).items;
                int64_t n = 0;
                for (size_t i = 0; i < items.size(); ++i) {
                    st.step();
                    if (!equals(items[i], x)) continue;
                    if (name == "index") return Value::integer(int64_t(i));
                    ++n;
                }
                if (name == "index") runtime_error("%s is not in list", to_repr(st, x).c_str());
                return Value::integer(n);
            }
            if (name == "copy") {
                a.done(0);
                return st.new_list(list_of(self).items);
            }
            runtime_error("access to attribute '%s' of '%s' object is unsafe.", name.c_str(), type_name(self));
        case Value::OBJECT:
            if (name == "cycle") {
                const auto &loop = *static_cast<const LoopObject *>(self.heap());
                if (!a.kw.empty()) runtime_error("cycle() takes no keyword arguments");
                if (a.pos.empty()) runtime_error("no items for cycling given");
                return a.pos[size_t(loop.index0 % int64_t(a.pos.size()))];
            }
            unsupported("loop.%s() is not supported", name.c_str());
        default: unsupported("the method '%s' is not supported", name.c_str());
    }
}

// ---- globals -----------------------------------------------------------------------

namespace {

const char *const kGlobals[] = {"range", "dict", "namespace", "raise_exception", "strftime_now",
                                "cycler", "joiner", "lipsum"};

// The sandbox refuses ranges longer than this (jinja2's MAX_RANGE).
constexpr int64_t kMaxRange = 100000;

Value g_range(State &st, Args &a) {
    if (!a.kw.empty()) runtime_error("range() takes no keyword arguments");
    if (a.pos.empty() || a.pos.size() > 3) runtime_error("range expected 1 to 3 arguments, got %zu", a.pos.size());
    int64_t start = 0, stop, step = 1;
    if (a.pos.size() == 1) {
        stop = need_int(a.pos[0], "range() argument");
    } else {
        start = need_int(a.pos[0], "range() argument");
        stop = need_int(a.pos[1], "range() argument");
        if (a.pos.size() == 3) step = need_int(a.pos[2], "range() argument");
    }
    if (step == 0) runtime_error("range() arg 3 must not be zero");
    __int128 n = 0;
    if (step > 0 && stop > start) n = ((__int128)stop - start + step - 1) / step;
    if (step < 0 && stop < start) n = ((__int128)start - stop - step - 1) / -step;
    if (n > kMaxRange)
        runtime_error("Range too big. The sandbox blocks ranges larger than MAX_RANGE (%lld).", (long long)kMaxRange);
    return st.new_range(start, stop, step);
}

Value g_dict(State &st, Args &a) {
    if (!a.pos.empty()) unsupported("dict() with positional arguments is not supported");
    std::vector<std::pair<Value, Value>> items;
    for (const auto &kw : a.kw) items.emplace_back(Value::string(kw.first), kw.second);
    return st.new_dict(std::move(items));
}

Value g_namespace(State &st, Args &a) {
    auto ns = std::make_shared<NamespaceObject>();
    auto add = [&](const std::string &k, const Value &v) {
        if (value_has_ns(v)) unsupported("storing a namespace, or something holding one, in a namespace");
        ns->set_attr(k, v);
    };
    if (a.pos.size() > 1) runtime_error("namespace() takes at most 1 positional argument");
    if (a.pos.size() == 1) {
        if (a.pos[0].kind() != Value::DICT) unsupported("namespace() from a %s", type_name(a.pos[0]));
        for (const auto &kv : dict_of(a.pos[0]).items) {
            if (kv.first.kind() != Value::STRING) runtime_error("keywords must be strings");
            add(str_of(kv.first), kv.second);
        }
    }
    for (const auto &kw : a.kw) add(kw.first, kw.second);
    if (ns->depth > st.limits.max_depth) unsupported("values nested more than %d deep", st.limits.max_depth);
    ns->has_ns = true;
    return Value::from_heap(Value::OBJECT, std::move(ns));
}

// Hugging Face's strftime_now(format): datetime.now().strftime(format).
Value g_strftime_now(State &st, Args &a) {
    const Value fmt_v = a.get(0, "format");
    a.done(1);
    const std::string &fmt = need_str(fmt_v, "strftime_now() format");
    if (fmt.size() > 256) unsupported("a strftime_now format longer than 256 bytes");
    std::time_t t;
    std::tm tm{};
    long usec = 0;
    if (st.now >= 0) {
        t = std::time_t(st.now);
        gmtime_r(&t, &tm);
    } else {
        timespec ts{};
        clock_gettime(CLOCK_REALTIME, &ts);
        t = ts.tv_sec;
        usec = ts.tv_nsec / 1000;
        localtime_r(&t, &tm);
    }
    // Only the conversions C and Python share (plus %f, which Python adds);
    // each is formatted on its own so no directive can misbehave.
    std::string out;
    for (size_t i = 0; i < fmt.size(); ++i) {
        if (fmt[i] != '%') {
            out += fmt[i];
            continue;
        }
        if (i + 1 >= fmt.size()) {
            out += '%';
            break;
        }
        const char c = fmt[++i];
        if (c == 'f') {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%06ld", usec);
            out += buf;
            continue;
        }
        if (!std::strchr("aAbBcdDeFgGhHIjmMnpRStTuUVwWxXyYzZ%", c) || c == 0)
            unsupported("strftime_now format directive '%%%c'", c);
        char spec[3] = {'%', c, 0};
        char buf[128];
        const size_t n = std::strftime(buf, sizeof buf, spec, &tm);
        out.append(buf, n);
    }
    return st.new_string(std::move(out));
}

}  // namespace

bool is_global_function(const std::string &name) { return in_list(kGlobals, name); }

Value call_global(State &st, const FunctionObject &fn, Args &a) {
    const std::string &name = fn.name;
    if (name == "range") return g_range(st, a);
    if (name == "dict") return g_dict(st, a);
    if (name == "namespace") return g_namespace(st, a);
    if (name == "strftime_now") return g_strftime_now(st, a);
    if (name == "raise_exception") {
        const Value msg = a.get(0, "message");
        a.done(1);
        throw Error(KVFIT_E_TEMPLATE, "the template raised an exception: " + to_str(st, msg));
    }
    unsupported("the function '%s' is not supported", name.c_str());
}

}  // namespace jinja
}  // namespace kvfit
