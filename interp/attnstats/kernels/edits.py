"""Per-head, per-row edits of the attention pattern, applied inside the attention-statistics kernels.

Every parameter is given per query head (``[head_index]``, ``[head_index, n_segments]``) or per batch row and
query head (``[batch, head_index]``, ``[batch, head_index, n_segments]``), so one batch can carry a different
edit in each row (batched head sweeps). Per-head values broadcast over the batch.

Order of application (the statistics describe the final row A'):

1. ``segment_scale[b, h, s] = γ >= 0`` -- multiply the attention on segment ``s`` by γ and renormalise
   (a logit bias of ``log γ`` on those keys; γ = 0 removes them; ZeroTuning).
2. ``segment_redistribute[b, h, s] = β >= 0`` -- the mass ``m`` on segment ``s`` becomes ``β·m`` (each
   segment entry ×β) and the freed mass ``(1-β)m`` goes to the non-segment keys in proportion to their
   attention (each entry ×(1-βm)/(1-m)). A row with ``m == 1`` (non-segment mass below ``ACT_EMPTY`` = 1e-20,
   where float32 and float64 would disagree on whether any is left) is unchanged. If
   ``β·m > 1`` the segment is capped at the whole row (non-segment entries become 0). Segments are
   processed in index order.
3. ``uniform_mix[b, h] = u``: ``A' = (1-u)A + u·Uniform(visible keys)``.
4. ``identity_mix[b, h] = u``: ``A' = (1-u)A + u·I``, ``I`` putting all mass on the key at the query's own
   absolute position. Query rows that are padding themselves (``key_valid`` False at the query's own
   position) are left unmixed: their own key is invisible and their statistics are not used downstream.
5. ``set_rows`` (:class:`RowOverride`): chosen query rows of chosen heads become the given weights over keys,
   exactly (``SetPattern``). The weights must be >= 0, zero on keys the query cannot see (causal future,
   padding) and sum to 1; they are renormalised in float64 so the written row sums to 1.

Finally ``out_scale[b, h]`` multiplies head ``h``'s output. ``lse`` always describes the scores after step 1
(the probability edits 2-5 do not change it).
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
_SEGMENT_PARAMS = ("segment_scale", "segment_redistribute")
SUM_TOL = 1e-4  # SetPattern rows must sum to 1 within this before they are renormalised
ACT_EMPTY = 1e-20  # non-segment mass at or below this counts as none (redistribute leaves the row unchanged)


@dataclass(frozen=True, eq=False)
class RowOverride:
    """Rows to overwrite: entry ``r`` sets head ``head[r]``'s attention row at absolute query position
    ``query[r]`` (a key coordinate, padding included) of batch row ``batch[r]`` (-1: every row) to
    ``weights[r]`` over key positions ``0..weights.shape[1]-1`` (keys beyond get 0)."""

    batch: torch.Tensor  # [R] int64
    head: torch.Tensor  # [R] int64
    query: torch.Tensor  # [R] int64
    weights: torch.Tensor  # [R, key_pos] float64

    def __post_init__(self):
        r = self.weights.shape[0] if self.weights.dim() == 2 else -1
        if r < 0 or not (self.batch.shape == self.head.shape == self.query.shape == (r,)):
            raise InputError(f"RowOverride needs batch/head/query of shape [R] and weights [R, key_pos]; got R={r}")


@dataclass(frozen=True, eq=False)
class HeadEdit:
    """Edit parameters for one layer; ``None`` means identity for that parameter.

    ``out_scale``, ``uniform_mix`` and ``identity_mix``: ``[head_index]`` or ``[batch, head_index]``;
    ``segment_scale`` and ``segment_redistribute``: ``[head_index, n_segments]`` or
    ``[batch, head_index, n_segments]``. Tensors, (nested) sequences and plain scalars (broadcast to every
    row/head/segment) are accepted. ``set_rows`` overwrites whole rows (:class:`RowOverride`).
    """

    out_scale: ParamLike = None
    segment_scale: ParamLike = None
    segment_redistribute: ParamLike = None
    uniform_mix: ParamLike = None
    identity_mix: ParamLike = None
    set_rows: Optional[RowOverride] = None

    def is_identity(self) -> bool:
        """True when every parameter is None or equal to its identity value everywhere."""
        if self.set_rows is not None and self.set_rows.weights.shape[0] > 0:
            return False
        for name in _IDENTITY:
            val = getattr(self, name)
            if val is None:
                continue
            t = torch.as_tensor(val, dtype=torch.float64)
            if t.numel() and not bool(torch.all(t == _IDENTITY[name])):
                return False
        return True


@dataclass(frozen=True, eq=False)
class ResolvedOverride:
    """``index [batch, head_index, query_pos]``: row of ``weights [R, key_pos]`` that replaces that attention
    row, -1 where the row is not overwritten. Built per call, in the call's query coordinates."""

    index: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True, eq=False)
class ResolvedEdit:
    """Validated edit parameters as float64 CPU tensors, always per row: ``[batch, head_index]`` or
    ``[batch, head_index, n_segments]``. Only non-identity parameters are kept."""

    out_scale: Optional[torch.Tensor] = None  # [B, H]
    segment_scale: Optional[torch.Tensor] = None  # [B, H, S]
    segment_redistribute: Optional[torch.Tensor] = None  # [B, H, S]
    uniform_mix: Optional[torch.Tensor] = None  # [B, H]
    identity_mix: Optional[torch.Tensor] = None  # [B, H]
    override: Optional[ResolvedOverride] = None

    @property
    def needs_probabilities(self) -> bool:
        """True when an edit must act on exact probabilities (not expressible as a logit bias)."""
        return (
            self.segment_redistribute is not None
            or self.uniform_mix is not None
            or self.identity_mix is not None
            or self.override is not None
        )

    def log_gamma(self) -> Optional[torch.Tensor]:
        """``log γ`` as float64 ``[B, H, S]`` with γ = 0 mapped to -inf (None when no segment_scale)."""
        if self.segment_scale is None:
            return None
        return torch.log(self.segment_scale)


def _as_param(name: str, val: Any, batch: int, n_heads: int, n_segments: int) -> torch.Tensor:
    per_head = (n_heads, n_segments) if name in _SEGMENT_PARAMS else (n_heads,)
    try:
        t = torch.as_tensor(val.detach().cpu() if isinstance(val, torch.Tensor) else val, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(
            f"HeadEdit.{name} must be a number, sequence or tensor of shape {list(per_head)}; got {type(val).__name__}"
        ) from None
    if t.dim() == 0:
        t = t.expand(per_head)
    if tuple(t.shape) == per_head:
        t = t.expand(batch, *per_head)
    if tuple(t.shape) != (batch, *per_head):
        what = "query head" + (" and segment" if name in _SEGMENT_PARAMS else "")
        raise InputError(
            f"HeadEdit.{name} has shape {list(t.shape)} but must be {list(per_head)} or {[batch, *per_head]} "
            f"(one value per {what}, optionally per batch row)"
        )
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"HeadEdit.{name} contains NaN or inf; pass finite values")
    return t.contiguous()


def _check_range(name: str, t: torch.Tensor) -> None:
    if name in _SEGMENT_PARAMS and bool((t < 0).any()):
        raise InputError(f"HeadEdit.{name} must be >= 0 (got min {t.min().item():g}); use 0 to remove mass")
    if name in ("uniform_mix", "identity_mix") and bool(((t < 0) | (t > 1)).any()):
        raise InputError(f"HeadEdit.{name} must lie in [0, 1] (got {t.min().item():g}..{t.max().item():g})")


def resolve_edit(edit: Optional[HeadEdit], batch: int, n_heads: int, n_segments: int, *, q_len: int = 0,
                 k_len: int = 0, causal: bool = True, key_valid: Optional[torch.Tensor] = None,
                 window: Optional[int] = None) -> ResolvedEdit:
    """Validate ``edit`` against the batch/head/segment counts, broadcast it per row, drop identity parameters
    and place ``set_rows`` in this call's query coordinates (``q_len`` queries ending at key ``k_len - 1``)."""
    if edit is None:
        return ResolvedEdit()
    if not isinstance(edit, HeadEdit):
        raise InputError(f"edit must be a HeadEdit or None, got {type(edit).__name__}")
    out: dict[str, Any] = {}
    for name in _IDENTITY:
        val = getattr(edit, name)
        if val is None:
            continue
        if name in _SEGMENT_PARAMS and n_segments == 0:
            raise InputError(f"HeadEdit.{name} needs segments; pass segments=[batch, n_segments, key_pos]")
        t = _as_param(name, val, batch, n_heads, n_segments)
        _check_range(name, t)
        if not bool(torch.all(t == _IDENTITY[name])):
            out[name] = t
    if edit.set_rows is not None and edit.set_rows.weights.shape[0] > 0:
        out["override"] = _resolve_override(edit.set_rows, batch, n_heads, q_len, k_len, causal, key_valid, window)
    return ResolvedEdit(**out)


def _resolve_override(ov: RowOverride, batch: int, n_heads: int, q_len: int, k_len: int, causal: bool,
                      key_valid: Optional[torch.Tensor], window: Optional[int] = None) -> Optional[ResolvedOverride]:
    b, h, qa = ov.batch.long().cpu(), ov.head.long().cpu(), ov.query.long().cpu()
    if bool(((b < -1) | (b >= batch)).any()) or bool(((h < 0) | (h >= n_heads)).any()):
        raise InputError(f"set_rows names a batch row or head outside [batch={batch}, head_index={n_heads}]")
    w = ov.weights.detach().to(torch.float64).cpu()
    if bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
        raise InputError("set_rows weights must be finite and >= 0")
    off = k_len - q_len
    inside = (qa >= off) & (qa < k_len)  # rows of queries that are in this call (decoding calls see a few)
    if not bool(inside.any()):
        return None
    rows = inside.nonzero()[:, 0]
    keep = w.shape[1] if w.shape[1] <= k_len else k_len
    if bool((w[rows, keep:] > 0).any()):
        raise InputError(f"set_rows puts weight on key positions >= {k_len}, which this call does not have")
    wk = torch.zeros(len(rows), k_len, dtype=torch.float64)
    wk[:, :keep] = w[rows, :keep]
    rb, rh, rq = b[rows], h[rows], qa[rows]
    index = torch.full((batch, n_heads, q_len), -1, dtype=torch.int64)
    all_b = torch.arange(batch)
    for r in range(len(rows)):  # few rows; a later entry for the same row wins
        index[all_b if rb[r] < 0 else rb[r], rh[r], rq[r] - off] = r
    _check_visible(wk, index, rq, causal, key_valid, window)
    wk = wk / wk.sum(1, keepdim=True).clamp_min(1e-300)
    return ResolvedOverride(index=index, weights=wk)


def _check_visible(wk: torch.Tensor, index: torch.Tensor, rq: torch.Tensor, causal: bool,
                   key_valid: Optional[torch.Tensor], window: Optional[int] = None) -> None:
    """Every written row must put all its mass on keys its query can see, and sum to 1."""
    K = wk.shape[1]
    kpos = torch.arange(K)
    for bi, hi, qi in index.ge(0).nonzero().tolist():
        r = int(index[bi, hi, qi])
        vis = torch.ones(K, dtype=torch.bool) if key_valid is None else key_valid[bi].cpu()
        if causal:
            vis = vis & (kpos <= rq[r])
        if window is not None:
            vis = vis & (kpos > rq[r] - window)
        if key_valid is not None and not bool(key_valid[bi, rq[r]]):
            raise InputError(f"SetPattern targets query position {int(rq[r])} of batch row {bi}, which is padding")
        hidden = float(wk[r][~vis].sum())
        if hidden > 0:
            raise InputError(
                f"SetPattern weights put mass {hidden:.3g} on keys that query {int(rq[r])} (batch row {bi}) cannot see "
                "(causal future, padding or outside the sliding window); give weight only to visible keys"
            )
        total = float(wk[r].sum())
        if abs(total - 1.0) > SUM_TOL:
            raise InputError(f"SetPattern weights for query {int(rq[r])} sum to {total:.6g}, not 1; normalise them")


__all__ = ["ACT_EMPTY", "HeadEdit", "RowOverride", "ResolvedEdit", "ResolvedOverride", "resolve_edit"]
