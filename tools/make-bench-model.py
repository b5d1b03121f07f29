#!/usr/bin/env python3
"""Writes a benchmark GGUF with SmolLM2-135M's shapes and seeded random weights.

    tools/make-bench-model.py -o bench.gguf [--type q4_1|q4_k|q8_0] [--seed 1]

Standard library only (no numpy, no gguf package), so it runs on a machine
that has nothing but Python 3.9+: GGUF v3 is written directly. The model is
the llama architecture with SmolLM2-135M's hyperparameters (576-wide, 30
layers, 9 query heads and 3 KV heads of 64, feed-forward 1536, vocabulary
49152, RoPE base 100000, RMS epsilon 1e-5) and its tensor layout: the token
embedding in Q8_0, tied to the output (no output.weight), F32 norms, and the
layer matrices in the chosen type:

    q4_1  every layer matrix Q4_1 (as SmolLM2-135M-Instruct.Q4_1.gguf)
    q8_0  every layer matrix Q8_0
    q4_k  Q4_K where a row is a multiple of 256 values (ffn_down), Q5_0 for the
          576-wide rows, as llama.cpp's quantizer falls back for those

The tokenizer is a synthetic byte-level BPE vocabulary ("gpt2" model, the
"smollm" pre-tokenizer): three control tokens, the 256 byte tokens in GPT-2's
printable byte mapping, then merged tokens, each with its merge rule, up to
49152 tokens. Weights are uniform random codes with per-block scales chosen so
that a matrix-vector product keeps roughly unit scale; the text such a model
writes is noise, but every byte a real model's decode step reads is there.
The same seed gives the same bytes.
"""
import argparse
import random
import struct
import sys
import time

N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, HEAD_DIM, N_FF, N_VOCAB = 576, 30, 9, 3, 64, 1536, 49152
ALIGN = 32

# ggml type ids and their blocks: (values per block, bytes per block)
F32, Q4_1, Q5_0, Q8_0, Q4_K = 0, 3, 6, 8, 12
BLOCK = {F32: (1, 4), Q4_1: (32, 20), Q5_0: (32, 22), Q8_0: (32, 34), Q4_K: (256, 144)}
# general.file_type (llama_ftype) per choice
FTYPE = {"q4_1": 3, "q8_0": 7, "q4_k": 14}

# GGUF metadata value types
T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9


def f16_bits(x):
    return struct.unpack("<H", struct.pack("<e", x))[0]


def gguf_str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, value):
    out = [gguf_str(key), struct.pack("<I", vtype)]
    if vtype == T_STRING:
        out.append(gguf_str(value))
    elif vtype == T_UINT32:
        out.append(struct.pack("<I", value))
    elif vtype == T_FLOAT32:
        out.append(struct.pack("<f", value))
    elif vtype == T_BOOL:
        out.append(struct.pack("<B", 1 if value else 0))
    elif vtype == T_ARRAY:
        etype, items = value
        out.append(struct.pack("<IQ", etype, len(items)))
        if etype == T_STRING:
            out.extend(gguf_str(s) for s in items)
        elif etype == T_INT32:
            out.append(struct.pack("<%di" % len(items), *items))
        else:
            raise ValueError("array element type %d" % etype)
    else:
        raise ValueError("value type %d" % vtype)
    return b"".join(out)


def byte_unicode():
    """GPT-2's map from bytes to printable characters (the byte-level BPE alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def vocabulary(rng):
    """Tokens, token types and merges of a synthetic byte-level BPE vocabulary."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = list(specials)
    types = [3] * len(specials)  # CONTROL
    base = byte_unicode()
    tokens += base
    types += [1] * len(base)  # NORMAL
    seen = set(tokens)
    merges = []
    # Merged tokens: pairs of earlier tokens, biased towards the letters and
    # the short tokens, so that the pieces look like a real BPE vocabulary's.
    letters = [base[b] for b in range(256) if chr(b).isalnum() and b < 128] + ["\u0120"]  # Ġ: a space
    pool = list(letters)
    while len(tokens) < N_VOCAB:
        a = rng.choice(pool) if rng.random() < 0.7 else rng.choice(base)
        b = rng.choice(letters) if rng.random() < 0.8 else rng.choice(pool)
        t = a + b
        if t in seen or len(t) > 16:
            continue
        seen.add(t)
        tokens.append(t)
        types.append(1)
        merges.append(a + " " + b)
        if len(t) <= 8:
            pool.append(t)
    return tokens, types, merges


def headers_q4_1(rng, a):
    # value = d * q + m, q in 0..15: uniform on about [-a, a]
    out = []
    for _ in range(256):
        d = (2 * a / 15) * rng.uniform(0.8, 1.2)
        out.append(struct.pack("<HH", f16_bits(d), f16_bits(-7.5 * d)))
    return out


def headers_q5_0(rng, a):
    # value = d * (q - 16), q in 0..31; the 4 high-bit bytes are random payload
    return [struct.pack("<H", f16_bits((a / 16) * rng.uniform(0.8, 1.2))) for _ in range(256)]


def headers_q8_0(rng, a):
    # value = d * q, q in -128..127
    return [struct.pack("<H", f16_bits((a / 128) * rng.uniform(0.8, 1.2))) for _ in range(256)]


def pack_scales_k4(sc, mn):
    """The 12 bytes of Q4_K's eight 6-bit sub-block scales and minimums."""
    q = [0] * 12
    for j in range(4):
        q[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6)
        q[j + 4] = (mn[j] & 63) | ((mn[j + 4] >> 4) << 6)
        q[j + 8] = (sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4)
    return bytes(q)


def headers_q4_k(rng, a):
    # value = d * sc * q - dmin * m, q in 0..15, sc and m in 32..63
    out = []
    for _ in range(256):
        sc = [rng.randint(32, 63) for _ in range(8)]
        mn = [rng.randint(32, 63) for _ in range(8)]
        d = 2 * a / (15 * 47)
        dmin = a / 47
        out.append(struct.pack("<HH", f16_bits(d), f16_bits(dmin)) + pack_scales_k4(sc, mn))
    return out


HEADERS = {Q4_1: headers_q4_1, Q5_0: headers_q5_0, Q8_0: headers_q8_0, Q4_K: headers_q4_k}


def quantized(rng, gtype, n_values, a):
    """n_values random weights of type gtype as bytes: each block's header is one
    of 256 prepared ones (picked by a random byte), its codes random bytes."""
    per, size = BLOCK[gtype]
    nb = n_values // per
    heads = HEADERS[gtype](rng, a)
    hsize = len(heads[0])
    buf = bytearray(rng.randbytes(nb * size))  # the codes (and, for now, the headers)
    pick = rng.randbytes(nb)
    for k in range(hsize):  # header byte k of every block, by table lookup
        buf[k::size] = pick.translate(bytes(h[k] for h in heads))
    return buf


def tensor_list(wtype):
    ff_type = Q4_K if wtype == "q4_k" else {"q4_1": Q4_1, "q8_0": Q8_0}[wtype]
    mat_type = Q5_0 if wtype == "q4_k" else ff_type
    kv_dim = N_HEAD_KV * HEAD_DIM
    t = [("token_embd.weight", Q8_0, (N_EMBD, N_VOCAB))]
    for i in range(N_LAYER):
        p = "blk.%d." % i
        t += [
            (p + "attn_norm.weight", F32, (N_EMBD,)),
            (p + "ffn_down.weight", ff_type, (N_FF, N_EMBD)),
            (p + "ffn_gate.weight", mat_type, (N_EMBD, N_FF)),
            (p + "ffn_up.weight", mat_type, (N_EMBD, N_FF)),
            (p + "ffn_norm.weight", F32, (N_EMBD,)),
            (p + "attn_k.weight", mat_type, (N_EMBD, kv_dim)),
            (p + "attn_output.weight", mat_type, (N_EMBD, N_EMBD)),
            (p + "attn_q.weight", mat_type, (N_EMBD, N_EMBD)),
            (p + "attn_v.weight", mat_type, (N_EMBD, kv_dim)),
        ]
    t.append(("output_norm.weight", F32, (N_EMBD,)))
    return t


def nbytes(gtype, shape):
    n = 1
    for d in shape:
        n *= d
    per, size = BLOCK[gtype]
    assert shape[0] % per == 0, (gtype, shape)
    return n // per * size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--type", choices=sorted(FTYPE), default="q4_1", help="layer weight type (default q4_1)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    t0 = time.time()
    rng = random.Random(args.seed)

    tokens, types, merges = vocabulary(rng)
    meta = [
        kv("general.architecture", T_STRING, "llama"),
        kv("general.type", T_STRING, "model"),
        kv("general.name", T_STRING, "SmolLM2-135M shapes, random weights (kvfit benchmark)"),
        kv("general.size_label", T_STRING, "135M"),
        kv("general.file_type", T_UINT32, FTYPE[args.type]),
        kv("general.quantization_version", T_UINT32, 2),
        kv("general.alignment", T_UINT32, ALIGN),
        kv("llama.block_count", T_UINT32, N_LAYER),
        kv("llama.context_length", T_UINT32, 131072),
        kv("llama.embedding_length", T_UINT32, N_EMBD),
        kv("llama.feed_forward_length", T_UINT32, N_FF),
        kv("llama.attention.head_count", T_UINT32, N_HEAD),
        kv("llama.attention.head_count_kv", T_UINT32, N_HEAD_KV),
        kv("llama.rope.freq_base", T_FLOAT32, 100000.0),
        kv("llama.attention.layer_norm_rms_epsilon", T_FLOAT32, 1e-5),
        kv("llama.vocab_size", T_UINT32, N_VOCAB),
        kv("llama.rope.dimension_count", T_UINT32, HEAD_DIM),
        kv("tokenizer.ggml.model", T_STRING, "gpt2"),
        kv("tokenizer.ggml.pre", T_STRING, "smollm"),
        kv("tokenizer.ggml.tokens", T_ARRAY, (T_STRING, tokens)),
        kv("tokenizer.ggml.token_type", T_ARRAY, (T_INT32, types)),
        kv("tokenizer.ggml.merges", T_ARRAY, (T_STRING, merges)),
        kv("tokenizer.ggml.bos_token_id", T_UINT32, 1),
        kv("tokenizer.ggml.eos_token_id", T_UINT32, 2),
        kv("tokenizer.ggml.unknown_token_id", T_UINT32, 0),
        kv("tokenizer.ggml.padding_token_id", T_UINT32, 2),
        kv("tokenizer.ggml.add_bos_token", T_BOOL, False),
        kv("tokenizer.ggml.add_space_prefix", T_BOOL, False),
    ]
    tensors = tensor_list(args.type)
    infos, offset = [], 0
    for name, gtype, shape in tensors:
        infos.append(gguf_str(name) + struct.pack("<I", len(shape)) + struct.pack("<%dQ" % len(shape), *shape)
                     + struct.pack("<IQ", gtype, offset))
        offset += (nbytes(gtype, shape) + ALIGN - 1) // ALIGN * ALIGN

    with open(args.output, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)))
        for m in meta:
            f.write(m)
        for i in infos:
            f.write(i)
        f.write(b"\0" * (-f.tell() % ALIGN))
        for name, gtype, shape in tensors:
            if gtype == F32:  # norm weights: about 1
                data = struct.pack("<%df" % shape[0], *(rng.uniform(0.9, 1.1) for _ in range(shape[0])))
            else:
                a = 0.1 if name == "token_embd.weight" else 1.7 / shape[0] ** 0.5  # std ~ 1/sqrt(n_in)
                data = quantized(rng, gtype, nbytes(gtype, shape) // BLOCK[gtype][1] * BLOCK[gtype][0], a)
            f.write(data)
            f.write(b"\0" * (-len(data) % ALIGN))
        size = f.tell()
    print("%s: %s, %d tensors, %.1f MB, %.1f s" % (args.output, args.type, len(tensors), size / 1e6, time.time() - t0),
          file=sys.stderr)


if __name__ == "__main__":
    main()
