"""The GPU table of issue 21: the ``flex`` backend, the Triton kernel and SDPA side by side, with peak memory.

Rows (for each dtype): one SmolLM2 layer without key mass and with key mass (9/3 heads, d_head 64, causal,
2 segments, batch 1), and the whole model (``benchmarks/gpu_model.py``'s SmolLM2-135M architecture, random
weights), each against its target as a multiple of SDPA (<= 1.3×, <= 2.5×, <= 1.3×). ``flex`` computes
``lse, entropy, max_weight`` (no argmax: no identity gives it); triton computes every statistic. ``ent err`` is
flex's largest entropy difference from the cpu backend run in float32 on the same (rounded) inputs: the rounding
of the widened output ``P·K`` to the input dtype. Median of ``--reps`` calls after one warm-up (which also
compiles).

    PYTHONPATH=. python benchmarks/gpu_table.py                 # CUDA: n = 8192, bfloat16 and float16
    PYTHONPATH=. python benchmarks/gpu_table.py --smoke         # any machine: the same code on CPU at n = 32
                                                                # (eager Flex, interpreted Triton; timings meaningless)
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

TARGETS = {"layer": 1.3, "layer+km": 2.5, "model": 1.3}
FLEX_STATS = ("lse", "entropy", "max_weight")  # on CUDA; eager Flex on a CPU returns no row max (smoke: no max_weight)


def _timed(fn, reps: int, cuda: bool) -> tuple[float, float]:
    """Median seconds over ``reps`` calls (``attn_kernel``'s timer) after a warm-up, and the peak memory the call
    adds (GiB; nan on CPU)."""
    import torch

    from attn_kernel import _median_time

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn()  # compiles, so that the memory baseline below is the steady state
    sync()
    base = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    median = _median_time(fn, reps, sync)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if cuda else float("nan")
    return median, peak


def layer_row(dtype, n: int, key_mass: bool, device: str, reps: int, heads=(9, 3, 64)) -> dict:
    import torch

    from attn_kernel import _inputs, _sdpa
    from interp.attnstats.kernels import attn_stats_kernel

    q, k, v, seg = _inputs(n, device, dtype, *heads)
    kw = dict(scale=0.125, causal=True, segments=seg, key_mass=key_mass)
    cuda = device == "cuda"
    with torch.no_grad():
        t_sdpa, m_sdpa = _timed(lambda: _sdpa(q, k, v), reps, cuda)
        t_flex, m_flex = _timed(lambda: attn_stats_kernel(q, k, v, backend="flex", stats=FLEX_STATS, **kw), reps, cuda)
        t_tri, m_tri = _timed(lambda: attn_stats_kernel(q, k, v, backend="triton", **kw), reps, cuda)
        got = attn_stats_kernel(q, k, v, backend="flex", stats=FLEX_STATS, **kw)
        same = attn_stats_kernel(*(t.float() for t in (q, k, v)), backend="cpu", stats=("entropy",), **kw)
    err = float((got.entropy - same.entropy).abs().max())
    return dict(what="layer+km" if key_mass else "layer", n=n, sdpa=(t_sdpa, m_sdpa), flex=(t_flex, m_flex),
                triton=(t_tri, m_tri), err=err)


def model_row(dtype, n: int, device: str, reps: int, config: dict) -> dict:
    import torch

    from gpu_model import model_for
    from interp.attnstats import attention_stats

    model = model_for(dtype, "sdpa", device, config)
    toks = torch.randint(0, config["vocab_size"], (1, n), generator=torch.Generator().manual_seed(n)).to(device)
    segs = {"first": "first", "span": (n // 2, n // 2 + min(16, n // 4))}
    kw = dict(segments=segs, key_mass=True)
    cuda = device == "cuda"
    with torch.no_grad():
        t_sdpa, m_sdpa = _timed(lambda: model(input_ids=toks, use_cache=False).logits, reps, cuda)
        t_flex, m_flex = _timed(lambda: attention_stats(model, toks, backend="flex", stats=FLEX_STATS, **kw).logits, reps, cuda)
        t_tri, m_tri = _timed(lambda: attention_stats(model, toks, backend="triton", **kw).logits, reps, cuda)
    del model
    return dict(what="model", n=n, sdpa=(t_sdpa, m_sdpa), flex=(t_flex, m_flex), triton=(t_tri, m_tri), err=None)


def print_table(rows: list[dict], device_name: str) -> None:
    print(f"issue 21 GPU table ({device_name}): flex vs triton vs SDPA; ms = median, GiB = peak added by the call;"
          f" flex computes {', '.join(FLEX_STATS)}, triton every statistic")
    head = (f"{'dtype':>8} | {'measure':>8} | {'n':>5} | {'sdpa ms':>8} | {'flex ms':>8} | {'triton ms':>9} | "
            f"{'flex/sdpa':>9} | {'tri/sdpa':>8} | {'target':>6} | {'flex ok':>7} | {'sdpa GiB':>8} | {'flex GiB':>8} | "
            f"{'tri GiB':>7} | {'ent err':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        (ts, ms), (tf, mf), (tt, mt) = r["sdpa"], r["flex"], r["triton"]
        target = TARGETS[r["what"]]
        err = "-" if r["err"] is None else f"{r['err']:.1e}"
        print(f"{r['dtype']:>8} | {r['what']:>8} | {r['n']:>5} | {ts * 1e3:>8.2f} | {tf * 1e3:>8.2f} | {tt * 1e3:>9.2f} | "
              f"{tf / ts:>9.2f} | {tt / ts:>8.2f} | {target:>5.1f}× | {'yes' if tf / ts <= target else 'NO':>7} | "
              f"{ms:>8.2f} | {mf:>8.2f} | {mt:>7.2f} | {err:>7}", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="sequence length (default 8192; 32 with --smoke)")
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"], choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--smoke", action="store_true", help="run the table's code on the CPU at a tiny size (tests)")
    a = ap.parse_args(argv)
    n = a.n if a.n is not None else (32 if a.smoke else 8192)
    if n < 8 or a.reps < 1:
        print(f"error: --n must be at least 8 and --reps at least 1 (got {n}, {a.reps})", file=sys.stderr)
        raise SystemExit(2)
    if a.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: the triton column runs interpreted
        global FLEX_STATS
        FLEX_STATS = ("lse", "entropy")
    import torch

    from gpu_model import SMOLLM2, TINY

    if not a.smoke and not torch.cuda.is_available():
        print("error: no CUDA device; the table times the GPU path (--smoke runs its code on the CPU)", file=sys.stderr)
        raise SystemExit(2)
    device = "cpu" if a.smoke else "cuda"
    config = TINY if a.smoke else SMOLLM2
    dtypes = ["float32"] if a.smoke else a.dtypes
    import warnings

    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    rows = []
    for name in dtypes:
        dt = getattr(torch, name)
        for km in (False, True):
            rows.append(dict(layer_row(dt, n, km, device, a.reps, (2, 1, 8) if a.smoke else (9, 3, 64)), dtype=name))
        rows.append(dict(model_row(dt, n, device, a.reps, config), dtype=name))
        if device == "cuda":
            torch.cuda.empty_cache()
    print_table(rows, "CPU smoke run, timings meaningless" if a.smoke else torch.cuda.get_device_name())


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
