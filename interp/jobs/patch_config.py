"""Configs of ``interp patch`` and ``interp steer`` (light: checked before torch is imported or the model loads)."""
from __future__ import annotations

from interp.errors import InputError
from interp.jobs.domain import SEED, Checked, choice, config, num
from interp.models.spec import ModelSpec
from interp.types import DIRECTIONS

METHODS = ("exact", "atp", "atp*")


def check_head(spec: ModelSpec, option: str, text: str, n_layers: int | None, n_heads: int | None) -> None:
    """``text`` (a head such as ``L23H3`` or ``23.3``) names a layer and a query head the model has."""
    from interp.types import HeadId

    h = HeadId.parse(text)
    if n_layers is not None and not 0 <= h.layer < n_layers:
        raise InputError(f"{option} {text}: layer {h.layer} out of range; {spec.name!r} has {n_layers} layers (0-{n_layers - 1})")
    if n_heads is not None and not 0 <= h.head < n_heads:
        raise InputError(f"{option} {text}: head {h.head} out of range; {spec.name!r} has {n_heads} query heads (0-{n_heads - 1})")


def _causal(spec: ModelSpec, verb: str) -> None:
    if spec.kind != "causal":
        raise InputError(f"interp {verb} needs a causal language model; {spec.name!r} is {spec.kind}")


# IOI prompts come from a fixed set of templates and names; past this the same prompts repeat, and exact patching
# keeps a clean and a corrupted cache of every prompt
MAX_TASK_PROMPTS = 2000


@config
class PatchConfig(Checked):
    task: str = choice("ioi", ("ioi",))
    method: str = choice("exact", METHODS)
    by: str = choice("head", ("head", "head_pos"))
    prompts: int = num(20, lo=1, hi=MAX_TASK_PROMPTS, why="task prompts repeat past this and every prompt is patched per head")
    seed: int = num(0, **SEED)
    corruption: str = choice("abc", ("abc", "flip"))
    direction: str = choice("denoising", DIRECTIONS)

    def check(self, spec: ModelSpec) -> None:
        _causal(spec, "patch")


@config
class SteerConfig(Checked):
    prompt: str = ""
    heads: tuple[str, ...] = ()
    alpha: float = num(5.0, lo=-1000, hi=1000, why="multiples of the direction's std; beyond this the output is noise")
    max_new_tokens: int = num(20, lo=1, model="context")
    concept: str = choice("sentiment", ("sentiment",))

    def __post_init__(self):
        from interp.types import HeadId

        if not self.prompt.strip():
            raise InputError("--prompt is empty; pass non-empty text")
        if not self.heads:
            raise InputError("give at least one --heads L.H (e.g. --heads 9.6 12.3)")
        for h in self.heads:
            HeadId.parse(h)

    def check(self, spec: ModelSpec) -> None:
        _causal(spec, "steer")
        cfg = spec.text_config
        n_layers, n_heads = cfg.get("num_hidden_layers"), cfg.get("num_attention_heads")
        for text in self.heads:
            check_head(spec, "--heads", text, n_layers, n_heads)
        from interp.jobs.prompts import check_prompt_lengths

        check_prompt_lengths(spec, [self.prompt], "--prompt", extra=self.max_new_tokens, extra_what="--max-new-tokens")


__all__ = ["PatchConfig", "SteerConfig", "METHODS", "MAX_TASK_PROMPTS"]
