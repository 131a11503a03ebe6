"""Benchmark the attention-statistics kernels against torch SDPA on SmolLM2-like shapes (one layer).

batch 1, 9 query heads / 3 kv heads, d_head 64, causal; the stats kernels also produce 2 segment masses (first
token + one span) and key_mass. Median of ``--reps`` wall times after one warm-up call, both measured side by
side in one run.

    PYTHONPATH=. python benchmarks/attn_kernel.py [--sizes 512,1024,2048,4096,8192] [--threads N] [--contention] [--flash]
    PYTHONPATH=. python benchmarks/attn_kernel.py --device cuda --dtypes float16,bfloat16     # triton vs SDPA (flash)

``--contention`` runs a bounded busy process pinned to core 0 for the duration (a shared machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _contention import busy_core  # noqa: E402

from interp.attnstats.kernels import attn_stats_kernel, triton_available  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _median_time(fn, reps: int = 3, sync=lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _inputs(n: int, device: str, dtype=torch.float32, heads: int = 9, kv: int = 3, d: int = 64):
    g = torch.Generator(device="cpu").manual_seed(n)
    q = torch.randn(1, heads, n, d, generator=g).to(device, dtype)
    k = torch.randn(1, kv, n, d, generator=g).to(device, dtype)
    v = torch.randn(1, kv, n, d, generator=g).to(device, dtype)
    seg = torch.zeros(1, 2, n)
    seg[:, 0, 0] = 1
    seg[:, 1, n // 4 : n // 2] = 1
    return q, k, v, seg.to(device)


def _sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def _stats(q, k, v, seg, backend):
    return attn_stats_kernel(q, k, v, scale=0.125, causal=True, segments=seg, key_mass=True, backend=backend)


def _torch_pass(on: bool) -> None:
    os.environ["INTERP_NO_CEXT"] = "1" if on else "0"


def cpu_table(sizes, reps: int, flash: bool = False) -> None:
    """The cpu backend with its compiled row pass (``_rows.c``) and with the pure-PyTorch fallback; ``flash``
    adds the flash backend (identities on the CPU flash operator: lse, entropy, segment and key masses, no
    max/argmax) beside the cpu backend asked for the same statistics."""
    from interp.attnstats.kernels._cext import build_error, rows_lib

    if rows_lib() is None:
        print(f"compiled row pass unavailable ({build_error()}): both columns are the PyTorch pass")
    extra = f" | {'cpu lse+ent ms':>14} | {'flash ms':>9} | {'flash/sdpa':>10}" if flash else ""
    print(f"{'n':>6} | {'sdpa ms':>9} | {'cpu stats ms':>12} | {'cpu/sdpa':>8} | {'torch pass ms':>13} | {'torch/sdpa':>10}{extra}")
    print("-" * (74 + len(extra)))
    for n in sizes:
        q, k, v, seg = _inputs(n, "cpu")
        t_sdpa = _median_time(lambda: _sdpa(q, k, v), reps)
        t_cpu = _median_time(lambda: _stats(q, k, v, seg, "cpu"), reps)
        _torch_pass(True)
        t_pt = _median_time(lambda: _stats(q, k, v, seg, "cpu"), reps)
        _torch_pass(False)
        row = f"{n:>6} | {t_sdpa * 1e3:>9.1f} | {t_cpu * 1e3:>12.1f} | {t_cpu / t_sdpa:>8.2f} | {t_pt * 1e3:>13.1f} | {t_pt / t_sdpa:>10.2f}"
        if flash:
            sub = lambda b: attn_stats_kernel(q, k, v, scale=0.125, causal=True, segments=seg, key_mass=True,  # noqa: E731
                                              backend=b, stats=("lse", "entropy"))
            t_c2, t_fl = _median_time(lambda: sub("cpu"), reps), _median_time(lambda: sub("flash"), reps)
            row += f" | {t_c2 * 1e3:>14.1f} | {t_fl * 1e3:>9.1f} | {t_fl / t_sdpa:>10.2f}"
        print(row, flush=True)


def cuda_table(sizes, dtypes=("float16", "bfloat16"), reps: int = 10) -> None:
    """On a CUDA machine: the Triton stats kernel (output + all statistics) against SDPA, d_head 64."""
    if not (torch.cuda.is_available() and triton_available()):
        return
    sync = torch.cuda.synchronize
    print()
    print(f"CUDA ({torch.cuda.get_device_name()}): triton stats kernel (2 segments + key_mass) vs SDPA, per layer")
    print(f"{'dtype':>9} | {'n':>6} | {'sdpa ms':>9} | {'triton ms':>10} | {'no key_mass':>11} | {'triton/sdpa':>11} | {'w/o km':>6}")
    print("-" * 80)
    for name in dtypes:
        for n in sizes:
            q, k, v, seg = _inputs(n, "cuda", DTYPES[name])
            t_sdpa = _median_time(lambda: _sdpa(q, k, v), reps, sync)
            t_tri = _median_time(lambda: _stats(q, k, v, seg, "triton"), reps, sync)
            t_nokm = _median_time(lambda: attn_stats_kernel(q, k, v, scale=0.125, causal=True, segments=seg,
                                                            backend="triton"), reps, sync)
            print(f"{name:>9} | {n:>6} | {t_sdpa * 1e3:>9.3f} | {t_tri * 1e3:>10.3f} | {t_nokm * 1e3:>11.3f} | "
                  f"{t_tri / t_sdpa:>11.2f} | {t_nokm / t_sdpa:>6.2f}", flush=True)


def _check(args) -> list[int]:
    """The sizes; bad arguments end in one line and exit code 2."""
    def fail(msg: str):
        print(f"error: {msg}", file=sys.stderr)
        raise SystemExit(2)

    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        fail(f"--sizes takes comma-separated integers such as 512,2048; got {args.sizes!r}")
    if min(sizes) < 1:
        fail(f"--sizes must all be at least 1, got {args.sizes}")
    if args.reps < 1 or (args.threads is not None and args.threads < 1):
        fail(f"--reps and --threads must be at least 1, got {args.reps} and {args.threads}")
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,1024,2048,4096,8192")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtypes", default="float16,bfloat16", help="CUDA dtypes")
    ap.add_argument("--contention", action="store_true", help="a busy process pinned to core 0 while timing")
    ap.add_argument("--flash", action="store_true", help="add the flash backend (SDPA flash operator + identities)")
    args = ap.parse_args()
    sizes = _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    with busy_core(args.contention):
        if args.device == "cuda":
            cuda_table(sizes, args.dtypes.split(","), reps=max(args.reps, 10))
            return
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch 1, 9/3 heads, d_head 64, causal, fp32; "
              f"median of {args.reps}{'; CONTENTION: one busy process on core 0' if args.contention else ''}")
        cpu_table(sizes, args.reps, flash=args.flash)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted (rows printed above are complete)", file=sys.stderr)
        raise SystemExit(130) from None
