"""Reference backend: eager float64, materialises every score. This file is the specification."""
from __future__ import annotations

from typing import Optional

import torch

from .edits import ACT_EMPTY
from ._common import KernelStats, Problem, query_valid


def attn_stats_reference(
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
) -> KernelStats:
    B, H, Q, K, G, S = prob.batch, prob.n_heads, prob.q_len, prob.k_len, prob.group, prob.n_segments
    edit = prob.edit
    dev, f64 = q.device, torch.float64
    kd = k.to(f64).repeat_interleave(G, dim=1)  # repeat_kv: query head h uses kv head h // G
    vd = v.to(f64).repeat_interleave(G, dim=1)
    s = scale * (q.to(f64) @ kd.transpose(-1, -2))  # [B, H, Q, K]
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)

    qpos = torch.arange(Q, device=dev) + (K - Q)  # absolute position of each query
    kpos = torch.arange(K, device=dev)
    vis = torch.ones(B, 1, Q, K, dtype=torch.bool, device=dev)
    if causal:
        vis = vis & (kpos[None, :] <= qpos[:, None])
    if prob.window is not None:  # band: keys p - window < k <= p
        vis = vis & (kpos[None, :] > qpos[:, None] - prob.window)
    if key_valid is not None:
        vis = vis & key_valid[:, None, None, :]

    seg = segments.to(f64) if segments is not None else None  # [B, S, K]
    active = vis.expand(B, H, Q, K)
    if edit.segment_scale is not None:  # 1. logit bias log(gamma) on segment keys
        logg = edit.log_gamma().to(dev)  # [B, H, S], -inf where gamma = 0
        terms = torch.where(seg[:, None] > 0, logg[..., None], torch.zeros((), dtype=f64, device=dev))
        bias = terms.sum(2)  # [B, H, K]
        s = s + bias[:, :, None, :]
        active = active & (bias[:, :, None, :] > -torch.inf)
    s = s.masked_fill(~active, -torch.inf)
    sink = None
    if prob.sinks is not None:  # one more softmax column per head: mass, no value (GPT-OSS s_aux)
        z = prob.sinks.to(dev)[None, :, None, None].expand(B, H, Q, 1)
        s_ext = torch.cat([s, z], dim=-1)
        lse = torch.logsumexp(s_ext, dim=-1)
        sink = torch.exp(z[..., 0] - lse)  # [B, H, Q]
    else:
        lse = torch.logsumexp(s, dim=-1)  # -inf for rows with no active key
    A = torch.where(active, torch.exp(s - lse[..., None]), torch.zeros((), dtype=f64, device=dev))

    if edit.segment_redistribute is not None:  # 2. ACT: segment mass m -> beta*m
        beta = edit.segment_redistribute.to(dev)
        for si in range(S):
            sg = seg[:, None, None, si, :]  # [B, 1, 1, K]
            m = (A * sg).sum(-1, keepdim=True)
            m_out = (A * (1 - sg)).sum(-1, keepdim=True)
            b = beta[:, :, si, None, None]
            m_new = torch.minimum(b * m, m + m_out)
            keep = m_out <= ACT_EMPTY  # m == 1 (or empty row): unchanged
            f_in = torch.where(keep | (m <= 0), torch.ones_like(m), m_new / m.clamp_min(1e-300))
            f_out = torch.where(keep, torch.ones_like(m), (m + m_out - m_new) / m_out.clamp_min(1e-300))
            A = A * (sg * f_in + (1 - sg) * f_out)

    if edit.uniform_mix is not None:  # 3. mix with the uniform distribution over visible keys
        u = edit.uniform_mix.to(dev)[:, :, None, None]
        nvis = vis.sum(-1, keepdim=True)
        U = vis / nvis.clamp_min(1)
        A = torch.where(nvis > 0, (1 - u) * A + u * U, A)

    if edit.identity_mix is not None:  # 4. mix with the identity (own position) pattern
        u = edit.identity_mix.to(dev)[:, :, None, None]
        I = (kpos[None, :] == qpos[:, None]).to(f64)  # [Q, K]
        own_visible = (vis.to(f64) * I).sum(-1, keepdim=True) > 0  # False only for padding queries
        A = torch.where(own_visible, (1 - u) * A + u * I, A)

    if edit.override is not None:  # 5. overwrite chosen rows (SetPattern)
        idx = edit.override.index.to(dev)
        W = edit.override.weights.to(dev)
        A = torch.where((idx >= 0)[..., None], W[idx.clamp_min(0)], A)

    entropy = -torch.special.xlogy(A, A).sum(-1)
    if sink is not None:  # entropy of the distribution the model uses: the sink column is one of its outcomes
        entropy = entropy - torch.special.xlogy(sink, sink)
    max_weight, argmax = A.max(-1)
    argmax = torch.where(max_weight > 0, argmax, torch.full_like(argmax, -1))
    out = A @ vd
    if edit.out_scale is not None:
        out = out * edit.out_scale.to(dev)[:, :, None, None]
    seg_mass = A @ seg.transpose(1, 2)[:, None] if seg is not None else None
    kmass = None
    if key_mass:
        qv = query_valid(key_valid, Q, K)
        w = torch.ones(B, Q, dtype=f64, device=dev) if qv is None else qv.to(f64)
        kmass = (A * w[:, None, :, None]).sum(-2)
    f32 = torch.float32
    sel = None
    if prob.rows is not None:
        heads, queries = (t.to(dev) for t in prob.rows)
        sel = A[:, heads][torch.arange(B, device=dev)[:, None, None], torch.arange(len(heads), device=dev)[None, :, None],
                          queries[:, None, :]].to(f32)  # [B, NH, NQ, K]
    return KernelStats(
        out=out.to(q.dtype),
        lse=lse.to(f32),
        entropy=entropy.to(f32),
        max_weight=max_weight.to(f32),
        argmax=argmax,
        segment_mass=None if seg_mass is None else seg_mass.to(f32),
        key_mass=None if kmass is None else kmass.to(f32),
        rows=sel,
        sink_mass=None if sink is None else sink.to(f32),
    )
