"""Attention edits as data: frozen, printable values that turn into kernel parameters only when applied.

Each edit names query heads (``HeadId``) and a strength; ``compile_edits`` groups them by layer into the
per-head parameters of the fused attention path (``interp.attnstats.kernels.HeadEdit``). The identity value of
every edit (factor 1, strength 0) changes nothing, and an empty edit list is the identity.

Per-row edits: ``compile_edits(shared, ..., row_edits=[[...], [...]])`` (one edit list per batch row) gives
``[batch, head_index]`` parameters, so one forward pass runs a different edit in every row, e.g. a batched head
sweep that repeats one prompt per head: ``attention_stats(model, [p] * n, row_edits=[[ScaleHeadOutput(h, 0.0)]
for h in heads])``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from interp.errors import InputError, UnknownNameError
from interp.types import HeadId, finite_scalar


def _head_and_scalar(value, name: str) -> None:
    """A query ``HeadId`` and a finite number in ``name``: checked when an edit is built."""
    owner = type(value).__name__
    if not isinstance(value.head, HeadId):
        raise InputError(f"{owner} needs a HeadId (a query head, e.g. HeadId(9, 6)), got {value.head!r}")
    object.__setattr__(value, name, finite_scalar(owner, name, getattr(value, name)))


@dataclass(frozen=True)
class ScaleHeadOutput:
    """Multiply a head's output (its ``z``) by ``factor``; 0 is zero-ablation."""

    head: HeadId
    factor: float = 1.0

    def __post_init__(self):
        _head_and_scalar(self, "factor")


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

    def __post_init__(self):
        _head_and_scalar(self, "factor")


@dataclass(frozen=True)
class MixUniform:
    """``A' = (1-s)·A + s·uniform over visible keys`` (s=1 is the retrieval-head masking of Wu et al.)."""

    head: HeadId
    strength: float = 1.0

    def __post_init__(self):
        _head_and_scalar(self, "strength")


@dataclass(frozen=True)
class MixIdentity:
    """``A' = (1-s)·A + s·I``: attend to oneself (SoftPAG; s=1 is PAG)."""

    head: HeadId
    strength: float = 1.0

    def __post_init__(self):
        _head_and_scalar(self, "strength")


@dataclass(frozen=True)
class RetrievalMask:
    """Wu et al.'s masking: make each listed head's attention uniform over the visible keys (not zero
    ablation; the head outputs the mean of the values). Expands to ``MixUniform(h, 1.0)`` per head."""

    heads: tuple[HeadId, ...]

    def expand(self) -> list["MixUniform"]:
        return [MixUniform(h, 1.0) for h in self.heads]


@dataclass(frozen=True)
class SetPattern:
    """Overwrite a head's attention rows: at each of ``query_positions`` the row becomes ``weights`` over keys.

    Positions count from the row's first real token (as segment spans do). ``weights`` is one row
    ``[n_keys]`` used at every listed query, or one row per query ``[len(query_positions), n_keys]``; keys
    past ``n_keys`` get 0. Each row must be >= 0, sum to 1 and put no weight on keys its query cannot see
    (later keys in a causal model, padding). In the fused path it is applied last, after the other edits, and
    is exact: the written row sums to 1."""

    head: HeadId
    query_positions: tuple[int, ...]
    weights: tuple

    def __post_init__(self):
        qs = (self.query_positions,) if isinstance(self.query_positions, int) else tuple(self.query_positions)
        if not qs or not all(isinstance(q, int) and q >= 0 for q in qs):
            raise InputError(f"SetPattern query_positions must be non-negative ints, got {self.query_positions!r}")
        w = torch.as_tensor(self.weights, dtype=torch.float64)
        w = w.view(1, -1).expand(len(qs), -1) if w.dim() == 1 else w
        if w.dim() != 2 or w.shape[0] != len(qs) or w.shape[1] == 0:
            raise InputError(f"SetPattern weights must be [n_keys] or [{len(qs)}, n_keys], got shape {list(w.shape)}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise InputError("SetPattern weights must be finite and >= 0")
        sums = w.sum(1)
        bad = (sums - 1).abs() > 1e-4
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise InputError(f"SetPattern weights for query {qs[i]} sum to {float(sums[i]):.6g}, not 1; normalise them")
        for q, row in zip(qs, w):
            if bool((row[q + 1:] > 0).any()):
                raise InputError(f"SetPattern weights for query {q} put mass on later keys (> {q}); a causal query cannot see them")
        object.__setattr__(self, "query_positions", qs)
        object.__setattr__(self, "weights", tuple(tuple(float(x) for x in row) for row in w))


Edit = ScaleHeadOutput | ScaleSegment | MixUniform | MixIdentity | RetrievalMask | SetPattern
_MODES = {"renormalize": "segment_scale", "redistribute": "segment_redistribute"}
_ONES = ("out_scale", "segment_scale", "segment_redistribute")


def compile_edits(edits: Sequence[Edit], n_layers: int, n_heads: int, segment_names: Sequence[str], *,
                  row_edits: Sequence[Sequence[Edit]] | None = None, attention_mask: torch.Tensor | None = None):
    """``{layer: HeadEdit}`` for the layers that any edit touches.

    ``edits`` apply to every batch row. ``row_edits`` (one edit list per batch row) make every parameter of a
    touched layer per row (``[batch, head_index]``); without it parameters are per head (``[head_index]``).
    ``attention_mask [batch pos]`` places ``SetPattern`` positions (counted from each row's first real token)
    in padded-batch coordinates; without it positions are taken as they are."""
    from interp.attnstats.kernels import HeadEdit

    n_rows = None if row_edits is None else len(row_edits)
    if attention_mask is not None and n_rows is not None and attention_mask.shape[0] != n_rows:
        raise InputError(f"row_edits has {n_rows} lists but the batch has {attention_mask.shape[0]} rows; give one edit list per row")
    acc = _Params(n_heads, n_layers, list(segment_names), 1 if n_rows is None else n_rows, attention_mask)
    for e in _flat(edits):
        acc.add(e, None)
    for b, row in enumerate(row_edits or ()):
        for e in _flat(row):
            acc.add(e, b)
    out = {}
    for layer, p in acc.params.items():
        if n_rows is None:
            p = {k: (v[0] if isinstance(v, torch.Tensor) else v) for k, v in p.items()}
        out[layer] = HeadEdit(**p)
    return out


def _flat(edits: Sequence[Edit]) -> list:
    return [x for e in check_edit_list(edits) for x in (e.expand() if hasattr(e, "expand") else [e])]


class _Params:
    """Accumulates edit parameters per layer as ``[rows, head_index(, n_segments)]`` tensors."""

    def __init__(self, n_heads, n_layers, segment_names, n_rows, attention_mask):
        self.H, self.L, self.segs, self.R = n_heads, n_layers, segment_names, n_rows
        self.mask = None if attention_mask is None else attention_mask.bool().cpu()
        self.params: dict[int, dict] = {}
        self.patterns: dict[int, list] = {}

    def add(self, e, row: int | None) -> None:
        if not hasattr(e, "head"):
            raise InputError(f"{e!r} is not an attention edit; use ScaleHeadOutput, ScaleSegment, MixUniform, MixIdentity or SetPattern")
        head = e.head if isinstance(e.head, HeadId) else HeadId.parse(str(e.head))
        if not (0 <= head.layer < self.L and 0 <= head.head < self.H):
            raise InputError(f"edit {e} targets {head}, outside the model's {self.L} layers × {self.H} heads")
        p = self.params.setdefault(head.layer, {})
        rows = slice(None) if row is None else row
        if isinstance(e, ScaleHeadOutput):
            self._t(p, "out_scale")[rows, head.head] *= float(e.factor)
        elif isinstance(e, ScaleSegment):
            if e.mode not in _MODES:
                raise InputError(f"ScaleSegment mode {e.mode!r} unknown; use 'renormalize' or 'redistribute'")
            if e.segment not in self.segs:
                raise UnknownNameError(f"edit names segment {e.segment!r}, but the segments are {self.segs}; pass it in segments=")
            if not (e.factor >= 0 and math.isfinite(e.factor)):
                raise InputError(f"ScaleSegment factor must be >= 0, got {e.factor}")
            self._t(p, _MODES[e.mode])[rows, head.head, self.segs.index(e.segment)] *= float(e.factor)
        elif isinstance(e, (MixUniform, MixIdentity)):
            if not 0.0 <= e.strength <= 1.0:
                raise InputError(f"{type(e).__name__} strength must lie in [0, 1], got {e.strength}")
            self._t(p, "uniform_mix" if isinstance(e, MixUniform) else "identity_mix")[rows, head.head] = float(e.strength)
        elif isinstance(e, SetPattern):
            self._pattern(p, e, head, row)
        else:
            raise InputError(f"{e!r} is not an attention edit; use ScaleHeadOutput, ScaleSegment, MixUniform, MixIdentity or SetPattern")

    def _t(self, p: dict, name: str) -> torch.Tensor:
        if name not in p:
            shape = (self.R, self.H, len(self.segs)) if name.startswith("segment") else (self.R, self.H)
            p[name] = torch.full(shape, 1.0 if name in _ONES else 0.0, dtype=torch.float64)
        return p[name]

    def _pattern(self, p: dict, e: SetPattern, head: HeadId, row: int | None) -> None:
        from interp.attnstats.kernels.edits import RowOverride

        w = torch.tensor(e.weights, dtype=torch.float64)  # [n_q, n_keys]
        rows = [row] if row is not None else (list(range(self.mask.shape[0])) if self.mask is not None else [-1])
        width = self.mask.shape[1] if self.mask is not None else w.shape[1]
        entries = []
        for b in rows:
            start, length = 0, width
            if self.mask is not None:
                start, length = int(self.mask[b].float().argmax()), int(self.mask[b].sum())
            if max(e.query_positions) >= length or w.shape[1] > length:
                raise InputError(f"SetPattern for {head}: query positions {list(e.query_positions)} / {w.shape[1]} key weights exceed row {max(b, 0)}'s {length} tokens")
            wb = torch.zeros(len(e.query_positions), width, dtype=torch.float64)
            wb[:, start:start + w.shape[1]] = w
            q = torch.tensor(e.query_positions) + start
            entries.append(RowOverride(torch.full_like(q, b), torch.full_like(q, head.head), q, wb))
        old = p.get("set_rows")
        if old is not None:
            entries.insert(0, old)
        p["set_rows"] = RowOverride(*(torch.cat([getattr(r, f) for r in entries]) for f in ("batch", "head", "query", "weights")))


def check_edit_list(edits) -> list:
    """``edits`` as a list of edit values, or InputError saying how to write them."""
    if isinstance(edits, (str, bytes)) or not isinstance(edits, (list, tuple)):
        raise InputError(f"edits must be a list of edit values, e.g. [ScaleHeadOutput(HeadId.parse('L1H0'), 0.0)], "
                         f"not a {type(edits).__name__}")
    for e in edits:
        if not hasattr(e, "head") and not hasattr(e, "expand"):
            raise InputError(f"{e!r} is not an edit value; pass edits such as ScaleHeadOutput(HeadId(1, 0), 0.0) or MixUniform(HeadId(1, 0))")
    return list(edits)


__all__ = ["ScaleHeadOutput", "ScaleSegment", "MixUniform", "MixIdentity", "RetrievalMask", "SetPattern", "Edit",
           "compile_edits"]
