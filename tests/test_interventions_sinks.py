import pytest
import torch

from interp.attnstats import attention_stats
from interp.edits import ScaleSegment
from interp.errors import InputError
from interp.analyze.sink_interventions import InitialTokenScale, MCEvaluator, SinkCalibrate, sink_heads
from interp.tasks.mc import TASKS, generate, load_mc, option_token_ids
from interp.types import HeadId

H = HeadId(1, 2)


def test_compile_to_edits():
    assert InitialTokenScale([H], 2.0).to_edits() == [ScaleSegment(H, "first", 2.0, "renormalize")]
    assert SinkCalibrate(["L1H2"]).to_edits() == [ScaleSegment(H, "sinks:L1H2", 0.4, "redistribute")]
    assert SinkCalibrate([H], beta=0.5).to_edits("shared") == [ScaleSegment(H, "shared", 0.5, "redistribute")]


@pytest.mark.parametrize("make,msg", [
    (lambda: SinkCalibrate([H], beta=-0.1), "beta must be >= 0"),
    (lambda: SinkCalibrate([H], tau=1.2), "strictly between 0 and 1"),
    (lambda: SinkCalibrate([H], tau=0.0), "strictly between 0 and 1"),
    (lambda: InitialTokenScale([H], gamma=-1.0), "gamma must be >= 0"),
    (lambda: SinkCalibrate([]), "at least one head"),
])
def test_bad_parameters(make, msg):
    with pytest.raises(InputError, match=msg):
        make()


def _sink_setup(model, text):
    clean = attention_stats(model, text, key_mass=True)
    iv = SinkCalibrate([H], beta=0.4, tau=0.1)
    sinks = iv.segments(clean)[iv.segment_name(H)]
    return clean, iv, sinks


def test_act_redistribution_keeps_rows_stochastic(tiny_llama):
    """methods.md §3 oracle: sink mass ×β exactly, the first (BOS) column treated like any non-sink key,
    each non-sink entry ×(1−β·m)/(1−m), rows still sum to 1."""
    text = "sinks, sinks, and more sinks."
    clean, iv, sinks = _sink_setup(tiny_llama, text)
    assert sinks.any(), "tau too high for the tiny model"
    first = torch.zeros_like(sinks)
    first[:, 0] = True
    segs = {iv.segment_name(H): sinks, "first": first, "rest": ~(sinks | first)}
    before = attention_stats(tiny_llama, text, segments=segs, allow_overlap=True)
    after = attention_stats(tiny_llama, text, segments=segs, allow_overlap=True, edits=iv.to_edits())
    m0, m1 = before.segment_mass[0, 1, 2], after.segment_mass[0, 1, 2]  # [query_pos n_segments]
    assert torch.allclose(m1.sum(-1), torch.ones_like(m1[:, 0]), atol=1e-5)
    assert torch.allclose(m1[:, 0], 0.4 * m0[:, 0], atol=1e-5)
    rows = (m0[:, 0] > 0) & (m0[:, 0] < 1)
    factor = (1 - 0.4 * m0[rows, 0]) / (1 - m0[rows, 0])
    assert torch.allclose(m1[rows, 1], m0[rows, 1] * factor, atol=1e-5)
    # other heads untouched
    assert torch.allclose(after.segment_mass[0, 1, 3], before.segment_mass[0, 1, 3], atol=1e-6)


def test_zerotuning_first_token_oracle(tiny_llama):
    text = "zero tuning"
    before = attention_stats(tiny_llama, text)
    after = attention_stats(tiny_llama, text, edits=InitialTokenScale([H], 2.0).to_edits())
    a0 = before.segment_mass[0, 1, 2, :, 0]
    assert torch.allclose(after.segment_mass[0, 1, 2, :, 0], 2 * a0 / (a0 + 1), atol=1e-5)


def test_identity_interventions_change_nothing(tiny_llama):
    text = "identity edits change nothing"
    clean, _, sinks = _sink_setup(tiny_llama, text)
    heads = [HeadId(l, h) for l in range(2) for h in range(6)]
    act = SinkCalibrate(heads, beta=1.0)
    zt = InitialTokenScale(heads, 1.0)
    st = attention_stats(tiny_llama, text, segments={**act.segments(clean), **zt.segments()}, allow_overlap=True,
                         edits=act.to_edits() + zt.to_edits())
    assert torch.allclose(st.logits, clean.logits, atol=1e-5)
    assert torch.allclose(st.entropy, clean.entropy, atol=1e-5)


def _toy_items():
    return [{"id": f"t{i}", "task": "toy", "prompt": p, "options": ["a", "b", "c"], "answer": i % 3, "split": "calib"}
            for i, p in enumerate(["x y z", "hello", "a b c d e f", "sinks", "more text here"])]


def test_mc_evaluator_identity_and_range(tiny_llama):
    ev = MCEvaluator(tiny_llama, _toy_items(), batch_size=2)
    base = ev.scores()
    assert len(base) == 5 and all(len(s) == 3 for s in base)
    assert 0.0 <= ev.accuracy() <= 1.0
    ident = ev.scores([SinkCalibrate([HeadId(1, 0)], beta=1.0), InitialTokenScale([HeadId(0, 1)], 1.0)])
    assert torch.allclose(torch.tensor(ident), torch.tensor(base), atol=1e-4)
    moved = ev.scores([InitialTokenScale([HeadId(l, h) for l in range(2) for h in range(6)], 0.0)])
    assert not torch.allclose(torch.tensor(moved), torch.tensor(base), atol=1e-4)
    for h, strength in sink_heads(ev, min_layer=0):
        assert strength > 0


def test_mc_option_first_tokens_must_differ(tiny_llama):
    items = [{"id": "x", "task": "toy", "prompt": "p", "options": [" yes", " no"], "answer": 0, "split": "test"}]
    with pytest.raises(InputError, match="share a first token"):
        MCEvaluator(tiny_llama, items)


def test_shipped_mc_set_is_deterministic_and_balanced():
    items = load_mc()
    assert len(items) == 400 and {it["task"] for it in items} == set(TASKS)
    regen = [it for t in TASKS for it in generate()[t]]
    assert regen == items
    assert len(load_mc(split="calib")) == 100
    for t in ("sentiment", "comparison"):
        answers = [it["answer"] for it in load_mc(t)]
        assert 35 <= sum(a == 0 for a in answers) <= 65


@pytest.mark.smollm
def test_smollm_options_tokenize_apart(smollm2):
    assert len(option_token_ids(smollm2.tokenizer, load_mc())) == 400
