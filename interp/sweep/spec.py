"""Sweep specs: a TOML file declaring models, tasks, interventions, analyses, metrics and seeds, expanded to a
grid of units. Light on purpose (no torch): the CLI parses and checks a spec against every model's config
before anything loads, and every error names the spec's line and key.

```toml
seeds = [0, 1]
metrics = ["logit_diff"]            # read from the logits by intervention, patching and AtP units

[[models]]
name = "smollm2-135m"

[[tasks]]
name = "ioi"                        # ioi | induction | prose
size = 20

[[interventions]]                   # per head, batched: ablate | scale | patch | steer | edit
name = "ablate"
how = "mean"
heads = "all"                       # or ["L9H6", "10.0"]

[[analyses]]                        # atlas | sinks | entropy | retrieval | patching | atp
name = "atlas"
niah_lengths = []
```

Units: every (model, seed) × (task × intervention, task × task analysis, task-free analysis). A task-free
analysis (a job with its own inputs: atlas, sinks, entropy, retrieval) runs once per model and seed.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from interp.errors import InputError, UnknownNameError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

TOP_KEYS = ("name", "seeds", "metrics", "models", "tasks", "interventions", "analyses")

# task name → its fields and defaults, and what it offers to metrics and interventions
TASKS: dict[str, dict[str, Any]] = {
    "ioi": {"size": 20, "corruption": "abc"},  # IOI prompts; corruption abc (pABC) or flip
    "induction": {"size": 8, "length": 16},  # BOS + random tokens repeated; corrupted: a fresh second half
    "prose": {"size": 4, "tokens": 64},  # chunks of Python's pydoc topics
}
TASK_OFFERS = {"ioi": {"answers", "corrupted"}, "induction": {"corrupted"}, "prose": set()}

# metric name → (what the task must offer, differentiable)
METRICS: dict[str, tuple[str | None, bool]] = {
    "logit_diff": ("answers", True),  # logit(IO) − logit(S) at the last token (methods.md §12)
    "accuracy": ("answers", False),  # fraction of prompts with logit(IO) > logit(S)
    "loss": (None, True),  # mean next-token cross-entropy over the task's scored positions
}

# library edit values a spec may name in `edit = "..."`: swept over heads, other fields from `fields = {...}`
EDITS = ("ZeroAblate", "ScaleHeadOutput", "MixUniform", "MixIdentity")

# intervention name → (fields and defaults, what the task must offer)
INTERVENTIONS: dict[str, tuple[dict[str, Any], str | None]] = {
    "ablate": ({"how": "zero", "heads": "all"}, None),  # zero, or mean over the task's reference prompts
    "scale": ({"factor": 0.0, "heads": "all"}, None),  # the head's output × factor
    "patch": ({"heads": "all"}, "corrupted"),  # the head's z from the corrupted run, in the clean run
    "steer": ({"alpha": 4.0, "heads": "all"}, "corrupted"),  # + alpha · σ-scaled mass-mean z shift clean − corrupted
    "edit": ({"edit": None, "fields": {}, "heads": "all"}, None),  # any value of EDITS, per head
}
ABLATIONS = ("zero", "mean")
MAIN_FIELDS = {"ablate": ("how",), "scale": ("factor",), "steer": ("alpha",), "edit": ("edit", "fields"), "patching": ("site",)}

# analysis name → (fields and defaults, what the task must offer; None = task-free job)
TASK_ANALYSES: dict[str, tuple[dict[str, Any], str]] = {
    "patching": ({"site": "z"}, "corrupted"),  # activation patching per head (clean into corrupted, normalized)
    "atp": ({"qk_fix": True}, "corrupted"),  # attribution patching per head (AtP, AtP* with qk_fix)
}
JOB_ANALYSES = ("atlas", "sinks", "entropy", "retrieval")
PATCH_SITES = ("z", "q", "k", "v", "pattern")


def field_domains() -> dict[str, dict[str, Any]]:
    """The declared domain (``interp.jobs.domain.Domain``) of each numeric field of tasks and interventions, by
    entry name; job analyses declare theirs on their configs. Checked at parse time with the spec's line."""
    from interp.jobs.domain import Domain
    from interp.jobs.patch_config import MAX_TASK_PROMPTS

    size = Domain(int, 1, MAX_TASK_PROMPTS, why="prompts repeat past this and each is run per head")
    return {"ioi": {"size": size},
            "induction": {"size": size, "length": Domain(int, 2, model="context")},
            "prose": {"size": Domain(int, 1, 4096, why="chunks of the pydoc text"), "tokens": Domain(int, 2, model="context")},
            "scale": {"factor": Domain(float, -100, 100, why="a factor on the head's output; 1 is the identity")},
            "steer": {"alpha": Domain(float, -1000, 1000, why="multiples of the direction's std")}}


def _job_fields(name: str) -> dict[str, Any]:
    """The spec fields of a job analysis: its config's fields (seed comes from the sweep; file hashes are derived)."""
    from interp.jobs import config as C
    from interp.tasks.sources import NiahConfig

    cls = {"atlas": C.AtlasConfig, "sinks": C.SinksConfig, "entropy": C.EntropyConfig, "retrieval": C.RetrievalConfig}[name]
    out = {f.name: _default(f) for f in fields(cls) if f.name != "seed" and not f.name.endswith("_sha")}
    if name == "retrieval":  # the NIAH settings are spelled flat in a spec
        out.pop("niah")
        out.update({f.name: _default(f) for f in fields(NiahConfig)})
    return out


def _default(f):
    from dataclasses import MISSING

    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def action_defaults(name: str) -> dict[str, Any]:
    if name in INTERVENTIONS:
        return INTERVENTIONS[name][0]
    if name in TASK_ANALYSES:
        return TASK_ANALYSES[name][0]
    return _job_fields(name)


def _plain(v):
    """A default as TOML gives it back (tuples are lists)."""
    return list(v) if isinstance(v, tuple) else v


def job_metrics(name: str) -> tuple[str, ...] | None:
    """Metric names a job analysis writes, where the job declares them (for checking `metrics = [...]`)."""
    from interp.analyze.metrics import JOB_METRICS

    return JOB_METRICS.get(name)


class SpecError(InputError):
    """A spec problem, with the file, line and key it is about."""


@dataclass
class Located:
    """A spec source: ``where(path)`` gives ``"spec.toml line 12, key interventions[0].heads"``."""

    file: str
    lines: dict[tuple, int]

    def where(self, path: tuple) -> str:
        line = None
        for n in range(len(path), 0, -1):  # the key's own line, else its table's
            line = self.lines.get(tuple(path[:n]))
            if line is not None:
                break
        key = _key(path)
        return f"{self.file}{f' line {line}' if line else ''}{f', key {key}' if key else ''}"

    def error(self, path: tuple, message: str, cls=SpecError) -> InputError:
        return cls(f"{self.where(path)}: {message}")


def _key(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def key_lines(text: str) -> dict[tuple, int]:
    """Line numbers of tables, array-of-table entries and keys: ``("interventions", 1, "heads") → 14``.

    A line scanner for the usual layout (one key per line, ``[table]`` and ``[[array]]`` headers, dotted keys);
    values spanning lines are skipped. Used only to point error messages at lines."""
    lines: dict[tuple, int] = {}
    table: tuple = ()
    counts: dict[tuple, int] = {}
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := re.match(r"\[\[\s*([^\[\]]+?)\s*\]\]", line):
            name = tuple(_split_key(m.group(1)))
            counts[name] = counts.get(name, -1) + 1
            table = (*name, counts[name])
            lines[table] = i
            lines.setdefault(name, i)
        elif m := re.match(r"\[\s*([^\[\]]+?)\s*\]", line):
            table = tuple(_split_key(m.group(1)))
            lines[table] = i
        elif m := re.match(r"((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=", line):
            lines.setdefault((*table, *_split_key(m.group(1))), i)
    return lines


def _split_key(key: str) -> list[str]:
    return [k.strip().strip("\"'") for k in re.findall(r"\"[^\"]*\"|'[^']*'|[^.]+", key)]


@dataclass(frozen=True)
class Unit:
    """One cell of the grid: what one worker computes into one result part."""

    index: int
    model: str  # as written in the spec (what load_model gets)
    seed: int
    kind: str  # "intervention" | "analysis"
    action: dict  # {"name": ..., fields...}, all defaults filled in
    task: dict | None = None  # {"name": ..., fields...}; None for job analyses
    metrics: tuple[str, ...] = ()

    def identity(self) -> dict:
        return {"model": self.model, "seed": self.seed, "kind": self.kind, "action": self.action, "task": self.task,
                "metrics": list(self.metrics)}

    @property
    def key(self) -> str:
        """Stable across runs of the same spec: the grid position and a hash of what the unit computes."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return f"u{self.index:04d}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    @property
    def label(self) -> str:
        """The unit's action as a condition label: its main field and any field off its default, e.g.
        ``ablate(how=mean)``, ``scale(factor=0.5)`` or ``atlas(seq_len=10)``."""
        name = self.action["name"]
        defaults = action_defaults(name)
        args = [f"{k}={_short(v)}" for k, v in self.action.items()
                if k not in ("name", "heads", "metrics") and (k in MAIN_FIELDS.get(name, ()) or v != _plain(defaults.get(k)))]
        return f"{name}({', '.join(args)})" if args else name

    @property
    def task_name(self) -> str:
        return self.task["name"] if self.task else self.action["name"]

    def describe(self) -> str:
        return f"{self.model} · {self.task_name} · seed {self.seed} · {self.label}"


def _short(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_short(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(map(str, v)) + "]"
    return str(v)


@dataclass
class SweepSpec:
    name: str
    seeds: tuple[int, ...]
    metrics: tuple[str, ...]
    models: list[dict]
    tasks: list[dict]
    interventions: list[dict]
    analyses: list[dict]
    source: Located = field(repr=False, default=None)

    def resolved(self) -> dict:
        """What keys the sweep's output folder: every field with its default filled in (not the file's text)."""
        return {"name": self.name, "seeds": list(self.seeds), "metrics": list(self.metrics), "models": self.models,
                "tasks": self.tasks, "interventions": self.interventions, "analyses": self.analyses}

    def units(self) -> list[Unit]:
        units: list[Unit] = []

        def add(**kw):
            units.append(Unit(index=len(units), **kw))

        for m in self.models:
            for seed in self.seeds:
                for t in self.tasks:
                    for iv in self.interventions:
                        add(model=m["name"], seed=seed, kind="intervention", action=iv, task=t, metrics=self.metrics)
                    for an in self.analyses:
                        if an["name"] in TASK_ANALYSES:
                            add(model=m["name"], seed=seed, kind="analysis", action=an, task=t, metrics=self.metrics)
                for an in self.analyses:
                    if an["name"] in JOB_ANALYSES:
                        add(model=m["name"], seed=seed, kind="analysis", action=an, metrics=tuple(an.get("metrics", ())))
        return units


def load_spec(path: str | Path) -> SweepSpec:
    """Read, parse and check a spec file (everything that needs no model config); one-line errors."""
    from interp.tasks.sources import read_text_file

    path = Path(path).expanduser()
    text = read_text_file(str(path), "the sweep spec")
    return parse_spec(text, path.name)


def parse_spec(text: str, file: str = "spec.toml") -> SweepSpec:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        where = f"{file} line {m.group(1)}" if m else file
        reason = re.sub(r" \(at line.*", "", str(e))
        raise SpecError(f"{where}: not valid TOML ({reason})") from None
    src = Located(file, key_lines(text))
    for k in raw:
        if k not in TOP_KEYS:
            raise src.error((k,), f"unknown key {k!r}; a spec has {', '.join(TOP_KEYS)}", UnknownNameError)
    seeds = _int_list(src, raw, "seeds", [0])
    metrics = tuple(_str_list(src, raw, "metrics", []))
    for m in metrics:
        if m not in METRICS:
            raise src.error(("metrics",), f"unknown metric {m!r}; known metrics: {', '.join(METRICS)}", UnknownNameError)
    models = _models(src, raw)
    tasks = [_entry(src, ("tasks", i), t, TASKS, "task") for i, t in enumerate(_tables(src, raw, "tasks"))]
    interventions = [_intervention(src, i, t) for i, t in enumerate(_tables(src, raw, "interventions"))]
    analyses = [_analysis(src, i, t) for i, t in enumerate(_tables(src, raw, "analyses"))]
    if not interventions and not analyses:
        raise src.error((), "declares no [[interventions]] and no [[analyses]]; add at least one")
    if (interventions or any(a["name"] in TASK_ANALYSES for a in analyses)) and not tasks:
        raise src.error(("interventions",) if interventions else ("analyses",), "needs at least one [[tasks]] entry (ioi, induction or prose)")
    spec = SweepSpec(str(raw.get("name", "sweep")), tuple(seeds), metrics, models, tasks, interventions, analyses, src)
    _check_compatible(spec)
    return spec


def _int_list(src: Located, raw: dict, key: str, default: list[int]) -> list[int]:
    val = raw.get(key, default)
    if not isinstance(val, list) or not val or not all(isinstance(v, int) and not isinstance(v, bool) for v in val):
        raise src.error((key,), f"must be a non-empty list of integers, e.g. {key} = [0, 1]")
    if len(set(val)) != len(val):
        raise src.error((key,), f"lists a value twice: {val}")
    return val


def _str_list(src: Located, raw: dict, key: str, default: list[str]) -> list[str]:
    val = raw.get(key, default)
    if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
        raise src.error((key,), f'must be a list of names, e.g. {key} = ["logit_diff"]')
    return val


def _tables(src: Located, raw: dict, key: str) -> list[dict]:
    val = raw.get(key, [])
    if not isinstance(val, list) or not all(isinstance(v, dict) for v in val):
        raise src.error((key,), f"must be an array of tables: write each entry under [[{key}]]")
    return val


def _models(src: Located, raw: dict) -> list[dict]:
    val = raw.get("models")
    if val is None:
        raise src.error((), 'declares no models; add [[models]] with name = "smollm2-135m" (or a local folder)')
    entries = [{"name": v} if isinstance(v, str) else v for v in (val if isinstance(val, list) else [val])]
    out = []
    for i, m in enumerate(entries):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not m["name"].strip():
            raise src.error(("models", i), 'each model needs name = "..." (a bundled name, a local folder or a cached HF id)')
        extra = set(m) - {"name"}
        if extra:
            raise src.error(("models", i, sorted(extra)[0]), f"unknown key {sorted(extra)[0]!r}; a model has only name", UnknownNameError)
        out.append({"name": m["name"]})
    if not out:
        raise src.error(("models",), 'lists no models, so the grid is empty; add [[models]] with name = "smollm2-135m"')
    names = [m["name"] for m in out]
    if len(set(names)) != len(names):
        raise src.error(("models",), f"lists a model twice: {names}")
    return out


def _entry(src: Located, path: tuple, table: dict, registry: dict, what: str, defaults: dict | None = None) -> dict:
    """``{"name": ..., **fields}`` with defaults filled in, unknown names and keys refused."""
    name = table.get("name")
    if not isinstance(name, str):
        raise src.error(path, f'each {what} needs name = "..."; known: {", ".join(registry)}')
    if name not in registry:
        raise src.error((*path, "name"), f"unknown {what} {name!r}; known: {', '.join(registry)}", UnknownNameError)
    allowed = dict(defaults if defaults is not None else registry[name])
    for k, v in table.items():
        if k == "name":
            continue
        if k not in allowed:
            raise src.error((*path, k), f"unknown key {k!r} for {what} {name!r}; its keys: {', '.join(allowed) or 'none'}",
                            UnknownNameError)
        d = allowed[k]
        if d is not None and not _same_kind(d, v):
            raise src.error((*path, k), f"{k} = {v!r} should be {_kind(d)} (like {d!r})")
    out = {"name": name, **allowed, **{k: v for k, v in table.items() if k != "name"}}
    for k, dom in field_domains().get(name, {}).items():
        try:
            dom.check(k, out[k])
        except InputError as e:
            raise src.error((*path, k), str(e)) from None
    if what == "task":
        if name == "ioi" and out["corruption"] not in ("abc", "flip"):
            raise src.error((*path, "corruption"), f"corruption {out['corruption']!r} unknown; use abc or flip")
    return out


def _same_kind(default, value) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and (isinstance(default, float) or isinstance(value, int))
    if isinstance(default, (list, tuple)):
        return isinstance(value, list)
    if isinstance(default, str):
        return isinstance(value, str) or (default == "all" and isinstance(value, list))
    return isinstance(value, type(default))


def _kind(default) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table",
            list: "a list", tuple: "a list"}.get(type(default), type(default).__name__)


def _intervention(src: Located, i: int, table: dict) -> dict:
    path = ("interventions", i)
    out = _entry(src, path, table, {k: v[0] for k, v in INTERVENTIONS.items()}, "intervention")
    _heads(src, path, out["heads"])
    if out["name"] == "ablate" and out["how"] not in ABLATIONS:
        raise src.error((*path, "how"), f"how = {out['how']!r} unknown; use {' or '.join(ABLATIONS)}", UnknownNameError)
    if out["name"] == "edit":
        if out["edit"] not in EDITS:
            raise src.error((*path, "edit"), f"edit = {out['edit']!r} is not an edit value a spec can build; use one of "
                                             f"{', '.join(EDITS)}", UnknownNameError)
        _edit_fields(src, (*path, "fields"), out["edit"], out["fields"])
    return out


def _edit_fields(src: Located, path: tuple, name: str, given: dict) -> None:
    """Fields of an edit value besides its head must exist and be scalars (the head is filled in per head)."""
    from interp import edits as attn_edits
    from interp.intervene import values

    cls = getattr(attn_edits, name, None) or getattr(values, name)
    names = [f.name for f in fields(cls) if f.name not in ("head", "site", "layer")]
    for k, v in given.items():
        if k not in names:
            raise src.error((*path, k), f"{name} has no field {k!r}; its fields besides the head: {', '.join(names) or 'none'}",
                            UnknownNameError)
        if not isinstance(v, (int, float, str, bool, list)):
            raise src.error((*path, k), f"{name}.{k} must be a number, string or list")
        if isinstance(v, float) and not math.isfinite(v):
            raise src.error((*path, k), f"{name}.{k} must be a finite number, got {v}")


def _heads(src: Located, path: tuple, heads) -> None:
    from interp.types import HeadId

    if heads == "all":
        return
    if not isinstance(heads, list) or not heads:
        raise src.error((*path, "heads"), 'heads must be "all" or a list such as ["L9H6", "10.0"]')
    for h in heads:
        try:
            HeadId.parse(h)
        except InputError as e:
            raise src.error((*path, "heads"), str(e)) from None


def _analysis(src: Located, i: int, table: dict) -> dict:
    path = ("analyses", i)
    name = table.get("name")
    known = {**{k: v[0] for k, v in TASK_ANALYSES.items()}, **{k: None for k in JOB_ANALYSES}}
    if name in JOB_ANALYSES:
        out = _entry(src, path, table, known, "analysis", defaults={**_job_fields(name), "metrics": []})
        _job_config(src, path, out)
        declared = job_metrics(name) if out["metrics"] else None
        for m in out["metrics"]:
            if declared is not None and m not in declared:
                raise src.error((*path, "metrics"), f"analysis {name!r} writes no metric {m!r}; its metrics: {', '.join(declared)}",
                                UnknownNameError)
        return out
    out = _entry(src, path, table, known, "analysis")
    if name == "patching" and out["site"] not in PATCH_SITES:
        raise src.error((*path, "site"), f"site = {out['site']!r} cannot be patched per head; use one of {', '.join(PATCH_SITES)}",
                        UnknownNameError)
    return out


def job_config(action: dict, seed: int):
    """The job's config dataclass for a job analysis entry (its checks run in ``__post_init__``)."""
    from interp.jobs import config as C
    from interp.tasks.sources import NiahConfig

    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in action.items() if k not in ("name", "metrics")}
    name = action["name"]
    if name == "retrieval":
        niah = {f.name: kw.pop(f.name) for f in fields(NiahConfig) if f.name in kw}
        return C.RetrievalConfig(niah=NiahConfig(**niah), seed=seed, **kw)
    cls = {"atlas": C.AtlasConfig, "sinks": C.SinksConfig, "entropy": C.EntropyConfig}[name]
    return cls(**kw, **({"seed": seed} if name == "atlas" else {}))


def _job_config(src: Located, path: tuple, action: dict) -> None:
    try:
        job_config(action, 0)
    except InputError as e:
        raise src.error(_option_path(path, action, str(e)), str(e)) from None


def _option_path(path: tuple, action: dict, message: str) -> tuple:
    """Point a job's own error (which names its CLI option, e.g. ``--seq-len``) at the spec key it came from."""
    m = re.search(r"--([a-z][a-z-]*)", message)
    key = m.group(1).replace("-", "_") if m else None
    return (*path, key) if key in action else path


def _check_compatible(spec: SweepSpec) -> None:
    """Metrics, interventions and analyses against what each task offers (no model needed)."""
    src = spec.source
    uses_metrics = spec.interventions or any(a["name"] in TASK_ANALYSES for a in spec.analyses)
    if uses_metrics and not spec.metrics:
        raise src.error(("metrics",), 'is empty, but interventions and patching read a metric from the logits; add e.g. metrics = ["loss"]')
    for i, t in enumerate(spec.tasks):
        offers = TASK_OFFERS[t["name"]]
        for m in spec.metrics:
            need = METRICS[m][0]
            if need and need not in offers:
                raise src.error(("metrics",), f"metric {m!r} needs a task with {need} (ioi), but task {t['name']!r} "
                                              f"(tasks[{i}]) has none; use loss, or drop that task")
        for j, iv in enumerate(spec.interventions):
            need = INTERVENTIONS[iv["name"]][1]
            if need and need not in offers:
                raise src.error(("interventions", j, "name"), f"intervention {iv['name']!r} needs a task with {need} prompts "
                                                              f"(ioi or induction), but task {t['name']!r} has none")
        for j, an in enumerate(spec.analyses):
            if an["name"] in TASK_ANALYSES and TASK_ANALYSES[an["name"]][1] not in offers:
                raise src.error(("analyses", j, "name"), f"analysis {an['name']!r} needs a task with corrupted prompts "
                                                         f"(ioi or induction), but task {t['name']!r} has none")
    for j, an in enumerate(spec.analyses):
        if an["name"] == "atp":
            bad = [m for m in spec.metrics if not METRICS[m][1]]
            if bad:
                raise src.error(("metrics",), f"metric {bad[0]!r} is not differentiable, and analysis 'atp' (analyses[{j}]) "
                                              f"needs gradients; use logit_diff or loss")


def check_models(spec: SweepSpec) -> dict[str, Any]:
    """Resolve every model from its config alone and check heads, kinds and sizes; returns name → ModelSpec."""
    from interp.models.spec import resolve_model

    src, out = spec.source, {}
    for i, m in enumerate(spec.models):
        try:
            ms = resolve_model(m["name"])
        except InputError as e:
            raise src.error(("models", i, "name"), str(e)) from None
        out[m["name"]] = ms
        if ms.kind != "causal" and (spec.interventions or spec.tasks):
            raise src.error(("models", i, "name"), f"{ms.name!r} is {'an' if ms.kind[0] in 'aeiou' else 'a'} {ms.kind} model; "
                                                   f"interventions and tasks need a causal language model")
        for j, iv in enumerate(spec.interventions):
            _check_heads(src, ("interventions", j, "heads"), iv["heads"], ms)
        for j, an in enumerate(spec.analyses):
            if an["name"] in JOB_ANALYSES:
                try:
                    job_config(an, 0).check(ms)
                except InputError as e:
                    raise src.error(_option_path(("analyses", j), an, str(e)), f"{ms.name}: {e}") from None
        for j, t in enumerate(spec.tasks):
            n = {"induction": 1 + 2 * t.get("length", 0), "prose": t.get("tokens", 0)}.get(t["name"], 0)
            key = {"induction": "length", "prose": "tokens"}.get(t["name"])
            if n:
                try:
                    ms.require_fits(n, f"task {t['name']!r}")
                except InputError as e:
                    raise src.error(("tasks", j, key), str(e)) from None
    return out


def check_units(spec: SweepSpec, models: dict[str, Any]) -> list[Unit]:
    """Build every unit's config and values as its worker would, before any unit runs: job configs against
    their model, and each edit value of an ``edit`` intervention (with its fields, on a head in range), so that a
    bad value fails here with the spec's line, not in every unit after the model loaded. An empty grid is an
    error. Returns the units."""
    src = spec.source
    units = spec.units()
    if not units:
        raise src.error((), "expands to no units (no model × seed × task/analysis); add models, tasks or analyses")
    for j, iv in enumerate(spec.interventions):
        if iv["name"] == "edit":
            _build_edit(src, ("interventions", j, "fields"), iv)
    for u in units:
        if u.kind == "analysis" and u.action["name"] in JOB_ANALYSES:
            j = spec.analyses.index(u.action)
            try:
                job_config(u.action, u.seed).check(models[u.model])
            except InputError as e:
                raise src.error(_option_path(("analyses", j), u.action, str(e)), f"{u.model}: {e}") from None
    return units


def _build_edit(src: Located, path: tuple, iv: dict) -> None:
    """Construct the edit value on head L0H0 with the spec's fields, so its own checks (types, finiteness,
    ranges) run now."""
    from interp import edits as attn_edits
    from interp.intervene import values
    from interp.types import HeadId

    cls = getattr(attn_edits, iv["edit"], None) or getattr(values, iv["edit"])
    try:
        cls(HeadId(0, 0), **iv["fields"])
    except InputError as e:
        msg = str(e) if str(e).startswith(iv["edit"]) else f"{iv['edit']}: {e}"
        raise src.error(path, msg) from None
    except (TypeError, ValueError) as e:
        raise src.error(path, f"{iv['edit']} cannot be built from these fields ({e})") from None


def _check_heads(src: Located, path: tuple, heads, ms) -> None:
    from interp.types import HeadId

    if heads == "all":
        return
    for text in heads:
        h = HeadId.parse(text)
        for what, v, n in (("layer", h.layer, ms.n_layers), ("head", h.head, ms.n_heads)):
            if n is not None and not 0 <= v < n:
                raise src.error(path, f"head {text} is out of range: {ms.name!r} has {ms.n_layers} layers × {ms.n_heads} "
                                      f"heads (L0H0-L{ms.n_layers - 1}H{ms.n_heads - 1})")


__all__ = ["SweepSpec", "Unit", "load_spec", "parse_spec", "check_models", "check_units", "field_domains", "key_lines", "job_config", "SpecError",
           "TASKS", "METRICS", "INTERVENTIONS", "TASK_ANALYSES", "JOB_ANALYSES", "EDITS"]
