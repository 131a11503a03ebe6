"""Triton backend: output and all row statistics in one flash-style pass, key masses in a second kernel.

Pass 1 (one program per ``[query block, batch*head]``) walks the key blocks once with online accumulators:
running max ``m``, ``l = Σ exp(s-m)``, ``t = Σ exp(s-m)·(s-m)`` (entropy = ``log l - t/l``), running
max/argmax, per-segment masses and the output accumulator, all rescaled by ``exp(m_old - m_new)``.
The ``segment_scale`` edit is a logit bias inside the pass and ``out_scale`` multiplies the output.
Pass 2 (one program per ``[key block, batch*head]``) recomputes the scores of its key block against all
queries that see it and sums ``exp(s - lse)`` over valid queries (key_mass), reusing pass 1's lse.

Edits that need exact probabilities (``segment_redistribute``, ``uniform_mix``, ``identity_mix``) and
float64 inputs are not handled here: :func:`unsupported_reason` names them and the dispatcher falls back to
the cpu backend with a warning. Works on CUDA and, with ``TRITON_INTERPRET=1``, on CPU tensors.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ._common import KernelStats, Problem

NEG = -1.0e30


def unsupported_reason(q: torch.Tensor, prob: Problem) -> Optional[str]:
    """Why this call cannot run on the triton kernel (None when it can)."""
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"dtype {q.dtype} is not supported by the triton kernel"
    if prob.d_head > 256:
        return f"d_head {prob.d_head} > 256"
    e = prob.edit
    names = [
        n for n, val in (
            ("segment_redistribute", e.segment_redistribute),
            ("uniform_mix", e.uniform_mix),
            ("identity_mix", e.identity_mix),
        ) if val is not None
    ]
    if names:
        return f"edit {', '.join(names)} needs exact probabilities, not implemented in the triton kernel"
    return None


@triton.jit
def _tanh(x):
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _scores(q, kt, offs_m, offs_n, b, h, KVALID, SEG, LOGG, skvb, skvn, ssb, sss, ssn,
            QLEN, KLEN, OFF, NSEG, scale, softcap,
            CAUSAL: tl.constexpr, HAS_KV: tl.constexpr, HAS_SEG: tl.constexpr, HAS_LOGG: tl.constexpr,
            HAS_SOFTCAP: tl.constexpr, BLOCK_N: tl.constexpr, SEG_PAD: tl.constexpr, PREC: tl.constexpr):
    """Scores of a [BLOCK_M, BLOCK_N] tile, -inf where invisible; also the segment tile [BLOCK_N, SEG_PAD]."""
    s = tl.dot(q, kt, input_precision=PREC) * scale
    if HAS_SOFTCAP:
        s = softcap * _tanh(s / softcap)
    nmask = offs_n < KLEN
    vis = nmask[None, :] & (offs_m < QLEN)[:, None]
    if CAUSAL:
        vis = vis & (offs_n[None, :] <= (OFF + offs_m)[:, None])
    if HAS_KV:
        kvv = tl.load(KVALID + b * skvb + offs_n * skvn, mask=nmask, other=0)
        vis = vis & (kvv != 0)[None, :]
    offs_s = tl.arange(0, SEG_PAD)
    if HAS_SEG:
        seg = tl.load(SEG + b * ssb + offs_n[:, None] * ssn + offs_s[None, :] * sss,
                      mask=nmask[:, None] & (offs_s < NSEG)[None, :], other=0.0)
    else:
        seg = tl.zeros([BLOCK_N, SEG_PAD], dtype=tl.float32)
    if HAS_LOGG:
        lg = tl.load(LOGG + h * NSEG + offs_s, mask=offs_s < NSEG, other=0.0)
        bias = tl.sum(seg * lg[None, :], axis=1)
        s = s + bias[None, :]
        vis = vis & (bias > -1.0e29)[None, :]
    s = tl.where(vis, s, float("-inf"))
    return s, vis, seg


@triton.jit
def _fwd_kernel(Q, K, V, KVALID, SEG, LOGG, OSCALE,
                O, LSE, ENT, MAXW, ARGMAX, SEGM,
                sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd,
                sob, soh, som, sod, skvb, skvn, ssb, sss, ssn,
                H, G, QLEN, KLEN, OFF, NSEG, D, scale, softcap,
                CAUSAL: tl.constexpr, HAS_KV: tl.constexpr, HAS_SEG: tl.constexpr, HAS_LOGG: tl.constexpr,
                HAS_SOFTCAP: tl.constexpr, HAS_OSCALE: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr, SEG_PAD: tl.constexpr,
                PREC: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    kvh = h // G
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    dmask = offs_d < D
    mmask = offs_m < QLEN
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd,
                mask=mmask[:, None] & dmask[None, :], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    t_i = tl.zeros([BLOCK_M], tl.float32)
    best = tl.full([BLOCK_M], float("-inf"), tl.float32)
    bidx = tl.full([BLOCK_M], -1, tl.int32)
    acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
    sacc = tl.zeros([BLOCK_M, SEG_PAD], tl.float32)
    if CAUSAL:
        hi = tl.minimum(KLEN, OFF + (pid_m + 1) * BLOCK_M)
    else:
        hi = KLEN
    for start in range(0, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        nmask = offs_n < KLEN
        kt = tl.load(K + b * skb + kvh * skh + offs_n[None, :] * skn + offs_d[:, None] * skd,
                     mask=dmask[:, None] & nmask[None, :], other=0.0)
        s, vis, seg = _scores(q, kt, offs_m, offs_n, b, h, KVALID, SEG, LOGG, skvb, skvn, ssb, sss, ssn,
                              QLEN, KLEN, OFF, NSEG, scale, softcap, CAUSAL, HAS_KV, HAS_SEG, HAS_LOGG,
                              HAS_SOFTCAP, BLOCK_N, SEG_PAD, PREC)
        bm = tl.max(s, axis=1)
        ba = tl.argmax(s, axis=1).to(tl.int32) + start
        upd = bm > best
        bidx = tl.where(upd, ba, bidx)
        best = tl.where(upd, bm, best)
        m_new = tl.maximum(m_i, bm)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.where(vis, tl.exp(s - m_safe[:, None]), 0.0)
        ps = p * tl.where(vis, s - m_safe[:, None], 0.0)
        corr = (tl.where(l_i > 0, m_i, m_safe) - m_safe) * l_i
        t_i = alpha * (t_i + corr) + tl.sum(ps, axis=1)
        l_i = alpha * l_i + tl.sum(p, axis=1)
        v = tl.load(V + b * svb + kvh * svh + offs_n[:, None] * svn + offs_d[None, :] * svd,
                    mask=nmask[:, None] & dmask[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        if HAS_SEG:
            sacc = sacc * alpha[:, None] + tl.dot(p, seg, input_precision=PREC)
        m_i = m_new
    nonempty = l_i > 0
    l_safe = tl.where(nonempty, l_i, 1.0)
    linv = tl.where(nonempty, 1.0 / l_safe, 0.0)
    logl = tl.log(l_safe)
    lse = tl.where(nonempty, m_i + logl, float("-inf"))
    ent = tl.where(nonempty, logl - t_i * linv, 0.0)
    amax = tl.where(nonempty, bidx, -1)
    out = acc * linv[:, None]
    if HAS_OSCALE:
        out = out * tl.load(OSCALE + h)
    row = pid_bh * QLEN + offs_m
    tl.store(LSE + row, lse, mask=mmask)
    tl.store(ENT + row, ent, mask=mmask)
    tl.store(MAXW + row, linv, mask=mmask)
    tl.store(ARGMAX + row, amax.to(tl.int64), mask=mmask)
    tl.store(O + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod, out,
             mask=mmask[:, None] & dmask[None, :])
    if HAS_SEG:
        offs_s = tl.arange(0, SEG_PAD)
        tl.store(SEGM + row[:, None] * NSEG + offs_s[None, :], sacc * linv[:, None],
                 mask=mmask[:, None] & (offs_s < NSEG)[None, :])


@triton.jit
def _keymass_kernel(Q, K, KVALID, SEG, LOGG, LSE, KM,
                    sqb, sqh, sqm, sqd, skb, skh, skn, skd, skvb, skvn, ssb, sss, ssn,
                    H, G, QLEN, KLEN, OFF, NSEG, D, scale, softcap,
                    CAUSAL: tl.constexpr, HAS_KV: tl.constexpr, HAS_SEG: tl.constexpr, HAS_LOGG: tl.constexpr,
                    HAS_SOFTCAP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    D_PAD: tl.constexpr, SEG_PAD: tl.constexpr, PREC: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    kvh = h // G
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    dmask = offs_d < D
    nmask = offs_n < KLEN
    kt = tl.load(K + b * skb + kvh * skh + offs_n[None, :] * skn + offs_d[:, None] * skd,
                 mask=dmask[:, None] & nmask[None, :], other=0.0)
    colsum = tl.zeros([BLOCK_N], tl.float32)
    if CAUSAL:
        lo = (tl.maximum(pid_n * BLOCK_N - OFF, 0) // BLOCK_M) * BLOCK_M
    else:
        lo = 0
    for mstart in range(lo, QLEN, BLOCK_M):
        offs_m = mstart + tl.arange(0, BLOCK_M)
        mmask = offs_m < QLEN
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd,
                    mask=mmask[:, None] & dmask[None, :], other=0.0)
        s, vis, seg = _scores(q, kt, offs_m, offs_n, b, h, KVALID, SEG, LOGG, skvb, skvn, ssb, sss, ssn,
                              QLEN, KLEN, OFF, NSEG, scale, softcap, CAUSAL, HAS_KV, HAS_SEG, HAS_LOGG,
                              HAS_SOFTCAP, BLOCK_N, SEG_PAD, PREC)
        lse = tl.load(LSE + pid_bh * QLEN + offs_m, mask=mmask, other=float("-inf"))
        rowok = lse > float("-inf")
        if HAS_KV:
            qv = tl.load(KVALID + b * skvb + (OFF + offs_m) * skvn, mask=mmask, other=0)
            rowok = rowok & (qv != 0)
        lse_safe = tl.where(rowok, lse, 0.0)
        p = tl.where(vis & rowok[:, None], tl.exp(s - lse_safe[:, None]), 0.0)
        colsum += tl.sum(p, axis=0)
    tl.store(KM + pid_bh * KLEN + offs_n, colsum, mask=nmask)


def _pow2(x: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(int(x)))


def attn_stats_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    prob: Problem,
    *,
    scale: float,
    causal: bool,
    key_valid: Optional[torch.Tensor],
    segments: Optional[torch.Tensor],
    key_mass: bool,
    softcap: Optional[float],
    block_m: int = 64,
    block_n: int = 64,
) -> KernelStats:
    B, H, Q, K, D, S, G = prob.batch, prob.n_heads, prob.q_len, prob.k_len, prob.d_head, prob.n_segments, prob.group
    dev = q.device
    f32 = torch.float32
    edit = prob.edit
    prec = "ieee"  # exact fp32 products (tf32 would cost ~1e-3 in the statistics)
    dummy = torch.zeros(1, dtype=f32, device=dev)
    kv8 = key_valid.to(torch.int8).contiguous() if key_valid is not None else torch.zeros(1, 1, dtype=torch.int8, device=dev)
    seg = segments.to(f32).contiguous() if segments is not None else torch.zeros(1, 1, 1, dtype=f32, device=dev)
    logg = edit.log_gamma().clamp_min(NEG).to(device=dev, dtype=f32).contiguous() if edit.segment_scale is not None else dummy
    osc = edit.out_scale.to(device=dev, dtype=f32).contiguous() if edit.out_scale is not None else dummy

    out = torch.empty(B, H, Q, D, dtype=f32, device=dev)
    lse = torch.empty(B, H, Q, dtype=f32, device=dev)
    ent = torch.empty(B, H, Q, dtype=f32, device=dev)
    maxw = torch.empty(B, H, Q, dtype=f32, device=dev)
    amax = torch.empty(B, H, Q, dtype=torch.int64, device=dev)
    segm = torch.empty(B, H, Q, max(S, 1), dtype=f32, device=dev)
    D_PAD, SEG_PAD = _pow2(D), _pow2(max(S, 1))
    sc = float(softcap) if softcap is not None else 1.0
    flags = dict(CAUSAL=bool(causal), HAS_KV=key_valid is not None, HAS_SEG=segments is not None,
                 HAS_LOGG=edit.segment_scale is not None, HAS_SOFTCAP=softcap is not None)
    grid = (triton.cdiv(Q, block_m), B * H)
    _fwd_kernel[grid](
        q, k, v, kv8, seg, logg, osc, out, lse, ent, maxw, amax, segm,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), kv8.stride(0), kv8.stride(1),
        seg.stride(0), seg.stride(1), seg.stride(2),
        H, G, Q, K, K - Q, S, D, float(scale), sc,
        HAS_OSCALE=edit.out_scale is not None, BLOCK_M=block_m, BLOCK_N=block_n, D_PAD=D_PAD, SEG_PAD=SEG_PAD,
        PREC=prec, **flags,
    )
    km = None
    if key_mass:
        km = torch.empty(B, H, K, dtype=f32, device=dev)
        grid2 = (triton.cdiv(K, block_n), B * H)
        _keymass_kernel[grid2](
            q, k, kv8, seg, logg, lse, km,
            *q.stride(), *k.stride(), kv8.stride(0), kv8.stride(1), seg.stride(0), seg.stride(1), seg.stride(2),
            H, G, Q, K, K - Q, S, D, float(scale), sc,
            BLOCK_M=block_m, BLOCK_N=block_n, D_PAD=D_PAD, SEG_PAD=SEG_PAD, PREC=prec, **flags,
        )
    return KernelStats(
        out=out.to(q.dtype),
        lse=lse,
        entropy=ent,
        max_weight=maxw,
        argmax=amax,
        segment_mass=segm if segments is not None else None,
        key_mass=km,
    )
