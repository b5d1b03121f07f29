// UTF-8 validation, encoding helpers and the streaming joiner.
#include <algorithm>
#include <cstring>

#include "common.h"
#include "tokenizer/tokenizer_impl.h"

namespace kvfit {

namespace {

enum class Seq { VALID, INCOMPLETE, INVALID };

// Classifies the sequence at p (avail bytes available). VALID: len is its
// length. INCOMPLETE: the available bytes are a valid prefix of a longer
// sequence. INVALID: len is the maximal valid prefix to replace by one U+FFFD
// (at least 1), as the Unicode "maximal subpart" practice recommends.
Seq classify(const unsigned char *p, size_t avail, size_t &len) {
    const unsigned char c = p[0];
    if (c < 0x80) { len = 1; return Seq::VALID; }
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c == 0xE0) { need = 3; lo = 0xA0; }
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 3;
    else if (c == 0xED) { need = 3; hi = 0x9F; }  // no surrogates
    else if (c == 0xF0) { need = 4; lo = 0x90; }  // no overlongs
    else if (c >= 0xF1 && c <= 0xF3) need = 4;
    else if (c == 0xF4) { need = 4; hi = 0x8F; }  // nothing above U+10FFFF
    else { len = 1; return Seq::INVALID; }
    for (size_t k = 1; k < need; k++) {
        if (k >= avail) { len = k; return Seq::INCOMPLETE; }
        const unsigned char b = p[k];
        const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
        if (!ok) { len = k; return Seq::INVALID; }
    }
    len = need;
    return Seq::VALID;
}

const char kReplacement[] = "\xEF\xBF\xBD";

}  // namespace

size_t utf8_invalid_offset(std::string_view s) {
    const auto *p = reinterpret_cast<const unsigned char *>(s.data());
    size_t i = 0;
    while (i < s.size()) {
        // ASCII fast path: most text is mostly ASCII.
        if (p[i] < 0x80) { i++; continue; }
        size_t len;
        if (classify(p + i, s.size() - i, len) != Seq::VALID) return i;
        i += len;
    }
    return std::string_view::npos;
}

void utf8_check(std::string_view s) {
    const size_t bad = utf8_invalid_offset(s);
    if (bad != std::string_view::npos)
        fail(KVFIT_E_UTF8, "invalid UTF-8 at byte offset %zu (byte 0x%02X)", bad, unsigned(static_cast<unsigned char>(s[bad])));
}

bool utf8_valid(std::string_view s) { return utf8_invalid_offset(s) == std::string_view::npos; }

void utf8_append(std::string &out, uint32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

uint32_t utf8_decode(std::string_view s, size_t &i) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = utf8_seq_len(c);
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < n && i + k < s.size(); k++) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    i += n;
    return cp;
}

std::string Utf8Stream::push(std::string_view bytes) {
    pending_.append(bytes.data(), bytes.size());
    const auto *p = reinterpret_cast<const unsigned char *>(pending_.data());
    const size_t n = pending_.size();
    std::string out;
    out.reserve(n);
    size_t i = 0;
    while (i < n) {
        size_t len;
        const Seq st = classify(p + i, n - i, len);
        if (st == Seq::INCOMPLETE) break;  // wait for the rest of the character
        if (st == Seq::VALID) out.append(pending_, i, len);
        else out += kReplacement;
        i += len;
    }
    pending_.erase(0, i);
    return out;
}

std::string Utf8Stream::flush() {
    std::string out = push({});
    // Whatever is still pending is a truncated character.
    if (!pending_.empty()) out += kReplacement;
    pending_.clear();
    return out;
}

}  // namespace kvfit

namespace kvfit {

std::vector<MergeSymbol> split_utf8_symbols(std::string_view text) {
    std::vector<MergeSymbol> syms;
    syms.reserve(text.size());
    for (size_t off = 0; off < text.size();) {
        const size_t len = std::min(utf8_seq_len(static_cast<unsigned char>(text[off])), text.size() - off);
        const int idx = int(syms.size());
        syms.push_back({idx - 1, off + len == text.size() ? -1 : idx + 1, off, len});
        off += len;
    }
    return syms;
}

}  // namespace kvfit
