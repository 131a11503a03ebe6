"""Per-head edits of the attention pattern, applied inside the attention-statistics kernels.

Order of application (the statistics describe the final row A'):

1. ``segment_scale[h, s] = γ >= 0`` -- multiply the attention on segment ``s`` by γ and renormalise
   (a logit bias of ``log γ`` on those keys; γ = 0 removes them; ZeroTuning).
2. ``segment_redistribute[h, s] = β >= 0`` -- the mass ``m`` on segment ``s`` becomes ``β·m`` (each
   segment entry ×β) and the freed mass ``(1-β)m`` goes to the non-segment keys in proportion to their
   attention (each entry ×(1-βm)/(1-m)). A row with ``m == 1`` (no non-segment mass) is unchanged. If
   ``β·m > 1`` the segment is capped at the whole row (non-segment entries become 0). Segments are
   processed in index order.
3. ``uniform_mix[h] = u``: ``A' = (1-u)A + u·Uniform(visible keys)``.
4. ``identity_mix[h] = u``: ``A' = (1-u)A + u·I``, ``I`` putting all mass on the key at the query's own
   absolute position. Query rows that are padding themselves (``key_valid`` False at the query's own
   position) are left unmixed: their own key is invisible and their statistics are not used downstream.

Finally ``out_scale[h]`` multiplies head ``h``'s output.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional, Sequence, Union

import torch

from interp.errors import InputError

ParamLike = Union[torch.Tensor, Sequence[float], Sequence[Sequence[float]], float, None]

_IDENTITY = {
    "out_scale": 1.0,
    "segment_scale": 1.0,
    "segment_redistribute": 1.0,
    "uniform_mix": 0.0,
    "identity_mix": 0.0,
}


@dataclass(frozen=True, eq=False)
class HeadEdit:
    """Per-query-head edit parameters; ``None`` means identity for that parameter.

    ``out_scale``, ``uniform_mix`` and ``identity_mix`` have shape ``[head_index]``;
    ``segment_scale`` and ``segment_redistribute`` have shape ``[head_index, n_segments]``.
    Tensors, (nested) sequences and plain scalars (broadcast to every head/segment) are accepted.
    """

    out_scale: ParamLike = None
    segment_scale: ParamLike = None
    segment_redistribute: ParamLike = None
    uniform_mix: ParamLike = None
    identity_mix: ParamLike = None

    def is_identity(self) -> bool:
        """True when every parameter is None or equal to its identity value everywhere."""
        for f in fields(self):
            val = getattr(self, f.name)
            if val is None:
                continue
            t = torch.as_tensor(val, dtype=torch.float64)
            if t.numel() and not bool(torch.all(t == _IDENTITY[f.name])):
                return False
        return True


@dataclass(frozen=True, eq=False)
class ResolvedEdit:
    """Validated edit parameters as float64 CPU tensors; only non-identity parameters are kept."""

    out_scale: Optional[torch.Tensor] = None  # [H]
    segment_scale: Optional[torch.Tensor] = None  # [H, S]
    segment_redistribute: Optional[torch.Tensor] = None  # [H, S]
    uniform_mix: Optional[torch.Tensor] = None  # [H]
    identity_mix: Optional[torch.Tensor] = None  # [H]

    @property
    def needs_probabilities(self) -> bool:
        """True when an edit must act on exact probabilities (not expressible as a logit bias)."""
        return (
            self.segment_redistribute is not None
            or self.uniform_mix is not None
            or self.identity_mix is not None
        )

    def log_gamma(self) -> Optional[torch.Tensor]:
        """``log γ`` as float64 ``[H, S]`` with γ = 0 mapped to -inf (None when no segment_scale)."""
        if self.segment_scale is None:
            return None
        return torch.log(self.segment_scale)


def _as_param(name: str, val: Any, shape: tuple[int, ...]) -> torch.Tensor:
    try:
        t = torch.as_tensor(val.detach().cpu() if isinstance(val, torch.Tensor) else val, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(
            f"HeadEdit.{name} must be a number, sequence or tensor of shape {list(shape)}; "
            f"got {type(val).__name__}"
        ) from None
    if t.dim() == 0:
        t = t.expand(shape).clone()
    if tuple(t.shape) != shape:
        raise InputError(
            f"HeadEdit.{name} has shape {list(t.shape)} but must be {list(shape)} "
            f"(one value per query head{' and segment' if len(shape) == 2 else ''})"
        )
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"HeadEdit.{name} contains NaN or inf; pass finite values")
    return t


def resolve_edit(edit: Optional[HeadEdit], n_heads: int, n_segments: int) -> ResolvedEdit:
    """Validate ``edit`` against the head/segment counts and drop identity parameters."""
    if edit is None:
        return ResolvedEdit()
    if not isinstance(edit, HeadEdit):
        raise InputError(f"edit must be a HeadEdit or None, got {type(edit).__name__}")
    out: dict[str, torch.Tensor] = {}
    for f in fields(edit):
        val = getattr(edit, f.name)
        if val is None:
            continue
        if f.name in ("segment_scale", "segment_redistribute"):
            if n_segments == 0:
                raise InputError(f"HeadEdit.{f.name} needs segments; pass segments=[batch, n_segments, key_pos]")
            shape: tuple[int, ...] = (n_heads, n_segments)
        else:
            shape = (n_heads,)
        t = _as_param(f.name, val, shape)
        if f.name in ("segment_scale", "segment_redistribute") and bool((t < 0).any()):
            raise InputError(f"HeadEdit.{f.name} must be >= 0 (got min {t.min().item():g}); use 0 to remove mass")
        if f.name in ("uniform_mix", "identity_mix") and bool(((t < 0) | (t > 1)).any()):
            raise InputError(f"HeadEdit.{f.name} must lie in [0, 1] (got {t.min().item():g}..{t.max().item():g})")
        if bool(torch.all(t == _IDENTITY[f.name])):
            continue
        out[f.name] = t
    return ResolvedEdit(**out)


__all__ = ["HeadEdit", "ResolvedEdit", "resolve_edit"]
