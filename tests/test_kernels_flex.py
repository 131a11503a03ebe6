"""The flex/flash backends (exact identities on FlexAttention and the SDPA flash operator) against the float64
reference on every case of the kernel tests, through three engines of the one attention primitive: ``dense``
(its float64 reference, which also returns the row max), eager ``flex`` and the CPU ``flash`` operator."""
import types

import pytest
import torch

from interp.attnstats.kernels import attn_stats_kernel, choose_backend
from interp.attnstats.kernels._common import validate
from interp.attnstats.kernels.attend import Mask, attend
from interp.attnstats.kernels.flex import attn_stats_flex
from interp.errors import InputError

from interp.attnstats.kernels import HeadEdit
from test_kernels import BAND_CASES, CASES, CASES_CPU_ONLY, EDITS, _draw, _kw

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

ENGINES = ["dense", "flex", "flash"]
NOT_IMPLEMENTED = set()  # every edit has an exact identity
NAMES = ("out", "lse", "entropy", "max_weight", "segment_mass", "key_mass")


def _expected(engine, case, edit_name):
    """What the backend must give exactly here (None: it must refuse the whole call), and what it must refuse."""
    softcap = case[9]
    if edit_name == "set_rows" and case[5] - case[4] > 3:  # the written queries (0, 3) are not in this call
        edit_name = "identity_mix"
    if edit_name in NOT_IMPLEMENTED or (engine == "flash" and softcap is not None):
        return None, set()
    refused = {"argmax"}
    if engine != "dense" or edit_name in ("redistribute", "all", "per_row"):  # on a CPU only the dense engine
        refused.add("max_weight")  # returns the row max; under redistribute no per-class max
    if softcap is not None or edit_name in ("mix", "all", "per_row"):  # softcap: scores not bilinear; uniform mix
        refused.add("entropy")
    return {"lse", "entropy", "max_weight"} - refused, refused


def _run(engine, q, k, v, kw, want):
    if engine == "dense":
        prob = validate(q, k, v, scale=kw["scale"], key_valid=kw["key_valid"], segments=kw["segments"],
                        softcap=kw["softcap"], edit=kw["edit"], backend="auto", causal=kw["causal"])
        return attn_stats_flex(q, k, v, prob, engine="dense", want=frozenset(want),
                               **{n: kw[n] for n in ("scale", "causal", "key_valid", "segments", "key_mass", "softcap")})
    return attn_stats_kernel(q, k, v, backend=engine, stats=tuple(want), **kw)


def _check(ref, got, want, tol=1e-4):
    for name in NAMES:
        a, b = getattr(ref, name), getattr(got, name)
        if name in ("lse", "entropy", "max_weight") and name not in want:
            assert b is None, name
            continue
        if a is None:
            assert b is None, name
            continue
        fin = torch.isfinite(a)
        assert not torch.isnan(b).any() and torch.equal(fin, torch.isfinite(b)), name
        torch.testing.assert_close(b[fin].double(), a[fin].double(), atol=tol, rtol=0, msg=name)
    assert got.argmax is None


def _case(engine, case, edit_name):
    seed, B, H, KV, Q, K, D, causal, pad, softcap = case
    q, k, v, kv, seg = _draw(seed, B, H, KV, Q, K, D, pad)
    if edit_name == "set_rows":
        kv = None
    kw = _kw(case, seg, kv, EDITS[edit_name])
    want, refused = _expected(engine, case, edit_name)
    if engine != "dense":
        if want is None:
            with pytest.raises(InputError, match="backend='cpu'") as e:
                attn_stats_kernel(q, k, v, backend=engine, stats=("lse",), **kw)
            assert "\n" not in str(e.value)
            return
        for stat in refused:  # each statistic it cannot give exactly is refused in one line naming cpu
            with pytest.raises(InputError, match=f"cannot give {stat}.*backend='cpu'") as e:
                attn_stats_kernel(q, k, v, backend=engine, stats=(*want, stat), **kw)
            assert "\n" not in str(e.value)
    if want is None:
        return
    ref = attn_stats_kernel(q, k, v, backend="reference", **kw)
    got = _run(engine, q, k, v, kw, want)
    assert got.backend == ("" if engine == "dense" else engine)
    _check(ref, got, want)


@pytest.mark.parametrize("edit_name", list(EDITS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"s{c[0]}")
@pytest.mark.parametrize("engine", ENGINES)
def test_flex_backends_match_reference(engine, case, edit_name):
    _case(engine, case, edit_name)


# the long cases of the kernel tests with one batch row (the float64 reference dominates their time)
LONG = [((c[0], 1, *c[2:]), e) for c, e in zip(CASES_CPU_ONLY, ["mix", "scale"])]


@pytest.mark.parametrize("case,edit_name", LONG, ids=lambda x: x if isinstance(x, str) else f"s{x[0]}")
@pytest.mark.parametrize("engine", ["flex", "flash"])
def test_flex_backends_long_rows(engine, case, edit_name):
    _case(engine, case, edit_name)


@pytest.mark.parametrize("engine", ["flex", "flash"])
def test_identity_mix_entropy_and_max_weight(engine):
    """Entropy and max_weight under identity_mix (with segment scaling) come from p_own exactly; max_weight is
    checked on the dense engine (the CPU engines return no row max)."""
    case = CASES[8]
    q, k, v, kv, seg = _draw(case[0], *case[1:7], case[8])
    edit = EDITS["mix"].__class__(identity_mix=[0.1, 0.0, 0.4, 1.0, 0.7, 0.2], segment_scale=[[0.0, 2.0]] * 6)
    kw = _kw(case, seg, kv, edit)
    ref = attn_stats_kernel(q, k, v, backend="reference", **kw)
    _check(ref, _run(engine, q, k, v, kw, {"lse", "entropy"}), {"lse", "entropy"})
    _check(ref, _run("dense", q, k, v, kw, {"lse", "entropy", "max_weight"}), {"lse", "entropy", "max_weight"})


@pytest.mark.parametrize("engine", ["flex", "flash"])
@pytest.mark.parametrize("shape", [(2, 6, 3, 9, 5, 8, 13, -4, True), (2, 6, 2, 5, 9, 8, 13, 4, False),
                                   (1, 2, 1, 1, 9, 8, 8, 8, False), (2, 4, 4, 7, 7, 16, 16, None, False)])
def test_attend_engines_match_dense(engine, shape):
    """The one primitive, with row and column masks and biases (-inf included), causal and reversed offsets."""
    B, H, KV, M, N, E, W, off, rev = shape
    g = torch.Generator().manual_seed(M * N)
    q, k, v = torch.randn(B, H, M, E, generator=g), torch.randn(B, KV, N, E, generator=g), torch.randn(B, KV, N, W, generator=g)
    mask = Mask(off, rev, torch.rand(B, N, generator=g) > 0.3, torch.rand(B, M, generator=g) > 0.2)
    cb, rb = torch.randn(B, H, N, generator=g), torch.randn(B, H, M, generator=g)
    cb[0, :, 1] = -torch.inf
    o0, l0, _ = attend("dense", q, k, v, mask, scale=0.3, col_bias=cb, row_bias=rb)
    o1, l1, m1 = attend(engine, q, k, v, mask, scale=0.3, col_bias=cb, row_bias=rb)
    assert m1 is None and torch.equal(torch.isfinite(l0), torch.isfinite(l1))
    torch.testing.assert_close(o1, o0, atol=1e-5, rtol=0)
    fin = torch.isfinite(l0)
    torch.testing.assert_close(l1[fin], l0[fin], atol=1e-5, rtol=0)
    assert torch.all(o1[~fin] == 0)


def test_stats_subset_and_bad_names():
    q, k, v, kv, seg = _draw(3, 2, 4, 2, 9, 9, 8, "left")
    r = attn_stats_kernel(q, k, v, scale=0.3, causal=True, backend="cpu", stats=("entropy",))
    assert r.entropy is not None and r.lse is None and r.max_weight is None and r.argmax is None
    with pytest.raises(InputError, match="unknown statistic 'entropie'"):
        attn_stats_kernel(q, k, v, scale=0.3, causal=True, stats=("entropie",))


def _fake_cuda():
    return types.SimpleNamespace(is_cuda=True, device=torch.device("cuda"))


def test_auto_choice(monkeypatch):
    """auto: cpu on a CPU; on CUDA flex when it is exact for the statistics asked, else triton (else cpu)."""
    from interp.attnstats import kernels

    q, k, v, kv, seg = _draw(4, 1, 2, 1, 5, 5, 8)
    prob = validate(q, k, v, scale=0.3, key_valid=None, segments=None, softcap=None, edit=None, backend="auto")
    assert attn_stats_kernel(q, k, v, scale=0.3, causal=True, stats=("lse", "entropy")).backend == "cpu"
    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    cuda = _fake_cuda()
    assert choose_backend(cuda, prob, frozenset({"lse", "entropy", "max_weight"}), None) == "flex"
    assert choose_backend(cuda, prob, frozenset({"entropy", "argmax"}), None) == "triton"
    assert choose_backend(cuda, prob, frozenset({"entropy"}), 30.0) == "triton"  # entropy under a softcap
    assert choose_backend(cuda, prob, frozenset({"lse", "max_weight"}), 30.0) == "flex"
    monkeypatch.setattr(kernels, "triton_available", lambda: False)
    assert choose_backend(cuda, prob, frozenset({"argmax"}), None) == "cpu"


@pytest.fixture(scope="module")
def tiny_llama():
    import transformers as T

    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=97, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                        hidden_size=48, intermediate_size=96, initializer_range=0.3)
    return T.LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("backend", ["flex", "flash"])
def test_attention_stats_with_flex_backends(tiny_llama, backend):
    from interp.attnstats import attention_stats

    toks = torch.randint(1, 97, (2, 30), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(toks)
    mask[1, :7] = 0
    kw = dict(attention_mask=mask, key_mass=True, segments={"first": "first", "s": (3, 9)})
    ref = attention_stats(tiny_llama, toks, backend="reference", **kw)
    st = attention_stats(tiny_llama, toks, backend=backend, stats=("lse", "entropy"), **kw)
    assert st.backend == backend and st.argmax is None and st.max_weight is None
    real = mask.bool()[:, None, None].expand_as(ref.entropy)
    torch.testing.assert_close(st.entropy[real], ref.entropy[real], atol=1e-4, rtol=0)
    torch.testing.assert_close(st.key_mass, ref.key_mass, atol=1e-4, rtol=0)
    torch.testing.assert_close(st.segment_mass[real], ref.segment_mass[real], atol=1e-5, rtol=0)
    assert set(st.to_frame().metric) == {"entropy", "normalized_entropy", "mass:first", "mass:s"}
    with pytest.raises(InputError, match="cannot give argmax"):
        attention_stats(tiny_llama, toks, backend=backend, **kw)


@pytest.mark.parametrize("case", BAND_CASES, ids=lambda c: f"s{c[0]}")
@pytest.mark.parametrize("engine", ENGINES)
def test_windows_and_sinks_match_reference(engine, case):
    """Sliding windows (a band in mask_mod; refused by the flash engine) and sink logits (an lse correction)."""
    seed, B, H, KV, Q, K, D, pad, window, sinks, softcap = case
    q, k, v, kv, seg = _draw(seed, B, H, KV, Q, K, D, pad)
    z = 2 * torch.randn(H, generator=torch.Generator().manual_seed(seed)) if sinks else None
    edit = None if sinks else HeadEdit(uniform_mix=0.3, identity_mix=0.2)  # mixes are refused with sinks
    if seed % 2:
        edit = HeadEdit(segment_scale=[[0.0, 2.0]] * (H // 2) + [[0.5, 1.0]] * (H // 2), out_scale=2.0)
    kw = dict(scale=D ** -0.5, causal=True, key_valid=kv, segments=seg, key_mass=True, softcap=softcap,
              window=window, sinks=z, edit=edit)
    want = {"lse"} | ({"max_weight"} if engine == "dense" else set())
    if softcap is None and (edit is None or edit.uniform_mix is None):
        want.add("entropy")
    if engine == "flash" and ((window is not None and window < K) or softcap is not None):
        with pytest.raises(InputError, match="backend='flex'") as e:
            attn_stats_kernel(q, k, v, backend="flash", stats=tuple(want), **kw)
        assert "\n" not in str(e.value)
        return
    ref = attn_stats_kernel(q, k, v, backend="reference", **kw)
    if engine == "dense":
        prob = validate(q, k, v, scale=kw["scale"], key_valid=kv, segments=seg, softcap=softcap, edit=edit,
                        backend="auto", window=window, sinks=z)
        got = attn_stats_flex(q, k, v, prob, engine="dense", want=frozenset(want),
                              **{n: kw[n] for n in ("scale", "causal", "key_valid", "segments", "key_mass", "softcap")})
    else:
        got = attn_stats_kernel(q, k, v, backend=engine, stats=tuple(want), **kw)
    _check(ref, got, want)
    assert (got.sink_mass is None) == (not sinks)
    if sinks:
        torch.testing.assert_close(got.sink_mass, ref.sink_mass, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_gpu_table_smoke_run():
    """`make gpu-check`'s table runs its code end to end on the CPU (tiny sizes), so it does not break on first GPU
    contact; and refuses bad arguments in one line."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_table.py"
    out = subprocess.run([sys.executable, str(script), "--smoke", "--reps", "1"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [l for l in out.stdout.splitlines() if l.strip().startswith("float32")]
    assert [l.split("|")[1].strip() for l in lines] == ["layer", "layer+km", "model"], out.stdout
    assert all(l.split("|")[8].strip() in ("1.3×", "2.5×") for l in lines)
    bad = subprocess.run([sys.executable, str(script), "--n", "2"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--n" in bad.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_rows_and_set_rows_match_reference(engine):
    """``rows=`` and SetPattern rows are recomputed from their scores and L (few rows): exact under mixes,
    segment scaling, redistribution and GQA; the written rows' key mass replaces the rows they overwrite."""
    from interp.attnstats.kernels.edits import RowOverride

    case = CASES[1]  # 17 queries, 6 heads over 2 kv heads
    q, k, v, _, seg = _draw(case[0], *case[1:7], case[8])
    ov = RowOverride(torch.tensor([-1, 2]), torch.tensor([1, 4]), torch.tensor([0, 3]),
                     torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]]))
    edit = HeadEdit(identity_mix=0.3, uniform_mix=0.2, segment_scale=[[0.0, 2.0]] * 6, out_scale=2.0, set_rows=ov,
                    segment_redistribute=[[0.4, 1.5]] * 6)
    rows = (torch.tensor([1, 4, 5]), torch.tensor([[0, 3, 16], [3, 3, 9], [1, 2, 3]]))
    kw = dict(scale=0.3, causal=True, key_valid=None, segments=seg, key_mass=True, softcap=None, edit=edit)
    ref = attn_stats_kernel(q, k, v, backend="reference", rows=rows, **kw)
    want = {"lse"}
    if engine == "dense":
        prob = validate(q, k, v, scale=0.3, key_valid=None, segments=seg, softcap=None, edit=edit, backend="auto", rows=rows)
        got = attn_stats_flex(q, k, v, prob, engine="dense", want=frozenset(want),
                              **{n: kw[n] for n in ("scale", "causal", "key_valid", "segments", "key_mass", "softcap")})
    else:
        got = attn_stats_kernel(q, k, v, backend=engine, stats=tuple(want), rows=rows, **kw)
    _check(ref, got, want)
    torch.testing.assert_close(got.rows, ref.rows, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("engine", ["flex", "flash"])
def test_half_inputs_within_the_stated_bound(engine, dtype):
    """fp16/bf16 inputs: entropy within 2^-8·scale·|q|·max|k| (+1e-3) of the float32 statistics of the same rounded
    inputs (the kernel rounds the widened output P·K to the input dtype); flex's lse and key mass stay at float32
    accuracy (its biases act on float32 scores), flash's biases ride in an input dimension and are rounded."""
    q, k, v, kv, seg = _draw(41, 1, 9, 3, 257, 257, 64, "left")
    kw = dict(scale=0.125, causal=True, key_valid=kv, segments=seg, key_mass=True)
    half = [t.to(dtype) for t in (q, k, v)]
    same = attn_stats_kernel(*[t.float() for t in half], backend="cpu", **kw)
    got = attn_stats_kernel(*half, backend=engine, stats=("lse", "entropy"), **kw)
    bound = 2.0 ** -8 * 0.125 * half[0].float().norm(dim=-1) * half[1].float().norm(dim=-1).max() + 1e-3
    fin = torch.isfinite(same.lse)
    assert bool(((got.entropy - same.entropy).abs() <= bound)[fin].all())
    tol = 1e-5 if engine == "flex" else 2e-2
    torch.testing.assert_close(got.lse[fin], same.lse[fin], atol=tol * 10, rtol=0)
    torch.testing.assert_close(got.key_mass, same.key_mass, atol=tol, rtol=1e-2)
