"""Shared pieces of the attention-statistics kernels: the result type and input validation."""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Optional

import torch

from interp.errors import DeviceMismatchError, InputError

from .edits import HeadEdit, ResolvedEdit, resolve_edit

BACKENDS = ("auto", "cpu", "triton", "reference", "flex", "flash")
ROW_STATS = ("lse", "entropy", "max_weight", "argmax")  # the per-row statistics a call may ask for (``stats=``)


@dataclass(frozen=True, eq=False)
class KernelStats:
    """Output and per-row statistics of one attention call (stats are float32).

    Shapes: ``out [batch, head_index, query_pos, d_head]`` (input dtype); ``lse``, ``entropy``,
    ``max_weight``, ``argmax`` ``[batch, head_index, query_pos]``; ``segment_mass
    [batch, head_index, query_pos, n_segments]``; ``key_mass [batch, head_index, key_pos]``.
    ``rows [batch, n_row_heads, n_row_queries, key_pos]``: the requested attention rows (``rows=`` argument).
    Rows with no visible key: out 0, lse -inf, entropy 0, max_weight 0, argmax -1, masses 0.

    Learned sink logits (``sinks``, GPT-OSS ``s_aux``) add one softmax column per head that takes mass but
    has no value. The statistics then describe the distribution the model really uses, over the visible keys
    *and* the sink column: ``lse`` is its log normaliser, ``entropy`` includes the sink term, and
    ``sink_mass [batch, head_index, query_pos]`` is the sink column's probability. ``max_weight``/``argmax``,
    segment and key masses stay over real keys (they sum to ``1 - sink_mass``). A row with no visible key
    puts all its mass on the sink: lse = the sink logit, entropy 0, sink_mass 1.
    A statistic left out of the call's ``stats=`` is None.
    """

    out: torch.Tensor
    lse: Optional[torch.Tensor]
    entropy: Optional[torch.Tensor]
    max_weight: Optional[torch.Tensor]
    argmax: Optional[torch.Tensor]
    segment_mass: Optional[torch.Tensor] = None
    key_mass: Optional[torch.Tensor] = None
    backend: str = ""  # the kernel that actually ran
    rows: Optional[torch.Tensor] = None
    sink_mass: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class Problem:
    """Validated call: shapes plus resolved edit."""

    batch: int
    n_heads: int
    n_kv: int
    q_len: int
    k_len: int
    d_head: int
    n_segments: int
    edit: ResolvedEdit
    rows: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (heads [NH], queries [B, NQ]) int64 on q.device
    window: Optional[int] = None  # sliding window: query at p sees keys p - window < k <= p
    sinks: Optional[torch.Tensor] = None  # [head_index] learned sink logits, float64 on q.device

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv

    @property
    def offset(self) -> int:
        return self.k_len - self.q_len


class TensorMemo:
    """Values derived from a tensor, kept while that very tensor lives unchanged (same object, same in-place
    version). A model forward passes one segments tensor to every layer: checking and classifying it once
    instead of per layer removes a host-device sync and several launches per layer on a GPU."""

    def __init__(self, limit: int = 32):
        self.limit = limit
        self._memo: dict[int, tuple] = {}

    def get(self, t: torch.Tensor, make):
        hit = self._memo.get(id(t))
        if hit is not None and hit[0]() is t and hit[1] == t._version:
            return hit[2]
        if len(self._memo) > self.limit:
            self._memo.clear()
        value = make(t)  # an exception leaves nothing memoized
        self._memo[id(t)] = (weakref.ref(t), t._version, value)
        return value


def _check_segments(segments: torch.Tensor) -> bool:
    if not bool(((segments == 0) | (segments == 1)).all()):
        raise InputError("segments must contain only 0/1 indicators; threshold or round them first")
    return True


_CHECKED_SEGMENTS = TensorMemo()


def _desc(t: torch.Tensor) -> str:
    return f"{t.dtype} on {t.device}"


def wanted(stats) -> frozenset:
    """``stats=`` (None: all of :data:`ROW_STATS`) as a frozenset, or a one-line error naming the bad entry."""
    if stats is None:
        return frozenset(ROW_STATS)
    if isinstance(stats, str):
        stats = (stats,)
    bad = [s for s in stats if s not in ROW_STATS]
    if bad:
        raise InputError(f"unknown statistic {bad[0]!r} in stats=; choose from {', '.join(ROW_STATS)}")
    return frozenset(stats)


def validate(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    key_valid: Optional[torch.Tensor],
    segments: Optional[torch.Tensor],
    softcap: Optional[float],
    edit: Optional[HeadEdit],
    backend: str,
    causal: bool = True,
    rows=None,
    window=None,
    sinks=None,
) -> Problem:
    """Check every argument of :func:`attn_stats_kernel`; raise a one-line error on the first problem."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise InputError(
                f"{name} must be 4-D [batch, heads, pos, d_head], got shape {list(t.shape)}"
            )
    if not (q.device == k.device == v.device):
        raise DeviceMismatchError(
            f"q, k, v are on different devices ({q.device}, {k.device}, {v.device}); move them to one device with .to()"
        )
    if not q.dtype.is_floating_point or not (q.dtype == k.dtype == v.dtype):
        raise DeviceMismatchError(
            f"q, k, v need one floating dtype (got {q.dtype}, {k.dtype}, {v.dtype}); cast them with .to(dtype)"
        )
    B, H, Q, D = q.shape
    Bk, KV, K, Dk = k.shape
    if Bk != B or tuple(v.shape[:3]) != (B, KV, K):
        raise InputError(
            f"k {list(k.shape)} and v {list(v.shape)} must be [batch={B}, kv_head, key_pos, d_head] with equal kv_head and key_pos"
        )
    if Dk != D or v.shape[3] != D:
        raise InputError(f"q, k, v must share d_head (got {D}, {Dk}, {v.shape[3]}); pad or project them to one size")
    if min(B, H, Q, D, KV, K) == 0:
        raise InputError(f"empty input: q {list(q.shape)}, k {list(k.shape)}; every dimension must be >= 1")
    if H % KV != 0:
        raise InputError(f"head_index {H} is not divisible by kv_head {KV}; pass K/V with a kv_head count that divides it")
    if K < Q:
        raise InputError(f"key_pos {K} < query_pos {Q}; pass keys for every query position (key_pos >= query_pos)")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale):
        raise InputError(f"scale must be a finite number, got {scale!r}")
    if softcap is not None:
        if not isinstance(softcap, (int, float)) or isinstance(softcap, bool) or not (math.isfinite(softcap) and softcap > 0):
            raise InputError(f"softcap must be None or a positive finite number, got {softcap!r}")
    if key_valid is not None:
        if not isinstance(key_valid, torch.Tensor) or key_valid.dtype != torch.bool:
            raise InputError("key_valid must be a bool tensor [batch, key_pos]; build it with attention_mask.bool()")
        if tuple(key_valid.shape) != (B, K):
            raise InputError(f"key_valid has shape {list(key_valid.shape)} but must be [batch={B}, key_pos={K}]")
        if key_valid.device != q.device:
            raise DeviceMismatchError(f"key_valid is on {key_valid.device} but q is on {q.device}; move it with .to(q.device)")
    S = 0
    if segments is not None:
        if not isinstance(segments, torch.Tensor) or not segments.dtype.is_floating_point:
            raise InputError("segments must be a float tensor [batch, n_segments, key_pos] of 0/1 indicators")
        if segments.dim() != 3 or segments.shape[0] != B or segments.shape[2] != K:
            raise InputError(
                f"segments has shape {list(segments.shape)} but must be [batch={B}, n_segments, key_pos={K}]"
            )
        if segments.device != q.device:
            raise DeviceMismatchError(f"segments is on {segments.device} but q is on {q.device}; move it with .to(q.device)")
        _CHECKED_SEGMENTS.get(segments, _check_segments)
        S = segments.shape[1]
    window = _window(window, causal, K)
    resolved = resolve_edit(edit, B, H, S, q_len=Q, k_len=K, causal=causal, key_valid=key_valid, window=window)
    sinks = _sinks(sinks, H, q.device)
    if sinks is not None and resolved.needs_probabilities:
        raise InputError(
            "probability edits (redistribute, uniform/identity mix, set_rows) are not defined for heads with learned sink logits; use segment scaling or out_scale"
        )
    return Problem(
        batch=B, n_heads=H, n_kv=KV, q_len=Q, k_len=K, d_head=D, n_segments=S, edit=resolved,
        rows=_rows(rows, B, H, Q, q.device), window=window, sinks=sinks,
    )


def _window(window, causal: bool, K: int) -> Optional[int]:
    """A sliding window as an int >= 1, or None when it masks nothing (no shorter than the keys)."""
    if window is None:
        return None
    if isinstance(window, torch.Tensor) and window.numel() == 1:
        window = window.item()
    if isinstance(window, bool) or not isinstance(window, int) and not (isinstance(window, float) and window.is_integer()):
        raise InputError(f"sliding_window must be a positive integer, got {window!r}")
    if int(window) < 1:
        raise InputError(f"sliding_window {int(window)} would cut every key of every row; it must be at least 1")
    if not causal:
        raise InputError("a sliding window on non-causal attention is not supported; use attention_stats(..., backend='eager')")
    return None if int(window) >= K else int(window)


def _sinks(sinks, H: int, device) -> Optional[torch.Tensor]:
    if sinks is None:
        return None
    if not isinstance(sinks, torch.Tensor) or not sinks.dtype.is_floating_point or tuple(sinks.shape) != (H,):
        shape = list(sinks.shape) if isinstance(sinks, torch.Tensor) else type(sinks).__name__
        raise InputError(f"sink logits (s_aux) must be a float tensor [head_index={H}], got {shape}")
    if sinks.device != device:
        raise DeviceMismatchError(f"sink logits are on {sinks.device} but q is on {device}; move them with .to(q.device)")
    sinks = sinks.detach().to(torch.float64)
    if not bool(torch.isfinite(sinks).all()):
        raise InputError("sink logits (s_aux) must be finite")
    return sinks


def _rows(rows, B: int, H: int, Q: int, device) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """``rows=(heads, queries)``: query-head indices ``[NH]`` and per-row query indices ``[batch, NQ]``
    (``[NQ]`` broadcasts) into this call's query axis."""
    if rows is None:
        return None
    try:
        heads, queries = (torch.as_tensor(t).long().to(device) for t in rows)
    except (TypeError, ValueError, RuntimeError):
        raise InputError("rows must be (heads [n_heads], queries [batch, n_queries]) of integer indices") from None
    if heads.dim() != 1 or queries.dim() not in (1, 2):
        raise InputError(f"rows must be (heads [n], queries [n_q] or [batch, n_q]); got shapes {list(heads.shape)}, {list(queries.shape)}")
    queries = queries.expand(B, -1) if queries.dim() == 1 else queries
    if queries.shape[0] != B:
        raise InputError(f"rows queries have {queries.shape[0]} batch rows but the batch has {B}")
    if bool(((heads < 0) | (heads >= H)).any()) or bool(((queries < 0) | (queries >= Q)).any()):
        raise InputError(f"rows name heads outside 0..{H - 1} or queries outside 0..{Q - 1}")
    return heads, queries


def query_valid(key_valid: Optional[torch.Tensor], q_len: int, k_len: int) -> Optional[torch.Tensor]:
    """``[batch, query_pos]`` bool: is the query's own absolute position a valid (non-padding) key."""
    if key_valid is None:
        return None
    return key_valid[:, k_len - q_len :]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32
