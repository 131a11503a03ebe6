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


# The flex backend compiled on CUDA (FlexAttention returns the row max there, so max_weight is checked too).
from test_kernels_flex import NOT_IMPLEMENTED, _check  # noqa: E402


@pytest.mark.parametrize("edit_name", ["none", "scale", "mix"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"s{c[0]}")
def test_compiled_flex_matches_reference(case, edit_name):
    assert edit_name not in NOT_IMPLEMENTED
    q, k, v, kv, seg = _cuda(*_draw(case[0], *case[1:7], case[8]))
    kw = _kw(case, seg, kv, EDITS[edit_name])
    want = {"lse", "max_weight"} | ({"entropy"} if case[9] is None and edit_name != "mix" else set())
    ref = attn_stats_kernel(q, k, v, backend="reference", **kw)
    got = attn_stats_kernel(q, k, v, backend="flex", stats=tuple(want), **kw)
    _check(ref, got, want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("engine", ["flex", "flash"])
def test_compiled_flex_half_precision(dtype, engine):
    """Half inputs: the statistics against the cpu backend's float32 run on the same rounded inputs. The widened
    output P·K is rounded to the input dtype, so entropy is checked to 2^-8 of scale·|q|·|P K| (+1e-3)."""
    q, k, v, kv, seg = _cuda(*_draw(41, 1, 9, 3, 1025, 1025, 64, "left"))
    kw = dict(scale=0.125, causal=True, key_valid=kv, segments=seg, key_mass=True)
    half = [t.to(dtype) for t in (q, k, v)]
    want = ("lse", "entropy") + (("max_weight",) if engine == "flex" else ())
    got = attn_stats_kernel(*half, backend=engine, stats=want, **kw)
    same = attn_stats_kernel(*[t.float() for t in half], backend="cpu", **kw)
    bound = 2.0 ** -8 * 0.125 * half[0].float().norm(dim=-1) * half[1].float().norm(dim=-1).max() + 1e-3
    fin = torch.isfinite(same.lse)
    assert bool(((got.entropy - same.entropy).abs() <= bound)[fin].all())
    for name, tol in (("lse", 1e-2), ("max_weight", 1e-2), ("segment_mass", 1e-2), ("key_mass", 0.5)):
        g = getattr(got, name)
        if g is not None:
            s = getattr(same, name)
            torch.testing.assert_close(g[torch.isfinite(s)], s[torch.isfinite(s)], atol=tol, rtol=1e-2, msg=name)
