"""CUDA only: where the triton stats path spends its time, per kernel (device time from torch.profiler) and
host overhead, plus a sweep over tile configs of the main pass. A developer tool for tuning ``choose_config``."""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

sys.path.insert(0, os.path.dirname(__file__))
from attn_kernel import _inputs  # noqa: E402

from interp.attnstats.kernels import attn_stats_kernel  # noqa: E402
from interp.attnstats.kernels._common import validate  # noqa: E402
from interp.attnstats.kernels.triton_kernel import Config, attn_stats_triton  # noqa: E402


def _events(fn, activity, calls: int = 5):
    """torch.profiler's per-op averages over ``calls`` calls of ``fn`` (after a warm-up call)."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[activity]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return prof.key_averages()


def _profile(fn, label):
    print(f"--- {label}: device time per call by kernel (us)")
    for ev in sorted(_events(fn, torch.profiler.ProfilerActivity.CUDA), key=lambda e: -e.device_time_total)[:8]:
        print(f"{ev.device_time_total / 5:>10.1f}  {ev.key[:90]}")


def _host(fn, label):
    """Host (Python + launch) time per call by op: what the GPU waits for when calls are small."""
    print(f"--- {label}: host self time per call by op (us)")
    for ev in sorted(_events(fn, torch.profiler.ProfilerActivity.CPU), key=lambda e: -e.self_cpu_time_total)[:12]:
        print(f"{ev.self_cpu_time_total / 5:>10.1f}  x{ev.count // 5:<3} {ev.key[:80]}")


def _host_pieces(pieces):
    """Host time per call of each piece, 50 calls queued without a sync in between (what the CPU spends)."""
    import time

    for label, fn in pieces:
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(50):
            fn()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        print(f"  host {label:<28} {(t1 - t0) / 50 * 1e6:>8.1f} us/call queued, {(t2 - t0) / 50 * 1e6:>8.1f} us/call with drain")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()
    dt = getattr(torch, a.dtype)
    configs = [Config(64, 64, 4, 3), Config(128, 64, 4, 3), Config(128, 64, 8, 3), Config(128, 32, 4, 3),
               Config(128, 64, 8, 4), Config(128, 128, 8, 3), Config(64, 32, 4, 4), Config(64, 64, 4, 2), Config(128, 128, 4, 2), Config(128, 64, 4, 2)]
    for n in a.n:
        q, k, v, seg = _inputs(n, "cuda", dt)
        sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # noqa: E731
        full = lambda: attn_stats_kernel(q, k, v, scale=0.125, causal=True, segments=seg, key_mass=True,  # noqa: E731
                                         backend="triton")
        bare = lambda: attn_stats_kernel(q, k, v, scale=0.125, causal=True, backend="triton")  # noqa: E731
        print(f"\n===== n={n} {a.dtype}: sdpa {do_bench(sdpa):.3f} ms | full {do_bench(full):.3f} ms | "
              f"no segments/key_mass {do_bench(bare):.3f} ms")
        _profile(full, "full (2 segments + key_mass)")
        _profile(sdpa, "sdpa")
        _host(full, "full")
        from interp.attnstats.kernels.triton_kernel import _classes
        _host_pieces([("validate", lambda: validate(q, k, v, scale=0.125, key_valid=None, segments=seg, softcap=None,
                                                     edit=None, backend="triton", causal=True, rows=None)),
                      ("_classes", lambda: _classes(seg)), ("bare call", bare), ("full call", full)])
        prob = validate(q, k, v, scale=0.125, key_valid=None, segments=seg, softcap=None, edit=None,
                        backend="triton", causal=True, rows=None)
        kw = dict(scale=0.125, causal=True, key_valid=None, segments=seg, key_mass=False, softcap=None)
        print("config sweep, main pass with 2 segments (no key_mass):")
        for cfg in configs:
            try:
                t = do_bench(lambda: attn_stats_triton(q, k, v, prob, config=cfg, **kw))
                print(f"  {cfg}: {t:.3f} ms")
            except Exception as e:  # out of shared memory etc.
                print(f"  {cfg}: failed ({str(e).splitlines()[0][:80]})")


if __name__ == "__main__":
    main()
