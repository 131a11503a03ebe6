"""Attention-statistics kernels: cpu and triton (interpreter mode) against the float64 reference."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any triton import: run triton kernels on CPU

import math
import warnings

import pytest
import torch

from interp.attnstats.kernels import HeadEdit, KernelStats, attn_stats_kernel, triton_available
from interp.attnstats.kernels.edits import RowOverride
from interp.errors import DeviceMismatchError, InputError

HAS_TRITON = triton_available() and os.environ.get("TRITON_INTERPRET") == "1"


def _draw(seed, B, H, KV, Q, K, D, pad=None, n_seg=2):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Q, D, generator=g)
    k = torch.randn(B, KV, K, D, generator=g)
    v = torch.randn(B, KV, K, D, generator=g)
    kv = None
    if pad is not None:
        kv = torch.ones(B, K, dtype=torch.bool)
        for b in range(B):
            n = [K // 3, 1, 0][b % 3]
            if n:
                if pad == "left":
                    kv[b, :n] = False
                else:
                    kv[b, K - n :] = False
    seg = torch.zeros(B, n_seg, K)
    seg[:, 0, 0] = 1  # first token (attention sink)
    if n_seg > 1:
        seg[:, 1, K // 4 : K // 2 + 1] = 1  # one span
    return q, k, v, kv, seg


def _compare(ref: KernelStats, got: KernelStats, tol=1e-4, mtol=1e-5):
    for name, t in (("out", tol), ("lse", tol), ("entropy", tol), ("max_weight", mtol),
                    ("segment_mass", mtol), ("key_mass", mtol)):
        a, b = getattr(ref, name), getattr(got, name)
        if a is None:
            assert b is None, name
            continue
        assert a.shape == b.shape, name
        assert not torch.isnan(b).any(), name
        fin = torch.isfinite(a)
        assert torch.equal(fin, torch.isfinite(b)), name
        torch.testing.assert_close(b[fin].double(), a[fin].double(), atol=t, rtol=0, msg=name)
    assert got.argmax.dtype == torch.int64
    assert torch.equal(ref.argmax == -1, got.argmax == -1)


def _argmax_ok(q, k, v, kw, ref, got):
    """Argmax equal wherever the reference's top-2 gap exceeds 1e-4 (checked on the rows that differ)."""
    mism = ref.argmax != got.argmax
    if not mism.any():
        return
    assert not ((ref.argmax == -1) | (got.argmax == -1))[mism].any()
    H, KV = q.shape[1], k.shape[1]
    s = q.double() @ k.double().repeat_interleave(H // KV, 1).transpose(-1, -2) * kw["scale"]
    s_ref = s.gather(-1, ref.argmax.clamp_min(0)[..., None])[..., 0]
    s_got = s.gather(-1, got.argmax.clamp_min(0)[..., None])[..., 0]
    assert torch.all((s_ref - s_got).abs()[mism] <= 1e-4), "argmax differs where the top-2 gap exceeds 1e-4"


# (seed, B, H, KV, Q, K, D, causal, pad, softcap)
CASES = [
    (1, 3, 6, 6, 1, 1, 8, True, None, None),
    (2, 3, 6, 2, 17, 17, 48, True, "left", None),
    (3, 3, 6, 1, 17, 17, 64, False, "right", None),
    (4, 3, 6, 2, 97, 97, 8, True, "right", 30.0),
    (5, 3, 6, 6, 97, 97, 48, False, "left", None),
    (6, 3, 6, 1, 1, 97, 64, True, "left", None),  # one decoding step
    (7, 3, 6, 2, 1, 97, 48, False, None, None),
    (8, 3, 6, 1, 97, 97, 64, True, None, 20.0),
    (9, 3, 6, 2, 40, 60, 8, True, "left", None),
]
CASES_CPU_ONLY = [
    (10, 3, 6, 2, 1025, 1025, 64, True, "left", None),
    (11, 3, 6, 6, 1025, 1025, 8, False, "right", None),
]
CASE_TRITON_LONG = (12, 1, 2, 1, 1025, 1025, 8, True, "left", None)

EDITS = {
    "none": None,
    "scale": HeadEdit(segment_scale=[[0.0, 2.0]] * 3 + [[0.5, 1.0]] * 3, out_scale=[1.0, 2.0, 0.5, 1.0, -1.0, 3.0]),
    "redistribute": HeadEdit(segment_redistribute=[[0.4, 1.5]] * 6),
    "mix": HeadEdit(uniform_mix=[0.0, 0.2, 0.5, 1.0, 0.3, 0.1], identity_mix=[0.1, 0.0, 0.4, 0.0, 1.0, 0.2]),
    "all": HeadEdit(segment_scale=0.5, segment_redistribute=0.3, uniform_mix=0.25, identity_mix=0.25, out_scale=2.0),
    # per batch row ([batch, head]) parameters, and a SetPattern row in every batch row plus one in row 2
    "per_row": HeadEdit(uniform_mix=[[0.0] * 6, [0.5] * 6, [0.1, 0.2, 0.3, 0.4, 0.5, 1.0]],
                        segment_redistribute=[[[0.4, 1.5]] * 6, [[1.0, 1.0]] * 6, [[0.0, 2.0]] * 6],
                        out_scale=[[1.0] * 6, [2.0] * 6, [-1.0] * 6]),
    "set_rows": HeadEdit(identity_mix=0.3, set_rows=RowOverride(
        torch.tensor([-1, 2]), torch.tensor([1, 4]), torch.tensor([0, 3]),
        torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]]))),
}


def _kw(case, seg, kv, edit=None, key_mass=True):
    _, B, H, KV, Q, K, D, causal, pad, softcap = case
    return dict(scale=D ** -0.5, causal=causal, key_valid=kv, segments=seg, key_mass=key_mass,
                softcap=softcap, edit=edit)


def _run_case(case, backend, edit_name="none"):
    seed, B, H, KV, Q, K, D, causal, pad, softcap = case
    q, k, v, kv, seg = _draw(seed, B, H, KV, Q, K, D, pad)
    if edit_name == "set_rows":
        kv = None  # the written rows (queries 0 and 3) must be real tokens with their keys visible
    kw = _kw(case, seg, kv, EDITS[edit_name])
    ref = attn_stats_kernel(q, k, v, backend="reference", **kw)
    got = attn_stats_kernel(q, k, v, backend=backend, **kw)
    _compare(ref, got)
    _argmax_ok(q, k, v, kw, ref, got)
    return ref, got


@pytest.fixture(params=["c", "torch"])
def row_pass(request, monkeypatch):
    """The cpu backend's two row passes: the compiled one (``_rows.c``) and its pure-PyTorch fallback."""
    monkeypatch.setenv("INTERP_NO_CEXT", "0" if request.param == "c" else "1")
    return request.param


@pytest.mark.parametrize("case", CASES + CASES_CPU_ONLY, ids=lambda c: f"s{c[0]}")
def test_cpu_matches_reference(case, row_pass):
    _run_case(case, "cpu")


def test_c_row_pass_builds_here():
    """Where there is a C compiler the fast row pass must build, or every cpu timing silently takes the fallback."""
    from interp.attnstats.kernels._cext import _compiler, build_error, rows_lib

    if _compiler() is None:
        pytest.skip("no C compiler on this machine: the PyTorch row pass runs (tested above)")
    assert rows_lib() is not None, build_error()


@pytest.mark.parametrize("n_seg", [1, 3, 12])  # 12 > C_MAX_SEGMENTS: masses as columns of P·V instead
@pytest.mark.parametrize("pad", [None, "left", "right"])
@pytest.mark.parametrize("logits", ["plain", "softcap", "segment_scale"])
def test_c_row_pass_equals_torch_pass(monkeypatch, n_seg, pad, logits):
    q, k, v, kv, seg = _draw(21, 3, 9, 3, 131, 131, 64, pad, n_seg=n_seg)
    seg[:, -1] = (torch.arange(131) % 3 == 0).float()  # a non-contiguous segment
    seg[0, 0] = 0  # an empty segment in one batch row; in another, a span elsewhere (keys 70..89)
    seg[1, 0] = 0
    seg[1, 0, 70:90] = 1
    edit = HeadEdit(segment_scale=[[0.0] + [2.0] * (n_seg - 1)] * 9) if logits == "segment_scale" else None
    kw = dict(scale=0.125, causal=True, key_valid=kv, segments=seg, key_mass=True, rows=(torch.tensor([0, 4, 8]),
              torch.tensor([[0, 130]] * 3)), softcap=30.0 if logits == "softcap" else None, edit=edit)
    monkeypatch.setenv("INTERP_NO_CEXT", "1")
    slow = attn_stats_kernel(q, k, v, backend="cpu", **kw)
    monkeypatch.setenv("INTERP_NO_CEXT", "0")
    fast = attn_stats_kernel(q, k, v, backend="cpu", **kw)
    _compare(slow, fast, tol=2e-5, mtol=2e-6)
    assert torch.equal(slow.argmax, fast.argmax)
    torch.testing.assert_close(fast.rows, slow.rows, atol=2e-6, rtol=0)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_argmax_ties_take_the_first_key(backend, row_pass):
    """Equal keys give equal scores: argmax is the first visible key (after left padding) in every row, across
    the C pass's vector lanes and its scalar tail (19 keys = 2 lanes of 8 + 3)."""
    B, K = 2, 19
    q = torch.randn(B, 3, K, 8)
    k = torch.ones(B, 1, K, 8)
    kv = torch.ones(B, K, dtype=torch.bool)
    kv[1, :5] = False
    r = attn_stats_kernel(q, k, torch.randn(B, 1, K, 8), scale=0.3, causal=True, key_valid=kv, backend=backend)
    assert torch.equal(r.argmax[0], torch.zeros(3, K, dtype=torch.int64))
    assert torch.equal(r.argmax[1, :, 5:], torch.full((3, K - 5), 5))
    assert torch.equal(r.argmax[1, :, :5], torch.full((3, 5), -1))  # rows with no visible key


def test_without_a_compiler_the_torch_pass_runs(tmp_path):
    """No C compiler: the kernel still runs (pure PyTorch) and says why the fast pass is off."""
    import subprocess
    import sys

    code = ("import torch; from interp.attnstats.kernels import attn_stats_kernel as f;"
            "from interp.attnstats.kernels._cext import rows_lib, build_error;"
            "q = torch.randn(1, 2, 9, 8); r = f(q, q, q, scale=0.3, causal=True, backend='cpu');"
            "assert rows_lib() is None and not torch.isnan(r.entropy).any(); print(build_error())")
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "INTERP_CACHE": str(tmp_path), "INTERP_NO_CEXT": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "no-such-cc" in out.stdout


@pytest.mark.parametrize("edit_name", list(EDITS))
@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]], ids=lambda c: f"s{c[0]}")
def test_cpu_edits_match_reference(case, edit_name, row_pass):
    _run_case(case, "cpu", edit_name)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not importable")
@pytest.mark.parametrize("case", CASES + [CASE_TRITON_LONG], ids=lambda c: f"s{c[0]}")
def test_triton_matches_reference(case):
    _run_case(case, "triton")


@pytest.mark.skipif(not HAS_TRITON, reason="triton not importable")
@pytest.mark.parametrize("case,edit_name", [(CASES[1], e) for e in EDITS]
                         + [(CASES[8], "all"), (CASES[3], "all"), (CASES[5], "per_row")], ids=lambda x: x if isinstance(x, str) else f"s{x[0]}")
def test_triton_edits_match_reference(case, edit_name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every edit runs natively: no fallback warning
        _run_case(case, "triton", edit_name)


@pytest.mark.parametrize("backend", ["cpu", "reference"] + (["triton"] if HAS_TRITON else []))
def test_partition_masses_sum_to_one_and_no_nan(backend):
    q, k, v, kv, _ = _draw(21, 3, 6, 2, 17, 17, 8, "left")
    seg = torch.zeros(3, 3, 17)
    seg[:, 0, :5] = 1
    seg[:, 1, 5:11] = 1
    seg[:, 2, 11:] = 1
    r = attn_stats_kernel(q, k, v, scale=0.3, causal=True, key_valid=kv, segments=seg, key_mass=True, backend=backend)
    visible = r.argmax >= 0
    assert (~visible).any()  # left padding + causal leaves empty rows
    torch.testing.assert_close(r.segment_mass.sum(-1)[visible], torch.ones(int(visible.sum())), atol=1e-5, rtol=0)
    empty = ~visible
    assert torch.all(r.out[empty] == 0) and torch.all(r.lse[empty] == -torch.inf)
    assert torch.all(r.entropy[empty] == 0) and torch.all(r.max_weight[empty] == 0)
    assert torch.all(r.segment_mass[empty] == 0)
    for t in (r.out, r.entropy, r.max_weight, r.segment_mass, r.key_mass, r.lse):
        assert not torch.isnan(t).any()
    # key_mass sums to the number of valid (non-padding) queries
    torch.testing.assert_close(r.key_mass.sum(-1), kv.sum(-1, keepdim=True).float().expand(3, 6), atol=1e-4, rtol=0)


@pytest.mark.parametrize("edit", [
    HeadEdit(),
    HeadEdit(out_scale=[1.0] * 6, segment_scale=[[1.0, 1.0]] * 6, segment_redistribute=[[1.0, 1.0]] * 6,
             uniform_mix=[0.0] * 6, identity_mix=[0.0] * 6),
])
def test_identity_edits_change_nothing(edit):
    assert edit.is_identity()
    q, k, v, kv, seg = _draw(22, 3, 6, 2, 17, 17, 8, "right")
    kw = dict(scale=0.35, causal=True, key_valid=kv, segments=seg, key_mass=True)
    base = attn_stats_kernel(q, k, v, backend="cpu", **kw)
    got = attn_stats_kernel(q, k, v, backend="cpu", edit=edit, **kw)
    for name in ("out", "lse", "entropy", "max_weight", "argmax", "segment_mass", "key_mass"):
        assert torch.equal(getattr(base, name), getattr(got, name)), name
    assert not HeadEdit(uniform_mix=[0.0] * 5 + [0.1]).is_identity()


@pytest.mark.parametrize("backend", ["cpu", "reference"] + (["triton"] if HAS_TRITON else []))
def test_uniform_causal_entropy(backend):
    Q = 33
    q = torch.zeros(2, 3, Q, 8)
    g = torch.Generator().manual_seed(23)
    k, v = torch.randn(2, 3, Q, 8, generator=g), torch.randn(2, 3, Q, 8, generator=g)
    r = attn_stats_kernel(q, k, v, scale=1.0, causal=True, backend=backend)
    expected = torch.log(torch.arange(1, Q + 1, dtype=torch.float32)).expand(2, 3, Q)
    torch.testing.assert_close(r.entropy, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.max_weight, 1 / torch.arange(1, Q + 1, dtype=torch.float32).expand(2, 3, Q))


def _three_key_row(backend, edit):
    """One query seeing 3 keys with attention (0.5, 0.3, 0.2); v = identity so out is the attention row."""
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    q = torch.zeros(1, 1, 1, 16)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, 3, 16)
    k[0, 0, :, 0] = logits
    v = torch.zeros(1, 1, 3, 16)
    v[0, 0, torch.arange(3), torch.arange(3)] = 1.0
    seg = torch.tensor([[[1.0, 0.0, 0.0]]])
    return attn_stats_kernel(q, k, v, scale=1.0, causal=True, segments=seg, edit=edit, backend=backend)


@pytest.mark.parametrize("backend", ["cpu", "reference"] + (["triton"] if HAS_TRITON else []))
def test_zerotuning_oracle(backend):
    r = _three_key_row(backend, HeadEdit(segment_scale=[[2.0]]))
    torch.testing.assert_close(r.out[0, 0, 0, :3], torch.tensor([2 / 3, 0.2, 0.4 / 3]), atol=1e-5, rtol=0)
    torch.testing.assert_close(r.segment_mass[0, 0, 0, 0], torch.tensor(2 / 3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_act_oracle(backend):
    K = 24  # d_head == key_pos so that v can be the identity
    q, k, v, kv, _ = _draw(24, 2, 3, 3, K, K, K)
    c = 0  # sink column
    seg = torch.zeros(2, 1, K)
    seg[:, 0, c] = 1
    eye = torch.eye(K).expand(2, 3, K, K)  # v = identity so out == attention row
    kw = dict(scale=0.5, causal=True, segments=seg)
    A = attn_stats_kernel(q, k, eye, backend=backend, **kw).out.double()
    A2 = attn_stats_kernel(q, k, eye, backend=backend, edit=HeadEdit(segment_redistribute=0.4), **kw).out.double()
    Ac = A[..., c : c + 1]
    rows = (Ac < 1 - 1e-6).squeeze(-1)  # the first query sees only the sink (m == 1): unchanged
    torch.testing.assert_close(A2[..., c][rows], 0.4 * Ac[..., 0][rows], atol=1e-5, rtol=0)
    factor = 1 + 0.6 * Ac / (1 - Ac)
    others = torch.ones(K, dtype=torch.bool)
    others[c] = False
    torch.testing.assert_close(A2[rows][:, others], (A * factor)[rows][:, others], atol=1e-5, rtol=0)
    torch.testing.assert_close(A2[~rows], A[~rows])
    torch.testing.assert_close(A2.sum(-1), torch.ones_like(A2.sum(-1)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_identity_mix_one_returns_own_value(backend):
    q, k, v, kv, _ = _draw(25, 2, 6, 2, 13, 20, 8)
    r = attn_stats_kernel(q, k, v, scale=0.4, causal=True, edit=HeadEdit(identity_mix=1.0), backend=backend)
    own = v.repeat_interleave(3, 1)[:, :, 20 - 13 :]
    torch.testing.assert_close(r.out, own, atol=1e-6, rtol=0)
    assert torch.all(r.entropy.abs() < 1e-6) and torch.equal(r.argmax[0, 0], torch.arange(7, 20))


@pytest.mark.parametrize("backend", ["cpu", "reference"] + (["triton"] if HAS_TRITON else []))
def test_gqa_equals_repeated_mha(backend):
    q, k, v, kv, seg = _draw(26, 2, 6, 2, 17, 17, 8, "left")
    kw = dict(scale=0.35, causal=True, key_valid=kv, segments=seg, key_mass=True)
    gqa = attn_stats_kernel(q, k, v, backend=backend, **kw)
    mha = attn_stats_kernel(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), backend=backend, **kw)
    _compare(mha, gqa, tol=1e-5, mtol=1e-6)
    assert torch.equal(gqa.argmax, mha.argmax)


def test_auto_backend_on_cpu_is_cpu():
    q, k, v, kv, seg = _draw(27, 1, 2, 1, 5, 5, 8)
    a = attn_stats_kernel(q, k, v, scale=0.3, causal=True)
    c = attn_stats_kernel(q, k, v, scale=0.3, causal=True, backend="cpu")
    assert torch.equal(a.out, c.out) and a.segment_mass is None and a.key_mass is None


def test_bad_inputs_raise_clear_errors():
    q, k, v, kv, seg = _draw(28, 2, 6, 2, 5, 7, 8)
    kw = dict(scale=0.3, causal=True)
    with pytest.raises(DeviceMismatchError, match="dtype"):
        attn_stats_kernel(q, k.double(), v, **kw)
    with pytest.raises(DeviceMismatchError, match="dtype"):
        attn_stats_kernel(q.long(), k.long(), v.long(), **kw)
    with pytest.raises(InputError, match="not divisible"):
        attn_stats_kernel(q, k[:, :1].expand(2, 4, 7, 8), v[:, :1].expand(2, 4, 7, 8), **kw)
    with pytest.raises(InputError, match="key_pos 5 < query_pos 7"):
        attn_stats_kernel(k.repeat_interleave(3, 1), q[:, :2], v[:, :, :5], **kw)
    with pytest.raises(InputError, match="4-D"):
        attn_stats_kernel(q[0], k, v, **kw)
    with pytest.raises(InputError, match="d_head"):
        attn_stats_kernel(q, k, v[..., :4], **kw)
    with pytest.raises(InputError, match="segments has shape"):
        attn_stats_kernel(q, k, v, segments=seg[:, :, :5], **kw)
    with pytest.raises(InputError, match="0/1"):
        attn_stats_kernel(q, k, v, segments=seg * 0.5 + 0.25, **kw)
    with pytest.raises(InputError, match="key_valid has shape"):
        attn_stats_kernel(q, k, v, key_valid=torch.ones(2, 5, dtype=torch.bool), **kw)
    with pytest.raises(InputError, match="bool"):
        attn_stats_kernel(q, k, v, key_valid=torch.ones(2, 7), **kw)
    with pytest.raises(InputError, match="unknown backend .gpu.; use one of auto, cpu, triton, reference, flex, flash"):
        attn_stats_kernel(q, k, v, backend="gpu", **kw)
    with pytest.raises(InputError, match="softcap"):
        attn_stats_kernel(q, k, v, softcap=-1.0, **kw)
    with pytest.raises(InputError, match=r"uniform_mix must lie in \[0, 1\]"):
        attn_stats_kernel(q, k, v, edit=HeadEdit(uniform_mix=1.5), **kw)
    with pytest.raises(InputError, match="segment_scale must be >= 0"):
        attn_stats_kernel(q, k, v, segments=seg, edit=HeadEdit(segment_scale=-1.0), **kw)
    with pytest.raises(InputError, match="needs segments"):
        attn_stats_kernel(q, k, v, edit=HeadEdit(segment_redistribute=0.5), **kw)
    with pytest.raises(InputError, match=r"shape \[3\] but must be \[6\]"):
        attn_stats_kernel(q, k, v, edit=HeadEdit(out_scale=[1.0, 2.0, 3.0]), **kw)
    for err in (InputError, DeviceMismatchError):
        try:
            attn_stats_kernel(q, k.double(), v, **kw) if err is DeviceMismatchError else attn_stats_kernel(
                q, k, v, backend="x", **kw)
        except err as e:
            assert "\n" not in str(e)


def test_triton_on_cpu_without_interpreter_falls_back(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v, kv, seg = _draw(29, 1, 2, 1, 5, 5, 8)
    with pytest.warns(UserWarning, match="TRITON_INTERPRET"):
        r = attn_stats_kernel(q, k, v, scale=0.3, causal=True, backend="triton")
    assert math.isfinite(float(r.lse[0, 0, -1]))


ALL_BACKENDS = ["reference", "cpu"] + (["triton"] if HAS_TRITON else [])


def _row_of(edit: HeadEdit, b: int) -> HeadEdit:
    """Row ``b``'s parameters of a per-row edit, as a per-head edit for a batch of one."""
    pick = lambda t: None if t is None else torch.as_tensor(t, dtype=torch.float64)[b]  # noqa: E731
    return HeadEdit(**{n: pick(getattr(edit, n)) for n in ("out_scale", "segment_scale", "segment_redistribute",
                                                             "uniform_mix", "identity_mix")})


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_per_row_edits_equal_separate_runs(backend):
    g = torch.Generator().manual_seed(31)
    q, k, v, kv, seg = _draw(31, 3, 6, 2, 21, 21, 16, "left")
    edit = HeadEdit(segment_scale=torch.rand(3, 6, 2, generator=g) * 2, segment_redistribute=torch.rand(3, 6, 2, generator=g),
                    uniform_mix=torch.rand(3, 6, generator=g), identity_mix=torch.rand(3, 6, generator=g) * 0.5,
                    out_scale=torch.randn(3, 6, generator=g))
    kw = dict(scale=0.25, causal=True, key_mass=True)
    both = attn_stats_kernel(q, k, v, key_valid=kv, segments=seg, edit=edit, backend=backend, **kw)
    for b in range(3):
        one = attn_stats_kernel(q[b:b + 1], k[b:b + 1], v[b:b + 1], key_valid=kv[b:b + 1], segments=seg[b:b + 1],
                                edit=_row_of(edit, b), backend=backend, **kw)
        for name in ("out", "lse", "entropy", "max_weight", "segment_mass", "key_mass"):
            a, c = getattr(both, name)[b:b + 1], getattr(one, name)
            fin = torch.isfinite(c)
            torch.testing.assert_close(a[fin], c[fin], atol=1e-5, rtol=0, msg=name)
        assert torch.equal(both.argmax[b:b + 1], one.argmax)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_set_rows_writes_exact_rows(backend):
    q, k, v, kv, seg = _draw(32, 2, 6, 2, 9, 12, 16)
    w = torch.tensor([[0.0, 0.25, 0.0, 0.75], [1.0, 0.0, 0.0, 0.0]])
    edit = HeadEdit(uniform_mix=0.5, set_rows=RowOverride(torch.tensor([-1, 1]), torch.tensor([2, 5]),
                                                          torch.tensor([7, 3 + 3]), w))
    heads, queries = torch.tensor([2, 5, 0]), torch.tensor([4, 3, 8])  # query index 4 is absolute position 7
    r = attn_stats_kernel(q, k, v, scale=0.3, causal=True, edit=edit, backend=backend, rows=(heads, queries))
    torch.testing.assert_close(r.rows[:, 0, 0, :4], w[0].expand(2, 4))
    assert torch.all(r.rows[:, 0, 0, 4:] == 0)
    torch.testing.assert_close(r.rows[1, 1, 1, :4], w[1])  # row 1, head 5, absolute query 6 (index 3)
    sums = r.rows.sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-6, rtol=0)
    torch.testing.assert_close(r.entropy[0, 2, 4], torch.tensor(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))))
    assert r.argmax[0, 2, 4] == 3 and abs(float(r.max_weight[0, 2, 4]) - 0.75) < 1e-6


def test_set_rows_validation():
    q, k, v, kv, seg = _draw(33, 1, 2, 1, 6, 6, 16)
    bad = {
        "cannot see": torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.5]]),  # query 2 cannot see key 4
        "sum to": torch.tensor([[0.5, 0.2, 0.0]]),
        ">= 0": torch.tensor([[1.5, -0.5, 0.0]]),
    }
    for msg, w in bad.items():
        ov = RowOverride(torch.tensor([0]), torch.tensor([1]), torch.tensor([2]), w)
        with pytest.raises(InputError, match=msg):
            attn_stats_kernel(q, k, v, scale=0.3, causal=True, edit=HeadEdit(set_rows=ov))
    kv = torch.tensor([[False, True, True, True, True, True]])
    ov = RowOverride(torch.tensor([0]), torch.tensor([1]), torch.tensor([2]), torch.tensor([[1.0, 0.0, 0.0]]))
    with pytest.raises(InputError, match="cannot see"):  # key 0 is padding
        attn_stats_kernel(q, k, v, scale=0.3, causal=True, key_valid=kv, edit=HeadEdit(set_rows=ov))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_rows_match_reference(backend):
    case = CASES[8]  # 40 queries over 60 keys, GQA, left padding
    q, k, v, kv, seg = _draw(case[0], *case[1:7], case[8])
    rows = (torch.tensor([5, 0]), torch.tensor([[39, 0, 17], [12, 39, 39], [1, 2, 3]]))
    kw = _kw(case, seg, kv, EDITS["all"])
    ref = attn_stats_kernel(q, k, v, backend="reference", rows=rows, **kw)
    got = attn_stats_kernel(q, k, v, backend=backend, rows=rows, **kw)
    assert got.rows.shape == (3, 2, 3, 60)
    torch.testing.assert_close(got.rows, ref.rows, atol=1e-6, rtol=0)


# Documented tolerances for half-precision inputs (stats stay fp32): against the float64 reference on the same
# (rounded) inputs the statistics agree to ~1e-6; against fp32 inputs they differ by the input rounding.
HALF_TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3}


@pytest.mark.skipif(not HAS_TRITON, reason="triton not importable")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_inputs_fp32_stats(dtype):
    q, k, v, kv, seg = _draw(34, 2, 4, 2, 70, 70, 64, "right")
    kw = dict(scale=0.125, causal=True, key_valid=kv, segments=seg, key_mass=True, edit=EDITS["mix"].__class__(uniform_mix=0.2))
    half = [t.to(dtype) for t in (q, k, v)]
    got = attn_stats_kernel(*half, backend="triton", **kw)
    same = attn_stats_kernel(*[t.double() for t in half], backend="reference", **kw)
    fp32 = attn_stats_kernel(q, k, v, backend="reference", **kw)
    assert got.out.dtype == dtype and got.entropy.dtype == torch.float32
    for name in ("lse", "entropy", "max_weight", "segment_mass", "key_mass"):
        g, s, f = getattr(got, name), getattr(same, name), getattr(fp32, name)
        fin = torch.isfinite(s)
        torch.testing.assert_close(g[fin], s[fin], atol=2e-5, rtol=0, msg=name)
        torch.testing.assert_close(g[fin], f[fin], atol=HALF_TOL[dtype], rtol=0, msg=name)
    torch.testing.assert_close(got.out.float(), fp32.out, atol=5 * HALF_TOL[dtype], rtol=0)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not importable")
def test_triton_small_tiles_walk_many_blocks(monkeypatch):
    """32×32 tiles: the online rescaling, the two-stage causal walk and ragged tails over 4 key blocks."""
    from interp.attnstats.kernels import triton_kernel as tk

    monkeypatch.setattr(tk, "choose_config", lambda *a: tk.Config(32, 32, 4, 2))
    case = (35, 1, 4, 2, 40, 70, 16, True, "left", 20.0)
    q, k, v, kv, seg = _draw(case[0], *case[1:7], case[8])
    for edit in (None, EDITS["all"]):
        kw = _kw(case, seg, kv, edit)
        ref = attn_stats_kernel(q, k, v, backend="reference", **kw)
        got = attn_stats_kernel(q, k, v, backend="triton", **kw)
        _compare(ref, got)
        _argmax_ok(q, k, v, kw, ref, got)


@pytest.mark.parametrize("script, args, message", [
    ("attn_kernel.py", ["--sizes", "512,abc"], "--sizes takes comma-separated integers"),
    ("attn_kernel.py", ["--sizes", "0"], "--sizes must all be at least 1"),
    ("attn_kernel.py", ["--reps", "0"], "--reps and --threads must be at least 1"),
    ("attn_stats.py", ["--rounds", "0"], "--rounds must be at least 1, got 0"),
    ("attn_stats.py", ["--n", "0"], "--n must be at least 1, got 0"),
    ("attn_stats.py", ["--n", "99999"], "context of 8192; use a smaller size"),
])
def test_kernel_benchmarks_reject_bad_arguments_in_one_line(script, args, message):
    """The fused-path benchmarks end bad arguments in one line and exit code 2, before any model or timing."""
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    out = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=120)
    err = out.stderr.strip()
    assert out.returncode == 2 and message in err and len(err.splitlines()) == 1, err


# Sliding windows and learned sink logits. (seed, B, H, KV, Q, K, D, pad, window, sinks, softcap):
# windows shorter than the prompt, of one key, and longer than it; odd lengths, GQA/MQA, batch > 1, decoding
# steps (Q < K), a block boundary crossed (Q > 64) and left padding longer than the window.
BAND_CASES = [
    (21, 3, 6, 2, 37, 37, 16, "left", 5, False, None),
    (22, 3, 6, 2, 37, 37, 16, "right", 1, True, None),
    (23, 2, 4, 1, 131, 131, 8, "left", 17, True, None),
    (24, 2, 4, 4, 131, 131, 24, "right", 64, False, 10.0),
    (25, 3, 6, 3, 1, 97, 8, "left", 9, True, None),
    (26, 3, 6, 2, 40, 60, 8, None, 33, True, 5.0),
    (27, 1, 2, 1, 200, 200, 8, "left", 500, True, None),
    (28, 3, 6, 6, 97, 97, 48, "left", 3, True, None),
]


def _band_case(case, backend, edit=None, rows=None):
    seed, B, H, KV, Q, K, D, pad, window, sinks, softcap = case
    q, k, v, kv, seg = _draw(seed, B, H, KV, Q, K, D, pad)
    z = 2 * torch.randn(H, generator=torch.Generator().manual_seed(seed)) if sinks else None
    kw = dict(scale=D ** -0.5, causal=True, key_valid=kv, segments=seg, key_mass=True, softcap=softcap,
              window=window, sinks=z, edit=edit, rows=rows)
    ref = attn_stats_kernel(q, k, v, backend="reference", **kw)
    got = attn_stats_kernel(q, k, v, backend=backend, **kw)
    _compare(ref, got)
    _argmax_ok(q, k, v, kw, ref, got)
    assert (ref.sink_mass is None) == (not sinks) and (got.sink_mass is None) == (not sinks)
    if sinks:
        torch.testing.assert_close(got.sink_mass, ref.sink_mass, atol=1e-5, rtol=0)
    if rows is not None:
        torch.testing.assert_close(got.rows, ref.rows, atol=1e-5, rtol=0)
    return q, k, v, kv, seg, z, ref, got


@pytest.mark.parametrize("case", BAND_CASES, ids=lambda c: f"s{c[0]}")
def test_windows_and_sinks_match_reference(case, row_pass):
    _band_case(case, "cpu")


@pytest.mark.parametrize("case", BAND_CASES[:4], ids=lambda c: f"s{c[0]}")
def test_windows_and_sinks_with_edits_match_reference(case, row_pass):
    """Logit edits combine with sinks; probability edits (here: mixes) with windows only (refused with sinks)."""
    H, Q = case[2], case[4]
    edit = HeadEdit(segment_scale=[[0.0, 2.0]] * (H // 2) + [[0.5, 1.0]] * (H // 2), out_scale=2.0)
    _band_case(case, "cpu", edit, rows=([0, H - 1], [[0, Q // 2, Q - 1]] * case[1]))
    if not case[9]:
        _band_case(case, "cpu", HeadEdit(uniform_mix=0.3, identity_mix=0.2, segment_redistribute=0.5))


def test_window_reference_is_a_band_and_sink_a_valueless_column():
    """The reference against its definition: a masked float64 softmax over [scores | sink]."""
    case = (30, 2, 4, 2, 23, 23, 8, "left", 4, True, None)
    q, k, v, kv, seg, z, ref, _ = _band_case(case, "cpu")
    s = (q.double() @ k.double().repeat_interleave(2, 1).transpose(-1, -2)) * 8 ** -0.5
    i = torch.arange(23)
    vis = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - 4) & kv[:, None, None, :]
    s = torch.cat([s.masked_fill(~vis, -torch.inf), z.double()[None, :, None, None].expand(2, 4, 23, 1)], -1)
    p = torch.softmax(s, -1)
    torch.testing.assert_close(ref.sink_mass.double(), p[..., -1], atol=1e-6, rtol=0)
    torch.testing.assert_close(ref.entropy.double(), -torch.special.xlogy(p, p).sum(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(ref.out.double(), p[..., :-1] @ v.double().repeat_interleave(2, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(ref.max_weight.double(), p[..., :-1].max(-1).values, atol=1e-6, rtol=0)


def test_padding_rows_outside_the_window_are_empty_not_nan(row_pass):
    """Left padding longer than the window: padding queries see no real key. They get the empty-row values
    (lse -inf or the sink logit, entropy 0, argmax -1), never NaN; real queries always see their own key."""
    for sinks in (False, True):
        case = (31, 2, 4, 2, 30, 30, 8, "left", 2, sinks, None)
        q, k, v, kv, seg, z, ref, got = _band_case(case, "cpu")
        pad_rows = ~kv[:, None, :].expand(-1, 4, -1)
        assert not any(torch.isnan(t).any() for t in (got.out, got.lse, got.entropy, got.max_weight))
        assert bool((got.argmax[pad_rows] == -1).all()) and bool((got.entropy[pad_rows] == 0).all())
        if sinks:
            assert bool((got.sink_mass[pad_rows] == 1).all())
            assert torch.equal(got.lse[pad_rows], z[None, :, None].expand_as(got.lse)[pad_rows])
        assert bool((got.argmax[~pad_rows] >= 0).all())


def test_window_and_sink_bad_values_raise_one_line():
    q, k, v, kv, seg = _draw(0, 1, 2, 1, 5, 5, 8)
    for window, msg in ((0, "at least 1"), (-3, "at least 1"), (2.5, "positive integer"), ("4", "positive integer")):
        with pytest.raises(InputError, match=msg):
            attn_stats_kernel(q, k, v, scale=1.0, causal=True, window=window)
    with pytest.raises(InputError, match="non-causal"):
        attn_stats_kernel(q, k, v, scale=1.0, causal=False, window=2)
    with pytest.raises(InputError, match=r"head_index=2"):
        attn_stats_kernel(q, k, v, scale=1.0, causal=True, sinks=torch.zeros(3))
    with pytest.raises(InputError, match="finite"):
        attn_stats_kernel(q, k, v, scale=1.0, causal=True, sinks=torch.tensor([0.0, float("nan")]))
    with pytest.raises(InputError, match="sink logits"):
        attn_stats_kernel(q, k, v, scale=1.0, causal=True, sinks=torch.zeros(2), edit=HeadEdit(uniform_mix=0.5))
    from interp.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="backend='eager'"):
        attn_stats_kernel(q, k, v, scale=1.0, causal=True, window=2, backend="triton")
    # a window no shorter than the keys masks nothing: identical to no window
    a = attn_stats_kernel(q, k, v, scale=1.0, causal=True, window=5, backend="cpu")
    b = attn_stats_kernel(q, k, v, scale=1.0, causal=True, backend="cpu")
    assert torch.equal(a.entropy, b.entropy)

