import json

import pandas as pd
import pytest

from interp.jobs import AtlasConfig, run_atlas
from interp.cli import main
from interp.schema import validate_frame


def _run_cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    return e.value.code, err


def test_atlas_on_tiny_writes_three_files(tiny_llama, tmp_path):
    paths = run_atlas(tiny_llama, tmp_path / "atlas", AtlasConfig(seq_len=8, text_tokens=32, view_tokens=16), progress=False)
    df = validate_frame(pd.read_parquet(paths["heads"]))
    assert {"previous_token", "induction", "duplicate_token", "entropy", "first_token_mass"} <= set(df["metric"])
    html = paths["report"].read_text()
    assert "* plotly.js v" not in html and html.count("<script src='plotly.min.js'") == 1  # loaded once, from the run folder
    assert "* plotly.js v" in (paths["report"].parent / "plotly.min.js").read_text()[:2000]
    assert html.count("class='grid'") == 1
    assert html.count("class='interp-viewer'") == 1 and "all 16 tokens" in html  # the attention viewer, full resolution
    meta = json.loads(paths["run"].read_text())
    assert meta["seed"] == 0 and "torch" in meta["versions"]


def test_cli_atlas_local_model_dir(tmp_path, capsys):
    from interp.models.tiny import build_tiny

    hf, tok = build_tiny("gpt2", seed=1)
    hf.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    main(["atlas", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "out"), "--seq-len", "6", "--text-tokens", "24", "--quiet"])
    files = {p.name for p in (tmp_path / "out").iterdir() if p.name != ".interp-lock"}  # the lock file stays (see outdir)
    assert files == {"heads.parquet", "report.html", "plotly.min.js", "run.json", "manifest.json"}


@pytest.mark.parametrize("args,msg", [
    (["atlas", "--model", "no-such-model-xyz"], "not available offline"),
    (["atlas", "--model", "./missing/dir"], "does not exist"),
    (["atlas", "--seq-len", "1"], "at least 2"),
    (["atlas", "--nonsense"], "No such option"),
])
def test_cli_bad_input_exit_2(args, msg, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = _run_cli(args + ["--out", str(tmp_path / "o")] if "--nonsense" not in args else args, capsys)
    assert code == 2 and msg in err and len(err.splitlines()) == 1


def test_cli_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("keep me")
    code, err = _run_cli(["atlas", "--out", str(f)], capsys)
    assert code == 2 and "is a file" in err and f.read_text() == "keep me"


@pytest.mark.smollm
def test_atlas_on_smollm2(smollm2, tmp_path):
    paths = run_atlas(smollm2, tmp_path, AtlasConfig(seq_len=20, batch=2, text_tokens=96, niah_lengths=(400,), niah_depths=(50,),
                                                     niah_needles=1), progress=False)
    df = pd.read_parquet(paths["heads"])
    assert len(df[df.metric == "entropy"]) == 270
    ret = df[df.metric == "retrieval_score"]
    assert len(ret) == 270 and ret["value"].max() > 0.3  # SmolLM2 retrieves at 400 tokens; L18H6 copies the needle
    html = paths["report"].read_text()
    assert html.count("<script src=") == 1 and "<script src='plotly.min.js'" in html and (tmp_path / "plotly.min.js").exists()


def test_cli_capture_writes_tensors(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    main(["capture", "--model", str(tiny_dir), "--prompt", "hello there", "--prompt", "hi", "--site", "pattern",
          "--site", "z", "--layer", "1", "--head", "0", "--out", str(tmp_path / "c")])
    t = load_file(tmp_path / "c" / "capture.safetensors")
    assert set(t) == {"pattern/1", "z/1"} and t["pattern/1"].shape[:2] == (2, 1)
    assert json.loads((tmp_path / "c" / "capture.json").read_text())["str_tokens"][1][0] == "<bos>"


@pytest.mark.parametrize("extra,msg", [
    (["--prompt", "  "], "prompt 0 is empty"),
    (["--prompt", "hi", "--site", "resid_mdi"], "unknown site 'resid_mdi'; valid sites are"),
    (["--prompt", "hi", "--layer", "9"], "layer 9 out of range"),
    (["--prompt", "hi", "--site", "z", "--head", "6"], "head 6 out of range"),
])
def test_cli_capture_bad_input_exit_2(tiny_dir, tmp_path, capsys, extra, msg):
    code, err = _run_cli(["capture", "--model", str(tiny_dir), "--out", str(tmp_path / "c"), *extra], capsys)
    assert code == 2 and msg in err and len(err.splitlines()) == 1
