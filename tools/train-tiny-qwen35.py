#!/usr/bin/env python3
"""Train a tiny Qwen3.5-shaped model (Gated DeltaNet hybrid: three delta-net
layers, then a gated attention layer) on a text for a few minutes on the CPU,
so that a qwen35 file's perplexity means something.

    python3 tools/train-tiny-qwen35.py --text ../shared/data/text/tinyshakespeare.txt \\
        --vocab ../shared/data/vocab/ggml-vocab-gpt-2.gguf --minutes 10 -o build/trained-qwen35
    python3 tools/make-tiny-model.py qwen35 --vocab ../shared/data/vocab/ggml-vocab-gpt-2.gguf \\
        --weights build/trained-qwen35/weights.npz -o build/trained-qwen35/tiny-qwen35-trained.gguf

The text is tokenized with llama.cpp's tokenizer of the vocabulary (the
llama-cpp-python package, vocab only), split into a training part (the first
90 %) and a held-out part (the rest, written as held-out.txt beside the
weights, for tools/kvfit-ppl). The model computes what kvfit's and llama.cpp's
qwen35 graphs compute (see src/model/qwen35.cpp): a short causal convolution
and SiLU over q|k|v, L2-normalised q and k, value head h reading key head
h % n_k_heads, the decay softplus(alpha + dt_bias) * -exp(A_log), the delta
rule S <- exp(g) S (I - beta k k^T) + beta v k^T with output S q / sqrt(d),
the gated RMSNorm; attention layers with per-head q/k RMSNorm, NeoX RoPE on
the first quarter of each head and a sigmoid output gate; SwiGLU FFNs.

Only the tokens that occur in the training part get trained embedding and
output rows; the others keep zero rows (logit 0), and the loss counts their
probability mass exactly (the softmax over the trained rows plus n_other
logits of 0), so the full-vocabulary model the GGUF holds has the loss that
was minimised. Writes weights.npz: every tensor under its GGUF name, in
GGUF's row-major shape, F32, plus the metadata make-tiny-model.py needs.
Needs jax, numpy and llama-cpp-python (PyPI).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError:
    sys.exit("train-tiny-qwen35.py needs jax: python3 -m pip install jax")

SHAPE = dict(n_embd=128, n_layer=4, n_head=4, n_head_kv=2, head_dim=64, n_ff=384, ctx=2048,
             full_attention_interval=4, ssm_conv=4, ssm_state=64, ssm_groups=2, ssm_v_heads=4,
             rope_partial=0.25, rope_sections=[3, 3, 2, 0], rope_base=10000000.0, eps=1e-6)


def tokenize(vocab: str, text: bytes) -> np.ndarray:
    try:
        import llama_cpp
    except ImportError:
        sys.exit("train-tiny-qwen35.py needs llama-cpp-python to tokenize (tests/peer/requirements.txt)")
    tok = llama_cpp.Llama(model_path=vocab, vocab_only=True, verbose=False)
    return np.array(tok.tokenize(text, add_bos=False, special=False), dtype=np.int32), tok.n_vocab()


def init_params(s, n_used, rng):
    d, hd, nh, nkv, ff = s["n_embd"], s["head_dim"], s["n_head"], s["n_head_kv"], s["n_ff"]
    dk, hk, hv, kc = s["ssm_state"], s["ssm_groups"], s["ssm_v_heads"], s["ssm_conv"]
    key_dim, value_dim = dk * hk, dk * hv
    conv_dim = 2 * key_dim + value_dim

    def mat(rows, cols, scale=None):
        return (rng.standard_normal((rows, cols)) * (scale if scale is not None else cols ** -0.5)).astype(np.float32)

    p = {"token_embd": mat(n_used, d, 1.0), "output_norm": np.ones(d, np.float32),
         "output": mat(n_used, d, d ** -0.5 * 0.5), "layers": []}
    for l in range(s["n_layer"]):
        L = {"attn_norm": np.ones(d, np.float32), "post_norm": np.ones(d, np.float32),
             "ffn_gate": mat(ff, d), "ffn_up": mat(ff, d), "ffn_down": mat(d, ff, ff ** -0.5 / np.sqrt(2 * s["n_layer"]))}
        if (l + 1) % s["full_attention_interval"]:
            dt = np.exp(rng.uniform(np.log(0.001), np.log(0.1), hv))
            L.update(qkv=mat(conv_dim, d), gate=mat(value_dim, d), conv=(rng.standard_normal((conv_dim, kc)) * 0.3).astype(np.float32),
                     dt_bias=np.log(np.expm1(dt)).astype(np.float32),
                     a_log=np.log(rng.uniform(1.0, 16.0, hv)).astype(np.float32),
                     beta=mat(hv, d), alpha=mat(hv, d), ssm_norm=np.ones(dk, np.float32),
                     ssm_out=mat(d, value_dim, value_dim ** -0.5 / np.sqrt(2 * s["n_layer"])))
        else:
            L.update(q=mat(2 * nh * hd, d), k=mat(nkv * hd, d), v=mat(nkv * hd, d),
                     q_norm=np.ones(hd, np.float32), k_norm=np.ones(hd, np.float32),
                     o=mat(d, nh * hd, (nh * hd) ** -0.5 / np.sqrt(2 * s["n_layer"])))
        p["layers"].append(L)
    return jax.tree_util.tree_map(jnp.asarray, p)


def rmsnorm(x, w, eps):
    return x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x * jax.nn.sigmoid(x)


def delta_block(s, L, xn):
    B, T, d = xn.shape
    dk, hk, hv, kc = s["ssm_state"], s["ssm_groups"], s["ssm_v_heads"], s["ssm_conv"]
    key_dim = dk * hk
    qkv = xn @ L["qkv"].T                     # [B, T, conv_dim]
    z = xn @ L["gate"].T                      # [B, T, value_dim]
    beta = jax.nn.sigmoid(xn @ L["beta"].T)   # [B, T, hv]
    g = jax.nn.softplus(xn @ L["alpha"].T + L["dt_bias"]) * -jnp.exp(L["a_log"])
    # causal depthwise convolution: out_t = sum_i w[c][i] x[t - (kc - 1) + i]
    xp = jnp.pad(qkv, ((0, 0), (kc - 1, 0), (0, 0)))
    conv = sum(xp[:, i:i + T, :] * L["conv"][:, i] for i in range(kc))
    conv = silu(conv)
    q = conv[..., :key_dim].reshape(B, T, hk, dk)
    k = conv[..., key_dim:2 * key_dim].reshape(B, T, hk, dk)
    v = conv[..., 2 * key_dim:].reshape(B, T, hv, dk)
    l2 = lambda x: x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + s["eps"])
    q, k = l2(q), l2(k)
    idx = jnp.arange(hv) % hk                 # value head h reads key head h % hk
    q, k = q[:, :, idx], k[:, :, idx]         # [B, T, hv, dk]

    def step(S, inp):                         # S: [B, hv, dv, dk]
        qt, kt, vt, gt, bt = inp
        S = S * jnp.exp(gt)[..., None, None]
        delta = (vt - jnp.einsum("bhjk,bhk->bhj", S, kt)) * bt[..., None]
        S = S + delta[..., :, None] * kt[..., None, :]
        o = jnp.einsum("bhjk,bhk->bhj", S, qt) / np.sqrt(dk)
        return S, o

    S0 = jnp.zeros((B, hv, dk, dk), xn.dtype)
    tm = lambda x: jnp.moveaxis(x, 1, 0)
    _, o = jax.lax.scan(step, S0, (tm(q), tm(k), tm(v), tm(g), tm(beta)))
    o = jnp.moveaxis(o, 0, 1)                 # [B, T, hv, dk]
    o = rmsnorm(o, L["ssm_norm"], s["eps"]) * silu(z.reshape(B, T, hv, dk))
    return o.reshape(B, T, hv * dk) @ L["ssm_out"].T


def attention_block(s, L, xn):
    B, T, d = xn.shape
    nh, nkv, hd = s["n_head"], s["n_head_kv"], s["head_dim"]
    qf = (xn @ L["q"].T).reshape(B, T, nh, 2 * hd)
    q, gate = qf[..., :hd], qf[..., hd:]
    k = (xn @ L["k"].T).reshape(B, T, nkv, hd)
    v = (xn @ L["v"].T).reshape(B, T, nkv, hd)
    q = rmsnorm(q, L["q_norm"], s["eps"])
    k = rmsnorm(k, L["k_norm"], s["eps"])
    n_rot = int(hd * s["rope_partial"])
    half = n_rot // 2
    inv = s["rope_base"] ** (-2.0 * np.arange(half) / n_rot)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos, sin = jnp.asarray(np.cos(ang), xn.dtype)[None, :, None, :], jnp.asarray(np.sin(ang), xn.dtype)[None, :, None, :]

    def rope(x):
        x0, x1, rest = x[..., :half], x[..., half:n_rot], x[..., n_rot:]
        return jnp.concatenate([x0 * cos - x1 * sin, x0 * sin + x1 * cos, rest], axis=-1)

    q, k = rope(q), rope(k)
    rep = nh // nkv
    k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)   # head h reads kv head h // rep
    att = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd)
    mask = np.tril(np.ones((T, T), bool))
    att = jnp.where(mask, att, -1e30)
    att = jax.nn.softmax(att, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", att, v) * jax.nn.sigmoid(gate)
    return out.reshape(B, T, nh * hd) @ L["o"].T


def loss_fn(p, s, x, y, log_other):
    h = p["token_embd"][x]
    for l, L in enumerate(p["layers"]):
        xn = rmsnorm(h, L["attn_norm"], s["eps"])
        h = h + (delta_block(s, L, xn) if (l + 1) % s["full_attention_interval"] else attention_block(s, L, xn))
        xn = rmsnorm(h, L["post_norm"], s["eps"])
        h = h + (silu(xn @ L["ffn_gate"].T) * (xn @ L["ffn_up"].T)) @ L["ffn_down"].T
    h = rmsnorm(h, p["output_norm"], s["eps"])
    logits = h @ p["output"].T
    # the untrained tokens: log_other = log(n_other) of logits 0 each
    lse = jnp.logaddexp(jax.nn.logsumexp(logits, axis=-1), log_other)
    tgt = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    return jnp.mean(lse - tgt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", required=True)
    ap.add_argument("--vocab", required=True, help="the vocab-only GGUF the model will carry")
    ap.add_argument("-o", "--out", required=True, help="output folder (weights.npz, held-out.txt, log.json)")
    ap.add_argument("--minutes", type=float, default=10.0, help="training time (wall clock)")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    s = dict(SHAPE)
    os.makedirs(args.out, exist_ok=True)

    text = open(args.text, "rb").read()
    cut = int(len(text) * 0.9)
    cut = text.rfind(b"\n", 0, cut) + 1          # the held-out part starts at a line
    with open(os.path.join(args.out, "held-out.txt"), "wb") as f:
        f.write(text[cut:])
    ids, n_vocab = tokenize(args.vocab, text[:cut])
    used = np.unique(ids)
    remap = np.full(n_vocab, -1, np.int64)
    remap[used] = np.arange(len(used))
    data = remap[ids].astype(np.int32)
    n_other = n_vocab - len(used)
    log_other = float(np.log(n_other)) if n_other else -1e30
    print(f"{len(ids)} training tokens, {len(used)} distinct of {n_vocab}", flush=True)

    rng = np.random.default_rng(args.seed)
    p = init_params(s, len(used), rng)
    m = jax.tree_util.tree_map(jnp.zeros_like, p)
    v = jax.tree_util.tree_map(jnp.zeros_like, p)
    b1, b2, wd = 0.9, 0.98, 0.01

    @jax.jit
    def train_step(p, m, v, x, y, lr, t):
        loss, g = jax.value_and_grad(loss_fn)(p, s, x, y, log_other)
        gn = jnp.sqrt(sum(jnp.sum(a * a) for a in jax.tree_util.tree_leaves(g)))
        g = jax.tree_util.tree_map(lambda a: a * jnp.minimum(1.0, 1.0 / (gn + 1e-6)), g)
        m = jax.tree_util.tree_map(lambda a, b: b1 * a + (1 - b1) * b, m, g)
        v = jax.tree_util.tree_map(lambda a, b: b2 * a + (1 - b2) * b * b, v, g)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        p = jax.tree_util.tree_map(lambda w, a, b: w - lr * (a / c1 / (jnp.sqrt(b / c2) + 1e-8) + wd * w * (w.ndim == 2)),
                                   p, m, v)
        return p, m, v, loss

    T, B = args.seq, args.batch
    t0 = time.time()
    budget = args.minutes * 60
    step, log = 0, []
    while True:
        el = time.time() - t0
        if el > budget:
            break
        starts = rng.integers(0, len(data) - T - 1, B)
        x = np.stack([data[i:i + T] for i in starts])
        y = np.stack([data[i + 1:i + T + 1] for i in starts])
        warm = min(1.0, (step + 1) / 30)
        lr = args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, el / budget))))
        p, m, v, loss = train_step(p, m, v, x, y, jnp.float32(lr), jnp.float32(step + 1))
        step += 1
        if step % 10 == 0 or step == 1:
            loss = float(loss)
            log.append(dict(step=step, seconds=round(time.time() - t0, 1), loss=loss))
            print(f"step {step} {time.time() - t0:.0f}s loss {loss:.3f} ppl {np.exp(loss):.1f}", flush=True)

    # GGUF names and shapes; rows of the untrained tokens are zero
    d = s["n_embd"]
    out = {}
    full = lambda a: np.zeros((n_vocab, d), np.float32)
    emb, outw = full(None), full(None)
    emb[used] = np.asarray(p["token_embd"])
    outw[used] = np.asarray(p["output"])
    out["token_embd.weight"] = emb
    out["output.weight"] = outw
    out["output_norm.weight"] = np.asarray(p["output_norm"])
    names = dict(attn_norm="attn_norm.weight", post_norm="post_attention_norm.weight", ffn_gate="ffn_gate.weight",
                 ffn_up="ffn_up.weight", ffn_down="ffn_down.weight", qkv="attn_qkv.weight", gate="attn_gate.weight",
                 conv="ssm_conv1d.weight", dt_bias="ssm_dt.bias", beta="ssm_beta.weight", alpha="ssm_alpha.weight",
                 ssm_norm="ssm_norm.weight", ssm_out="ssm_out.weight", q="attn_q.weight", k="attn_k.weight",
                 v="attn_v.weight", q_norm="attn_q_norm.weight", k_norm="attn_k_norm.weight", o="attn_output.weight")
    for l, L in enumerate(p["layers"]):
        for key, val in L.items():
            val = np.asarray(val, np.float32)
            if key == "a_log":
                out[f"blk.{l}.ssm_a"] = -np.exp(val)
            else:
                out[f"blk.{l}.{names[key]}"] = val
    meta = {k: s[k] for k in s}
    meta.update(steps=step, seconds=round(time.time() - t0, 1), train_tokens=int(len(ids)), trained_tokens=int(len(used)),
                final_loss=log[-1]["loss"] if log else None, text=os.path.basename(args.text))
    out["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(os.path.join(args.out, "weights.npz"), **out)
    with open(os.path.join(args.out, "log.json"), "w") as f:
        json.dump(dict(meta=meta, log=log), f, indent=1)
    print(f"{step} steps in {time.time() - t0:.0f}s; wrote {args.out}/weights.npz and held-out.txt")


if __name__ == "__main__":
    main()
