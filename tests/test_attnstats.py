"""Model-level fused attention statistics: equality with eager patterns, edits, segments, bad input."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any triton import: the triton backend runs on CPU

import pytest
import torch

import interp
from interp.attnstats import attention_stats
from interp.attnstats.eager import stats_from_pattern
from interp.attnstats.fused import _unwrap_bridge
from interp.edits import MixIdentity, MixUniform, ScaleHeadOutput, ScaleSegment, SetPattern
from interp.errors import InputError, UnknownNameError, UnsupportedModelError
from interp.types import HeadId

TEXTS = ["the quick brown fox jumps over the lazy dog", "hello", "a b c d e"]


def hf_eager_patterns(model, st, hf=None):
    """Patterns from the plain HF model with output_attentions=True (eager), the oracle the issue names: ``hf``, or
    the bridge's own model with the bridge components swapped out for the call."""
    hf = model.original_model if hf is None else hf
    swaps = []
    _unwrap_bridge(hf, swaps)
    old = hf.config._attn_implementation
    try:
        hf.config._attn_implementation = "eager"
        pos = (st.attention_mask.cumsum(1) - 1).clamp_min(0)
        with torch.no_grad():
            out = hf(input_ids=st.tokens, attention_mask=st.attention_mask, position_ids=pos, output_attentions=True)
    finally:
        hf.config._attn_implementation = old
        for p, n, c in reversed(swaps):
            p._modules[n] = c
    return torch.stack(out.attentions, 1), out.logits  # [batch layer head q k]


def assert_matches_eager(model, st, atol=1e-4, hf=None):
    pats, logits = hf_eager_patterns(model, st, hf)
    v = st.attention_mask.bool()
    qv = v[:, None, None, :]
    ref = stats_from_pattern(pats.flatten(1, 2), _seg(st), v)
    L, H = pats.shape[1:3]
    for k in ("entropy", "max_weight"):
        r = ref[k].view(-1, L, H, ref[k].shape[-1])
        assert ((getattr(st, k) - r).abs() * qv).max() <= atol, k
    r = ref["segment_mass"].view(*st.segment_mass.shape)
    assert ((st.segment_mass - r).abs() * qv[..., None]).max() <= 1e-5
    r = ref["key_mass"].view(*st.key_mass.shape)
    assert (st.key_mass - r).abs().max() <= 1e-4
    assert ((st.logits - logits).abs() * v[..., None]).max() <= 1e-3


def _seg(st):
    from interp.attnstats.segments import build_segments

    return build_segments({"first": "first"}, st.attention_mask)[1]


@pytest.mark.parametrize("side", ["left", "right"])
def test_fused_equals_eager_tiny(tiny, side):
    st = attention_stats(tiny, TEXTS, key_mass=True, padding_side=side, backend="cpu")
    assert st.entropy.shape == (3, 2, 6, st.tokens.shape[1])
    assert_matches_eager(tiny, st)


def test_fused_equals_eager_backend_on_bridge(tiny_llama):
    a = attention_stats(tiny_llama, TEXTS, key_mass=True)
    b = attention_stats(tiny_llama, TEXTS, key_mass=True, backend="eager")
    v = a.attention_mask.bool()[:, None, None, :]
    assert ((a.entropy - b.entropy).abs() * v).max() < 1e-4 and ((a.lse - b.lse).abs() * v).max() < 1e-4
    assert torch.equal(a.argmax * v, b.argmax * v)


@pytest.mark.smollm
def test_smollm2_stats_equal_eager_patterns(smollm2):
    """The oracle is a plain transformers SmolLM2 of its own: the shared bridge's ``original_model`` holds bridge
    components, and after other tests have patched through TransformerLens (``run_with_cache`` leaves its hooks
    doubled) its ``output_attentions`` returned 60 patterns for 30 layers."""
    st = attention_stats(smollm2, ["The capital of France is Paris.", "Mary and John went to the store; John gave it to"], key_mass=True)
    plain = interp.load_model("smollm2-135m", bridge=False)
    assert_matches_eager(smollm2, st, atol=2e-4, hf=plain)


def test_minilm_stats_equal_eager_patterns(minilm):
    st = attention_stats(minilm, ["a sentence for the encoder", "short one"], key_mass=True)
    assert not st.meta["causal"]
    assert_matches_eager(minilm, st)


def test_identity_edits_change_nothing(tiny_llama):
    base = attention_stats(tiny_llama, TEXTS, segments={"first": "first"})
    h = HeadId(1, 2)
    ident = [ScaleHeadOutput(h, 1.0), ScaleSegment(h, "first", 1.0), ScaleSegment(h, "first", 1.0, mode="redistribute"),
             MixUniform(h, 0.0), MixIdentity(h, 0.0)]
    same = attention_stats(tiny_llama, TEXTS, segments={"first": "first"}, edits=ident)
    assert torch.equal(base.logits, same.logits) and torch.equal(base.entropy, same.entropy)


def test_edits_act_where_they_should(tiny_llama):
    base = attention_stats(tiny_llama, TEXTS)
    st = attention_stats(tiny_llama, TEXTS, edits=[MixUniform(HeadId(1, 3), 1.0)])
    v = st.attention_mask.bool()
    vis = st.visible_keys()
    assert torch.allclose(st.entropy[:, 1, 3][v], vis.log()[v], atol=1e-5)  # uniform over visible keys
    assert torch.equal(st.entropy[:, 0], base.entropy[:, 0])  # layer 0 untouched
    assert not torch.allclose(st.logits, base.logits)
    zero = attention_stats(tiny_llama, TEXTS, edits=[ScaleHeadOutput(HeadId(0, h), 0.0) for h in range(6)], return_z=True)
    assert zero.z[:, 0].abs().max() == 0 and zero.z[:, 1].abs().max() > 0


def test_partitioning_segments_sum_to_one(tiny_llama):
    st0 = attention_stats(tiny_llama, TEXTS, padding_side="left")
    rest = st0.attention_mask.bool().clone()
    rest[torch.arange(3), rest.float().argmax(1)] = False
    st = attention_stats(tiny_llama, TEXTS, padding_side="left", segments={"first": "first", "rest": rest})
    v = st.attention_mask.bool()[:, None, None, :]
    total = st.segment_mass.sum(-1)
    assert ((total - 1).abs() * v).max() < 1e-5


def test_plain_hf_model_with_tokens():
    from interp.models.tiny import build_tiny

    hf, tok = build_tiny("llama", seed=0)
    bridge = interp.tiny_model("llama", seed=0)
    toks = bridge.to_tokens("hello world")
    a = attention_stats(hf, toks)
    b = attention_stats(bridge, toks)
    assert torch.allclose(a.entropy, b.entropy, atol=1e-6)
    with pytest.raises(InputError, match="needs tokenizer"):
        attention_stats(hf, "text")


def test_to_frame_is_tidy(tiny_llama):
    df = attention_stats(tiny_llama, TEXTS).to_frame()
    assert set(df.metric) == {"entropy", "normalized_entropy", "max_weight", "mass:first"}
    assert len(df) == 4 * 2 * 6 and df["value"].notna().all()


def test_bad_inputs(tiny_llama, monkeypatch):
    with pytest.raises(InputError, match="segments overlap"):
        attention_stats(tiny_llama, TEXTS, segments={"first": "first", "span": (0, 2)})
    with pytest.raises(InputError, match="out of range"):
        attention_stats(tiny_llama, TEXTS, segments={"span": (3, 99)})
    with pytest.raises(UnknownNameError, match="segments are"):
        attention_stats(tiny_llama, TEXTS, edits=[ScaleSegment(HeadId(0, 0), "needle", 2.0)])
    with pytest.raises(InputError, match="unknown backend"):
        attention_stats(tiny_llama, TEXTS, backend="cuda-magic")
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        attention_stats(tiny_llama, TEXTS, edits=[MixUniform(HeadId(0, 0), 1.5)])
    with pytest.raises(InputError, match="outside the model"):
        attention_stats(tiny_llama, TEXTS, edits=[MixUniform(HeadId(5, 0), 1.0)])
    monkeypatch.setattr(type(tiny_llama.original_model), "_supports_attention_backend", False)
    with pytest.raises(UnsupportedModelError, match="backend='eager'"):
        attention_stats(tiny_llama, TEXTS)


ROW_EDITS = [[MixUniform(HeadId(1, 3), 1.0)],
             [ScaleHeadOutput(HeadId(0, 2), 0.0), ScaleSegment(HeadId(1, 1), "first", 0.3, mode="redistribute")],
             [SetPattern(HeadId(1, 0), (2, 3), [0.5, 0.5]), MixIdentity(HeadId(0, 5), 0.7)]]


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_row_edits_equal_separate_runs(tiny_llama, backend):
    texts = ["the quick fox", "hello", "a b c d e"]
    st = attention_stats(tiny_llama, texts, row_edits=ROW_EDITS, edits=[ScaleHeadOutput(HeadId(1, 4), 0.5)],
                         padding_side="left", backend=backend, key_mass=True)
    for b in range(3):
        one = attention_stats(tiny_llama, texts[b], edits=[ScaleHeadOutput(HeadId(1, 4), 0.5), *ROW_EDITS[b]],
                              backend=backend, key_mass=True)
        v = st.attention_mask[b].bool()
        for name in ("entropy", "max_weight", "lse", "key_mass"):
            assert (getattr(st, name)[b][..., v] - getattr(one, name)[0]).abs().max() < 1e-5, name
        assert (st.logits[b][v] - one.logits[0]).abs().max() < 1e-4
    start = int(st.attention_mask[2].argmax())  # SetPattern positions count from the first real token
    assert torch.allclose(st.max_weight[2, 1, 0, start + 2:start + 4], torch.tensor(0.5))


def test_set_pattern_validation_and_compile(tiny_llama):
    with pytest.raises(InputError, match="sum to"):
        SetPattern(HeadId(0, 0), (2,), [0.5, 0.2])
    with pytest.raises(InputError, match=">= 0"):
        SetPattern(HeadId(0, 0), (2,), [1.5, -0.5])
    with pytest.raises(InputError, match="later keys"):
        SetPattern(HeadId(0, 0), (1,), [0.5, 0.0, 0.5])
    with pytest.raises(InputError, match="exceed"):
        attention_stats(tiny_llama, ["a b", "a b c d e f"], edits=[SetPattern(HeadId(0, 0), (4,), [1.0])])
    with pytest.raises(InputError, match="one edit list per row"):
        attention_stats(tiny_llama, ["a b", "c d"], row_edits=[[]])
    from interp.edits import compile_edits

    per_head = compile_edits([MixUniform(HeadId(1, 2), 0.5)], 2, 6, ())
    assert per_head[1].uniform_mix.shape == (6,)
    per_row = compile_edits([MixUniform(HeadId(1, 2), 0.5)], 2, 6, (), row_edits=[[], [MixUniform(HeadId(1, 3), 1.0)]])
    assert per_row[1].uniform_mix.tolist() == [[0, 0, 0.5, 0, 0, 0], [0, 0, 0.5, 1.0, 0, 0]]


def test_sliding_window_shorter_than_prompt_matches_eager():
    """Mistral's window (8) shorter than the prompt: the fused path applies the band, as eager does."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, sliding_window=8, max_position_embeddings=64)
    hf = MistralForCausalLM(cfg).eval()
    toks = torch.randint(1, 64, (2, 21), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(toks)
    mask[1, :11] = 0  # left padding longer than the window
    st = attention_stats(hf, toks, attention_mask=mask, key_mass=True)
    assert st.meta["windows"] == [8, 8]
    old = hf.config._attn_implementation
    hf.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = hf(input_ids=toks, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp_min(0), output_attentions=True)
    finally:
        hf.config._attn_implementation = old
    pats = torch.stack(out.attentions, 1)
    assert bool((pats[..., :, :][..., 12:, :4] == 0).all())  # keys more than 8 back get nothing
    ref = stats_from_pattern(pats.flatten(1, 2), _seg(st), mask.bool())
    qv = mask.bool()[:, None, None, :]
    for k in ("entropy", "max_weight"):
        assert ((getattr(st, k) - ref[k].view_as(getattr(st, k))).abs() * qv).max() <= 1e-4, k
    assert ((st.logits - out.logits).abs() * mask[..., None]).max() <= 1e-4
    assert not torch.isnan(st.entropy).any()


def test_unknown_attention_argument_is_refused(monkeypatch):
    """A keyword of the attention call that the fused path does not implement raises one line naming eager."""
    from transformers import MistralConfig, MistralForCausalLM

    import interp.attnstats.fused as fused

    hf = MistralForCausalLM(MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=4, num_key_value_heads=2, sliding_window=4)).eval()
    monkeypatch.setattr(fused, "_IMPLEMENTED_KWARGS", fused._IMPLEMENTED_KWARGS - {"sliding_window"})
    with pytest.raises(UnsupportedModelError, match=r"attention argument\(s\) sliding_window .*backend='eager'"):
        attention_stats(hf, torch.arange(1, 9)[None])


# Documented tolerance of bf16 models against fp32 eager: q/k/v and the residual stream are rounded to bf16
# (8 mantissa bits), the statistics are still accumulated in fp32.
BF16_TOL = {"entropy": 0.05, "max_weight": 0.02, "segment_mass": 0.02}


def test_bf16_model_stats_close_to_fp32_eager():
    import copy

    from interp.models.tiny import build_tiny

    hf, _ = build_tiny("llama", seed=0)
    toks = torch.randint(3, 200, (2, 40), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(toks)
    mask[1, :7] = 0
    st16 = attention_stats(copy.deepcopy(hf).to(torch.bfloat16), toks, attention_mask=mask, backend="cpu")
    st32 = attention_stats(hf, toks, attention_mask=mask, backend="reference")
    assert st16.entropy.dtype == torch.float32 and st16.logits.dtype == torch.bfloat16
    v = mask.bool()[:, None, None, :]
    for name, tol in BF16_TOL.items():
        a, b = getattr(st16, name), getattr(st32, name)
        w = v[..., None] if a.dim() == 5 else v
        assert ((a - b).abs() * w).max() <= tol, name


def test_a_long_forward_hands_the_free_heap_back_once(tiny_llama, monkeypatch):
    """On the CPU the fused path calls malloc_trim once per forward, after the last layer (before the logits are
    allocated), and only when a call has at least TRIM_MIN_PRODUCTS query x key products."""
    from interp.attnstats.kernels import _threads

    calls = []
    monkeypatch.delenv("INTERP_KEEP_MALLOC_ARENAS", raising=False)
    monkeypatch.setattr(_threads, "_LIBC", lambda pad: calls.append(pad))
    monkeypatch.setattr(_threads.sys, "platform", "linux")
    heads = tiny_llama.cfg.n_heads
    long_n = int((_threads.TRIM_MIN_PRODUCTS / heads) ** 0.5) + 1
    for n, want in ((64, []), (long_n, [0])):
        calls.clear()
        toks = torch.randint(3, 259, (1, n), generator=torch.Generator().manual_seed(n))
        attention_stats(tiny_llama, toks)
        assert calls == want, n
