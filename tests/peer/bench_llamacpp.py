#!/usr/bin/env python3
"""Measure llama.cpp's CPU prefill and decode speed on a GGUF (default: SmolLM2-135M Q4_1)
through llama-cpp-python, for side-by-side comparison with kvfit.

    python3 tests/peer/bench_llamacpp.py [--model M.gguf] [--text book.txt] [--threads 2]

For each prompt size (default 128 and 1024 tokens of real text):
  prefill: the whole prompt in ONE llama_decode call (n_batch = n_ubatch >= prompt size),
           on an empty KV cache; tokens/s = prompt tokens / wall time of that call;
  decode:  then --n-gen greedy tokens (argmax), one token per llama_decode call;
           tokens/s = n_gen / wall time of the loop (decode calls + fetching logits + argmax).
Each measurement is repeated --reps times (KV cache cleared each time); the median is
reported. One untimed warm-up round runs first.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402


def default_text_path():
    return os.path.join(pc.shared_data_dir(), "text", "pride_and_prejudice.txt")


def prompt_tokens(model, text_path, start_at, n_max):
    with open(text_path, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8", errors="replace")
    i = text.find(start_at) if start_at else -1
    text = text[i:] if i >= 0 else text
    # tokenize a generous slice only (enough for n_max tokens at any sane ratio)
    toks = model.tokenize(text[: n_max * 16].encode("utf-8"), 1, 0)
    if len(toks) < n_max:
        sys.exit("text too short for a %d-token prompt" % n_max)
    return toks


def run_once(ctx, prompt, n_gen):
    ctx.clear()
    t0 = time.perf_counter()
    ctx.decode(prompt)
    ctx.synchronize()
    t1 = time.perf_counter()
    logits = ctx.last_logits()
    tok = int(np.argmax(logits))
    t2 = time.perf_counter()
    for _ in range(n_gen):
        ctx.decode([tok])
        tok = int(np.argmax(ctx.last_logits()))
    t3 = time.perf_counter()
    return len(prompt) / (t1 - t0), n_gen / (t3 - t2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=pc.default_smollm2_path(), help="GGUF (default: models/SmolLM2-135M-Instruct.Q4_1.gguf)")
    ap.add_argument("--text", default=default_text_path(),
                    help="UTF-8 text for the prompts (default: $KVFIT_TEST_DATA or ../shared/data, text/pride_and_prejudice.txt)")
    ap.add_argument("--start-at", default="It is a truth universally acknowledged",
                    help="prompts start at the first occurrence of this string (skips licence headers); '' = file start")
    ap.add_argument("--threads", type=int, default=2, help="n_threads and n_threads_batch (default 2)")
    ap.add_argument("--prompt-sizes", default="128,1024", help="comma-separated prompt lengths in tokens")
    ap.add_argument("--n-gen", type=int, default=128, help="greedy tokens decoded after each prompt")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; the median is reported")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--n-gpu-layers", type=int, default=0,
                    help="layers offloaded to the GPU (-1: all; needs a CUDA build of llama-cpp-python)")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo llama.cpp's log")
    args = ap.parse_args()

    sizes = [int(x) for x in args.prompt_sizes.split(",") if x]
    n_batch = max(1024, max(sizes))
    if max(sizes) + args.n_gen + 1 > args.n_ctx:
        ap.error("n_ctx too small for the largest prompt plus n_gen")
    if not os.path.exists(args.text):
        sys.exit("text not found: %s (give --text)" % args.text)

    pc.init_backend(verbose=args.verbose)
    lcp_ver, llama_ver = pc.versions()
    model = pc.Model(args.model, args.n_gpu_layers, extra_bufts=True)  # llama.cpp at its defaults
    ctx, st = model.new_context(n_ctx=args.n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=args.threads)
    toks = prompt_tokens(model, args.text, args.start_at, max(sizes))

    # warm-up (untimed): a short prefill and a few decode steps
    run_once(ctx, toks[:min(64, len(toks))], 8)

    rows = []
    for n in sizes:
        prompt = toks[:n]
        pf, dc = [], []
        for _ in range(args.reps):
            a, b = run_once(ctx, prompt, args.n_gen)
            pf.append(a)
            dc.append(b)
        rows.append((n, statistics.median(pf), min(pf), max(pf), statistics.median(dc), min(dc), max(dc)))

    print("## llama.cpp CPU speed: %s" % os.path.basename(args.model))
    print()
    print("llama-cpp-python %s (llama.cpp %s)" % (lcp_ver, llama_ver))
    print("system: %s" % pc.system_info())
    print("settings: n_threads=%d n_threads_batch=%d n_ctx=%d n_batch=%d n_ubatch=%d flash_attn_type=%s (resolved: %s) "
          "type_k=%s type_v=%s n_gpu_layers=%d; prompt from %s; greedy decode; median of %d runs after 1 warm-up"
          % (st["n_threads"], st["n_threads_batch"], st["n_ctx"], st["n_batch"], st["n_ubatch"],
             st["flash_attn_type"], st["flash_attn_resolved"], st["type_k"], st["type_v"],
             args.n_gpu_layers, os.path.basename(args.text), args.reps))
    print()
    print("| prompt tokens | prefill tok/s (one llama_decode) | decode tok/s (%d tokens, 1 per llama_decode) |" % args.n_gen)
    print("|---:|---:|---:|")
    for n, pm, plo, phi, dm, dlo, dhi in rows:
        print("| %d | %.1f (%.1f-%.1f) | %.1f (%.1f-%.1f) |" % (n, pm, plo, phi, dm, dlo, dhi))
    print()
    print("(median, with min-max of the %d runs in parentheses)" % args.reps)

    ctx.close()
    model.close()


if __name__ == "__main__":
    main()
