// Lexer and parser of the Jinja interpreter. They follow jinja2's own
// (lexer.py, parser.py) closely, with trim_blocks and lstrip_blocks on, so
// that whitespace comes out exactly as Hugging Face's renders it.
#include <charconv>
#include <cmath>
#include <cstring>
#include <initializer_list>

#include "chat/jinja_impl.h"

namespace kvfit {
namespace jinja {

namespace {

enum class Tok : uint8_t { DATA, VAR_BEGIN, VAR_END, BLOCK_BEGIN, BLOCK_END, NAME, STRING, INT, FLOAT, OP, END };

struct Token {
    Tok type;
    int line;
    std::string text;  // DATA, NAME, STRING (decoded), OP
    int64_t ival = 0;
    double fval = 0;
};

const char *describe(const Token &t) {
    switch (t.type) {
        case Tok::DATA: return "template data";
        case Tok::VAR_BEGIN: return "'{{'";
        case Tok::VAR_END: return "end of print statement";
        case Tok::BLOCK_BEGIN: return "'{%'";
        case Tok::BLOCK_END: return "end of statement block";
        case Tok::STRING: return "string";
        case Tok::INT: return "integer";
        case Tok::FLOAT: return "float";
        case Tok::END: return "end of template";
        default: return nullptr;  // NAME, OP: their text
    }
}

std::string token_desc(const Token &t) {
    const char *d = describe(t);
    return d ? std::string(d) : "'" + t.text + "'";
}

[[noreturn]] void syntax_error(int line, const std::string &msg) {
    unsupported("line %d: %s", line, msg.c_str());
}

// ---- lexer --------------------------------------------------------------------

class Lexer {
public:
    Lexer(std::string_view source) {
        // As jinja2 does: every \r\n and \r becomes \n, and one trailing
        // newline is dropped (keep_trailing_newline is off).
        src_.reserve(source.size());
        for (size_t i = 0; i < source.size(); ++i) {
            if (source[i] == '\r') {
                src_ += '\n';
                if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
            } else {
                src_ += source[i];
            }
        }
        if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    }

    std::vector<Token> run() {
        while (pos_ < src_.size()) root();
        push(Tok::END);
        return std::move(toks_);
    }

private:
    std::string src_;
    size_t pos_ = 0;
    int line_ = 1;
    bool line_starting_ = true;
    std::vector<Token> toks_;

    void push(Tok type, std::string text = std::string()) {
        Token t;
        t.type = type;
        t.line = line_;
        t.text = std::move(text);
        toks_.push_back(std::move(t));
    }

    bool at(size_t p, const char *s) const { return src_.compare(p, std::strlen(s), s) == 0; }

    void advance_to(size_t p) {
        for (size_t i = pos_; i < p && i < src_.size(); ++i)
            if (src_[i] == '\n') ++line_;
        pos_ = p;
    }

    // Byte length of the whitespace character at p (Python's \s), or 0.
    size_t space_at(size_t p) const {
        const unsigned char c = static_cast<unsigned char>(src_[p]);
        if (c < 0x80) return py_isspace(c) ? 1 : 0;
        const size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (p + n > src_.size()) return 0;
        const std::u32string u = utf8_decode(std::string_view(src_).substr(p, n));
        return u.size() == 1 && py_isspace(u[0]) ? n : 0;
    }

    size_t skip_spaces(size_t p) const {
        while (p < src_.size()) {
            const size_t n = space_at(p);
            if (!n) break;
            p += n;
        }
        return p;
    }

    static bool all_spaces(std::string_view s) {
        if (s.empty()) return false;
        for (char32_t c : utf8_decode(s))
            if (!py_isspace(c)) return false;
        return true;
    }

    static void rstrip(std::string &s) {
        const std::u32string u = utf8_decode(s);
        size_t e = u.size();
        while (e > 0 && py_isspace(u[e - 1])) --e;
        s = utf8_encode(u.substr(0, e));
    }

    // What jinja2 does to the text before a tag: '-' strips all whitespace;
    // otherwise, for blocks and comments (not {{ }}), lstrip_blocks removes
    // the spaces between the line start and the tag.
    void strip_before(std::string &text, char sign, bool variable) const {
        if (sign == '-') {
            rstrip(text);
        } else if (sign != '+' && !variable) {
            const size_t nl = text.rfind('\n');
            const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
            if ((l_pos > 0 || line_starting_) && all_spaces(std::string_view(text).substr(l_pos))) text.resize(l_pos);
        }
    }

    // The end of a block at p ("+%}", "-%}" then whitespace, or "%}" then
    // one newline with trim_blocks); returns the position after it or 0.
    size_t block_end_at(size_t p, const char *close) const {
        const size_t n = std::strlen(close);
        if (src_[p] == '+' && at(p + 1, close)) return p + 1 + n;
        if (src_[p] == '-' && at(p + 1, close)) return skip_spaces(p + 1 + n);
        if (at(p, close)) return p + n < src_.size() && src_[p + n] == '\n' ? p + n + 1 : p + n;
        return 0;
    }

    void finish_tag(size_t end) {
        line_starting_ = end > 0 && src_[end - 1] == '\n';
        advance_to(end);
    }

    // Data up to the next tag, then the tag.
    void root() {
        size_t i = pos_;
        while (true) {
            i = src_.find('{', i);
            if (i == std::string::npos || i + 1 >= src_.size()) {
                i = std::string::npos;
                break;
            }
            const char k = src_[i + 1];
            if (k == '{' || k == '%' || k == '#') break;
            ++i;
        }
        if (i == std::string::npos) {
            push(Tok::DATA, src_.substr(pos_));
            advance_to(src_.size());
            return;
        }
        std::string text = src_.substr(pos_, i - pos_);
        const char kind = src_[i + 1];
        size_t p = i + 2;
        char sign = 0;
        if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
        strip_before(text, sign, kind == '{');
        if (!text.empty()) push(Tok::DATA, std::move(text));
        advance_to(i);
        const int tag_line = line_;

        if (kind == '#') {
            for (size_t j = p; j < src_.size(); ++j) {
                const size_t end = src_[j] == '+' || src_[j] == '-' || src_[j] == '#' ? block_end_at(j, "#}") : 0;
                if (end) {
                    finish_tag(end);
                    return;
                }
            }
            syntax_error(tag_line, "missing end of comment tag");
        }
        if (kind == '%' && raw_block(p, tag_line)) return;

        push(kind == '{' ? Tok::VAR_BEGIN : Tok::BLOCK_BEGIN);
        advance_to(p);
        inside_tag(kind == '{');
    }

    // {% raw %}...{% endraw %}: the text inside as is.
    bool raw_block(size_t p, int tag_line) {
        size_t q = skip_spaces(p);
        if (!at(q, "raw")) return false;
        q = skip_spaces(q + 3);
        size_t open_end = 0;
        if (at(q, "-%}")) open_end = skip_spaces(q + 3);
        else if (at(q, "%}")) open_end = q + 2;
        else return false;
        const bool raw_line_starting = src_[open_end - 1] == '\n';
        for (size_t j = open_end; j + 1 < src_.size(); ++j) {
            if (!at(j, "{%")) continue;
            size_t r = j + 2;
            char sign = 0;
            if (r < src_.size() && (src_[r] == '-' || src_[r] == '+')) sign = src_[r++];
            r = skip_spaces(r);
            if (!at(r, "endraw")) continue;
            r = skip_spaces(r + 6);
            if (r >= src_.size()) break;
            const size_t end = block_end_at(r, "%}");
            if (!end) continue;
            std::string text = src_.substr(open_end, j - open_end);
            const bool saved = line_starting_;
            line_starting_ = raw_line_starting;
            strip_before(text, sign, false);
            line_starting_ = saved;
            if (!text.empty()) push(Tok::DATA, std::move(text));
            finish_tag(end);
            return true;
        }
        syntax_error(tag_line, "missing end of raw directive");
    }

    void inside_tag(bool variable) {
        std::vector<char> balance;
        while (true) {
            if (pos_ >= src_.size())
                syntax_error(line_, variable ? "unexpected end of template, expected '}}'"
                                             : "unexpected end of template, expected '%}'");
            if (balance.empty()) {
                size_t end = 0;
                if (variable) {
                    if (src_[pos_] == '-' && at(pos_ + 1, "}}")) end = skip_spaces(pos_ + 3);
                    else if (at(pos_, "}}")) end = pos_ + 2;
                } else {
                    end = block_end_at(pos_, "%}");
                }
                if (end) {
                    push(variable ? Tok::VAR_END : Tok::BLOCK_END);
                    finish_tag(end);
                    return;
                }
            }
            const size_t sp = space_at(pos_);
            if (sp) {
                advance_to(skip_spaces(pos_));
                continue;
            }
            const char c = src_[pos_];
            if (c >= '0' && c <= '9') {
                number();
            } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
                size_t e = pos_;
                while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
                push(Tok::NAME, src_.substr(pos_, e - pos_));
                advance_to(e);
            } else if (c == '\'' || c == '"') {
                string_literal();
            } else {
                op(balance);
            }
        }
    }

    void op(std::vector<char> &balance) {
        static const char *const kOps2[] = {"//", "**", "==", "!=", ">=", "<="};
        for (const char *o : kOps2)
            if (at(pos_, o)) {
                push(Tok::OP, o);
                advance_to(pos_ + 2);
                return;
            }
        const char c = src_[pos_];
        if (!std::strchr("+-/*%~[](){}><=.:|,;", c) || c == 0) {
            std::string ch;
            const std::u32string u = utf8_decode(std::string_view(src_).substr(pos_, 4));
            utf8_append(ch, u.empty() ? char32_t('?') : u[0]);
            syntax_error(line_, "unexpected char '" + ch + "'");
        }
        if (c == '(' || c == '[' || c == '{') {
            balance.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
        } else if (c == ')' || c == ']' || c == '}') {
            if (balance.empty()) syntax_error(line_, std::string("unexpected '") + c + "'");
            if (balance.back() != c)
                syntax_error(line_, std::string("unexpected '") + c + "', expected '" + balance.back() + "'");
            balance.pop_back();
        }
        push(Tok::OP, std::string(1, c));
        advance_to(pos_ + 1);
    }

    // Digits with single underscores between them, from p; returns the end.
    size_t digits(size_t p, int base) const {
        auto is_digit = [&](char c) {
            if (base == 2) return c == '0' || c == '1';
            if (base == 8) return c >= '0' && c <= '7';
            if (base == 16) return std::isxdigit(static_cast<unsigned char>(c)) != 0;
            return c >= '0' && c <= '9';
        };
        size_t e = p;
        while (e < src_.size()) {
            if (is_digit(src_[e])) {
                ++e;
            } else if (src_[e] == '_' && e > p && e + 1 < src_.size() && is_digit(src_[e + 1])) {
                ++e;
            } else {
                break;
            }
        }
        return e;
    }

    static std::string without_underscores(std::string_view s) {
        std::string out;
        for (char c : s)
            if (c != '_') out += c;
        return out;
    }

    void number() {
        const size_t p = pos_;
        const size_t int_end = digits(p, 10);
        // A float: digits, then a fraction and/or an exponent (not after a '.').
        const bool after_dot = p > 0 && src_[p - 1] == '.';
        size_t e = int_end;
        bool is_float = false;
        if (!after_dot) {
            if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
                e = digits(e + 1, 10);
                is_float = true;
            }
            if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
                size_t x = e + 1;
                if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
                if (x < src_.size() && std::isdigit(static_cast<unsigned char>(src_[x]))) {
                    e = digits(x, 10);
                    is_float = true;
                }
            }
        }
        if (is_float) {
            const std::string s = without_underscores(std::string_view(src_).substr(p, e - p));
            double d = 0;
            auto r = std::from_chars(s.data(), s.data() + s.size(), d);
            if (r.ec == std::errc::result_out_of_range) {
                const size_t ep = s.find_first_of("eE");
                d = ep != std::string::npos && s[ep + 1] == '-' ? 0.0 : HUGE_VAL;
            }
            Token t;
            t.type = Tok::FLOAT;
            t.line = line_;
            t.fval = d;
            toks_.push_back(t);
            advance_to(e);
            return;
        }
        int base = 10;
        size_t start = p, end = int_end;
        if (src_[p] == '0' && p + 1 < src_.size()) {
            const char k = char(std::tolower(static_cast<unsigned char>(src_[p + 1])));
            base = k == 'b' ? 2 : k == 'o' ? 8 : k == 'x' ? 16 : 10;
            if (base != 10) {
                start = p + 2;
                if (start < src_.size() && src_[start] == '_') ++start;
                end = digits(start, base);
                if (end == start) {  // "0x" without digits: just the 0
                    base = 10;
                    start = p;
                    end = p + 1;
                }
            } else {
                // "0", "00", "0_0": only zeros may follow a leading zero.
                end = p + 1;
                while (end < src_.size() && (src_[end] == '0' || (src_[end] == '_' && end + 1 < src_.size() &&
                                                                   src_[end + 1] == '0')))
                    ++end;
            }
        }
        const std::string s = without_underscores(std::string_view(src_).substr(start, end - start));
        int64_t v = 0;
        auto r = std::from_chars(s.data(), s.data() + s.size(), v, base);
        if (r.ec != std::errc()) syntax_error(line_, "integer literal " + s + " is too large");
        Token t;
        t.type = Tok::INT;
        t.line = line_;
        t.ival = v;
        toks_.push_back(t);
        advance_to(end);
    }

    static int hex_value(char c) {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    }

    // A quoted string with Python's escapes (jinja2 decodes literals with
    // the unicode-escape codec).
    void string_literal() {
        const char quote = src_[pos_];
        const int line = line_;
        size_t e = pos_ + 1;
        while (e < src_.size() && src_[e] != quote) e += src_[e] == '\\' ? 2 : 1;
        if (e >= src_.size()) syntax_error(line, "unterminated string");
        const std::string_view body = std::string_view(src_).substr(pos_ + 1, e - pos_ - 1);
        std::string out;
        for (size_t i = 0; i < body.size(); ++i) {
            if (body[i] != '\\') {
                out += body[i];
                continue;
            }
            const char c = body[++i];
            switch (c) {
                case '\n': break;
                case '\\': out += '\\'; break;
                case '\'': out += '\''; break;
                case '"': out += '"'; break;
                case 'a': out += '\a'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'v': out += '\v'; break;
                case 'x':
                case 'u':
                case 'U': {
                    const size_t n = c == 'x' ? 2 : c == 'u' ? 4 : 8;
                    char32_t cp = 0;
                    for (size_t k = 1; k <= n; ++k) {
                        const int h = i + k < body.size() ? hex_value(body[i + k]) : -1;
                        if (h < 0) syntax_error(line, std::string("truncated \\") + c + " escape in a string");
                        cp = cp * 16 + char32_t(h);
                    }
                    if (cp > 0x10FFFF) syntax_error(line, "escape beyond U+10FFFF in a string");
                    if (cp >= 0xD800 && cp <= 0xDFFF) unsupported("line %d: a surrogate escape in a string", line);
                    utf8_append(out, cp);
                    i += n;
                    break;
                }
                case 'N': unsupported("line %d: \\N{...} escapes in strings are not supported", line);
                default:
                    if (c >= '0' && c <= '7') {
                        char32_t cp = char32_t(c - '0');
                        for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k)
                            cp = cp * 8 + char32_t(body[++i] - '0');
                        utf8_append(out, cp);
                    } else if (static_cast<unsigned char>(c) >= 0x80) {
                        // jinja2 first writes non-ASCII as backslash escapes,
                        // so "\é" reads as a backslash and the text "xe9".
                        const std::u32string u = utf8_decode(body.substr(i, 4));
                        const char32_t cp = u.empty() ? 0xFFFD : u[0];
                        char buf[16];
                        if (cp <= 0xFF) std::snprintf(buf, sizeof buf, "\\x%02x", unsigned(cp));
                        else if (cp <= 0xFFFF) std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(cp));
                        else std::snprintf(buf, sizeof buf, "\\U%08x", unsigned(cp));
                        out += buf;
                        std::string enc;
                        utf8_append(enc, cp);
                        i += enc.size() - 1;
                    } else {
                        out += '\\';
                        out += c;
                    }
            }
        }
        Token t;
        t.type = Tok::STRING;
        t.line = line;
        t.text = std::move(out);
        toks_.push_back(std::move(t));
        advance_to(e + 1);
    }
};

// ---- parser -------------------------------------------------------------------

class Parser {
public:
    Parser(std::vector<Token> toks, const Limits &limits) : toks_(std::move(toks)), limits_(limits) {}

    Body run() {
        std::string found;
        Body body = parse_body({}, found);
        return body;
    }

private:
    std::vector<Token> toks_;
    size_t pos_ = 0;
    const Limits &limits_;
    int depth_ = 0;
    int loops_ = 0;  // for loops around the current position (not across macros)

    struct Guard {
        Parser &p;
        explicit Guard(Parser &parser) : p(parser) {
            if (++p.depth_ > p.limits_.max_depth)
                syntax_error(p.cur().line, "nested more than " + std::to_string(p.limits_.max_depth) + " deep");
        }
        ~Guard() { --p.depth_; }
    };

    const Token &cur() const { return toks_[pos_]; }
    const Token &peek(size_t k = 1) const { return toks_[std::min(pos_ + k, toks_.size() - 1)]; }
    void next() {
        if (pos_ + 1 < toks_.size()) ++pos_;
    }
    bool is_op(const char *o) const { return cur().type == Tok::OP && cur().text == o; }
    bool is_name(const char *n) const { return cur().type == Tok::NAME && cur().text == n; }
    bool skip_op(const char *o) {
        if (!is_op(o)) return false;
        next();
        return true;
    }
    bool skip_name(const char *n) {
        if (!is_name(n)) return false;
        next();
        return true;
    }
    [[noreturn]] void fail(const std::string &msg) const { syntax_error(cur().line, msg); }
    void expect_op(const char *o) {
        if (!skip_op(o)) fail(std::string("expected token '") + o + "', got " + token_desc(cur()));
    }
    void expect(Tok t, const char *what) {
        if (cur().type != t) fail(std::string("expected ") + what + ", got " + token_desc(cur()));
        next();
    }
    std::string expect_name() {
        if (cur().type != Tok::NAME) fail("expected a name, got " + token_desc(cur()));
        std::string n = cur().text;
        next();
        return n;
    }

    ExprPtr make(ExprKind kind, int line) {
        auto e = std::make_unique<Expr>();
        e->kind = kind;
        e->line = line;
        return e;
    }
    ExprPtr finish(ExprPtr e) {
        for (const auto &a : e->args)
            if (a) e->depth = std::max(e->depth, a->depth + 1);
        if (e->depth > limits_.max_depth)
            syntax_error(e->line, "expression nested more than " + std::to_string(limits_.max_depth) + " deep");
        return e;
    }

    // ---- statements ----

    static bool one_of(const std::string &s, std::initializer_list<const char *> names) {
        for (const char *n : names)
            if (s == n) return true;
        return false;
    }

    // Nodes up to one of the end tags; `found` gets the tag, whose name has
    // been consumed (the caller reads the rest of that tag).
    Body parse_body(std::initializer_list<const char *> end_tags, std::string &found) {
        Body body;
        while (true) {
            const Token &t = cur();
            if (t.type == Tok::DATA) {
                auto n = std::make_unique<Node>();
                n->kind = NodeKind::TEXT;
                n->line = t.line;
                n->text = t.text;
                body.push_back(std::move(n));
                next();
            } else if (t.type == Tok::VAR_BEGIN) {
                auto n = std::make_unique<Node>();
                n->kind = NodeKind::OUTPUT;
                n->line = t.line;
                next();
                n->expr = parse_tuple(true, false, {});
                expect(Tok::VAR_END, "end of print statement");
                body.push_back(std::move(n));
            } else if (t.type == Tok::BLOCK_BEGIN) {
                next();
                if (cur().type != Tok::NAME) fail("tag name expected");
                if (one_of(cur().text, end_tags)) {
                    found = cur().text;
                    next();
                    return body;
                }
                parse_statement(body);
            } else if (t.type == Tok::END) {
                if (end_tags.size() == 0) return body;
                std::string list;
                for (const char *n : end_tags) list += std::string(list.empty() ? "" : " or ") + "'" + n + "'";
                fail("unexpected end of template; jinja was looking for " + list);
            } else {
                fail("unexpected " + token_desc(t));
            }
        }
    }

    void parse_statement(Body &body) {
        Guard g(*this);
        const std::string tag = cur().text;
        const int line = cur().line;
        if (tag == "if") return body.push_back(parse_if());
        if (tag == "for") return body.push_back(parse_for());
        if (tag == "set") return body.push_back(parse_set());
        if (tag == "macro") return body.push_back(parse_macro());
        if (tag == "break" || tag == "continue") {
            if (!loops_) fail("'" + tag + "' outside of a loop");
            next();
            expect(Tok::BLOCK_END, "end of statement block");
            auto n = std::make_unique<Node>();
            n->kind = tag == "break" ? NodeKind::BREAK : NodeKind::CONTINUE;
            n->line = line;
            return body.push_back(std::move(n));
        }
        if (tag == "generation") {
            // Hugging Face's {% generation %} marks assistant text for
            // training masks; rendering it is rendering its body.
            next();
            expect(Tok::BLOCK_END, "end of statement block");
            std::string found;
            Body inner = parse_body({"endgeneration"}, found);
            expect(Tok::BLOCK_END, "end of statement block");
            for (auto &n : inner) body.push_back(std::move(n));
            return;
        }
        static const char *const kUnsupported[] = {"filter",  "call",  "with",   "include", "import", "from",
                                                   "extends", "block", "do",     "trans",   "print",  "autoescape",
                                                   "raw",     "pluralize"};
        for (const char *u : kUnsupported)
            if (tag == u) unsupported("line %d: the '%s' tag is not supported", line, tag.c_str());
        fail("unknown tag '" + tag + "'");
    }

    std::unique_ptr<Node> parse_if() {
        auto n = std::make_unique<Node>();
        n->kind = NodeKind::IF;
        n->line = cur().line;
        next();
        while (true) {
            n->exprs.push_back(parse_tuple(false, false, {}));
            expect(Tok::BLOCK_END, "end of statement block");
            std::string found;
            n->bodies.push_back(parse_body({"elif", "else", "endif"}, found));
            if (found == "elif") continue;
            if (found == "else") {
                expect(Tok::BLOCK_END, "end of statement block");
                n->bodies.push_back(parse_body({"endif"}, found));
            }
            expect(Tok::BLOCK_END, "end of statement block");
            return n;
        }
    }

    // Names assigned by for and set: "x", "a, b" or "(a, b)".
    std::vector<std::string> parse_targets() {
        std::vector<std::string> names;
        const bool paren = skip_op("(");
        while (true) {
            if (!names.empty() && !skip_op(",")) break;
            if (cur().type != Tok::NAME) {
                if (!names.empty()) break;  // trailing comma
                fail("can't assign to " + token_desc(cur()));
            }
            names.push_back(expect_name());
            if (!is_op(",")) break;
        }
        if (paren) expect_op(")");
        for (const auto &nm : names)
            if (one_of(nm, {"true", "false", "none", "True", "False", "None"})) fail("can't assign to " + nm);
        return names;
    }

    std::unique_ptr<Node> parse_for() {
        auto n = std::make_unique<Node>();
        n->kind = NodeKind::FOR;
        n->line = cur().line;
        next();
        n->names = parse_targets();
        if (!skip_name("in")) fail("expected 'in', got " + token_desc(cur()));
        n->expr = parse_tuple(false, false, {"recursive"});
        if (skip_name("if")) n->cond = parse_expression(true);
        if (is_name("recursive")) unsupported("line %d: recursive for loops are not supported", n->line);
        expect(Tok::BLOCK_END, "end of statement block");
        std::string found;
        ++loops_;
        n->bodies.push_back(parse_body({"endfor", "else"}, found));
        --loops_;
        if (found == "else") {
            expect(Tok::BLOCK_END, "end of statement block");
            n->bodies.push_back(parse_body({"endfor"}, found));
        }
        expect(Tok::BLOCK_END, "end of statement block");
        return n;
    }

    std::unique_ptr<Node> parse_set() {
        auto n = std::make_unique<Node>();
        n->line = cur().line;
        next();
        if (cur().type == Tok::NAME && peek().type == Tok::OP && peek().text == ".") {
            n->kind = NodeKind::SET_ATTR;
            n->names.push_back(expect_name());
            next();
            n->text = expect_name();
            expect_op("=");
            n->expr = parse_tuple(true, false, {});
            expect(Tok::BLOCK_END, "end of statement block");
            return n;
        }
        n->names = parse_targets();
        if (skip_op("=")) {
            n->kind = NodeKind::SET;
            n->expr = parse_tuple(true, false, {});
            expect(Tok::BLOCK_END, "end of statement block");
            return n;
        }
        if (is_op("|")) unsupported("line %d: filters on {%% set %%} blocks are not supported", n->line);
        if (n->names.size() != 1) fail("expected '='");
        n->kind = NodeKind::SET_BLOCK;
        expect(Tok::BLOCK_END, "end of statement block");
        std::string found;
        n->bodies.push_back(parse_body({"endset"}, found));
        expect(Tok::BLOCK_END, "end of statement block");
        return n;
    }

    std::unique_ptr<Node> parse_macro() {
        auto n = std::make_unique<Node>();
        n->kind = NodeKind::MACRO;
        n->line = cur().line;
        next();
        n->text = expect_name();
        expect_op("(");
        while (!is_op(")")) {
            if (!n->names.empty()) expect_op(",");
            if (is_op(")")) break;
            n->names.push_back(expect_name());
            if (skip_op("=")) {
                n->exprs.push_back(parse_expression(true));
            } else if (!n->exprs.empty()) {
                fail("non-default argument follows default argument");
            }
        }
        next();
        expect(Tok::BLOCK_END, "end of statement block");
        const int saved_loops = loops_;
        loops_ = 0;
        std::string found;
        n->bodies.push_back(parse_body({"endmacro"}, found));
        loops_ = saved_loops;
        expect(Tok::BLOCK_END, "end of statement block");
        return n;
    }

    // ---- expressions ----

    bool tuple_end(std::initializer_list<const char *> extra) const {
        const Token &t = cur();
        if (t.type == Tok::VAR_END || t.type == Tok::BLOCK_END || (t.type == Tok::OP && t.text == ")")) return true;
        if (t.type == Tok::NAME)
            for (const char *n : extra)
                if (t.text == n) return true;
        return false;
    }

    ExprPtr parse_tuple(bool with_condexpr, bool explicit_parens, std::initializer_list<const char *> extra_end) {
        const int line = cur().line;
        std::vector<ExprPtr> args;
        bool is_tuple = false;
        while (true) {
            if (!args.empty()) expect_op(",");
            if (tuple_end(extra_end)) break;
            args.push_back(parse_expression(with_condexpr));
            if (is_op(",")) is_tuple = true;
            else break;
        }
        if (!is_tuple) {
            if (!args.empty()) return std::move(args[0]);
            if (!explicit_parens) fail("expected an expression, got " + token_desc(cur()));
        }
        auto e = make(ExprKind::TUPLE, line);
        e->args = std::move(args);
        return finish(std::move(e));
    }

    ExprPtr parse_expression(bool with_condexpr) {
        if (!with_condexpr) return parse_or();
        Guard g(*this);
        ExprPtr expr = parse_or();
        while (is_name("if")) {
            const int line = cur().line;
            next();
            ExprPtr cond = parse_or();
            ExprPtr other;
            if (skip_name("else")) other = parse_expression(true);
            auto e = make(ExprKind::COND, line);
            e->args.push_back(std::move(cond));
            e->args.push_back(std::move(expr));
            e->args.push_back(std::move(other));
            expr = finish(std::move(e));
        }
        return expr;
    }

    // A left-to-right chain of one precedence level: a op b op c ...
    template <typename Sub>
    ExprPtr parse_chain(Sub sub, std::initializer_list<std::pair<const char *, Op>> ops, bool names) {
        ExprPtr left = (this->*sub)();
        ExprPtr chain;
        while (true) {
            const Op *op = nullptr;
            for (const auto &o : ops)
                if (names ? is_name(o.first) : is_op(o.first)) op = &o.second;
            if (!op) break;
            if (!chain) {
                chain = make(ExprKind::BINARY, cur().line);
                chain->args.push_back(std::move(left));
            }
            const Op the_op = *op;
            next();
            chain->ops.push_back(the_op);
            chain->args.push_back((this->*sub)());
        }
        return chain ? finish(std::move(chain)) : std::move(left);
    }

    ExprPtr parse_or() { return parse_chain(&Parser::parse_and, {{"or", Op::OR}}, true); }
    ExprPtr parse_and() { return parse_chain(&Parser::parse_not, {{"and", Op::AND}}, true); }

    ExprPtr parse_not() {
        if (is_name("not")) {
            Guard g(*this);
            auto e = make(ExprKind::UNARY, cur().line);
            next();
            e->op = Op::NOT;
            e->args.push_back(parse_not());
            return finish(std::move(e));
        }
        return parse_compare();
    }

    ExprPtr parse_compare() {
        const int line = cur().line;
        ExprPtr first = parse_math1();
        ExprPtr e;
        while (true) {
            Op op;
            const Token &t = cur();
            if (t.type == Tok::OP && t.text == "==") op = Op::EQ;
            else if (t.type == Tok::OP && t.text == "!=") op = Op::NE;
            else if (t.type == Tok::OP && t.text == "<") op = Op::LT;
            else if (t.type == Tok::OP && t.text == "<=") op = Op::LE;
            else if (t.type == Tok::OP && t.text == ">") op = Op::GT;
            else if (t.type == Tok::OP && t.text == ">=") op = Op::GE;
            else if (is_name("in")) op = Op::IN;
            else if (is_name("not") && peek().type == Tok::NAME && peek().text == "in") op = Op::NOTIN;
            else break;
            next();
            if (op == Op::NOTIN) next();
            if (!e) {
                e = make(ExprKind::COMPARE, line);
                e->args.push_back(std::move(first));
            }
            e->ops.push_back(op);
            e->args.push_back(parse_math1());
        }
        return e ? finish(std::move(e)) : std::move(first);
    }

    ExprPtr parse_math1() { return parse_chain(&Parser::parse_concat, {{"+", Op::ADD}, {"-", Op::SUB}}, false); }

    ExprPtr parse_concat() {
        const int line = cur().line;
        ExprPtr first = parse_math2();
        if (!is_op("~")) return first;
        auto e = make(ExprKind::CONCAT, line);
        e->args.push_back(std::move(first));
        while (skip_op("~")) e->args.push_back(parse_math2());
        return finish(std::move(e));
    }

    ExprPtr parse_math2() {
        return parse_chain(&Parser::parse_pow,
                           {{"*", Op::MUL}, {"/", Op::DIV}, {"//", Op::FLOORDIV}, {"%", Op::MOD}}, false);
    }

    ExprPtr parse_pow() { return parse_chain(&Parser::parse_unary_filtered, {{"**", Op::POW}}, false); }

    ExprPtr parse_unary_filtered() { return parse_unary(true); }

    ExprPtr parse_unary(bool with_filter) {
        Guard g(*this);
        ExprPtr node;
        if (is_op("-") || is_op("+")) {
            auto e = make(ExprKind::UNARY, cur().line);
            e->op = is_op("-") ? Op::NEG : Op::POS;
            next();
            e->args.push_back(parse_unary(false));
            node = finish(std::move(e));
        } else {
            node = parse_primary();
        }
        node = parse_postfix(std::move(node));
        if (with_filter) node = parse_filter_expr(std::move(node));
        return node;
    }

    ExprPtr parse_primary() {
        const Token &t = cur();
        const int line = t.line;
        if (t.type == Tok::NAME) {
            auto e = make(ExprKind::LITERAL, line);
            if (t.text == "true" || t.text == "True") e->value = Value::boolean(true);
            else if (t.text == "false" || t.text == "False") e->value = Value::boolean(false);
            else if (t.text == "none" || t.text == "None") e->value = Value::none();
            else {
                e->kind = ExprKind::NAME;
                e->name = t.text;
            }
            next();
            return e;
        }
        if (t.type == Tok::STRING) {
            std::string s;
            while (cur().type == Tok::STRING) {
                s += cur().text;
                next();
            }
            auto e = make(ExprKind::LITERAL, line);
            e->value = Value::string(std::move(s));
            return e;
        }
        if (t.type == Tok::INT || t.type == Tok::FLOAT) {
            auto e = make(ExprKind::LITERAL, line);
            e->value = t.type == Tok::INT ? Value::integer(t.ival) : Value::number(t.fval);
            next();
            return e;
        }
        if (skip_op("(")) {
            ExprPtr e = parse_tuple(true, true, {});
            expect_op(")");
            return e;
        }
        if (skip_op("[")) {
            auto e = make(ExprKind::LIST, line);
            while (!is_op("]")) {
                if (!e->args.empty()) expect_op(",");
                if (is_op("]")) break;
                e->args.push_back(parse_expression(true));
            }
            expect_op("]");
            return finish(std::move(e));
        }
        if (skip_op("{")) {
            auto e = make(ExprKind::DICT, line);
            while (!is_op("}")) {
                if (!e->args.empty()) expect_op(",");
                if (is_op("}")) break;
                e->args.push_back(parse_expression(true));
                expect_op(":");
                e->args.push_back(parse_expression(true));
            }
            expect_op("}");
            return finish(std::move(e));
        }
        fail("unexpected " + token_desc(t));
    }

    ExprPtr parse_postfix(ExprPtr node) {
        while (true) {
            if (is_op(".")) {
                const int line = cur().line;
                next();
                if (cur().type == Tok::NAME) {
                    auto e = make(ExprKind::GETATTR, line);
                    e->name = expect_name();
                    e->args.push_back(std::move(node));
                    node = finish(std::move(e));
                } else if (cur().type == Tok::INT) {
                    auto e = make(ExprKind::GETITEM, line);
                    auto idx = make(ExprKind::LITERAL, line);
                    idx->value = Value::integer(cur().ival);
                    next();
                    e->args.push_back(std::move(node));
                    e->args.push_back(std::move(idx));
                    node = finish(std::move(e));
                } else {
                    fail("expected name or number");
                }
            } else if (is_op("[")) {
                node = parse_subscript(std::move(node));
            } else if (is_op("(")) {
                node = parse_call(std::move(node));
            } else {
                return node;
            }
        }
    }

    ExprPtr parse_subscript(ExprPtr node) {
        const int line = cur().line;
        next();
        ExprPtr parts[3];
        bool is_slice = false;
        if (!is_op(":")) {
            parts[0] = parse_expression(true);
            if (is_op(",")) unsupported("line %d: subscripts with several indices are not supported", line);
        }
        if (skip_op(":")) {
            is_slice = true;
            if (!is_op(":") && !is_op("]")) parts[1] = parse_expression(true);
            if (skip_op(":") && !is_op("]")) parts[2] = parse_expression(true);
        }
        expect_op("]");
        auto e = make(is_slice ? ExprKind::SLICE : ExprKind::GETITEM, line);
        e->args.push_back(std::move(node));
        if (is_slice) {
            for (auto &p : parts) e->args.push_back(std::move(p));
        } else {
            if (!parts[0]) fail("expected an index");
            e->args.push_back(std::move(parts[0]));
        }
        return finish(std::move(e));
    }

    // "(a, b, key=c)" into e->args (after any already there) and e->kwnames.
    void parse_call_args(Expr &e) {
        expect_op("(");
        bool first = true;
        while (!is_op(")")) {
            if (!first) expect_op(",");
            first = false;
            if (is_op(")")) break;
            if (is_op("*") || is_op("**")) unsupported("line %d: *args and **kwargs in calls are not supported", e.line);
            if (cur().type == Tok::NAME && peek().type == Tok::OP && peek().text == "=") {
                e.kwnames.push_back(expect_name());
                next();
                e.args.push_back(parse_expression(true));
            } else {
                if (!e.kwnames.empty()) fail("invalid syntax for function call expression");
                e.args.push_back(parse_expression(true));
            }
        }
        next();
    }

    ExprPtr parse_call(ExprPtr node) {
        auto e = make(ExprKind::CALL, cur().line);
        e->args.push_back(std::move(node));
        parse_call_args(*e);
        return finish(std::move(e));
    }

    std::string dotted_name() {
        std::string name = expect_name();
        while (is_op(".")) {
            next();
            name += "." + expect_name();
        }
        return name;
    }

    ExprPtr parse_filter_expr(ExprPtr node) {
        while (true) {
            if (is_op("|")) {
                while (skip_op("|")) {
                    auto e = make(ExprKind::FILTER, cur().line);
                    e->name = dotted_name();
                    e->fn = find_filter(e->name);
                    if (!e->fn && !is_jinja_filter(e->name)) fail("no filter named '" + e->name + "'");
                    e->args.push_back(std::move(node));
                    if (is_op("(")) parse_call_args(*e);
                    node = finish(std::move(e));
                }
            } else if (is_name("is")) {
                node = parse_test(std::move(node));
            } else if (is_op("(")) {
                node = parse_call(std::move(node));
            } else {
                return node;
            }
        }
    }

    ExprPtr parse_test(ExprPtr node) {
        const int line = cur().line;
        next();
        const bool negated = skip_name("not");
        auto e = make(ExprKind::TEST, line);
        e->name = dotted_name();
        e->fn = find_test(e->name);
        if (!e->fn && !is_jinja_test(e->name)) fail("no test named '" + e->name + "'");
        e->args.push_back(std::move(node));
        const Token &t = cur();
        if (is_op("(")) {
            parse_call_args(*e);
        } else if ((t.type == Tok::NAME || t.type == Tok::STRING || t.type == Tok::INT || t.type == Tok::FLOAT ||
                    is_op("(") || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
            if (is_name("is")) fail("you cannot chain multiple tests with is");
            Guard g(*this);
            e->args.push_back(parse_postfix(parse_primary()));
        }
        ExprPtr test = finish(std::move(e));
        if (!negated) return test;
        auto n = make(ExprKind::UNARY, line);
        n->op = Op::NOT;
        n->args.push_back(std::move(test));
        return finish(std::move(n));
    }
};

}  // namespace

Body parse_template(std::string_view source, const Limits &limits) {
    if (source.size() > limits.max_source_bytes)
        unsupported("the template has %zu bytes, more than %zu", source.size(), limits.max_source_bytes);
    if (!utf8_is_valid(source)) unsupported("the template is not valid UTF-8");
    Lexer lexer(source);
    Parser parser(lexer.run(), limits);
    return parser.run();
}

}  // namespace jinja
}  // namespace kvfit
