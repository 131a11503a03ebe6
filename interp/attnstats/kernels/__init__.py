"""Fused attention statistics: output, logsumexp, entropy, max/argmax, segment and key masses in one call.

Backends: ``reference`` (eager float64 specification), ``cpu`` (blocked, no O(n^2) memory), ``triton``
(flash-style single pass on CUDA, or on CPU tensors under ``TRITON_INTERPRET=1``), and ``flex`` / ``flash``
(:mod:`.flex`: exact identities on FlexAttention or on the SDPA flash operator with log-sum-exp; they refuse, in one
line, what they cannot give exactly, e.g. argmax). ``auto`` (:func:`choose_backend`): on CUDA, ``flex`` when it is
exact for the statistics asked, else triton when it imports, else cpu; on a CPU, cpu (eager Flex materialises every
score on a CPU, and the cpu backend's C row pass is 1.06-1.39× SDPA per layer, benchmarks/RESULTS.md).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Optional

import torch

from interp.errors import UnsupportedModelError

from ._common import BACKENDS, ROW_STATS, KernelStats, Problem, validate, wanted
from .edits import HeadEdit

__all__ = ["attn_stats_kernel", "KernelStats", "HeadEdit", "BACKENDS", "ROW_STATS", "triton_available", "choose_backend"]


def triton_available() -> bool:
    """True when triton can be imported."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # pragma: no cover - depends on the install
        return False
    return True


def _interpret_mode() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def attn_stats_kernel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    causal: bool,
    key_valid: Optional[torch.Tensor] = None,
    segments: Optional[torch.Tensor] = None,
    key_mass: bool = False,
    softcap: Optional[float] = None,
    edit: Optional[HeadEdit] = None,
    backend: str = "auto",
    rows=None,
    stats=None,
    window: Optional[int] = None,
    sinks: Optional[torch.Tensor] = None,
) -> KernelStats:
    """Attention output plus per-row statistics of the (edited) attention pattern.

    ``q [batch, head_index, query_pos, d_head]``, ``k, v [batch, kv_head, key_pos, d_head]`` with
    ``head_index % kv_head == 0`` and ``key_pos >= query_pos`` (query ``i`` sits at absolute position
    ``key_pos - query_pos + i``). See :class:`KernelStats` for the outputs and :mod:`.edits` for ``edit``.
    ``rows=(heads [n], queries [batch, n_q])`` also returns those heads' (edited) attention rows at those
    query indices, ``[batch, n, n_q, key_pos]``, without any ``n×n`` tensor. ``stats`` names the per-row
    statistics wanted (default all of ``lse, entropy, max_weight, argmax``); the others come back None.
    ``window``: sliding window (the query at absolute position ``p`` sees keys ``p - window < k <= p``; causal
    only). ``sinks [head_index]``: learned sink logits (GPT-OSS ``s_aux``), one extra softmax column per head
    with mass but no value, reported as ``sink_mass`` (see :class:`KernelStats` for how the other statistics
    include it).
    """
    want = wanted(stats)
    prob = validate(
        q, k, v, scale=scale, key_valid=key_valid, segments=segments, softcap=softcap, edit=edit, backend=backend,
        causal=bool(causal), rows=rows, window=window, sinks=sinks,
    )
    kwargs = dict(
        scale=float(scale), causal=bool(causal), key_valid=key_valid, segments=segments,
        key_mass=bool(key_mass), softcap=None if softcap is None else float(softcap),
    )
    banded = prob.window is not None or prob.sinks is not None
    if backend == "triton" and banded:  # until the GPU issue gives the triton kernel the band and the sink column
        raise UnsupportedModelError(
            "the triton kernel does not implement sliding windows or sink logits yet; use backend='cpu' (exact, also on CUDA tensors) or attention_stats(..., backend='eager')"
        )
    if backend == "auto":
        backend = choose_backend(q, prob, want, kwargs["softcap"])
    if backend in ("flex", "flash"):
        from interp.errors import InputError

        from .flex import attn_stats_flex, unsupported_reason

        reason = unsupported_reason(backend, prob, want, kwargs["softcap"], q)
        if reason is not None:
            raise InputError(reason)
        return _ran(attn_stats_flex(q, k, v, prob, engine=backend, want=want, **kwargs), backend, want)
    if backend == "triton":
        reason = None
        if not triton_available():
            reason = "triton is not importable"
        elif not q.is_cuda and not _interpret_mode():
            reason = "tensors are on CPU and TRITON_INTERPRET=1 is not set"
        if reason is None:
            from .triton_kernel import attn_stats_triton, unsupported_reason

            reason = unsupported_reason(q, prob, segments)
            if reason is None:
                return _ran(attn_stats_triton(q, k, v, prob, **kwargs), "triton", want)
        warnings.warn(f"triton attention-stats backend unavailable ({reason}); using the cpu backend", stacklevel=2)
        backend = "cpu"
    if backend == "reference":
        from .reference import attn_stats_reference

        return _ran(attn_stats_reference(q, k, v, prob, **kwargs), "reference", want)
    from .cpu import attn_stats_cpu

    return _ran(attn_stats_cpu(q, k, v, prob, **kwargs), "cpu", want)


def choose_backend(q: torch.Tensor, prob: Problem, want: frozenset, softcap: Optional[float]) -> str:
    """The fastest exact backend for this device and these statistics (what ``backend="auto"`` runs)."""
    if not q.is_cuda:
        return "cpu"
    from .flex import unsupported_reason

    if unsupported_reason("flex", prob, want, softcap, q) is None:
        return "flex"
    banded = prob.window is not None or prob.sinks is not None  # the triton kernel has neither yet
    return "triton" if triton_available() and not banded else "cpu"


def _ran(stats: KernelStats, backend: str, want: frozenset) -> KernelStats:
    """Name the backend that ran; statistics not asked for are None whichever backend computed them."""
    drop = {name: None for name in ROW_STATS if name not in want}
    return dataclasses.replace(stats, backend=backend, **drop)
