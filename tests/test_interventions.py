"""Activation edits, run/edited, batched sweeps: invariants and bad input (tiny models)."""
import pytest
import torch

import interp
from interp import AddToHead, AddVector, HeadId, KVGroup, MeanAblate, Patch, ResampleAblate, SetPattern, ZeroAblate
from interp.edits import MixUniform, ScaleHeadOutput, ScaleSegment
from interp.errors import InputError
from interp.hooks import CaptureSpec
from interp.intervene.run import Plan
from interp.intervene.heads import _chunks, _loop_reference, sweep_edits
from interp.intervene.means import mean_ablate
from _util import random_tokens as _tokens, last_logit_diff as _metric


pytestmark = pytest.mark.usefixtures("one_thread")


def test_run_matches_bridge_forward_on_both_engines(tiny_llama):
    x = _tokens()
    mask = torch.ones_like(x)
    mask[1, -2:] = 0
    with torch.no_grad():
        ref = tiny_llama(x, attention_mask=mask)
    assert torch.equal(interp.run(tiny_llama, x, attention_mask=mask), ref)  # hf engine
    logits, cap = interp.run(tiny_llama, x, capture=CaptureSpec(sites=("pattern", "z")), attention_mask=mask)  # bridge engine
    assert torch.equal(logits, ref)
    assert cap["pattern", 1].shape == (3, 6, 9, 9)


def test_identity_edits_are_bit_for_bit(tiny_llama):
    x = _tokens()
    base = interp.run(tiny_llama, x)
    v = torch.randn(8)
    for edits in ([], [AddToHead(HeadId(1, 2), v, alpha=0.0)], [AddVector(1, torch.randn(48), alpha=0.0)],
                  [ScaleHeadOutput(HeadId(0, 4), 1.0)], [AddToHead(HeadId(1, 2), v, 0.0), ScaleHeadOutput(HeadId(1, 3), 1.0)]):
        assert torch.equal(interp.run(tiny_llama, x, edits), base), edits


def test_zero_ablation_matches_a_hand_written_hook(tiny_llama):
    x = _tokens()

    def hook(z, hook):
        z = z.clone()
        z[:, 2:5, 3] = 0
        return z

    with torch.no_grad():
        ref = tiny_llama.run_with_hooks(x, fwd_hooks=[("blocks.1.attn.hook_z", hook)])
    out = interp.run(tiny_llama, x, [ZeroAblate("z", 1, 3, positions=[2, 3, 4])])
    assert torch.allclose(out, ref, atol=1e-6) and not torch.allclose(out, interp.run(tiny_llama, x))


def test_patch_every_position_of_resid_pre_at_layer_0_restores_clean(llama3):
    clean, bad = _tokens(seed=1), _tokens(seed=2)
    logits, cap = interp.run(llama3, clean, capture=CaptureSpec(sites=("resid_pre",), layers=(0,)))
    patched = interp.run(llama3, bad, [Patch("resid_pre", 0, source=cap)])
    assert torch.allclose(patched, logits, atol=1e-6)


def test_resid_mid_patch_reaches_the_skip_connection(llama3):
    # Patching resid_mid at (l, p) must equal patching resid_post at (l, p): the MLP and the skip both see it.
    clean, bad = _tokens(seed=1), _tokens(seed=2)
    _, cap = interp.run(llama3, clean, capture=CaptureSpec(sites=("resid_mid", "resid_post"), layers=(1,)))
    a = interp.run(llama3, bad, [Patch("resid_mid", 1, positions=[4], source=cap)])
    b = interp.run(llama3, bad, [Patch("resid_post", 1, positions=[4], source=cap)])
    assert torch.allclose(a, b, atol=1e-5)


def test_mean_and_resample_ablation(llama3):
    x, ref = _tokens(seed=1), _tokens(b=5, seed=3)
    means = interp.mean_activations(llama3, ref, sites=("z",))
    with torch.no_grad():
        _, cap = llama3.run_with_cache(ref)
    expect = cap["blocks.2.attn.hook_z"][:, :, 4].mean((0, 1))
    assert torch.allclose(means["z", 2][4], expect, atol=1e-6)
    m1 = mean_ablate(llama3, ref, HeadId(2, 4))
    assert "ActivationMeans" in repr(m1) and len(repr(m1)) < 120  # prints a summary, not values
    assert torch.allclose(interp.run(llama3, x, [m1]), interp.run(llama3, x, [MeanAblate(HeadId(2, 4), mean=means)]))
    _, src = interp.run(llama3, ref, capture=CaptureSpec(sites=("z",)))
    r1 = interp.run(llama3, x, [ResampleAblate(HeadId(2, 4), source=src, seed=0)])
    assert torch.equal(r1, interp.run(llama3, x, [ResampleAblate(HeadId(2, 4), source=src, seed=0)]))
    assert not torch.allclose(r1, interp.run(llama3, x))


def test_set_pattern_rows_sum_to_one(tiny_llama):
    x = _tokens()
    e = SetPattern(HeadId(1, 2), query_positions=[-1, 5], weights={0: 0.25, 3: 0.75})
    _, cap = interp.run(tiny_llama, x, [e], capture=CaptureSpec(sites=("pattern",), layers=(1,)))
    rows = cap["pattern", 1][:, 2, [8, 5]]
    assert torch.allclose(rows.sum(-1), torch.ones(3, 2))
    assert torch.equal(rows[..., [0, 3]], torch.tensor([0.25, 0.75]).expand(3, 2, 2))
    with pytest.raises(InputError, match="sum to 1"):
        SetPattern(HeadId(1, 2), [-1], {0: 0.5, 3: 0.4})
    with pytest.raises(InputError, match="cannot see"):
        interp.run(tiny_llama, x, [SetPattern(HeadId(1, 2), [2], {5: 1.0})])


def test_mix_uniform_hook_equals_fused_kernel(tiny_llama):
    x = _tokens()
    fused = interp.run(tiny_llama, x, [MixUniform(HeadId(1, 1), 0.7)])  # hf engine → fused kernel
    _, cap = interp.run(tiny_llama, x, [MixUniform(HeadId(1, 1), 0.7)], capture=CaptureSpec(sites=("pattern",), layers=(0,)))
    hooked = cap.logits  # bridge engine → pattern hook
    assert torch.allclose(fused, hooked, atol=1e-5)


def test_edited_restores_the_model_after_an_exception(tiny_llama):
    x = _tokens()
    base = interp.run(tiny_llama, x)

    def n_hooks():
        hf = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in tiny_llama.original_model.modules())
        return hf, sum(len(hp.fwd_hooks) for hp in tiny_llama.hook_dict.values())

    before = n_hooks()
    with pytest.raises(RuntimeError, match="boom"):
        with interp.edited(tiny_llama, [ZeroAblate(HeadId(0, 1)), SetPattern(HeadId(1, 0), [-1], {0: 1.0})]):
            with torch.no_grad():
                inside = tiny_llama(x)
            assert not torch.allclose(inside, base)
            raise RuntimeError("boom")
    assert n_hooks() == before
    assert torch.equal(interp.run(tiny_llama, x), base)
    with torch.no_grad():
        assert torch.equal(tiny_llama(x), base)


def test_edited_applies_to_run_too(tiny_llama):
    x = _tokens()
    with interp.edited(tiny_llama, [ZeroAblate(HeadId(0, 1))]):
        inside = interp.run(tiny_llama, x)
    assert torch.equal(inside, interp.run(tiny_llama, x, [ZeroAblate(HeadId(0, 1))]))


def test_batched_sweep_equals_the_loop(llama3):
    x = _tokens(b=4, n=11, seed=5)
    mask = torch.ones_like(x)
    mask[2, -3:] = 0  # padding, batch > 1, GQA 6/2, odd length
    means = interp.mean_activations(llama3, _tokens(b=5, seed=6), sites=("z",))
    _, src = interp.run(llama3, _tokens(b=4, n=11, seed=7), capture=CaptureSpec(sites=("z", "v", "resid_pre")))
    items = [ZeroAblate(HeadId(l, h)) for l in range(3) for h in range(6)]
    items += [MeanAblate(HeadId(l, h), mean=means) for l in (0, 2) for h in range(6)]
    items += [[ScaleHeadOutput(HeadId(1, 2), 0.5), AddToHead(HeadId(2, 0), torch.randn(8), 2.0)],
              Patch("v", 1, KVGroup(1, 1), positions=[3], source=src), Patch("resid_pre", 2, positions=[-1], source=src),
              AddVector(0, torch.randn(48), 0.3, positions=[1, 2]), MixUniform(HeadId(2, 3), 1.0)]
    # fused-kernel edits, several per batch (per-row edit parameters), one a list mixing fused and hooked edits
    items += [MixUniform(HeadId(l, h), s) for l, h, s in ((0, 0, 1.0), (1, 5, 0.5), (2, 1, 0.25), (0, 3, 0.8))]
    items += [[MixUniform(HeadId(1, 1), 1.0), ZeroAblate(HeadId(2, 2))]]
    for metric in (_metric, lambda lg: lg.log_softmax(-1)[:, :, 9].mean()):
        fast, _ = sweep_edits(llama3, x, items, metric, attention_mask=mask)
        slow = [float(metric(interp.run(llama3, x, it if isinstance(it, list) else [it], attention_mask=mask))) for it in items]
        assert max(abs(a - b) for a, b in zip(fast, slow)) < 1e-5
    mixes = [[MixUniform(HeadId(0, h), 1.0)] for h in range(3)]
    plans = [Plan.build(llama3, [m], 4, engine="hf") for m in mixes]
    assert _chunks([0, 1, 2], plans, ["hf"] * 3, 8) == [[0, 1, 2]]  # fused edits share one batch


def test_sweep_heads_frame_and_metric_errors(llama3):
    x = _tokens()
    df = interp.sweep_heads(llama3, x, lambda h: ZeroAblate(h), _metric, progress=False)
    assert len(df) == 18 and set(df.columns) >= {"model", "task", "layer", "head", "metric", "value"}
    ref = _loop_reference(llama3, x, [ZeroAblate(HeadId(2, 5))], _metric)[0]
    assert abs(df.iloc[-1]["value"] - ref) < 1e-5
    with pytest.raises(InputError, match="scalar"):
        interp.sweep_heads(llama3, x, lambda h: ZeroAblate(h), lambda lg: lg[:, -1, 5], progress=False)


def test_gqa_head_kinds_are_checked(tiny_llama):
    x = _tokens()
    with pytest.raises(InputError, match=r"query head.*KVGroup\(0, 0\)"):
        interp.run(tiny_llama, x, [ZeroAblate("k", 0, HeadId(0, 1))])
    with pytest.raises(InputError, match="is a KV group"):
        interp.run(tiny_llama, x, [ZeroAblate("z", 0, KVGroup(0, 1))])
    out = interp.run(tiny_llama, x, [ZeroAblate("v", 0, KVGroup(0, 1))])
    assert not torch.equal(out, interp.run(tiny_llama, x))
    assert str(KVGroup(3, 1)) == "L3G1" and KVGroup.parse("L3G1") == KVGroup(3, 1)


@pytest.mark.parametrize("edit, match", [
    (lambda: ZeroAblate(HeadId(5, 0)), "layer 5 out of range"),
    (lambda: ZeroAblate(HeadId(1, 6)), "head 6 out of range"),
    (lambda: ZeroAblate("v", 1, 2), "head 2 out of range.*2 KV groups"),
    (lambda: AddToHead(HeadId(0, 1), torch.randn(9)), "dimension 9, but d_head is 8"),
    (lambda: AddVector(0, torch.randn(47)), "dimension 47, but d_model is 48"),
    (lambda: ZeroAblate("resid_pre", 0, 1), "no head axis"),
    (lambda: ZeroAblate("z", 0, 1, positions=[12]), "position 12 out of range"),
])
def test_bad_edits_give_one_line_errors(tiny_llama, edit, match):
    with pytest.raises(InputError, match=match) as err:
        interp.run(tiny_llama, _tokens(), [edit()])
    assert "\n" not in str(err.value)


def test_patch_source_from_another_model_or_shape(tiny_llama):
    other = interp.tiny_model("gpt2")
    _, cap_other = interp.run(other, _tokens(), capture=CaptureSpec(sites=("z",)))
    with pytest.raises(InputError, match="captured from model 'tiny-gpt2'"):
        interp.run(tiny_llama, _tokens(), [Patch("z", 0, 1, source=cap_other)])
    _, short = interp.run(tiny_llama, _tokens(n=5), capture=CaptureSpec(sites=("z",)))
    with pytest.raises(InputError, match="same token length"):
        interp.run(tiny_llama, _tokens(), [Patch("z", 0, 1, source=short)])


def test_fused_only_edit_is_rejected_where_it_cannot_run(tiny_llama):
    with pytest.raises(InputError, match="fused attention kernel"):
        with interp.edited(tiny_llama, [ScaleSegment(HeadId(0, 0), "first", 0.5)]):
            pass


def test_set_pattern_fused_kernel_equals_bridge_pattern_hook(tiny_llama):
    """The same SetPattern value runs in the fused kernel (hf engine) and as a bridge pattern hook; both are exact."""
    import interp
    from interp.hooks import CaptureSpec
    from interp.intervene import compile as C
    from interp.intervene.run import choose_engine
    from interp.intervene.values import SetPattern
    from interp.types import HeadId

    e = SetPattern(HeadId(1, 2), (4, 6), {0: 0.25, 3: 0.75})
    assert choose_engine(tiny_llama, [e], (), C.Dims.of(tiny_llama)) == "hf"  # the kernel's row overwrite
    prompts = ["hello there my friend", "a b c d e f g h"]
    fused = interp.run(tiny_llama, prompts, [e])
    bridged, cap = interp.run(tiny_llama, prompts, [e], capture=CaptureSpec(sites=("pattern",), layers=(1,)))
    torch.testing.assert_close(fused, bridged, atol=1e-4, rtol=1e-4)
    row = cap["pattern", 1][:, 2, 4]
    assert torch.allclose(row.sum(-1), torch.ones(2)) and torch.allclose(row[:, [0, 3]], torch.tensor([[0.25, 0.75]] * 2))
    negative = SetPattern(HeadId(1, 2), (-1,), {0: 1.0})  # counts from the end: only the pattern hook takes it
    assert choose_engine(tiny_llama, [negative], (), C.Dims.of(tiny_llama)) == "bridge"
