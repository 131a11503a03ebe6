"""``interp patch`` and ``interp steer``: bad input exits 2 with one line before the model loads; a small run."""
import json

import pandas as pd
import pytest

from interp.cli import main


@pytest.mark.parametrize("args, msg", [
    (["patch", "--method", "magic"], "--method 'magic' unknown"),
    (["patch", "--by", "layer"], "--by 'layer' unknown"),
    (["patch", "--task", "colors"], "--task 'colors' unknown"),
    (["patch", "--prompts", "0"], "--prompts must be at least 1"),
    (["patch", "--direction", "sideways"], "--direction 'sideways' unknown"),
    (["patch", "--model", "minilm-l6"], "needs a causal language model"),
    (["steer", "--prompt", "Hi", "--heads", "40.1"], "layer 40 out of range"),
    (["steer", "--prompt", "Hi", "--heads", "3.9"], "head 9 out of range"),
    (["steer", "--prompt", "Hi", "--heads", "nine"], "cannot parse head"),
    (["steer", "--prompt", "  ", "--heads", "3.1"], "--prompt is empty"),
])
def test_bad_input_exits_2_with_one_line(args, msg, capsys, tmp_path):
    if args[0] == "patch":
        args = args + ["--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and msg in err and "\n" not in err


@pytest.mark.smollm
@pytest.mark.slow
def test_patch_atp_head_pos_run(tmp_path, capsys):
    out = tmp_path / "patch"
    main(["patch", "--method", "atp*", "--by", "head_pos", "--prompts", "2", "--out", str(out), "--quiet", "--threads", "2",
          "--direction", "noising"])
    df = pd.read_parquet(out / "effects.parquet")
    assert {"atp:z", "atp*:q", "atp*:k"} <= set(df["metric"]) and (df["position"] >= 0).all()
    assert (df["direction"] == "noising").all()
    html = (out / "report.html").read_text()
    assert html.count("plotly.js v") <= 1 and "Position × head" in html
    assert json.loads((out / "run.json").read_text())["verb"] == "patch"


@pytest.mark.smollm
@pytest.mark.slow
def test_steer_prints_both_continuations(capsys):
    main(["steer", "--prompt", "The movie was", "--heads", "14.3", "--alpha", "8", "--max-new-tokens", "4", "--threads", "2"])
    text = capsys.readouterr().out
    assert "unsteered" in text and "steered (14.3, alpha=8)" in text
