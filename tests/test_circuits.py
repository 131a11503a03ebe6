"""Circuit discovery, reuse and repair: invariants on a tiny model, robust facts on SmolLM2, bad input."""
import pandas as pd
import pytest
import torch

from interp.analyze.circuits import (CircuitParams, CircuitTask, discover_circuit, path_patch_senders,
                                     mean_ablated_metric)
from interp.tasks.ioi import LogitDiff
from interp.types import HeadId

torch.set_num_threads(1)

CLEAN = ["The cat sat on a mat.", "A dog ran to the sea", "Big red fox jumps up."]
BAD = ["The bat sat in a hat.", "A hog ran to the lea", "Big tan cow jumps up."]


def _toy_task(model, clean=CLEAN, bad=BAD):
    from interp.inputs import to_batch

    n = len(clean)
    end = to_batch(model, clean).attention_mask.sum(1) - 1
    metric = LogitDiff(torch.tensor([70, 80, 90][:n]), torch.tensor([71, 81, 91][:n]), end)
    pos = {"end": end, "io": torch.full((n,), 3), "s1": torch.full((n,), 2), "s2": torch.full((n,), 6)}
    return CircuitTask("toy", list(clean), list(bad), metric, pos, [0] * n, ((70, 70), (80, 80)))


def test_batched_path_patching_matches_reference(tiny_llama):
    from interp.analyze.patching import path_patching

    m = _toy_task(tiny_llama)
    senders = [HeadId(0, h) for h in range(6)]
    vals, clean, bad, _ = path_patch_senders(tiny_llama, m.clean, m.corrupted, m.metric, senders, [("q", 1, 2), ("v", 1, 0)])
    ref = path_patching(tiny_llama, m.clean, m.corrupted, m.metric, receivers=[("q", HeadId(1, 2)), ("v", __import__("interp").KVGroup(1, 0))],
                        senders=senders, guard_frac=0)  # a random model: the prompts scatter more than clean − corrupted
    ref = ref[ref["metric"] == "path_patch"]["value"].to_numpy()
    ours = [(v - clean) / (bad - clean) for v in vals]
    assert torch.allclose(torch.tensor(ours), torch.tensor(ref, dtype=torch.float32), atol=1e-4)
    vals, clean, bad, _ = path_patch_senders(tiny_llama, m.clean, m.corrupted, m.metric, senders + [HeadId(1, 0)])
    ref = path_patching(tiny_llama, m.clean, m.corrupted, m.metric, senders=senders + [HeadId(1, 0)], guard_frac=0)
    ref = ref[ref["metric"] == "path_patch"]["value"].to_numpy()
    assert torch.allclose(torch.tensor([(v - clean) / (bad - clean) for v in vals]), torch.tensor(ref, dtype=torch.float32), atol=1e-4)


def test_every_sender_frozen_has_zero_effect(tiny_llama):
    from interp.hooks import CaptureSpec
    from interp.intervene.run import run

    m = _toy_task(tiny_llama)
    _, cap = run(tiny_llama, m.clean, capture=CaptureSpec(sites=("z",)))
    clean = float(m.metric(cap.logits))
    senders = [HeadId(0, h) for h in range(6)]
    for recv in (None, [("q", 1, 0), ("k", 1, 1), ("v", 1, 1)]):
        vals, *_ = path_patch_senders(tiny_llama, m.clean, m.corrupted, m.metric, senders, recv, caches=(cap, cap))
        assert max(abs(v - clean) for v in vals) < 1e-5


def test_head_with_zero_w_o_has_zero_effect_at_every_stage():
    import interp
    from interp.intervene.hf import plain

    model = interp.tiny_model("llama")
    with plain(model) as hf, torch.no_grad():
        hf.model.layers[0].self_attn.o_proj.weight[:, 3 * 8:4 * 8] = 0.0
    m = _toy_task(model)
    senders = [HeadId(0, h) for h in range(6)]
    for recv in (None, [("q", 1, h) for h in range(6)] + [(s, 1, g) for s in "kv" for g in range(2)]):
        vals, clean, bad, _ = path_patch_senders(model, m.clean, m.corrupted, m.metric, senders, recv)
        assert abs(vals[3] - clean) < 1e-5
        assert max(abs(v - clean) for v in vals) > 1e-4  # the other heads do matter


def test_discovery_reuse_and_repair_on_tiny(tiny_llama):
    from interp.analyze.circuits import faithfulness
    from interp.analyze.repair import repair_edits
    from interp.analyze.reuse import circuit_reuse
    from interp.hooks import CaptureSpec
    from interp.intervene.run import run

    m = _toy_task(tiny_llama)
    with pytest.warns(UserWarning, match="spread across prompts"):
        flagged = discover_circuit(tiny_llama, m, CircuitParams(n_stages=1, top_frac=0.2, min_effect=0.0, keep=4))
    assert "spread across prompts" in flagged.info["warning"]
    params = CircuitParams(n_stages=2, top_frac=0.2, min_effect=0.0, keep=4, guard_frac=0)  # random model: no task to guard
    circ = discover_circuit(tiny_llama, m, params)
    assert set(circ.heads["stage"]) <= {1, 2} and len(circ.heads) >= 1
    assert circ.info["exact_runs"] + circ.info["exact_runs_saved"] >= 12 and circ.info["exact_runs_saved"] > 0
    assert set(circ.heads["class"]) <= set(__import__("interp.analyze.circuits").analyze.circuits.CLASSES)
    f = faithfulness(tiny_llama, m, circ.head_ids(), guard_frac=0)
    assert set(f) >= {"full", "circuit", "empty", "faithfulness"}
    r = circuit_reuse(circ.patching, circ.patching, n_heads_total=12, top_frac=0.2)
    s = r.attrs["summary"]
    assert s["overlap"] == 1.0 and s["jaccard"] == 1.0 and (r[r["metric"] == "membership"]["condition"] == "shared").all()
    from interp.inputs import to_batch

    n_keys = to_batch(tiny_llama, m.clean).tokens.shape[1]
    wrong = [torch.tensor([2, 3, 1]), torch.tensor([5, 6, 4])]
    edits = repair_edits([HeadId(1, 2), HeadId(0, 5)], wrong, n_keys)
    _, cap = run(tiny_llama, m.clean, edits, capture=CaptureSpec(sites=("pattern",)))
    right = torch.tensor([4, 1, 2])
    for h in (HeadId(1, 2), HeadId(0, 5)):
        row = cap["pattern", h.layer][:, h.head, -1]  # [batch key_pos]
        assert torch.allclose(row.sum(-1), torch.ones(3), atol=1e-6)
        assert (row[torch.arange(3), right] == 0).all()
        assert torch.allclose(row[torch.arange(3), wrong[0]], torch.full((3,), 0.5))


def test_chunked_discovery_and_faithfulness_equal_one_batch(tiny_llama):
    """Chunks of 1-2 prompts (uneven lengths, so each chunk pads differently) give the one-batch circuit: the
    same AtP scores, stage effects, heads and faithfulness, to float rounding."""
    from interp.analyze.circuits import faithfulness, task_chunks

    clean = CLEAN + ["Small green frogs hop.", "One bird sang"]
    bad = BAD + ["Small brown toads hop.", "One frog sang"]
    m = _toy_task(tiny_llama, clean, bad)
    m = CircuitTask(m.name, m.clean, m.corrupted, LogitDiff(torch.tensor([70, 80, 90, 60, 50]), torch.tensor([71, 81, 91, 61, 51]),
                                                            m.metric.end), m.positions, m.groups, m.copy_pairs)
    whole = CircuitParams(n_stages=2, top_frac=0.2, min_effect=0.0, keep=4, guard_frac=0)
    small = CircuitParams(n_stages=2, top_frac=0.2, min_effect=0.0, keep=4, guard_frac=0, chunk_tokens=20)
    chunks = task_chunks(tiny_llama, m, 20)
    assert len(task_chunks(tiny_llama, m, 10**6)) == 1 and len(chunks) >= 3
    assert sum(len(c) for c in chunks) == 5 and [p for c in chunks for p in c.clean] == m.clean
    a, b = discover_circuit(tiny_llama, m, whole), discover_circuit(tiny_llama, m, small)
    assert b.info["chunks"] == len(chunks) and a.info["chunks"] == 1
    assert a.info["metric_clean"] == pytest.approx(b.info["metric_clean"], abs=1e-5)
    pa, pb = a.patching.sort_values(["metric", "condition", "layer", "head"]), b.patching.sort_values(["metric", "condition", "layer", "head"])
    assert list(pa["metric"]) == list(pb["metric"]) and len(pa) > 12
    assert torch.allclose(torch.tensor(pa["value"].to_numpy()), torch.tensor(pb["value"].to_numpy()), atol=1e-4, rtol=1e-4)
    assert a.head_ids() == b.head_ids()
    fa = faithfulness(tiny_llama, m, a.head_ids(), guard_frac=0)
    fb = faithfulness(tiny_llama, m, a.head_ids(), guard_frac=0, chunk_tokens=20)
    for key in ("full", "circuit", "empty", "spread"):
        assert fa[key] == pytest.approx(fb[key], abs=1e-5)


def test_faithfulness_is_nan_with_a_reason_when_full_minus_empty_is_noise(tiny_llama, monkeypatch):
    """Constructed case (the Colored Objects failure): the full model's metric scatters ±3 across prompts while
    full − empty is 0.02, so faithfulness_norm would be ~(circuit − empty)/0.02; it is NaN with a reason."""
    import interp.analyze.circuits as C
    from interp.jobs.circuits import _intro, _no_nan
    from interp.jobs.circuits_config import CircuitsConfig

    full = torch.tensor([3.0, -2.8, 3.1, -3.0])  # mean 0.075, sd ≈ 3.5

    def fake(model, task, ablate, per_prompt=False, chunk_tokens=None):
        if not ablate:
            return full if per_prompt else float(full.mean())
        return 0.4 if len(ablate) < 12 else float(full.mean()) - 0.02

    monkeypatch.setattr(C, "mean_ablated_metric", fake)
    f = C.faithfulness(tiny_llama, _toy_task(tiny_llama), [HeadId(0, 1)])
    assert f["faithfulness_norm"] != f["faithfulness_norm"] and "full − empty" in f["reason_norm"]
    assert f["faithfulness"] != f["faithfulness"] and "spread across prompts" in f["reason"]
    text = _intro(CircuitsConfig(task="ioi"), {"prompts": 4, "metric_clean": 0.1, "metric_corrupt": 0.0, "exact_runs": 1,
                                             "exact_runs_saved": 0, "forward_equiv": 2.0, "faithfulness": f})
    assert "Warning" in text and "undefined (NaN)" in text
    assert _no_nan(f)["faithfulness_norm"] is None
    full = torch.tensor([3.0, 2.8, 3.1, 3.0])  # a task the model does: the ratios are defined
    g = C.faithfulness(tiny_llama, _toy_task(tiny_llama), [HeadId(0, 1)])
    assert not g["reason"] and g["faithfulness"] == pytest.approx(0.4 / float(full.mean()))


# ------------------------------------------------------------------------------------------- bad input

from interp.cli import main  # noqa: E402


def _fake_circuit_dir(path, model):
    import json

    import pandas as pd

    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"verb": "circuits", "key": "x", "config": {"model": model, "task": "ioi"}}))
    pd.DataFrame({"layer": [1, 2], "head": [0, 1], "stage": [1, 2], "class": ["name mover", "S-inhibition"],
                  "effect": [0.5, 0.3], "copy_score": [0.8, -0.1]}).to_parquet(path / "circuit.parquet")
    pd.DataFrame({"model": model, "task": "ioi", "layer": [1, 2], "head": [0, 1], "metric": "path_patch",
                  "value": [0.5, 0.3], "condition": ["stage1", "stage2"]}).to_parquet(path / "patching.parquet")
    return path


@pytest.mark.parametrize("args, msg", [
    (["circuits", "--task", "sudoku"], "--task 'sudoku' unknown"),
    (["circuits", "--prompts", "0"], "--prompts must be at least 1"),
    (["repair", "--prompts", "0"], "--prompts must be at least 1"),
    (["circuits", "--model", "minilm-l6"], "needs a causal language model"),
])
def test_bad_input_exits_2_with_one_line(args, msg, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(args + ["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and msg in err and "\n" not in err


def test_reuse_refuses_circuits_of_different_models(capsys, tmp_path):
    a = _fake_circuit_dir(tmp_path / "a", "smollm2-135m")
    b = _fake_circuit_dir(tmp_path / "b", "gpt2")
    with pytest.raises(SystemExit) as e:
        main(["reuse", str(a), str(b), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "different models" in err and "\n" not in err
    with pytest.raises(SystemExit) as e:
        main(["reuse", str(a), str(tmp_path), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "DIR_B's manifest" in capsys.readouterr().err


def test_tokenizer_without_single_token_names_exits_2(tiny_dir, capsys, tmp_path):
    for task in ("ioi", "colored-objects"):
        with pytest.raises(SystemExit) as e:
            main(["circuits", "--model", str(tiny_dir), "--task", task, "--prompts", "2", "--stages", "2", "--keep", "4", "--out", str(tmp_path / task),
                  "--threads", "1"])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and "single" in err and "\n" not in err


# ---------------------------------------------------------------------------------------------- SmolLM2


@pytest.mark.smollm
def test_ioi_logit_difference_positive_on_90_percent(smollm2):
    from interp.tasks.ioi import ioi
    import interp

    data = ioi(smollm2, 50)
    positive = int((data.metric.per_prompt(interp.run(smollm2, data.clean)) > 0).sum())
    assert positive >= 45  # ≥ 90% of 50, counted exactly (45/50 in float32 is 0.8999…)


@pytest.mark.smollm
def test_colored_objects_formats_align_and_name_the_right_tokens(smollm2):
    """Every format: clean and counterfactual prompts tokenize to one length; the named positions hold the queried
    object (s1 in the list, s2 in the question), the answer color (io) and the two wrong colors; 1shot is the paper's
    template; the counterfactual asks about another listed object."""
    from interp.inputs import to_batch
    from interp.tasks.colored_objects import COLORS, FORMATS, colored_objects

    tok = smollm2.tokenizer
    for name in FORMATS:
        d = colored_objects(smollm2, 3, seed=4, format=name)
        clean, bad = to_batch(smollm2, d.clean).tokens, to_batch(smollm2, d.corrupted).tokens
        assert clean.shape == bad.shape, name
        for b in range(3):
            word = lambda k: tok.decode([int(clean[b, d.positions[k][b]])]).strip()  # noqa: E731
            obj = d.clean[b].rsplit("What color is the ", 1)[1].split("?")[0]
            assert word("s1") == word("s2") == obj and word("io") == d.answer[b], name
            assert {word("wrong1"), word("wrong2")} | {word("io")} <= set(COLORS) and len({word("wrong1"), word("wrong2"), word("io")}) == 3
            assert (clean[b] != bad[b]).sum() >= 1 and d.counterfactual[b] != d.answer[b]
            assert int(d.metric.io[b]) == int(d.label_ids[COLORS.index(d.answer[b])])
    one = colored_objects(smollm2, 1, seed=0, format="1shot").clean[0]
    assert one.startswith("Q: On the ") and one.endswith("?\nA:") and one.count("\nA: ") == 1


@pytest.mark.smollm
@pytest.mark.slow
def test_colored_objects_accuracy_above_chance(smollm2):
    import interp
    from interp.tasks.colored_objects import colored_objects

    data = colored_objects(smollm2, 40, seed=1)
    assert data.accuracy(interp.run(smollm2, data.clean)) > 0.125
    assert all(len(smollm2.tokenizer(t)["input_ids"]) == len(smollm2.tokenizer(data.clean[0])["input_ids"]) for t in data.corrupted)


@pytest.mark.smollm
@pytest.mark.slow
def test_smollm2_ioi_circuit_job(smollm2, tmp_path):
    """A small `interp circuits` run: the circuit's heads, mean-ablated, lower the logit difference by ≥ 20%,
    and faithfulness is reported."""
    import json

    from interp.analyze.circuits import ioi_task, mean_ablated_metric
    from interp.jobs.circuits import run_circuits
    from interp.jobs.circuits_config import CircuitsConfig

    config = CircuitsConfig(task="ioi", prompts=12, stages=2, keep=6)
    paths = run_circuits(smollm2, tmp_path / "ioi", config, progress=False)
    heads = pd.read_parquet(paths["circuit"])
    assert len(heads) and {"class", "stage", "effect", "copy_score"} <= set(heads.columns)
    run = json.loads(paths["run"].read_text())
    f = run["summary"]["faithfulness"]
    assert {"full", "circuit", "faithfulness"} <= set(f) and f["full"] > 0
    task = ioi_task(smollm2, 12)
    ids = [HeadId(int(l), int(h)) for l, h in zip(heads["layer"], heads["head"])]
    assert mean_ablated_metric(smollm2, task, ids) <= 0.8 * f["full"]
    assert "plotly" in paths["report"].read_text()


def test_head_class_rule_follows_its_thresholds():
    from interp.analyze.circuits import head_class

    p = CircuitParams(attn_threshold=0.2, copy_threshold=0.3)
    base = {"end_io": 0.0, "end_s2": 0.0, "s2_s1": 0.0, "s2_s1p1": 0.0, "prev": 0.0, "copy_score": 0.0}
    assert head_class({**base, "stage": 1, "effect": 0.5, "end_io": 0.5}, p) == "name mover"
    assert head_class({**base, "stage": 1, "effect": 0.5, "end_s2": 0.6, "copy_score": -1.0}, p) == "name mover"
    assert head_class({**base, "stage": 1, "effect": -0.2, "copy_score": 0.8}, p) == "negative mover"
    assert head_class({**base, "stage": 1, "effect": 0.5, "end_io": 0.1}, p) == "other"
    assert head_class({**base, "stage": 2, "effect": 0.1, "end_s2": 0.7}, p) == "S-inhibition"
    assert head_class({**base, "stage": 2, "effect": 0.1, "end_s2": 0.7}, p, "content gatherer") == "content gatherer"
    assert head_class({**base, "stage": 3, "effect": 0.1, "s2_s1p1": 0.7, "s2_s1": 0.3}, p) == "induction"
    assert head_class({**base, "stage": 3, "effect": 0.1, "s2_s1": 0.7}, p) == "duplicate token"
    assert head_class({**base, "stage": 3, "effect": 0.1, "prev": 0.9}, p) == "previous token"
    assert head_class({**base, "stage": 2, "effect": 0.1, "prev": 0.15}, p) == "other"


def test_repair_report_figure_has_wilson_bars_and_random_draws_as_points():
    import plotly.graph_objects as go

    from interp.analyze.repair import repair_accuracy, repair_summary
    from interp.plot.circuits import repair_figure
    from interp.stats import majority_baseline, wilson

    rows = [("clean", None, 0.5), ("inhibition", None, 0.8), ("inhibition+negative", None, 0.9),
            ("random", 0, 0.4), ("random", 1, 0.6), ("random", 2, 0.5)]
    df = pd.DataFrame([{"layer": -1, "head": -1, "metric": m, "value": v if m == "accuracy" else 1.0, "condition": c,
                        "seed": s, "heads": "L1H2 L3H4"} for c, s, v in rows for m in ("accuracy", "logit_diff")])
    acc = repair_accuracy(df, 20)
    assert acc["condition"].tolist() == ["clean", "inhibition", "inhibition+negative", "random"]
    rand = acc.set_index("condition").loc["random"]
    assert (rand["k"], rand["n"], rand["draws"]) == (30, 60, 3) and (rand["lo"], rand["hi"]) == wilson(30, 60)
    lo, hi = wilson(16, 20)
    assert lo < 0.8 < hi and abs(lo - 0.584) < 0.01 and abs(hi - 0.919) < 0.01  # the textbook Wilson interval of 16/20
    fig = repair_figure(acc, df[(df["metric"] == "accuracy") & (df["condition"] == "random")], majority_baseline("aab"))
    bars, points = fig.data
    assert isinstance(bars, go.Bar) and list(bars.y) == acc["accuracy"].tolist()
    assert all(a > 0 for a in bars.error_y.array) and all(a > 0 for a in bars.error_y.arrayminus)
    assert isinstance(points, go.Scatter) and list(points.y) == [0.4, 0.6, 0.5] and set(points.x) == {"random"}
    assert abs(fig.layout.shapes[0].y0 - 2 / 3) < 1e-9 and "under 200" in fig.layout.title.text
    assert repair_summary(df).columns.name is None  # no empty "metric" column in the report's table


@pytest.mark.smollm
@pytest.mark.parametrize("verb, option", [("circuits", "--prompts"), ("repair", "--ioi-prompts")])
def test_an_atp_chunk_beyond_the_free_memory_is_refused_before_any_forward(verb, option, smollm2, monkeypatch, capsys,
                                                                          tmp_path):
    """The estimate (calibrated on the 200-prompt IOI run) of one chunk's AtP pass against 2 GiB free: one line
    naming the chunk size that fits, exit 2, and no result written (the folder holds only the manifest, which a
    rerun with other settings replaces). The chunk size it names is accepted."""
    import interp.jobs.config as jc
    from interp.analyze.attribution import atp_bytes

    monkeypatch.setattr(jc, "free_memory_bytes", lambda: 2 * 2**30)
    with pytest.raises(SystemExit) as e:
        main([verb, "--model", "smollm2-135m", option, "200", "--out", str(tmp_path / "o"), "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and "GiB is free" in err and "a chunk of 128 prompts" in err, err
    fits = int(err.rsplit("use --chunk-tokens ", 1)[1].split()[0])
    assert 16 <= fits < 2048 and {p.name for p in (tmp_path / "o").iterdir()} <= {"manifest.json", ".interp-lock"}
    from interp.analyze.circuits import ioi_task
    from interp.jobs.circuits import check_atp_memory

    check_atp_memory(smollm2, ioi_task(smollm2, 200), fits, "--chunk-tokens")
    from types import SimpleNamespace

    cfg = SimpleNamespace(n_layers=30, d_model=576, d_mlp=1536, n_heads=9, d_vocab=49152)  # SmolLM2
    assert abs(atp_bytes(SimpleNamespace(cfg=cfg), 200, 16) / 12.5e9 - 1) < 0.05  # the calibration run
