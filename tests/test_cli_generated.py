"""Every option of every verb, fed the bad values of its type, in-process.

The cases are generated from the typer app itself: every verb, every option with a number or path type (list
options included), so a verb added later is covered without editing this file. Numbers get NaN, ±inf, 0, -1,
10⁹ and ``abc``; paths get a missing file, a directory, a binary file, an empty file, a non-parquet file and a
file under /proc. Each case must end in exit 2 with one stderr line ``error: ...``, no traceback, and no model
load (``load_model`` is replaced by a function that fails the case). The values that are legitimately valid
for an option are listed in ``VALID`` with the reason; those must instead pass every check and reach the load
(or, for verbs that load no model, finish with exit 0).
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import pkgutil
import types
import typing
from pathlib import Path

import pandas as pd
import pytest
import typer

import interp.jobs
from interp.cli import app, main
from interp.jobs.domain import REGISTRY

BIG_INT, BIG_FLOAT = "1000000000", "1e9"
NUMBERS = ("nan", "inf", "-inf", "0", "-1", "BIG", "abc")
PATHS = ("missing", "directory", "binary", "empty", "not_parquet", "proc")

# (verb or "*", option, value) → why that value is valid for that option
VALID = {
    ("*", "--seed", "0"): "0 is a seed",
    ("*", "--seed", BIG_INT): "any 32-bit seed is a seed",
    ("*", "--out", "missing"): "a missing output folder is created",
    ("*", "--out", "directory"): "an empty existing folder is used",
    ("steer", "--alpha", "0"): "alpha 0 is the unsteered baseline",
    ("steer", "--alpha", "-1"): "a negative alpha steers toward the other class",
    ("vision", "--alpha", "0"): "VHR factor 0 ablates the selected heads' outputs",
    ("vision", "--p", "0"): "VAR may keep none of the sink attention",
    ("vision", "--rho", "0"): "a threshold on a share; 0 is allowed",
    ("vision", "--summ", "0"): "a threshold on a share; 0 is allowed",
    ("vision", "--vhr-layers", "0"): "layer 0 exists",
    ("vision", "--var-layers", "0"): "layer 0 exists",
    ("capture", "--layer", "0"): "layer 0 exists",
    ("subspace", "--layer", "0"): "layer 0 exists",
    ("capture", "--head", "0"): "head 0 exists",
    ("entropy", "--collapse", "0"): "no head is flagged as collapsed",
    ("circuits", "--min-effect", "0"): "every head with any path effect qualifies",
    ("circuits", "--attn-threshold", "0"): "a threshold on an attention mass; 0 is allowed",
    ("circuits", "--copy-threshold", "0"): "a threshold on a |copy score|; 0 is allowed",
    ("retrieval", "--depths", "0"): "the needle at the start of the haystack",
    ("sinks", "--text", "not_parquet"): "--text takes any UTF-8 text file, whatever its name",
    ("entropy", "--text", "not_parquet"): "--text takes any UTF-8 text file, whatever its name",
    ("retrieval", "--haystack", "not_parquet"): "--haystack takes any UTF-8 text file, whatever its name",
}

# values VALID's "*" rows would admit, that are bad for this verb
NOT_VALID = {
    ("plot", "--out", "directory"): "a report is a file, not a folder",
}

# numeric options checked outside interp.jobs.domain, with where
NO_DOMAIN = {
    "--lengths": "NiahConfig in interp.tasks.sources (a layer below the jobs) checks lengths against the context",
    "--depths": "NiahConfig checks each depth lies in [0, 100] (NaN and inf fail that)",
    "--max-new-tokens": "retrieval's --max-new-tokens: NiahConfig checks it, and the context bound covers it",
}


class Reached(BaseException):
    """Raised by the stand-in load_model: every check passed (a BaseException, so no handler swallows it)."""


def _commands() -> dict:
    return dict(sorted(getattr(typer.main.get_command(app), "commands", {}).items()))


def _kind(param) -> str | None:
    """``int``, ``float`` or ``path`` from the option's annotation (``Optional[...]`` and ``List[...]`` unwrapped)."""
    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if ann is None:  # a plain click parameter
        ann = {"integer": int, "float": float, "path": Path}.get(getattr(getattr(param, "type", None), "name", ""))
    while typing.get_args(ann) and typing.get_origin(ann) in (list, typing.Union, types.UnionType, tuple):
        ann = next(a for a in typing.get_args(ann) if a is not type(None))
    if ann is bool:
        return None
    return {int: "int", float: "float", Path: "path"}.get(ann)


def _option(param) -> str:
    opts = getattr(param, "opts", [])
    return next((o for o in opts if o.startswith("--")), param.name)


def _cases():
    cases = []
    for verb, cmd in _commands().items():
        for p in cmd.params:
            kind = _kind(p)
            if kind is None or getattr(p, "is_flag", False):
                continue
            values = PATHS if kind == "path" else NUMBERS
            for v in values:
                value = (BIG_INT if kind == "int" else BIG_FLOAT) if v == "BIG" else v
                cases.append((verb, p.name, _option(p), kind, value))
    return cases


CASES = _cases()
for _m in pkgutil.iter_modules(interp.jobs.__path__):  # register every declared domain (a new verb's config too)
    if _m.name.endswith("config"):
        importlib.import_module(f"interp.jobs.{_m.name}")


def _valid(verb: str, option: str, value: str) -> str | None:
    if (verb, option, value) in NOT_VALID:
        return None
    return VALID.get((verb, option, value)) or VALID.get(("*", option, value))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The bad files, and the valid inputs that required arguments need (a spec, a results table, circuits)."""
    d = tmp_path_factory.mktemp("gen")
    (d / "directory").mkdir()
    (d / "binary.bin").write_bytes(b"\x00\x01\x02PAR1\x00" * 64)
    (d / "empty.txt").write_bytes(b"")
    (d / "text.parquet").write_text("The quick brown fox jumps over the lazy dog. " * 20)
    rows = pd.DataFrame({"model": "m", "task": "t", "layer": [0, 0, 1], "head": [0, 1, 0], "metric": "x", "value": [0.1, 0.2, 0.3]})
    rows.to_parquet(d / "results.parquet")
    (d / "spec.toml").write_text('metrics = ["loss"]\n[[models]]\nname = "smollm2-135m"\n[[tasks]]\nname = "prose"\n'
                                 'size = 1\ntokens = 8\n[[interventions]]\nname = "scale"\nfactor = 0.5\nheads = ["0.0"]\n')
    for name in ("circ_a", "circ_b"):
        _circuit_dir(d / name, "smollm2-135m")
    return {"missing": str(d / "missing.txt"), "directory": str(d / "directory"), "binary": str(d / "binary.bin"),
            "empty": str(d / "empty.txt"), "not_parquet": str(d / "text.parquet"), "proc": "/proc/self/mem",
            "root": d}


def _circuit_dir(path: Path, model: str, task: str = "ioi") -> Path:
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"verb": "circuits", "key": "x", "config": {"model": model, "task": task}}))
    pd.DataFrame({"layer": [1, 2], "head": [0, 1], "stage": [1, 2], "class": ["name mover", "S-inhibition"],
                  "effect": [0.5, 0.3], "copy_score": [0.8, -0.1]}).to_parquet(path / "circuit.parquet")
    pd.DataFrame({"model": model, "task": task, "layer": [1, 2, 3], "head": [0, 1, 2], "metric": "path_patch",
                  "value": [0.5, 0.3, 0.01], "condition": ["stage1", "stage2", "stage2"]}).to_parquet(path / "patching.parquet")
    return path


def _required(verb: str, param, inputs) -> list[str]:
    """A valid value for a required parameter, by its name (a new verb's unknown one gets one by type)."""
    root = inputs["root"]
    by_name = {"prompt": "The cat sat on the mat", "heads": "1.0", "spec": str(root / "spec.toml"),
               "results": str(root / "results.parquet"), "dir_a": str(root / "circ_a"), "dir_b": str(root / "circ_b")}
    kind = _kind(param)
    value = by_name.get(param.name) or {"int": "1", "float": "0.5", "path": str(root / "text.parquet")}.get(kind, "text")
    return [value] if getattr(param, "param_type_name", "") == "argument" else [_option(param), value]


def _argv(verb: str, name: str, option: str, value: str, inputs, tmp_path) -> list[str]:
    cmd = _commands()[verb]
    argv = [verb]
    for p in cmd.params:
        if p.name == name or not p.required:
            continue
        argv += _required(verb, p, inputs)
    target = next(p for p in cmd.params if p.name == name)
    bad = inputs.get(value, value) if _kind(target) == "path" else value
    if name == "out" and value in ("missing", "directory"):  # an output is written: a fresh one per case
        bad = tmp_path / ("new.html" if verb == "plot" and value == "missing" else value)
        if value == "directory":
            bad.mkdir()
        bad = str(bad)
    if getattr(target, "param_type_name", "") == "argument":
        argv.insert(1, bad)
    else:
        argv += [option, bad]
    if name != "out" and any(p.name == "out" for p in cmd.params):
        argv += ["--out", str(tmp_path / ("report.html" if verb == "plot" else "out"))]
    return argv


@pytest.fixture
def no_load(monkeypatch):
    def load_model(*a, **k):
        raise Reached()

    import interp.models
    import interp.models.loader

    monkeypatch.setattr(interp.models.loader, "load_model", load_model)
    monkeypatch.setattr(interp.models, "load_model", load_model, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
    from interp.jobs.outdir import _release_all

    _release_all()


OPTIONS = sorted({(v, n, o, k) for v, n, o, k, _ in CASES})


def _one(verb, name, option, value, inputs, tmp_path) -> str | None:
    """Run one case; the problem with its outcome, or None."""
    argv = _argv(verb, name, option, value, inputs, tmp_path)
    err = io.StringIO()
    reached, code = False, 0
    with contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code
        except Reached:
            reached = True
    lines = err.getvalue().strip().splitlines()
    why = _valid(verb, option, value)
    if why is not None:  # valid: every check passes and the job reaches the model load (or finishes)
        if not (reached or code == 0) or any(l.startswith("error:") for l in lines):
            return f"{option} {value} is valid ({why}), but: exit {code}, {lines}"
        return None
    if reached:
        return f"{option} {value}: the model was loaded although the value is bad"
    if code != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or "Traceback" in lines[0] or "unexpected" in lines[0]:
        return f"{option} {value}: exit {code}, stderr {lines}"
    return None


@pytest.mark.parametrize("verb,name,option,kind", OPTIONS, ids=[f"{v} {o}" for v, _, o, _ in OPTIONS])
def test_every_option_refuses_bad_values_before_the_model_loads(verb, name, option, kind, inputs, tmp_path, no_load):
    problems = []
    for i, value in enumerate(x for v, n, _, _, x in CASES if (v, n) == (verb, name)):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        problems.append(_one(verb, name, option, value, inputs, folder))
    problems = [p for p in problems if p]
    assert not problems, "\n".join([f"interp {verb}:", *problems])


def test_every_numeric_option_declares_a_domain():
    """A verb's number options are declared on its config (interp.jobs.domain), or listed in NO_DOMAIN."""
    undeclared = set()
    for verb, cmd in _commands().items():
        for p in cmd.params:
            if _kind(p) in ("int", "float") and _option(p) not in REGISTRY and _option(p) not in NO_DOMAIN:
                undeclared.add(f"{verb} {_option(p)}")
    assert not undeclared, f"numeric options without a declared domain: {sorted(undeclared)}"


def test_valid_cases_are_in_their_declared_domain():
    """What VALID calls valid lies inside a domain the option declares (the table cannot drift from them)."""
    for (verb, option, value), why in VALID.items():
        if option in REGISTRY and value not in PATHS:
            assert any(d.contains(float(value)) for _, _, d in REGISTRY[option]), (verb, option, value, why)


def test_the_generated_cases_cover_every_verb():
    verbs = {v for v, *_ in CASES}
    assert verbs == set(_commands()) - {v for v, c in _commands().items()
                                        if not any(_kind(p) for p in c.params)}
    assert len(CASES) > 300
