"""Core value types shared by every stage, and the one place where hook names are spelled.

Dimension words follow TransformerLens: ``batch pos head_index d_head d_model``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from interp.errors import InputError, UnknownNameError

# Patching directions (activation and attribution patching, `interp patch --direction`):
# "denoising" patches clean activations into the corrupted run (TransformerLens's get_act_patch_* convention),
# "noising" patches corrupted activations into the clean run (AtP's c(n), path patching).
DIRECTIONS = ("denoising", "noising")


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise InputError(f"direction {direction!r} unknown; use 'denoising' (clean into the corrupted run) or "
                         "'noising' (corrupted into the clean run)")
    return direction


@dataclass(frozen=True, order=True)
class HeadId:
    """A query head: ``HeadId(9, 6)`` prints as ``"L9H6"``. For GQA models it names a *query* head;
    its key/value group is ``head // (n_heads // n_kv_heads)``."""

    layer: int
    head: int

    def __post_init__(self):
        _index(self, "HeadId")

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"

    @classmethod
    def parse(cls, text: str) -> "HeadId":
        m = re.fullmatch(r"\s*L(\d+)H(\d+)\s*", str(text), flags=re.IGNORECASE) or re.fullmatch(
            r"\s*(\d+)[.\-](\d+)\s*", str(text)
        )
        if not m:
            raise InputError(f"cannot parse head {text!r}: write it as 'L9H6' (or '9.6' / '9-6')")
        return cls(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True, order=True)
class KVGroup:
    """A key/value group of a GQA layer: ``KVGroup(9, 2)`` prints as ``"L9G2"``. The sites ``k`` and ``v``
    are indexed by it; query heads ``g·r … g·r + r − 1`` (``r = n_heads // n_kv_heads``) read it."""

    layer: int
    group: int

    def __str__(self) -> str:
        return f"L{self.layer}G{self.group}"

    @classmethod
    def parse(cls, text: str) -> "KVGroup":
        m = re.fullmatch(r"\s*L(\d+)G(\d+)\s*", str(text), flags=re.IGNORECASE)
        if not m:
            raise InputError(f"cannot parse KV group {text!r}: write it as 'L9G2'")
        return cls(int(m.group(1)), int(m.group(2)))


def kv_group_of(head: HeadId, n_heads: int, n_kv_heads: int) -> KVGroup:
    """The KV group a query head reads."""
    return KVGroup(head.layer, head.head // (n_heads // n_kv_heads))


def query_heads_of(group: KVGroup, n_heads: int, n_kv_heads: int) -> tuple[HeadId, ...]:
    """The query heads that read a KV group."""
    r = n_heads // n_kv_heads
    return tuple(HeadId(group.layer, group.group * r + i) for i in range(r))


@dataclass(frozen=True)
class Site:
    """A capturable activation. ``per_head`` sites carry a head axis; ``kv`` ones index KV heads."""

    name: str
    hook: str  # TransformerLens hook-name template; "{l}" is the layer
    shape: str  # dimension words of the captured tensor
    per_head: bool = False
    kv: bool = False
    derived: bool = False  # computed from another hook rather than read directly


# The ONE table of hook names. Everything else asks `site(name)` or `hook_name(name, layer)`.
SITES: dict[str, Site] = {
    s.name: s
    for s in [
        Site("resid_pre", "blocks.{l}.hook_resid_pre", "batch pos d_model"),
        Site("resid_mid", "blocks.{l}.hook_resid_mid", "batch pos d_model"),
        Site("resid_post", "blocks.{l}.hook_resid_post", "batch pos d_model"),
        Site("attn_out", "blocks.{l}.hook_attn_out", "batch pos d_model"),
        Site("mlp_out", "blocks.{l}.hook_mlp_out", "batch pos d_model"),
        # MLP hidden activation after the nonlinearity (gated: act(gate)·up), the input of W_out
        Site("mlp_post", "blocks.{l}.mlp.hook_post", "batch pos d_mlp"),
        Site("q", "blocks.{l}.attn.hook_q", "batch pos head_index d_head", per_head=True),
        Site("k", "blocks.{l}.attn.hook_k", "batch pos kv_head d_head", per_head=True, kv=True),
        Site("v", "blocks.{l}.attn.hook_v", "batch pos kv_head d_head", per_head=True, kv=True),
        Site("z", "blocks.{l}.attn.hook_z", "batch pos head_index d_head", per_head=True),
        Site("result", "blocks.{l}.attn.hook_z", "batch pos head_index d_model", per_head=True, derived=True),
        Site("attn_scores", "blocks.{l}.attn.hook_attn_scores", "batch head_index query_pos key_pos", per_head=True),
        Site("pattern", "blocks.{l}.attn.hook_pattern", "batch head_index query_pos key_pos", per_head=True),
    ]
}


def site(name: str) -> Site:
    try:
        return SITES[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown site {name!r}; valid sites are: {', '.join(SITES)}"
        ) from None


def hook_name(name: str, layer: int) -> str:
    return site(name).hook.format(l=layer)


def _index(value, owner: str) -> None:
    """``layer`` and ``head`` as non-negative ints (numpy and torch integers accepted), or InputError."""
    import numbers

    for name in ("layer", "head"):
        v = getattr(value, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) and not (hasattr(v, "item") and getattr(v, "ndim", 1) == 0
                                                                           and not getattr(v, "is_floating_point", lambda: True)()):
            raise InputError(f"{owner}: {name} must be an integer, got {v!r} ({type(v).__name__}); e.g. {owner}(9, 6)")
        if int(v) < 0:
            raise InputError(f"{owner}: {name} must be >= 0, got {int(v)}")
        object.__setattr__(value, name, int(v))


def finite_scalar(owner: str, name: str, value) -> float:
    """``value`` as a float, or InputError for a non-number, NaN or ±inf (checked when a value is built, so a
    NaN never reaches the logits)."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_scalar_tensor(value):
        raise InputError(f"{owner}: {name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{owner}: {name} must be a finite number, got {v}")
    return v


def finite_tensor(owner: str, name: str, tensor):
    """``tensor`` unchanged, or InputError when it holds NaN or ±inf (a steering vector fit on degenerate data)."""
    import torch

    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        n = int((~torch.isfinite(tensor)).sum())
        raise InputError(f"{owner}: {name} holds {n} non-finite values (NaN or inf); recompute it from data that varies")
    return tensor


def _is_scalar_tensor(value) -> bool:
    return hasattr(value, "numel") and hasattr(value, "item") and value.numel() == 1
