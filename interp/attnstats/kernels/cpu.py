"""CPU backend: exact softmax over blocks of query rows, without O(n^2) memory.

Each block of ``block_q`` queries sees all its keys at once (with ``causal`` only keys up to the block's
last position), so the softmax per block is exact and no online rescaling is needed. The query heads of
one kv head are stacked into one matmul (``[batch, kv_head, group*block_q, d_head]``) instead of copying
K/V per query head. Peak extra memory is ~2 buffers of ``batch*head_index*block_q*key_pos`` floats.

Scores of invisible keys get a large finite negative value (``NEG``) rather than -inf, so that
``exp`` gives exact zeros and ``p*s`` never produces NaN; rows whose max stays below ``NEG/2`` have no
visible key and get the empty-row values. Entropy is ``log l - Σ e·(s-m) / l`` with ``e = exp(s-m)``.

Timings (``benchmarks/attn_kernel.py``; batch 1, 9 query / 3 kv heads, d_head 64, causal, fp32,
2 segments + key_mass, 2 threads, median of 3; SDPA = ``F.scaled_dot_product_attention``):
see the table above :data:`BENCHMARK` below (about 2x SDPA at n = 512..8192).
"""
from __future__ import annotations

from typing import Optional

import torch

from .edits import ACT_EMPTY
from ._common import KernelStats, Problem, compute_dtype, query_valid

NEG = -1.0e30
DEFAULT_BLOCK_Q = 64

# Measured on a quiet 2-core Xeon (AVX-512) VM, torch 2.13 CPU, median of 3 (ms), 9/3 heads, d_head 64:
#   n     SDPA    cpu stats (2 segs + key_mass)   ratio
#   512    3.0     6.3                            2.1
#   2048  26.9    56.3                            2.1
#   8192 354      691                             1.95
# What helped: the V|seg|1 extended matmul (segment masses and l for free; widths padded to 16), skipping
# the max-subtraction when exp cannot overflow, preallocated score/exp buffers with out=, key_mass as a
# GEMV with 1/l weights (no normalisation pass), block_q 64 (32: more per-op overhead, >=256: cache misses).
# The remaining gap is torch.max with indices (~10%) and exp/mul/sum passes that SDPA fuses.
# Many small parallel ops make this path sensitive to other processes competing for the cores.
BENCHMARK = {512: (3.0, 6.3), 2048: (26.9, 56.3), 8192: (354.0, 691.0)}


def _block_size(prob: Problem, block_q: Optional[int]) -> int:
    if block_q is not None:
        return max(1, int(block_q))
    return DEFAULT_BLOCK_Q


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
    off = prob.offset
    edit = prob.edit
    general = edit.needs_probabilities
    cd = compute_dtype(q.dtype)
    dev = q.device
    bq = min(_block_size(prob, block_q), Q)

    with torch.no_grad():
        BK = B * KV
        qf = q.to(cd) * (scale / softcap if softcap is not None else scale)
        qg = qf.view(B, KV, G, Q, D)
        kT = k.to(cd).reshape(BK, K, D).transpose(1, 2)  # [BK, D, K] view
        # V extended with the segment indicators and a ones column: one matmul gives the output, the
        # segment masses and the softmax denominator.
        parts = [v.to(cd)]
        if segments is not None:
            parts.append(segments.to(cd).transpose(1, 2)[:, None].expand(B, KV, K, S))
        parts.append(torch.ones(B, KV, K, 1, dtype=cd, device=dev))
        pad = -(D + S + 1) % 16  # GEMM widths that are multiples of 16 run faster (67 -> 80: ~7%)
        if pad:
            parts.append(torch.zeros(B, KV, K, pad, dtype=cd, device=dev))
        vext = torch.cat(parts, dim=-1).reshape(BK, K, -1)

        out = torch.empty(B, KV, G, Q, D, dtype=cd, device=dev)
        lse = torch.empty(B, KV, G, Q, dtype=cd, device=dev)
        ent = torch.empty(B, KV, G, Q, dtype=cd, device=dev)
        maxw = torch.empty(B, KV, G, Q, dtype=cd, device=dev)
        amax = torch.empty(B, KV, G, Q, dtype=torch.int64, device=dev)
        segm = torch.empty(B, KV, G, Q, S, dtype=cd, device=dev) if segments is not None else None
        kmass = torch.zeros(BK * G, K, dtype=cd, device=dev) if key_mass else None

        kvb = None  # additive key-padding bias [B, 1, 1, 1, K]
        if key_valid is not None and not bool(key_valid.all()):
            kvb = torch.zeros(B, 1, 1, 1, K, dtype=cd, device=dev).masked_fill_(~key_valid.view(B, 1, 1, 1, K), NEG)
        lb = None  # segment_scale logit bias [B, KV, G, 1, K]
        if edit.segment_scale is not None:
            logg = edit.log_gamma().clamp_min(NEG).to(dev)
            lb = torch.einsum("bsk,bhs->bhk", segments.to(torch.float64), logg).to(cd).view(B, KV, G, 1, K)
        segT = segments.to(cd).transpose(1, 2).contiguous()[:, None] if general and segments is not None else None
        qv = query_valid(key_valid, Q, K)
        qvw = None
        if key_mass and qv is not None and not bool(qv.all()):
            qvw = qv.to(cd).view(B, 1, 1, Q).expand(B, KV, G, Q).reshape(BK * G, 1, Q)
        rows_out = None
        if prob.rows is not None:
            rows_out = torch.zeros(B, len(prob.rows[0]), prob.rows[1].shape[1], K, dtype=torch.float32, device=dev)
        tri = torch.full((bq, bq), NEG, dtype=cd, device=dev).triu_(1) if causal else None
        kpos = torch.arange(K, device=dev)
        sbuf = torch.empty(BK * G * bq * K, dtype=cd, device=dev)
        ebuf = torch.empty(BK * G * bq * K, dtype=cd, device=dev)

        for i0 in range(0, Q, bq):
            i1 = min(Q, i0 + bq)
            nq = i1 - i0
            R = G * nq
            kend = off + i1 if causal else K
            size = BK * R * kend
            qb = qg[:, :, :, i0:i1].reshape(BK, R, D)
            s = torch.bmm(qb, kT[:, :, :kend], out=sbuf[:size].view(BK, R, kend))
            if softcap is not None:
                s.tanh_().mul_(softcap)
            s5 = s.view(B, KV, G, nq, kend)
            if causal:
                s5[..., kend - nq :].add_(tri[:nq, :nq])
            if kvb is not None:
                s5.add_(kvb[..., :kend])
            if lb is not None:
                s5.add_(lb[..., :kend])
            m, am = s.max(dim=-1)  # [BK, R]
            empty = m <= NEG / 2
            mv = m.masked_fill(empty, 0.0)
            # Without the shift exp() cannot overflow (and lost entries are < e^-67 relative) when every
            # non-empty row max lies in [-20, 60]; skip the subtraction pass then.
            shifted = not (float(mv.max()) <= 60.0 and float(mv.min()) >= -20.0)
            if shifted:
                s.sub_(mv.unsqueeze(-1))
            e = torch.exp(s, out=ebuf[:size].view(BK, R, kend))
            if not general:
                t = s.mul_(e).sum(dim=-1)
                o = torch.bmm(e, vext[:, :kend])  # [BK, R, W]
                l = o[..., D + S]
                rinv = l.reciprocal().masked_fill_(empty, 0.0)
                logl = l.log()
                e_row = (logl - t * rinv).masked_fill_(empty, 0.0)
                # entropy = log l - t/l holds for shifted and unshifted scores alike
                mw = rinv if shifted else rinv * torch.exp(m)
                ai = am.masked_fill_(empty, -1)
                lse_b = (logl + mv if shifted else logl).masked_fill_(empty, -torch.inf)
                o = o * rinv.unsqueeze(-1)
                p = e
            else:
                l = e.sum(dim=-1)
                rinv = l.reciprocal().masked_fill_(empty, 0.0)
                p = e.mul_(rinv.unsqueeze(-1))
                _apply_prob_edits(
                    p.view(B, KV, G, nq, kend), prob, i0, nq, kend, key_valid, segT, causal, kpos, dev, cd
                )
                e_row = -torch.special.xlogy(p, p).sum(dim=-1)
                mw, ai = p.max(dim=-1)
                ai = ai.masked_fill_(mw <= 0, -1)
                logl = l.log()
                lse_b = (logl + mv if shifted else logl).masked_fill_(empty, -torch.inf)
                o = torch.bmm(p, vext[:, :kend])
                rinv = None
            sl = (slice(None), slice(None), slice(None), slice(i0, i1))
            lse[sl] = lse_b.view(B, KV, G, nq)
            ent[sl] = e_row.view(B, KV, G, nq)
            maxw[sl] = mw.view(B, KV, G, nq)
            amax[sl] = ai.view(B, KV, G, nq)
            out[sl] = o[..., :D].view(B, KV, G, nq, D)
            if segm is not None:
                segm[sl] = o[..., D : D + S].view(B, KV, G, nq, S)
            if kmass is not None:
                if rinv is None:
                    w = torch.ones(BK * G, 1, nq, dtype=cd, device=dev)
                else:
                    w = rinv.view(BK * G, 1, nq)
                if qvw is not None:
                    w = w * qvw[..., i0:i1]
                kmass[:, :kend] += torch.bmm(w, p.view(BK * G, nq, kend)).view(BK * G, kend)
            if rows_out is not None:
                _take_rows(rows_out, p.view(B, KV * G, nq, kend), rinv, prob, i0, nq)

        out = out.view(B, H, Q, D)
        if edit.out_scale is not None:
            out = out * edit.out_scale.to(device=dev, dtype=cd).view(B, H, 1, 1)
        f32 = torch.float32
        return KernelStats(
            out=out.to(q.dtype),
            lse=lse.view(B, H, Q).to(f32),
            entropy=ent.view(B, H, Q).to(f32),
            max_weight=maxw.view(B, H, Q).to(f32),
            argmax=amax.view(B, H, Q),
            segment_mass=None if segm is None else segm.view(B, H, Q, S).to(f32),
            key_mass=None if kmass is None else kmass.view(B, H, K).to(f32),
            rows=rows_out,
        )


def _take_rows(rows_out, p4, rinv, prob: Problem, i0: int, nq: int) -> None:
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
    rows_out[bsel[:, None], torch.arange(len(heads), device=p4.device)[None, :], qsel[:, None], : p4.shape[-1]] = vals.float()


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
