"""Configs of ``interp subspace`` and ``interp weights`` (light: checked before torch is imported or the model loads).

Every numeric option has an explicit domain, checked in ``__post_init__``; what needs the model's config (layer
range, site width) is checked in ``check(spec)``, also before the load.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from interp.errors import InputError
from interp.models.spec import ModelSpec

CLI_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post")
WEIGHT_KINDS = ("q", "k", "v")


def _int_at_least(name: str, v, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise InputError(f"--{name} must be an integer of at least {lo}, got {v!r}")


def _positive(name: str, v) -> None:
    if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
        raise InputError(f"--{name} must be a positive number, got {v!r}")


def _layers_heads(spec: ModelSpec) -> tuple[int | None, int | None]:
    cfg = spec.text_config
    return cfg.get("num_hidden_layers", cfg.get("n_layer")), cfg.get("num_attention_heads", cfg.get("n_head"))


@dataclass(frozen=True)
class SubspaceConfig:
    task: str = "ioi"
    site: str = "resid_post"
    layer: int = -1  # required: -1 means "not given"
    pairs: int = 200
    dim: int = 1
    epochs: int = 30
    batch_size: int = 20
    lr: float = 0.1
    lr_end: float = 0.01
    test_fraction: float = 0.2
    seed: int = 0
    boundless: bool = False
    split_heads: tuple[str, ...] = ()
    weight: str = "q"

    def __post_init__(self):
        from interp.types import HeadId

        if self.task != "ioi":
            raise InputError(f"--task {self.task!r} unknown; the available task is: ioi")
        if self.site not in CLI_SITES:
            raise InputError(f"--site {self.site!r} unknown; use one of {', '.join(CLI_SITES)}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise InputError(f"--site {self.site} needs --layer L (a layer index >= 0), got {self.layer!r}")
        _int_at_least("pairs", self.pairs, 10)
        _int_at_least("dim", self.dim, 1)
        _int_at_least("epochs", self.epochs, 1)
        _int_at_least("batch-size", self.batch_size, 1)
        _positive("lr", self.lr)
        _positive("lr-end", self.lr_end)
        if not 0.0 < self.test_fraction < 1.0:
            raise InputError(f"--test-fraction must lie strictly between 0 and 1, got {self.test_fraction}")
        if self.weight not in WEIGHT_KINDS:
            raise InputError(f"--weight {self.weight!r} unknown; use one of {', '.join(WEIGHT_KINDS)}")
        for h in self.split_heads:
            HeadId.parse(h)
        if self.site.startswith("resid") and not self.split_heads:
            raise InputError(f"--site {self.site} needs --split-heads (e.g. the name movers, --split-heads L23H3 L23H0) to split "
                             "the direction into the part their W_Q reads and the rest")
        if self.site in ("attn_out", "mlp_out"):
            raise InputError(f"--site {self.site} has no weight-defined split; use resid_* (with --split-heads) or mlp_post")

    def check(self, spec: ModelSpec) -> None:
        from interp.types import HeadId

        spec.require_causal("subspace")
        n_layers, n_heads = _layers_heads(spec)
        if n_layers is not None and self.layer >= n_layers:
            raise InputError(f"--layer {self.layer} out of range; {spec.name!r} has {n_layers} layers (0-{n_layers - 1})")
        cfg = spec.text_config
        width = cfg.get("intermediate_size") if self.site == "mlp_post" else cfg.get("hidden_size", cfg.get("n_embd"))
        if width is not None and self.dim >= width:
            raise InputError(f"--dim {self.dim} must be below the site's width {width} (dim = width is the whole-component patch)")
        for text in self.split_heads:
            h = HeadId.parse(text)
            if n_layers is not None and not 0 <= h.layer < n_layers:
                raise InputError(f"--split-heads {text}: layer {h.layer} out of range; {spec.name!r} has {n_layers} layers")
            if n_heads is not None and not 0 <= h.head < n_heads:
                raise InputError(f"--split-heads {text}: head {h.head} out of range; {spec.name!r} has {n_heads} query heads")


@dataclass(frozen=True)
class WeightsConfig:
    kinds: tuple[str, ...] = WEIGHT_KINDS
    top: int = 20
    n_tokens: int = 1000
    seed: int = 0

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in WEIGHT_KINDS]
        if bad or not self.kinds:
            raise InputError(f"--kinds {bad[0] if bad else '(none)'!r} unknown; use some of {', '.join(WEIGHT_KINDS)}")
        _int_at_least("top", self.top, 1)
        _int_at_least("n-tokens", self.n_tokens, 2)

    def check(self, spec: ModelSpec) -> None:
        spec.require_causal("weights")


__all__ = ["SubspaceConfig", "WeightsConfig", "CLI_SITES"]
