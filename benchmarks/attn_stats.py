"""Whole-model benchmark of the fused statistics path on SmolLM2-135M (batch 1).

For each n, the modes each run in their own subprocess (so peak RSS is per mode):
  (a) plain SDPA forward of the HF model, in a process that imports transformers only;
  (a2) the same SDPA forward of the model that interp.load_model returns (same process setup as (b): the
       TransformerBridge, TransformerLens and the tokenizer are loaded), i.e. what the statistics add to an
       ordinary forward of an interp user's model;
  (b) interp.attention_stats with two segments (first token, a 16-token span) and key_mass;
  (c) TransformerLens run_with_cache of every hook_pattern, plus the same reductions
      (entropy, max/argmax, segment masses, key mass) — "OOM" where the patterns would not fit in memory.
Prints median wall time of `--reps` runs (after one warm-up), peak RSS, and the ratios b/a, b/a2 and c/b.
``--rounds R`` runs the modes R times, interleaved (a, a2, b, a, a2, b, ...), and reports the median over all
runs: on a shared machine the speed drifts between processes more than within one.

    python benchmarks/attn_stats.py                 # n = 512 1024 2048 4096 8192
    python benchmarks/attn_stats.py --n 512 1024 --reps 2
    python benchmarks/attn_stats.py --contention    # a bounded busy process pinned to core 0 meanwhile
    python benchmarks/attn_stats.py --rows --n 8192 # also attention_rows (4 heads x 4 queries), time and peak RSS
    python benchmarks/attn_stats.py --device cuda --dtype bfloat16   # on a GPU (no TL column)
    python benchmarks/attn_stats.py --gemma3 4096   # also a tiny random Gemma-3-style model, windows vs SDPA

``--gemma3 N...``: a random Gemma-3-style model (6 layers, 5 sliding : 1 full, window 512, 8 query heads over 4
KV heads of width 64, hidden 512, qk-norm, vocabulary 1024): attention_stats against an SDPA forward of the same
model, whose sliding layers get the same band through transformers' sliding-window mask.
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

MODES = ("sdpa", "sdpa_bridge", "stats", "tl", "rows", "g3_sdpa", "g3_stats")
G3 = dict(vocab_size=1024, hidden_size=512, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=8,
          num_key_value_heads=4, head_dim=64, sliding_window=512, max_position_embeddings=32768,
          layer_types=["sliding_attention"] * 5 + ["full_attention"])


def _gemma3(n: int, impl: str):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    hf = Gemma3ForCausalLM(Gemma3TextConfig(**G3, attn_implementation=impl)).eval()
    toks = torch.randint(3, G3["vocab_size"], (1, n), generator=torch.Generator().manual_seed(0))
    return hf, toks
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _tokens(n: int):
    import torch

    g = torch.Generator().manual_seed(0)
    t = torch.randint(100, 49152, (1, n), generator=g)
    t[0, 0] = 1
    return t


def _worker(mode: str, n: int, reps: int, device: str = "cpu", dtype: str = "float32") -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    from interp.models import bundled, load_model

    dt = getattr(torch, dtype)
    toks = _tokens(n).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if mode in ("g3_sdpa", "g3_stats"):
        from interp.attnstats import attention_stats

        hf, g3toks = _gemma3(n, "sdpa")
        if mode == "g3_sdpa":
            run = lambda: hf(input_ids=g3toks, use_cache=False).logits  # noqa: E731
        else:
            segs = {"first": "first", "span": (n // 2, n // 2 + 16)}
            run = lambda: attention_stats(hf, g3toks, segments=segs, key_mass=True).logits  # noqa: E731
    elif mode == "sdpa":
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(bundled.smollm2_dir(), dtype=dt, attn_implementation="sdpa").eval().to(device)
        run = lambda: hf(input_ids=toks, use_cache=False).logits  # noqa: E731
    elif mode == "sdpa_bridge":
        from interp.attnstats.fused import hf_with_attention

        model = load_model("smollm2-135m", device=device, dtype=dt)

        def run():
            with hf_with_attention(model, "sdpa") as hf_sdpa:
                return hf_sdpa(input_ids=toks, use_cache=False).logits
    elif mode == "stats":
        from interp.attnstats import attention_stats

        model = load_model("smollm2-135m", device=device, dtype=dt)
        segs = {"first": "first", "span": (n // 2, n // 2 + 16)}
        run = lambda: attention_stats(model, toks, segments=segs, key_mass=True).logits  # noqa: E731
    elif mode == "rows":
        from interp.attnstats.rows import attention_rows

        model = load_model("smollm2-135m", device=device, dtype=dt)
        heads = ["L18H6", "L18H7", "L20H6", "L29H0"]
        run = lambda: attention_rows(model, toks, heads=heads, queries=[0, n // 2, -2, -1])  # noqa: E731
    else:
        model = load_model("smollm2-135m", device="cpu")
        run = lambda: _tl_run(model, toks, n)  # noqa: E731
    times = []
    with torch.no_grad():
        for i in range(reps + 1):
            sync()
            t0 = time.perf_counter()
            run()
            sync()
            if i:  # the first run warms up allocator and kernels
                times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    return {"median_s": statistics.median(times), "peak_rss_gb": peak, "times": times}


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


def _run_mode(mode: str, n: int, reps: int, device: str = "cpu", dtype: str = "float32") -> dict | None:
    if mode == "tl" and (device != "cpu" or not _tl_fits(n)):
        return None
    cmd = [sys.executable, __file__, "--worker", mode, "--n", str(n), "--reps", str(reps), "--device", device, "--dtype", dtype]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["killed"])[-1][:80], "returncode": out.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--worker", choices=MODES)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--contention", action="store_true", help="a bounded busy process pinned to core 0 meanwhile")
    ap.add_argument("--rows", action="store_true", help="also time attention_rows (4 heads x 4 queries)")
    ap.add_argument("--no-tl", action="store_true", help="skip the TransformerLens column")
    ap.add_argument("--rounds", type=int, default=1, help="run the modes this many times, interleaved")
    ap.add_argument("--gemma3", type=int, nargs="*", default=None, help="also the Gemma-3-style model at these n")
    ap.add_argument("--only-gemma3", action="store_true", help="skip the SmolLM2 table")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.n[0], args.reps, args.device, args.dtype)))
        return
    _check(args)
    from _contention import busy_core

    try:
        with busy_core(args.contention):
            _table(args)
    except KeyboardInterrupt:
        print("interrupted (rows printed above are complete)", file=sys.stderr)
        raise SystemExit(130) from None


def _check(args) -> None:
    """Bad arguments end in one line and exit code 2, before any model loads."""
    from interp.errors import InterpError
    from interp.models.spec import resolve_model

    try:
        for name in ("reps", "rounds"):
            if getattr(args, name) < 1:
                raise InterpError(f"--{name} must be at least 1, got {getattr(args, name)}")
        spec = resolve_model("smollm2-135m")
        for n in args.n:
            if n < 1:
                raise InterpError(f"--n must be at least 1, got {n}")
            spec.require_fits(n, f"--n {n}")
        for n in args.gemma3 or ():
            if not 1 <= n <= 32768:
                raise InterpError(f"--gemma3 sizes must lie in 1..32768, got {n}")
    except InterpError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _table(args) -> None:
    if not args.only_gemma3:
        _smollm2_table(args)
    if args.gemma3:
        _gemma3_table(args)


def _gemma3_table(args) -> None:
    print(f"Gemma-3-style random model (5 sliding : 1 full, window 512), batch 1, float32 on cpu, median of "
          f"{args.reps} x {args.rounds} round(s); load average {os.getloadavg()[0]:.2f}")
    print(f"{'n':>6} | {'sdpa s':>8} {'GB':>5} | {'stats s':>8} {'GB':>5} | {'time ratio':>10} {'mem ratio':>9}")
    for n in args.gemma3:
        runs = {m: [] for m in ("g3_sdpa", "g3_stats")}
        for _ in range(args.rounds):
            for m in runs:
                runs[m].append(_run_mode(m, n, args.reps))
        a, b = _merge(runs["g3_sdpa"]), _merge(runs["g3_stats"])
        print(f"{n:>6} | {_fmt(a, 'median_s', 8)} {_fmt(a, 'peak_rss_gb', 5)} | {_fmt(b, 'median_s', 8)} "
              f"{_fmt(b, 'peak_rss_gb', 5)} | {_ratio(b, a, 'median_s'):>10} {_ratio(b, a, 'peak_rss_gb'):>9}", flush=True)


def _smollm2_table(args) -> None:
    import torch

    print(f"SmolLM2-135M, batch 1, {args.dtype} on {args.device}, {torch.get_num_threads()} threads, median of "
          f"{args.reps} x {args.rounds} round(s) (after 1 warm-up per process)"
          f"{'; CONTENTION: one busy process on core 0' if args.contention else ''}")
    hdr = (f"{'n':>6} | {'(a) sdpa s':>10} {'GB':>5} | {'(a2) sdpa s':>11} {'GB':>5} | {'(b) stats s':>11} {'GB':>5} | "
           f"{'(c) TL s':>9} {'GB':>5} | {'b/a time':>8} {'b/a mem':>7} | {'b/a2 time':>9} {'b/a2 mem':>8} | "
           f"{'c/b time':>8} {'c/b mem':>7}")
    print(hdr)
    print("-" * len(hdr))
    rows = {}
    for n in args.n:
        modes = ["sdpa", "sdpa_bridge", "stats"] + ([] if args.no_tl else ["tl"])
        runs = {m: [] for m in modes}
        for _ in range(args.rounds):  # interleaved: drift between processes hits every mode alike
            for m in modes:
                runs[m].append(_run_mode(m, n, args.reps, args.device, args.dtype))
        r = {m: _merge(v) for m, v in runs.items()}
        r.setdefault("tl", {"skipped": True})
        if args.rows:
            rows[n] = _run_mode("rows", n, args.reps, args.device, args.dtype)
        print(_row(n, r), flush=True)
    for n, r in rows.items():
        print(f"attention_rows n={n}: {_fmt(r, 'median_s', 6)} s, peak {_fmt(r, 'peak_rss_gb', 5)} GB "
              "(4 heads x 4 queries, forward stops after layer 29)")


def _merge(results: list) -> dict | None:
    """One mode's runs over all rounds: median time over every repetition, median peak over processes."""
    if any(r is None or "error" in r or "skipped" in r for r in results):
        return results[0]
    return {"median_s": statistics.median(t for r in results for t in r["times"]),
            "peak_rss_gb": statistics.median(r["peak_rss_gb"] for r in results)}


def _fmt(r, key, w):
    if r is None:
        return f"{'OOM':>{w}}"
    if "skipped" in r:
        return f"{'-':>{w}}"
    if "error" in r:
        return f"{'ERR':>{w}}"
    return f"{r[key]:>{w}.2f}"


def _ratio(x, y, key):
    if not x or not y or "error" in x or "error" in y or "skipped" in x or "skipped" in y:
        return "     -"
    return f"{x[key] / y[key]:6.2f}"


def _row(n, r):
    a, a2, b, c = r["sdpa"], r["sdpa_bridge"], r["stats"], r["tl"]
    return (f"{n:>6} | {_fmt(a, 'median_s', 10)} {_fmt(a, 'peak_rss_gb', 5)} | {_fmt(a2, 'median_s', 11)} "
            f"{_fmt(a2, 'peak_rss_gb', 5)} | {_fmt(b, 'median_s', 11)} {_fmt(b, 'peak_rss_gb', 5)} | "
            f"{_fmt(c, 'median_s', 9)} {_fmt(c, 'peak_rss_gb', 5)} | {_ratio(b, a, 'median_s'):>8} "
            f"{_ratio(b, a, 'peak_rss_gb'):>7} | {_ratio(b, a2, 'median_s'):>9} {_ratio(b, a2, 'peak_rss_gb'):>8} | "
            f"{_ratio(c, b, 'median_s'):>8} {_ratio(c, b, 'peak_rss_gb'):>7}")


if __name__ == "__main__":
    main()
