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
         "patch": {"--prompts": ["2"], "--quiet": []},
         "steer": {"--max-new-tokens": ["3"]},
         "vision": {"--n-ordinary": ["1"], "--n-trap": ["1"], "--n-captions": ["1"], "--max-caption-tokens": ["3"], "--quiet": []}}
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
    writes = "--out" in args
    args = _override(args, {"--model": [MODELS.get(verb, str(tiny_dir))], **SMALL[verb]})
    if writes:
        args = _override(args, {"--out": [str(tmp_path / "out")]})
    main(args)
    if writes:
        assert (tmp_path / "out" / "run.json").exists() and (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("argv", [c for c in COMMANDS if c[0] == "python"], ids=lambda a: " ".join(a)[:60])
def test_readme_benchmark_command_parses(argv):
    script = ROOT / argv[1]
    assert script.is_file(), f"README names {argv[1]}, which does not exist"
    res = subprocess.run([sys.executable, str(script), *argv[2:], "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-500:]
