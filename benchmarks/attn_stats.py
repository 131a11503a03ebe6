"""Whole-model benchmark of the fused statistics path on SmolLM2-135M (batch 1).

For each n, three modes each run in their own subprocess (so peak RSS is per mode):
  (a) plain SDPA forward of the HF model;
  (b) interp.attention_stats with two segments (first token, a 16-token span) and key_mass;
  (c) TransformerLens run_with_cache of every hook_pattern, plus the same reductions
      (entropy, max/argmax, segment masses, key mass) — "OOM" where the patterns would not fit in memory.
Prints median wall time of `--reps` runs (after one warm-up), peak RSS, and the ratios b/a and c/b.

    python benchmarks/attn_stats.py                 # n = 512 1024 2048 4096 8192
    python benchmarks/attn_stats.py --n 512 1024 --reps 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MODES = ("sdpa", "stats", "tl")


def _tokens(n: int):
    import torch

    g = torch.Generator().manual_seed(0)
    t = torch.randint(100, 49152, (1, n), generator=g)
    t[0, 0] = 1
    return t


def _worker(mode: str, n: int, reps: int) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    from interp.models import bundled, load_model

    toks = _tokens(n)
    if mode == "sdpa":
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(bundled.smollm2_dir(), dtype=torch.float32, attn_implementation="sdpa").eval()
        run = lambda: hf(input_ids=toks, use_cache=False).logits  # noqa: E731
    elif mode == "stats":
        from interp.attnstats import attention_stats

        model = load_model("smollm2-135m", device="cpu")
        segs = {"first": "first", "span": (n // 2, n // 2 + 16)}
        run = lambda: attention_stats(model, toks, segments=segs, key_mass=True).logits  # noqa: E731
    else:
        model = load_model("smollm2-135m", device="cpu")
        run = lambda: _tl_run(model, toks, n)  # noqa: E731
    times = []
    with torch.no_grad():
        for i in range(reps + 1):
            t0 = time.perf_counter()
            run()
            if i:  # the first run warms up allocator and kernels
                times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def _tl_run(model, toks, n):
    import torch

    from interp.attnstats.eager import stats_from_pattern

    logits, cache = model.run_with_cache(toks, names_filter=lambda name: name.endswith("attn.hook_pattern"))
    seg = torch.zeros(1, 2, n)
    seg[0, 0, 0] = 1
    seg[0, 1, n // 2: n // 2 + 16] = 1
    valid = torch.ones(1, n, dtype=torch.bool)
    return logits, [stats_from_pattern(cache[f"blocks.{l}.attn.hook_pattern"], seg, valid) for l in range(model.cfg.n_layers)]


def _tl_fits(n: int) -> bool:
    # run_with_cache keeps every layer's pattern (30 × 9 × n² fp32) and the bridge builds scores + pattern
    # transiently per layer; compare against physical memory, leaving room for the model and logits.
    need = (30 * 9 * n * n * 4) + 3 * (9 * n * n * 4) + 4 * 2**30
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return need < 0.85 * total


def _run_mode(mode: str, n: int, reps: int) -> dict | None:
    if mode == "tl" and not _tl_fits(n):
        return None
    cmd = [sys.executable, __file__, "--worker", mode, "--n", str(n), "--reps", str(reps)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["killed"])[-1][:80], "returncode": out.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--worker", choices=MODES)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.n[0], args.reps)))
        return
    import torch

    print(f"SmolLM2-135M, batch 1, fp32, {torch.get_num_threads()} threads, median of {args.reps} (after 1 warm-up)")
    hdr = f"{'n':>6} | {'(a) sdpa s':>10} {'GB':>5} | {'(b) stats s':>11} {'GB':>5} | {'(c) TL s':>9} {'GB':>5} | {'b/a time':>8} {'b/a mem':>7} | {'c/b time':>8} {'c/b mem':>7}"
    print(hdr)
    print("-" * len(hdr))
    for n in args.n:
        r = {m: _run_mode(m, n, args.reps) for m in MODES}
        print(_row(n, r), flush=True)
    if torch.cuda.is_available():
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from attn_kernel import cuda_table

        cuda_table(args.n)


def _fmt(r, key, w):
    if r is None:
        return f"{'OOM':>{w}}"
    if "error" in r:
        return f"{'ERR':>{w}}"
    return f"{r[key]:>{w}.2f}"


def _ratio(x, y, key):
    if not x or not y or "error" in x or "error" in y:
        return "     -"
    return f"{x[key] / y[key]:6.2f}"


def _row(n, r):
    a, b, c = r["sdpa"], r["stats"], r["tl"]
    return (f"{n:>6} | {_fmt(a, 'median_s', 10)} {_fmt(a, 'peak_rss_gb', 5)} | {_fmt(b, 'median_s', 11)} {_fmt(b, 'peak_rss_gb', 5)} | "
            f"{_fmt(c, 'median_s', 9)} {_fmt(c, 'peak_rss_gb', 5)} | {_ratio(b, a, 'median_s'):>8} {_ratio(b, a, 'peak_rss_gb'):>7} | "
            f"{_ratio(c, b, 'median_s'):>8} {_ratio(c, b, 'peak_rss_gb'):>7}")


if __name__ == "__main__":
    main()
