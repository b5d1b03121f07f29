#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_gguf (tests/fuzz/gguf/): tiny GGUF files
built byte by byte (no dependencies), each a few KB at most.

  empty.gguf       header only: no metadata, no tensors
  vocab-spm.gguf   a SentencePiece (llama) vocabulary of 40 tokens, no tensors
  vocab-bpe.gguf   a byte-level BPE (gpt2) vocabulary with merges, no tensors
  llama-tiny.gguf  a complete llama model: 1 layer, 8-wide, F32 and F16 weights
  aligned-64.gguf  llama-tiny with general.alignment 64 and an unused array

Usage: make_gguf_seeds.py [output folder]  (default: beside this script)
"""
import os
import random
import struct
import sys

T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
GGML_F32, GGML_F16 = 0, 1


def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == T_STR:
        return s(v)
    fmt = {T_U8: "B", T_I8: "b", T_U16: "H", T_I16: "h", T_U32: "I", T_I32: "i", T_F32: "f",
           T_BOOL: "?", T_U64: "Q", T_I64: "q", T_F64: "d"}[t]
    return struct.pack("<" + fmt, v)


def kv(key, t, v, arr_type=None):
    out = s(key) + struct.pack("<I", t)
    if t == T_ARR:
        out += struct.pack("<IQ", arr_type, len(v)) + b"".join(value(arr_type, x) for x in v)
    else:
        out += value(t, v)
    return out


def gguf(meta, tensors=(), alignment=32):
    """meta: list of kv() blobs; tensors: (name, shape, ggml type, bytes)."""
    head = struct.pack("<IIQQ", 0x46554747, 3, len(tensors), len(meta)) + b"".join(meta)
    data = b""
    infos = b""
    for name, shape, gtype, blob in tensors:
        data += b"\0" * (-len(data) % alignment)
        infos += s(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", n) for n in shape)
        infos += struct.pack("<IQ", gtype, len(data))
        data += blob
    out = head + infos
    if tensors:
        out += b"\0" * (-len(out) % alignment) + data
    return out


def spm_vocab():
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in (0x0A, 0x20, 0x41, 0xC3, 0xA9)]
    pieces = ["\u2581", "\u2581a", "\u2581the", "he", "ll", "o", "\u2581Hello", "\u2581world", "wor", "ld", "e", "h",
              "l", "r", "w", "d", "t", "a", "\u2581w", "\u2581h", "\u00e9", "<|im_start|>", "<|im_end|>", "x", "y", "z",
              "\u2581x", "\u2581y", "\u2581z", "q", "\u2581q", "!"]
    tokens += pieces
    scores = [0.0] * 8 + [-float(i) for i in range(len(pieces))]
    types = [2, 3, 3] + [6] * 5 + [1] * len(pieces)
    types[tokens.index("<|im_start|>")] = 3
    types[tokens.index("<|im_end|>")] = 3
    return [kv("tokenizer.ggml.model", T_STR, "llama"),
            kv("tokenizer.ggml.tokens", T_ARR, tokens, T_STR),
            kv("tokenizer.ggml.scores", T_ARR, scores, T_F32),
            kv("tokenizer.ggml.token_type", T_ARR, types, T_I32),
            kv("tokenizer.ggml.bos_token_id", T_U32, 1),
            kv("tokenizer.ggml.eos_token_id", T_U32, 2),
            kv("tokenizer.ggml.add_bos_token", T_BOOL, True)], len(tokens)


def bpe_vocab():
    # GPT-2's byte-to-unicode map for the printable ASCII letters is the identity;
    # a space is \u0120.
    tokens = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["\u0120", "\u0120h", "he", "ll", "\u0120he", "llo",
                                                                  "\u0120hello", "<|endoftext|>"]
    merges = ["\u0120 h", "h e", "l l", "\u0120h e", "ll o", "\u0120he llo"]
    types = [1] * (len(tokens) - 1) + [3]
    return [kv("tokenizer.ggml.model", T_STR, "gpt2"),
            kv("tokenizer.ggml.pre", T_STR, "gpt-2"),
            kv("tokenizer.ggml.tokens", T_ARR, tokens, T_STR),
            kv("tokenizer.ggml.token_type", T_ARR, types, T_I32),
            kv("tokenizer.ggml.merges", T_ARR, merges, T_STR),
            kv("tokenizer.ggml.eos_token_id", T_U32, len(tokens) - 1)], len(tokens)


def f32(rng, n):
    return struct.pack("<%df" % n, *[rng.uniform(-0.5, 0.5) for _ in range(n)])


def f16(rng, n):
    return struct.pack("<%de" % n, *[rng.uniform(-0.5, 0.5) for _ in range(n)])


def llama(alignment=32, extra=()):
    rng = random.Random(1)
    vocab, n_vocab = spm_vocab()
    d, ff, heads, kv_heads = 8, 16, 2, 1
    hd = d // heads
    meta = [kv("general.architecture", T_STR, "llama"), kv("general.name", T_STR, "tiny")] + vocab + [
        kv("llama.context_length", T_U32, 64), kv("llama.embedding_length", T_U32, d),
        kv("llama.block_count", T_U32, 1), kv("llama.feed_forward_length", T_U32, ff),
        kv("llama.attention.head_count", T_U32, heads), kv("llama.attention.head_count_kv", T_U32, kv_heads),
        kv("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5), kv("llama.rope.dimension_count", T_U32, hd)]
    if alignment != 32:
        meta.append(kv("general.alignment", T_U32, alignment))
    meta += list(extra)
    t = [("token_embd.weight", (d, n_vocab), GGML_F32, f32(rng, d * n_vocab)),
         ("output_norm.weight", (d,), GGML_F32, f32(rng, d)),
         ("output.weight", (d, n_vocab), GGML_F16, f16(rng, d * n_vocab)),
         ("blk.0.attn_norm.weight", (d,), GGML_F32, f32(rng, d)),
         ("blk.0.attn_q.weight", (d, d), GGML_F32, f32(rng, d * d)),
         ("blk.0.attn_k.weight", (d, kv_heads * hd), GGML_F32, f32(rng, d * kv_heads * hd)),
         ("blk.0.attn_v.weight", (d, kv_heads * hd), GGML_F16, f16(rng, d * kv_heads * hd)),
         ("blk.0.attn_output.weight", (d, d), GGML_F32, f32(rng, d * d)),
         ("blk.0.ffn_norm.weight", (d,), GGML_F32, f32(rng, d)),
         ("blk.0.ffn_gate.weight", (d, ff), GGML_F32, f32(rng, d * ff)),
         ("blk.0.ffn_up.weight", (d, ff), GGML_F16, f16(rng, d * ff)),
         ("blk.0.ffn_down.weight", (ff, d), GGML_F32, f32(rng, ff * d))]
    return gguf(meta, t, alignment)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "gguf")
    os.makedirs(out, exist_ok=True)
    files = {
        "empty.gguf": gguf([]),
        "vocab-spm.gguf": gguf([kv("general.architecture", T_STR, "llama")] + spm_vocab()[0]),
        "vocab-bpe.gguf": gguf([kv("general.architecture", T_STR, "gpt2")] + bpe_vocab()[0]),
        "llama-tiny.gguf": llama(),
        "aligned-64.gguf": llama(64, [kv("tiny.values", T_ARR, [1, -2, 3], T_I16)]),
    }
    for name, blob in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(blob)
        print("%s: %d bytes" % (name, len(blob)))


if __name__ == "__main__":
    main()
