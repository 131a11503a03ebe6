"""Attention-statistics kernels: cpu and triton (interpreter mode) against the float64 reference."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any triton import: run triton kernels on CPU

import math
import warnings

import pytest
import torch

from interp.attnstats.kernels import HeadEdit, KernelStats, attn_stats_kernel, triton_available
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
}


def _kw(case, seg, kv, edit=None, key_mass=True):
    _, B, H, KV, Q, K, D, causal, pad, softcap = case
    return dict(scale=D ** -0.5, causal=causal, key_valid=kv, segments=seg, key_mass=key_mass,
                softcap=softcap, edit=edit)


def _run_case(case, backend, edit_name="none"):
    seed, B, H, KV, Q, K, D, causal, pad, softcap = case
    q, k, v, kv, seg = _draw(seed, B, H, KV, Q, K, D, pad)
    kw = _kw(case, seg, kv, EDITS[edit_name])
    ref = attn_stats_kernel(q, k, v, backend="reference", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # triton falls back to cpu for probability edits
        got = attn_stats_kernel(q, k, v, backend=backend, **kw)
    _compare(ref, got)
    _argmax_ok(q, k, v, kw, ref, got)
    return ref, got


@pytest.mark.parametrize("case", CASES + CASES_CPU_ONLY, ids=lambda c: f"s{c[0]}")
def test_cpu_matches_reference(case):
    _run_case(case, "cpu")


@pytest.mark.parametrize("edit_name", list(EDITS))
@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]], ids=lambda c: f"s{c[0]}")
def test_cpu_edits_match_reference(case, edit_name):
    _run_case(case, "cpu", edit_name)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not importable")
@pytest.mark.parametrize("case", CASES + [CASE_TRITON_LONG], ids=lambda c: f"s{c[0]}")
def test_triton_matches_reference(case):
    _run_case(case, "triton")


@pytest.mark.skipif(not HAS_TRITON, reason="triton not importable")
@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=lambda c: f"s{c[0]}")
def test_triton_logit_bias_edit(case):
    _run_case(case, "triton", "scale")


@pytest.mark.skipif(not HAS_TRITON, reason="triton not importable")
def test_triton_falls_back_for_probability_edits():
    case = CASES[1]
    q, k, v, kv, seg = _draw(0, *case[1:7], case[8])
    with pytest.warns(UserWarning, match="uniform_mix"):
        attn_stats_kernel(q, k, v, backend="triton", **_kw(case, seg, kv, EDITS["mix"]))


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
    with pytest.raises(InputError, match="unknown backend 'gpu'; use one of auto, cpu, triton, reference"):
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
