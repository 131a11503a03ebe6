"""Benchmark the attention-statistics kernels against torch SDPA on SmolLM2-like shapes.

batch 1, 9 query heads / 3 kv heads, d_head 64, causal, fp32; the stats kernels also produce 2 segment
masses (first token + one span) and key_mass. Median of 3 wall times after one warm-up call.

    PYTHONPATH=. python benchmarks/attn_kernel.py [--sizes 512,1024,2048,4096,8192] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from interp.attnstats.kernels import attn_stats_kernel, triton_available


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


def _inputs(n: int, device: str, heads: int = 9, kv: int = 3, d: int = 64):
    g = torch.Generator(device="cpu").manual_seed(n)
    q = torch.randn(1, heads, n, d, generator=g).to(device)
    k = torch.randn(1, kv, n, d, generator=g).to(device)
    v = torch.randn(1, kv, n, d, generator=g).to(device)
    seg = torch.zeros(1, 2, n)
    seg[:, 0, 0] = 1
    seg[:, 1, n // 4 : n // 2] = 1
    return q, k, v, seg.to(device)


def _sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,1024,2048,4096,8192")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch 1, 9/3 heads, d_head 64, causal, fp32")
    print(f"{'n':>6} | {'sdpa ms':>9} | {'cpu stats ms':>12} | {'cpu/sdpa':>8}")
    print("-" * 46)
    for n in sizes:
        q, k, v, seg = _inputs(n, "cpu")
        t_sdpa = _median_time(lambda: _sdpa(q, k, v))
        t_cpu = _median_time(lambda: attn_stats_kernel(
            q, k, v, scale=0.125, causal=True, segments=seg, key_mass=True, backend="cpu"))
        print(f"{n:>6} | {t_sdpa * 1e3:>9.1f} | {t_cpu * 1e3:>12.1f} | {t_cpu / t_sdpa:>8.2f}", flush=True)
    cuda_table(sizes)


def cuda_table(sizes) -> None:
    """On a CUDA machine: the Triton stats kernel (output + all statistics) against SDPA, d_head 64."""
    if torch.cuda.is_available() and triton_available():
        sync = torch.cuda.synchronize
        print()
        print(f"CUDA ({torch.cuda.get_device_name()}): triton stats kernel vs SDPA")
        print(f"{'n':>6} | {'sdpa ms':>9} | {'triton ms':>10} | {'triton/sdpa':>11}")
        print("-" * 46)
        for n in sizes:
            q, k, v, seg = _inputs(n, "cuda")
            t_sdpa = _median_time(lambda: _sdpa(q, k, v), sync=sync)
            t_tri = _median_time(lambda: attn_stats_kernel(
                q, k, v, scale=0.125, causal=True, segments=seg, key_mass=True, backend="triton"), sync=sync)
            print(f"{n:>6} | {t_sdpa * 1e3:>9.2f} | {t_tri * 1e3:>10.2f} | {t_tri / t_sdpa:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
