"""Triton backend: output and every row statistic in a flash-style pass, with every edit applied natively.

Structure (after Triton's fused-attention tutorial and FlashAttention-2): one program per ``[query block,
batch*head]`` walks the key blocks once with online accumulators (running max ``m``, ``l = Σ exp(s-m)``,
``t = Σ exp(s-m)·(s-m)`` so that entropy = ``log l - t/l``, running max/argmax, output accumulator and the
masses of key *classes*), all rescaled by ``exp(m_old - m_new)``. The causal walk is split as in the
tutorial: key blocks wholly before the query block need no causal mask; only the diagonal blocks do.

Segments enter as key classes: keys with the same segment membership share a class (``cls [batch, key_pos]``,
``table [n_classes, n_segments]``), so overlapping segments work and one ``tl.dot`` with a one-hot class tile
gives every class mass. ``segment_scale`` is a per-class logit bias; ``out_scale`` scales the output.

Probability edits (redistribute, uniform/identity mix, SetPattern rows) need the exact row first: pass 1 then
only produces ``lse`` and the class masses, the host turns those into per-row class factors (ACT, in float64,
exactly as the reference), and pass 2 recomputes each tile with the known ``lse``, applies every edit to the
probabilities and accumulates the output and statistics of the edited row. The key-mass kernel (one program
per ``[key block, batch*head]``) and the attention-rows kernel reuse the same tile function.

Rules of compiled Triton that the interpreter (``TRITON_INTERPRET=1``, numpy underneath) does not enforce,
and how this file follows them:

1. ``tl.dot`` needs every operand dimension >= 16: blocks are 32..128, ``d_head`` is padded to a power of
   two >= 16 (``D_PAD``), the class axis to ``NC_PAD >= 16``.
2. Block shapes (``tl.arange``) must be powers of two: ``D_PAD``, ``NC_PAD``, ``BLOCK_M``, ``BLOCK_N`` are.
3. Both ``tl.dot`` operands must share one dtype: ``p`` is cast to V's dtype (fp16/bf16 tensor cores) for
   the output; class-mass and class-factor dots are fp32 × fp32.
4. fp32 accumulation: every ``tl.dot`` accumulates in fp32, and the statistics stay fp32 whatever the input
   dtype; fp32 inputs use ``input_precision="tf32x3"`` on the GPU (near-fp32; plain tf32 would cost ~1e-3
   in the statistics) and ``"ieee"`` in the interpreter.
5. Loop-carried values keep one dtype across iterations (``bidx`` int32, the rest fp32).
6. Masked loads give ``other=`` for every lane they mask (ragged query/key tails, padded ``d_head``):
   compiled code leaves masked lanes undefined, the interpreter happens to return zeros.
7. Offsets into large tensors are int64 (``b``/``h`` base offsets): ``batch*heads*pos*d`` passes 2^31 for
   batched sweeps, and only compiled code wraps int32.
8. No Python control flow on runtime tensor values and no Python loops over heads: heads are a grid axis,
   feature switches are ``tl.constexpr`` (each combination compiles once).
9. Shared memory bounds tiles: ``BLOCK_N`` shrinks to 32 for ``d_head > 128`` and fp32 inputs; ``num_stages``
   and ``num_warps`` are chosen per dtype/``d_head`` in :func:`choose_config` (interpreter ignores them).
10. ``exp(-inf - -inf)`` is NaN: fully masked rows use a safe max of 0 and are reset at the end.
11. The grid's second axis is limited to 65535: ``batch*heads`` beyond that is rejected up front.
12. The interpreter cannot multiply bf16 tiles at all (it feeds their raw uint16 bits to numpy): ``_mm``
    gives it fp32 copies of the already-rounded values, so the bf16 tests check real bf16 rounding of
    q, k, v and of ``p`` before the PV product.

Float64 inputs, ``d_head > 256`` and more than 64 distinct segment-membership classes are outside this kernel
(:func:`unsupported_reason`); the dispatcher then warns and uses the cpu backend.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from .edits import ACT_EMPTY
from ._common import KernelStats, Problem, TensorMemo

NEG = -1.0e30
MAX_CLASSES = 64
# triton.jit picks the interpreter from this variable when the kernels are defined; read it the same way.
_UPCAST = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")
MAX_GRID_Y = 65535


def unsupported_reason(q: torch.Tensor, prob: Problem, segments: Optional[torch.Tensor] = None) -> Optional[str]:
    """Why this call cannot run on the triton kernel (None when it can)."""
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"dtype {q.dtype} is not supported by the triton kernel"
    if prob.d_head > 256:
        return f"d_head {prob.d_head} > 256"
    if prob.batch * prob.n_heads > MAX_GRID_Y:
        return f"batch*heads {prob.batch * prob.n_heads} > {MAX_GRID_Y}"
    if segments is not None and _classes(segments)[2] > MAX_CLASSES:
        return f"more than {MAX_CLASSES} distinct segment-membership classes"
    return None


@dataclass(frozen=True)
class Config:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def choose_config(dtype: torch.dtype, d_pad: int) -> Config:
    """Tile sizes and pipeline depth: 64×64 tiles and 4 warps suit d_head 64 (the tutorial's Hopper/Ampere
    choice for the forward pass); wide heads and fp32 halve the key block to fit shared memory. The
    interpreter's cost is per operation, not per element, so it gets 128×128 tiles (3× faster)."""
    if _UPCAST:
        return Config(128, 128, 4, 1)
    if dtype == torch.float32 or d_pad > 128:
        return Config(64, 32, 4, 2)
    if d_pad <= 64:
        return Config(64, 64, 4, 3)
    return Config(64, 64, 8, 2)


@triton.jit
def _mm(a, b, PREC: tl.constexpr):
    """``tl.dot`` with fp32 accumulation. The interpreter multiplies bf16 tiles as their raw uint16 bits
    (numpy has no bfloat16), so there it multiplies fp32 copies of the same (already rounded) values."""
    if _UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _mm01(a, b, NSPLIT: tl.constexpr):
    """``a @ b`` for an fp32 tile ``a`` and a 0/1 tile ``b``, exact to fp32: ``a`` splits into three bf16 parts
    (8+8+8 mantissa bits; ``NSPLIT=2`` keeps 16 bits, relative error 2^-17, for fp16/bf16 inputs whose
    output already carries bf16 rounding) and each part meets ``b`` (exact in bf16) on the tensor cores. On an H100 this is
    about 4x cheaper than one tf32x3 product, which made the class masses cost 3x the rest of the pass."""
    if _UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    bb = b.to(tl.bfloat16)
    hi = a.to(tl.bfloat16)
    r = a - hi.to(tl.float32)
    mid = r.to(tl.bfloat16)
    acc = tl.dot(hi, bb)
    acc = tl.dot(mid, bb, acc)
    if NSPLIT == 3:
        acc = tl.dot((r - mid.to(tl.float32)).to(tl.bfloat16), bb, acc)
    return acc


@triton.jit
def _tanh(x):
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _score_tile(q, K, kbase, skn, skd, offs_m, offs_n, offs_d, mmask, dmask, b64, bh64,
                KVALID, skvb, skvn, CLS, BIAS, KLEN, OFF, scale, softcap,
                CAUSAL: tl.constexpr, HAS_KV: tl.constexpr, HAS_CLS: tl.constexpr, HAS_BIAS: tl.constexpr,
                HAS_SOFTCAP: tl.constexpr, NC_PAD: tl.constexpr, PREC: tl.constexpr):
    """Scores ``[BLOCK_M, BLOCK_N]`` (-inf where invisible or removed), the visibility mask (before γ=0
    removal) and the one-hot class tile ``[BLOCK_N, NC_PAD]``."""
    nmask = offs_n < KLEN
    kt = tl.load(K + kbase + offs_n[None, :] * skn + offs_d[:, None] * skd,
                 mask=dmask[:, None] & nmask[None, :], other=0.0)
    s = _mm(q, kt, PREC) * scale
    if HAS_SOFTCAP:
        s = softcap * _tanh(s / softcap)
    vis = nmask[None, :] & mmask[:, None]
    if CAUSAL:
        vis = vis & (offs_n[None, :] <= (OFF + offs_m)[:, None])
    if HAS_KV:
        kvv = tl.load(KVALID + b64 * skvb + offs_n * skvn, mask=nmask, other=0)
        vis = vis & (kvv != 0)[None, :]
    offs_c = tl.arange(0, NC_PAD)
    if HAS_CLS:
        cls = tl.load(CLS + b64 * KLEN + offs_n, mask=nmask, other=NC_PAD)
        onehot = (cls[:, None] == offs_c[None, :]).to(tl.float32)
    else:
        onehot = ((offs_c[None, :] == 0) & nmask[:, None]).to(tl.float32)
    active = vis
    if HAS_BIAS:
        bias_c = tl.load(BIAS + bh64 * NC_PAD + offs_c)
        bias = tl.sum(onehot * bias_c[None, :], axis=1)
        s = s + bias[None, :]
        active = active & (bias > -1.0e29)[None, :]
    s = tl.where(active, s, float("-inf"))
    return s, vis, onehot


@triton.jit
def _edited_tile(s, vis, onehot, offs_m, offs_n, mmask, nmask, lse, row, bh64, b64,
                 FAC, UMIX, NVINV, IMIX, OWNV, OVR, W, QLEN, KLEN, OFF,
                 HAS_FAC: tl.constexpr, HAS_UMIX: tl.constexpr, HAS_IMIX: tl.constexpr, HAS_OVR: tl.constexpr,
                 NC_PAD: tl.constexpr, PREC: tl.constexpr, NSPLIT: tl.constexpr):
    """The edited attention tile ``A'`` from scores and the row's known ``lse`` (edits 2-5 of :mod:`.edits`)."""
    lse_safe = tl.where(lse > float("-inf"), lse, 0.0)
    a = tl.exp(s - lse_safe[:, None])  # exp(-inf) = 0 for invisible keys
    if HAS_FAC:  # ACT: each key's class factor, gathered by a one-hot product
        offs_c = tl.arange(0, NC_PAD)
        fac = tl.load(FAC + row[:, None] * NC_PAD + offs_c[None, :], mask=mmask[:, None], other=1.0)
        a = a * _mm01(fac, tl.trans(onehot), NSPLIT)
    if HAS_UMIX:
        u = tl.load(UMIX + bh64)
        nvinv = tl.load(NVINV + b64 * QLEN + offs_m, mask=mmask, other=0.0)
        a = (1.0 - u) * a + u * tl.where(vis, nvinv[:, None], 0.0)
    if HAS_IMIX:
        w = tl.load(IMIX + bh64)
        ownv = tl.load(OWNV + b64 * QLEN + offs_m, mask=mmask, other=0) != 0
        own = (offs_n[None, :] == (OFF + offs_m)[:, None]).to(tl.float32)
        a = tl.where(ownv[:, None], (1.0 - w) * a + w * own, a)
    if HAS_OVR:
        oi = tl.load(OVR + row, mask=mmask, other=-1)
        hit = oi >= 0
        wt = tl.load(W + tl.where(hit, oi, 0).to(tl.int64)[:, None] * KLEN + offs_n[None, :],
                     mask=hit[:, None] & nmask[None, :], other=0.0)
        a = tl.where(hit[:, None], wt, a)
    return a


@triton.jit
def _fwd_step(q, K, V, kbase, vbase, skn, skd, svn, svd, start, offs_m, offs_d, mmask, dmask, b64, bh64,
              KVALID, skvb, skvn, CLS, BIAS, KLEN, OFF, scale, softcap, m_i, l_i, t_i, best, bidx, acc, cacc,
              CAUSAL: tl.constexpr, HAS_KV: tl.constexpr, HAS_CLS: tl.constexpr, HAS_BIAS: tl.constexpr,
              HAS_SOFTCAP: tl.constexpr, LSE_ONLY: tl.constexpr, BLOCK_N: tl.constexpr, NC_PAD: tl.constexpr,
              PREC: tl.constexpr, NSPLIT: tl.constexpr):
    """One key block of the online pass: rescale every accumulator by exp(m_old - m_new), add the block."""
    offs_n = start + tl.arange(0, BLOCK_N)
    s, vis, onehot = _score_tile(q, K, kbase, skn, skd, offs_m, offs_n, offs_d, mmask, dmask, b64, bh64,
                                 KVALID, skvb, skvn, CLS, BIAS, KLEN, OFF, scale, softcap, CAUSAL, HAS_KV,
                                 HAS_CLS, HAS_BIAS, HAS_SOFTCAP, NC_PAD, PREC)
    bm = tl.max(s, axis=1)
    m_new = tl.maximum(m_i, bm)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp(m_i - m_safe)
    p = tl.exp(s - m_safe[:, None])  # 0 where s = -inf
    if not LSE_ONLY:
        upd = bm > best
        if tl.max(upd.to(tl.int32), axis=0) > 0:  # a new row max is rare after the first blocks: skip the argmax
            ba = tl.argmax(s, axis=1).to(tl.int32) + start
            bidx = tl.where(upd, ba, bidx)
            best = tl.where(upd, bm, best)
        ps = p * tl.where(s > float("-inf"), s - m_safe[:, None], 0.0)
        corr = (tl.where(l_i > 0, m_i, m_safe) - m_safe) * l_i
        t_i = alpha * (t_i + corr) + tl.sum(ps, axis=1)
        v = tl.load(V + vbase + offs_n[:, None] * svn + offs_d[None, :] * svd,
                    mask=(offs_n < KLEN)[:, None] & dmask[None, :], other=0.0)
        acc = acc * alpha[:, None] + _mm(p.to(v.dtype), v, PREC)
    l_i = alpha * l_i + tl.sum(p, axis=1)
    if HAS_CLS:
        cacc = cacc * alpha[:, None] + _mm01(p, onehot, NSPLIT)
    return m_new, l_i, t_i, best, bidx, acc, cacc


@triton.jit
def _fwd_kernel(Q, K, V, KVALID, CLS, BIAS, OSCALE, O, LSE, ENT, MAXW, ARGMAX, CM,
                sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod, skvb, skvn,
                H, G, QLEN, KLEN, OFF, D, scale, softcap,
                CAUSAL: tl.constexpr, HAS_KV: tl.constexpr, HAS_CLS: tl.constexpr, HAS_BIAS: tl.constexpr,
                HAS_SOFTCAP: tl.constexpr, HAS_OSCALE: tl.constexpr, LSE_ONLY: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr, NC_PAD: tl.constexpr,
                PREC: tl.constexpr, NSPLIT: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b64 = (pid_bh // H).to(tl.int64)
    h64 = (pid_bh % H).to(tl.int64)
    bh64 = pid_bh.to(tl.int64)
    kvh = h64 // G
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    dmask = offs_d < D
    mmask = offs_m < QLEN
    q = tl.load(Q + b64 * sqb + h64 * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd,
                mask=mmask[:, None] & dmask[None, :], other=0.0)
    kbase = b64 * skb + kvh * skh
    vbase = b64 * svb + kvh * svh
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    t_i = tl.zeros([BLOCK_M], tl.float32)
    best = tl.full([BLOCK_M], float("-inf"), tl.float32)
    bidx = tl.full([BLOCK_M], -1, tl.int32)
    acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
    cacc = tl.zeros([BLOCK_M, NC_PAD], tl.float32)
    if CAUSAL:  # blocks before the diagonal need no causal mask (the tutorial's two-stage walk)
        mid = ((OFF + pid_m * BLOCK_M) // BLOCK_N) * BLOCK_N
        hi = tl.minimum(KLEN, OFF + (pid_m + 1) * BLOCK_M)
    else:
        mid = KLEN
        hi = KLEN
    for start in range(0, mid, BLOCK_N):
        m_i, l_i, t_i, best, bidx, acc, cacc = _fwd_step(
            q, K, V, kbase, vbase, skn, skd, svn, svd, start, offs_m, offs_d, mmask, dmask, b64, bh64,
            KVALID, skvb, skvn, CLS, BIAS, KLEN, OFF, scale, softcap, m_i, l_i, t_i, best, bidx, acc, cacc,
            False, HAS_KV, HAS_CLS, HAS_BIAS, HAS_SOFTCAP, LSE_ONLY, BLOCK_N, NC_PAD, PREC, NSPLIT)
    for start in range(mid, hi, BLOCK_N):
        m_i, l_i, t_i, best, bidx, acc, cacc = _fwd_step(
            q, K, V, kbase, vbase, skn, skd, svn, svd, start, offs_m, offs_d, mmask, dmask, b64, bh64,
            KVALID, skvb, skvn, CLS, BIAS, KLEN, OFF, scale, softcap, m_i, l_i, t_i, best, bidx, acc, cacc,
            CAUSAL, HAS_KV, HAS_CLS, HAS_BIAS, HAS_SOFTCAP, LSE_ONLY, BLOCK_N, NC_PAD, PREC, NSPLIT)
    nonempty = l_i > 0
    l_safe = tl.where(nonempty, l_i, 1.0)
    linv = tl.where(nonempty, 1.0 / l_safe, 0.0)
    row = bh64 * QLEN + offs_m
    tl.store(LSE + row, tl.where(nonempty, m_i + tl.log(l_safe), float("-inf")), mask=mmask)
    if HAS_CLS:
        offs_c = tl.arange(0, NC_PAD)
        tl.store(CM + row[:, None] * NC_PAD + offs_c[None, :], cacc * linv[:, None], mask=mmask[:, None])
    if not LSE_ONLY:
        tl.store(ENT + row, tl.where(nonempty, tl.log(l_safe) - t_i * linv, 0.0), mask=mmask)
        tl.store(MAXW + row, linv, mask=mmask)
        tl.store(ARGMAX + row, tl.where(nonempty, bidx, -1).to(tl.int64), mask=mmask)
        out = acc * linv[:, None]
        if HAS_OSCALE:
            out = out * tl.load(OSCALE + bh64)
        tl.store(O + b64 * sob + h64 * soh + offs_m[:, None] * som + offs_d[None, :] * sod,
                 out.to(O.dtype.element_ty), mask=mmask[:, None] & dmask[None, :])


@triton.jit
def _edited_kernel(Q, K, V, KVALID, CLS, BIAS, OSCALE, LSE, FAC, UMIX, NVINV, IMIX, OWNV, OVR, W,
                   O, ENT, MAXW, ARGMAX, CM,
                   sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod, skvb, skvn,
                   H, G, QLEN, KLEN, OFF, D, scale, softcap,
                   CAUSAL: tl.constexpr, HAS_KV: tl.constexpr, HAS_CLS: tl.constexpr, HAS_BIAS: tl.constexpr,
                   HAS_SOFTCAP: tl.constexpr, HAS_OSCALE: tl.constexpr, HAS_FAC: tl.constexpr,
                   HAS_UMIX: tl.constexpr, HAS_IMIX: tl.constexpr, HAS_OVR: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr, NC_PAD: tl.constexpr,
                   PREC: tl.constexpr, NSPLIT: tl.constexpr):
    """Pass 2: the edited rows, tile by tile, with pass 1's lse (no online rescaling needed)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b64 = (pid_bh // H).to(tl.int64)
    h64 = (pid_bh % H).to(tl.int64)
    bh64 = pid_bh.to(tl.int64)
    kvh = h64 // G
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    dmask = offs_d < D
    mmask = offs_m < QLEN
    row = bh64 * QLEN + offs_m
    q = tl.load(Q + b64 * sqb + h64 * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd,
                mask=mmask[:, None] & dmask[None, :], other=0.0)
    lse = tl.load(LSE + row, mask=mmask, other=float("-inf"))
    kbase = b64 * skb + kvh * skh
    vbase = b64 * svb + kvh * svh
    t_i = tl.zeros([BLOCK_M], tl.float32)
    best = tl.zeros([BLOCK_M], tl.float32)
    bidx = tl.full([BLOCK_M], -1, tl.int32)
    acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
    cacc = tl.zeros([BLOCK_M, NC_PAD], tl.float32)
    hi = KLEN  # SetPattern rows and mixes can reach any visible key, so walk every block up to the diagonal
    if CAUSAL:
        hi = tl.minimum(KLEN, OFF + (pid_m + 1) * BLOCK_M)
    for start in range(0, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        nmask = offs_n < KLEN
        s, vis, onehot = _score_tile(q, K, kbase, skn, skd, offs_m, offs_n, offs_d, mmask, dmask, b64, bh64,
                                     KVALID, skvb, skvn, CLS, BIAS, KLEN, OFF, scale, softcap, CAUSAL, HAS_KV,
                                     HAS_CLS, HAS_BIAS, HAS_SOFTCAP, NC_PAD, PREC)
        a = _edited_tile(s, vis, onehot, offs_m, offs_n, mmask, nmask, lse, row, bh64, b64,
                         FAC, UMIX, NVINV, IMIX, OWNV, OVR, W, QLEN, KLEN, OFF,
                         HAS_FAC, HAS_UMIX, HAS_IMIX, HAS_OVR, NC_PAD, PREC, NSPLIT)
        bm = tl.max(a, axis=1)
        ba = tl.argmax(a, axis=1).to(tl.int32) + start
        upd = bm > best
        bidx = tl.where(upd, ba, bidx)
        best = tl.where(upd, bm, best)
        t_i += tl.sum(tl.where(a > 0, a * tl.log(tl.where(a > 0, a, 1.0)), 0.0), axis=1)
        v = tl.load(V + vbase + offs_n[:, None] * svn + offs_d[None, :] * svd,
                    mask=nmask[:, None] & dmask[None, :], other=0.0)
        acc += _mm(a.to(v.dtype), v, PREC)
        if HAS_CLS:
            cacc += _mm01(a, onehot, NSPLIT)
    tl.store(ENT + row, -t_i, mask=mmask)
    tl.store(MAXW + row, best, mask=mmask)
    tl.store(ARGMAX + row, bidx.to(tl.int64), mask=mmask)
    if HAS_CLS:
        offs_c = tl.arange(0, NC_PAD)
        tl.store(CM + row[:, None] * NC_PAD + offs_c[None, :], cacc, mask=mmask[:, None])
    if HAS_OSCALE:
        acc = acc * tl.load(OSCALE + bh64)
    tl.store(O + b64 * sob + h64 * soh + offs_m[:, None] * som + offs_d[None, :] * sod,
             acc.to(O.dtype.element_ty), mask=mmask[:, None] & dmask[None, :])


@triton.jit
def _keymass_kernel(Q, K, KVALID, CLS, BIAS, LSE, FAC, UMIX, NVINV, IMIX, OWNV, OVR, W, KM,
                    sqb, sqh, sqm, sqd, skb, skh, skn, skd, skvb, skvn,
                    H, G, QLEN, KLEN, OFF, D, scale, softcap,
                    CAUSAL: tl.constexpr, HAS_KV: tl.constexpr, HAS_CLS: tl.constexpr, HAS_BIAS: tl.constexpr,
                    HAS_SOFTCAP: tl.constexpr, HAS_FAC: tl.constexpr, HAS_UMIX: tl.constexpr,
                    HAS_IMIX: tl.constexpr, HAS_OVR: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    D_PAD: tl.constexpr, NC_PAD: tl.constexpr, PREC: tl.constexpr, NSPLIT: tl.constexpr):
    """Column sums of the (edited) pattern over valid queries, one key block per program (deterministic)."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b64 = (pid_bh // H).to(tl.int64)
    h64 = (pid_bh % H).to(tl.int64)
    bh64 = pid_bh.to(tl.int64)
    kbase = b64 * skb + (h64 // G) * skh
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    dmask = offs_d < D
    nmask = offs_n < KLEN
    colsum = tl.zeros([BLOCK_N], tl.float32)
    lo = 0
    if CAUSAL:
        lo = (tl.maximum(pid_n * BLOCK_N - OFF, 0) // BLOCK_M) * BLOCK_M
    for mstart in range(lo, QLEN, BLOCK_M):
        offs_m = mstart + tl.arange(0, BLOCK_M)
        mmask = offs_m < QLEN
        row = bh64 * QLEN + offs_m
        q = tl.load(Q + b64 * sqb + h64 * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd,
                    mask=mmask[:, None] & dmask[None, :], other=0.0)
        s, vis, onehot = _score_tile(q, K, kbase, skn, skd, offs_m, offs_n, offs_d, mmask, dmask, b64, bh64,
                                     KVALID, skvb, skvn, CLS, BIAS, KLEN, OFF, scale, softcap, CAUSAL, HAS_KV,
                                     HAS_CLS, HAS_BIAS, HAS_SOFTCAP, NC_PAD, PREC)
        lse = tl.load(LSE + row, mask=mmask, other=float("-inf"))
        a = _edited_tile(s, vis, onehot, offs_m, offs_n, mmask, nmask, lse, row, bh64, b64,
                         FAC, UMIX, NVINV, IMIX, OWNV, OVR, W, QLEN, KLEN, OFF,
                         HAS_FAC, HAS_UMIX, HAS_IMIX, HAS_OVR, NC_PAD, PREC, NSPLIT)
        rowok = mmask
        if HAS_KV:
            rowok = rowok & (tl.load(KVALID + b64 * skvb + (OFF + offs_m) * skvn, mask=mmask, other=0) != 0)
        colsum += tl.sum(tl.where(rowok[:, None], a, 0.0), axis=0)
    tl.store(KM + bh64 * KLEN + offs_n, colsum, mask=nmask)


@triton.jit
def _rows_kernel(Q, K, KVALID, CLS, BIAS, LSE, FAC, UMIX, NVINV, IMIX, OWNV, OVR, W, HEADS, QIDX, ROWS,
                 sqb, sqh, sqm, sqd, skb, skh, skn, skd, skvb, skvn,
                 H, G, NH, NQ, QLEN, KLEN, OFF, D, scale, softcap,
                 CAUSAL: tl.constexpr, HAS_KV: tl.constexpr, HAS_CLS: tl.constexpr, HAS_BIAS: tl.constexpr,
                 HAS_SOFTCAP: tl.constexpr, HAS_FAC: tl.constexpr, HAS_UMIX: tl.constexpr,
                 HAS_IMIX: tl.constexpr, HAS_OVR: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 D_PAD: tl.constexpr, NC_PAD: tl.constexpr, PREC: tl.constexpr, NSPLIT: tl.constexpr):
    """A tile of requested attention rows ``[batch, head j, query j', key]`` from the known lse."""
    pid_n = tl.program_id(0)
    pid_bj = tl.program_id(1)
    pid_q = tl.program_id(2)
    b64 = (pid_bj // NH).to(tl.int64)
    j64 = (pid_bj % NH).to(tl.int64)
    h64 = tl.load(HEADS + j64)
    bh64 = b64 * H + h64
    offs_j = pid_q * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = offs_j < NQ
    offs_m = tl.load(QIDX + b64 * NQ + offs_j, mask=mmask, other=0)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    dmask = offs_d < D
    nmask = offs_n < KLEN
    row = bh64 * QLEN + offs_m
    q = tl.load(Q + b64 * sqb + h64 * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd,
                mask=mmask[:, None] & dmask[None, :], other=0.0)
    s, vis, onehot = _score_tile(q, K, b64 * skb + (h64 // G) * skh, skn, skd, offs_m, offs_n, offs_d, mmask, dmask,
                                 b64, bh64, KVALID, skvb, skvn, CLS, BIAS, KLEN, OFF, scale, softcap, CAUSAL,
                                 HAS_KV, HAS_CLS, HAS_BIAS, HAS_SOFTCAP, NC_PAD, PREC)
    lse = tl.load(LSE + row, mask=mmask, other=float("-inf"))
    a = _edited_tile(s, vis, onehot, offs_m, offs_n, mmask, nmask, lse, row, bh64, b64,
                     FAC, UMIX, NVINV, IMIX, OWNV, OVR, W, QLEN, KLEN, OFF,
                     HAS_FAC, HAS_UMIX, HAS_IMIX, HAS_OVR, NC_PAD, PREC, NSPLIT)
    out_row = (b64 * NH + j64) * NQ + offs_j
    tl.store(ROWS + out_row[:, None] * KLEN + offs_n[None, :], a, mask=mmask[:, None] & nmask[None, :])


def _pow2(x: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(int(x)))


_CLASSES = TensorMemo()


def _classes(segments: torch.Tensor):
    """:func:`_key_classes`, once per segments tensor (a model passes the same one to every layer)."""
    return _CLASSES.get(segments, _key_classes)


def _key_classes(segments: torch.Tensor):
    """Key classes: ``cls [batch, key_pos]`` int32, ``table [n_classes, n_segments]`` float, ``n_classes``.

    Up to 6 segments a key's class is its membership bit code (``2^S`` classes, some possibly empty): no sort
    and no host sync, which on a GPU cost more than the whole pass at small n. More segments use the distinct
    membership patterns that occur."""
    B, S, K = segments.shape
    member = segments > 0  # [B, S, K]
    if (1 << S) <= MAX_CLASSES:
        bits = 1 << torch.arange(S, device=segments.device)
        cls = (member.to(torch.int64) * bits[None, :, None]).sum(1)
        table = ((torch.arange(1 << S, device=segments.device)[:, None] & bits[None, :]) > 0).to(torch.float32)
        return cls.to(torch.int32), table, 1 << S
    table, inv = torch.unique(member.transpose(1, 2).reshape(B * K, S), dim=0, return_inverse=True)
    return inv.view(B, K).to(torch.int32), table.to(torch.float32), table.shape[0]


def _act_factors(cm: torch.Tensor, table: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Per-row class factors of the ACT redistribution ``[B, H, Q, NC]`` (float64), from the pre-edit class
    masses ``cm`` and segment membership ``table [NC, S]``, segments in index order as in the reference."""
    cm = cm.double()
    fac = torch.ones_like(cm)
    inseg = table.double().t()  # [S, NC]
    for si in range(beta.shape[-1]):
        b = beta[:, :, si].to(cm)[:, :, None]
        if bool((b == 1).all()):
            continue
        mass = cm * fac
        m = (mass * inseg[si]).sum(-1)
        m_out = (mass * (1 - inseg[si])).sum(-1)
        m_new = torch.minimum(b * m, m + m_out)
        keep = m_out <= ACT_EMPTY
        f_in = torch.where(keep | (m <= 0), torch.ones_like(m), m_new / m.clamp_min(1e-300))
        f_out = torch.where(keep, torch.ones_like(m), (m + m_out - m_new) / m_out.clamp_min(1e-300))
        fac = fac * torch.where(inseg[si] > 0, f_in[..., None], f_out[..., None])
    return fac


_DUMMIES: dict = {}


def _dummy(dev, kind: str) -> torch.Tensor:
    """Read-only placeholder for a pointer argument a kernel never reads (its feature flag is off). Made once
    per device: five tiny allocations and fills per call cost more host time than the pass itself at n=1024."""
    key = (str(dev), kind)
    if key not in _DUMMIES:
        make = {"f32": lambda: torch.zeros(1, dtype=torch.float32, device=dev),
                "i8": lambda: torch.zeros(1, 1, dtype=torch.int8, device=dev),
                "i32": lambda: torch.zeros(1, dtype=torch.int32, device=dev),
                "ovr": lambda: torch.full((1,), -1, dtype=torch.int32, device=dev)}[kind]
        _DUMMIES[key] = make()
    return _DUMMIES[key]


def _row_inputs(prob: Problem, causal: bool, key_valid, cm, table, nc_pad, dev):
    """Device tensors for the probability edits (dummies where unused) and their constexpr switches."""
    B, H, Q, K, off = prob.batch, prob.n_heads, prob.q_len, prob.k_len, prob.offset
    e, f32 = prob.edit, torch.float32
    dummy = _dummy(dev, "f32")
    fac = dummy
    if e.segment_redistribute is not None:
        f = _act_factors(cm[..., : table.shape[0]], table, e.segment_redistribute.to(dev))
        fac = torch.ones(B, H, Q, nc_pad, dtype=f32, device=dev)
        fac[..., : table.shape[0]] = f.to(f32)
    nvinv, ownv = dummy, _dummy(dev, "i8")
    if e.uniform_mix is not None or e.identity_mix is not None:  # only the mixes read these (a few launches)
        kv = key_valid if key_valid is not None else torch.ones(B, K, dtype=torch.bool, device=dev)
        if causal:
            nvis = kv.cumsum(1)[:, off:]
        else:
            nvis = kv.sum(1, keepdim=True).expand(B, Q)
        nvinv = torch.where(nvis > 0, 1.0 / nvis.clamp_min(1).to(f32), torch.zeros((), dtype=f32, device=dev)).contiguous()
        ownv = kv[:, off:].to(torch.int8).contiguous()
    ov = e.override
    ovr = ov.index.to(device=dev, dtype=torch.int32).contiguous() if ov is not None else _dummy(dev, "ovr")
    w = ov.weights.to(device=dev, dtype=f32).contiguous() if ov is not None else dummy
    umix = e.uniform_mix.to(device=dev, dtype=f32).contiguous() if e.uniform_mix is not None else dummy
    imix = e.identity_mix.to(device=dev, dtype=f32).contiguous() if e.identity_mix is not None else dummy
    flags = dict(HAS_FAC=e.segment_redistribute is not None, HAS_UMIX=e.uniform_mix is not None,
                 HAS_IMIX=e.identity_mix is not None, HAS_OVR=ov is not None)
    return (fac, umix, nvinv, imix, ownv, ovr, w), flags


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
    config: Optional[Config] = None,
) -> KernelStats:
    B, H, Q, K, D, S, G = prob.batch, prob.n_heads, prob.q_len, prob.k_len, prob.d_head, prob.n_segments, prob.group
    dev, f32, edit = q.device, torch.float32, prob.edit
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    prec = "ieee" if (interpret or not q.is_cuda) else "tf32x3"
    D_PAD = _pow2(D)
    cfg = config or choose_config(q.dtype, D_PAD)
    dummy = _dummy(dev, "f32")
    kv8 = key_valid.to(torch.int8).contiguous() if key_valid is not None else _dummy(dev, "i8")
    if segments is not None:
        cls, table, nc = _classes(segments)
        cls = cls.to(dev).contiguous()
    else:
        cls, table, nc = _dummy(dev, "i32"), None, 1
    NC_PAD = _pow2(nc)
    bias = dummy
    if edit.segment_scale is not None:
        logg = edit.log_gamma().to(dev).clamp_min(NEG)  # [B, H, S]
        bias = torch.zeros(B, H, NC_PAD, dtype=torch.float64, device=dev)
        bias[..., :nc] = torch.einsum("cs,bhs->bhc", table.to(dev, torch.float64), logg).clamp_min(NEG)
        bias = bias.to(f32).contiguous()
    osc = edit.out_scale.to(device=dev, dtype=f32).contiguous() if edit.out_scale is not None else dummy

    out = torch.empty(B, H, Q, D, dtype=q.dtype, device=dev)
    lse = torch.empty(B, H, Q, dtype=f32, device=dev)
    ent = torch.empty(B, H, Q, dtype=f32, device=dev)
    maxw = torch.empty(B, H, Q, dtype=f32, device=dev)
    amax = torch.empty(B, H, Q, dtype=torch.int64, device=dev)
    cm = torch.empty(B, H, Q, NC_PAD, dtype=f32, device=dev) if segments is not None else dummy
    sc = float(softcap) if softcap is not None else 1.0
    flags = dict(CAUSAL=bool(causal), HAS_KV=key_valid is not None, HAS_CLS=segments is not None,
                 HAS_BIAS=edit.segment_scale is not None, HAS_SOFTCAP=softcap is not None)
    tiles = dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, D_PAD=D_PAD, NC_PAD=NC_PAD, PREC=prec,
                 NSPLIT=3 if q.dtype == torch.float32 else 2,
                 num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    general = edit.needs_probabilities
    strides = (*q.stride(), *k.stride(), *v.stride(), *out.stride(), kv8.stride(0), kv8.stride(1))
    dims = (H, G, Q, K, K - Q, D, float(scale), sc)
    grid = (triton.cdiv(Q, cfg.block_m), B * H)
    _fwd_kernel[grid](q, k, v, kv8, cls, bias, osc, out, lse, ent, maxw, amax, cm, *strides, *dims,
                      HAS_OSCALE=edit.out_scale is not None, LSE_ONLY=general, **flags, **tiles)
    row_in, pflags = _row_inputs(prob, causal, key_valid, cm if segments is not None else None, table, NC_PAD, dev)
    if general:
        cm_pre = cm
        cm = torch.empty_like(cm_pre) if segments is not None else dummy
        _edited_kernel[grid](q, k, v, kv8, cls, bias, osc, lse, *row_in, out, ent, maxw, amax, cm, *strides, *dims,
                             HAS_OSCALE=edit.out_scale is not None, **flags, **pflags, **tiles)
    km = None
    qk_strides = (*q.stride(), *k.stride(), kv8.stride(0), kv8.stride(1))
    if key_mass:
        km = torch.empty(B, H, K, dtype=f32, device=dev)
        _keymass_kernel[(triton.cdiv(K, cfg.block_n), B * H)](
            q, k, kv8, cls, bias, lse, *row_in, km, *qk_strides, *dims, **flags, **pflags, **tiles)
    rows = None
    if prob.rows is not None:
        heads, qidx = (t.to(device=dev, dtype=torch.int32).contiguous() for t in prob.rows)
        NH, NQ = heads.shape[0], qidx.shape[1]
        rows = torch.zeros(B, NH, NQ, K, dtype=f32, device=dev)
        _rows_kernel[(triton.cdiv(K, cfg.block_n), B * NH, triton.cdiv(NQ, cfg.block_m))](
            q, k, kv8, cls, bias, lse, *row_in, heads, qidx, rows, *qk_strides,
            H, G, NH, NQ, Q, K, K - Q, D, float(scale), sc, **flags, **pflags, **tiles)
    segm = None
    if segments is not None:
        segm = torch.einsum("bhqc,cs->bhqs", cm[..., :nc], table.to(dev))
    return KernelStats(out=out, lse=lse, entropy=ent, max_weight=maxw, argmax=amax, segment_mass=segm,
                       key_mass=km, rows=rows)
