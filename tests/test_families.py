"""Every decoder family TransformerLens 4.3 bridges (interp.models.families): fused attention_stats against HF
eager ``output_attentions`` on a tiny random model keeping the family's layout, or the one-line refusal.

One batch holds an unpadded, a right-padded and a left-padded row (batch > 1, both padding sides), with the
position ids attention_stats uses. Compared: entropy, max_weight, argmax (where the top two differ), segment
masses (first token and a span), key mass and logits against eager; lse against the float64 reference kernel
in the same forward. Eager hides a learned sink column (GPT-OSS, DeepSeek V4): its mass is what the eager
row lacks, and the entropy gains the sink's term (our own float64 softmax with the sink: the reference kernel).
"""
import functools

import pytest
import torch

from interp.attnstats import attention_stats
from interp.attnstats.eager import stats_from_pattern
from interp.attnstats.segments import build_segments
from interp.errors import UnsupportedModelError
from interp.models.families import FAMILIES, FUSED, build_family

N = 13
SEGMENTS = {"first": "first", "span": (3, 7)}


@functools.lru_cache(maxsize=None)
def _inputs():
    toks = torch.randint(3, 97, (3, N), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(toks)
    mask[1, N - 4:] = 0  # right padding
    mask[2, :3] = 0  # left padding
    return toks * mask, mask


def _eager(hf, toks, mask):
    old = hf.config._attn_implementation
    hf.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = hf(input_ids=toks, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp_min(0),
                     output_attentions=True, use_cache=False)
    finally:
        hf.config._attn_implementation = old
    return torch.stack(out.attentions, 1), out.logits


def _close(a, b, atol, where, name, fam):
    d = float(((a.double() - b.double()).abs() * where).max())
    assert d <= atol, f"{fam}: {name} differs by {d:.3g} > {atol}"


@pytest.mark.parametrize("fam", sorted(FAMILIES))
def test_family_fused_stats_match_eager(fam):
    spec = FAMILIES[fam]
    hf = build_family(fam)
    toks, mask = _inputs()
    kw = dict(attention_mask=mask, segments=SEGMENTS, key_mass=True)
    if spec.status != FUSED:
        with pytest.raises(UnsupportedModelError, match="backend='eager'"):
            attention_stats(hf, toks, backend="cpu", **kw)
        return
    st = attention_stats(hf, toks, backend="cpu", **kw)
    pats, logits = _eager(hf, toks, mask)
    B, L, H, n, _ = pats.shape
    qv = mask.bool()[:, None, None, :]
    ref = stats_from_pattern(pats.flatten(1, 2).double(), build_segments(SEGMENTS, mask)[1], mask.bool())
    ent = ref["entropy"].view(B, L, H, n).double()
    if st.sink_logit_mass is not None:
        sink = (1 - pats.double().sum(-1)).clamp_min(0)
        _close(st.sink_logit_mass, sink, 1e-5, qv, "sink_logit_mass", fam)
        ent = ent - torch.special.xlogy(sink, sink)
    _close(st.entropy, ent, 1e-4, qv, "entropy", fam)
    _close(st.max_weight, ref["max_weight"].view(B, L, H, n), 1e-5, qv, "max_weight", fam)
    _close(st.segment_mass, ref["segment_mass"].view(B, L, H, n, -1), 1e-5, qv[..., None], "segment_mass", fam)
    _close(st.key_mass, ref["key_mass"].view(B, L, H, n), 1e-4, torch.ones(1), "key_mass", fam)
    top2 = pats.double().topk(2, -1).values
    clear = (top2[..., 0] - top2[..., 1] > 1e-4) & qv
    assert torch.equal((st.argmax == pats.argmax(-1)) | ~clear, torch.ones_like(clear)), f"{fam}: argmax"
    _close(st.logits, logits, 1e-4 * max(1.0, float(logits.abs().max())), mask[..., None], "logits", fam)
    r = attention_stats(hf, toks, backend="reference", **kw)
    fin = torch.isfinite(r.lse) & qv
    _close(st.lse.nan_to_num(0, 0, 0), r.lse.nan_to_num(0, 0, 0), 1e-4, fin, "lse", fam)
    assert not torch.isnan(st.entropy).any() and not torch.isnan(st.lse[qv.expand_as(st.lse)]).any()


def test_eager_backend_reports_the_sink_column_like_the_fused_path():
    """The bridge's eager pattern omits GPT-OSS's sink column; the eager backend restores its mass and entropy term."""
    import interp
    from interp.models.tiny import byte_tokenizer

    model = interp.from_hf(build_family("gpt-oss", vocab_size=259), byte_tokenizer(), "gpt-oss")
    toks, mask = _inputs()
    a = attention_stats(model, toks + 100, attention_mask=mask, backend="eager")
    b = attention_stats(model, toks + 100, attention_mask=mask, backend="cpu")
    qv = mask.bool()[:, None, None, :]
    for name in ("entropy", "sink_logit_mass", "max_weight"):
        _close(getattr(a, name), getattr(b, name), 1e-4, qv, name, "gpt-oss")
    assert float(b.sink_logit_mass[qv.expand_as(b.sink_logit_mass)].mean()) > 0.05  # the sinks carry real mass
