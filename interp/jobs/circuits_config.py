"""Configs of ``interp circuits``, ``interp reuse`` and ``interp repair`` (light: checked before torch loads)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from interp.analyze.circuit_params import CircuitParams
from interp.errors import InputError
from interp.jobs.domain import SEED, Checked, config, num
from interp.jobs.patch_config import MAX_TASK_PROMPTS
from interp.models.spec import ModelSpec

TASK_NAMES = ("ioi", "colored-objects")


def _task(name: str) -> None:
    if name not in TASK_NAMES:
        raise InputError(f"--task {name!r} unknown; available tasks: {', '.join(TASK_NAMES)}")


PROMPTS_WHY = "task prompts repeat past this and every prompt is path patched per sender"
TOP_FRAC = dict(lo=0, hi=1, lo_open=True)
CHUNK_TOKENS = dict(lo=16, hi=1 << 20, why="prompts run in chunks of about this many tokens; memory grows with it, results do not")


@config
class CircuitsConfig(Checked):
    task: str = "ioi"
    prompts: int = num(100, lo=1, hi=MAX_TASK_PROMPTS, why=PROMPTS_WHY)
    seed: int = num(0, **SEED)
    stages: int = num(CircuitParams.n_stages, lo=1, model="layers")  # each stage goes one layer or more backwards
    prune: bool = CircuitParams.prune
    keep: int = num(CircuitParams.keep, lo=1, model="heads")
    top_frac: float = num(CircuitParams.top_frac, **TOP_FRAC)
    min_effect: float = num(CircuitParams.min_effect, lo=0, hi=1, why="a |normalized path effect|; 1 is the whole effect")
    attn_threshold: float = num(CircuitParams.attn_threshold, lo=0, hi=1, why="an attention mass")
    copy_threshold: float = num(CircuitParams.copy_threshold, lo=0, hi=1, why="a |copy score|")
    faithfulness: bool = True
    chunk_tokens: int = num(CircuitParams.chunk_tokens, **CHUNK_TOKENS)

    def __post_init__(self):
        _task(self.task)

    def check(self, spec: ModelSpec) -> None:
        spec.require_causal("circuits")

    def params(self) -> CircuitParams:
        return CircuitParams(n_stages=self.stages, top_frac=self.top_frac, min_effect=self.min_effect, prune=self.prune,
                             keep=self.keep, attn_threshold=self.attn_threshold, copy_threshold=self.copy_threshold,
                             chunk_tokens=self.chunk_tokens)


# what reuse and repair read of a circuits folder (the loader checks them before any model loads)
CIRCUIT_COLUMNS = ("layer", "head", "stage", "class", "effect", "copy_score")
PATCHING_COLUMNS = ("model", "task", "layer", "head", "metric", "value", "condition")
_FIX = "pass a folder written by `interp circuits` (rerun it to completion if it was interrupted)"


def read_circuit_dir(path: str | Path, option: str = "the circuits folder") -> dict:
    """The config of a finished ``interp circuits`` folder, its manifest and both tables checked (format,
    columns, rows) through the one loader, or a one-line error naming the file."""
    from interp.io import read_json_file

    p = Path(path).expanduser()
    if not p.is_dir():
        raise InputError(f"{option} {str(p)!r} is not a folder; {_FIX}")
    data = read_json_file(p / "manifest.json", f"{option}'s manifest", ("verb", "config"), fix=_FIX)
    if data.get("verb") != "circuits" or not isinstance(data.get("config"), dict):
        raise InputError(f"{option} {str(p)!r} holds an `interp {data.get('verb')}` run, not `interp circuits`; {_FIX}")
    read_circuit_tables(p, option)
    return data["config"]


def read_circuit_tables(path: str | Path, option: str = "the circuits folder"):
    """``(circuit, patching)`` frames of a circuits folder, checked; patching must hold path-patching rows."""
    from interp.io import read_table

    p = Path(path).expanduser()
    heads = read_table(p / "circuit.parquet", f"{option}'s circuit.parquet", CIRCUIT_COLUMNS, fix=_FIX)
    patching = read_table(p / "patching.parquet", f"{option}'s patching.parquet", PATCHING_COLUMNS, fix=_FIX)
    if not (patching["metric"] == "path_patch").any():
        raise InputError(f"{option}'s patching.parquet {str(p / 'patching.parquet')!r} holds no path_patch rows; {_FIX}")
    return heads, patching


@config
class ReuseConfig(Checked):
    dir_a: str = ""
    dir_b: str = ""
    top_frac: float = num(0.02, **TOP_FRAC)

    def __post_init__(self):
        a, b = read_circuit_dir(self.dir_a, "DIR_A"), read_circuit_dir(self.dir_b, "DIR_B")
        if a.get("model") != b.get("model"):
            raise InputError(f"the two folders hold circuits of different models ({a.get('model')!r} and {b.get('model')!r}); "
                             "compare circuits of one model")
        object.__setattr__(self, "dir_a", os.path.abspath(self.dir_a))
        object.__setattr__(self, "dir_b", os.path.abspath(self.dir_b))


@config
class RepairConfig(Checked):
    prompts: int = num(100, lo=1, hi=MAX_TASK_PROMPTS, why="each Colored Objects prompt is run per condition and draw")
    ioi_prompts: int = num(60, lo=1, hi=MAX_TASK_PROMPTS, why=PROMPTS_WHY)
    circuit: str | None = None  # an `interp circuits --task ioi` folder; None discovers the IOI circuit here
    draws: int = num(5, lo=1, hi=100, why="each draw reruns the Colored Objects prompts")
    n_inhibition: int = num(3, lo=1, model="heads")  # at most the circuit's stage-2 heads (checked where known)
    seed: int = num(0, **SEED)
    keep: int = num(16, lo=1, model="heads")
    chunk_tokens: int = num(CircuitParams.chunk_tokens, **CHUNK_TOKENS)  # when the IOI circuit is discovered here

    def __post_init__(self):
        if self.circuit is not None:
            cfg = read_circuit_dir(self.circuit, "--circuit")
            if cfg.get("task") != "ioi":
                raise InputError(f"--circuit {self.circuit!r} holds a {cfg.get('task')!r} circuit; repair needs an IOI circuit")
            object.__setattr__(self, "circuit", os.path.abspath(self.circuit))
            heads, _ = read_circuit_tables(self.circuit, "--circuit")
            n = int((heads["stage"] == 2).sum())
            if self.n_inhibition > n:
                raise InputError(f"--n-inhibition {self.n_inhibition} is more than the {n} stage-2 heads of the circuit in "
                                 f"{self.circuit!r}; use 1..{max(n, 1)}")

    def check(self, spec: ModelSpec) -> None:
        spec.require_causal("repair")
        if self.circuit is not None and read_circuit_dir(self.circuit, "--circuit").get("model") != spec.name:
            raise InputError(f"--circuit {self.circuit!r} was found on another model than {spec.name!r}")


__all__ = ["CircuitsConfig", "ReuseConfig", "RepairConfig", "read_circuit_dir", "read_circuit_tables", "TASK_NAMES"]
