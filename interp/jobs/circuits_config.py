"""Configs of ``interp circuits``, ``interp reuse`` and ``interp repair`` (light: checked before torch loads)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from interp.analyze.circuit_params import CircuitParams
from interp.errors import InputError
from interp.models.spec import ModelSpec

TASK_NAMES = ("ioi", "colored-objects")


def _task(name: str) -> None:
    if name not in TASK_NAMES:
        raise InputError(f"--task {name!r} unknown; available tasks: {', '.join(TASK_NAMES)}")


def _positive(**values: int) -> None:
    for name, v in values.items():
        if v < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {v}")


@dataclass(frozen=True)
class CircuitsConfig:
    task: str = "ioi"
    prompts: int = 100
    seed: int = 0
    stages: int = CircuitParams.n_stages
    prune: bool = CircuitParams.prune
    keep: int = CircuitParams.keep
    top_frac: float = CircuitParams.top_frac
    min_effect: float = CircuitParams.min_effect
    attn_threshold: float = CircuitParams.attn_threshold
    copy_threshold: float = CircuitParams.copy_threshold
    faithfulness: bool = True

    def __post_init__(self):
        _task(self.task)
        _positive(prompts=self.prompts, stages=self.stages, keep=self.keep)
        if not 0 < self.top_frac <= 1:
            raise InputError(f"--top-frac must lie in (0, 1], got {self.top_frac}")

    def check(self, spec: ModelSpec) -> None:
        spec.require_causal("circuits")

    def params(self) -> CircuitParams:
        return CircuitParams(n_stages=self.stages, top_frac=self.top_frac, min_effect=self.min_effect, prune=self.prune,
                             keep=self.keep, attn_threshold=self.attn_threshold, copy_threshold=self.copy_threshold)


def read_circuit_dir(path: str | Path) -> dict:
    """The manifest of an ``interp circuits`` folder, or a one-line error."""
    p = Path(path).expanduser()
    man = p / "manifest.json"
    try:
        data = json.loads(man.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"{str(p)!r} is not an `interp circuits` result folder (no readable manifest.json)") from None
    if data.get("verb") != "circuits" or not (p / "patching.parquet").exists() or not (p / "circuit.parquet").exists():
        raise InputError(f"{str(p)!r} is not a finished `interp circuits` folder (needs circuit.parquet and patching.parquet)")
    return data["config"]


@dataclass(frozen=True)
class ReuseConfig:
    dir_a: str
    dir_b: str
    top_frac: float = 0.02

    def __post_init__(self):
        a, b = read_circuit_dir(self.dir_a), read_circuit_dir(self.dir_b)
        if a.get("model") != b.get("model"):
            raise InputError(f"the two folders hold circuits of different models ({a.get('model')!r} and {b.get('model')!r}); "
                             "compare circuits of one model")
        if not 0 < self.top_frac <= 1:
            raise InputError(f"--top-frac must lie in (0, 1], got {self.top_frac}")
        object.__setattr__(self, "dir_a", os.path.abspath(self.dir_a))
        object.__setattr__(self, "dir_b", os.path.abspath(self.dir_b))


@dataclass(frozen=True)
class RepairConfig:
    prompts: int = 100
    ioi_prompts: int = 60
    circuit: str | None = None  # an `interp circuits --task ioi` folder; None discovers the IOI circuit here
    draws: int = 5
    n_inhibition: int = 3
    seed: int = 0
    keep: int = 16

    def __post_init__(self):
        _positive(prompts=self.prompts, ioi_prompts=self.ioi_prompts, draws=self.draws, n_inhibition=self.n_inhibition,
                  keep=self.keep)
        if self.circuit is not None:
            cfg = read_circuit_dir(self.circuit)
            if cfg.get("task") != "ioi":
                raise InputError(f"--circuit {self.circuit!r} holds a {cfg.get('task')!r} circuit; repair needs an IOI circuit")
            object.__setattr__(self, "circuit", os.path.abspath(self.circuit))

    def check(self, spec: ModelSpec) -> None:
        spec.require_causal("repair")
        if self.circuit is not None and read_circuit_dir(self.circuit).get("model") != spec.name:
            raise InputError(f"--circuit {self.circuit!r} was found on another model than {spec.name!r}")


__all__ = ["CircuitsConfig", "ReuseConfig", "RepairConfig", "read_circuit_dir", "TASK_NAMES"]
