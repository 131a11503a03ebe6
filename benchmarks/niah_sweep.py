"""Full NIAH retrieval-head sweep on SmolLM2: wall time, peak memory per context length, and head counts.

Each context length runs in its own subprocess, so its peak RSS is its own: memory should stay flat in n
because the fused path never builds an n×n tensor. Then the per-sample copy scores of all lengths are pooled
into retrieval scores. ``--masking`` adds the masking test (top-K vs K random non-retrieval heads).

    python benchmarks/niah_sweep.py                      # 5 lengths × 5 depths × 3 needles, up to 3000 tokens
    python benchmarks/niah_sweep.py --masking --mask-lengths 1000 3000 --mask-depths 50
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _worker(length: int, depths: list[float], needles: int, out: str) -> None:
    from interp.analyze.retrieval import NiahConfig, run_niah
    from interp.models import load_model
    from interp.tasks.niah import load_needles

    model = load_model("smollm2-135m", device="cpu")
    t0 = time.perf_counter()
    samples = run_niah(model, load_needles()[:needles], NiahConfig(lengths=(length,), depths=tuple(depths)))
    wall = time.perf_counter() - t0
    samples.to_parquet(out)
    print(json.dumps({"wall_s": wall, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[600, 1200, 1800, 2400, 3000])
    ap.add_argument("--depths", type=float, nargs="+", default=[0, 25, 50, 75, 100])
    ap.add_argument("--needles", type=int, default=3)
    ap.add_argument("--masking", action="store_true")
    ap.add_argument("--mask-lengths", type=int, nargs="+", default=[1000, 3000])
    ap.add_argument("--mask-depths", type=float, nargs="+", default=[50])
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--worker", type=int)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        return _worker(args.worker, args.depths, args.needles, args.out)

    import pandas as pd

    tmp = Path(tempfile.mkdtemp(prefix="niah-sweep-"))
    print(f"SmolLM2-135M NIAH sweep: lengths {args.lengths}, depths {args.depths}, {args.needles} needles")
    print(f"{'n':>6} | {'samples':>7} | {'wall s':>7} | {'s/sample':>8} | {'peak GB':>7} | {'kept':>4} | {'recall':>6}")
    frames, total = [], 0.0
    for n in args.lengths:
        out = tmp / f"{n}.parquet"
        cmd = [sys.executable, __file__, "--worker", str(n), "--out", str(out), "--needles", str(args.needles), "--depths", *map(str, args.depths)]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        df = pd.read_parquet(out)
        frames.append(df)
        total += r["wall_s"]
        print(f"{n:>6} | {len(df):>7} | {r['wall_s']:>7.1f} | {r['wall_s'] / len(df):>8.2f} | {r['peak_rss_gb']:>7.2f} | "
              f"{int(df['kept'].sum()):>4} | {100 * df['rouge1_recall'].mean():>6.1f}", flush=True)
    print(f"total decode wall time: {total:.0f} s for {sum(len(f) for f in frames)} samples")

    from interp.analyze.retrieval import retrieval_scores
    from interp.models import load_model

    model = load_model("smollm2-135m", device="cpu")
    samples = pd.concat(frames, ignore_index=True)
    scores = retrieval_scores(model, samples)
    n_ret = int((scores["value"] > 0.1).sum())
    top = scores.nlargest(10, "value")
    print(f"retrieval heads (score > 0.1): {n_ret} of {len(scores)} ({100 * n_ret / len(scores):.1f}%)")
    print("top heads: " + ", ".join(f"L{r.layer}H{r.head} {r.value:.2f}" for r in top.itertuples()))
    if args.masking:
        _masking(model, scores, args)


def _masking(model, scores, args) -> None:
    from interp.analyze.retrieval import NiahConfig, masking_grid
    from interp.tasks.niah import load_needles

    cfg = NiahConfig(lengths=tuple(args.mask_lengths), depths=tuple(args.mask_depths), max_new_tokens=32)
    t0 = time.perf_counter()
    grid = masking_grid(model, load_needles()[: args.needles], cfg, scores, top_k=args.k, random_k=args.k, draws=args.draws)
    rec = grid.groupby("condition")["rouge1_recall"].mean().mul(100)
    print(f"masking test ({len(grid)} decodes, {time.perf_counter() - t0:.0f} s), lengths {args.mask_lengths}, depths {args.mask_depths}:")
    print(f"{'K':>3} | {'top-K masked':>12} | {'K random masked':>15}")
    print(f"{0:>3} | {rec['none']:>12.1f} | {rec['none']:>15.1f}")
    for k in args.k:
        print(f"{k:>3} | {rec[f'top{k}']:>12.1f} | {rec[f'random{k}']:>15.1f}")


if __name__ == "__main__":
    main()
