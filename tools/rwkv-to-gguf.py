#!/usr/bin/env python3
"""Converts an RWKV-7 model in rwkv.cpp's file format to GGUF, with the tensor
names, shapes and metadata that llama.cpp's converter writes for its `rwkv7`
architecture, so that llama.cpp and kvfit both load the result.

    rwkv-to-gguf.py tiny-rwkv-7v0-834K-FP32.bin -o tiny-rwkv7.gguf

rwkv.cpp's format (little endian): a header of six uint32 (magic 'ggmf' =
0x67676d66, version 100 or 101, n_vocab, n_embed, n_layer, data_type), then
per tensor: int32 n_dims, int32 key length, int32 data type (0 = F32,
1 = F16), n_dims int32 dimensions in ggml order (ne0 first), the key, and the
data. Only the F32 and F16 files are converted (quantized rwkv.cpp files use
block layouts of older ggml versions). The RWKV version follows from the
tensor names: version 7 has `att.x_rwkvag` and `att.k_k`.

The vocabulary: rwkv.cpp's tiny test models are byte-level (n_vocab 256,
token id = byte value). It is written as llama.cpp's "rwkv" tokenizer model:
each token's text is the Python bytes literal of its bytes without the b''
quotes (b'\\n' -> "\\n", b'\\xff' -> "\\xff"), which llama.cpp unescapes
when it loads the vocabulary, exactly as its RWKV World conversion writes
tokens. Such a model has no BOS/EOS tokens.
"""
import argparse
import struct
import sys

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover
    sys.exit("rwkv-to-gguf.py needs the gguf Python package (pip install gguf)")

MAGIC = 0x67676D66  # 'ggmf'
TYPES = {0: np.float32, 1: np.float16}


def fail(msg):
    raise SystemExit(f"rwkv-to-gguf.py: {msg}")


def read_rwkv_cpp(path):
    """Header fields and {name: numpy array} (numpy shape = reversed ggml ne)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        fail(f"{path}: too short for an rwkv.cpp header")
    magic, version, n_vocab, n_embed, n_layer, data_type = struct.unpack_from("<6I", data, 0)
    if magic != MAGIC:
        fail(f"{path}: not an rwkv.cpp model (magic {magic:#x}, expected {MAGIC:#x})")
    if version not in (100, 101):
        fail(f"{path}: unsupported rwkv.cpp file version {version}")
    tensors = {}
    off = 24
    while off < len(data):
        if off + 12 > len(data):
            fail(f"{path}: truncated tensor header at byte {off}")
        n_dims, key_len, ttype = struct.unpack_from("<3i", data, off)
        off += 12
        if not 1 <= n_dims <= 3 or not 0 < key_len < 1024:
            fail(f"{path}: bad tensor header at byte {off - 12} (n_dims {n_dims}, key length {key_len})")
        if ttype not in TYPES:
            fail(f"{path}: tensor data type {ttype} is quantized or unknown; convert an FP32 or FP16 file")
        dims = struct.unpack_from(f"<{n_dims}i", data, off)
        off += 4 * n_dims
        name = data[off:off + key_len].decode("utf-8")
        off += key_len
        count = int(np.prod(dims))
        nbytes = count * np.dtype(TYPES[ttype]).itemsize
        if off + nbytes > len(data):
            fail(f"{path}: tensor '{name}' runs past the end of the file")
        arr = np.frombuffer(data, dtype=TYPES[ttype], count=count, offset=off).reshape(tuple(reversed(dims)))
        off += nbytes
        tensors[name] = arr
    return dict(version=version, n_vocab=n_vocab, n_embed=n_embed, n_layer=n_layer, data_type=data_type), tensors


def rwkv_version(tensors):
    if "blocks.0.att.x_rwkvag" in tensors or "blocks.0.att.k_k" in tensors:
        return 7
    if "blocks.0.att.time_maa_x" in tensors:
        return 6
    if "blocks.0.att.ln_x.weight" in tensors:
        return 5
    return 4


def token_text(b: bytes) -> str:
    # repr(b'...')[2:-1]: the escaped form llama.cpp's rwkv tokenizer unescapes.
    return repr(b)[2:-1]


def convert(src, dst, name=None):
    hdr, t = read_rwkv_cpp(src)
    ver = rwkv_version(t)
    if ver != 7:
        fail(f"{src}: RWKV version {ver}; only RWKV-7 (llama.cpp's rwkv7) is converted")
    n_embd, n_layer, n_vocab = hdr["n_embed"], hdr["n_layer"], hdr["n_vocab"]

    def get(key, ne):
        """Tensor `key`, checked against ggml shape ne (trailing ones ignored)."""
        if key not in t:
            fail(f"{src}: missing tensor '{key}'")
        a = t[key]
        got = [d for d in reversed(a.shape)]
        while len(got) > 1 and got[-1] == 1:
            got.pop()
        want = list(ne)
        while len(want) > 1 and want[-1] == 1:
            want.pop()
        if got != want:
            fail(f"{src}: tensor '{key}' has shape {list(reversed(a.shape))}, expected {list(ne)}")
        return a

    # Ranks of the low-rank (LoRA) projections, from the weights themselves.
    r_k = get("blocks.0.att.r_k", [t["blocks.0.att.r_k"].shape[-1], t["blocks.0.att.r_k"].shape[0]])
    head_size = r_k.shape[-1]
    if head_size <= 0 or n_embd % head_size:
        fail(f"{src}: head size {head_size} does not divide n_embed {n_embd}")
    lora_decay = t["blocks.0.att.w1"].shape[0]
    lora_iclr = t["blocks.0.att.a1"].shape[0]
    lora_gate = t["blocks.0.att.g1"].shape[0]
    lora_mix = t["blocks.1.att.v1"].shape[0] if n_layer > 1 and "blocks.1.att.v1" in t else lora_iclr
    n_ff = t["blocks.0.ffn.key.weight"].shape[0]

    w = gguf.GGUFWriter(dst, "rwkv7")
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name or "RWKV-7 (rwkv.cpp tiny test model)")
    w.add_context_length(1048576)  # RWKV is not context limited (as llama.cpp writes it)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_layer_norm_eps(1e-5)  # rwkv.cpp's LayerNorm epsilon
    w.add_wkv_head_size(head_size)
    w.add_decay_lora_rank(lora_decay)
    w.add_iclr_lora_rank(lora_iclr)
    w.add_value_residual_mix_lora_rank(lora_mix)
    w.add_gate_lora_rank(lora_gate)
    w.add_feed_forward_length(n_ff)
    f16 = hdr["data_type"] == 1
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    w.add_head_count(0)  # required by llama.cpp, unused

    # Byte-level vocabulary in llama.cpp's "rwkv" tokenizer form.
    if n_vocab != 256:
        fail(f"{src}: n_vocab {n_vocab}; only byte-level (256) rwkv.cpp models are supported")
    w.add_tokenizer_model("rwkv")
    w.add_token_list([token_text(bytes([i])).encode("utf-8") for i in range(256)])
    w.add_token_types([gguf.TokenType.NORMAL] * 256)

    def put(name, arr, matrix=False):
        arr = np.ascontiguousarray(arr)
        if matrix and f16:
            arr = arr.astype(np.float16)
        else:
            arr = arr.astype(np.float32)
        w.add_tensor(name, arr)

    vec = lambda a: a.reshape(-1)  # noqa: E731  (squeeze to 1-D, as llama.cpp's converter does)

    put("token_embd.weight", get("emb.weight", [n_embd, n_vocab]), matrix=True)
    put("token_embd_norm.weight", vec(get("blocks.0.ln0.weight", [n_embd])))
    put("token_embd_norm.bias", vec(get("blocks.0.ln0.bias", [n_embd])))
    for i in range(n_layer):
        s, d = f"blocks.{i}.", f"blk.{i}."
        put(d + "attn_norm.weight", vec(get(s + "ln1.weight", [n_embd])))
        put(d + "attn_norm.bias", vec(get(s + "ln1.bias", [n_embd])))
        put(d + "attn_norm_2.weight", vec(get(s + "ln2.weight", [n_embd])))
        put(d + "attn_norm_2.bias", vec(get(s + "ln2.bias", [n_embd])))
        for x, rank in (("w", lora_decay), ("a", lora_iclr), ("v", lora_mix), ("g", lora_gate)):
            if x == "v" and i == 0:
                continue
            if x != "g":
                put(d + f"time_mix_{x}0.weight", vec(get(s + f"att.{x}0", [n_embd])))
            put(d + f"time_mix_{x}1.weight", get(s + f"att.{x}1", [n_embd, rank]), matrix=True)
            put(d + f"time_mix_{x}2.weight", get(s + f"att.{x}2", [rank, n_embd]), matrix=True)
        if i == 0:
            # Layer 0 has no value-residual mix; llama.cpp's converter writes
            # copies of the a0/a1/a2 tensors under the v names (never used).
            put(d + "time_mix_v0.weight", vec(get(s + "att.a0", [n_embd])))
            put(d + "time_mix_v1.weight", get(s + "att.a1", [n_embd, lora_iclr]), matrix=True)
            put(d + "time_mix_v2.weight", get(s + "att.a2", [lora_iclr, n_embd]), matrix=True)
        # x_r, x_w, x_k, x_v, x_a, x_g in this order, as [6][1][1][n_embd].
        put(d + "time_mix_lerp_fused.weight", get(s + "att.x_rwkvag", [n_embd, 1, 6]).reshape(6, 1, 1, n_embd))
        put(d + "time_mix_k_k.weight", vec(get(s + "att.k_k", [n_embd])))
        put(d + "time_mix_k_a.weight", vec(get(s + "att.k_a", [n_embd])))
        put(d + "time_mix_r_k.weight", vec(get(s + "att.r_k", [head_size, n_embd // head_size])))
        put(d + "time_mix_receptance.weight", get(s + "att.receptance.weight", [n_embd, n_embd]), matrix=True)
        put(d + "time_mix_key.weight", get(s + "att.key.weight", [n_embd, n_embd]), matrix=True)
        put(d + "time_mix_value.weight", get(s + "att.value.weight", [n_embd, n_embd]), matrix=True)
        put(d + "time_mix_output.weight", get(s + "att.output.weight", [n_embd, n_embd]), matrix=True)
        put(d + "time_mix_ln.weight", vec(get(s + "att.ln_x.weight", [n_embd])))
        put(d + "time_mix_ln.bias", vec(get(s + "att.ln_x.bias", [n_embd])))
        put(d + "channel_mix_lerp_k.weight", vec(get(s + "ffn.x_k", [n_embd])))
        put(d + "channel_mix_key.weight", get(s + "ffn.key.weight", [n_embd, n_ff]), matrix=True)
        put(d + "channel_mix_value.weight", get(s + "ffn.value.weight", [n_ff, n_embd]), matrix=True)
    put("output_norm.weight", vec(get("ln_out.weight", [n_embd])))
    put("output_norm.bias", vec(get("ln_out.bias", [n_embd])))
    put("output.weight", get("head.weight", [n_embd, n_vocab]), matrix=True)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="rwkv.cpp model file (FP32 or FP16)")
    ap.add_argument("-o", "--out", required=True, help="GGUF file to write")
    ap.add_argument("--name", help="general.name")
    a = ap.parse_args()
    convert(a.src, a.out, a.name)


if __name__ == "__main__":
    main()
