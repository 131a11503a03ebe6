"""IOI circuit discovery on SmolLM2 with and without AtP* pruning: wall time, exact path-patching runs, forward-pass
equivalents (layers run × rows, in units of one forward of the prompt batch), and how many of the unpruned
circuit's heads the pruned run finds. Both runs happen in this process, one after the other.

    python benchmarks/circuits.py [--prompts 100] [--stages 3] [--keep 16] [--no-unpruned]
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--keep", type=int, default=16)
    ap.add_argument("--no-unpruned", action="store_true", help="skip the (slow) unpruned run")
    ap.add_argument("--threads", default="auto")
    args = ap.parse_args()

    import torch

    import interp
    from interp.analyze.circuits import CircuitParams, discover_circuit, ioi_task
    from interp.runtime import set_threads

    set_threads(args.threads)
    model = interp.load_model("smollm2-135m")
    task = ioi_task(model, args.prompts)
    t = time.perf_counter()
    interp.run(model, task.clean)
    one = time.perf_counter() - t
    rows = []
    for prune in ([True] if args.no_unpruned else [True, False]):
        t = time.perf_counter()
        c = discover_circuit(model, task, CircuitParams(n_stages=args.stages, keep=args.keep, prune=prune))
        rows.append((prune, time.perf_counter() - t, c))
    print(f"SmolLM2-135M (Q4_1→fp32), IOI, {args.prompts} prompts, {args.stages} stages, threads {torch.get_num_threads()}; "
          f"one plain forward of the batch: {one:.1f} s")
    print(f"{'pruning':>8} | {'seconds':>8} | {'exact runs':>10} | {'runs saved':>10} | {'forward equiv.':>14} | circuit heads")
    for prune, sec, c in rows:
        print(f"{('AtP*' if prune else 'none'):>8} | {sec:8.1f} | {c.info['exact_runs']:10d} | {c.info['exact_runs_saved']:10d} | "
              f"{c.info['forward_equiv']:14.1f} | {', '.join(f'{h}' for h in c.head_ids())}")
    if len(rows) == 2:
        a, b = set(rows[0][2].head_ids()), set(rows[1][2].head_ids())
        print(f"pruned run finds {len(a & b)}/{len(b)} of the unpruned circuit's heads; time ratio unpruned/pruned "
              f"{rows[1][1] / rows[0][1]:.1f}×")


if __name__ == "__main__":
    main()
