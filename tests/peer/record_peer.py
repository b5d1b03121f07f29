#!/usr/bin/env python3
"""Record llama.cpp reference data (tokenization, greedy generation, first-step top-5
logits) for kvfit's peer tests, using llama.cpp through llama-cpp-python.

    python3 tests/peer/record_peer.py                      # both models, default paths
    python3 tests/peer/record_peer.py smollm2 --model path/to/SmolLM2-135M-Instruct.Q4_1.gguf
    python3 tests/peer/record_peer.py stories260K --out peer-stories260K.new.txt
    python3 tests/peer/record_peer.py tiny-qwen2 --model build/tests/tiny/tiny-qwen2.gguf

Writes tests/data/peer-<name>.txt; the line format is described in tests/peer/README.md
and in the comment header of each file.
"""

import argparse
import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402

N_GEN = 64
N_THREADS = 2

# --------------------------------------------------------------------------- tokenizer strings

TOK_STRINGS = [
    "",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\n\n",
    " \n \n",
    "Hello world",
    " Hello world",
    "Hello world ",
    "  leading and trailing  ",
    "Hello\tworld\nnew line\r\nwindows line",
    "1234567890",
    "3.14159",
    "2024-11-23",
    "12 345 6789 0.5e-10 1,000,000",
    "Hello, world! How are you? (fine) [ok] {yes}; \"quoted\" 'single' ...",
    "!!!???...---___***~~~@@@###",
    "\U0001F600",
    "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 family",
    "\U0001F1EB\U0001F1F7\U0001F1EF\U0001F1F5 flags",
    "\u2764\uFE0F and \U0001F44D\U0001F3FD",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5\u3002",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u30ab\u30bf\u30ab\u30ca",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9",
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301",
    "\u00d1and\u00fa Stra\u00dfe \u00d8resund \u00c5\u00c4\u00d6",
    "\u210c\U0001D522\U0001D529\U0001D529\U0001D52C \U0001D7D9\U0001D7DA\U0001D7DB",
    "non\u00a0breaking\u00a0space and zero\u200bwidth",
    "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n    return a + b\n\n\n"
    "if __name__ == '__main__':\n\tprint(add(1, 2))\n",
    "int main(void) {\n    for (int i = 0; i < 10; ++i) {\n        printf(\"%d\\n\", i);\n"
    "    }\n    return 0;\n}\n",
    "https://www.example.com/path/to/page?query=1&lang=en#section",
    "email: john.doe@example.org, ftp://files.example.net/a_b-c.tar.gz",
    "HeLLo WoRLD ThIs Is MiXeD CaSe, ALLCAPS and lowercase",
    "don't I'VE we're they'll she's it'd you'RE O'Neil",
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, there was a little girl named Lily.",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>Hello<|endoftext|>",
    "< |im_start|> and <|im_start| and <|im_start|>>",
    "<s>Hello</s> <unk>",
]


def has_markup(s):
    return "<" in s


# --------------------------------------------------------------------------- generation prompts

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(user, system=SMOL_SYSTEM):
    """SmolLM2-Instruct's chat template rendered for one user turn plus the generation prompt."""
    return ("<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n"
            "<|im_start|>assistant\n" % (system, user))


def gemma_turn(user):
    """Gemma's chat format for one user turn plus the generation prompt (the BOS comes from
    tokenization with add_special; the GGUF carries no template of its own)."""
    return "<start_of_turn>user\n%s<end_of_turn>\n<start_of_turn>model\n" % user


# The instruction models' prompts: four raw ones, and three user turns in the
# model's own chat format.
CHAT_MESSAGES = {
    "chat_capital": "What is the capital of France?",
    "chat_haiku": "Write a haiku about autumn.",
    "chat_hash": "Explain what a hash table is in one paragraph.",
}


def instruct_gen(turn):
    return [
        ("capital", 0, "The capital of France is"),
        ("fibonacci", 0, "def fibonacci(n):"),
        ("poem_sea", 0, "Here is a short poem about the sea:"),
        ("counting", 0, "1, 2, 3, 4, 5,"),
    ] + [(case, 1, turn(user)) for case, user in CHAT_MESSAGES.items()]


def tiny_path(name):
    """Tiny random-weight models are generated (tools/make-tiny-model.py) into the build
    tree by ctest's tiny_models fixture; $KVFIT_TINY_DIR overrides where they are."""
    d = os.environ.get("KVFIT_TINY_DIR") or os.path.join(pc.REPO_ROOT, "build", "tests", "tiny")
    return lambda: os.path.join(d, name + ".gguf")


# Prompts for the tiny random-weight models: what they continue is noise, but
# every path of the forward pass runs, and llama.cpp's logits are the reference.
TINY_GEN = [
    ("capital", 0, "The capital of France is"),
    ("story", 0, "Once upon a time, in a town by the sea, there lived an old clockmaker who"),
    ("code", 0, "def fibonacci(n):"),
    ("numbers", 0, "1, 2, 3, 4, 5,"),
]


MODELS = {
    "stories260K": {
        "path": pc.default_stories_path,
        "n_ctx": 512,
        "gen": [
            ("once", 0, "Once upon a time"),
            ("lily_tom", 0, "Lily and Tom went to the park"),
            ("little_dog", 0, "The little dog"),
            ("sue_ball", 0, "One day, a girl named Sue found a big red ball."),
            ("tim_sad", 0, "Tim was sad because"),
            ("bird_tree", 0, "A bird sat on the tree and"),
        ],
    },
    "smollm2": {
        "path": pc.default_smollm2_path,
        "n_ctx": 2048,
        "gen": instruct_gen(chatml),
        "chat_messages": CHAT_MESSAGES,
    },
    "gemma3": {
        "path": lambda: os.path.join(pc.REPO_ROOT, "models", "gemma-3-270m-q4_k_m.gguf"),
        "n_ctx": 2048,
        "gen": instruct_gen(gemma_turn),
    },
    # Sliding window 24: the local layers' ring wraps within the prompt and generation.
    "tiny-gemma3": {"path": tiny_path("tiny-gemma3"), "n_ctx": 512, "gen": TINY_GEN},
    "tiny-qwen2": {"path": tiny_path("tiny-qwen2"), "n_ctx": 512, "gen": TINY_GEN},
    "tiny-qwen3": {"path": tiny_path("tiny-qwen3"), "n_ctx": 512, "gen": TINY_GEN},
    # rwkv.cpp's tiny trained RWKV-7 (byte-level, Shakespeare-like text),
    # converted by tools/rwkv-to-gguf.py (ctest's rwkv7_model fixture).
    "tiny-rwkv7": {"path": tiny_path("tiny-rwkv7-834K"), "n_ctx": 512, "gen": [
        ("in", 0, '"in'),
        ("citizen", 0, "First Citizen:\nBefore we proceed any further, hear me speak.\n"),
        ("king", 0, "KING RICHARD III:\n"),
        ("love", 0, "O, my love, "),
    ]},
    # Gated DeltaNet hybrid: llama.cpp runs its recurrent layers with the fused
    # gated_delta_net op, one token after another, in prefill and decode alike.
    "tiny-qwen35": {"path": tiny_path("tiny-qwen35"), "n_ctx": 512, "gen": TINY_GEN},
}


# --------------------------------------------------------------------------- helpers

def hexs(s):
    """Text field: UTF-8 bytes as lowercase hex; '-' stands for the empty string."""
    b = s.encode("utf-8")
    return b.hex() if b else "-"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def argmax_lowest(logits):
    # np.argmax returns the first (lowest) index among equal maxima.
    return int(np.argmax(logits))


def top5(logits):
    # stable sort on -logit: ties keep ascending token id order
    order = np.argsort(-logits, kind="stable")[:5]
    return [(int(i), float(logits[i])) for i in order]


def greedy(ctx, prompt_ids, n_gen):
    ctx.clear()
    ctx.decode(prompt_ids)
    logits = ctx.last_logits()
    first_top5 = top5(logits)
    out = []
    margin = (float("inf"), -1)
    for step in range(n_gen):
        tok = argmax_lowest(logits)
        out.append(tok)
        two = np.sort(logits)[-2:]
        margin = min(margin, (float(two[1] - two[0]), step))
        if step + 1 == n_gen:
            break
        ctx.decode([tok])
        logits = ctx.last_logits()
    return out, first_top5, margin


def check_chat_template(model, spec):
    """The chat prompts must be exactly what the GGUF's own template renders (jinja2, as HF does)."""
    tmpl = pc.L.llama_model_chat_template(model.model, None)
    if not tmpl or not spec.get("chat_messages"):
        return "not checked"
    import jinja2
    env = jinja2.Environment(trim_blocks=False, lstrip_blocks=False)
    t = env.from_string(tmpl.decode("utf-8"))
    for case, user in spec["chat_messages"].items():
        rendered = t.render(messages=[{"role": "user", "content": user}], add_generation_prompt=True)
        text = [g[2] for g in spec["gen"] if g[0] == case][0]
        if rendered != text:
            sys.exit("chat prompt %s differs from the GGUF template rendering:\n%r\n%r"
                     % (case, rendered, text))
    return "checked against the GGUF's tokenizer.chat_template (jinja2)"


def record(name, model_path, out_path, verbose=False, flash_attn=None):
    spec = MODELS[name]
    n_ctx = spec["n_ctx"]
    lcp_ver, llama_ver = pc.versions()
    model = pc.Model(model_path)
    template_note = check_chat_template(model, spec)
    ctx, settings = model.new_context(n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=N_THREADS,
                                      flash_attn=flash_attn)

    lines = []
    add = lines.append
    add("# generated by tests/peer/record_peer.py with llama-cpp-python %s (llama.cpp %s)"
        % (lcp_ver, llama_ver))
    add("# model: %s (file name only; identified by the sha256 below)" % os.path.basename(model_path))
    add("# settings: n_ctx=%d n_batch=%d n_ubatch=%d n_threads=%d n_threads_batch=%d "
        "flash_attn_type=%s (resolved: %s) type_k=%s type_v=%s n_gpu_layers=0 (CPU)"
        % (settings["n_ctx"], settings["n_batch"], settings["n_ubatch"], settings["n_threads"],
           settings["n_threads_batch"], settings["flash_attn_type"],
           settings["flash_attn_resolved"], settings["type_k"], settings["type_v"]))
    add("# format: one record per line, fields separated by single spaces; text fields are the")
    add("#   UTF-8 bytes hex-encoded ('-' = empty string); '#' lines are comments")
    add("#   meta <key> <value>")
    add("#   tok <add_special 0|1> <parse_special 0|1> <hex text> <n> <id>...")
    add("#   gen <case> <parse_special 0|1> <hex prompt> <n_prompt> <prompt ids...> <n_gen> <ids...>")
    add("#   top5 <case> <id>:<logit %.6f> x5   (logits after the prompt, i.e. of the first generated token)")
    add("# gen: prompts tokenized with add_special=1 (BOS only if the GGUF says add_bos); the prompt is")
    add("#   evaluated as one llama_decode batch, then greedy argmax (lowest id on ties), one token per")
    add("#   llama_decode. Exactly %d tokens are generated: EOS does not stop generation." % N_GEN)
    if spec.get("chat_messages"):
        add("# chat_* cases: single user turn rendered with the model's ChatML template plus the generation")
        add("#   prompt, tokenized with parse_special=1 (%s)" % template_note)
    add("meta sha256 %s" % sha256_file(model_path))
    add("meta n_vocab %d" % model.n_vocab)
    add("meta bos %d" % model.bos)
    add("meta eos %d" % model.eos)
    add("meta add_bos %d" % int(model.add_bos))

    for s in TOK_STRINGS:
        b = s.encode("utf-8")
        for parse_special in ((0, 1) if has_markup(s) else (0,)):
            for add_special in (0, 1):
                ids = model.tokenize(b, add_special, parse_special)
                add("tok %d %d %s %d%s" % (add_special, parse_special, hexs(s), len(ids),
                                           "".join(" %d" % i for i in ids)))

    gen_lines, top_lines = [], []
    for case, parse_special, text in spec["gen"]:
        prompt = model.tokenize(text.encode("utf-8"), 1, parse_special)
        if len(prompt) + N_GEN > n_ctx:
            sys.exit("prompt too long for n_ctx")
        out, t5, margin = greedy(ctx, prompt, N_GEN)
        if model.eos in out:
            gen_lines.append("# %s: EOS (%d) generated at step %d; argmax decoding continued past it"
                             % (case, model.eos, out.index(model.eos)))
        gen_lines.append("# %s continuation: %s" % (case, ascii(model.detok(out))))
        gen_lines.append("# %s: smallest top1-top2 logit gap over the %d steps: %.6f at step %d"
                         % (case, N_GEN, margin[0], margin[1]))
        gen_lines.append("gen %s %d %s %d%s %d%s" % (
            case, parse_special, hexs(text), len(prompt), "".join(" %d" % i for i in prompt),
            len(out), "".join(" %d" % i for i in out)))
        top_lines.append("top5 %s %s" % (case, " ".join("%d:%.6f" % (i, v) for i, v in t5)))
        if verbose:
            print("[%s] %s -> %s" % (name, case, ascii(model.detok(out))), file=sys.stderr)
    lines.extend(gen_lines)
    lines.extend(top_lines)

    ctx.close()
    model.close()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="ascii", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s (%d lines; flash attention %s -> %s)"
          % (out_path, len(lines), settings["flash_attn_type"], settings["flash_attn_resolved"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help="which models (default: all): %s" % ", ".join(sorted(MODELS)))
    ap.add_argument("--model", help="GGUF path (only with a single name)")
    ap.add_argument("--out", help="output file (only with a single name); default tests/data/peer-<name>.txt")
    ap.add_argument("--flash-attn", choices=("auto", "on", "off"),
                    help="override llama.cpp's flash_attn_type (default: library default, 'auto'); "
                         "the committed files use the default")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo llama.cpp's log and the continuations")
    args = ap.parse_args()
    names = args.names or sorted(MODELS)
    for n in names:
        if n not in MODELS:
            ap.error("unknown model name %r (choose from %s)" % (n, ", ".join(sorted(MODELS))))
    if (args.model or args.out) and len(names) != 1:
        ap.error("--model/--out need exactly one model name")
    pc.reference_arithmetic()
    pc.init_backend(verbose=args.verbose)
    for name in names:
        path = args.model or MODELS[name]["path"]()
        out = args.out or os.path.join(pc.REPO_ROOT, "tests", "data", "peer-%s.txt" % name)
        record(name, path, out, verbose=args.verbose, flash_attn=args.flash_attn)


if __name__ == "__main__":
    main()
