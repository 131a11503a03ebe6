"""Every command in the README's bash blocks runs as written, with small settings and a tiny model swapped in.

``interp`` commands run in-process, in README order, with the tiny model (or a bundled one where the task needs
a real tokenizer or a vision model), ``runs/…`` paths moved to one temporary folder (so ``interp plot`` and
``interp reuse`` read what the commands before them wrote), a sweep spec shrunk to the tiny model, and small sizes
substituted for their options (the option names and the list syntax stay as the README writes them).
``python benchmarks/…`` commands are checked for being accepted by the script's argument parser (``--help``
appended); they are measurements, not tests. ``make`` commands are what CI itself runs. Commands in ``console``
blocks (setting up a Ray cluster) are not run.
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
         "circuits": {"--prompts": ["4"], "--stages": ["2"], "--keep": ["4"], "--quiet": []},
         "repair": {"--prompts": ["2"], "--quiet": []},
         "subspace": {"--pairs": ["10"], "--epochs": ["1"], "--quiet": []},
         "weights": {"--n-tokens": ["50"]},
         "vision": {"--n-ordinary": ["1"], "--n-trap": ["1"], "--n-captions": ["1"], "--max-caption-tokens": ["3"], "--quiet": []}}
# spec keys made small for the tiny model (a sweep's spec is a file, so its sizes are set there)
SMALL_SPEC = {"size": "2", "length": "4", "seq_len": "6", "text_tokens": "24", "tokens": "12", "prompts": "2"}
# Verbs whose task needs a real tokenizer or a vision model run on the bundled models instead of the tiny one.
MODELS = {"patch": "smollm2-135m", "subspace": "smollm2-135m", "steer": "smollm2-135m", "circuits": "smollm2-135m", "repair": "smollm2-135m",
          "vision": "tinyvlm"}


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


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One folder for every ``runs/…`` path of the README, so later commands read what earlier ones wrote."""
    return tmp_path_factory.mktemp("runs")


@pytest.mark.parametrize("argv", [c for c in COMMANDS if c[0] == "interp"], ids=lambda a: " ".join(a)[:60])
def test_readme_interp_command_runs(argv, tiny_dir, runs, monkeypatch):
    from interp.cli import main

    monkeypatch.chdir(ROOT)  # the README's relative paths (data/…, examples/…) are from the repository root
    args = [str(runs / a[len("runs/"):]) if a.startswith("runs/") else a for a in argv[1:]]
    if args == ["--version"]:
        main(args)
        return
    verb = args[0]
    if verb == "sweep":  # its models are in its spec
        args[1] = str(_small_spec(ROOT / args[1], tiny_dir, runs))
    elif verb not in ("reuse", "plot"):  # these read other commands' folders
        args = _override(args, {"--model": [MODELS.get(verb, str(tiny_dir))]})
    args = _override(args, SMALL.get(verb, {}))
    if "colored-objects" in args:  # its prompts are 12x an IOI prompt's length: two exercise every step
        args = _override(args, {"--prompts": ["2"]})
    main(args)
    if "--out" in args and verb != "plot":
        out = Path(args[args.index("--out") + 1])
        assert (out / "run.json").exists() and (out / "manifest.json").exists()


def _small_spec(spec: Path, tiny_dir, runs: Path) -> Path:
    """The README's sweep spec on the tiny model, one seed, small tasks and atlas (edited as text, so comments
    and layout stay)."""
    small = {"seeds": "[0]", "size": "2", "length": "6", "seq_len": "8", "text_tokens": "24"}
    text = spec.read_text(encoding="utf-8")
    for key, value in small.items():
        text = re.sub(rf"^{key} = [^#\n]*", f"{key} = {value}  ", text, flags=re.M)
    text = re.sub(r'^(\[\[models\]\]\s*\nname = )"[^"]*"', lambda m: m.group(1) + f'"{tiny_dir}"', text, flags=re.M)
    out = runs / spec.name
    if not out.exists():  # the --resume command must see the same spec
        out.write_text(text, encoding="utf-8")
    return out


@pytest.mark.parametrize("argv", [c for c in COMMANDS if c[0] == "python"], ids=lambda a: " ".join(a)[:60])
def test_readme_benchmark_command_parses(argv):
    script = ROOT / argv[1]
    assert script.is_file(), f"README names {argv[1]}, which does not exist"
    res = subprocess.run([sys.executable, str(script), *argv[2:], "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-500:]
