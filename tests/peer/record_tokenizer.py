#!/usr/bin/env python3
"""Record how llama.cpp tokenizes and detokenizes a broad set of texts with a GGUF's vocabulary,
for kvfit's tokenizer test (tests/test_tokenizer.cpp compares kvfit against the file).

    python3 tests/peer/record_tokenizer.py                       # Gemma 3 270M from models/
    python3 tests/peer/record_tokenizer.py --model path/to/gemma-3-270m-q4_k_m.gguf --out x.txt

The model is loaded with vocab_only=True (no weights) through llama-cpp-python's low-level API:
llama_model_load_from_file, llama_tokenize, llama_detokenize, llama_token_to_piece.
Writes tests/data/tokenizer-gemma3.txt by default; its header describes the line format.
"""

import argparse
import ctypes
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402

L = pc.L

# --------------------------------------------------------------------------- inputs

WHITESPACE = [
    " ", "  ", "   ", " " * 8, " " * 31, " " * 32, " " * 33, " " * 40,
    "\t", "\t\t", "\t" * 31, "\t" * 32, "\t" * 33,
    "\n", "\n\n", "\n" * 3, "\n" * 31, "\n" * 32, "\n" * 40,
    "\r", "\r\n", "\r\n\r\n", "\n\r", " \n", "\n ", " \n \n ", "\t \n\t", " \t \t",
    "a \n b", "a\n\nb", "a  b", "a   b", "a\tb", "a \tb", "a\t b",
    " a", "  a", "   a", "a ", "a  ", "a   ",
    " Hello", "  Hello", "Hello world", " Hello world", "Hello  world", "Hello   world   ",
    "\v\f", "\u00a0", "\u2009", "\u3000", "\u200b", "a\u00a0b", "\u00a0\u00a0a",
    "line one\nline two\n\n  indented\n\tline with tab\r\nwindows\n",
]

SCRIPTS = [
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m",
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301",
    "Zaż\u00f3łć gęślą jaźń",
    "İstanbul ığdır şçöğü",
    "Xin ch\u00e0o thế giới",
    "\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u09b9\u09cd\u09af\u09be\u09b2\u09cb \u09ac\u09bf\u09b6\u09cd\u09ac",
    "\u0bb5\u0ba3\u0b95\u0bcd\u0b95\u0bae\u0bcd \u0b89\u0bb2\u0b95\u0bae\u0bcd",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",
    "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
    "\u0532\u0561\u0580\u0565\u0582",
    "\u1230\u120b\u121d \u120d\u12d1\u120d",
    "\u0f56\u0f7c\u0f51\u0f0b\u0f61\u0f72\u0f42",
    "\u179f\u17bd\u179f\u17d2\u178f\u17b8",
    "\u0d86\u0dba\u0dd4\u0db6\u0ddd\u0dc0\u0db1\u0dca",
    "\u182e\u1823\u1829\u182d\u1823\u182f",
    "\u13e3\u13b3\u13a9 \u16a0\u16a2\u16a6\u16a8\u16b1\u16b2 \u2813\u2811\u2807\u2807\u2815",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5\u3002",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u30ab\u30bf\u30ab\u30ca",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u2200x\u2208\u211d: x\u00b2\u22650 \u2211\u222b\u221a\u221e\u2260\u2248",
    "\u250c\u2500\u2510\n\u2502x\u2502\n\u2514\u2500\u2518",
    "\u210c\U0001D522\U0001D529\U0001D529\U0001D52C \U0001D7D9\U0001D7DA\U0001D7DB \U0001D11E",
]

EMOJI = [
    "\U0001F600", "\U0001F999", "\U0001FAE0\U0001FAE1",
    "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 family",
    "\U0001F1EB\U0001F1F7\U0001F1EF\U0001F1F5 flags",
    "\u2764\uFE0F and \U0001F44D\U0001F3FD",
    "1\uFE0F\u20E3 \U0001F3F3\uFE0F\u200D\U0001F308",
    "emoji \U0001F999\U0001F680 \U0001F636\u200D\U0001F32B\uFE0F \u2705",
]

# Characters the vocabulary has no token for: byte-fallback tokens.
BYTE_FALLBACK = [
    "\U0010FFFD", "\U00010000\U00010001", "\U00013000", "\U00020000\U00020001", "\U00030000",
    "\u0085", "\u0f00", "\u1800", "a\U0010FFFDb", " \U00020000 ", "\U0001F999\U0001F999",
    "\x01\x02\x1b\x7f", "\ufffd\ufeff", "\ue000\uf8ff",
]

DIGITS = [
    "0", "0123456789", "3.14159", "1,000,000", "12345678901234567890", "007", "1 2 3",
    "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669", "\u0967\u0968\u0969",
    "\uff11\uff12\uff13", "2024-12-06T07:00:00Z", "0x1F 0b1010 1e-5 -42 +7", "\u00bd \u00b2 \u2153",
]

# Gemma 3's special, control and user-defined tokens, and text that only looks like them.
SPECIAL = [
    "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "[multimodal]",
    "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
    "<unused0>", "<unused99>", "<unused6241>",
    "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn>user\nHi<end_of_turn>",
    "<start_of_turn>system\nBe brief.<end_of_turn>\n<start_of_turn>user\n  Hello\tthere<end_of_turn>\n",
    "Hello<end_of_turn>world", "text<eos>", "<bos> <bos>", "<bos>\n<bos>",
    "<start_of_turn><end_of_turn>", "<start_of_turn>", "<start_of_turn", "start_of_turn>",
    "<<start_of_turn>>", "< start_of_turn >", "<START_OF_TURN>",
    "<s>Hello</s> <unk>", "<|im_start|>user\nhi<|im_end|>",
    "see [multimodal] here", "<start_of_image>  <end_of_image>",
    "<table><tr><td>1</td></tr></table>", "<div> </div>", "a> </b", "x>  </y",
    "<b>bold</b> <i>it</i>", "<br/>\n<p>", "<!-- comment -->",
    "<h1>Title</h1>\n\n<ul>\n  <li>x</li>\n</ul>",
]

MISC = [
    "Hello, world! How are you? (fine) [ok] {yes}; \"quoted\" 'single' ...",
    "don't I'VE we're they'll she's it'd you'RE O'Neil",
    "The quick brown fox jumps over the lazy dog.",
    "HeLLo WoRLD ThIs Is MiXeD CaSe, ALLCAPS and lowercase",
    "https://www.example.com/path/to/page?query=1&lang=en#section",
    "email: john.doe@example.org, ftp://files.example.net/a_b-c.tar.gz",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "........", "!!!???...---___***~~~@@@###",
    "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n    return a + b\n\n\n"
    "if __name__ == '__main__':\n\tprint(add(1, 2))\n",
    "int main(void) {\n    for (int i = 0; i < 10; ++i) {\n        printf(\"%d\\n\", i);\n"
    "    }\n    return 0;\n}\n",
    "{\"name\": \"kvfit\", \"values\": [1, 2.5, null, true], \"nested\": {\"a\": \"\\u00e9\"}}",
    "\u2581 visible space \u2581\u2581 and \u2581a",
]


# Whole files of the shared test data, checked by token count and digests.
LONG_TEXTS = ["text/pride_and_prejudice.txt", "text/tinyshakespeare.txt", "text/wikitext2_test.raw"]


def has_markup(s):
    return "<" in s or "[" in s


def vocab_inputs(vocab_dir):
    """The .inp strings of llama.cpp's tokenizer test vectors, each once, in file order."""
    seen, out = set(), []
    if not os.path.isdir(vocab_dir):
        return out
    for name in sorted(os.listdir(vocab_dir)):
        if not name.endswith(".inp"):
            continue
        with open(os.path.join(vocab_dir, name), "rb") as f:
            raw = f.read().decode("utf-8")
        for s in raw.split("\n__ggml_vocab_test__\n"):
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out


def pride_paragraph(text_dir):
    """Chapter 1's opening paragraphs of Pride and Prejudice (about 1.5 KB)."""
    path = os.path.join(text_dir, "pride_and_prejudice.txt")
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    start = text.index("It is a truth universally acknowledged")
    end = text.index("\u201cWhat is his name?\u201d", start)
    return text[start:end]


# --------------------------------------------------------------------------- llama.cpp

class Vocab:
    def __init__(self, path):
        mp = L.llama_model_default_params()
        mp.vocab_only = True
        mp.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            sys.exit("llama.cpp failed to load %s" % path)
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)

    def tokenize(self, b, add_special, parse_special):
        n_max = len(b) + 16
        while True:
            buf = (L.llama_token * n_max)()
            n = L.llama_tokenize(self.vocab, b, len(b), buf, n_max, bool(add_special), bool(parse_special))
            if n >= 0:
                return [int(buf[i]) for i in range(n)]
            n_max = -n

    def detokenize(self, ids, unparse_special):
        arr = (L.llama_token * max(1, len(ids)))(*ids)
        size = 4 * len(ids) + 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = L.llama_detokenize(self.vocab, arr, len(ids), buf, size, False, bool(unparse_special))
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def piece(self, tok, special):
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = L.llama_token_to_piece(self.vocab, tok, buf, size, 0, bool(special))
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def close(self):
        L.llama_model_free(self.model)


# --------------------------------------------------------------------------- output

def hexb(b):
    return b.hex() if b else "-"


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def ids_bytes(ids):
    return b"".join(int(i).to_bytes(4, "little", signed=True) for i in ids)


def same_or_hex(b, previous):
    """'=' when b equals the previous text field of the record, else hexb(b)."""
    return "=" if b == previous else hexb(b)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ranges(ids):
    out, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else "%d-%d" % (ids[i], ids[j]))
        i = j + 1
    return out


def piece_ids(n_vocab):
    ids = set(range(min(n_vocab, 520)))
    ids.update(range(max(0, n_vocab - 6200), min(n_vocab, n_vocab - 6100)))
    ids.update(range(max(0, n_vocab - 50), n_vocab))
    ids.update(range(0, n_vocab, 997))
    return sorted(i for i in ids if 0 <= i < n_vocab)


def record(model_path, out_path, data_dir):
    lcp_ver, llama_ver = pc.versions()
    v = Vocab(model_path)

    cases = [(s, (0,), (0,)) for s in vocab_inputs(os.path.join(data_dir, "vocab"))]
    own = [""] + WHITESPACE + SCRIPTS + EMOJI + BYTE_FALLBACK + DIGITS + SPECIAL + MISC
    own.append(pride_paragraph(os.path.join(data_dir, "text")))
    for s in own:
        cases.append((s, (0, 1), (0, 1) if has_markup(s) else (0,)))

    lines = []
    add = lines.append
    add("# generated by tests/peer/record_tokenizer.py with llama-cpp-python %s (llama.cpp %s)"
        % (lcp_ver, llama_ver))
    add("# model: %s loaded with vocab_only=1 (file name only; identified by the sha256 below)"
        % os.path.basename(model_path))
    add("# inputs: llama.cpp's tokenizer test strings (vocab/*.inp of the shared test data) with")
    add("#   add_special=0 parse_special=0, then the script's own strings with add_special 0 and 1 and,")
    add("#   where they hold '<' or '[', parse_special 0 and 1")
    add("# format: one record per line, fields separated by single spaces; text fields are the UTF-8")
    add("#   bytes hex-encoded ('-' = empty, '=' = the same bytes as the text field before it);")
    add("#   '#' lines are comments (ascii() of each input, cut short)")
    add("#   meta <key> <value>")
    add("#   eog <n> <id>...              tokens llama_vocab_is_eog accepts")
    add("#   control <n> <id or a-b>...   tokens llama_vocab_is_control accepts, as ranges")
    add("#   tok <add_special> <parse_special> <hex text> <hex detok> <hex detok_special> <n> <id>...")
    add("#     detok = llama_detokenize(ids, remove_special=0, unparse_special=0); detok_special the")
    add("#     same with unparse_special=1")
    add("#   piece <id> <hex piece> <hex piece_special>   llama_token_to_piece, lstrip=0, special=0 / 1")
    add("#   text <file> <add_special> <parse_special> <n> <fnv ids> <fnv detok>   a whole file of the")
    add("#     shared test data: its token count, FNV-1a 64 of the ids as int32 little-endian and of")
    add("#     the detokenized bytes (unparse_special=0)")
    add("meta sha256 %s" % sha256_file(model_path))
    add("meta n_vocab %d" % v.n_vocab)
    add("meta bos %d" % L.llama_vocab_bos(v.vocab))
    add("meta eos %d" % L.llama_vocab_eos(v.vocab))
    add("meta eot %d" % L.llama_vocab_eot(v.vocab))
    add("meta add_bos %d" % int(L.llama_vocab_get_add_bos(v.vocab)))
    add("meta add_eos %d" % int(L.llama_vocab_get_add_eos(v.vocab)))
    eog = [i for i in range(v.n_vocab) if L.llama_vocab_is_eog(v.vocab, i)]
    add("eog %d %s" % (len(eog), " ".join(map(str, eog))))
    control = [i for i in range(v.n_vocab) if L.llama_vocab_is_control(v.vocab, i)]
    add("control %d %s" % (len(control), " ".join(ranges(control))))

    n_tok = 0
    for s, adds, parses in cases:
        b = s.encode("utf-8")
        preview = ascii(s)
        add("# %s" % (preview if len(preview) <= 100 else preview[:97] + "..."))
        for parse_special in parses:
            for add_special in adds:
                ids = v.tokenize(b, add_special, parse_special)
                detok = v.detokenize(ids, False)
                detok_special = v.detokenize(ids, True)
                add("tok %d %d %s %s %s %d%s" % (
                    add_special, parse_special, hexb(b), same_or_hex(detok, b),
                    same_or_hex(detok_special, detok), len(ids), "".join(" %d" % i for i in ids)))
                n_tok += 1
    for rel in LONG_TEXTS:
        path = os.path.join(data_dir, rel)
        if not os.path.exists(path):
            sys.exit("missing %s (set KVFIT_TEST_DATA)" % path)
        with open(path, "rb") as f:
            b = f.read()
        ids = v.tokenize(b, 0, 0)
        add("text %s 0 0 %d %s %s" % (rel, len(ids), fnv1a64(ids_bytes(ids)), fnv1a64(v.detokenize(ids, False))))
    pids = piece_ids(v.n_vocab)
    for i in pids:
        plain = v.piece(i, False)
        add("piece %d %s %s" % (i, hexb(plain), same_or_hex(v.piece(i, True), plain)))
    v.close()

    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="ascii", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s: %d tokenizations of %d inputs, %d pieces" % (out_path, n_tok, len(cases), len(pids)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(pc.REPO_ROOT, "models", "gemma-3-270m-q4_k_m.gguf"),
                    help="GGUF file (default: models/gemma-3-270m-q4_k_m.gguf, fetched by make models)")
    ap.add_argument("--out", default=os.path.join(pc.REPO_ROOT, "tests", "data", "tokenizer-gemma3.txt"))
    ap.add_argument("--data", default=pc.shared_data_dir(),
                    help="shared test data folder (default: $KVFIT_TEST_DATA or ../shared/data)")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo llama.cpp's log")
    args = ap.parse_args()
    if not os.path.exists(args.model):
        sys.exit("model not found: %s (make models)" % args.model)
    pc.init_backend(verbose=args.verbose)
    record(args.model, args.out, args.data)


if __name__ == "__main__":
    main()
