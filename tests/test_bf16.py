"""The analyses end to end in bf16 on a tiny model, against the same model in fp32: the atlas, retrieval
scores (decoding with per-step attention argmax), activation patching, AtP and sweep_heads. Statistics stay
fp32; the agreement figures are printed by ``python tests/test_bf16.py``."""
import functools

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from interp.edits import ScaleHeadOutput
from interp.types import HeadId
from _util import last_logit_diff as _metric


@functools.lru_cache(maxsize=None)
def models():
    from interp.models.tiny import build_tiny

    # initializer range 0.1 (not 0.02): attention far from uniform, so that bf16 rounding shows in the statistics
    hf32, tok = build_tiny("llama", seed=5, num_hidden_layers=2, initializer_range=0.1)
    hf16, _ = build_tiny("llama", seed=5, num_hidden_layers=2, initializer_range=0.1)
    return interp.from_hf(hf32, tok, "tiny32"), interp.from_hf(hf16.to(torch.bfloat16), tok, "tiny16")


def _pair(b=3, n=10):
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(3, 259, (b, n), generator=g)
    clean[:, 0] = 1
    bad = clean.clone()
    bad[:, 2] = torch.randint(3, 259, (b,), generator=g)
    return clean, bad


def _corr(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float(np.allclose(a, b))


def _frames_agree(df32, df16, metric=None):
    key = [c for c in ("layer", "head", "position", "metric", "condition") if c in df32.columns]
    m = df32.merge(df16, on=key, suffixes=("32", "16"))
    if metric is not None:
        m = m[m.metric == metric]
    return dict(n=len(m), corr=_corr(m.value32, m.value16), max_abs=float((m.value32 - m.value16).abs().max()))


def atlas_agreement(tmp):
    from interp.jobs import AtlasConfig, run_atlas

    cfg = AtlasConfig(seq_len=8, text_tokens=32, view_tokens=16)
    out = {}
    for name, m in zip(("32", "16"), models()):
        out[name] = pd.read_parquet(run_atlas(m, tmp / name, cfg, progress=False)["heads"])
    return {met: _frames_agree(out["32"], out["16"], met) for met in ("entropy", "previous_token", "first_token_mass")}


def retrieval_agreement():
    """Greedy decoding through the fused path: the per-step, per-head argmax key and the copy-paste score."""
    from interp.analyze.retrieval import copy_paste_scores
    from interp.attnstats.decode import generate_with_stats

    prompt = torch.tensor([1] + list(range(10, 40)) + list(range(10, 20)))
    traces = [generate_with_stats(m, prompt, max_new_tokens=8) for m in models()]
    same = [i for i, (a, b) in enumerate(zip(traces[0].generated, traces[1].generated)) if a == b]
    steps = same[: next((i for i, s in enumerate(same) if s != i), len(same))]  # the steps before any divergence
    arg = (traces[0].argmax[steps] == traces[1].argmax[steps]).float().mean().item() if steps else float("nan")
    scores = [copy_paste_scores(t.argmax, t.generated, prompt, (10, 30)) for t in traces]
    return dict(steps=len(steps), argmax_agree=arg, score_corr=_corr(scores[0].flatten(), scores[1].flatten()),
                score_max_abs=float((scores[0] - scores[1]).abs().max()))


def patching_agreement():
    from interp.analyze.patching import activation_patching

    clean, bad = _pair()
    f = [activation_patching(m, clean, bad, _metric, site="z", by="head") for m in models()]
    return _frames_agree(*f)


def atp_agreement():
    from interp.analyze.attribution import attribution_patching

    clean, bad = _pair()
    f = [attribution_patching(m, clean, bad, _metric) for m in models()]
    return _frames_agree(*f, metric="atp:z")


def sweep_agreement():
    from interp.intervene.heads import sweep_heads

    clean, _ = _pair()
    f = [sweep_heads(m, clean, lambda h: ScaleHeadOutput(h, 0.0), _metric, progress=False) for m in models()]
    return _frames_agree(*f)


def test_bf16_model_really_is_bf16_and_stats_fp32():
    m32, m16 = models()
    assert {p.dtype for p in m16.original_model.parameters()} == {torch.bfloat16}
    st = interp.attention_stats(m16, _pair()[0])
    assert st.entropy.dtype == torch.float32 and torch.isfinite(st.entropy).all()


def test_atlas_in_bf16_agrees_with_fp32(tmp_path):
    """Entropy and first-token mass vary across heads: their ranking must agree. A random model's previous-token
    scores are nearly equal across heads (their ranking is noise), so those are held to an absolute bound."""
    for met, a in atlas_agreement(tmp_path).items():
        assert a["n"] >= 12 and a["max_abs"] < 0.05, (met, a)
        assert met == "previous_token" or a["corr"] > 0.95, (met, a)


def test_retrieval_scores_in_bf16_agree_with_fp32():
    a = retrieval_agreement()
    assert a["steps"] >= 1 and a["argmax_agree"] > 0.8, a
    assert np.isfinite(a["score_max_abs"]), a


def test_activation_patching_in_bf16_agrees_with_fp32():
    a = patching_agreement()
    assert a["n"] == 12 and a["corr"] > 0.95, a


def test_atp_in_bf16_agrees_with_fp32():
    a = atp_agreement()
    assert a["n"] == 12 and a["corr"] > 0.9, a


def test_sweep_heads_in_bf16_agrees_with_fp32():
    a = sweep_agreement()
    assert a["n"] == 12 and a["corr"] > 0.95, a


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        for name, a in atlas_agreement(Path(d)).items():
            print("atlas", name, a)
    print("retrieval", retrieval_agreement())
    print("activation patching (z, by head)", patching_agreement())
    print("AtP (atp:z)", atp_agreement())
    print("sweep_heads (zero-ablate each head)", sweep_agreement())
