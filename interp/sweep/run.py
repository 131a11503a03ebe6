"""The ``interp sweep`` job: a spec's grid of units → ``results.parquet`` (tidy), ``run.json``, ``units/``.

- Each finished unit is one part under ``.parts/<config hash>/`` (``interp.store.ResumableTable``, written
  atomically), so a sweep killed at any moment (``kill -9`` included) resumes with ``--resume``: finished units
  are skipped, a unit cut off mid-way has no part and runs again, nothing is duplicated.
- A unit that raises is recorded in ``.parts/<config hash>/failed/<unit>.json`` with its error, and the others
  go on; ``--resume`` retries it. ``run.json`` lists the failures.
- ``results.parquet`` holds the parts in grid order (the ``unit`` column names each row's unit), rebuilt from
  the parts at the end of every run, so an interrupted-and-resumed sweep gives the same file row for row.
- Jobs run as units (atlas, sinks, entropy, retrieval) keep their folders under ``units/<unit>/`` (report.html…).
- The folder belongs to one resolved spec (``manifest.json``); ``--resume`` with another spec stops, naming the
  keys that differ.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from interp.errors import InputError
from interp.jobs.outdir import MANIFEST, OutDir, check_writable, claim, config_key
from interp.sweep.spec import SweepSpec

VERB = "sweep"


def sweep_config(spec: SweepSpec, model_specs: dict[str, Any]) -> dict:
    """The resolved spec and what each model name resolved to: what keys the folder."""
    return {"spec": spec.resolved(), "model_sources": {k: v.source for k, v in model_specs.items()}}


def claim_sweep(out: str | Path, spec: SweepSpec, config: dict, *, resume: bool) -> OutDir:
    """Bind ``out`` to this sweep; refuse a folder of another spec (naming the keys and lines that differ), and
    a folder that already holds this sweep unless ``resume``."""
    from interp.jobs.outdir import lock_out

    path = check_writable(out)
    lock_out(path)
    manifest = path / MANIFEST
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        same = old.get("key") == config_key(VERB, json.loads(json.dumps(config, default=str)))
        has_parts = any((path / ".parts").glob("*/part-*.parquet"))
        if not same and old.get("verb") == VERB:
            raise InputError(f"{str(path)!r} holds a sweep made by a different spec (differs in: {_spec_diff(old, config, spec)}); "
                             f"pass another --out, or delete the folder to start over")
        if same and has_parts and not resume:
            raise InputError(f"{str(path)!r} already holds this sweep; pass --resume to continue it (finished units are kept), "
                             f"or pass another --out")
    return claim(path, VERB, config)


def _spec_diff(old: dict, config: dict, spec: SweepSpec) -> str:
    before = _flatten((old.get("config") or {}).get("spec", {}))
    after = _flatten(config["spec"])
    keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if not keys and old.get("config", {}).get("model_sources") != config["model_sources"]:
        return "model_sources (a model name now resolves to other files)"
    shown = []
    for k in keys[:4]:
        line = spec.source.lines.get(_path_of(k)) if spec.source else None
        shown.append(f"{k}" + (f" (line {line})" if line else ""))
    return ", ".join(shown) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def _flatten(obj, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def _path_of(key: str) -> tuple:
    parts: list = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", key):
        parts.append(int(index) if index else name)
    return tuple(parts)


def git_commit() -> dict[str, Any] | None:
    """The commit of the interp checkout that runs (and whether it has local changes), if it is a git checkout."""
    import interp

    root = Path(interp.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, timeout=10)
        return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


class Progress:
    """Units done, failed and the ETA (tqdm's, from this run's rate) on one line."""

    def __init__(self, total: int, done: int, enabled: bool):
        from tqdm.auto import tqdm

        self.done, self.failed = done, 0
        self.bar = tqdm(total=total, initial=done, desc="sweep", unit="unit", disable=not enabled, dynamic_ncols=True)
        self.bar.set_postfix_str(self._postfix())

    def _postfix(self) -> str:
        return f"done={self.done} failed={self.failed}"

    def update(self, ok: bool) -> None:
        self.done += ok
        self.failed += not ok
        self.bar.set_postfix_str(self._postfix(), refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_sweep(spec: SweepSpec, out: str | Path, *, model_specs: dict[str, Any] | None = None, backend: str = "local",
              address: str | None = None, resume: bool = False, workers: int = 2, threads: int = 1,
              device: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the sweep into ``out``; returns the paths written and the unit counts."""
    from interp.store import ResumableTable
    from interp.sweep.backends import connect, run_local, run_ray
    from interp.sweep.spec import check_models

    if backend not in ("local", "ray"):
        raise InputError(f"--backend {backend!r} unknown; use local or ray")
    model_specs = model_specs if model_specs is not None else check_models(spec)
    config = sweep_config(spec, model_specs)
    od = claim_sweep(out, spec, config, resume=resume)
    started = connect(address, workers) if backend == "ray" else False
    store = ResumableTable(od.parts_dir)
    failed_dir = od.parts_dir / "failed"
    units = spec.units()
    todo = [u for u in units if not store.done(u.key)]
    bar = Progress(len(units), len(units) - len(todo), progress)
    loads: list[dict] = []
    t0 = time.perf_counter()

    def on_outcome(o) -> None:
        if o.load_seconds is not None:
            loads.append({"model": o.unit.model, "worker": o.worker, "seconds": round(o.load_seconds, 3)})
        if o.error is None:
            _store_files(od.path / "units" / o.unit.key, o.result.files)
            store.put(o.unit.key, o.result.frame)  # the part is the unit's commit point
            (failed_dir / f"{o.unit.key}.json").unlink(missing_ok=True)
        else:
            from interp.io import write_json

            write_json(failed_dir / f"{o.unit.key}.json", {"unit": o.unit.key, "what": o.unit.describe(), "error": o.error,
                                                           "worker": o.worker, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        bar.update(o.error is None)

    try:
        if backend == "ray":
            run_ray(todo, threads=threads, on_outcome=on_outcome, workers=workers, device=device)
        else:
            run_local(todo, threads=threads, on_outcome=on_outcome, device=device)
    finally:
        bar.close()
        if started:
            import ray

            ray.shutdown()
    return _finish(od, spec, units, store, failed_dir, backend=backend, address=address, workers=workers, threads=threads,
                   loads=loads, wall=time.perf_counter() - t0, ran=len(todo))


def _store_files(folder: Path, files: dict[str, bytes]) -> None:
    """A job unit's files under ``<sweep>/units/<unit>/``; its report loads the sweep root's one plotly.min.js."""
    from interp.io import atomic_path
    from interp.plot.export import write_plotly_js

    if any(name.endswith(".html") for name in files):
        write_plotly_js(folder.parents[1])

    for name, data in files.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(data)


def _finish(od: OutDir, spec: SweepSpec, units, store, failed_dir: Path, **info) -> dict[str, Any]:
    import pandas as pd

    from interp.io import write_json, write_parquet
    from interp.jobs.runinfo import versions

    done = [u for u in units if store.done(u.key)]
    failures = [json.loads(p.read_text()) for p in sorted(failed_dir.glob("*.json"))] if failed_dir.exists() else []
    frames = [store.get(u.key) for u in done]
    paths: dict[str, Any] = {}
    if frames:
        from interp.plot.results import write_results_report
        from interp.schema import make_frame

        results = make_frame(pd.concat(frames, ignore_index=True))  # parts with and without `position` → Int64
        paths["results"] = write_parquet(od.path / "results.parquet", results)
        paths["report"] = write_results_report(results, od.path / "report.html", title=f"Sweep · {spec.name}",
                                               source="results.parquet")
    record = {"verb": "sweep", "spec": spec.resolved(), "config_key": od.key, "model_sources": od.config["model_sources"],
              "versions": versions(), "git": git_commit(), "backend": info["backend"], "address": info["address"],
              "workers": info["workers"] if info["backend"] == "ray" else 1, "threads": info["threads"],
              "units": {"total": len(units), "done": len(done), "failed": len(failures), "ran_now": info["ran"]},
              "failures": failures, "model_loads": info["loads"], "timings": {"wall_s": round(info["wall"], 3)},
              "grid": [{"unit": u.key, "what": u.describe()} for u in units]}
    paths["run"] = write_json(od.path / "run.json", record)
    paths["failed"] = len(failures)
    paths["total"] = len(units)
    return paths


__all__ = ["run_sweep", "claim_sweep", "sweep_config", "git_commit"]
