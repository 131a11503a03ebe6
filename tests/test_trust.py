"""The concrete cases of issue 23: other runs' files, spec values, long prompts, decompression bombs, the encoder
atlas, two processes on one --out, truncated parts, the resume command and the Python values."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from interp.cli import main
from interp.errors import InputError, InterpError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _exit2(argv, capsys) -> str:
    """Run the CLI in-process; it must exit 2 with one ``error:`` line (returned)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "unexpected" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(autouse=True)
def _release_locks():
    yield
    from interp.jobs.outdir import _release_all

    _release_all()


def _circuit(path: Path, model="smollm2-135m", task="ioi", circuit=None, patching=None) -> Path:
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"verb": "circuits", "key": "x", "config": {"model": model, "task": task}}))
    heads = pd.DataFrame({"layer": [1, 2], "head": [0, 1], "stage": [1, 2], "class": ["name mover", "S-inhibition"],
                          "effect": [0.5, 0.3], "copy_score": [0.8, -0.1]})
    patch = pd.DataFrame({"model": model, "task": task, "layer": [1, 2], "head": [0, 1], "metric": "path_patch",
                          "value": [0.5, 0.3], "condition": ["stage1", "stage2"]})
    for name, default, given in (("circuit.parquet", heads, circuit), ("patching.parquet", patch, patching)):
        if isinstance(given, bytes):
            (path / name).write_bytes(given)
        else:
            (default if given is None else given).to_parquet(path / name)
    return path


# --- other runs' files: reuse and repair -------------------------------------------------------------------

FILES = [  # (which table, its content, message fragment)
    ("patching", b"PAR1 not parquet at all", "patching.parquet '"),
    ("patching", pd.DataFrame({"model": ["m"], "value": [1.0]}), "lacks the columns task, layer, head, metric, condition"),
    ("patching", pd.DataFrame({c: pd.Series(dtype=t) for c, t in [("model", str), ("task", str), ("layer", int), ("head", int),
                                                                  ("metric", str), ("value", float), ("condition", str)]}),
     "holds no rows"),
    ("circuit", b"\x00\x01 truncated", "circuit.parquet '"),
    ("circuit", pd.DataFrame({"layer": [1], "head": [0]}), "lacks the columns stage, class, effect, copy_score"),
]


@pytest.mark.parametrize("which,content,message", FILES, ids=[f"{w}-{m[:20]}" for w, _, m in FILES])
def test_reuse_and_repair_check_the_circuit_tables(which, content, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("interp.models.loader.load_model", lambda *a, **k: pytest.fail("model loaded"))
    good = _circuit(tmp_path / "good")
    bad = _circuit(tmp_path / "bad", **{which: content})
    err = _exit2(["reuse", str(good), str(bad), "--out", str(tmp_path / "o")], capsys)
    assert message in err and "DIR_B" in err and str(bad) in err
    err = _exit2(["repair", "--circuit", str(bad), "--out", str(tmp_path / "r")], capsys)
    assert message in err and "--circuit" in err


def test_repair_n_inhibition_past_the_circuits_heads_is_refused(tmp_path, capsys):
    err = _exit2(["repair", "--circuit", str(_circuit(tmp_path / "c")), "--n-inhibition", "5", "--out", str(tmp_path / "r")], capsys)
    assert "--n-inhibition 5 is more than the 1 stage-2 heads" in err


def test_a_folder_of_another_verb_is_not_a_circuit(tmp_path, capsys):
    c = _circuit(tmp_path / "c")
    (c / "manifest.json").write_text(json.dumps({"verb": "patch", "key": "x", "config": {}}))
    assert "holds an `interp patch` run" in _exit2(["repair", "--circuit", str(c), "--out", str(tmp_path / "r")], capsys)


# --- plot: infinities and impossible indices ---------------------------------------------------------------


@pytest.mark.parametrize("column,value,message", [("value", float("inf"), "infinite values for metrics ['x']"),
                                                   ("layer", 2 * 10**9, "has layer 2000000000"),
                                                   ("head", 10**9, "has head 1000000000")])
def test_plot_refuses_infinite_values_and_impossible_indices(column, value, message, tmp_path, capsys):
    df = pd.DataFrame({"model": "m", "task": "t", "layer": [0, 1], "head": [0, 0], "metric": "x", "value": [0.1, 0.2]})
    df.loc[1, column] = value
    df.to_parquet(tmp_path / "r.parquet")
    assert message in _exit2(["plot", str(tmp_path / "r.parquet"), "--out", str(tmp_path / "r.html")], capsys)
    assert not (tmp_path / "r.html").exists()


# --- sweep specs: every unit's values checked before any unit runs ------------------------------------------

SPEC = """metrics = ["loss"]
[[models]]
name = "smollm2-135m"
[[tasks]]
name = "induction"
size = 2
length = 6
[[interventions]]
name = "scale"
factor = 0.5
heads = ["0.0"]
"""

SPECS = [  # (replace, with, message fragment with the line and key)
    ("factor = 0.5", "factor = nan", "line 10, key interventions[0].factor: factor must be a finite number, got nan"),
    ("factor = 0.5", "factor = inf", "line 10, key interventions[0].factor: factor must be a finite number, got inf"),
    ('name = "scale"\nfactor = 0.5', 'name = "steer"\nalpha = nan', "line 10, key interventions[0].alpha: alpha must be a finite number"),
    ('name = "scale"\nfactor = 0.5', 'name = "edit"\nedit = "MixUniform"\nfields = {strength = "half"}',
     "key interventions[0].fields: MixUniform: strength must be a number, got 'half'"),
    ('name = "scale"\nfactor = 0.5', 'name = "edit"\nedit = "ScaleHeadOutput"\nfields = {factor = nan}',
     "key interventions[0].fields.factor: ScaleHeadOutput.factor must be a finite number"),
    ('heads = ["0.0"]', 'heads = ["L99H0"]', "line 11, key interventions[0].heads: head L99H0 is out of range"),
    ("length = 6", "length = 99999", "line 7, key tasks[0].length: task 'induction' needs 199999 tokens, more than"),
    ("size = 2", "size = 100000000", "line 6, key tasks[0].size: size must be at most 2000"),
    ('[[models]]\nname = "smollm2-135m"', "models = []", "key models: lists no models, so the grid is empty"),
]


@pytest.mark.parametrize("old,new,message", SPECS, ids=[s[1][:30] for s in SPECS])
def test_spec_values_are_checked_with_their_line_before_any_unit_runs(old, new, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("interp.models.loader.load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert old in SPEC
    (tmp_path / "spec.toml").write_text(SPEC.replace(old, new, 1))
    err = _exit2(["sweep", str(tmp_path / "spec.toml"), "--out", str(tmp_path / "o")], capsys)
    assert message in err
    assert not (tmp_path / "o" / "manifest.json").exists()


# --- long prompts, decompression bombs, cheap device and thread checks --------------------------------------


@pytest.mark.parametrize("verb", ["capture", "steer"])
def test_a_prompt_past_the_context_is_counted_before_the_model_loads(verb, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("interp.models.loader.load_model", lambda *a, **k: pytest.fail("model loaded"))
    argv = [verb, "--prompt", "word " * 20000] + (["--heads", "1.0"] if verb == "steer" else ["--out", str(tmp_path / "o")])
    err = _exit2(argv, capsys)
    assert "--prompt is 20003 tokens" in err and "more than 'smollm2-135m''s context of 8192" in err


def test_a_prompt_that_fits_with_max_new_tokens_is_refused_only_with_them(capsys, monkeypatch):
    monkeypatch.setattr("interp.models.loader.load_model", lambda *a, **k: pytest.fail("model loaded"))
    err = _exit2(["steer", "--prompt", "word " * 8100, "--heads", "1.0", "--max-new-tokens", "200"], capsys)
    assert "plus --max-new-tokens 200" in err and "or lower --max-new-tokens" in err


def test_decompression_bomb_is_one_line_with_the_limit(tmp_path, capsys):
    from PIL import Image

    Image.new("1", (16000, 16000)).save(tmp_path / "bomb.png")  # 256 M pixels, a few kB on disk
    err = _exit2(["vision", "--image", str(tmp_path / "bomb.png"), "--out", str(tmp_path / "o")], capsys)
    assert "more pixels than the limit of" in err and "bomb.png" in err


def test_device_and_thread_errors_import_no_torch():
    code = ("import sys\nfrom interp.cli import main\n"
            "for argv in (['atlas', '--threads', '0'], ['atlas', '--threads', 'abc'], ['atlas', '--device', 'cuda'],\n"
            "             ['steer', '--prompt', 'hi', '--heads', '1.0', '--device', 'cuda'], ['sinks', '--ratio', 'nan']):\n"
            "    try:\n        main(argv + (['--out', sys.argv[1]] if argv[0] != 'steer' else []))\n"
            "    except SystemExit as e:\n        assert e.code == 2, argv\n"
            "assert 'torch' not in sys.modules, 'torch was imported to reject an argument'")
    r = subprocess.run([sys.executable, "-c", code, "/tmp/interp-never-written"], cwd=ROOT, env=ENV, capture_output=True, text=True)
    if "this torch build has no CUDA" not in r.stderr:
        pytest.skip("this torch build has CUDA: the check imports torch")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("error: ") == 5 and not Path("/tmp/interp-never-written").exists()


# --- the encoder atlas ---------------------------------------------------------------------------------------


def test_atlas_of_an_encoder_says_the_retrieval_part_was_skipped(tmp_path, capsys):
    main(["atlas", "--model", "minilm-l6", "--seq-len", "6", "--text-tokens", "24", "--out", str(tmp_path / "a"),
          "--quiet", "--threads", "1"])
    err = capsys.readouterr().err
    assert "warning: retrieval score skipped: minilm-l6 is not a causal language model" in err
    assert "retrieval score skipped" in (tmp_path / "a" / "report.html").read_text()
    assert "retrieval_skipped" in json.loads((tmp_path / "a" / "run.json").read_text())["inputs"]


# --- one --out, two processes; stale locks ------------------------------------------------------------------

HOLD = ("import sys, time\nfrom pathlib import Path\nfrom interp.jobs.outdir import claim\n"
        "claim(Path(sys.argv[1]), 'patch', {'model': 'm'})\nprint('locked', flush=True)\ntime.sleep(120)\n")


def test_a_second_process_on_the_same_out_stops_with_one_line(tmp_path):
    out = tmp_path / "o"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run([sys.executable, "-m", "interp.cli", "patch", "--method", "atp", "--out", str(out)],
                                cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip()
        assert len(err.splitlines()) == 1 and f"is being written by another interp run (process {holder.pid})" in err
        assert json.loads((out / "manifest.json").read_text())["config"] == {"model": "m"}  # the first one's, untouched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    from interp.jobs.outdir import claim

    claim(out, "patch", {"model": "m"})  # kill -9 released the lock


FORK = ("import os, sys, time\nfrom pathlib import Path\nfrom interp.jobs.outdir import lock_out\n"
        "lock_out(Path(sys.argv[1]))\nchild = os.fork()\n"
        "if child == 0:\n    os.closerange(0, 3)\n    time.sleep(120)\n    os._exit(0)\nprint(child, flush=True)\nos._exit(0)\n")


def test_a_lock_whose_process_is_gone_is_stale_and_replaced(tmp_path):
    """The lock's fd inherited by a child outlives the process that took it: its recorded PID is dead."""
    from interp.jobs.outdir import lock_out

    out = tmp_path / "o"
    out.mkdir()
    r = subprocess.run([sys.executable, "-c", FORK, str(out)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    child = int(r.stdout.strip())
    try:
        with pytest.warns(UserWarning, match="which no longer runs, was stale; replaced"):
            lock_out(out)
        assert (out / ".interp-lock").read_text().split()[0] == str(os.getpid())
    finally:
        os.kill(child, signal.SIGKILL)


# --- parts that do not read back ----------------------------------------------------------------------------


def test_a_truncated_part_is_set_aside_and_recomputed(tmp_path):
    from interp.store import ResumableTable, cached

    store = ResumableTable(tmp_path)
    frame = pd.DataFrame({"a": range(100)})
    store.put("k", frame)
    part = store._part("k")
    part.write_bytes(part.read_bytes()[:40])  # cut short
    calls = []
    with pytest.warns(UserWarning, match="does not read back .*moved aside as part-.*corrupt"):
        got = cached(store, "k", lambda: calls.append(1) or frame)
    assert calls == [1] and got.equals(frame)
    assert store.done("k") and len(list(tmp_path.glob("part-*.parquet.corrupt-*"))) == 1
    pd.testing.assert_frame_equal(store.get("k").drop(columns="unit"), frame)


# --- the resume command -------------------------------------------------------------------------------------


def test_the_interrupt_line_names_the_command_that_resumes():
    from interp.cli import resume_command

    assert resume_command(["sweep", "my spec.toml", "--out", "o"]) == "interp sweep 'my spec.toml' --out o --resume"
    assert resume_command(["sweep", "s.toml", "--resume"]) == "interp sweep s.toml --resume"
    assert resume_command(["retrieval", "--out", "o"]) == "interp retrieval --out o"  # resumes from its parts as is


# --- Python values ------------------------------------------------------------------------------------------


def test_python_values_refuse_non_finite_and_wrong_types(tiny_llama):
    import torch

    import interp
    from interp.edits import MixIdentity, MixUniform, ScaleHeadOutput, ScaleSegment
    from interp.intervene.steering import iti_edits, probe_heads
    from interp.intervene.values import AddToHead, AddVector
    from interp.intervene.heads import sweep_heads
    from interp.types import HeadId

    h, nan, inf = HeadId(0, 0), float("nan"), float("inf")
    bad = [lambda: AddToHead(h, torch.full((8,), nan)), lambda: AddToHead(h, torch.ones(8), inf),
           lambda: AddVector(0, torch.full((16,), nan)), lambda: AddVector(0, torch.ones(16), nan),
           lambda: ScaleHeadOutput(h, nan), lambda: ScaleHeadOutput(h, "half"), lambda: ScaleSegment(h, "first", inf),
           lambda: MixUniform(h, nan), lambda: MixIdentity("L0H0", 1.0),
           lambda: interp.run(tiny_llama, "hello there", capture="z"),
           lambda: sweep_heads(tiny_llama, "hello there", lambda x: ScaleHeadOutput(x, 0.0), lambda logits: "high", heads=[h])]
    for make in bad:
        with pytest.raises(InterpError):
            make()
    with pytest.raises(InputError, match="in both classes"):
        probe_heads(tiny_llama, ["good day", "nice one", "great"], ["good day", "nice one", "great"])
    probes = probe_heads(tiny_llama, ["good day", "nice one", "great"], ["bad day", "awful one", "terrible"])
    with pytest.raises(InputError, match="alpha must be a finite number"):
        iti_edits(probes, k=2, alpha=nan)


def test_probe_heads_refuses_classes_the_heads_cannot_tell_apart(tiny_llama, monkeypatch):
    import torch

    from interp.intervene import steering

    monkeypatch.setattr(steering, "last_token_site", lambda model, prompts, site: torch.ones(len(prompts), 2, 6, 8))
    with pytest.raises(InputError, match="same head outputs at the last token in every head"):
        steering.probe_heads(tiny_llama, ["a b", "c d"], ["e f", "g h"])
