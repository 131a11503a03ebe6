"""All-heads zero-ablation sweep on SmolLM2 over IOI prompts (metric: logit difference), run by ``interp sweep``
locally and on a local Ray instance with 2 workers, side by side in one process.

The grid has one unit per layer (``ablate`` with that layer's heads), so Ray has units to spread over its
actors; each unit is one batched ``sweep_heads`` call. Both backends use the same total number of CPU threads
(local: ``workers × threads``; Ray: ``workers`` actors × ``threads``). Reported per backend (median over
``--reps`` alternating runs): wall time of the sweep, throughput (prompts × heads evaluated per second, and
prompts per second with every head), and the model-load overhead (seconds each worker spent loading its model,
and that as a share of the wall time). Ray's own start-up is timed once, apart. Results are checked to be
identical between the backends.

    python benchmarks/sweep.py                     # 200 prompts, all 270 heads (long on a 2-core CPU)
    python benchmarks/sweep.py --prompts 20 --layers 4 --reps 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def spec_text(model: str, prompts: int, layers: list[int], n_heads: int, seed: int) -> str:
    units = "".join(f'\n[[interventions]]\nname = "ablate"\nhow = "zero"\nheads = {json.dumps([f"L{l}H{h}" for h in range(n_heads)])}\n'
                    for l in layers)
    return (f'name = "benchmark"\nseeds = [{seed}]\nmetrics = ["logit_diff"]\n[[models]]\nname = "{model}"\n'
            f'[[tasks]]\nname = "ioi"\nsize = {prompts}\n{units}')


def one_run(spec, backend: str, workers: int, threads: int, out: Path) -> dict:
    from interp.sweep.run import run_sweep

    t0 = time.perf_counter()
    paths = run_sweep(spec, out, backend=backend, workers=workers, threads=threads, progress=False)
    wall = time.perf_counter() - t0
    run = json.loads(Path(paths["run"]).read_text())
    if paths["failed"]:
        raise SystemExit(f"{backend}: {paths['failed']} units failed: {run['failures'][0]['error']}")
    loads = [l["seconds"] for l in run["model_loads"]]
    return {"wall": wall, "load_max": max(loads), "load_sum": sum(loads), "results": Path(paths["results"])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=200)
    p.add_argument("--layers", type=int, default=0, help="sweep the heads of the first N layers only (0 = all layers)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per Ray worker (local gets workers × this)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = p.parse_args(argv)

    import pandas as pd
    import ray

    from interp.models.spec import resolve_model
    from interp.sweep.spec import check_models, parse_spec

    from interp.errors import InterpError

    try:  # bad arguments end in one line and exit code 2, before Ray starts or a model loads
        for name in ("prompts", "workers", "threads", "reps"):
            if getattr(args, name) < 1:
                raise InterpError(f"--{name} must be at least 1, got {getattr(args, name)}")
        ms = resolve_model(args.model)
        if not 0 <= args.layers <= ms.n_layers:
            raise InterpError(f"--layers must lie in 0..{ms.n_layers} for {args.model} (0 = all), got {args.layers}")
        layers = list(range(args.layers or ms.n_layers))
        spec = parse_spec(spec_text(args.model, args.prompts, layers, ms.n_heads, args.seed), "benchmark.toml")
        check_models(spec)
    except InterpError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    n_heads = len(layers) * ms.n_heads
    t0 = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray_start = time.perf_counter() - t0
    runs: dict[str, list[dict]] = {"local": [], "ray": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(args.reps):
                for backend in ("local", "ray"):
                    threads = args.threads * (args.workers if backend == "local" else 1)
                    out = Path(tmp) / f"{backend}-{rep}"
                    runs[backend].append(one_run(spec, backend, args.workers, threads, out))
                    print(f"rep {rep} {backend}: {runs[backend][-1]['wall']:.1f} s", flush=True)
            same = pd.read_parquet(runs["local"][0]["results"]).equals(pd.read_parquet(runs["ray"][0]["results"]))
    finally:
        ray.shutdown()

    med = {b: {k: statistics.median(r[k] for r in rs) for k in ("wall", "load_max", "load_sum")} for b, rs in runs.items()}
    evals = args.prompts * n_heads
    shape = {"local": f"1 × {args.workers * args.threads}", "ray": f"{args.workers} × {args.threads}"}
    print(f"\nAll-heads zero ablation, {args.model}: {args.prompts} IOI prompts × {n_heads} heads ({len(layers)} units), "
          f"median of {args.reps} run(s); Ray start-up {ray_start:.1f} s (not in the walls); results identical: {same}\n")
    print("| backend | workers × threads | wall (s) | prompt·head evals/s | prompts/s (all heads) | model load (s) | load / wall |")
    print("|---|---|---|---|---|---|---|")
    for b in ("local", "ray"):
        m = med[b]
        print(f"| {b} | {shape[b]} | {m['wall']:.1f} | {evals / m['wall']:.0f} | {args.prompts / m['wall']:.2f} | "
              f"{m['load_max']:.1f} | {m['load_max'] / m['wall']:.0%} |")
    lw, rw = med["local"]["wall"], med["ray"]["wall"]
    print(f"\nratio ray / local: wall {rw / lw:.2f}, throughput {lw / rw:.2f}, model load {med['ray']['load_max'] / max(med['local']['load_max'], 1e-9):.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "ray_start_s": ray_start,
                                         "median": med, "identical": same, "evals": evals}, indent=2))


if __name__ == "__main__":
    main()
