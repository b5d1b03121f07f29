#!/usr/bin/env python3
"""Write a tiny random-weight GGUF of an architecture kvfit runs, for tests
against llama.cpp where no small trained file exists.

    python3 tools/make-tiny-model.py gemma3 --vocab ../shared/data/vocab/ggml-vocab-llama-spm.gguf -o tiny-gemma3.gguf

qwen35 also takes trained weights (--weights, the weights.npz that
tools/train-tiny-qwen35.py writes: every tensor under its GGUF name, and the
shape it was trained with) instead of random ones.

Tensor names and metadata follow llama.cpp's converter for the architecture;
the tokenizer (a real vocabulary) is copied from a vocab-only GGUF. Weight
matrices are Q8_0 (llama.cpp and kvfit compute those with the same
arithmetic), norms F32. The weights come from a seeded generator, so a seed
gives the same file byte for byte. Needs the gguf and numpy packages.
"""

import argparse
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("make-tiny-model.py needs the gguf package: python3 -m pip install gguf numpy")

# Shapes: small, but with heads of 64 (the quantized KV codecs group 32
# values), grouped-query attention, and enough layers for gemma3's pattern
# (5 local layers, then a global one).
SHAPES = {
    "gemma3": dict(n_embd=256, n_layer=6, n_head=4, n_head_kv=2, head_dim=64, n_ff=512, ctx=2048, window=24),
    "qwen2": dict(n_embd=128, n_layer=4, n_head=4, n_head_kv=2, head_dim=32, n_ff=256, ctx=2048),
    "qwen3": dict(n_embd=128, n_layer=4, n_head=4, n_head_kv=2, head_dim=64, n_ff=256, ctx=2048),
    # Qwen3.5 dense hybrid, twice over: three Gated DeltaNet layers, then a gated
    # full-attention layer (full_attention_interval 4). The delta-net layers
    # have 2 key heads and 4 value heads of 64 (state 64 x 64 per value head,
    # conv kernel 4); attention heads of 64 with a quarter of each rotated
    # (partial rotary 0.25, as Qwen3.5's configs have it) and interleaved
    # M-RoPE sections [3, 3, 2, 0] (Qwen3.5's [11, 11, 10, 0] scaled to the
    # rotated size).
    "qwen35": dict(n_embd=128, n_layer=8, n_head=4, n_head_kv=2, head_dim=64, n_ff=256, ctx=2048,
                   full_attention_interval=4, ssm_conv=4, ssm_state=64, ssm_groups=2, ssm_v_heads=4,
                   rope_partial=0.25, rope_sections=[3, 3, 2, 0]),
}


def copy_tokenizer(src: gguf.GGUFReader, w: gguf.GGUFWriter) -> int:
    """Copies every tokenizer.* field; returns the vocabulary size."""
    n_vocab = 0
    for key, field in src.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == gguf.GGUFValueType.STRING:
                vals = [bytes(field.parts[i]).decode("utf-8", errors="surrogateescape") for i in field.data]
            else:
                vals = [field.parts[i].tolist()[0] for i in field.data]
            w.add_array(key, vals)
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(vals)
        elif vtype == gguf.GGUFValueType.STRING:
            w.add_string(key, bytes(field.parts[field.data[0]]).decode("utf-8"))
        else:
            val = field.parts[field.data[0]].tolist()[0]
            {
                gguf.GGUFValueType.UINT32: w.add_uint32,
                gguf.GGUFValueType.INT32: w.add_int32,
                gguf.GGUFValueType.FLOAT32: w.add_float32,
                gguf.GGUFValueType.BOOL: w.add_bool,
                gguf.GGUFValueType.UINT64: w.add_uint64,
            }[vtype](key, val)
    if not n_vocab:
        sys.exit("the vocab file has no tokenizer.ggml.tokens")
    return n_vocab


def write_qwen35(w: gguf.GGUFWriter, s: dict, n_vocab: int, rng, trained=None) -> None:
    """qwen35 as llama.cpp's converter writes Qwen3_5ForCausalLM (Qwen3NextModel's
    metadata and tensor layout: fused attn_qkv [q | k | v] and attn_gate (z) for
    the delta-net layers; attn_q holding each head's query and output gate
    side by side for the attention layers; norm weights stored as the model
    applies them (the converter adds the 1), the delta-net's ssm_norm as is;
    ssm_a = -exp(A_log); ssm_conv1d and 1-D tensors in F32). With trained
    weights (a dict of GGUF name -> array) every tensor comes from there."""
    d, hd, nh, nkv, ff = s["n_embd"], s["head_dim"], s["n_head"], s["n_head_kv"], s["n_ff"]
    dk, hk, hv, kc = s["ssm_state"], s["ssm_groups"], s["ssm_v_heads"], s["ssm_conv"]
    dv = dk  # llama.cpp requires head_v_dim == head_k_dim (ssm.state_size)
    key_dim, value_dim = dk * hk, dv * hv
    conv_dim = 2 * key_dim + value_dim
    interval = s["full_attention_interval"]
    n_rot = int(hd * s["rope_partial"])

    w.add_context_length(s["ctx"])
    w.add_embedding_length(d)
    w.add_block_count(s["n_layer"])
    w.add_feed_forward_length(ff)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_freq_base(10000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_ssm_conv_kernel(kc)
    w.add_ssm_state_size(dk)
    w.add_ssm_group_count(hk)
    w.add_ssm_time_step_rank(hv)
    w.add_ssm_inner_size(value_dim)
    w.add_full_attention_interval(interval)
    w.add_rope_dimension_count(n_rot)
    w.add_rope_dimension_sections(s["rope_sections"])

    def take(name: str, shape) -> np.ndarray:
        x = np.asarray(trained[name], dtype=np.float32)
        if x.shape != tuple(shape):
            sys.exit(f"trained tensor {name} has shape {x.shape}, the model needs {tuple(shape)}")
        return x

    def matrix(name: str, rows: int, cols: int, scale: float) -> None:
        if trained is not None:
            x = take(name, (rows, cols))
        else:
            x = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        q = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def f32(name: str, x) -> None:
        if trained is not None:
            x = take(name, np.shape(x))
        w.add_tensor(name, np.ascontiguousarray(x, dtype=np.float32))

    def vector(name: str, n: int, mean: float, spread: float) -> None:
        f32(name, mean + spread * rng.standard_normal(n))

    # An output matrix of its own (untied, as the larger Qwen3.5 models have
    # it): with tied embeddings a random model repeats its input token, and
    # the continuations would exercise little.
    matrix("token_embd.weight", n_vocab, d, 1.0)
    vector("output_norm.weight", d, 1.0, 0.1)
    matrix("output.weight", n_vocab, d, 4 * d ** -0.5)
    for l in range(s["n_layer"]):
        p = f"blk.{l}."
        vector(p + "attn_norm.weight", d, 1.0, 0.1)
        if (l + 1) % interval != 0:
            matrix(p + "attn_qkv.weight", conv_dim, d, d ** -0.5)
            matrix(p + "attn_gate.weight", value_dim, d, d ** -0.5)
            f32(p + "ssm_conv1d.weight", rng.standard_normal((conv_dim, kc)) * 0.5)
            # dt_bias = log(expm1(dt)), dt log-uniform in [0.001, 0.1]; A in [1, 16]
            dt = np.exp(rng.uniform(np.log(0.001), np.log(0.1), hv))
            f32(p + "ssm_dt.bias", np.log(np.expm1(dt)))
            f32(p + "ssm_a", -rng.uniform(1.0, 16.0, hv))
            matrix(p + "ssm_beta.weight", hv, d, d ** -0.5)
            matrix(p + "ssm_alpha.weight", hv, d, d ** -0.5)
            vector(p + "ssm_norm.weight", dv, 1.0, 0.1)
            matrix(p + "ssm_out.weight", d, value_dim, value_dim ** -0.5)
        else:
            matrix(p + "attn_q.weight", 2 * nh * hd, d, d ** -0.5)
            matrix(p + "attn_k.weight", nkv * hd, d, d ** -0.5)
            matrix(p + "attn_v.weight", nkv * hd, d, d ** -0.5)
            matrix(p + "attn_output.weight", d, nh * hd, (nh * hd) ** -0.5)
            vector(p + "attn_q_norm.weight", hd, 1.0, 0.1)
            vector(p + "attn_k_norm.weight", hd, 1.0, 0.1)
        vector(p + "post_attention_norm.weight", d, 1.0, 0.1)
        matrix(p + "ffn_gate.weight", ff, d, d ** -0.5)
        matrix(p + "ffn_up.weight", ff, d, d ** -0.5)
        matrix(p + "ffn_down.weight", d, ff, ff ** -0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch", choices=sorted(SHAPES))
    ap.add_argument("--vocab", required=True, help="a vocab-only GGUF whose tokenizer the model takes")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--window", type=int, help="gemma3: the sliding window (default %d)" % SHAPES["gemma3"]["window"])
    ap.add_argument("--weights", help="qwen35: trained weights (weights.npz of tools/train-tiny-qwen35.py)")
    args = ap.parse_args()

    s = dict(SHAPES[args.arch])
    trained = None
    if args.weights:
        if args.arch != "qwen35":
            sys.exit("--weights is for qwen35")
        import json
        trained = dict(np.load(args.weights))
        meta = json.loads(bytes(trained.pop("__meta__")).decode())
        for key in s:
            if key in meta:
                s[key] = meta[key]
    if args.window:
        s["window"] = args.window
    rng = np.random.default_rng(args.seed)
    arch = args.arch
    w = gguf.GGUFWriter(args.out, arch)
    w.add_name(f"tiny trained {arch}" if trained is not None else f"tiny random {arch}")
    n_vocab = copy_tokenizer(gguf.GGUFReader(args.vocab), w)
    if arch == "qwen35":
        write_qwen35(w, s, n_vocab, rng, trained)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return

    d, hd, nh, nkv, ff = s["n_embd"], s["head_dim"], s["n_head"], s["n_head_kv"], s["n_ff"]
    w.add_context_length(s["ctx"])
    w.add_embedding_length(d)
    w.add_block_count(s["n_layer"])
    w.add_feed_forward_length(ff)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(1000000.0 if arch != "qwen2" else 10000.0)
    if arch == "gemma3":
        w.add_sliding_window(s["window"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)

    def matrix(name: str, rows: int, cols: int, scale: float) -> None:
        x = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        q = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def vector(name: str, n: int, mean: float, spread: float) -> None:
        w.add_tensor(name, (mean + spread * rng.standard_normal(n)).astype(np.float32))

    matrix("token_embd.weight", n_vocab, d, 0.5 if arch == "gemma3" else 1.0)
    vector("output_norm.weight", d, 1.0, 0.1)
    for l in range(s["n_layer"]):
        p = f"blk.{l}."
        vector(p + "attn_norm.weight", d, 1.0, 0.1)
        matrix(p + "attn_q.weight", nh * hd, d, d ** -0.5)
        matrix(p + "attn_k.weight", nkv * hd, d, d ** -0.5)
        matrix(p + "attn_v.weight", nkv * hd, d, d ** -0.5)
        matrix(p + "attn_output.weight", d, nh * hd, (nh * hd) ** -0.5)
        if arch == "qwen2":
            vector(p + "attn_q.bias", nh * hd, 0.0, 0.5)
            vector(p + "attn_k.bias", nkv * hd, 0.0, 0.5)
            vector(p + "attn_v.bias", nkv * hd, 0.0, 0.5)
        if arch in ("gemma3", "qwen3"):
            vector(p + "attn_q_norm.weight", hd, 1.0, 0.1)
            vector(p + "attn_k_norm.weight", hd, 1.0, 0.1)
        vector(p + "ffn_norm.weight", d, 1.0, 0.1)
        matrix(p + "ffn_gate.weight", ff, d, d ** -0.5)
        matrix(p + "ffn_up.weight", ff, d, d ** -0.5)
        matrix(p + "ffn_down.weight", d, ff, ff ** -0.5)
        if arch == "gemma3":
            vector(p + "post_attention_norm.weight", d, 1.0, 0.1)
            vector(p + "post_ffw_norm.weight", d, 1.0, 0.1)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
