#!/usr/bin/env python3
"""A plain numpy forward pass of an `rwkv7` GGUF file (llama.cpp's tensor
names), token by token in float64, written from the RWKV-7 equations; it
checks a conversion (tools/rwkv-to-gguf.py) independently of kvfit's C++.

    rwkv7-reference.py model.gguf --bytes '"in' [--expected logits.bin]

Prints the logits' summary; with --expected (raw float32 logits, as rwkv.cpp's
tests store them) it prints the difference figures and exits 1 when the sum of
differences exceeds rwkv.cpp's own FP32 bound (|sum| <= 0.001 * 1.05).
"""
import argparse
import sys

import numpy as np
import gguf


def load(path):
    r = gguf.GGUFReader(path)
    t = {}
    for ten in r.tensors:
        a = np.array(ten.data, dtype=np.float64)
        ne = [int(x) for x in ten.shape]  # ggml order
        t[ten.name] = a.reshape(tuple(reversed(ne)))
    kv = {f.name: f for f in r.fields.values()}

    def scalar(key):
        f = kv[key]
        return f.parts[f.data[0]][0]

    return t, int(scalar("rwkv7.embedding_length")), int(scalar("rwkv7.block_count")), \
        int(scalar("rwkv7.wkv.head_size")), float(scalar("rwkv7.attention.layer_norm_epsilon"))


def layer_norm(x, w, b, eps):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class RWKV7:
    def __init__(self, path):
        self.t, self.C, self.L, self.N, self.eps = load(path)
        self.H = self.C // self.N
        self.reset()

    def reset(self):
        self.att_shift = np.zeros((self.L, self.C))
        self.ffn_shift = np.zeros((self.L, self.C))
        self.S = np.zeros((self.L, self.H, self.N, self.N))  # [value i][key j]

    def step(self, token):
        t, C, H, N = self.t, self.C, self.H, self.N
        g = lambda n: t[n]  # noqa: E731
        x = g("token_embd.weight")[token]
        x = layer_norm(x, g("token_embd_norm.weight"), g("token_embd_norm.bias"), self.eps)
        v_first = None
        for l in range(self.L):
            p = f"blk.{l}."
            xa = layer_norm(x, g(p + "attn_norm.weight"), g(p + "attn_norm.bias"), self.eps)
            sx = self.att_shift[l] - xa
            self.att_shift[l] = xa
            mix = g(p + "time_mix_lerp_fused.weight").reshape(6, C)
            xr, xw, xk, xv, xaa, xg = (xa + sx * mix[i] for i in range(6))
            r = g(p + "time_mix_receptance.weight") @ xr
            w = g(p + "time_mix_w2.weight") @ np.tanh(g(p + "time_mix_w1.weight") @ xw) + g(p + "time_mix_w0.weight")
            w = np.exp(-0.606531 * sigmoid(w))  # decay in (exp(-e^-0.5), 1)
            k = g(p + "time_mix_key.weight") @ xk
            v = g(p + "time_mix_value.weight") @ xv
            if v_first is None:
                v_first = v
            else:
                gate = sigmoid(g(p + "time_mix_v2.weight") @ (g(p + "time_mix_v1.weight") @ xv) + g(p + "time_mix_v0.weight"))
                v = v + (v_first - v) * gate
            a = sigmoid(g(p + "time_mix_a2.weight") @ (g(p + "time_mix_a1.weight") @ xaa) + g(p + "time_mix_a0.weight"))
            gg = g(p + "time_mix_g2.weight") @ sigmoid(g(p + "time_mix_g1.weight") @ xg)
            kk = (k * g(p + "time_mix_k_k.weight")).reshape(H, N)
            kk = kk / np.maximum(np.linalg.norm(kk, axis=1, keepdims=True), 1e-12)
            ka = k * g(p + "time_mix_k_a.weight")
            k = k + a * ka - ka
            rh, wh, kh, vh, ah = (z.reshape(H, N) for z in (r, w, k, v, a))
            out = np.zeros((H, N))
            for h in range(H):
                S = self.S[l, h]
                # S <- S diag(w) + (S (-kk)) (kk * a)^T + v k^T ; o = S r
                sa = S @ (-kk[h])
                S = S * wh[h][None, :] + np.outer(sa, kk[h] * ah[h]) + np.outer(vh[h], kh[h])
                self.S[l, h] = S
                out[h] = S @ rh[h]
            # group norm, one group per head
            m = out.mean(1, keepdims=True)
            var = ((out - m) ** 2).mean(1, keepdims=True)
            y = ((out - m) / np.sqrt(var + 64e-5)).reshape(C) * g(p + "time_mix_ln.weight") + g(p + "time_mix_ln.bias")
            rk = (rh * kh * g(p + "time_mix_r_k.weight").reshape(H, N)).sum(1, keepdims=True)
            y = y + (vh * rk).reshape(C)
            y = y * gg
            x = x + g(p + "time_mix_output.weight") @ y
            xf = layer_norm(x, g(p + "attn_norm_2.weight"), g(p + "attn_norm_2.bias"), self.eps)
            sxf = self.ffn_shift[l] - xf
            self.ffn_shift[l] = xf
            xk = xf + sxf * g(p + "channel_mix_lerp_k.weight").reshape(C)
            kf = np.maximum(g(p + "channel_mix_key.weight") @ xk, 0.0) ** 2
            x = x + g(p + "channel_mix_value.weight") @ kf
        x = layer_norm(x, g("output_norm.weight"), g("output_norm.bias"), self.eps)
        return g("output.weight") @ x


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--bytes", default='"in', help="input text; token id = byte")
    ap.add_argument("--expected", help="raw float32 logits to compare with")
    ap.add_argument("--greedy", type=int, default=0, help="then generate this many tokens greedily")
    a = ap.parse_args()
    m = RWKV7(a.model)
    logits = None
    for b in a.bytes.encode("utf-8"):
        logits = m.step(b)
    print("argmax", int(np.argmax(logits)), "logits[:4]", logits[:4])
    first = logits
    if a.greedy:
        out = []
        for _ in range(a.greedy):
            tok = int(np.argmax(logits))
            out.append(tok)
            logits = m.step(tok)
        print("greedy", out, repr(bytes(out)))
    if a.expected:
        e = np.fromfile(a.expected, dtype=np.float32).astype(np.float64)
        d = first - e
        print(f"max |diff| {np.abs(d).max():.3g}  sum |diff| {np.abs(d).sum():.3g}  |sum diff| {abs(d.sum()):.3g}")
        if abs(d.sum()) > 0.001 * 1.05:
            sys.exit(1)


if __name__ == "__main__":
    main()
