// Text helpers of the Jinja interpreter: UTF-8, Python's notion of
// whitespace and letter case, and Python's repr() of floats and strings.
#include <charconv>
#include <cmath>
#include <cstring>

#include "chat/jinja_impl.h"

namespace kvfit {
namespace jinja {

std::u32string utf8_decode(std::string_view s) {
    std::u32string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            out += char32_t(c);
            i += 1;
            continue;
        }
        const int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : -1;
        char32_t cp = n == 3 ? c & 0x07 : n == 2 ? c & 0x0F : c & 0x1F;
        bool ok = n > 0 && c < 0xF5 && i + size_t(n) < s.size();
        for (int k = 1; ok && k <= n; ++k) {
            const unsigned char cc = static_cast<unsigned char>(s[i + size_t(k)]);
            if ((cc & 0xC0) != 0x80) ok = false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if (ok) {
            static const char32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
            if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) ok = false;
        }
        if (!ok) {
            out += char32_t(0xFFFD);
            i += 1;
            continue;
        }
        out += cp;
        i += size_t(n) + 1;
    }
    return out;
}

void utf8_append(std::string &out, char32_t c) {
    if (c < 0x80) {
        out += char(c);
    } else if (c < 0x800) {
        out += char(0xC0 | (c >> 6));
        out += char(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        out += char(0xE0 | (c >> 12));
        out += char(0x80 | ((c >> 6) & 0x3F));
        out += char(0x80 | (c & 0x3F));
    } else {
        out += char(0xF0 | (c >> 18));
        out += char(0x80 | ((c >> 12) & 0x3F));
        out += char(0x80 | ((c >> 6) & 0x3F));
        out += char(0x80 | (c & 0x3F));
    }
}

std::string utf8_encode(const std::u32string &s) {
    std::string out;
    out.reserve(s.size());
    for (char32_t c : s) utf8_append(out, c);
    return out;
}

bool utf8_is_valid(std::string_view s) {
    // Decoding replaces every invalid byte with U+FFFD; a valid string
    // re-encodes to itself.
    if (is_ascii(s)) return true;
    return utf8_encode(utf8_decode(s)) == s;
}

bool is_ascii(std::string_view s) {
    for (char c : s)
        if (static_cast<unsigned char>(c) >= 0x80) return false;
    return true;
}

size_t utf8_length(std::string_view s) {
    size_t n = 0;
    for (char c : s)
        if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
    return n;
}

bool py_isspace(char32_t c) {
    if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

// One-to-one case pairs: ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic,
// Armenian and fullwidth Latin. Other scripts keep their letters unchanged
// (the few full mappings Python applies are handled in py_upper/py_lower).
namespace {

// A pair range where upper and lower alternate (upper at even or odd offsets).
bool alternating(char32_t c, char32_t lo, char32_t hi, bool upper_even, bool want_upper, char32_t &out) {
    if (c < lo || c > hi) return false;
    const bool is_upper = ((c - lo) % 2 == 0) == upper_even;
    if (want_upper) out = is_upper ? c : c - 1;
    else out = is_upper ? c + 1 : c;
    return true;
}

char32_t map_case(char32_t c, bool upper) {
    char32_t out = c;
    if (c < 0x80) {
        if (upper && c >= 'a' && c <= 'z') return c - 32;
        if (!upper && c >= 'A' && c <= 'Z') return c + 32;
        return c;
    }
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return upper ? c : c + 32;
    if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return upper ? c - 32 : c;
    if (c == 0xFF) return upper ? 0x178 : c;
    if (c == 0x178) return upper ? c : 0xFF;
    if (c == 0xB5) return upper ? 0x39C : c;
    if (c == 0x131) return upper ? 'I' : c;
    if (c == 0x17F) return upper ? 'S' : c;
    if (alternating(c, 0x100, 0x12F, true, upper, out) || alternating(c, 0x132, 0x137, true, upper, out) ||
        alternating(c, 0x139, 0x148, false, upper, out) || alternating(c, 0x14A, 0x177, true, upper, out) ||
        alternating(c, 0x179, 0x17E, false, upper, out))
        return out;
    // Greek
    if ((c >= 0x391 && c <= 0x3A1) || (c >= 0x3A3 && c <= 0x3AB)) return upper ? c : c + 32;
    if ((c >= 0x3B1 && c <= 0x3C1) || (c >= 0x3C3 && c <= 0x3CB)) return upper ? c - 32 : c;
    if (c == 0x3C2) return upper ? 0x3A3 : c;
    if (c == 0x386) return upper ? c : 0x3AC;
    if (c == 0x3AC) return upper ? 0x386 : c;
    if (c >= 0x388 && c <= 0x38A) return upper ? c : c + 37;
    if (c >= 0x3AD && c <= 0x3AF) return upper ? c - 37 : c;
    if (c == 0x38C) return upper ? c : 0x3CC;
    if (c == 0x3CC) return upper ? 0x38C : c;
    if (c >= 0x38E && c <= 0x38F) return upper ? c : c + 63;
    if (c >= 0x3CD && c <= 0x3CE) return upper ? c - 63 : c;
    // Cyrillic
    if (c >= 0x400 && c <= 0x40F) return upper ? c : c + 80;
    if (c >= 0x450 && c <= 0x45F) return upper ? c - 80 : c;
    if (c >= 0x410 && c <= 0x42F) return upper ? c : c + 32;
    if (c >= 0x430 && c <= 0x44F) return upper ? c - 32 : c;
    if (c == 0x4C0) return upper ? c : 0x4CF;
    if (c == 0x4CF) return upper ? 0x4C0 : c;
    if (alternating(c, 0x460, 0x481, true, upper, out) || alternating(c, 0x48A, 0x4BF, true, upper, out) ||
        alternating(c, 0x4C1, 0x4CE, false, upper, out) || alternating(c, 0x4D0, 0x52F, true, upper, out))
        return out;
    // Armenian
    if (c >= 0x531 && c <= 0x556) return upper ? c : c + 48;
    if (c >= 0x561 && c <= 0x586) return upper ? c - 48 : c;
    // Fullwidth Latin
    if (c >= 0xFF21 && c <= 0xFF3A) return upper ? c : c + 32;
    if (c >= 0xFF41 && c <= 0xFF5A) return upper ? c - 32 : c;
    return c;
}

}  // namespace

char32_t to_upper_simple(char32_t c) { return map_case(c, true); }
char32_t to_lower_simple(char32_t c) { return map_case(c, false); }

bool is_cased(char32_t c) {
    return map_case(c, true) != c || map_case(c, false) != c || c == 0xDF || c == 0x138 || c == 0x149 || c == 0x130;
}

std::string py_upper(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    if (is_ascii(s)) {
        for (char c : s) out += (c >= 'a' && c <= 'z') ? char(c - 32) : c;
        return out;
    }
    for (char32_t c : utf8_decode(s)) {
        if (c == 0xDF) {
            out += "SS";
        } else if (c == 0x149) {
            utf8_append(out, 0x2BC);
            out += 'N';
        } else {
            utf8_append(out, to_upper_simple(c));
        }
    }
    return out;
}

std::string py_lower(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    if (is_ascii(s)) {
        for (char c : s) out += (c >= 'A' && c <= 'Z') ? char(c + 32) : c;
        return out;
    }
    const std::u32string u = utf8_decode(s);
    for (size_t i = 0; i < u.size(); ++i) {
        const char32_t c = u[i];
        if (c == 0x130) {  // İ lowercases to i + combining dot above
            out += 'i';
            utf8_append(out, 0x307);
        } else if (c == 0x3A3) {
            // Final sigma: after a cased letter and not before one.
            const bool after = i > 0 && is_cased(u[i - 1]);
            const bool before = i + 1 < u.size() && is_cased(u[i + 1]);
            utf8_append(out, after && !before ? 0x3C2 : 0x3C3);
        } else {
            utf8_append(out, to_lower_simple(c));
        }
    }
    return out;
}

std::string py_strip(std::string_view s, const Value *chars, bool left, bool right) {
    std::u32string set;
    const bool custom = chars && chars->kind() == Value::STRING;
    if (chars && chars->kind() != Value::STRING && chars->kind() != Value::NONE && chars->kind() != Value::UNDEFINED)
        runtime_error("strip arg must be None or str");
    if (custom) set = utf8_decode(str_of(*chars));
    auto stripped = [&](char32_t c) { return custom ? set.find(c) != std::u32string::npos : py_isspace(c); };
    if (is_ascii(s) && (!custom || is_ascii(str_of(*chars)))) {
        size_t b = 0, e = s.size();
        if (left)
            while (b < e && stripped(char32_t(static_cast<unsigned char>(s[b])))) ++b;
        if (right)
            while (e > b && stripped(char32_t(static_cast<unsigned char>(s[e - 1])))) --e;
        return std::string(s.substr(b, e - b));
    }
    const std::u32string u = utf8_decode(s);
    size_t b = 0, e = u.size();
    if (left)
        while (b < e && stripped(u[b])) ++b;
    if (right)
        while (e > b && stripped(u[e - 1])) --e;
    return utf8_encode(u.substr(b, e - b));
}

size_t find_sub(std::string_view hay, std::string_view needle, size_t from) {
    if (from > hay.size()) return std::string_view::npos;
    if (needle.size() <= 16) return hay.find(needle, from);  // at most 16 compares a byte
    // Knuth-Morris-Pratt.
    std::vector<size_t> fail(needle.size(), 0);
    for (size_t i = 1, k = 0; i < needle.size(); ++i) {
        while (k > 0 && needle[i] != needle[k]) k = fail[k - 1];
        if (needle[i] == needle[k]) ++k;
        fail[i] = k;
    }
    for (size_t i = from, k = 0; i < hay.size(); ++i) {
        while (k > 0 && hay[i] != needle[k]) k = fail[k - 1];
        if (hay[i] == needle[k]) ++k;
        if (k == needle.size()) return i + 1 - needle.size();
    }
    return std::string_view::npos;
}

size_t rfind_sub(std::string_view hay, std::string_view needle) {
    if (needle.size() <= 16) return hay.rfind(needle);
    const std::string rh(hay.rbegin(), hay.rend()), rn(needle.rbegin(), needle.rend());
    const size_t p = find_sub(rh, rn);
    return p == std::string_view::npos ? p : hay.size() - p - needle.size();
}

std::string float_repr(double d) {
    if (std::isnan(d)) return "nan";
    if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
    if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
    // Shortest digits that read back as d, then Python's layout: fixed
    // notation for decimal exponents -4 .. 15, scientific otherwise.
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
    std::string sci(buf, r.ptr);
    std::string out;
    size_t p = 0;
    if (sci[p] == '-') {
        out += '-';
        ++p;
    }
    const size_t epos = sci.find('e');
    std::string digits;
    for (size_t i = p; i < epos; ++i)
        if (sci[i] >= '0' && sci[i] <= '9') digits += sci[i];
    int exp = std::atoi(sci.c_str() + epos + 1);
    while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
    if (exp >= -4 && exp < 16) {
        if (exp >= 0) {
            std::string ip = digits.substr(0, std::min(digits.size(), size_t(exp) + 1));
            while (ip.size() < size_t(exp) + 1) ip += '0';
            std::string fp = digits.size() > size_t(exp) + 1 ? digits.substr(size_t(exp) + 1) : "0";
            out += ip + "." + fp;
        } else {
            out += "0." + std::string(size_t(-exp - 1), '0') + digits;
        }
    } else {
        out += digits[0];
        if (digits.size() > 1) out += "." + digits.substr(1);
        out += exp < 0 ? "e-" : "e+";
        const int a = exp < 0 ? -exp : exp;
        if (a < 10) out += '0';
        out += std::to_string(a);
    }
    return out;
}

namespace {

// Python's str.isprintable() for non-ASCII code points, approximately: the
// separators, format and private-use characters a chat template might meet.
bool py_isprintable(char32_t c) {
    if (c < 0x20 || c == 0x7F) return false;
    if (c < 0x7F) return true;
    if (c <= 0xA0 || c == 0xAD) return false;
    if (c == 0x1680 || (c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) ||
        (c >= 0x205F && c <= 0x206F) || c == 0x3000 || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB))
        return false;
    if ((c >= 0xE000 && c <= 0xF8FF) || c >= 0xF0000 || c == 0xFFFE || c == 0xFFFF) return false;
    return true;
}

void hex_escape(std::string &out, char32_t c) {
    char buf[16];
    if (c <= 0xFF) std::snprintf(buf, sizeof buf, "\\x%02x", unsigned(c));
    else if (c <= 0xFFFF) std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(c));
    else std::snprintf(buf, sizeof buf, "\\U%08x", unsigned(c));
    out += buf;
}

}  // namespace

std::string string_repr(std::string_view s) {
    const bool has_single = s.find('\'') != std::string_view::npos;
    const bool has_double = s.find('"') != std::string_view::npos;
    const char quote = has_single && !has_double ? '"' : '\'';
    std::string out(1, quote);
    for (char32_t c : utf8_decode(s)) {
        if (c == char32_t(quote) || c == '\\') {
            out += '\\';
            out += char(c);
        } else if (c == '\t') {
            out += "\\t";
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (py_isprintable(c)) {
            utf8_append(out, c);
        } else {
            hex_escape(out, c);
        }
    }
    out += quote;
    return out;
}

}  // namespace jinja
}  // namespace kvfit
