import math

import pytest
import torch
from torch import nn

from interp.analyze.entropy import analyze_entropy, entropy_frame, entropy_of
from interp.attnstats import attention_stats
from interp.edits import MixUniform
from interp.errors import InputError
from interp.schema import validate_frame
from interp.train import (EntropyRegularization, EntropyTracker, SigmaReparam, attention_logit_sigma,
                          entropy_lower_bound, entropy_regularization, sigma_reparam)
from interp.train.tiny_lm import TinyLM
from interp.types import HeadId


# --- spectral bound (methods.md §6) ---------------------------------------------------------------
@pytest.mark.parametrize("T", [2, 5, 64, 1000])
def test_bound_at_zero_is_log_T(T):
    assert entropy_lower_bound(0.0, T) == pytest.approx(math.log(T), abs=1e-12)


def test_bound_oracle_T2_sigma1():
    p = 1 / (1 + math.exp(-math.sqrt(2)))
    binary = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert entropy_lower_bound(1.0, 2) == pytest.approx(0.49420, abs=5e-6)
    assert binary == pytest.approx(entropy_lower_bound(1.0, 2), abs=1e-12)


def test_bound_is_tight_for_one_raised_logit():
    T, s = 7, 2.5
    delta = s * math.sqrt(T / (T - 1))
    logits = torch.zeros(T, dtype=torch.float64)
    logits[0] = delta
    assert float(entropy_of(logits.softmax(-1))) == pytest.approx(entropy_lower_bound(s, T), rel=1e-5)


def _check_random_case(T, d, dh, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, d, generator=g, dtype=torch.float64) * scale
    wq = torch.randn(d, dh, generator=g, dtype=torch.float64)
    wk = torch.randn(d, dh, generator=g, dtype=torch.float64)
    sig = attention_logit_sigma(wq, wk, x)
    ent = entropy_of((x @ wq @ wk.T @ x.T).softmax(-1).double())  # [T] one entropy per query row
    assert bool((ent >= entropy_lower_bound(sig, T) - 1e-6).all())


try:  # property test with hypothesis when it is installed, else a seeded sweep of the same space
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=60, deadline=None)
    @given(T=st.integers(2, 24), d=st.integers(1, 12), dh=st.integers(1, 8), scale=st.floats(0.01, 3.0),
           seed=st.integers(0, 2**31 - 1))
    def test_random_attention_never_below_bound(T, d, dh, scale, seed):
        _check_random_case(T, d, dh, scale, seed)
except ImportError:
    def test_random_attention_never_below_bound():
        g = torch.Generator().manual_seed(0)
        for seed in range(200):
            T, d, dh = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((2, 25), (1, 13), (1, 9)))
            _check_random_case(T, d, dh, float(torch.empty(1).uniform_(0.01, 3.0, generator=g)), seed)


def test_bound_bad_input():
    with pytest.raises(InputError, match="T >= 2"):
        entropy_lower_bound(1.0, 1)
    with pytest.raises(InputError, match=">= 0"):
        entropy_lower_bound(-1.0, 4)


# --- σReparam ---------------------------------------------------------------------------------------
def test_sigma_reparam_identity_at_init_and_gamma_after_convergence():
    torch.manual_seed(0)
    lin = nn.Linear(12, 9)
    x = torch.randn(5, 12)
    ref = lin(x).detach()
    sr = SigmaReparam(lin)
    assert torch.allclose(sr.eval()(x), ref, atol=1e-5)
    with torch.no_grad():
        lin.weight.add_(0.3 * torch.randn_like(lin.weight))  # the weight moves; power iteration tracks it
        sr.gamma.fill_(2.5)
    sr.train()
    for _ in range(200):
        sr(x)
    top = torch.linalg.svdvals(sr.effective_weight().detach())[0]
    assert float(top) == pytest.approx(2.5, rel=1e-4)


def test_sigma_reparam_buffers_persist_and_only_update_in_training():
    sr = SigmaReparam(nn.Linear(6, 4))
    assert {"u", "v"} <= set(dict(sr.named_buffers())) and "u" in sr.state_dict()
    u0 = sr.u.clone()
    with torch.no_grad():
        sr.linear.weight.mul_(torch.linspace(0.5, 2, 6))
    sr.eval()(torch.randn(2, 6))
    assert torch.equal(sr.u, u0)
    sr.train()(torch.randn(2, 6))
    assert not torch.equal(sr.u, u0)


def test_sigma_reparam_wraps_attention_projections_and_trains():
    torch.manual_seed(0)
    lm = TinyLM(vocab_size=32, d_model=16, n_layers=2, n_heads=2, seq_len=8)
    x = torch.randint(0, 32, (3, 8))
    before = lm(x).detach()
    names = sigma_reparam(lm)
    assert sorted(names) == sorted(f"blocks.{i}.attn.{p}" for i in range(2) for p in "qkvo")
    assert torch.allclose(lm.eval()(x), before, atol=1e-4)
    lm.train()
    opt = torch.optim.SGD(lm.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(lm(x).flatten(0, 1), x.flatten())
    loss.backward()
    assert lm.blocks[0].attn.q.gamma.grad is not None
    opt.step()
    with pytest.raises(InputError, match="no nn.Linear"):
        sigma_reparam(nn.Sequential(nn.ReLU()))


# --- EntropyTracker ---------------------------------------------------------------------------------
def test_tracker_on_tiny_lm_logs_tidy_rows():
    torch.manual_seed(0)
    lm = TinyLM(vocab_size=32, d_model=16, n_layers=2, n_heads=2, seq_len=8)
    with EntropyTracker(lm, every=2, condition="plain") as tr:
        for step in range(4):
            tr.step = step
            loss = nn.functional.cross_entropy(lm(torch.randint(0, 32, (2, 8))).flatten(0, 1), torch.randint(0, 32, (16,)))
            tr.log(step, "loss", loss.item())
    df = validate_frame(tr.frame())
    ent = df[df.metric == "entropy"]
    assert set(ent.step) == {0, 2} and set(ent.layer) == {0, 1} and set(ent["head"]) == {0, 1}
    # causal rows: entropy <= mean over queries of log(i+1)
    assert (ent.value <= sum(math.log(i + 1) for i in range(8)) / 8 + 1e-5).all() and (ent.value > 0).all()
    assert len(df[df.metric == "loss"]) == 4
    assert not lm.blocks[0].attn._forward_hooks  # detached on exit


def test_tracker_uniform_attention_with_multihead_attention():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.zero_()  # q = k = 0 -> uniform attention over the 5 keys
    model = nn.Sequential()
    model.add_module("attn", mha)
    tr = EntropyTracker(model)
    x = torch.randn(3, 5, 8)
    mha(x, x, x, need_weights=False)
    df = tr.frame()
    assert df[df.metric == "entropy"].value.tolist() == pytest.approx([math.log(5)] * 2, abs=1e-5)
    assert df[df.metric == "normalized_entropy"].value.tolist() == pytest.approx([1.0] * 2, abs=1e-5)
    tr.close()


def test_tracker_on_hf_eager_model():
    from interp.models.tiny import build_tiny

    hf, _ = build_tiny("llama", 0)
    hf.config._attn_implementation = "eager"
    tr = EntropyTracker(hf)
    assert len(tr.modules) == 2
    hf(torch.randint(3, 200, (1, 6)))
    assert set(tr.frame()["head"]) == set(range(6))


def test_tracker_refuses_model_without_attention():
    with pytest.raises(InputError, match="no attention modules"):
        EntropyTracker(nn.Sequential(nn.Linear(3, 3)))


# --- entropy regularizer (methods.md §7) -------------------------------------------------------------
def test_entropy_regularization_oracle():
    T = 256
    probs = torch.full((1, 1, T, T), 1.0 / T)
    loss = entropy_regularization([probs], torch.tensor([0.5]))
    assert float(loss) == pytest.approx(1e-5 * T * (math.log(T) / 2) ** 2, rel=1e-4)
    assert float(loss) == pytest.approx(0.01968, abs=5e-5)
    # within the tolerance band: exactly zero
    assert float(entropy_regularization([probs], torch.tensor([0.9]))) == 0.0
    reg = EntropyRegularization(1)
    assert float(reg.eval()([probs])) == 0.0


# --- analyzer on a model ------------------------------------------------------------------------------
def test_entropy_frame_uniform_heads_are_overloaded(tiny_llama):
    heads = [HeadId(0, h) for h in range(6)]
    st = attention_stats(tiny_llama, "uniform attention everywhere", edits=[MixUniform(h, 1.0) for h in heads])
    df = validate_frame(entropy_frame(st))
    l0 = df[(df.layer == 0) & (df["head"] >= 0)]
    assert l0[l0.metric == "normalized_entropy"].value.tolist() == pytest.approx([1.0] * 6, abs=1e-5)
    assert l0[l0.metric == "overloaded"].value.tolist() == [1.0] * 6
    assert float(df[(df.layer == 0) & (df["head"] == -1) & (df.metric == "frac_overloaded")].value.iloc[0]) == 1.0


def test_entropy_flag_thresholds_checked(tiny_llama):
    with pytest.raises(InputError, match="collapse"):
        analyze_entropy(tiny_llama, "abc", collapse=0.95, overload=0.9)


@pytest.mark.smollm
def test_smollm_entropy_table(smollm2):
    df = analyze_entropy(smollm2, "The quick brown fox jumps over the lazy dog. " * 4)
    norm = df[(df.metric == "normalized_entropy") & (df["head"] >= 0)].value
    assert len(norm) == 270 and ((norm >= 0) & (norm <= 1.0001)).all()
