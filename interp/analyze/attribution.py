"""Attribution patching: AtP, AtP* (QK fix) and GradDrop (methods.md §13; Kramár et al. 2024).

One forward + backward of the base run and one forward of the source run estimate, for every node at once, the
effect of patching the node from the source into the base run. ``direction="noising"`` (AtP's own convention,
Kramár et al.): base = clean, source = corrupted, ``c(n) = m(clean | do(n ← n(corrupt))) − m(clean)``;
``direction="denoising"`` (the default, like :func:`interp.analyze.patching.activation_patching`): base =
corrupted, source = clean, ``c(n) = m(corrupt | do(n ← n(clean))) − m(corrupt)``. Either way the sign
convention is exact patching's: divided by ``m_source − m_base`` an estimate reads as the normalized effect that
``activation_patching(..., direction=...)`` computes exactly (``benchmarks/ioi_atp.py`` compares both).

- **AtP** ``ĉ(n) = (n_corrupt − n_clean) · ∂m/∂n`` for ``z`` and ``q`` (query heads), ``k`` and ``v`` (KV
  groups) and ``mlp_out``; summed over the batch (the metric's own batch reduction decides the scale) and
  over positions (``by="head"``) or kept per position (``by="head_pos"``).
- **AtP\\*** replaces the linear step through the softmax for q and k (``atp*:q``, ``atp*:k``). It changes the
  query and key node estimates only: the head-output rows (``atp:z``) and ``atp:v`` are the same with and without
  ``qk_fix`` (``z`` is linear in the attention output, so there is nothing to fix there). The affected
  attention rows are recomputed exactly and only ``∂m/∂A = ∂m/∂z · vᵀ`` stays linear. A key at position s
  changes only logit (t, s) of each row, so the new row is closed-form: with ``a = A_ts`` and
  ``E = e^{δ} − 1``, ``(A'_t − A_t)·D_t = (S_t + a·E·D_ts)/(1 + a·E) − S_t`` where ``S_t = A_t·D_t``.
  Rows are processed in query blocks for one layer at a time: no ``n×n`` tensor for all heads at once.
- **GradDrop** (optional): redo the backward pass L times, each with the gradient through one layer's
  attention and MLP outputs zeroed, and report ``Σ_l |ĉ_l| / (L − 1)`` (``atp_gd:*``, linear nodes).

Attention runs through PyTorch's SDPA (flash kernel with its own backward on CPU), registered as the
``interp_atp`` attention function while rotated q, k and v are recorded; the bridge's eager pattern is
never built. Queries/keys are the rotated ones (RoPE is orthogonal per position, so linear AtP is the same).
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F

from interp.errors import InputError, UnsupportedModelError
from interp.intervene.hf import find_stack, plain
from interp.intervene.run import check_batches_align
from interp.schema import make_frame
from interp.intervene.heads import scalar
from interp.types import check_direction

IMPL = "interp_atp"
_STATE: contextvars.ContextVar["_Rec | None"] = contextvars.ContextVar("interp_atp", default=None)


@dataclass(eq=False)
class _Rec:
    key_valid: torch.Tensor  # [batch pos] bool
    grad: bool
    qkv: dict = field(default_factory=dict)  # layer -> (q [b H n d], k [b KV n d], v [b KV n d])
    z: dict = field(default_factory=dict)  # layer -> [b n H·d]
    mlp: dict = field(default_factory=dict)  # layer -> [b n d_model]
    drop: int = -1  # GradDrop: the layer whose residual contributions pass no gradient
    graddrop: bool = False  # gate hooks only then: each one holds the record, a cycle through C++ that gc misses

    def clear(self) -> None:
        """Drop every recorded tensor. Their grad_fn hooks refer back to this record, a cycle through autograd's
        C++ side that Python's gc cannot see: without this each pass leaked its activations (1.6 GB per pass of
        6 Colored Objects prompts on SmolLM2, until chunked discovery ran out of memory)."""
        self.qkv.clear()
        self.z.clear()
        self.mlp.clear()


# Measured: `interp circuits --task ioi --prompts 200` on SmolLM2 (3,200 tokens) peaked at 12.5 GB, 1.6x what
# the per-token count below gives; the factor keeps the estimate on the side of refusing.
ATP_MEMORY_CALIBRATION = 1.6


def atp_bytes(model, batch: int, seq: int) -> int:
    """Estimated peak bytes of one AtP pass (forward and backward of the clean and corrupted batch) over
    ``batch`` prompts of ``seq`` tokens: per token, the activations a fp32 decoder keeps for the backward (about
    10 residual-width and 5 MLP-width vectors and a row of attention probabilities per layer) and 4 vocabulary-wide
    rows (logits, log-softmax and their gradients), times :data:`ATP_MEMORY_CALIBRATION`. AtP takes the whole
    batch in one backward, so this grows with the number of prompts times their length."""
    c = model.cfg
    per_token = 4 * (c.n_layers * (10 * c.d_model + 5 * (c.d_mlp or 4 * c.d_model) + c.n_heads * seq) + 4 * c.d_vocab)
    return int(ATP_MEMORY_CALIBRATION * batch * seq * per_token)


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    rec = _STATE.get()
    if rec.grad:
        for t in (query, key, value):
            t.retain_grad()
    rec.qkv[module.layer_idx] = (query, key, value)
    causal = bool(getattr(module, "is_causal", True))
    valid = rec.key_valid.to(query.device)
    scale = float(scaling if scaling is not None else query.shape[-1] ** -0.5)
    if bool(valid.all()):
        out = F.scaled_dot_product_attention(query, key, value, is_causal=causal, scale=scale, enable_gqa=True)
    else:
        n_q, n_k = query.shape[2], key.shape[2]
        mask = valid[:, None, None, :n_k]
        if causal:
            mask = mask & torch.ones(n_q, n_k, dtype=torch.bool, device=query.device).tril(n_k - n_q)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def _recording(model, rec: _Rec):
    from transformers import AttentionInterface

    stack = find_stack(model)
    if stack is None:
        raise UnsupportedModelError("attribution patching supports Llama-family decoders (q/k/v/o projections); use activation_patching")
    AttentionInterface.register(IMPL, _attention)
    token = _STATE.set(rec)
    with plain(model) as hf:
        old = hf.config._attn_implementation
        params = [(p, p.requires_grad) for p in hf.parameters()]
        handles = []
        try:
            hf.config._attn_implementation = IMPL
            for p, _ in params:
                p.requires_grad_(False)
            for l, layer in enumerate(stack.layers):
                handles.append(layer.self_attn.o_proj.register_forward_pre_hook(_keep(rec.z, l, rec)))
                handles.append(layer.self_attn.register_forward_hook(_drop(l, rec)))
                handles.append(layer.mlp.register_forward_hook(_keep_out(rec.mlp, l, rec)))
            if rec.grad:
                handles.append(hf.model.embed_tokens.register_forward_hook(lambda m, a, out: out.requires_grad_(True)))
            yield hf
        finally:
            for h in handles:
                h.remove()
            for p, flag in params:
                p.requires_grad_(flag)
            hf.config._attn_implementation = old
            _STATE.reset(token)


def _keep(store, l, rec):
    def hook(module, args):
        if rec.grad:
            args[0].retain_grad()
        store[l] = args[0]
    return hook


def _keep_out(store, l, rec):
    def hook(module, args, out):
        out = _gate(out, l, rec)
        if rec.grad:
            out.retain_grad()
        store[l] = out
        return out
    return hook


def _drop(l, rec):
    def hook(module, args, out):
        return (_gate(out[0], l, rec), *out[1:])
    return hook


def _gate(t, l, rec):
    if rec.graddrop and rec.grad and t.requires_grad:
        t.register_hook(lambda g: torch.zeros_like(g) if rec.drop == l else g)
    return t


def _forward(model, hf, rec, batch, metric):
    with torch.set_grad_enabled(rec.grad):
        logits = hf(input_ids=batch.tokens, attention_mask=batch.attention_mask, use_cache=False).logits
        m = metric(logits)
    return m, scalar(m)


def _linear(clean: _Rec, noise: _Rec, n_heads: int, d: int) -> dict[str, list[torch.Tensor]]:
    """Per layer ``[pos head]`` (``[pos]`` for mlp_out) linear AtP estimates, summed over the batch."""
    out: dict[str, list] = {"z": [], "q": [], "k": [], "v": [], "mlp_out": []}
    for l in sorted(clean.z):
        zc, zn = clean.z[l], noise.z[l]
        g = _grad(zc)
        out["z"].append(((zn - zc.detach()) * g).view(*zc.shape[:2], n_heads, d).sum(-1).sum(0))
        for name, i in (("q", 0), ("k", 1), ("v", 2)):
            c, n = clean.qkv[l][i], noise.qkv[l][i]  # [b heads pos d]
            out[name].append(((n - c.detach()) * _grad(c)).sum(-1).sum(0).T)
        mc, mn = clean.mlp[l], noise.mlp[l]
        out["mlp_out"].append(((mn - mc.detach()) * _grad(mc)).sum(-1).sum(0))
    return out


def _grad(t):
    return t.grad if t.grad is not None else torch.zeros_like(t)


def _qk_fix(clean: _Rec, noise: _Rec, l: int, scale: float, causal: bool, valid: torch.Tensor, n_heads: int, d: int,
            block: int) -> tuple[torch.Tensor, ...]:
    """AtP* q and k estimates for one layer: ``q_pos [pos head]``, ``k_pos [pos kv]``, ``q_all [head]``, ``k_all [kv]``."""
    qc, kc, vc = (t.detach().double() for t in clean.qkv[l])
    qn, kn = noise.qkv[l][0].double(), noise.qkv[l][1].double()
    b, H, n, _ = qc.shape
    kv = kc.shape[1]
    r = H // kv
    kc, vc, kn = (t.repeat_interleave(r, 1) for t in (kc, vc, kn))  # [b H n d]
    g = _grad(clean.z[l]).double().view(b, n, H, d).transpose(1, 2)  # ∂m/∂z [b H n d]
    q_pos = torch.zeros(b, H, n, dtype=torch.float64)
    k_pos = torch.zeros(b, H, n, dtype=torch.float64)
    k_all = torch.zeros(b, H, dtype=torch.float64)
    keys = valid[:, None, None, :n]  # [b 1 1 n]
    for t0 in range(0, n, block):
        t = slice(t0, min(n, t0 + block))
        vis = keys & (torch.arange(n)[None, :] <= torch.arange(t0, t.stop)[:, None]) if causal else keys.expand(-1, 1, t.stop - t0, -1)
        s_c = scale * qc[:, :, t] @ kc.transpose(-1, -2)  # [b H block n]
        a = _softmax(s_c, vis)
        dA = g[:, :, t] @ vc.transpose(-1, -2)  # ∂m/∂A rows
        s_row = (a * dA).sum(-1, keepdim=True)
        q_pos[:, :, t] = ((_softmax(scale * qn[:, :, t] @ kc.transpose(-1, -2), vis) - a) * dA).sum(-1)
        s_k = scale * qc[:, :, t] @ kn.transpose(-1, -2)
        k_all += ((_softmax(s_k, vis) - a) * dA).sum((-1, -2))
        e = torch.expm1((s_k - s_c).clamp(max=80.0))
        change = (s_row + a * e * dA) / (1 + a * e) - s_row
        k_pos += change.masked_fill(~vis, 0.0).sum(-2)
    group = lambda x: x.view(b, kv, r, *x.shape[2:]).sum(2)  # noqa: E731 - query heads → their KV group
    return (q_pos.sum(0).T, group(k_pos).sum(0).T, q_pos.sum((0, 2)), group(k_all[..., None])[..., 0].sum(0))


def _softmax(s, vis):
    return s.masked_fill(~vis, float("-inf")).softmax(-1).nan_to_num(0.0)


def attribution_patching(model, clean, corrupted, metric, *, by: str = "head", qk_fix: bool = True,
                         graddrop: bool = False, block: int = 128, task: str = "atp",
                         direction: str = "denoising") -> pd.DataFrame:
    """Tidy AtP estimates: metrics ``atp:<node>`` (z, q, k, v, mlp_out), ``atp*:q``/``atp*:k`` with
    ``qk_fix`` (extra q/k rows; the ``atp:z`` head rows do not change) and ``atp_gd:<node>`` with ``graddrop``.
    Values are raw metric differences in ``direction`` (see the module docstring; a ``direction`` column says
    which); ``df.attrs`` holds the clean and corrupted metric values and ``scale = m_source − m_base``, the
    divisor that makes them normalized effects."""
    from interp.models import is_causal, model_name

    check_direction(direction)
    if by not in ("head", "head_pos"):
        raise InputError(f"by must be 'head' or 'head_pos', got {by!r}")
    a, b = check_batches_align(model, clean, corrupted)
    if direction == "denoising":  # the gradient is taken at the run that gets patched
        a, b = b, a
    d, H = model.cfg.d_head, model.cfg.n_heads
    rc, rn = _Rec(a.attention_mask.bool(), True, graddrop=graddrop), _Rec(b.attention_mask.bool(), False)
    try:
        with _recording(model, rn) as hf:
            _, m_bad = _forward(model, hf, rn, b, metric)
        with _recording(model, rc) as hf:
            m, m_clean = _forward(model, hf, rc, a, metric)
            if not isinstance(m, torch.Tensor) or not m.requires_grad:
                raise InputError("the metric must be differentiable (a torch expression of the logits) for attribution patching")
            m.backward(retain_graph=graddrop)
            est = _linear(rc, rn, H, d)
            if qk_fix:
                scale = float(getattr(find_stack(model).layers[0].self_attn, "scaling", d ** -0.5))
                fixes = [_qk_fix(rc, rn, l, scale, is_causal(model), a.attention_mask.bool(), H, d, block) for l in sorted(rc.z)]
                est["atp*:q"] = [f[0].float() for f in fixes]
                est["atp*:k"] = [(f[1] if by == "head_pos" else f[3][None]).float() for f in fixes]
            gd = _graddrop(model, rc, rn, m, H, d) if graddrop else {}
    finally:
        rc.clear()
        rn.clear()
    rows = _rows(est, by, "atp:") + _rows(gd, by, "atp_gd:")
    df = make_frame(pd.DataFrame(rows).assign(model=model_name(model), task=task, condition=by, direction=direction))
    m_base, m_src = m_clean, m_bad  # named for the noising case above
    clean_v, corrupt_v = (m_base, m_src) if direction == "noising" else (m_src, m_base)
    df.attrs.update(clean=clean_v, corrupt=corrupt_v, scale=m_src - m_base, direction=direction)
    return df


def _graddrop(model, rc: _Rec, rn: _Rec, m: torch.Tensor, H: int, d: int) -> dict[str, list[torch.Tensor]]:
    n_layers = len(rc.z)
    total: dict[str, list] = {}
    for l in range(n_layers):
        rc.drop = l
        for t in [*rc.z.values(), *rc.mlp.values(), *(x for qkv in rc.qkv.values() for x in qkv)]:
            t.grad = None
        m.backward(retain_graph=l < n_layers - 1)
        est = _linear(rc, rn, H, d)
        for k, per_layer in est.items():
            acc = total.setdefault(k, [torch.zeros_like(x) for x in per_layer])
            for i, x in enumerate(per_layer):
                acc[i] += x.abs()
    rc.drop = -1
    return {k: [x / max(n_layers - 1, 1) for x in v] for k, v in total.items()}


def _rows(est: dict[str, list[torch.Tensor]], by: str, prefix: str) -> list[dict]:
    rows = []
    for name, per_layer in est.items():
        metric = name if name.startswith("atp*") else prefix + name
        for l, t in enumerate(per_layer):
            t = t.detach().float()  # [pos head] or [pos]
            if t.ndim == 1:
                t = t[:, None]
            head_fixed = name == "mlp_out"
            if by == "head":
                for h, v in enumerate(t.sum(0).tolist()):
                    rows.append({"layer": l, "head": -1 if head_fixed else h, "metric": metric, "value": v})
            else:
                for p in range(t.shape[0]):
                    for h, v in enumerate(t[p].tolist()):
                        rows.append({"layer": l, "head": -1 if head_fixed else h, "position": p, "metric": metric, "value": v})
    return rows


__all__ = ["attribution_patching"]
