"""Property-based fuzz: fused ``attention_stats`` against HF eager ``output_attentions`` on random tiny models.

Ten architectures (Llama, Qwen2, Mistral, GPT-2, GPT-NeoX, Phi, OPT, Gemma2 with a logit softcap, GPT-OSS with
learned sink logits, BERT), built offline from random configs: layers, heads, KV groups, d_head, batch, lengths
1..300, left/right padding, sliding windows shorter and longer than the prompt (Gemma2 and GPT-OSS alternate
sliding and full layers), segments, shared and per-row edits. Unedited statistics (entropy, max_weight, argmax,
segment and key masses, logits) are compared with the eager patterns, ``lse`` with the float64 reference kernel;
edited runs compare the cpu kernel with the reference kernel (eager cannot apply the edits). Eager hides GPT-OSS's
sink column: its mass is ``1 - Σ pattern`` there, and the eager entropy gains the sink's term. Every example
also runs the flex or the flash backend (alternating) against the reference, with the same edits and the
statistics they give exactly.

CI: 100 derandomized examples (fixed seed). ``make fuzz``: ``INTERP_FUZZ_EXAMPLES=2000``, random seeds.
"""
import functools
import os

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from interp.attnstats import attention_stats
from interp.attnstats.eager import stats_from_pattern
from interp.attnstats.segments import build_segments
from interp.edits import MixIdentity, MixUniform, ScaleHeadOutput, ScaleSegment, SetPattern
from interp.errors import InputError
from interp.types import HeadId

EXAMPLES = int(os.environ.get("INTERP_FUZZ_EXAMPLES", "100"))
VOCAB = 97
GQA = {"llama", "qwen2", "mistral", "gemma2", "gpt_oss"}
WINDOWED = {"mistral", "gemma2", "gpt_oss"}
TOL = {"entropy": 5e-4, "mass": 1e-4, "key_mass": 1e-3}  # absolute; key_mass sums up to 300 queries
ARCHS = ["llama", "qwen2", "mistral", "gpt2", "neox", "phi", "opt", "gemma2", "gpt_oss", "bert"]


@functools.lru_cache(maxsize=64)
def build(arch: str, layers: int, heads: int, kv: int, d_head: int, window: int | None):
    import transformers as T

    hidden = heads * d_head
    common = dict(vocab_size=VOCAB, num_hidden_layers=layers, num_attention_heads=heads, hidden_size=hidden,
                  intermediate_size=2 * hidden, max_position_embeddings=512, initializer_range=0.3)
    specs = {
        "llama": (T.LlamaConfig, T.LlamaForCausalLM, dict(num_key_value_heads=kv)),
        "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM, dict(num_key_value_heads=kv)),
        "mistral": (T.MistralConfig, T.MistralForCausalLM, dict(num_key_value_heads=kv, sliding_window=window)),
        "gpt2": (T.GPT2Config, T.GPT2LMHeadModel, dict(n_positions=512)),
        "neox": (T.GPTNeoXConfig, T.GPTNeoXForCausalLM, dict()),
        "phi": (T.PhiConfig, T.PhiForCausalLM, dict()),
        "opt": (T.OPTConfig, T.OPTForCausalLM, dict(ffn_dim=2 * hidden, word_embed_proj_dim=hidden)),
        "gemma2": (T.Gemma2Config, T.Gemma2ForCausalLM, dict(num_key_value_heads=kv, head_dim=d_head, attn_logit_softcapping=3.0,
                                                             query_pre_attn_scalar=d_head, sliding_window=window or 4096)),
        "gpt_oss": (T.GptOssConfig, T.GptOssForCausalLM, dict(num_key_value_heads=kv, head_dim=d_head, num_local_experts=4,
                                                              num_experts_per_tok=2, sliding_window=window or 4096,
                                                              rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
        "bert": (T.BertConfig, T.BertForMaskedLM, dict()),
    }
    cfg_cls, model_cls, extra = specs[arch]
    torch.manual_seed(layers * 1000 + heads * 100 + kv * 10 + d_head)
    model = model_cls(cfg_cls(**common, **extra)).eval()
    for m in model.modules():  # sink logits start at 0; spread them so that some heads put most mass on the sink
        if isinstance(getattr(m, "sinks", None), torch.nn.Parameter):
            torch.nn.init.normal_(m.sinks, std=2.0)
    return model


@st.composite
def problems(draw):
    arch = draw(st.sampled_from(ARCHS))
    heads = draw(st.sampled_from([1, 2, 4, 6]))
    kv = draw(st.sampled_from([d for d in (1, 2, 3, 6) if heads % d == 0])) if arch in GQA else heads
    d_head = draw(st.sampled_from([8, 16, 24]))
    layers = draw(st.integers(1, 2))
    batch = draw(st.integers(1, 3))
    length = st.one_of(st.integers(1, 48), st.integers(1, 300))  # short prompts most of the time keep CI fast
    lengths = draw(st.lists(length, min_size=batch, max_size=batch))
    window = draw(st.sampled_from([None, None, 1, 3, 16, 512])) if arch in WINDOWED else None
    side = draw(st.sampled_from(["left", "right"]))
    shortest = min(lengths)
    span = None
    if shortest >= 3:
        a = draw(st.integers(1, shortest - 2))
        span = (a, draw(st.integers(a + 1, shortest)))
    edits = draw(st.lists(_edit(layers, heads, shortest, span is not None), max_size=3))
    row_edits = draw(st.one_of(st.none(), st.lists(st.lists(_edit(layers, heads, shortest, span is not None), max_size=2),
                                                   min_size=batch, max_size=batch)))
    seed = draw(st.integers(0, 2**16))
    return dict(arch=arch, heads=heads, kv=kv, d_head=d_head, layers=layers, lengths=lengths, window=window,
                side=side, span=span, edits=edits, row_edits=row_edits, seed=seed)


def _edit(layers, heads, shortest, has_span):
    head = st.builds(HeadId, st.integers(0, layers - 1), st.integers(0, heads - 1))
    kinds = [st.builds(ScaleHeadOutput, head, st.floats(-2, 2)),
             st.builds(MixUniform, head, st.floats(0, 1)),
             st.builds(MixIdentity, head, st.floats(0, 1)),
             st.builds(ScaleSegment, head, st.just("first"), st.floats(0, 3), st.sampled_from(["renormalize", "redistribute"])),
             st.builds(_set_pattern, head, st.integers(0, shortest - 1), st.integers(0, 2**16))]
    if has_span:
        kinds.append(st.builds(ScaleSegment, head, st.just("span"), st.floats(0, 3), st.sampled_from(["renormalize", "redistribute"])))
    return st.one_of(kinds)


def _set_pattern(head, q, seed):
    w = torch.rand(q + 1, generator=torch.Generator().manual_seed(seed)).double()
    return SetPattern(head, (q,), (w / w.sum()).tolist())


def _inputs(p):
    g = torch.Generator().manual_seed(p["seed"])
    n = max(p["lengths"])
    toks = torch.randint(1, VOCAB, (len(p["lengths"]), n), generator=g)
    mask = torch.zeros_like(toks)
    for b, length in enumerate(p["lengths"]):
        if p["side"] == "left":
            mask[b, n - length:] = 1
        else:
            mask[b, :length] = 1
    return toks * mask, mask


def _eager(hf, toks, mask):
    old = hf.config._attn_implementation
    try:
        hf.config._attn_implementation = "eager"
        pos = (mask.cumsum(1) - 1).clamp_min(0)
        with torch.no_grad():
            out = hf(input_ids=toks, attention_mask=mask, position_ids=pos, output_attentions=True)
    finally:
        hf.config._attn_implementation = old
    return torch.stack(out.attentions, 1), out.logits  # [batch layer head q k]


def _close(a, b, atol, where, name):
    d = ((a - b).abs() * where).max()
    assert d <= atol, f"{name}: max difference {float(d):.3g} > {atol}"


def _check_against_eager(hf, stats, toks, mask, segs):
    pats, logits = _eager(hf, toks, mask)
    B, L, H, n, _ = pats.shape
    valid = mask.bool()
    qv = valid[:, None, None, :]
    ref = stats_from_pattern(pats.flatten(1, 2), segs, valid)
    if stats.sink_logit_mass is not None:  # eager drops the sink column: its mass is what the pattern lacks
        sink = (1 - pats.double().sum(-1)).clamp_min(0)
        _close(stats.sink_logit_mass, sink, TOL["mass"], qv, "sink_logit_mass")
        ref["entropy"] = ref["entropy"] - torch.special.xlogy(sink, sink).flatten(1, 2).float()
    # Layers after the first see a residual stream that differs from eager's in the last fp32 bits.
    for name, atol in (("entropy", TOL["entropy"]), ("max_weight", TOL["mass"])):
        _close(getattr(stats, name), ref[name].view(B, L, H, n), atol, qv, name)
    _close(stats.segment_mass, ref["segment_mass"].view(B, L, H, n, -1), TOL["mass"], qv[..., None], "segment_mass")
    _close(stats.key_mass, ref["key_mass"].view(B, L, H, n), TOL["key_mass"], valid[:, None, None, :], "key_mass")
    top2 = pats.float().topk(min(2, n), -1).values
    clear = (top2[..., 0] - top2[..., -1] > 1e-4) | (n == 1)
    assert torch.equal((stats.argmax == pats.argmax(-1)) | ~clear | ~qv, torch.ones_like(clear)), "argmax"
    _close(stats.logits, logits, 1e-3 * max(1.0, float(logits.abs().max())), valid[..., None], "logits")


def _check_against_reference(a, b):
    qv = a.attention_mask.bool()[:, None, None, :]
    for name, atol in (("entropy", TOL["entropy"]), ("max_weight", TOL["mass"]), ("lse", TOL["entropy"])):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:  # left out of stats= (flex/flash)
            continue
        fin = torch.isfinite(y) & qv
        assert torch.equal(torch.isfinite(x) & qv, fin), f"{name}: finite pattern"
        _close(x.nan_to_num(0, 0, 0), y.nan_to_num(0, 0, 0), atol, fin, name)
    _close(a.segment_mass, b.segment_mass, TOL["mass"], qv[..., None], "segment_mass")
    _close(a.key_mass, b.key_mass, TOL["key_mass"], torch.ones_like(a.key_mass), "key_mass")
    assert (a.sink_logit_mass is None) == (b.sink_logit_mass is None), "sink_logit_mass"
    if a.sink_logit_mass is not None:
        _close(a.sink_logit_mass, b.sink_logit_mass, TOL["mass"], qv, "sink_logit_mass")
    if a.logits is not None:
        _close(a.logits, b.logits, 1e-3 * max(1.0, float(b.logits.abs().max())), a.attention_mask[..., None], "logits")


@pytest.mark.slow
@settings(max_examples=EXAMPLES, derandomize="INTERP_FUZZ_EXAMPLES" not in os.environ, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(problems())
def test_fused_stats_match_eager(p):
    event(f"arch {p['arch']}")  # --hypothesis-show-statistics shows the coverage
    if p["window"] is not None:
        event("window shorter than the prompt" if p["window"] < max(p["lengths"]) else "window no shorter than the prompt")
    hf = build(p["arch"], p["layers"], p["heads"], p["kv"], p["d_head"], p["window"])
    toks, mask = _inputs(p)
    names = {"first": "first", **({"span": p["span"]} if p["span"] else {})}
    kw = dict(segments=names, key_mass=True, attention_mask=mask)
    if p["arch"] == "gpt_oss":  # probability edits are refused with sink logits; logit edits stay
        keep = lambda es: [e for e in es if isinstance(e, ScaleHeadOutput) or (isinstance(e, ScaleSegment) and e.mode == "renormalize")]
        p = dict(p, edits=keep(p["edits"]), row_edits=None if p["row_edits"] is None else [keep(r) for r in p["row_edits"]])
    if p["window"] is not None:  # SetPattern's random weights would fall outside a short window (a one-line refusal)
        drop = lambda es: [e for e in es if not isinstance(e, SetPattern)]  # noqa: E731
        p = dict(p, edits=drop(p["edits"]), row_edits=None if p["row_edits"] is None else [drop(r) for r in p["row_edits"]])
    plain = attention_stats(hf, toks, backend="cpu", **kw)
    segs = build_segments(names, mask)[1]
    _check_against_eager(hf, plain, toks, mask, segs)
    if p["edits"] or p["row_edits"]:  # edited cpu against the float64 reference (which also checks lse)
        kw = dict(kw, edits=p["edits"], row_edits=p["row_edits"])
        plain = attention_stats(hf, toks, backend="cpu", **kw)
    ref = attention_stats(hf, toks, backend="reference", **kw)
    _check_against_reference(plain, ref)
    _check_flex(hf, toks, p, kw, ref)


def _check_flex(hf, toks, p, kw, ref):
    """flex (eager FlexAttention) or flash (the CPU flash operator), alternating by seed, against the reference
    with the same edits, on the statistics they give exactly (no argmax or max_weight on a CPU); a softcap (Gemma2) or a window shorter than the
    prompt is refused by flash in one line naming flex."""
    engine = ("flex", "flash")[p["seed"] % 2]
    edits = list(kw.get("edits", ())) + sum(kw.get("row_edits") or [], [])
    mixed = any(isinstance(e, MixUniform) for e in edits)
    stats = ("lse",) if p["arch"] == "gemma2" or mixed else ("lse", "entropy")
    refused = engine == "flash" and (p["arch"] == "gemma2" or (p["window"] is not None and p["window"] < max(p["lengths"])))
    if refused:
        with pytest.raises(InputError, match="backend='flex'"):
            attention_stats(hf, toks, backend=engine, stats=stats, **kw)
        return
    got = attention_stats(hf, toks, backend=engine, stats=stats, **kw)
    assert got.backend == engine and got.argmax is None and got.max_weight is None
    _check_against_reference(got, ref)
