"""Vision-aware heads: shapes task, image inputs, VHD, VHR/VAR identities and oracles, the vision job and CLI."""
import json
import warnings

import numpy as np
import pytest
import torch

from interp.errors import InputError, ModelUnavailableError, UnsupportedModelError
from interp.tasks import shapes


@pytest.fixture(scope="module")
def llava():
    import interp

    return interp.tiny_model("llava")


@pytest.fixture(scope="module")
def items(llava):
    from interp.analyze.vision import eval_sets, items

    ordinary, traps, caps = eval_sets(n_ordinary=3, n_trap=2, n_captions=1)
    return items(llava, ordinary, kinds=("color", "count", "exist")) + items(llava, traps), items(llava, caps, kinds=("caption",))


# ---------------------------------------------------------------------------------------------------- task
def test_shapes_are_deterministic_and_traps_are_rare_colors():
    a, b = shapes.dataset(5, 6), shapes.dataset(5, 6)
    assert [s.objects for s in a] == [s.objects for s in b]
    assert np.array_equal(a[0].image(), b[0].image()) and a[0].image().shape == (64, 64, 3)
    for s in shapes.trap_set(0, 8):
        color_q, trap_exist, positive = s.questions
        assert color_q.answer != color_q.prior == shapes.PRIORS[color_q.text.split()[-1].rstrip("?")]
        assert (trap_exist.answer, trap_exist.prior, positive.answer) == ("No", "Yes", "Yes")
        assert sum(o.shape == color_q.text.split()[-1].rstrip("?") for o in s.objects) == 1


def test_training_distribution_has_the_prior():
    objs = [o for s in shapes.dataset(1, 400) for o in s.objects if o.shape == "square"]
    assert np.mean([o.color == "red" for o in objs]) > 0.85


def test_balanced_count_questions_are_true_and_not_mostly_zero():
    import random
    from collections import Counter

    rng = random.Random(0)
    scenes = shapes.dataset(2, 600)
    qs = [shapes.balanced_count_question(s.objects, rng) for s in scenes]
    for s, q in zip(scenes, qs):
        shape = next(k for k, v in shapes.PLURALS.items() if v in q.text)
        assert q.answer == str(sum(o.shape == shape for o in s.objects))
    new = Counter(q.answer for q in qs)
    old = Counter(q.answer for s in scenes for q in s.questions if q.kind == "count")
    assert max(new.values()) < 0.55 * len(qs) and new["0"] < 0.7 * old["0"] and new["2"] > 1.5 * old["2"]


def test_kinds_below_their_majority_baseline_leave_the_summary():
    import pandas as pd

    from interp.analyze.vision import below_baseline

    frame = pd.DataFrame({"metric": ["accuracy"] * 3, "prompt_id": ["count", "color", "all"],
                          "value": [0.435, 0.686, 0.6], "majority": [0.655, 0.3, float("nan")]})
    assert below_baseline(frame) == ["count"]


def test_chair_counts_hallucinated_mentions():
    objs = (shapes.Obj("square", "red", 0, 0), shapes.Obj("circle", "blue", 1, 1))
    c = shapes.chair("A red square, a green circle and a yellow cross.", objs)
    assert c == {"mentioned": 3.0, "hallucinated": 1.0, "attr_hallucinated": 2.0}


# --------------------------------------------------------------------------------------------- image inputs
def test_image_size_and_mode_rules(tmp_path):
    from PIL import Image

    from interp.images import load_image

    big = np.zeros((80, 96, 3), np.uint8)
    with pytest.warns(UserWarning, match="resized to 64×64"):
        assert load_image(big, 64).shape == (64, 64, 3)
    with pytest.raises(InputError, match="96×80; this model takes 64×64"):
        load_image(big, 64, resize=False)
    with pytest.warns(UserWarning, match="mode L; converted to RGB"):
        assert load_image(np.zeros((64, 64), np.uint8), 64).shape == (64, 64, 3)
    Image.new("CMYK", (64, 64)).save(tmp_path / "cmyk.jpg")
    with pytest.raises(InputError, match="mode CMYK"):
        load_image(tmp_path / "cmyk.jpg", 64)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match="not a readable image"):
        load_image(tmp_path / "bad.png", 64)
    with pytest.raises(InputError, match="dtype float64"):
        load_image(np.zeros((64, 64, 3)), 64)


def test_image_token_segment_must_match(llava, items):
    from interp.images import check_image_tokens, vlm_batch

    it = items[0][0]
    b = vlm_batch(llava, [it.prompt], [it.image])
    wrong = b.image_mask.clone()
    wrong[0, int(wrong[0].nonzero()[0])] = False
    with pytest.raises(InputError, match="image segment does not match"):
        check_image_tokens(llava, b.tokens, wrong)
    from interp.analyze.vision import vlm_stats

    with pytest.raises(InputError, match="image segment does not match"):
        vlm_stats(llava, b, segments={"image": wrong})
    with pytest.raises(InputError, match="has 15 image tokens"):
        first = list(it.prompt).index(llava.original_model.config.image_token_id)
        vlm_batch(llava, [[t for i, t in enumerate(it.prompt) if i != first]], [it.image])


def test_text_only_model_is_rejected(tiny_llama):
    from interp.images import vlm_config

    with pytest.raises(UnsupportedModelError, match="text-only"):
        vlm_config(tiny_llama)


def test_fused_vlm_pass_matches_the_bridge_llava_forward(llava, items):
    """TransformerLens' LLaVA adapter hosts the model; the fused pass (image features scattered into the
    embeddings) gives the bridge's logits and hook_z."""
    from interp.analyze.vision import vlm_stats
    from interp.images import vlm_batch

    it = items[0][0]
    b = vlm_batch(llava, [it.prompt], [it.image])
    with torch.no_grad():
        logits, cache = llava.run_with_cache(b.tokens, pixel_values=b.pixels)
    st = vlm_stats(llava, b, return_z=True)
    assert torch.allclose(st.logits, logits, atol=1e-5)
    for layer in range(4):
        z = cache[f"blocks.{layer}.attn.hook_z"][0]
        assert torch.allclose(st.z[0, layer], z.reshape(st.z[0, layer].shape), atol=1e-5)


# --------------------------------------------------------------------------------------------------- VHD
def test_vhd_of_a_head_blind_to_the_image_is_zero(llava, items):
    from interp.analyze.vision import vhd
    from interp.edits import ScaleSegment
    from interp.types import HeadId

    its = items[0][:4]
    blind = [ScaleSegment(HeadId(0, h), "image", 0.0) for h in (0, 3)]
    d = vhd(llava, its, edits=blind)
    first = d[(d.metric == "vhd") & (d.layer == 0)].set_index("head")["value"]
    assert first[0] == 0.0 and first[3] == 0.0
    assert (first.drop([0, 3]) > 1e-4).all()
    everything = [ScaleSegment(HeadId(l, h), "image", 0.0) for l in range(4) for h in range(6)]
    d = vhd(llava, its, edits=everything)
    assert d[d.metric == "vhd"]["value"].max() < 1e-5


def test_vhr_selection_oracle():
    from interp.analyze.vision_interventions import select_vhr

    assert select_vhr(np.zeros(6)) == []
    assert select_vhr(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 5.0])) == [3, 4]  # 5.0 is a surge above mean + std


# ----------------------------------------------------------------------------------------- VHR / VAR
def test_identity_settings_are_bit_for_bit(llava, items):
    from interp.analyze.vision import sink_dims
    from interp.analyze.vision_interventions import VAR, VHR, run_item, var_segments

    for it in (items[0][0], items[1][0]):
        n = 1 if it.kind != "caption" else 4
        ids0, l0, _ = run_item(llava, it, None, max_new_tokens=n)
        ids1, l1, log = run_item(llava, it, VHR(alpha=1.0), max_new_tokens=n)
        assert torch.equal(l0, l1) and ids0 == ids1 and any(log.chosen.values())
        seg = var_segments(llava, it, sink_dims(llava), tau=2.0)
        ids2, l2, log = run_item(llava, it, VAR(p=1.0, summ=0.0), segments=seg, max_new_tokens=n)
        assert torch.equal(l0, l2) and ids0 == ids2 and any(log.chosen.values())
        _, l3, _ = run_item(llava, it, VHR(alpha=2.0), max_new_tokens=n)
        assert not torch.equal(l0, l3)


def test_var_redistribution_matches_the_oracle(llava, items):
    """§4 oracle: sinks keep p of their mass, non-sink image tokens gain (1-p)·s, every other key is unchanged."""
    from interp.analyze.vision import sink_dims
    from interp.analyze.vision_interventions import StepRunner, var_edits, var_segments

    it = items[0][1]
    seg = var_segments(llava, it, sink_dims(llava), tau=2.0)
    assert seg["sinks"].sum() > 0
    runner = StepRunner(llava, it, segments={**seg, "rest": 1 - seg["sinks"] - seg["image_rest"]})
    names = list(runner.names)
    m = runner.trial((), 1).segment_mass[0, :, -1].double()
    s, i, r = (m[:, names.index(k)] for k in ("sinks", "image_rest", "rest"))
    a = runner.trial(var_edits(1, [0, 2, 5], s, i, 0.6), 1).segment_mass[0, :, -1].double()
    for h in (0, 2, 5):
        assert float(a[h, names.index("sinks")]) == pytest.approx(0.6 * float(s[h]), abs=1e-6)
        assert float(a[h, names.index("image_rest")]) == pytest.approx(float(i[h] + 0.4 * s[h]), abs=1e-6)
        assert float(a[h, names.index("rest")]) == pytest.approx(float(r[h]), abs=1e-6)
    for h in (1, 3, 4):
        assert torch.allclose(a[h], m[h], atol=1e-6)


def test_answer_attention_is_the_answer_rows_image_mass(llava, items):
    from interp.analyze.vision import answer_attention, vlm_stats
    from interp.images import vlm_batch

    it = items[0][0]
    att = answer_attention(llava, it)
    st = vlm_stats(llava, vlm_batch(llava, [it.prompt], [it.image]))
    assert att.shape == (4, 6, 16)
    assert torch.allclose(att.sum(-1), st.segment_mass[0, :, :, -1, 0], atol=1e-5)


# ------------------------------------------------------------------------------------------- job and CLI
@pytest.mark.slow
def test_vision_job_end_to_end_on_a_random_llava(llava, tmp_path):
    import pandas as pd

    from interp.jobs.config import VisionConfig
    from interp.jobs.vision import CONDITIONS, run_vision
    from interp.schema import validate_frame

    cfg = VisionConfig(n_ordinary=2, n_trap=1, n_captions=1, max_caption_tokens=3, tau=2.0)
    paths = run_vision(llava, tmp_path / "v", cfg, progress=False)
    df = validate_frame(pd.read_parquet(paths["vision"]))
    assert set(CONDITIONS) <= set(df["condition"].dropna())
    for metric in ("vhd", "t_vhd", "t_vhd_token", "accuracy", "hallucination_rate", "chair_i", "image_centric_rate",
                   "visual_sinks_per_prompt", "sink_dim_max_image"):
        assert (df["metric"] == metric).any(), metric
    report = paths["report"].read_text()
    assert "updatemenus" in report and report.count("plotly.js v") <= 1
    run = json.loads(paths["run"].read_text())
    assert run["verb"] == "vision" and set(run["summary"]["conditions"]) == set(CONDITIONS)


def test_cli_vision_rejects_bad_input(tmp_path, capsys):
    from interp.cli import main

    def code(*argv):
        with pytest.raises(SystemExit) as e:
            main(["vision", "--out", str(tmp_path / "o"), *argv])
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return e.value.code, err

    c, err = code("--model", "smollm2-135m")
    assert c == 2 and "needs a LLaVA-style vision-language model" in err
    (tmp_path / "bad.png").write_bytes(b"garbage")
    c, err = code("--image", str(tmp_path / "bad.png"))
    assert c == 2 and "not a readable image" in err
    c, err = code("--p", "1.5")
    assert c == 2 and "--p must lie in [0, 1]" in err


def test_cli_vision_wrong_image_size_is_rejected_without_resize(tmp_path, capsys):
    from PIL import Image

    from interp.cli import main

    Image.new("RGB", (50, 40)).save(tmp_path / "small.png")
    with pytest.raises(SystemExit) as e:
        main(["vision", "--out", str(tmp_path / "o"), "--image", str(tmp_path / "small.png"), "--no-resize"])
    assert e.value.code == 2 and "50×40; this model takes 64×64" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- shipped weights
# `python benchmarks/eval_tinyvlm.py --subset` on the shipped weights (README, "Vision-aware heads").
REPORTED = {"all": 0.705, "color": 0.778, "shape": 0.909, "count": 0.500, "exist": 0.667}

@pytest.mark.smollm
@pytest.mark.slow
def test_shipped_tinyvlm_reaches_the_reported_accuracy():
    """The closing-note numbers (README): ordinary held-out accuracy and trap hallucination on a fixed subset."""
    import interp
    from interp.analyze.vision import answer_frame, baseline_answers, eval_sets, items

    m = interp.load_model("tinyvlm")
    ordinary, traps, _ = eval_sets(seed=1000, n_ordinary=12, n_trap=6, n_captions=1)
    its = items(m, ordinary, kinds=("color", "shape", "count", "exist")) + items(m, traps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = answer_frame(m, its, baseline_answers(m, its), "baseline")
    acc = df[(df.metric == "accuracy")].set_index("prompt_id")["value"]
    assert acc["all"] >= REPORTED["all"] - 0.05
    for kind in ("color", "shape", "count", "exist"):
        assert acc[kind] >= REPORTED[kind] - 0.1, kind


def test_attention_stats_takes_a_plain_llava_with_text(llava):
    import interp

    st = interp.attention_stats(llava.original_model, "hello world", tokenizer=llava.tokenizer)
    assert st.entropy.shape[:3] == (1, 4, 6)


def test_inline_decisions_equal_the_trial_pass_reference(llava, items):
    from interp.analyze.vision import sink_dims
    from interp.analyze.vision_interventions import VAR, VHR, RandomHeads, run_item, var_segments

    it = items[1][0]
    seg = var_segments(llava, it, sink_dims(llava), tau=2.0)
    for pol in (VHR(alpha=2.0), VAR(p=0.5, summ=0.0)):
        ref = run_item(llava, it, pol, segments=seg, max_new_tokens=2, reference=True)
        fast = run_item(llava, it, pol, segments=seg, max_new_tokens=2)
        assert ref[0] == fast[0] and torch.equal(ref[1], fast[1]) and ref[2].chosen == fast[2].chosen
        ctl = [run_item(llava, it, RandomHeads(pol, ref[2], seed=1), segments=seg, max_new_tokens=2, reference=r) for r in (True, False)]
        assert torch.equal(ctl[0][1], ctl[1][1]) and ctl[0][2].chosen == ctl[1][2].chosen


@pytest.mark.smollm
@pytest.mark.slow
def test_training_script_runs_both_stages_and_records_its_config(tmp_path):
    """`benchmarks/train_tinyvlm.py --tiny`: a few steps of each stage, weights and config beside them; `--init`
    skips the alignment and starts from saved weights (the LM-stage experiments in RESULTS use it)."""
    train = _train_script()
    train.main(["--tiny", "--quiet", "--threads", "1", "--out", str(tmp_path / "a")])
    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    assert meta["align"]["steps"] == 5 and meta["lm"]["steps_done"] == 2 and meta["vision"]["patch_size"] == 8
    assert np.isfinite(meta["lm"]["final_loss"])
    train.main(["--tiny", "--quiet", "--threads", "1", "--init", str(tmp_path / "a"), "--align-weight", "30",
                "--anchor-words", "--out", str(tmp_path / "b")])
    meta = json.loads((tmp_path / "b" / "config.json").read_text())
    assert meta["init"] == str(tmp_path / "a") and meta["lm"]["align_weight"] == 30.0 and np.isfinite(meta["lm"]["final_loss"])


def _train_script():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("train_tinyvlm", Path(__file__).parents[1] / "benchmarks" / "train_tinyvlm.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    return train


@pytest.mark.parametrize("args, message", [
    (["--lm-steps", "0"], "--lm-steps must be at least 1, got 0"),
    (["--lr-lm", "-1"], "--lr-lm must be positive"),
    (["--anchor-words"], "pass --align-weight too"),
    (["--init", "{tmp}/nowhere"], "no vision.safetensors there"),
    (["--out", "{tmp}/a_file"], "is a file; pass a directory"),
    (["--out", "{tmp}/a_file/weights"], "a_file' is a file"),
    (["--ckpt-dir", "{tmp}/a_file"], "is a file; pass a directory"),
])
def test_training_script_rejects_bad_arguments_before_loading(tmp_path, capsys, args, message):
    (tmp_path / "a_file").write_text("keep me")
    with pytest.raises(SystemExit) as e:
        _train_script().main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and message in err and len(err.splitlines()) == 1, err
    assert (tmp_path / "a_file").read_text() == "keep me"


def test_vision_weights_of_another_shape_are_rejected(llava, tmp_path):
    """Weights with the right names but other shapes (e.g. patch-16 weights into a patch-8 tower) get a
    one-line error naming the tensor, not a torch state-dict dump."""
    from safetensors.torch import load_file, save_file

    from interp.models.tinyvlm import load_vision_weights, save_vision_weights

    hf = llava.original_model
    out = save_vision_weights(hf, tmp_path / "w", {})
    state = load_file(out / "vision.safetensors")
    key = next(k for k in state if k.endswith("patch_embedding.weight"))
    state[key] = torch.zeros(*state[key].shape[:2], 4, 4, dtype=state[key].dtype)
    save_file(state, out / "vision.safetensors")
    with pytest.raises(ModelUnavailableError, match="trained for another tinyvlm shape .*patch_embedding.weight"):
        load_vision_weights(hf, out)
