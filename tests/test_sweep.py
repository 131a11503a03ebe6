"""``interp sweep``: spec errors naming the line and key, grid expansion, units against the library functions
they call, kill -9 and resume, failed units retried, and the Ray backend against the local one."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from interp.cli import main
from interp.sweep.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
name = "tiny"
seeds = [0, 1]
metrics = ["loss"]

[[models]]
name = "MODEL"

[[tasks]]
name = "induction"
size = 3
length = 6

[[interventions]]
name = "ablate"
how = "mean"

[[interventions]]
name = "scale"
factor = 0.5
heads = ["L1H2", "0.3"]

[[analyses]]
name = "patching"

[[analyses]]
name = "entropy"
prompts = 2
tokens = 12
"""


def _spec(tmp_path, tiny_dir, text=SPEC, name="spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text.replace("MODEL", str(tiny_dir)))
    return path


def _sweep(spec, out, *extra):
    main(["sweep", str(spec), "--out", str(out), "--threads", "1", "--quiet", *extra])


def test_grid_expands_models_seeds_tasks_and_actions():
    units = parse_spec(SPEC).units()
    assert [u.describe() for u in units[:4]] == [
        "MODEL · induction · seed 0 · ablate(how=mean)", "MODEL · induction · seed 0 · scale(factor=0.5)",
        "MODEL · induction · seed 0 · patching(site=z)", "MODEL · entropy · seed 0 · entropy(prompts=2, tokens=12)"]
    assert len(units) == 8 and len({u.key for u in units}) == 8
    assert [u.key for u in parse_spec(SPEC).units()] == [u.key for u in units]  # stable across parses


BAD = [  # (replace, with, message fragment); every message names the file, the line and the key
    ('name = "ablate"', 'name = "ablte"', "spec.toml line 14, key interventions[0].name: unknown intervention 'ablte'"),
    ('name = "patching"', 'name = "patchng"', "spec.toml line 23, key analyses[0].name: unknown analysis 'patchng'"),
    ('metrics = ["loss"]', 'metrics = ["los"]', "spec.toml line 3, key metrics: unknown metric 'los'"),
    ('"0.3"', '"L7H3"', "spec.toml line 20, key interventions[1].heads: head L7H3 is out of range"),
    ('"0.3"', '"0.9"', "has 2 layers × 6 heads"),
    ("prompts = 2", "prompts = 0", "spec.toml line 27, key analyses[1].prompts: --prompts must be at least 1"),
    ("tokens = 12", "tokens = 99999", "key analyses[1].tokens"),
    ('how = "mean"', 'how = "median"', "line 15, key interventions[0].how: how = 'median' unknown"),
    ("factor = 0.5", 'factor = "half"', "line 19, key interventions[1].factor: factor = 'half' should be a number"),
    ("size = 3", "sise = 3", "line 10, key tasks[0].sise: unknown key 'sise' for task 'induction'"),
    ("[[tasks]]", "[[tasks]", "spec.toml line 8: not valid TOML"),
    ('name = "induction"\nsize = 3\nlength = 6', 'name = "prose"\nsize = 3\ntokens = 6', "line 23, key analyses[0].name: analysis 'patching' needs a task with corrupted"),
    ('metrics = ["loss"]', 'metrics = ["logit_diff"]', "metric 'logit_diff' needs a task with answers (ioi)"),
]


@pytest.mark.parametrize("old, new, message", BAD, ids=[b[1].split("\n")[0][:24] for b in BAD])
def test_bad_spec_one_line_exit_2_naming_line_and_key(old, new, message, tmp_path, tiny_dir, capsys):
    assert old in SPEC
    spec = _spec(tmp_path, tiny_dir, SPEC.replace(old, new, 1))
    with pytest.raises(SystemExit) as e:
        _sweep(spec, tmp_path / "out")
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out" / "results.parquet").exists()


def test_unknown_edit_and_edit_field(tmp_path, tiny_dir, capsys):
    text = SPEC + '\n[[interventions]]\nname = "edit"\nedit = "MixUniform"\nfields = {strenght = 0.5}\n'
    with pytest.raises(SystemExit):
        _sweep(_spec(tmp_path, tiny_dir, text), tmp_path / "out")
    assert "line 33, key interventions[2].fields.strenght: MixUniform has no field 'strenght'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _sweep(_spec(tmp_path, tiny_dir, text.replace('"MixUniform"', '"Explode"')), tmp_path / "out")
    assert "line 32, key interventions[2].edit: edit = 'Explode' is not an edit value" in capsys.readouterr().err


def test_resume_refuses_another_spec_and_a_rerun_needs_resume(tmp_path, tiny_dir, capsys):
    spec, out = _spec(tmp_path, tiny_dir), tmp_path / "out"
    _sweep(spec, out)
    df = pd.read_parquet(out / "results.parquet")
    assert set(df["unit"].str[:5]) == {f"u000{i}" for i in range(8)} and not df.duplicated(["unit", "layer", "head", "metric", "condition"]).any()
    for args, message in [((), "already holds this sweep; pass --resume"),
                          (("--resume",), "holds a sweep made by a different spec (differs in: interventions[1].factor (line 19))")]:
        other = spec if not args else _spec(tmp_path, tiny_dir, SPEC.replace("factor = 0.5", "factor = 0.25"), "other.toml")
        with pytest.raises(SystemExit) as e:
            _sweep(other, out, *args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and err.count("\n") == 1, err
    _sweep(spec, out, "--resume")  # the same spec resumes: nothing left to run, the same results
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), df)
    run = json.loads((out / "run.json").read_text())
    assert run["units"] == {"total": 8, "done": 8, "failed": 0, "ran_now": 0}
    assert run["spec"]["interventions"][1]["factor"] == 0.5 and "torch" in run["versions"] and "git" in run
    assert (out / "report.html").exists() and len(list((out / "units").iterdir())) == 2  # the two entropy jobs' folders
    # plotly.js once per run folder: one copy at the root, loaded by the sweep's report and each unit's report
    copies = [p for p in out.rglob("*") if p.is_file() and (p.name == "plotly.min.js" or "plotly.js v" in p.read_text(errors="ignore")[:200_000]
                                                         and p.suffix == ".html")]
    assert copies == [out / "plotly.min.js"], copies
    reports = sorted(out.rglob("report.html"))
    assert len(reports) == 3 and "src='plotly.min.js'" in (out / "report.html").read_text()
    for unit_report in reports[1:]:
        assert "src='../../plotly.min.js'" in unit_report.read_text()
        assert (unit_report.parent / "../../plotly.min.js").resolve() == out / "plotly.min.js"


def test_unit_rows_are_the_library_functions_results(tiny_llama):
    """An intervention unit is sweep_heads with the task's metric; the clean value rides along."""
    from interp.intervene.means import mean_activations
    from interp.intervene.values import MeanAblate
    from interp.intervene.heads import sweep_heads
    from interp.sweep.units import build_task, execute, metric_fn
    from interp.types import HeadId

    unit = parse_spec(SPEC).units()[0]
    rows = execute(tiny_llama, unit).frame
    data = build_task(tiny_llama, unit.task, unit.seed)
    means = mean_activations(tiny_llama, data.corrupted, sites=("z",))
    want = sweep_heads(tiny_llama, data.clean, lambda h: MeanAblate("z", h.layer, h, mean=means), metric_fn("loss", data),
                       [HeadId(l, h) for l in range(2) for h in range(6)], progress=False)
    got = rows[rows["condition"] == "ablate(how=mean)"]
    assert got["value"].tolist() == want["value"].tolist()
    assert rows[rows["condition"] == "clean"]["value"].item() == want.attrs["clean"]
    assert set(rows["seed"]) == {0} and set(rows["action"]) == {"ablate(how=mean)"}


def test_a_failing_unit_is_recorded_and_retried_on_resume(tmp_path, tiny_dir, capsys, monkeypatch):
    import interp.sweep.units as units

    real = units.execute

    def flaky(model, unit):
        if unit.action["name"] == "scale" and unit.seed == 1:
            raise RuntimeError("simulated failure")
        return real(model, unit)

    spec, out = _spec(tmp_path, tiny_dir), tmp_path / "out"
    monkeypatch.setattr(units, "execute", flaky)
    with pytest.raises(SystemExit) as e:
        _sweep(spec, out)
    assert e.value.code == 1 and "1 of 8 units failed" in capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["units"]["failed"] == 1 and run["failures"][0]["error"] == "RuntimeError: simulated failure"
    assert "scale(factor=0.5)" in run["failures"][0]["what"]
    partial = pd.read_parquet(out / "results.parquet")
    assert not ((partial["action"] == "scale(factor=0.5)") & (partial["seed"] == 1)).any()
    monkeypatch.setattr(units, "execute", real)
    _sweep(spec, out, "--resume")
    run = json.loads((out / "run.json").read_text())
    assert run["units"] == {"total": 8, "done": 8, "failed": 0, "ran_now": 1} and run["failures"] == []


def _parts(out: Path) -> int:
    return len(list(out.glob(".parts/*/part-*.parquet")))


@pytest.mark.slow
def test_kill_9_after_the_first_part_and_mid_way_resumes_to_the_same_results(tmp_path, tiny_dir):
    text = SPEC.replace("seeds = [0, 1]", "seeds = [0, 1, 2]")
    spec = _spec(tmp_path, tiny_dir, text)
    whole = tmp_path / "whole"
    _sweep(spec, whole)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-c", "from interp.cli import main; main()", "sweep", str(spec), "--out", str(out), "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    counts = []
    for resume, stop_at in ((False, 1), (True, None)):
        proc = subprocess.Popen(cmd + (["--resume"] if resume else []), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=ROOT)
        start = _parts(out)
        target = stop_at or start + 1  # the second kill lands just after a part, while the next unit runs
        deadline = time.monotonic() + 180
        while _parts(out) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the sweep ended before it could be killed: " + proc.stderr.read()[-500:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        counts.append(_parts(out))
    assert 1 <= counts[0] < counts[1] < 12
    assert not (out / "results.parquet").exists()
    subprocess.run(cmd + ["--resume", "--quiet"], check=True, env=env, cwd=ROOT, timeout=300, capture_output=True)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), pd.read_parquet(whole / "results.parquet"),
                                  check_exact=True)
    assert json.loads((out / "run.json").read_text())["units"]["ran_now"] == 12 - counts[1]


def test_unreachable_ray_address_is_one_line_within_30_s(tmp_path, tiny_dir, capsys):
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[scale]')")
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as e:
        _sweep(_spec(tmp_path, tiny_dir), tmp_path / "out", "--backend", "ray", "--address", "127.0.0.1:1")
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "cannot reach a Ray cluster at --address 127.0.0.1:1" in err
    assert time.monotonic() - t0 < 30


def test_address_needs_the_ray_backend(tmp_path, tiny_dir, capsys):
    with pytest.raises(SystemExit) as e:
        _sweep(_spec(tmp_path, tiny_dir), tmp_path / "out", "--address", "127.0.0.1:6379")
    assert e.value.code == 2 and "--address needs --backend ray" in capsys.readouterr().err


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs (2 workers), started here; Ray is installed from PyPI if it is missing."""
    try:
        import ray
    except ImportError:
        res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "ray[default]>=2.40"], capture_output=True,
                             text=True, timeout=900)
        if res.returncode != 0:
            pytest.skip(f"ray is not installed and pip could not install it: {(res.stderr or res.stdout).strip()[-300:]}")
        import ray
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), before]))  # Ray's workers import this checkout
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        yield ray
    finally:
        ray.shutdown()
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


@pytest.mark.slow
def test_ray_backend_gives_the_local_results(local_ray, tmp_path, tiny_dir):
    spec = _spec(tmp_path, tiny_dir)
    _sweep(spec, tmp_path / "local")
    _sweep(spec, tmp_path / "ray", "--backend", "ray", "--workers", "2")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray" / "results.parquet"),
                                  pd.read_parquet(tmp_path / "local" / "results.parquet"), check_exact=True)
    run = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert run["backend"] == "ray" and run["workers"] == 2
    assert sorted(l["worker"] for l in run["model_loads"]) == ["ray-0", "ray-1"]  # one model load per worker
    assert len(list((tmp_path / "ray" / "units").iterdir())) == 2  # the jobs' folders came back from the workers
