"""One attention call that returns the output and the log-sum-exp, on kernels PyTorch maintains.

``attend(engine, q, k, v, spec)`` computes, for every row ``i`` of ``q [batch, head_index, M, E]`` over the
columns ``j`` of ``k [batch, kv_head, N, E]``, the scores

    s_ij = cap(scale · q_i·k_j) + col_bias[b, h, j] + row_bias[b, h, i]      (cap = c·tanh(·/c) when softcap)

on the visible pairs of :class:`Mask`, and returns ``(softmax(s) @ v [batch, head_index, M, W], lse [.., M],
max_s [.., M] or None)``. Rows with no visible column: output 0, lse -inf. Engines:

- ``dense``: the reference, every score materialised in float64 (tests; the short readable specification);
- ``flex``: :func:`torch.nn.attention.flex_attention` (``mask_mod`` for the mask, ``score_mod`` for the softcap and
  the biases, ``return_aux`` for lse and, on CUDA only, the row max). Compiled on CUDA; eager elsewhere (eager
  Flex materialises the scores, so on a CPU it checks the logic rather than saving memory);
- ``flash``: the SDPA flash operator that returns the log-sum-exp (``_scaled_dot_product_flash_attention_for_cpu``
  on a CPU, ``_scaled_dot_product_flash_attention`` / ``_efficient_attention`` on CUDA). It has no bias or mask
  argument on every device, so the biases ride in two extra input dimensions (``q' = [scale·q, 1, row_bias]``,
  ``k' = [k, col_bias, 1]``, ``scale = 1``), masked entries get the bias ``NEG``, the causal offset becomes dummy
  rows or columns, and a reversed causal mask is a causal one on flipped axes. The biases are therefore exact in
  float32/float64 and rounded to the input precision in fp16/bf16. No softcap (not expressible as a bias), no
  sliding window (a band is neither a row nor a column bias), no row max.
"""
from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

ENGINES = ("dense", "flex", "flash")


@dataclass(frozen=True, eq=False)
class Mask:
    """Visible pairs: ``j <= i + offset`` (causal) or ``j >= i - offset`` (``reverse``: keys acting as queries
    over the later queries), ``offset=None`` for no causal mask; a sliding ``window`` (causal only) keeps
    ``j > i + offset - window`` (reversed: ``j < i - offset + window``); and ``col_valid [batch, N]`` /
    ``row_valid [batch, M]`` bool (None: all valid)."""

    offset: Optional[int] = None
    reverse: bool = False
    col_valid: Optional[torch.Tensor] = None
    row_valid: Optional[torch.Tensor] = None
    window: Optional[int] = None

    def pair(self, i, j):
        """Visibility of positions ``i, j`` (tensors), valid masks aside."""
        off, w = self.offset, self.window
        if off is None:
            return (i >= 0) & (j >= 0)
        if self.reverse:
            return (j >= i - off) if w is None else (j >= i - off) & (j < i - off + w)
        return (j <= i + off) if w is None else (j <= i + off) & (j > i + off - w)

    def dense(self, M: int, N: int, device) -> torch.Tensor:
        """``[batch or 1, 1, M, N]`` bool."""
        vis = self.pair(torch.arange(M, device=device)[:, None], torch.arange(N, device=device)[None, :])[None, None]
        if self.col_valid is not None:
            vis = vis & self.col_valid[:, None, None, :]
        if self.row_valid is not None:
            vis = vis & self.row_valid[:, None, :, None]
        return vis


def max_supported(engine: str, device: torch.device) -> bool:
    """Whether ``engine`` returns the row max of the scores on ``device``."""
    return engine == "dense" or (engine == "flex" and device.type == "cuda")


def attend(engine: str, q, k, v, mask: Mask, *, scale: float, softcap: Optional[float] = None,
           col_bias: Optional[torch.Tensor] = None, row_bias: Optional[torch.Tensor] = None, want_max: bool = False):
    """See the module docstring. Biases are ``[batch, head_index, N]`` / ``[batch, head_index, M]`` (-inf allowed)."""
    fn = {"dense": _dense, "flex": _flex, "flash": _flash}[engine]
    return fn(q, k, v, mask, scale, softcap, col_bias, row_bias, want_max)


def _dense(q, k, v, mask, scale, softcap, col_bias, row_bias, want_max):
    G = q.shape[1] // k.shape[1]
    f64 = torch.float64
    s = scale * (q.to(f64) @ k.to(f64).repeat_interleave(G, 1).transpose(-1, -2))  # [B, H, M, N]
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if col_bias is not None:
        s = s + col_bias.to(f64)[:, :, None, :]
    if row_bias is not None:
        s = s + row_bias.to(f64)[:, :, :, None]
    s = s.masked_fill(~mask.dense(s.shape[2], s.shape[3], s.device), -torch.inf)
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse[..., None]).nan_to_num(0.0)  # empty rows: -inf - -inf
    out = p @ v.to(f64).repeat_interleave(G, 1)
    return out.to(q.dtype), lse.float(), s.amax(-1).float() if want_max else None


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex(q, k, v, mask, scale, softcap, col_bias, row_bias, want_max):
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    B, H, M, _ = q.shape
    N = k.shape[2]
    cv, rv = mask.col_valid, mask.row_valid

    def mask_mod(b, h, i, j):
        ok = mask.pair(i, j)
        if cv is not None:
            ok = ok & cv[b, j]
        if rv is not None:
            ok = ok & rv[b, i]
        return ok

    cb = None if col_bias is None else col_bias.float().expand(B, H, N)
    rb = None if row_bias is None else row_bias.float().expand(B, H, M)

    def score_mod(score, b, h, i, j):
        if softcap is not None:
            score = softcap * torch.tanh(score / softcap)
        if cb is not None:
            score = score + cb[b, h, j]
        if rb is not None:
            score = score + rb[b, h, i]
        return score

    block_mask = _block_mask(mask, mask_mod, B, M, N, q.device)
    run = _compiled_flex() if q.is_cuda else flex_attention
    mods = dict(score_mod=score_mod) if (softcap is not None or cb is not None or rb is not None) else {}
    out, aux = run(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=k.shape[1] != H,
                   return_aux=AuxRequest(lse=True, max_scores=bool(want_max)), **mods)
    return out, aux.lse.float(), aux.max_scores.float() if want_max else None


_MASKS: dict = {}  # a forward's layers share their block masks: (shape, mask) -> (weakrefs of its tensors, mask)


def _block_mask(mask: Mask, mask_mod, B: int, M: int, N: int, device):
    """``create_block_mask``, reused while the same mask tensors (same objects, unchanged) come back."""
    from torch.nn.attention.flex_attention import create_block_mask

    ts = (mask.col_valid, mask.row_valid)
    key = (B, M, N, mask.offset, mask.reverse, mask.window, str(device),
           *((id(t), t._version) if t is not None else None for t in ts))
    hit = _MASKS.get(key)
    if hit is not None and all((r is None and t is None) or (r is not None and r() is t) for r, t in zip(hit[0], ts)):
        return hit[1]
    if len(_MASKS) >= 16:
        _MASKS.clear()
    bm = create_block_mask(mask_mod, B, None, M, N, device=device)
    _MASKS[key] = (tuple(None if t is None else weakref.ref(t) for t in ts), bm)
    return bm


def neg(dtype: torch.dtype) -> float:
    """A finite stand-in for -inf in the flash engine's bias dimensions (exp gives exactly 0)."""
    return -3.0e4 if dtype == torch.float16 else -1.0e30


def _flash(q, k, v, mask, scale, softcap, col_bias, row_bias, want_max):
    assert softcap is None and not want_max and mask.window is None, "flash engine: no softcap, row max or window"
    B, H, M, E = q.shape
    G = H // k.shape[1]
    N, W = k.shape[2], v.shape[-1]
    dt, dev, NEG = q.dtype, q.device, neg(q.dtype)

    def bias(t, valid, n):  # [B, H, n] with NEG for masked entries
        b = torch.zeros(B, H, n, dtype=torch.float32, device=dev) if t is None else t.float().expand(B, H, n)
        if valid is not None:
            b = b.masked_fill(~valid[:, None, :], -torch.inf)
        return b.clamp_min(NEG).to(dt)

    cb, rb = bias(col_bias, mask.col_valid, N), bias(row_bias, mask.row_valid, M)
    X = -(-max(E + 2, W) // 8) * 8  # one width for q, k and v (the operators require it), a multiple of 8
    one_q, one_k = torch.ones(B, H, M, 1, dtype=dt, device=dev), torch.ones(B, H, N, 1, dtype=dt, device=dev)
    qx = F.pad(torch.cat([q * scale, one_q, rb[..., None]], -1), (0, X - E - 2))
    kx = F.pad(torch.cat([k.repeat_interleave(G, 1), cb[..., None], one_k], -1), (0, X - E - 2))
    vx = F.pad(v.repeat_interleave(G, 1), (0, X - W))
    off = mask.offset
    if off is not None and mask.reverse:  # j >= i - off  <=>  on flipped axes  j' <= i' + (N - M + off)
        qx, kx, vx = qx.flip(2), kx.flip(2), vx.flip(2)
        off = N - M + off
    causal, pad_rows = off is not None and off < N - 1, 0
    if causal and off > 0:  # the operators align the causal mask top-left: dummy rows shift the queries down
        pad_rows = off
        qx = F.pad(qx, (0, 0, off, 0))
    elif causal and off < 0:  # dummy masked columns shift the keys right
        dummy = torch.zeros(B, H, -off, X, dtype=dt, device=dev)
        dummy[..., E] = NEG
        kx, vx = torch.cat([dummy, kx], 2), torch.cat([torch.zeros_like(dummy), vx], 2)
    out, lse = _flash_op(qx, kx, vx, causal)
    out, lse = out[:, :, pad_rows:, :W], lse[:, :, pad_rows : pad_rows + M].float()
    if mask.offset is not None and mask.reverse:
        out, lse = out.flip(2), lse.flip(2)
    empty = lse < NEG / 2
    return out.masked_fill(empty[..., None], 0.0), lse.masked_fill(empty, -torch.inf), None


def _flash_op(q, k, v, causal: bool):
    """(output, logsumexp) of the SDPA flash operator for the device (scale 1: q carries it)."""
    if q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=1.0)
    if q.dtype in (torch.float16, torch.bfloat16):
        r = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=1.0)
        return r[0], r[1]
    r = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, causal, scale=1.0)
    return r[0], r[1][..., : q.shape[2]]  # the lse may be padded along the rows
