"""``interp subspace`` and ``interp weights``: bad input exits 2 with one line before the model loads; small runs."""
import json

import pandas as pd
import pytest

from interp.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("args, msg", [
    (["subspace", "--site", "resid_post"], "needs --split-heads"),
    (["subspace", "--site", "mlp_post", "--layer", "40"], "--layer 40 out of range"),
    (["subspace", "--site", "pattern", "--layer", "3"], "--site 'pattern' unknown"),
    (["subspace", "--site", "mlp_post", "--layer", "20", "--dim", "0"], "--dim must be at least 1, got 0"),
    (["subspace", "--site", "mlp_post", "--layer", "20", "--dim", "1536"], "--dim 1536 must be below the site's width 1536"),
    (["subspace", "--site", "resid_post", "--layer", "15"], "needs --split-heads"),
    (["subspace", "--site", "resid_post", "--layer", "15", "--split-heads", "L23H12"], "head 12 out of range"),
    (["subspace", "--site", "mlp_post", "--layer", "20", "--pairs", "3"], "--pairs must be at least 10, got 3"),
    (["subspace", "--site", "mlp_post", "--layer", "20", "--lr", "-1"], "--lr must be above 0, got -1"),
    (["subspace", "--site", "mlp_post", "--layer", "20", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["subspace", "--site", "mlp_post", "--layer", "2", "--model", "minilm-l6"], "needs a causal language model"),
    (["subspace", "--site", "mlp_post", "--layer", "2", "--task", "colors"], "--task 'colors' unknown"),
    (["weights", "--kinds", "x"], "--kinds 'x' unknown"),
    (["weights", "--top", "0"], "--top must be at least 1, got 0"),
])
def test_bad_input_exits_2_with_one_line(args, msg, capsys, tmp_path, monkeypatch):
    import interp.models.loader as loader

    monkeypatch.setattr(loader, "load_model", lambda *a, **k: pytest.fail("the model loaded before the input was checked"))
    with pytest.raises(SystemExit) as e:
        main(args + ["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and msg in err and "\n" not in err, err


def test_weights_run_and_resume(tiny_dir, tmp_path, capsys):
    out = tmp_path / "w"
    args = ["weights", "--model", str(tiny_dir), "--out", str(out), "--n-tokens", "50", "--threads", "1"]
    main(args)
    df = pd.read_parquet(out / "weights.parquet")
    assert {"q_composition", "k_composition", "v_composition", "ov_copying", "qk_same_token"} <= set(df["metric"])
    assert len(df[df["metric"] == "q_composition"]) == 6 * 6
    html = (out / "report.html").read_text()
    assert "composition between layers" in html and "Top 20" in html
    assert json.loads((out / "run.json").read_text())["verb"] == "weights"
    main(args)  # resumes from its parts: same rows
    pd.testing.assert_frame_equal(pd.read_parquet(out / "weights.parquet"), df)


@pytest.mark.smollm
def test_subspace_job_runs_and_resumes_from_its_parts(smollm2, tmp_path, monkeypatch):
    import interp.analyze.subspace as sub
    from interp.jobs.subspace import run_subspace
    from interp.jobs.subspace_config import SubspaceConfig

    out = tmp_path / "s"
    config = SubspaceConfig(site="mlp_post", layer=20, pairs=20, epochs=1)
    run_subspace(smollm2, out, config, progress=False)
    df = pd.read_parquet(out / "subspace.parquet")
    assert {"clean", "subspace", "row", "null", "whole"} <= set(df["condition"])
    assert "illusion_suspected" in df and (df["model"] == "smollm2-135m").all()
    html = (out / "report.html").read_text()
    assert "illusion_suspected" in html and html.count("plotly.js v") <= 1
    assert json.loads((out / "run.json").read_text())["verb"] == "subspace"
    monkeypatch.setattr(sub, "das", lambda *a, **k: pytest.fail("resumed run trained again"))
    monkeypatch.setattr(sub, "subspace_report", lambda *a, **k: pytest.fail("resumed run recomputed the report"))
    monkeypatch.setattr(sub, "Interchanger", lambda *a, **k: pytest.fail("resumed run ran the model"))
    run_subspace(smollm2, out, config, progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "subspace.parquet"), df)
