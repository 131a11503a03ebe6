"""The triton kernel compiled for a real GPU (skipped without CUDA): ``benchmarks/gpu_check.sh`` runs this file
with ``TRITON_INTERPRET=0``. Same cases as the interpreter tests, plus fp16/bf16 and a long context."""
import pytest
import torch

from interp.attnstats.kernels import attn_stats_kernel, triton_available

from test_kernels import CASES, EDITS, HALF_TOL, _argmax_ok, _compare, _draw, _kw

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and triton_available()), reason="needs CUDA and triton")


def _cuda(*ts):
    return [None if t is None else t.cuda() for t in ts]


@pytest.mark.parametrize("edit_name", list(EDITS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"s{c[0]}")
def test_compiled_triton_matches_reference(case, edit_name):
    q, k, v, kv, seg = _cuda(*_draw(case[0], *case[1:7], case[8]))
    if edit_name == "set_rows":
        kv = None
    kw = _kw(case, seg, kv, EDITS[edit_name])
    ref = attn_stats_kernel(q, k, v, backend="reference", **kw)
    got = attn_stats_kernel(q, k, v, backend="triton", **kw)
    _compare(ref, got)
    _argmax_ok(q, k, v, kw, ref, got)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [1025, 8192])
def test_compiled_half_precision(dtype, n):
    q, k, v, kv, seg = _cuda(*_draw(40, 1, 9, 3, n, n, 64, "left"))
    kw = dict(scale=0.125, causal=True, key_valid=kv, segments=seg, key_mass=True)
    half = [t.to(dtype) for t in (q, k, v)]
    got = attn_stats_kernel(*half, backend="triton", **kw)
    same = attn_stats_kernel(*[t.float() for t in half], backend="cpu", **kw)  # fp32 stats of the same inputs
    for name in ("lse", "entropy", "max_weight", "segment_mass", "key_mass"):
        g, s = getattr(got, name), getattr(same, name)
        fin = torch.isfinite(s)
        torch.testing.assert_close(g[fin], s[fin], atol=1e-3 if name == "key_mass" else 1e-4, rtol=0, msg=name)
    torch.testing.assert_close(got.out.float(), same.out, atol=5 * HALF_TOL[dtype], rtol=0)
