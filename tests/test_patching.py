"""Activation patching (vs TransformerLens), path patching, AtP/AtP*, IOI and ITI."""
import numpy as np
from scipy.stats import spearmanr
import pandas as pd
import pytest
import torch
from transformer_lens import patching as tl_patching

import interp
from interp import HeadId
from interp.analyze.attribution import attribution_patching
from interp.analyze.patching import activation_patching, path_patching
from interp.errors import InputError
from interp.hooks import CaptureSpec
from _util import last_logit_diff as _metric


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(b=3, n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(3, 259, (b, n), generator=g)
    clean[:, 0] = 1
    bad = clean.clone()
    bad[:, 2] = torch.randint(3, 259, (b,), generator=g)
    bad[:, n - 3] = 9
    return clean, bad


def _tl(model, clean, bad, metric, fn, index_df=None, site=None):
    with torch.no_grad():
        cl, cache = model.run_with_cache(clean)
        c0, b0 = float(metric(cl)), float(metric(model(bad)))
    norm = lambda lg: (metric(lg) - b0) / (c0 - b0)  # noqa: E731
    if index_df is None:
        return fn(model, bad, cache, norm).flatten()
    return tl_patching.generic_activation_patch(model, bad, cache, norm, fn, site, index_df=index_df)


CASES = [("resid_pre", "layer_pos", tl_patching.get_act_patch_resid_pre),
         ("attn_out", "layer_pos", tl_patching.get_act_patch_attn_out),
         ("z", "head", tl_patching.get_act_patch_attn_head_out_all_pos),
         ("z", "head_pos", tl_patching.get_act_patch_attn_head_out_by_pos),
         ("k", "head", tl_patching.get_act_patch_attn_head_k_all_pos),
         ("v", "head_pos", tl_patching.get_act_patch_attn_head_v_by_pos),
         ("q", "head", tl_patching.get_act_patch_attn_head_q_all_pos),
         ("pattern", "head", tl_patching.get_act_patch_attn_head_pattern_all_pos)]


PARAMS = [("llama", *c) for c in CASES] + [("gpt2", *c) for c in CASES if c[0] in ("resid_pre", "z", "k")]


@pytest.mark.parametrize("arch, site, by, fn", PARAMS, ids=[f"{a}-{s}-{b}" for a, s, b, _ in PARAMS])
def test_activation_patching_equals_transformerlens(arch, site, by, fn):
    model = interp.tiny_model(arch, num_hidden_layers=2)
    clean, bad = _pair(b=2, n=6)
    ref = _tl(model, clean, bad, _metric, fn)
    df = activation_patching(model, clean, bad, _metric, site=site, by=by)
    assert np.abs(df["value"].to_numpy() - ref.numpy()).max() < 1e-4


def test_patching_invariants(llama3):
    clean, bad = _pair()
    same = activation_patching(llama3, clean, clean, _metric, site="z", by="head", normalize=False)
    assert np.allclose(same["value"], same.attrs["clean"], atol=1e-6)  # clean→clean: no effect
    one = clean.clone()
    one[:, 4] = 77  # differs from clean at one position only
    df = activation_patching(llama3, clean, one, _metric, site="resid_pre", by="layer_pos", layers=[0])
    v = df.set_index("position")["value"]
    assert abs(v[4] - 1) < 1e-5 and v.drop(4).abs().max() < 1e-6  # §12 oracle
    layer = activation_patching(llama3, clean, bad, _metric, site="resid_pre", by="layer", layers=[0])
    assert abs(layer["value"].iloc[0] - 1) < 1e-5  # every position of resid_pre at layer 0 restores the clean metric


def test_patching_bad_input(llama3):
    clean, bad = _pair()
    with pytest.raises(InputError, match="different shapes"):
        activation_patching(llama3, clean, bad[:, :-1], _metric)
    with pytest.raises(InputError, match="scalar"):
        activation_patching(llama3, clean, bad, lambda lg: lg[:, -1, 5])
    with pytest.raises(InputError, match="no heads"):
        activation_patching(llama3, clean, bad, _metric, site="resid_pre", by="head")


def test_path_patching_to_logits_and_to_a_query(llama3):
    clean, bad = _pair()
    df = path_patching(llama3, clean, bad, _metric, senders=[HeadId(0, 1), HeadId(1, 4)])
    assert set(df["metric"]) == {"path_patch", "path_patch_rel"} and len(df) == 4
    # a last-layer sender reaches the logits only directly: path patching == activation patching of its z
    last = path_patching(llama3, clean, bad, _metric, senders=[HeadId(2, 3)])
    direct = interp.run(llama3, clean, [interp.Patch("z", 2, 3, source=interp.run(llama3, bad, capture=CaptureSpec(sites=("z",)))[1])])
    m_c, m_b = last.attrs["clean"], last.attrs["corrupt"]
    expect = (float(_metric(direct)) - m_c) / (m_b - m_c)
    assert abs(last.query("metric == 'path_patch'")["value"].iloc[0] - expect) < 1e-5
    q = path_patching(llama3, clean, bad, _metric, receivers=[("q", HeadId(2, 0))], senders=[HeadId(0, 2), HeadId(1, 0)])
    assert np.isfinite(q["value"]).all()
    with pytest.raises(InputError, match="not before"):
        path_patching(llama3, clean, bad, _metric, receivers=[("q", HeadId(1, 0))], senders=[HeadId(1, 2)])


def test_atp_oracles(llama3):
    clean, bad = _pair()
    zero = attribution_patching(llama3, clean, clean, _metric)
    assert zero["value"].abs().max() == 0  # noise == clean → ĉ = 0
    est = attribution_patching(llama3, clean, bad, _metric, block=3, direction="noising")  # awkward block size
    est2 = attribution_patching(llama3, clean, bad, _metric, block=64, direction="noising")
    assert np.allclose(est["value"], est2["value"], atol=1e-7)
    pos = attribution_patching(llama3, clean, bad, _metric, by="head_pos", direction="noising")
    z_pos = pos.query("metric == 'atp:z'").groupby(["layer", "head"])["value"].sum().to_numpy()
    assert np.allclose(z_pos, est.query("metric == 'atp:z'")["value"], atol=1e-6)
    # against exact noising (corrupted activation into the clean run) on this near-linear random model
    for node in ("z", "q", "k"):
        exact = activation_patching(llama3, bad, clean, _metric, site=node, by="head", normalize=False)
        c = exact["value"].to_numpy() - exact.attrs["corrupt"]
        name = f"atp*:{node}" if node in "qk" else f"atp:{node}"
        a = est.query("metric == @name")["value"].to_numpy()
        assert np.abs(a - c).max() < 0.2 * np.abs(c).max() + 1e-6
        assert spearmanr(a, c).correlation > 0.9
    gd = attribution_patching(llama3, clean, bad, _metric, graddrop=True, qk_fix=False)
    assert (gd.query("metric.str.startswith('atp_gd')", engine="python")["value"] >= 0).all()
    # AtP* adds q/k rows only: the head-output estimates are the same with and without it
    plain_z = attribution_patching(llama3, clean, bad, _metric, qk_fix=False, direction="noising").query("metric == 'atp:z'")
    assert np.array_equal(plain_z["value"].to_numpy(), est.query("metric == 'atp:z'")["value"].to_numpy())


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_atp_sign_convention_equals_exact_in_each_direction(llama3, direction):
    """Raw AtP estimates and exact patching effects (patched metric − base metric) agree in sign and rank in
    both directions, and every patching frame names its direction."""
    clean, bad = _pair()
    exact = activation_patching(llama3, clean, bad, _metric, site="z", by="head", direction=direction, normalize=False)
    est = attribution_patching(llama3, clean, bad, _metric, direction=direction, qk_fix=False)
    base = exact.attrs["corrupt"] if direction == "denoising" else exact.attrs["clean"]
    c = exact["value"].to_numpy() - base
    a = est.query("metric == 'atp:z'")["value"].to_numpy()
    assert spearmanr(a, c).correlation > 0.9
    big = np.abs(c) > 0.2 * np.abs(c).max()
    assert big.sum() >= 2 and (np.sign(a[big]) == np.sign(c[big])).all()
    assert est.attrs["clean"] == pytest.approx(exact.attrs["clean"], abs=1e-5)
    assert est.attrs["corrupt"] == pytest.approx(exact.attrs["corrupt"], abs=1e-5)
    source = exact.attrs["clean"] if direction == "denoising" else exact.attrs["corrupt"]
    assert est.attrs["scale"] == pytest.approx(source - base, abs=1e-5)
    norm = activation_patching(llama3, clean, bad, _metric, site="z", by="head", direction=direction)
    assert np.allclose(norm["value"], c / (source - base), atol=1e-5)
    pp = path_patching(llama3, clean, bad, _metric, senders=[HeadId(0, 1)])
    for df, want in ((exact, direction), (est, direction), (norm, direction), (pp, "noising")):
        assert (df["direction"] == want).all()


class _Scattered:
    """A constructed metric: the logit difference plus a large per-prompt offset that cancels in the mean, so the
    prompts scatter (sd ≈ 115) far more than the corruption moves the mean."""

    def __init__(self, offsets):
        self.offsets = torch.tensor(offsets)

    def per_prompt(self, lg):
        return lg[:, -1, 5] - lg[:, -1, 7] + self.offsets.to(lg.dtype)

    def __call__(self, lg):
        return self.per_prompt(lg).mean()


def test_normalized_effects_are_nan_with_a_reason_when_the_denominator_is_noise(llama3):
    from interp.stats import guard

    clean, bad = _pair(b=4)
    metric = _Scattered([100.0, -100.0, 100.0, -100.0])
    with pytest.warns(UserWarning, match="NaN"):
        df = activation_patching(llama3, clean, bad, metric, site="z", by="head")
    assert df["value"].isna().all() and df["reason"].str.contains("spread across prompts").all()
    assert (df["direction"] == "denoising").all()
    pp = path_patching(llama3, clean, bad, metric, senders=[HeadId(1, 4)])
    assert pp.query("metric == 'path_patch'")["value"].isna().all()
    raw = activation_patching(llama3, clean, bad, metric, site="z", by="head", normalize=False)
    assert raw["value"].notna().all() and "reason" not in raw.columns  # raw values need no denominator
    fine = activation_patching(llama3, clean, bad, _metric, site="z", by="head")  # the same corruption, no scatter
    assert fine["value"].notna().all() and "reason" not in fine.columns
    with pytest.warns(UserWarning):
        same = activation_patching(llama3, clean, clean, _metric, site="z", by="head")
    assert same["reason"].str.contains("is 0").all()
    assert guard(0.05, 1.0, "d") and not guard(0.2, 1.0, "d") and guard(0.0, float("nan"), "d")
    with pytest.raises(InputError, match="NaN values"):
        interp.schema.make_frame(df.drop(columns="reason"))


def test_iti_probe_shift_oracle(llama3):
    from interp.intervene.steering import iti_edits, last_token_site, probe_heads

    pos = [f"good {w} yes" for w in "abcdefghij"]
    neg = [f"bad {w} no" for w in "abcdefghij"]
    probes = probe_heads(llama3, pos, neg, val_fraction=0.3)
    assert set(probes.frame["metric"]) == {"probe_train_acc", "probe_val_acc", "sigma"}
    edits = iti_edits(probes, k=3, alpha=2.0)
    h = edits[0].head
    before = last_token_site(llama3, pos[:3], "z", layers=(h.layer,))[:, 0, h.head]
    from interp.intervene.run import run
    from interp.inputs import to_batch

    b = to_batch(llama3, pos[:3])
    _, cap = run(llama3, b.tokens, [edits[0]], capture=CaptureSpec(sites=("z",), layers=(h.layer,)), attention_mask=b.attention_mask)
    after = cap["z", h.layer][torch.arange(3), b.attention_mask.sum(1) - 1, h.head]
    w, theta, sigma = probes.weight[h.layer, h.head], probes.direction[h.layer, h.head], probes.sigma[h.layer, h.head]
    shift = (after - before) @ w
    assert torch.allclose(shift, 2.0 * sigma * w.norm() * torch.cosine_similarity(w, theta, 0) * torch.ones(3), atol=1e-4)
    with pytest.raises(InputError, match="k must lie"):
        iti_edits(probes, k=0)


def test_ioi_names_must_be_single_tokens(tiny_llama):
    from interp.tasks.ioi import single_tokens

    with pytest.raises(InputError, match="not a single token"):
        single_tokens(tiny_llama.tokenizer, ["Mary"], "name")  # the byte tokenizer splits it


@pytest.mark.smollm
def test_ioi_on_smollm2(smollm2):
    from interp.tasks.ioi import ioi

    d = ioi(smollm2, 16, seed=0)
    logits = interp.run(smollm2, d.clean)
    assert float(d.metric(logits)) > 1.0 and d.accuracy(logits) > 0.6
    assert float(d.metric(interp.run(smollm2, d.corrupted))) < float(d.metric(logits))
    with pytest.raises(InputError, match="not a single token"):
        ioi(smollm2, 4, names=["Mary", "John", "Tom", "James", "Bartholomewson"])


@pytest.mark.smollm
@pytest.mark.slow
def test_smollm2_patching_equals_transformerlens_and_sweep_equals_loop(smollm2):
    from interp.tasks.ioi import ioi

    d = ioi(smollm2, 2, seed=0, templates=[0])
    clean, bad = d.clean, d.corrupted
    from interp.inputs import to_batch

    toks_c, toks_b = to_batch(smollm2, clean).tokens, to_batch(smollm2, bad).tokens
    for site, by, layers, tl_name in [("resid_pre", "layer_pos", [3], "resid_pre"), ("attn_out", "layer_pos", [20], "attn_out"),
                                      ("z", "head", [14], "z"), ("z", "head_pos", [27], "z")]:
        df = activation_patching(smollm2, toks_c, toks_b, d.metric, site=site, by=by, layers=layers)
        if by == "head_pos":  # TL reruns the whole model per row: first, a middle and the last position (every
            last = int(df["position"].max())  # head); the tiny models compare every row of the grid
            df = df[df["position"].isin([0, last // 2, last])].reset_index(drop=True)
        cols = ["layer"] + (["position"] if by.endswith("pos") else []) + (["head"] if by.startswith("head") else [])
        setter = {"layer_pos": tl_patching.layer_pos_patch_setter, "head": tl_patching.layer_head_vector_patch_setter,
                  "head_pos": tl_patching.layer_pos_head_vector_patch_setter}[by]
        ref = _tl(smollm2, toks_c, toks_b, d.metric, setter, index_df=df[cols].rename(columns={"position": "pos"}).astype(int), site=tl_name)
        assert np.abs(df["value"].to_numpy() - ref.numpy()).max() < 1e-4, site
    heads = [HeadId(0, 0), HeadId(15, 4), HeadId(29, 8)]
    fast = interp.sweep_heads(smollm2, toks_c, lambda h: interp.ZeroAblate(h), d.metric, heads=heads, progress=False)
    slow = [float(d.metric(interp.run(smollm2, toks_c, [interp.ZeroAblate(h)]))) for h in heads]
    assert np.abs(fast["value"].to_numpy() - np.array(slow)).max() < 1e-5


@pytest.mark.parametrize("graddrop", [False, True])
def test_atp_keeps_no_activation_after_it_returns(llama3, monkeypatch, graddrop):
    """Every recorded activation is freed when the call returns. Hooks on the recorded tensors refer back to the
    record, a cycle through autograd that gc does not collect: chunked circuit discovery (one AtP pass per chunk)
    leaked each pass's activations until it ran out of memory."""
    import gc
    import weakref

    import interp.analyze.attribution as A

    refs = []
    keep = A._keep

    def spy(store, l, rec):
        hook = keep(store, l, rec)

        def wrapped(module, args):
            hook(module, args)
            refs.append(weakref.ref(args[0]))
        return wrapped

    monkeypatch.setattr(A, "_keep", spy)
    clean, bad = _pair()
    attribution_patching(llama3, clean, bad, _metric, graddrop=graddrop)
    gc.collect()
    assert len(refs) >= 2 and all(r() is None for r in refs)
