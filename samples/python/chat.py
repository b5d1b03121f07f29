#!/usr/bin/env python3
"""kvfit-chat in Python: the twin of samples/chat.c, a command-line chat that
streams tokens as the model produces them.

    chat.py -m model.gguf [-s SYSTEM] [-p PROMPT] [--temp T] [--top-k K] [--top-p P]
            [--min-p P] [--repeat-penalty R] [--seed N] [-t THREADS] [-c N_CTX]
            [-n MAX_TOKENS] [--template NAME] [--budget 64MiB] [--plan] [-v]

Each turn renders the whole conversation with the chat template and feeds the
session only the part it has not seen, so earlier turns are never recomputed.
With --budget the session streams inside a fixed KV memory. The kvfit package
is imported from bindings/python when it is not installed.
"""
import argparse
import os
import re
import sys

try:
    import kvfit
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bindings", "python"))
    import kvfit


def parse_size(text):
    """"64MiB", "512K", "1.5GiB" or plain bytes (K/M/G are 1024-based), as the C tools read them."""
    m = re.fullmatch(r"(\d+)(?:\.(\d+))?(K|KiB|M|MiB|G|GiB)?", text)
    if not m or (m.group(2) and not m.group(3)):
        raise argparse.ArgumentTypeError("bad size '%s'" % text)
    scale = {None: 1, "K": 1 << 10, "KiB": 1 << 10, "M": 1 << 20, "MiB": 1 << 20, "G": 1 << 30, "GiB": 1 << 30}
    fraction = m.group(2) or "0"
    value = int(m.group(1)) * scale[m.group(3)] + int(fraction) * scale[m.group(3)] // 10 ** len(fraction)
    if value <= 0:
        raise argparse.ArgumentTypeError("bad size '%s'" % text)
    return value


def print_plan(session):
    plan = session.plan()
    print("plan: %d layers, %.2f MiB of KV state" % (len(plan.layers), plan.total_bytes / 1048576), file=sys.stderr)
    first = 0
    while first < len(plan.layers):
        layer = plan.layers[first]
        last = first
        while last + 1 < len(plan.layers) and (plan.layers[last + 1].codec, plan.layers[last + 1].n_window,
                                               plan.layers[last + 1].n_sink) == (layer.codec, layer.n_window,
                                                                                 layer.n_sink):
            last += 1
        print("  layers %d-%d: %s, %s, %d sinks + %d window, %.2f MiB each"
              % (first, last, layer.kind, layer.codec, layer.n_sink, layer.n_window, layer.bytes / 1048576),
              file=sys.stderr)
        first = last + 1


def main():
    ap = argparse.ArgumentParser(description="Chat with a GGUF model through kvfit. Without -p it reads one "
                                             "user message per line from stdin until EOF.")
    ap.add_argument("-m", "--model", required=True, help="GGUF model file")
    ap.add_argument("-s", "--system", help="system prompt")
    ap.add_argument("-p", "--prompt", help="one-shot prompt")
    ap.add_argument("--template", help="chat template: chatml, llama3, llama2, gemma (default: the model's)")
    ap.add_argument("--temp", type=float, default=0.7, help="temperature (<= 0: greedy)")
    ap.add_argument("--top-k", type=int, help="top-k (<= 0: off)")
    ap.add_argument("--top-p", type=float, help="top-p (>= 1: off)")
    ap.add_argument("--min-p", type=float, help="min-p (<= 0: off)")
    ap.add_argument("--repeat-penalty", type=float, default=1.1, help="repetition penalty (1: off)")
    ap.add_argument("--seed", type=int, help="sampling seed")
    ap.add_argument("-t", "--threads", type=int, help="CPU threads (default: all cores)")
    ap.add_argument("-c", "--ctx", type=int, default=4096, help="context the session holds or aims to cover")
    ap.add_argument("-n", "--max-tokens", type=int, default=512, help="maximum tokens per reply")
    ap.add_argument("--budget", type=parse_size, default=0, help="fixed KV budget, e.g. 64MiB (streaming session)")
    ap.add_argument("--plan", action="store_true", help="print the session's plan")
    ap.add_argument("-v", action="store_true", help="print kvfit's log")
    args = ap.parse_args()

    if args.v:
        kvfit.set_log_callback(lambda level, message: print("[kvfit]", message, file=sys.stderr))
    try:
        chat(args)
    except kvfit.KvfitError as e:
        print("chat.py: %s" % e, file=sys.stderr)
        return 1
    return 0


def chat(args):
    with kvfit.Model(args.model) as model, \
            model.session(n_ctx=args.ctx, n_threads=args.threads, kv_budget_bytes=args.budget) as session, \
            kvfit.Sampler(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                          repeat_penalty=args.repeat_penalty, seed=args.seed) as sampler:
        if args.plan:
            print_plan(session)
        template = args.template or model.chat_template
        if args.prompt is None:
            print("kvfit %s, template %s. Type a message, Ctrl-D to quit." % (kvfit.version(), template),
                  file=sys.stderr)
        base = [("system", args.system)] if args.system else []
        history = list(base)
        seen = 0  # bytes of the rendered conversation already in the session
        while True:
            user = args.prompt
            if user is None:
                print("> ", end="", file=sys.stderr, flush=True)
                line = sys.stdin.readline()
                if not line:
                    return
                user = line.rstrip("\n")
                if not user.strip():
                    continue
            history.append(("user", user))
            text = model.apply_chat_template(history, template=template).encode()
            # If the template re-rendered an earlier turn differently, start the session over.
            if seen > len(text):
                session.reset()
                seen = 0
            tokens = model.tokenize(text[seen:].decode("utf-8", "surrogateescape"), add_special=seen == 0,
                                    parse_special=True)
            reply = []

            def on_token(token, piece):
                reply.append(piece)
                print(piece, end="", flush=True)
                return True
            try:
                result = session.generate(tokens, sampler=sampler, max_tokens=args.max_tokens, on_token=on_token)
            except kvfit.ContextFullError:
                result = None
            print()
            if result is None or result.stop_reason == kvfit.StopReason.CONTEXT_FULL:
                print("[context full: starting a new conversation]", file=sys.stderr)
                session.reset()
                history = list(base)
                seen = 0
            else:
                answer = "".join(reply)
                seen = len(text) + len(answer.encode())
                history.append(("assistant", answer))
            if args.prompt is not None:
                return


if __name__ == "__main__":
    sys.exit(main())
