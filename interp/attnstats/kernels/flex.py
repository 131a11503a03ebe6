"""``flex`` and ``flash`` backends: the statistics from maintained attention kernels through exact identities.

One call of :func:`.attend.attend` (FlexAttention, or the SDPA flash operator) gives ``P·[V | K | segments]`` and
``L = logsumexp(s)`` for every row ``s`` of scaled scores, ``p = softmax(s)``. Then

- ``lse = L``; ``max_weight = exp(max s - L)`` (engines that return the row max: Flex on CUDA);
- ``entropy = L - Σ p·s`` with ``Σ p·s = scale·q·(P K) + Σ_seg log γ_seg · mass_seg`` (bilinear scores plus the
  ZeroTuning logit biases; a softcap makes ``s`` non-bilinear, so no entropy under a softcap);
- segment masses are the one-hot value columns;
- key mass ``Σ_q w_q p_qk`` is a reversed attention: keys act as queries over the queries that see them with the
  row bias ``-L_q + log w_q``, so ``log key_mass_k`` is that call's lse.

Edits: ``segment_scale`` is a logit bias; ``out_scale`` scales the output; ``uniform_mix`` and ``identity_mix``
are exact output-space corrections, ``out' = (1-u₂)((1-u₁)PV + u₁·mean_visible(V)) + u₂·V_own`` (the same for
segment and key masses, and ``max_weight' = max((1-u₂)((1-u₁)p_max + u₁/n), (1-u₂)((1-u₁)p_own + u₁/n) + u₂)``).
Entropy under ``identity_mix`` alone is exact from ``p_own``; under ``uniform_mix`` it is not a function of these
moments. ``segment_redistribute`` scales each segment-membership class ``c`` of keys by a row factor ``F_c`` that
the specification's rule computes from the class masses, so one pass with ``[V·1_c | K·1_c | 1_c]`` per class gives
the output, masses and entropy, and one reversed call per class the key mass (no per-class row max: no max_weight).
``set_rows`` (SetPattern) and ``rows=`` recompute their few rows from the scores and ``L``. What no identity gives
exactly -- argmax, entropy under a softcap or a uniform mix, max_weight under redistribution -- is refused
(:func:`unsupported_reason`) with one line naming the backends that compute it (``cpu``, ``triton``). With fp16/bf16 inputs the widened output ``P·K`` is rounded to the input dtype
by the kernel, so the entropy carries an error up to about ``2^-8·scale·|q|·|P K|`` (``make gpu-check`` prints it).
"""
from __future__ import annotations

from typing import Optional

import torch

from ._common import KernelStats, Problem, query_valid
from .attend import Mask, attend, max_supported
from .edits import ACT_EMPTY

OTHERS = "use backend='cpu' (or 'triton' on CUDA), or leave it out of stats="


def unsupported_reason(engine: str, prob: Problem, want: frozenset, softcap: Optional[float], q: torch.Tensor) -> Optional[str]:
    """One line saying what this call asks that ``engine`` cannot give exactly (None when it can give it all)."""
    edit, name = prob.edit, "flash" if engine == "flash" else "flex"
    if "argmax" in want:
        return f"backend '{name}' cannot give argmax exactly (no kernel identity gives it); {OTHERS}"
    if engine == "flash" and softcap is not None:
        return "backend 'flash' cannot apply a logit softcap (not a bias); use backend='flex' or backend='cpu' (or 'triton' on CUDA)"
    if engine == "flash" and prob.window is not None:
        return "backend 'flash' cannot apply a sliding window (a band is not a bias); use backend='flex' or backend='cpu'"
    if "max_weight" in want and edit.segment_redistribute is not None:
        return f"backend '{name}' cannot give max_weight exactly under segment_redistribute (no per-class row max); {OTHERS}"
    if "max_weight" in want and not max_supported(engine, q.device):
        where = "FlexAttention returns row max scores only on CUDA" if engine == "flex" else "the flash operator returns no row max"
        return f"backend '{name}' cannot give max_weight here ({where}); {OTHERS}"
    if "entropy" in want and softcap is not None:
        return f"backend '{name}' cannot give entropy exactly under a logit softcap (scores are not bilinear); {OTHERS}"
    if "entropy" in want and edit.uniform_mix is not None:
        return f"backend '{name}' cannot give entropy exactly under uniform_mix; {OTHERS}"
    return None


def attn_stats_flex(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    prob: Problem,
    *,
    engine: str,
    want: frozenset,
    scale: float,
    causal: bool,
    key_valid: Optional[torch.Tensor],
    segments: Optional[torch.Tensor],
    key_mass: bool,
    softcap: Optional[float],
) -> KernelStats:
    """The statistics in ``want`` (others None); the caller has checked :func:`unsupported_reason`."""
    B, H, Q, K, G, D, S = prob.batch, prob.n_heads, prob.q_len, prob.k_len, prob.group, prob.d_head, prob.n_segments
    edit, dev, off = prob.edit, q.device, prob.offset
    f = torch.float64 if q.dtype == torch.float64 else torch.float32
    logg = None if edit.segment_scale is None else edit.log_gamma().to(dev)  # [B, H, S], -inf where γ = 0
    lb = None if logg is None else _seg_bias(logg, segments)  # [B, H, K] logit bias on segment keys
    ent = "entropy" in want
    red = edit.segment_redistribute is not None
    if red:  # one group of columns per segment-membership class c: [V·1_c | K·1_c | 1_c]
        cls, pat = _classes(segments)  # [B, K] class of each key, [C, S] membership of each class
        C = pat.shape[0]
        oh = torch.nn.functional.one_hot(cls, C).to(v.dtype)[:, None, :, :, None]  # [B, 1, K, C, 1]
        wide = lambda t: (t[:, :, :, None, :] * oh).flatten(3)  # noqa: E731  [B, KV, K, C*D]
        parts = [wide(v)] + ([wide(k)] if ent else []) + [oh[..., 0].expand(B, k.shape[1], K, C)]
    else:
        parts = [v] + ([k] if ent else []) + ([segments.to(v.dtype).transpose(1, 2)[:, None].expand(B, k.shape[1], K, S)]
                                              if segments is not None else [])
    width = sum(t.shape[-1] for t in parts)
    if width % 16:  # GPU kernels tile head dims in multiples of 16
        parts.append(torch.zeros(*parts[0].shape[:3], -width % 16, dtype=v.dtype, device=dev))
    mask = Mask(offset=off if causal else None, col_valid=key_valid, window=prob.window)
    with torch.no_grad():
        o, L, smax = attend(engine, q, k, torch.cat(parts, -1), mask, scale=scale, softcap=softcap, col_bias=lb,
                            want_max="max_weight" in want)
    o = o.to(f)
    filled = torch.isfinite(L)  # rows with at least one key of nonzero weight
    sink = r = None
    if prob.sinks is not None:  # a valueless softmax column: L over keys and sink; the key part scaled by r
        z = prob.sinks.to(device=dev, dtype=torch.float32)[None, :, None].expand_as(L)
        L_all = torch.logaddexp(L, z)
        r = torch.where(filled, torch.exp(L - L_all), 0.0).to(f)
        sink = torch.exp(z - L_all).to(f)
        o, L = o * r[..., None], L_all
    entropy = pmax = logF = None
    if red:
        out, mass, entropy, logF = _act(o, q, L, filled, scale, logg, pat, edit.segment_redistribute.to(dev), ent, D, f)
    else:
        out = o[..., :D]
        s_col = D * (2 if ent else 1)
        mass = o[..., s_col : s_col + S] if segments is not None else None  # [B, H, Q, S]
    if ent and not red:  # H(P) = L - Σ p·s
        ps = scale * (q.to(f) * o[..., D : 2 * D]).sum(-1)
        if logg is not None:  # γ = 0 segments carry no mass: their term is 0, not 0·(-inf)
            ps = ps + (mass * logg.to(f).clamp_min(-1e30)[:, :, None, :]).sum(-1)
        entropy = torch.where(filled, L.to(f) * (1.0 if r is None else r) - ps, 0.0)
        if sink is not None:
            entropy = entropy - torch.special.xlogy(sink, sink)
    if smax is not None:
        pmax = torch.where(filled, torch.exp(smax.to(f) - L.to(f)), 0.0)
    km = None
    if key_mass:
        if red:  # one reversed call per class, with the class's factor folded into the bias; each key takes its class's
            km = torch.stack([_key_mass(engine, q, k, L, prob, scale, causal, key_valid, softcap, lb, logF[..., c])
                              for c in range(logF.shape[-1])], -1).gather(-1, cls[:, None, :, None].expand(B, H, K, 1))[..., 0].to(f)
        else:
            km = _key_mass(engine, q, k, L, prob, scale, causal, key_valid, softcap, lb).to(f)
    if edit.uniform_mix is not None or edit.identity_mix is not None:
        own_f = None if logF is None else torch.exp(logF.gather(-1, cls[:, None, off:, None].expand(B, H, Q, 1))[..., 0])
        out, mass, km, entropy, pmax = _mix(q, k, v, segments, prob, scale, causal, key_valid, softcap, lb, L,
                                            filled, out, mass, km, entropy, pmax, f, own_f)
    rows = None
    if edit.override is not None or prob.rows is not None:
        ctx = (q, k, prob, scale, causal, key_valid, softcap, lb, L, segments)
        if edit.override is not None:
            out, mass, km, entropy, pmax = _override(ctx, v, segments, out, mass, km, entropy, pmax, f)
        if prob.rows is not None:
            heads, queries = prob.rows
            bi = torch.arange(B, device=dev)[:, None, None].expand(B, len(heads), queries.shape[1])
            rows = _rows(ctx, bi.reshape(-1), heads[None, :, None].expand_as(bi).reshape(-1),
                         queries[:, None, :].expand_as(bi).reshape(-1)).view(*bi.shape, K).float()
    if edit.out_scale is not None:
        out = out * edit.out_scale.to(device=dev, dtype=f)[:, :, None, None]
    f32 = torch.float32
    return KernelStats(
        out=out.to(q.dtype),
        lse=L.to(f32) if "lse" in want else None,
        entropy=None if entropy is None else entropy.to(f32),
        max_weight=None if pmax is None else pmax.to(f32),
        argmax=None,
        segment_mass=None if mass is None else mass.to(f32),
        key_mass=None if km is None else km.to(f32),
        sink_mass=None if sink is None else sink.to(f32),
        rows=rows,
    )


def _rows(ctx, b, h, qi, override: bool = True) -> torch.Tensor:
    """The final attention rows ``[R, key_pos]`` (float64) of the few (batch, head, query) triples given,
    recomputed from their scores and ``L``: SetPattern rows and ``rows=`` cost O(R·key_pos·d_head)."""
    q, k, prob, scale, causal, key_valid, softcap, lb, L, segments = ctx
    edit, K, off = prob.edit, prob.k_len, prob.offset
    s = scale * torch.einsum("rd,rkd->rk", q[b, h, qi].double(), k[b, h // prob.group].double())
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if lb is not None:
        s = s + lb[b, h].double()
    kpos = torch.arange(K, device=q.device)
    vis = Mask(offset=off if causal else None, window=prob.window).pair(qi[:, None], kpos[None, :])
    vis = vis.expand(len(qi), K)
    if key_valid is not None:
        vis = vis & key_valid[b]
    A = torch.where(vis & (s > -torch.inf), torch.exp(s - L[b, h, qi].double()[:, None]), 0.0)
    if edit.segment_redistribute is not None:  # the specification's sequential rule, on these rows
        beta, seg = edit.segment_redistribute.to(q.device)[b, h], segments.double()[b]  # [R, S], [R, S, K]
        for si in range(prob.n_segments):
            sg = seg[:, si]
            m, mo = (A * sg).sum(-1, keepdim=True), (A * (1 - sg)).sum(-1, keepdim=True)
            m_new = torch.minimum(beta[:, si : si + 1] * m, m + mo)
            keep = mo <= ACT_EMPTY
            f_in = torch.where(keep | (m <= 0), 1.0, m_new / m.clamp_min(1e-300))
            f_out = torch.where(keep, 1.0, (m + mo - m_new) / mo.clamp_min(1e-300))
            A = A * torch.where(sg > 0, f_in, f_out)
    if edit.uniform_mix is not None:
        u, n = edit.uniform_mix.to(q.device)[b, h][:, None], vis.sum(-1, keepdim=True)
        A = torch.where(n > 0, (1 - u) * A + u * vis / n.clamp_min(1), A)
    if edit.identity_mix is not None:
        u, own = edit.identity_mix.to(q.device)[b, h][:, None], kpos[None, :] == (qi + off)[:, None]
        A = torch.where((vis & own).any(-1, keepdim=True), (1 - u) * A + u * own, A)
    if override and edit.override is not None:
        idx = edit.override.index.to(q.device)[b, h, qi]
        A = torch.where((idx >= 0)[:, None], edit.override.weights.to(q.device)[idx.clamp_min(0)], A)
    return A


def _override(ctx, v, segments, out, mass, km, entropy, pmax, f):
    """SetPattern: the written rows' output and statistics from their weights ``W``; key mass gains
    ``w_q·(W - A)`` for each written row ``A`` it replaces."""
    q, prob, key_valid = ctx[0], ctx[2], ctx[5]
    ov = prob.edit.override
    b, h, qi = (ov.index.to(q.device) >= 0).nonzero(as_tuple=True)
    if len(b) == 0:
        return out, mass, km, entropy, pmax
    W = ov.weights.to(q.device)[ov.index.to(q.device)[b, h, qi]]  # [R, K] float64
    out = out.clone()
    out[b, h, qi] = torch.einsum("rk,rkd->rd", W, v[b, h // prob.group].double()).to(f)
    if mass is not None:
        mass = mass.clone()
        mass[b, h, qi] = torch.einsum("rk,rsk->rs", W, segments.double()[b]).to(f)
    if entropy is not None:
        entropy = entropy.clone()
        entropy[b, h, qi] = (-torch.special.xlogy(W, W).sum(-1)).to(f)
    if pmax is not None:
        pmax = pmax.clone()
        pmax[b, h, qi] = W.max(-1).values.to(f)
    if km is not None:
        qv = query_valid(key_valid, prob.q_len, prob.k_len)
        w = torch.ones(len(b), dtype=torch.float64, device=q.device) if qv is None else qv[b, qi].double()
        km = km.clone().double()
        km.index_put_((b, h), w[:, None] * (W - _rows(ctx, b, h, qi, override=False)), accumulate=True)
        km = km.to(f)
    return out, mass, km, entropy, pmax


def _seg_bias(logg: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """``Σ_seg log γ_seg`` over the segments each key is in: ``[B, H, K]`` (-inf on removed keys)."""
    terms = torch.where(segments[:, None] > 0, logg[..., None], torch.zeros((), dtype=logg.dtype, device=logg.device))
    return terms.sum(2)


def _key_mass(engine, q, k, L, prob: Problem, scale, causal, key_valid, softcap, lb, log_factor=None) -> torch.Tensor:
    """``Σ_q w_q f_q p_qk [B, H, K]`` as a reversed attention: key ``k`` (as a query) over the queries that see it,
    each with the bias ``log w_q + log f_q - L_q``; the answer is ``exp`` of that call's lse."""
    B, H, Q, G = prob.batch, prob.n_heads, prob.q_len, prob.group
    qv = query_valid(key_valid, Q, prob.k_len)
    colb = -L.double() + (0.0 if log_factor is None else log_factor)
    if qv is not None:
        colb = colb.masked_fill(~qv[:, None, :], -torch.inf)
    colb = torch.where(torch.isfinite(L), colb, -torch.inf)  # rows with no weight add nothing
    mask = Mask(offset=prob.offset if causal else None, reverse=True, row_valid=key_valid, window=prob.window)
    kq = k.repeat_interleave(G, 1)
    # only the lse is used; the value keeps 16 columns, a width GPU tiles take
    _, lse, _ = attend(engine, kq, q, q[..., :16], mask, scale=scale, softcap=softcap, col_bias=colb, row_bias=lb)
    return torch.exp(lse.double())


def _visible_prefix(t: torch.Tensor, valid: Optional[torch.Tensor], prob: Problem, causal: bool) -> torch.Tensor:
    """``Σ_{visible keys} t`` for every query: ``t [B, C, K, W]`` -> ``[B, C, Q, W]`` (float64 running sums)."""
    Q, w = prob.q_len, prob.window
    t = t.double() if valid is None else t.double() * valid[:, None, :, None]
    if not causal:
        return t.sum(2, keepdim=True).expand(-1, -1, Q, -1)
    c = torch.nn.functional.pad(t.cumsum(2), (0, 0, 1, 0))  # c[p + 1] = Σ_{k <= p}
    hi = torch.arange(prob.offset, prob.k_len, device=t.device) + 1
    return c[:, :, hi] - (0.0 if w is None else c[:, :, (hi - w).clamp_min(0)])  # keys in (p - w, p]


def _mix(q, k, v, segments, prob: Problem, scale, causal, key_valid, softcap, lb, L, filled, out, mass, km, entropy,
         pmax, f, own_f=None):
    """Uniform then identity mix, as exact corrections of the unmixed output and statistics."""
    B, H, Q, K, G, off = prob.batch, prob.n_heads, prob.q_len, prob.k_len, prob.group, prob.offset
    edit, dev = prob.edit, q.device
    ones = torch.ones(B, 1, K, 1, dtype=f, device=dev)
    n = _visible_prefix(ones, key_valid, prob, causal)[:, :, :, 0].to(f)  # [B, 1, Q] visible keys per query
    has = n > 0
    t = filled.to(f)  # total unmixed mass of the row (0 or 1)
    u1 = edit.uniform_mix.to(device=dev, dtype=f)[:, :, None] if edit.uniform_mix is not None else None  # [B, H, 1]
    u2 = edit.identity_mix.to(device=dev, dtype=f)[:, :, None] if edit.identity_mix is not None else None
    own_vis = torch.ones(B, 1, Q, dtype=torch.bool, device=dev) if key_valid is None else key_valid[:, None, off:]
    p_own = None
    if u2 is not None and (entropy is not None or pmax is not None):
        s_own = scale * (q.double() * k.double().repeat_interleave(G, 1)[:, :, off:]).sum(-1)  # [B, H, Q]
        if softcap is not None:
            s_own = softcap * torch.tanh(s_own / softcap)
        if lb is not None:
            s_own = s_own + lb[:, :, off:]
        p_own = torch.where(filled & own_vis, torch.exp(s_own - L.double()), 0.0).to(f)
        if own_f is not None:  # after segment_redistribute: the own key's class factor
            p_own = p_own * own_f.to(f)
    if u1 is not None:  # A1 = (1-u1) A + u1 U over the n visible keys
        a, b = torch.where(has, 1 - u1, 1.0), torch.where(has, u1 / n.clamp_min(1), 0.0)  # A1 = a·A + b·[visible]
        out = a[..., None] * out + b[..., None] * _visible_prefix(v, key_valid, prob, causal).repeat_interleave(G, 1).to(f)
        if mass is not None:
            mass = a[..., None] * mass + b[..., None] * _visible_prefix(segments.transpose(1, 2)[:, None], key_valid, prob, causal).to(f)
        if pmax is not None:
            pmax = a * pmax + b
        if p_own is not None:
            p_own = a * p_own + b
        if km is not None:
            km = (1 - u1) * km + u1 * _uniform_key_mass(n, key_valid, prob, causal).to(f)
        t = a * t + b * n
    if u2 is not None:  # A2 = (1-u2) A1 + u2 e_own on rows whose own key is visible
        c = torch.where(own_vis, 1 - u2, 1.0)
        d = torch.where(own_vis, u2, 0.0)
        out = c[..., None] * out + d[..., None] * v.repeat_interleave(G, 1)[:, :, off:].to(f)
        if mass is not None:
            mass = c[..., None] * mass + d[..., None] * segments[:, None, :, off:].transpose(-1, -2).to(f)
        if entropy is not None:  # H(A2) = c·H(A1) - c(t - p)·log c - (c·p + d)·log(c·p + d) + c·p·log p
            a2 = c * p_own + d
            entropy = (c * entropy + c * torch.special.xlogy(p_own, p_own) - torch.special.xlogy(c * (t - p_own), c)
                       - torch.special.xlogy(a2, a2))
        if pmax is not None:
            pmax = torch.maximum(c * pmax, c * p_own + d)
        if km is not None:  # each real query puts u2 on its own key
            w = torch.ones(B, Q, dtype=f, device=dev) if key_valid is None else key_valid[:, off:].to(f)
            km = km.clone()
            km[:, :, off:] = (1 - u2) * km[:, :, off:] + u2 * w[:, None, :]
            km[:, :, :off] = (1 - u2) * km[:, :, :off]
    return out, mass, km, entropy, pmax


def _classes(segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment-membership classes: ``[B, K]`` class index of every key and ``[C, S]`` 0/1 membership of each."""
    S = segments.shape[1]
    code = (segments.round().long() << torch.arange(S, device=segments.device)[None, :, None]).sum(1)  # [B, K]
    codes, cls = torch.unique(code, return_inverse=True)
    pat = ((codes[:, None] >> torch.arange(S, device=segments.device)[None, :]) & 1).double()
    return cls, pat


def _act(o, q, L, filled, scale, logg, pat, beta, ent, D, f):
    """``segment_redistribute`` on class masses: each class ``c`` ends with a factor ``F_c`` of its unmixed
    weights (the specification's rule, segment by segment), so ``out = Σ_c F_c·P(V·1_c)``, masses ``Σ_c F_c M_c``
    and ``H = L·Σ F_c M_c - Σ M_c·F_c log F_c - Σ F_c (scale·q·P(K·1_c) + bias_c M_c)``. Returns out, segment
    masses, entropy (None unless ``ent``) and ``log F [B, H, Q, C]``."""
    B, H, Q = L.shape
    C, S = pat.shape
    mc = C * D * (2 if ent else 1)
    M0 = o[..., mc : mc + C].double()  # [B, H, Q, C] unmixed class masses
    M, F = M0.clone(), torch.ones_like(M0)
    for si in range(S):
        ins = pat[:, si] > 0  # [C]
        m, mo = M[..., ins].sum(-1, keepdim=True), M[..., ~ins].sum(-1, keepdim=True)
        m_new = torch.minimum(beta[:, :, None, si : si + 1] * m, m + mo)
        keep = mo <= ACT_EMPTY
        f_in = torch.where(keep | (m <= 0), 1.0, m_new / m.clamp_min(1e-300))
        f_out = torch.where(keep, 1.0, (m + mo - m_new) / mo.clamp_min(1e-300))
        fac = torch.where(ins, f_in, f_out)
        M, F = M * fac, F * fac
    out = (F[..., None].to(f) * o[..., : C * D].view(B, H, Q, C, D)).sum(-2)
    mass = (M @ pat).to(f)
    entropy = None
    if ent:
        ps = scale * (q.double()[..., None, :] * o[..., C * D : 2 * C * D].view(B, H, Q, C, D).double()).sum(-1)  # [B, H, Q, C]
        if logg is not None:
            ps = ps + (logg.double().clamp_min(-1e30) @ pat.T)[:, :, None, :] * M0  # bias is constant on a class
        Lf = torch.where(filled, L.double(), 0.0)
        entropy = (Lf * M.sum(-1) - (M0 * torch.special.xlogy(F, F)).sum(-1) - (F * ps).sum(-1)).to(f)
        entropy = torch.where(filled, entropy, 0.0)
    return out, mass, entropy, torch.log(F)


def _uniform_key_mass(n, key_valid, prob: Problem, causal: bool) -> torch.Tensor:
    """``Σ_q w_q [k visible to q] / n_q [B, 1, K]``: the key mass of the uniform rows."""
    B, Q, K, off = prob.batch, prob.q_len, prob.k_len, prob.offset
    w = torch.ones(B, Q, dtype=torch.float64, device=n.device)
    qv = query_valid(key_valid, Q, K)
    if qv is not None:
        w = w * qv
    share = (w / n[:, 0].double().clamp_min(1))  # [B, Q]
    if causal:  # key k is seen by the queries at absolute positions p with k <= p < k + window
        c = torch.nn.functional.pad(share.cumsum(1), (1, 0))  # c[i] = Σ_{q < i}
        kpos = torch.arange(K, device=n.device)
        lo = (kpos - off).clamp(0, Q)
        hi = Q if prob.window is None else (kpos - off + prob.window).clamp(0, Q)
        per_key = c[:, Q : Q + 1] - c[:, lo] if prob.window is None else c[:, hi] - c[:, lo]
    else:
        per_key = share.sum(1, keepdim=True).expand(B, K)
    if key_valid is not None:
        per_key = per_key * key_valid
    return per_key[:, None, :]
