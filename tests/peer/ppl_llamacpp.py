#!/usr/bin/env python3
"""Perplexity of llama.cpp over the first N tokens of a text with a quantized KV cache,
for comparison with `kvfit-ppl --dense --ctx N --codec C` on the same GGUF and text.

    python3 tests/peer/ppl_llamacpp.py [--model M.gguf] [--text book.txt] [--tokens 8192]
                                       [--kv f16,q8_0,q4_0] [--threads 2]

The protocol is kvfit-ppl's dense mode: the whole text is tokenized once with the model's
special tokens (BOS if it asks for one), the first --tokens tokens go through one context
of that size in batches of 512, and every token but the first is scored by
-log p(token | all tokens before it). llama.cpp quantizes V only with flash attention,
so flash attention is on for every row (f16 included, so rows differ only in KV type).
"""

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402
from peer_common import L  # noqa: E402

KV_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}


def log_softmax_nll(logits, target):
    m = float(np.max(logits))
    return m + math.log(float(np.sum(np.exp(logits - m)))) - float(logits[target])


def perplexity(model, tokens, kv, threads, batch=512):
    cp = L.llama_context_default_params()
    cp.n_ctx = len(tokens)
    cp.n_batch = batch
    cp.n_ubatch = batch
    cp.n_seq_max = 1
    cp.n_threads = threads
    cp.n_threads_batch = threads
    cp.flash_attn_type = 1
    cp.type_k = KV_TYPES[kv]
    cp.type_v = KV_TYPES[kv]
    ctx = L.llama_init_from_model(model.model, cp)
    if not ctx:
        sys.exit("llama.cpp refused a context with KV type %s" % kv)
    b = L.llama_batch_init(batch, 0, 1)
    nll, t0 = 0.0, time.perf_counter()
    try:
        for start in range(0, len(tokens), batch):
            chunk = tokens[start:start + batch]
            b.n_tokens = len(chunk)
            for i, tok in enumerate(chunk):
                b.token[i] = tok
                b.pos[i] = start + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = 1
            rc = L.llama_decode(ctx, b)
            if rc != 0:
                raise RuntimeError("llama_decode returned %d" % rc)
            for i in range(len(chunk)):
                nxt = start + i + 1
                if nxt >= len(tokens):
                    break
                p = L.llama_get_logits_ith(ctx, i)
                logits = np.ctypeslib.as_array(p, shape=(model.n_vocab,)).astype(np.float64)
                nll += log_softmax_nll(logits, tokens[nxt])
    finally:
        L.llama_batch_free(b)
        L.llama_free(ctx)
    n_scored = len(tokens) - 1
    return math.exp(nll / n_scored), n_scored, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=pc.default_smollm2_path())
    ap.add_argument("--text", default=os.path.join(pc.shared_data_dir(), "text", "pride_and_prejudice.txt"))
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--kv", default="f16,q8_0,q4_0")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    pc.init_backend()
    model = pc.Model(args.model)
    with open(args.text, "rb") as f:
        tokens = model.tokenize(f.read(), True, False)[: args.tokens]
    if len(tokens) < args.tokens:
        sys.exit("the text has only %d tokens" % len(tokens))
    lib, ggml = pc.versions()
    print("# llama-cpp-python %s, %s; %s" % (lib, ggml, os.path.basename(args.model)))
    print("# dense context of %d tokens, flash attention on, %d threads" % (len(tokens), args.threads))
    print("kv_type,ppl,scored_tokens,seconds")
    base = None
    for kv in args.kv.split(","):
        ppl, n, secs = perplexity(model, tokens, kv, args.threads)
        base = base or ppl
        print("%s,%.4f,%d,%.1f  # %+.2f%% vs %s" % (kv, ppl, n, secs, 100.0 * (ppl / base - 1.0), args.kv.split(",")[0]))
        sys.stdout.flush()
    model.close()


if __name__ == "__main__":
    main()
