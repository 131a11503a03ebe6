"""Every command in the README's bash blocks runs as written, with small settings and a tiny model swapped in.

``interp`` commands run in-process with the tiny model, a temporary ``--out`` and small sizes substituted for
their options (the option names and the list syntax stay as the README writes them). ``python benchmarks/…``
commands are checked for being accepted by the script's argument parser (``--help`` appended); they are
measurements, not tests. ``make`` commands are what CI itself runs.
"""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"atlas": {"--seq-len": ["6"], "--text-tokens": ["24"], "--quiet": []},
         "sinks": {"--prompts": ["2"], "--tokens": ["12"]},
         "entropy": {"--prompts": ["2"], "--tokens": ["12"]},
         "retrieval": {"--lengths": ["300"], "--depths": ["50"], "--n-needles": ["1"], "--max-new-tokens": ["3"],
                       "--mask-top": ["1"], "--mask-random": ["1"], "--draws": ["1"], "--quiet": []},
         "capture": {"--layer": ["1"]},
         "sweep": {"--threads": ["1"], "--quiet": []},
         "plot": {},
         "patch": {"--prompts": ["2"], "--quiet": []},
         "steer": {"--max-new-tokens": ["3"]},
         "vision": {"--n-ordinary": ["1"], "--n-trap": ["1"], "--n-captions": ["1"], "--max-caption-tokens": ["3"], "--quiet": []}}
# spec keys made small for the tiny model (a sweep's spec is a file, so its sizes are set there)
SMALL_SPEC = {"size": "2", "length": "4", "seq_len": "6", "text_tokens": "24", "tokens": "12", "prompts": "2"}
# Verbs whose task needs a real tokenizer or a vision model run on the bundled models instead of the tiny one.
MODELS = {"patch": "smollm2-135m", "steer": "smollm2-135m", "vision": "tinyvlm"}


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def _override(argv: list[str], options: dict[str, list[str]]) -> list[str]:
    """Drop each overridden option with its values, then append the small setting."""
    out, skipping = [], False
    for tok in argv:
        if tok.startswith("--"):
            skipping = tok in options
        if not skipping:
            out.append(tok)
    for opt, values in options.items():
        out += [opt, *values]
    return out


COMMANDS = readme_commands()


def test_readme_has_the_two_fresh_machine_commands_first():
    assert COMMANDS[:2] == [["make", "demo"], ["make", "test"]]


@pytest.mark.parametrize("argv", [c for c in COMMANDS if c[0] == "interp"], ids=lambda a: " ".join(a)[:60])
def test_readme_interp_command_runs(argv, tiny_dir, tmp_path, monkeypatch):
    from interp.cli import main

    monkeypatch.chdir(ROOT)  # the README's relative paths (data/…) are from the repository root
    args = argv[1:]
    if args == ["--version"]:
        main(args)
        return
    verb = args[0]
    if verb == "plot":  # its input is another command's output: give it a small tidy table at that path
        _tidy_table(tmp_path / args[1])
        main(_override([verb, str(tmp_path / args[1]), *args[2:]], {"--out": [str(tmp_path / "out" / "report.html")]}))
        assert (tmp_path / "out" / "report.html").exists()
        return
    if verb == "sweep":  # its models are in its spec
        args[1] = str(_small_spec(ROOT / args[1], tiny_dir, tmp_path))
    writes = "--out" in args
    model = {} if verb == "sweep" else {"--model": [MODELS.get(verb, str(tiny_dir))]}
    args = _override(args, {**model, **SMALL[verb]})
    if writes:
        args = _override(args, {"--out": [str(tmp_path / "out")]})
    if verb == "sweep" and "--resume" in args:
        main([a for a in args if a != "--resume"])  # something to resume
    main(args)
    if writes:
        assert (tmp_path / "out" / "run.json").exists() and (tmp_path / "out" / "manifest.json").exists()


def _small_spec(spec: Path, tiny_dir: Path, tmp_path: Path) -> Path:
    """The README's spec with the tiny model and small sizes; heads are left as written ("all")."""
    text = re.sub(r'(\[\[models\]\]\s*\nname\s*=\s*)"[^"]*"', lambda m: m.group(1) + f'"{tiny_dir}"', spec.read_text())
    for key, value in SMALL_SPEC.items():
        text = re.sub(rf"(?m)^{key}\s*=\s*\d+", f"{key} = {value}", text)
    out = tmp_path / spec.name
    out.write_text(text)
    return out


def _tidy_table(path: Path) -> None:
    from interp.schema import make_frame

    path.parent.mkdir(parents=True, exist_ok=True)
    make_frame([{"model": "m", "task": "t", "layer": l, "head": h, "metric": "score", "value": l + h / 10, "condition": c}
                for l in range(2) for h in range(3) for c in ("a", "b")]).to_parquet(path)


@pytest.mark.parametrize("argv", [c for c in COMMANDS if c[0] == "python"], ids=lambda a: " ".join(a)[:60])
def test_readme_benchmark_command_parses(argv):
    script = ROOT / argv[1]
    assert script.is_file(), f"README names {argv[1]}, which does not exist"
    res = subprocess.run([sys.executable, str(script), *argv[2:], "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-500:]
