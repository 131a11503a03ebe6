"""Attention edits as data: frozen, printable values that turn into kernel parameters only when applied.

Each edit names query heads (``HeadId``) and a strength; ``compile_edits`` groups them by layer into the
per-head parameters of the fused attention path (``interp.attnstats.kernels.HeadEdit``). The identity value of
every edit (factor 1, strength 0) changes nothing, and an empty edit list is the identity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from interp.errors import InputError, UnknownNameError
from interp.types import HeadId


@dataclass(frozen=True)
class ScaleHeadOutput:
    """Multiply a head's output (its ``z``) by ``factor``; 0 is zero-ablation."""

    head: HeadId
    factor: float = 1.0


@dataclass(frozen=True)
class ScaleSegment:
    """Scale the attention a head gives to a named key segment.

    ``mode="renormalize"`` (ZeroTuning): multiply by γ and renormalize the row (a logit bias of log γ).
    ``mode="redistribute"`` (ACT): the segment's mass becomes exactly γ·m and the freed mass goes to the
    other keys in proportion to their attention."""

    head: HeadId
    segment: str
    factor: float = 1.0
    mode: str = "renormalize"


@dataclass(frozen=True)
class MixUniform:
    """``A' = (1-s)·A + s·uniform over visible keys`` (s=1 is the retrieval-head masking of Wu et al.)."""

    head: HeadId
    strength: float = 1.0


@dataclass(frozen=True)
class MixIdentity:
    """``A' = (1-s)·A + s·I``: attend to oneself (SoftPAG; s=1 is PAG)."""

    head: HeadId
    strength: float = 1.0


@dataclass(frozen=True)
class RetrievalMask:
    """Wu et al.'s masking: make each listed head's attention uniform over the visible keys (not zero
    ablation; the head outputs the mean of the values). Expands to ``MixUniform(h, 1.0)`` per head."""

    heads: tuple[HeadId, ...]

    def expand(self) -> list["MixUniform"]:
        return [MixUniform(h, 1.0) for h in self.heads]


Edit = ScaleHeadOutput | ScaleSegment | MixUniform | MixIdentity | RetrievalMask
_MODES = {"renormalize": "segment_scale", "redistribute": "segment_redistribute"}


def compile_edits(edits: Sequence[Edit], n_layers: int, n_heads: int, segment_names: Sequence[str]):
    """``{layer: HeadEdit}`` for the layers that any edit touches."""
    from interp.attnstats.kernels import HeadEdit

    params: dict[int, dict[str, torch.Tensor]] = {}
    edits = [x for e in check_edit_list(edits) for x in (e.expand() if hasattr(e, "expand") else [e])]
    for e in edits:
        head = e.head if isinstance(e.head, HeadId) else HeadId.parse(str(e.head))
        if not (0 <= head.layer < n_layers and 0 <= head.head < n_heads):
            raise InputError(f"edit {e} targets {head}, outside the model's {n_layers} layers × {n_heads} heads")
        p = params.setdefault(head.layer, {})
        if isinstance(e, ScaleHeadOutput):
            _vec(p, "out_scale", n_heads)[head.head] *= float(e.factor)
        elif isinstance(e, ScaleSegment):
            if e.mode not in _MODES:
                raise InputError(f"ScaleSegment mode {e.mode!r} unknown; use 'renormalize' or 'redistribute'")
            if e.segment not in segment_names:
                raise UnknownNameError(f"edit names segment {e.segment!r}, but the segments are {list(segment_names)}; pass it in segments=")
            if e.factor < 0:
                raise InputError(f"ScaleSegment factor must be >= 0, got {e.factor}")
            name = _MODES[e.mode]
            p.setdefault(name, torch.ones(n_heads, len(segment_names), dtype=torch.float64))[head.head, list(segment_names).index(e.segment)] *= float(e.factor)
        elif isinstance(e, (MixUniform, MixIdentity)):
            if not 0.0 <= e.strength <= 1.0:
                raise InputError(f"{type(e).__name__} strength must lie in [0, 1], got {e.strength}")
            name = "uniform_mix" if isinstance(e, MixUniform) else "identity_mix"
            p.setdefault(name, torch.zeros(n_heads, dtype=torch.float64))[head.head] = float(e.strength)
        else:
            raise InputError(f"{e!r} is not an attention edit; use ScaleHeadOutput, ScaleSegment, MixUniform or MixIdentity")
    return {layer: HeadEdit(**p) for layer, p in params.items()}


def check_edit_list(edits) -> list:
    """``edits`` as a list of edit values, or InputError saying how to write them."""
    if isinstance(edits, (str, bytes)) or not isinstance(edits, (list, tuple)):
        raise InputError(f"edits must be a list of edit values, e.g. [ScaleHeadOutput(HeadId.parse('L1H0'), 0.0)], "
                         f"not a {type(edits).__name__}")
    for e in edits:
        if not hasattr(e, "head") and not hasattr(e, "expand"):
            raise InputError(f"{e!r} is not an edit value; pass edits such as ScaleHeadOutput(HeadId(1, 0), 0.0) or MixUniform(HeadId(1, 0))")
    return list(edits)


def _vec(p: dict, name: str, n: int) -> torch.Tensor:
    return p.setdefault(name, torch.ones(n, dtype=torch.float64))


__all__ = ["ScaleHeadOutput", "ScaleSegment", "MixUniform", "MixIdentity", "RetrievalMask", "Edit", "compile_edits"]
