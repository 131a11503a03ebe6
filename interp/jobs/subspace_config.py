"""Configs of ``interp subspace`` and ``interp weights`` (light: checked before torch is imported or the model loads).

Every numeric option has an explicit domain, checked in ``__post_init__``; what needs the model's config (layer
range, site width) is checked in ``check(spec)``, also before the load.
"""
from __future__ import annotations

from interp.errors import InputError
from interp.jobs.domain import SEED, Checked, choice, config, num
from interp.jobs.patch_config import MAX_TASK_PROMPTS, check_head
from interp.models.spec import ModelSpec

CLI_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post")
WEIGHT_KINDS = ("q", "k", "v")


def _layers_heads(spec: ModelSpec) -> tuple[int | None, int | None]:
    cfg = spec.text_config
    return cfg.get("num_hidden_layers", cfg.get("n_layer")), cfg.get("num_attention_heads", cfg.get("n_head"))


@config
class SubspaceConfig(Checked):
    task: str = choice("ioi", ("ioi",))
    site: str = choice("mlp_post", CLI_SITES)
    layer: int | None = num(None, lo=0, model="layer", kind=int)  # None: two thirds of the depth (see layer_for)
    pairs: int = num(200, lo=10, hi=MAX_TASK_PROMPTS, why="IOI prompts repeat past this; each pair is trained on every epoch")
    dim: int = num(1, lo=1, hi=4096, why="a subspace narrower than the site; the site's own width is checked against the model")
    epochs: int = num(30, lo=1, hi=1000, why="methods.md §11 trains 30 epochs; past 1000 the run would take hours")
    batch_size: int = num(20, lo=1, hi=MAX_TASK_PROMPTS, why="at most one batch of every pair")
    lr: float = num(0.1, lo=0, lo_open=True, hi=10, why="Adam on an orthogonal parametrization diverges far above 1")
    lr_end: float = num(0.01, lo=0, lo_open=True, hi=10, why="Adam on an orthogonal parametrization diverges far above 1")
    test_fraction: float = num(0.2, lo=0, hi=1, lo_open=True, hi_open=True)
    seed: int = num(0, **SEED)
    boundless: bool = False
    split_heads: tuple[str, ...] = ()
    weight: str = choice("q", WEIGHT_KINDS)

    def __post_init__(self):
        from interp.types import HeadId

        for h in self.split_heads:
            HeadId.parse(h)
        if self.site.startswith("resid") and not self.split_heads:
            raise InputError(f"--site {self.site} needs --split-heads (e.g. the name movers, --split-heads L23H3 L23H0) to split "
                             "the direction into the part their W_Q reads and the rest")
        if self.site in ("attn_out", "mlp_out"):
            raise InputError(f"--site {self.site} has no weight-defined split; use resid_* (with --split-heads) or mlp_post")

    def layer_for(self, n_layers: int) -> int:
        """The site's layer: ``layer``, or by default two thirds of the depth, where GPT-2's MLP8 of 12 sits in
        the paper (layer 20 of SmolLM2's 30)."""
        return self.layer if self.layer is not None else round(2 * n_layers / 3)

    def check(self, spec: ModelSpec) -> None:
        spec.require_causal("subspace")
        n_layers, n_heads = _layers_heads(spec)
        cfg = spec.text_config
        width = cfg.get("intermediate_size") if self.site == "mlp_post" else cfg.get("hidden_size", cfg.get("n_embd"))
        if width is not None and self.dim >= width:
            raise InputError(f"--dim {self.dim} must be below the site's width {width} (dim = width is the whole-component patch)")
        for text in self.split_heads:
            check_head(spec, "--split-heads", text, n_layers, n_heads)


@config
class WeightsConfig(Checked):
    kinds: tuple[str, ...] = WEIGHT_KINDS
    top: int = num(20, lo=1, hi=1000, why="rows of the report's table of top head pairs")
    n_tokens: int = num(1000, lo=2, hi=1_000_000, why="tokens sampled for the OV copying score; the vocabulary is smaller")
    seed: int = num(0, **SEED)

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in WEIGHT_KINDS]
        if bad or not self.kinds:
            raise InputError(f"--kinds {bad[0] if bad else '(none)'!r} unknown; use some of {', '.join(WEIGHT_KINDS)}")

    def check(self, spec: ModelSpec) -> None:
        spec.require_causal("weights")


__all__ = ["SubspaceConfig", "WeightsConfig", "CLI_SITES"]
