"""CPU backend: exact softmax over blocks of query rows, without O(n^2) memory.

Each block of ``block_q`` queries sees all its keys at once (with ``causal`` only keys up to the block's
last position), so the softmax per block is exact and no online rescaling is needed. The query heads of
one kv head are stacked into one matmul (``[batch, kv_head, group*block_q, d_head]``) instead of copying
K/V per query head. Peak extra memory is one score buffer of ``batch*head_index*block_q*key_pos`` floats per
worker thread.

Scores of invisible keys get a large finite negative value (``NEG``) rather than -inf, so that ``exp`` gives
exact zeros and ``p*s`` never produces NaN; rows whose max stays below ``NEG/2`` have no visible key and get
the empty-row values.

Two row passes turn a block's scores into statistics:

- the fused C pass (``_rows.c``, built by :mod:`._cext`; fp32 on the CPU without edits of the probabilities
  themselves, the common case; softcaps and segment-scale logit biases included). Each score row is read into
  cache once while max, argmax, ``e = exp(s - max)``, ``Σ e``, ``Σ e·(s - max)`` (so entropy =
  ``log Σe - Σ e·(s-max) / Σe``), the segment masses and the key-mass accumulation are computed; the one
  product ``e @ V`` is then exactly d_head wide. Per layer this costs 1.06-1.39× SDPA at n = 512…8192 (the
  PyTorch pass: 2.0-2.8×; ``benchmarks/attn_kernel.py``, table in benchmarks/RESULTS.md).
- the PyTorch pass, which is the fallback (no compiler, ``INTERP_NO_CEXT=1``) and handles everything else.
  One widened product ``e @ [V | K | segments | 1]`` gives the output, ``Σ e·k`` (so ``Σ p·s = q·(P K)`` and
  entropy = ``log l + shift - Σ p·s`` without a pass over ``p·s``), the segment masses and the softmax
  denominator ``l``. With a logit softcap ``s`` is not linear in ``k``; entropy then comes from an explicit
  ``Σ e·(s - shift)`` pass.

Sliding windows: a block's scores start at the first key any of its queries sees (``_kstart``), so a window of
512 at n = 4096 computes an eighth of the products; inside the block the C pass starts each row at its own band
edge and the PyTorch pass masks the band. Learned sink logits (``sinks``): the C pass shifts each row by the max
over keys and sink and adds the sink's ``e`` to ``Σ e`` and ``Σ e·(s - m)``; the PyTorch pass folds the sink into
each row's real-key statistics afterwards (exact: disjoint supports, see ``_with_sink``).

Blocks run on a few single-threaded worker threads (:mod:`._threads`), one parallel region per call: the
per-op OpenMP regions of earlier versions collapsed to 67-70× SDPA when another process kept one core busy.
Timings: ``benchmarks/attn_kernel.py`` (see benchmarks/RESULTS.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import threading

import torch

from ._cext import rows_lib
from ._common import KernelStats, Problem, compute_dtype, query_valid
from ._threads import chunked, run_chunks
from .edits import ACT_EMPTY

NEG = -1.0e30
DEFAULT_BLOCK_Q = 64
C_MAX_SEGMENTS = 8  # beyond this many, segment masses are cheaper as extra columns of the P·V product
CHUNKS_PER_THREAD = 4  # work units per worker: fine enough that a slowed worker just takes fewer


def _block_size(prob: Problem, block_q: Optional[int]) -> int:
    if block_q is not None:
        return max(1, int(block_q))
    return DEFAULT_BLOCK_Q


@dataclass
class _Ctx:
    """Everything a query block needs, shared read-only by the workers (outputs are written by slice)."""

    prob: Problem
    causal: bool
    cd: torch.dtype
    bq: int
    qg: torch.Tensor  # [B, KV, G, Q, D] scaled queries
    kT: torch.Tensor  # [BK, D, K]
    vext: torch.Tensor  # [BK, K, W]: V | (K) | segments | 1 | pad
    k_col: Optional[int]  # first column of K in vext (None: entropy from an explicit pass)
    s_col: int  # first segment column
    l_col: int  # the ones column
    kvb: Optional[torch.Tensor]
    lb: Optional[torch.Tensor]
    logg: Optional[torch.Tensor]  # [BK*G, 1, S] log gamma per row group, for Σ p·bias
    segT: Optional[torch.Tensor]
    key_valid: Optional[torch.Tensor]
    qvw: Optional[torch.Tensor]
    tri: Optional[torch.Tensor]
    softcap: Optional[float]
    out: torch.Tensor
    lse: torch.Tensor
    ent: torch.Tensor
    maxw: torch.Tensor
    amax: torch.Tensor
    segm: Optional[torch.Tensor]
    key_mass: bool
    rows_out: Optional[torch.Tensor]
    clib: object = None  # the fused C row pass (``_rows.c``) when it applies, else None
    bias2: Optional[torch.Tensor] = None  # [B or B*H, K] logit bias for the C pass (padding, segment scaling)
    bias_div: int = 1  # rows of (batch, head) groups per bias2 row
    qw2: Optional[torch.Tensor] = None  # [B, Q] key-mass weight per query for the C pass
    seg_c: Optional[torch.Tensor] = None  # [B, S, K] segments whose masses the C pass computes
    seg_span: Optional[torch.Tensor] = None  # [B, S, 2] int64: keys [from, to) holding each segment's nonzero weights
    window: Optional[int] = None  # sliding window (band mask); None: every causal key
    sinks: Optional[torch.Tensor] = None  # [H] learned sink logits in the compute dtype
    sinkm: Optional[torch.Tensor] = None  # [B, KV, G, Q] sink-column probability
    rinv: Optional[torch.Tensor] = None  # [B, KV, G, Q] 1/normaliser for the C pass when it differs from maxw


def attn_stats_cpu(
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
    block_q: Optional[int] = None,
) -> KernelStats:
    B, H, Q, K, G, KV, D, S = (
        prob.batch, prob.n_heads, prob.q_len, prob.k_len, prob.group, prob.n_kv, prob.d_head, prob.n_segments,
    )
    with torch.no_grad():
        ctx = _context(q, k, v, prob, scale, causal, key_valid, segments, key_mass, softcap, block_q)
        blocks = [(i0, min(Q, i0 + ctx.bq)) for i0 in range(0, Q, ctx.bq)]
        chunks = chunked(blocks, CHUNKS_PER_THREAD * torch.get_num_threads())
        partial = run_chunks(lambda c: _run_chunk(ctx, c), chunks)
        kmass = None
        if key_mass:
            kmass = torch.zeros(B * KV * G, K, dtype=ctx.cd, device=q.device)
            for part in partial:  # chunk order: deterministic
                kmass[:, : part.shape[1]] += part
        out = ctx.out.view(B, H, Q, D)
        if prob.edit.out_scale is not None:
            out = out * prob.edit.out_scale.to(device=q.device, dtype=ctx.cd).view(B, H, 1, 1)
        f32 = torch.float32
        return KernelStats(
            sink_mass=None if ctx.sinkm is None else ctx.sinkm.view(B, H, Q).to(f32),
            out=out.to(q.dtype),
            lse=ctx.lse.view(B, H, Q).to(f32),
            entropy=ctx.ent.view(B, H, Q).to(f32),
            max_weight=ctx.maxw.view(B, H, Q).to(f32),
            argmax=ctx.amax.view(B, H, Q),
            segment_mass=None if ctx.segm is None else ctx.segm.view(B, H, Q, S).to(f32),
            key_mass=None if kmass is None else kmass.view(B, H, K).to(f32),
            rows=ctx.rows_out,
        )


def _context(q, k, v, prob, scale, causal, key_valid, segments, key_mass, softcap, block_q) -> _Ctx:
    B, H, Q, K, G, KV, D, S = (
        prob.batch, prob.n_heads, prob.q_len, prob.k_len, prob.group, prob.n_kv, prob.d_head, prob.n_segments,
    )
    edit, cd, dev = prob.edit, compute_dtype(q.dtype), q.device
    general = edit.needs_probabilities
    BK = B * KV
    qf = q.to(cd) * (scale / softcap if softcap is not None else scale)
    kc = k.to(cd)
    clib = _c_pass(prob, cd, dev)
    identity = not general and softcap is None and clib is None  # Σ p·s from q·(P K)
    parts = [v.to(cd)] + ([kc] if identity else [])
    seg_c = seg_span = None  # few segments: masses from dot products in the C pass, keeping P·V exactly d_head wide
    if clib is not None and segments is not None and S <= C_MAX_SEGMENTS:
        seg_c = segments.to(cd).contiguous()
        seg_span = _support(seg_c)
    elif segments is not None:
        parts.append(segments.to(cd).transpose(1, 2)[:, None].expand(B, KV, K, S))
    if clib is None:  # the C pass returns Σ e itself
        parts.append(torch.ones(B, KV, K, 1, dtype=cd, device=dev))
    width = sum(t.shape[-1] for t in parts)
    if width % 16:  # GEMM widths that are multiples of 16 run faster (67 -> 80: ~7%)
        parts.append(torch.zeros(B, KV, K, -width % 16, dtype=cd, device=dev))
    s_col = D * (2 if identity else 1)
    kvb = None  # additive key-padding bias [B, 1, 1, 1, K]
    if key_valid is not None and not bool(key_valid.all()):
        kvb = torch.zeros(B, 1, 1, 1, K, dtype=cd, device=dev).masked_fill_(~key_valid.view(B, 1, 1, 1, K), NEG)
    lb = logg = None  # segment_scale logit bias [B, KV, G, 1, K]
    if edit.segment_scale is not None:
        lg = edit.log_gamma().clamp_min(NEG).to(dev)  # [B, H, S]
        lb = torch.einsum("bsk,bhs->bhk", segments.to(torch.float64), lg).to(cd).view(B, KV, G, 1, K)
        logg = lg.to(cd).view(BK, G, 1, S)
    qv = query_valid(key_valid, Q, K)
    qvw = qw2 = None  # key-mass weight of each query: per row group for the PyTorch pass, [B, Q] for the C pass
    if key_mass and qv is not None and not bool(qv.all()):
        if clib is None:
            qvw = qv.to(cd).view(B, 1, 1, Q).expand(B, KV, G, Q).reshape(BK * G, 1, Q)
        else:
            qw2 = qv.to(cd).view(B, Q).contiguous()
    bias2, bias_div = None, KV * G  # for the C pass: one bias row per batch row, or per (batch, head) with lb
    if clib is not None and lb is not None:
        bias2, bias_div = (lb if kvb is None else lb + kvb).reshape(B * KV * G, K).contiguous(), 1
    elif clib is not None and kvb is not None:
        bias2 = kvb.view(B, K).contiguous()
    bq = min(_block_size(prob, block_q), Q)
    return _Ctx(
        prob=prob, causal=causal, cd=cd, bq=bq, qg=qf.view(B, KV, G, Q, D),
        kT=kc.reshape(BK, K, D).transpose(1, 2), vext=torch.cat(parts, dim=-1).reshape(BK, K, -1),
        k_col=D if identity else None, s_col=s_col, l_col=s_col + S, kvb=kvb, lb=lb, logg=logg,
        segT=segments.to(cd).transpose(1, 2).contiguous()[:, None] if general and segments is not None else None,
        key_valid=key_valid, qvw=qvw, tri=torch.full((bq, bq), NEG, dtype=cd, device=dev).triu_(1) if causal else None,
        softcap=softcap,
        out=torch.empty(B, KV, G, Q, D, dtype=cd, device=dev), lse=torch.empty(B, KV, G, Q, dtype=cd, device=dev),
        ent=torch.empty(B, KV, G, Q, dtype=cd, device=dev), maxw=torch.empty(B, KV, G, Q, dtype=cd, device=dev),
        amax=torch.empty(B, KV, G, Q, dtype=torch.int64, device=dev),
        segm=torch.empty(B, KV, G, Q, S, dtype=cd, device=dev) if segments is not None else None,
        key_mass=key_mass,
        rows_out=None if prob.rows is None else torch.zeros(B, len(prob.rows[0]), prob.rows[1].shape[1], K, device=dev),
        clib=clib, bias2=bias2, bias_div=bias_div, qw2=qw2, seg_c=seg_c, seg_span=seg_span, window=prob.window,
        sinks=None if prob.sinks is None else prob.sinks.to(dtype=cd).contiguous(),
        sinkm=None if prob.sinks is None else torch.empty(B, KV, G, Q, dtype=cd, device=dev),
        rinv=None if prob.sinks is None or clib is None else torch.empty(B, KV, G, Q, dtype=cd, device=dev),
    )


def _support(seg: torch.Tensor) -> torch.Tensor:
    """``[B, S, K]`` segment weights → ``[B, S, 2]`` int64 ``[from, to)``: the smallest key range holding every
    nonzero weight (``[0, 0)`` for an all-zero segment)."""
    nz = seg != 0
    k = torch.arange(seg.shape[-1], device=seg.device)
    lo = torch.where(nz, k, seg.shape[-1]).amin(dim=-1)
    hi = torch.where(nz, k + 1, 0).amax(dim=-1)
    return torch.stack([lo.clamp_max(hi), hi], dim=-1).to(torch.int64).contiguous()


def _c_pass(prob: Problem, cd: torch.dtype, dev: torch.device) -> object:
    """The C row pass covers fp32 on the CPU without edits of the probabilities themselves (logit biases and
    softcaps are fine). Everything else takes the PyTorch row pass (which tests also compare it with)."""
    if cd != torch.float32 or dev.type != "cpu" or prob.edit.needs_probabilities:
        return None
    return rows_lib()


def _run_chunk(ctx: _Ctx, blocks) -> Optional[torch.Tensor]:
    """Run query blocks in order; return this chunk's key-mass partial sums ``[BK*G, kend_max]``."""
    prob = ctx.prob
    BK, R_max = prob.batch * prob.n_kv, prob.group * ctx.bq
    kend_max = max(_kend(ctx, i1) for _, i1 in blocks)
    buf = _scratch(BK * R_max * kend_max, ctx.cd, ctx.qg.device)
    ebuf = torch.empty_like(buf) if ctx.k_col is None and ctx.clib is None else None  # PyTorch pass: softcap, edits
    kacc = torch.zeros(BK * prob.group, kend_max, dtype=ctx.cd, device=ctx.qg.device) if ctx.key_mass else None
    for i0, i1 in blocks:
        _block(ctx, i0, i1, buf, ebuf, kacc)
    return kacc


_LOCAL = threading.local()
_KEEP_BYTES = 64 * 2**20


def _scratch(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """This thread's score buffer, kept between calls (grown, never shrunk). Allocating and freeing it per
    call, between the main thread's activations, fragmented glibc's heap: over SmolLM2's 30 layers at
    n = 8192 peak RSS grew 0.65 GB more than an SDPA forward's. One buffer per worker thread (two by
    default) is held instead: 19 MB each at n = 8192 for SmolLM2; buffers above ``_KEEP_BYTES`` are not kept."""
    if device.type != "cpu" or numel * dtype.itemsize > _KEEP_BYTES:
        return torch.empty(numel, dtype=dtype, device=device)
    cur = getattr(_LOCAL, "buf", None)
    if cur is None or cur.dtype != dtype or cur.numel() < numel:
        _LOCAL.buf = cur = None  # free the old one first
        _LOCAL.buf = cur = torch.empty(numel, dtype=dtype)
    return cur[:numel]


def _kend(ctx: _Ctx, i1: int) -> int:
    return ctx.prob.offset + i1 if ctx.causal else ctx.prob.k_len


def _kstart(ctx: _Ctx, i0: int) -> int:
    """First key any query of the block at ``i0`` sees: with a sliding window the block's scores start there
    (a window of 512 at n = 4096 computes an eighth of the products). Probability edits index whole rows, so
    they keep every column and mask the band instead."""
    if ctx.window is None or ctx.prob.edit.needs_probabilities:
        return 0
    return max(0, ctx.prob.offset + i0 - ctx.window + 1)


def _block(ctx: _Ctx, i0: int, i1: int, buf, ebuf, kacc) -> None:
    prob = ctx.prob
    B, KV, G, D, S = prob.batch, prob.n_kv, prob.group, prob.d_head, prob.n_segments
    BK, nq = B * KV, i1 - i0
    R, kend, k0 = G * nq, _kend(ctx, i1), _kstart(ctx, i0)
    kw = kend - k0  # score columns: keys k0..kend-1
    size = BK * R * kw
    qb = ctx.qg[:, :, :, i0:i1].reshape(BK, R, D)
    s = torch.bmm(qb, ctx.kT[:, :, k0:kend], out=buf[:size].view(BK, R, kw))
    if ctx.clib is not None:
        return _block_c(ctx, s, i0, i1, k0, kend, kacc)
    if ctx.softcap is not None:
        s.tanh_().mul_(ctx.softcap)
    s5 = s.view(B, KV, G, nq, kw)
    if ctx.causal:
        s5[..., kw - nq :].add_(ctx.tri[:nq, :nq])
    if ctx.window is not None:  # keys at or before p - window; tri already hides the future
        qpos = torch.arange(prob.offset + i0, prob.offset + i1, device=s.device)
        far = torch.arange(k0, kend, device=s.device)[None, :] <= (qpos - ctx.window)[:, None]  # [nq, kw]
        s5.masked_fill_(far, NEG)
    if ctx.kvb is not None:
        s5.add_(ctx.kvb[..., k0:kend])
    if ctx.lb is not None:
        s5.add_(ctx.lb[..., k0:kend])
    m, am = s.max(dim=-1)  # [BK, R]
    if k0:
        am += k0
    empty = m <= NEG / 2
    mv = m.masked_fill(empty, 0.0)
    # Without the shift exp() cannot overflow (and lost entries are < e^-67 relative) when every
    # non-empty row max lies in [-20, 60]; skip the subtraction pass then.
    shifted = not (float(mv.max()) <= 60.0 and float(mv.min()) >= -20.0)
    if shifted:
        s.sub_(mv.unsqueeze(-1))
    if ctx.prob.edit.needs_probabilities:
        p, o, rinv, e_row, mw, ai, logl = _general(ctx, s, ebuf[:size].view(BK, R, kw), i0, nq, kend, empty)
    else:
        p, o, rinv, e_row, mw, ai, logl = _plain(ctx, s, qb, ebuf, size, empty, mv, am, m, shifted, k0)
    lse_b = (logl + mv if shifted else logl).masked_fill_(empty, -torch.inf)
    sl = (slice(None), slice(None), slice(None), slice(i0, i1))
    if ctx.sinks is not None:  # fold in the sink column: exact, from the real-key statistics of each row
        lse_b, e_row, f = _with_sink(ctx, lse_b, e_row, nq)
        mw, o = mw * f, o * f.unsqueeze(-1)
        rinv = rinv * f
        ctx.sinkm[sl] = torch.exp(_sink_rows(ctx, nq) - lse_b).view(B, KV, G, nq)
    ctx.lse[sl] = lse_b.view(B, KV, G, nq)
    ctx.ent[sl] = e_row.view(B, KV, G, nq)
    ctx.maxw[sl] = mw.view(B, KV, G, nq)
    ctx.amax[sl] = ai.view(B, KV, G, nq)
    ctx.out[sl] = o[..., :D].view(B, KV, G, nq, D)
    if ctx.segm is not None:
        ctx.segm[sl] = o[..., ctx.s_col : ctx.s_col + S].view(B, KV, G, nq, S)
    if kacc is not None:
        w = torch.ones(BK * G, 1, nq, dtype=ctx.cd, device=s.device) if rinv is None else rinv.view(BK * G, 1, nq)
        if ctx.qvw is not None:
            w = w * ctx.qvw[..., i0:i1]
        kacc[:, k0:kend] += torch.bmm(w, p.view(BK * G, nq, kw)).view(BK * G, kw)
    if ctx.rows_out is not None:
        _take_rows(ctx.rows_out, p.view(B, KV * G, nq, kw), rinv, prob, i0, nq, k0)


def _sink_rows(ctx: _Ctx, nq: int) -> torch.Tensor:
    """The sink logit of every row of a block, ``[BK, G*nq]`` (rows ordered kv head, group, query)."""
    prob = ctx.prob
    return ctx.sinks.view(1, prob.n_kv, prob.group, 1).expand(prob.batch, -1, -1, nq).reshape(prob.batch * prob.n_kv, -1)


def _with_sink(ctx: _Ctx, lse_r: torch.Tensor, ent_r: torch.Tensor, nq: int):
    """Real-key ``lse_r``, entropy ``ent_r`` → those of the distribution with the sink column, and the real
    keys' share ``f``. The sink (logit z) and the keys have disjoint supports, so with
    ``L = logaddexp(lse_r, z)``, ``f = e^(lse_r - L)``, ``g = e^(z - L) = 1 - f``:
    ``H = f·H_r - f·log f - g·log g`` (log f and log g taken exactly as lse_r - L and z - L)."""
    z = _sink_rows(ctx, nq)
    lse = torch.logaddexp(lse_r, z)
    lf = lse_r - lse  # -inf on rows without a visible key: f = 0, all mass on the sink
    f, g = torch.exp(lf), torch.exp(z - lse)
    ent = torch.where(f > 0, f * (ent_r - lf), torch.zeros((), dtype=f.dtype, device=f.device)) - g * (z - lse)
    return lse, ent, f


def _ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def _block_c(ctx: _Ctx, s: torch.Tensor, i0: int, i1: int, k0: int, kend: int, kacc) -> None:
    """Scores ``s [BK, R, kend - k0]`` → statistics in the C pass, then one product with ``[V | segments]``."""
    prob = ctx.prob
    B, KV, G, Q, D, S = prob.batch, prob.n_kv, prob.group, prob.q_len, prob.d_head, prob.n_segments
    nq, kw = i1 - i0, kend - k0
    if ctx.softcap is not None:  # the queries carry scale / softcap
        s.tanh_().mul_(ctx.softcap)
    rinv_buf = ctx.maxw if ctx.rinv is None else ctx.rinv  # without sinks rinv equals maxw
    ctx.clib.interp_attn_rows(
        s.data_ptr(), B * KV * G, nq, kw, k0, kend, prob.offset + i0, int(ctx.causal), ctx.window or 0, KV * G,
        _ptr(ctx.bias2), ctx.bias_div, prob.k_len, _ptr(ctx.qw2), Q, i0,
        _ptr(kacc), 0 if kacc is None else kacc.shape[1], _ptr(ctx.seg_c), S, prob.k_len, _ptr(ctx.seg_span), _ptr(ctx.segm),
        ctx.lse.data_ptr(), ctx.ent.data_ptr(), ctx.maxw.data_ptr(), ctx.amax.data_ptr(),
        _ptr(ctx.sinks), _ptr(ctx.sinkm), rinv_buf.data_ptr(),
    )
    sl = (slice(None), slice(None), slice(None), slice(i0, i1))
    rinv = rinv_buf[sl].reshape(B * KV, G * nq, 1)
    o = torch.bmm(s, ctx.vext[:, k0:kend]).mul_(rinv)  # [BK, R, W]
    ctx.out[sl] = o[..., :D].view(B, KV, G, nq, D)
    if ctx.segm is not None and ctx.seg_c is None:
        ctx.segm[sl] = o[..., ctx.s_col : ctx.s_col + S].view(B, KV, G, nq, S)
    if ctx.rows_out is not None:
        _take_rows(ctx.rows_out, s.view(B, KV * G, nq, kw), rinv, prob, i0, nq, k0)


def _plain(ctx, s, qb, ebuf, size, empty, mv, am, m, shifted, k0=0):
    """No probability edits: statistics from exponentials ``e`` and the widened product, normalised per row."""
    D, S = ctx.prob.d_head, ctx.prob.n_segments
    if ctx.k_col is None:  # softcap: explicit Σ e·(s - shift)
        e = torch.exp(s, out=ebuf[:size].view_as(s))
        t = s.mul_(e).sum(dim=-1)
    else:
        e = s.exp_()
    o = torch.bmm(e, ctx.vext[:, k0 : k0 + s.shape[-1]])  # [BK, R, W]
    l = o[..., ctx.l_col]
    rinv = l.reciprocal().masked_fill_(empty, 0.0)
    logl = l.log()
    if ctx.k_col is None:
        e_row = logl - t * rinv
    else:  # Σ p·s = q·(Σ p k) (+ Σ_s log γ_s · mass_s); entropy = log l + shift - Σ p·s
        ps = (qb * o[..., ctx.k_col : ctx.k_col + D]).sum(-1) * rinv
        if ctx.logg is not None:
            BK, R = o.shape[:2]
            seg = o[..., ctx.s_col : ctx.s_col + S].view(BK, ctx.prob.group, -1, S)
            ps = ps + (seg * ctx.logg).sum(-1).view(BK, R) * rinv
        e_row = logl - ps + (mv if shifted else 0.0)
    e_row = e_row.masked_fill_(empty, 0.0)
    mw = rinv if shifted else rinv * torch.exp(m)
    o = o * rinv.unsqueeze(-1)
    return e, o, rinv, e_row, mw, am.masked_fill_(empty, -1), logl


def _general(ctx, s, ebuf, i0, nq, kend, empty):
    """Probability edits: normalise, edit the exact probabilities, then reduce them."""
    prob = ctx.prob
    B, KV, G = prob.batch, prob.n_kv, prob.group
    e = torch.exp(s, out=ebuf)
    l = e.sum(dim=-1)
    rinv = l.reciprocal().masked_fill_(empty, 0.0)
    p = e.mul_(rinv.unsqueeze(-1))
    kpos = torch.arange(kend, device=s.device)
    _apply_prob_edits(p.view(B, KV, G, nq, kend), prob, i0, nq, kend, ctx.key_valid, ctx.segT, ctx.causal, kpos,
                      s.device, ctx.cd)
    e_row = -torch.special.xlogy(p, p).sum(dim=-1)
    mw, ai = p.max(dim=-1)
    ai = ai.masked_fill_(mw <= 0, -1)
    o = torch.bmm(p, ctx.vext[:, :kend])
    return p, o, None, e_row, mw, ai, l.log()


def _take_rows(rows_out, p4, rinv, prob: Problem, i0: int, nq: int, k0: int = 0) -> None:
    """Copy the requested rows of this query block (``p4 [B, H, nq, kend]``, scaled by ``rinv`` when it holds
    unnormalised exponentials) into ``rows_out [B, NH, NQ, K]``."""
    heads, queries = prob.rows
    bsel, qsel = ((queries >= i0) & (queries < i0 + nq)).nonzero(as_tuple=True)
    if len(bsel) == 0:
        return
    qloc = (queries[bsel, qsel] - i0)[:, None]
    vals = p4[bsel[:, None], heads[None, :], qloc]  # [n, NH, kend]
    if rinv is not None:
        vals = vals * rinv.view(p4.shape[:3])[bsel[:, None], heads[None, :], qloc][..., None]
    rows_out[bsel[:, None], torch.arange(len(heads), device=p4.device)[None, :], qsel[:, None], k0 : k0 + p4.shape[-1]] = vals.float()


def _apply_prob_edits(p5, prob, i0, nq, kend, key_valid, segT, causal, kpos, dev, cd) -> None:
    """In place on exact probabilities ``p5 [B, KV, G, nq, kend]``: redistribute, uniform mix, identity mix."""
    B, KV, G = prob.batch, prob.n_kv, prob.group
    edit, off = prob.edit, prob.offset
    if edit.segment_redistribute is not None:
        beta = edit.segment_redistribute.to(device=dev, dtype=cd)
        for si in range(prob.n_segments):
            b = beta[:, :, si]
            if bool((b == 1).all()):
                continue
            sg = segT[:, :, :kend, si : si + 1]  # [B, 1, kend, 1]
            p4 = p5.view(B, KV, G * nq, kend)
            m = torch.matmul(p4, sg).view(B, KV, G, nq, 1)
            m_out = torch.matmul(p4, 1 - sg).view(B, KV, G, nq, 1)
            bb = b.view(B, KV, G, 1, 1)
            m_new = torch.minimum(bb * m, m + m_out)
            keep = m_out <= ACT_EMPTY
            f_in = torch.where(keep | (m <= 0), torch.ones_like(m), m_new / m.clamp_min(1e-30))
            f_out = torch.where(keep, torch.ones_like(m), (m + m_out - m_new) / m_out.clamp_min(1e-30))
            # where(), not f_out + (f_in - f_out)·sg: f_out can be ~1e8 when little mass is left outside
            p5.mul_(torch.where(sg.view(B, 1, 1, 1, kend) > 0, f_in, f_out))
    if edit.uniform_mix is not None or edit.identity_mix is not None:
        _mix(p5, prob, i0, nq, kend, key_valid, causal, kpos, dev, cd)
    if edit.override is not None:
        idx = edit.override.index[:, :, i0 : i0 + nq].to(dev).view(B, KV, G, nq)
        hit = idx >= 0
        if bool(hit.any()):
            p5[hit] = edit.override.weights.to(device=dev, dtype=cd)[idx[hit], :kend]


def _mix(p5, prob, i0, nq, kend, key_valid, causal, kpos, dev, cd) -> None:
    B, KV, G = prob.batch, prob.n_kv, prob.group
    edit, off = prob.edit, prob.offset
    qpos = torch.arange(off + i0, off + i0 + nq, device=dev)
    vis = torch.ones(B, 1, 1, nq, kend, dtype=torch.bool, device=dev)
    if causal:
        vis = vis & (kpos[None, :kend] <= qpos[:, None])
    if prob.window is not None:
        vis = vis & (kpos[None, :kend] > qpos[:, None] - prob.window)
    if key_valid is not None:
        vis = vis & key_valid[:, None, None, None, :kend]
    if edit.uniform_mix is not None:
        u = edit.uniform_mix.to(device=dev, dtype=cd).view(B, KV, G, 1, 1)
        nvis = vis.sum(-1, keepdim=True)
        U = vis.to(cd) / nvis.clamp_min(1).to(cd)
        p5.copy_(torch.where(nvis > 0, (1 - u) * p5 + u * U, p5))
    if edit.identity_mix is not None:
        u = edit.identity_mix.to(device=dev, dtype=cd).view(B, KV, G, 1)
        own = vis[..., torch.arange(nq, device=dev), qpos]  # [B, 1, 1, nq]
        fac = torch.where(own, 1 - u, torch.ones((), dtype=cd, device=dev))
        p5.mul_(fac.unsqueeze(-1))
        rr = torch.arange(nq, device=dev)
        p5[:, :, :, rr, qpos] += torch.where(own, u, torch.zeros((), dtype=cd, device=dev))
