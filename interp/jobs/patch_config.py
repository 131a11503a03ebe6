"""Configs of ``interp patch`` and ``interp steer`` (light: checked before torch is imported or the model loads)."""
from __future__ import annotations

from dataclasses import dataclass

from interp.errors import InputError
from interp.models.spec import ModelSpec
from interp.types import DIRECTIONS

METHODS = ("exact", "atp", "atp*")


def _causal(spec: ModelSpec, verb: str) -> None:
    if spec.kind != "causal":
        raise InputError(f"interp {verb} needs a causal language model; {spec.name!r} is {spec.kind}")


@dataclass(frozen=True)
class PatchConfig:
    task: str = "ioi"
    method: str = "exact"
    by: str = "head"
    prompts: int = 20
    seed: int = 0
    corruption: str = "abc"
    direction: str = "denoising"

    def __post_init__(self):
        if self.task != "ioi":
            raise InputError(f"--task {self.task!r} unknown; the available task is: ioi")
        if self.method not in METHODS:
            raise InputError(f"--method {self.method!r} unknown; use one of {', '.join(METHODS)}")
        if self.by not in ("head", "head_pos"):
            raise InputError(f"--by {self.by!r} unknown; use head or head_pos")
        if self.corruption not in ("abc", "flip"):
            raise InputError(f"--corruption {self.corruption!r} unknown; use abc or flip")
        if self.direction not in DIRECTIONS:
            raise InputError(f"--direction {self.direction!r} unknown; use {' or '.join(DIRECTIONS)}")
        if self.prompts < 1:
            raise InputError(f"--prompts must be at least 1, got {self.prompts}")

    def check(self, spec: ModelSpec) -> None:
        _causal(spec, "patch")


@dataclass(frozen=True)
class SteerConfig:
    prompt: str
    heads: tuple[str, ...]
    alpha: float = 5.0
    max_new_tokens: int = 20
    concept: str = "sentiment"

    def __post_init__(self):
        from interp.types import HeadId

        if not self.prompt.strip():
            raise InputError("--prompt is empty; pass non-empty text")
        if not self.heads:
            raise InputError("give at least one --heads L.H (e.g. --heads 9.6 12.3)")
        for h in self.heads:
            HeadId.parse(h)
        if self.max_new_tokens < 1:
            raise InputError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.concept != "sentiment":
            raise InputError(f"--concept {self.concept!r} unknown; the available concept is: sentiment")

    def check(self, spec: ModelSpec) -> None:
        from interp.types import HeadId

        _causal(spec, "steer")
        cfg = spec.text_config
        n_layers, n_heads = cfg.get("num_hidden_layers"), cfg.get("num_attention_heads")
        for text in self.heads:
            h = HeadId.parse(text)
            if n_layers is not None and not 0 <= h.layer < n_layers:
                raise InputError(f"--heads {text}: layer {h.layer} out of range; {spec.name!r} has {n_layers} layers (0-{n_layers - 1})")
            if n_heads is not None and not 0 <= h.head < n_heads:
                raise InputError(f"--heads {text}: head {h.head} out of range; {spec.name!r} has {n_heads} query heads (0-{n_heads - 1})")


__all__ = ["PatchConfig", "SteerConfig", "METHODS"]
