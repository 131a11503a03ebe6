"""Head circuits read from the weights (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits").

- ``qk_circuit(model, head)``: ``W_E W_Q^h (W_K^g)ᵀ W_Eᵀ`` and ``ov_circuit(model, head)``: ``W_E W_V^g W_O^h W_U``
  as TransformerLens ``FactoredMatrix`` values (inner dimension d_head), never ``d_vocab × d_vocab`` unless
  ``materialize=True``. ``vocab=False`` gives the residual-stream circuits ``W_Q W_Kᵀ`` / ``W_V W_O``. For GQA a
  query head h reads KV group ``g = h // (n_heads / n_kv_heads)``.
- ``composition_scores(model, kind)``: for every sender head (layer l1) and receiver head (layer l2 > l1),
  ``‖L·R‖_F / (‖L‖_F ‖R‖_F)`` with ``L = W_V^{h1} W_O^{h1}`` and ``R = W_Q^{h2} W_K^{h2}ᵀ`` (q),
  ``W_K^{h2} W_Q^{h2}ᵀ`` (k) or ``W_V^{h2} W_O^{h2}`` (v): TransformerLens's ``all_composition_scores``. The norms
  are computed from d_head × d_head Gram matrices, so no d_model × d_model product is formed.
- ``weight_scores(model)``: per head, the OV copying score (the share ``Σλ / Σ|λ|`` of the full OV circuit's
  eigenvalues, Elhage et al.), and the QK same-token score (over a sample of token ids, the share whose own key
  scores highest in the full QK circuit). The QK previous-token score needs learned absolute positions
  (``W_pos``): the share of query positions whose top positional key is the previous one; rotary models get no
  such row (their positional dependence is not a weight matrix).

All use the bridge's weights as they are (no LayerNorm/RMSNorm folding, as the bridge runs by default): a
norm's learned scale sits between the residual stream and W_Q/W_K/W_V and is not included.
"""
from __future__ import annotations

import pandas as pd
import torch

from interp.errors import InputError
from interp.types import HeadId

KINDS = ("q", "k", "v")


def _head(model, head) -> HeadId:
    from interp.intervene.compile import Dims, head_index

    h = head if isinstance(head, HeadId) else HeadId.parse(str(head))
    head_index("z", h.layer, h, Dims.of(model), "weights")
    return h


def _group(model, h: HeadId) -> int:
    n_kv = getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads
    return h.head // (model.cfg.n_heads // n_kv)


def _wq(model, h):  # [d_model d_head]
    return model.blocks[h.layer].attn.W_Q[h.head].detach()


def _wk(model, h):
    return model.blocks[h.layer].attn.W_K[_group(model, h)].detach()


def _wv(model, h):
    return model.blocks[h.layer].attn.W_V[_group(model, h)].detach()


def _wo(model, h):  # [d_head d_model]
    return model.blocks[h.layer].attn.W_O[h.head].detach()


def qk_circuit(model, head, *, vocab: bool = True, materialize: bool = False):
    """``FactoredMatrix`` of the head's QK circuit: query token × key token (``vocab``) or d_model × d_model."""
    from transformer_lens import FactoredMatrix

    h = _head(model, head)
    a, b = _wq(model, h), _wk(model, h).T  # [d_model d_head], [d_head d_model]
    if vocab:
        w_e = model.W_E.detach()  # [d_vocab d_model]
        a, b = w_e @ a, b @ w_e.T
    fm = FactoredMatrix(a, b)
    return fm.AB if materialize else fm


def ov_circuit(model, head, *, vocab: bool = True, materialize: bool = False):
    """``FactoredMatrix`` of the head's OV circuit: source token → output logits (``vocab``) or d_model → d_model."""
    from transformer_lens import FactoredMatrix

    h = _head(model, head)
    a, b = _wv(model, h), _wo(model, h)  # [d_model d_head], [d_head d_model]
    if vocab:
        a, b = model.W_E.detach() @ a, b @ model.W_U.detach()
    fm = FactoredMatrix(a, b)
    return fm.AB if materialize else fm


def _stacked(model, dtype=torch.float64):
    """Per head (query-head order, KV expanded for GQA): ``W_Q, W_K, W_V [n d_model d_head]``, ``W_O [n d_head d_model]``."""
    heads = [HeadId(l, i) for l in range(model.cfg.n_layers) for i in range(model.cfg.n_heads)]
    st = {name: torch.stack([f(model, h) for h in heads]).to(dtype) for name, f in
          (("q", _wq), ("k", _wk), ("v", _wv), ("o", _wo))}
    return heads, st


def _factors(st: dict, kind: str):
    """``(A, B)`` with ``R = A B`` for the receiver side of ``kind``: A ``[n d_model d_head]``, B ``[n d_head d_model]``."""
    if kind == "q":
        return st["q"], st["k"].transpose(1, 2)
    if kind == "k":
        return st["k"], st["q"].transpose(1, 2)
    return st["v"], st["o"]


def composition_matrix(model, kind: str = "q", dtype=torch.float64) -> torch.Tensor:
    """``[layer head layer head]`` composition scores (sender first), 0 where the receiver is not in a later layer."""
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)} (Q-, K- or V-composition), got {kind!r}")
    n_l, n_h = model.cfg.n_layers, model.cfg.n_heads
    _, st = _stacked(model, dtype)
    la, lb = st["v"], st["o"]  # L = la lb: [n d_model d_head] [n d_head d_model]
    ra, rb = _factors(st, kind)
    # ‖la M rb‖_F² = tr(Mᵀ (laᵀla) M (rb rbᵀ)) with M = lb ra [d_head d_head]
    g_l = la.transpose(1, 2) @ la  # [n d_head d_head]
    g_r = rb @ rb.transpose(1, 2)  # [n d_head d_head]
    norm_l = torch.einsum("nij,nji->n", g_l, lb @ lb.transpose(1, 2)).clamp_min(0).sqrt()  # ‖la lb‖_F
    norm_r = torch.einsum("nij,nji->n", ra.transpose(1, 2) @ ra, g_r).clamp_min(0).sqrt()
    out = torch.zeros(n_l * n_h, n_l * n_h, dtype=dtype)
    for s in range(n_l * n_h):
        later = torch.arange((s // n_h + 1) * n_h, n_l * n_h)
        if later.numel() == 0:
            continue
        m = lb[s] @ ra[later]  # [k d_head d_head]
        sq = torch.einsum("kji,jl,kla,kai->k", m, g_l[s], m, g_r[later])  # tr(Mᵀ G_l M G_r)
        out[s, later] = sq.clamp_min(0).sqrt() / (norm_l[s] * norm_r[later])
    return out.view(n_l, n_h, n_l, n_h)


def composition_scores(model, kind: str = "q", *, task: str = "weights") -> pd.DataFrame:
    """Tidy frame of every (sender, later receiver) head pair: ``layer``/``head`` are the receiver,
    ``sender_layer``/``sender_head`` the sender, ``metric = "{kind}_composition"``."""
    from interp.models import model_name
    from interp.schema import make_frame

    sc = composition_matrix(model, kind)
    n_l, n_h = sc.shape[:2]
    rows = [{"layer": l2, "head": h2, "sender_layer": l1, "sender_head": h1, "metric": f"{kind}_composition",
             "value": float(sc[l1, h1, l2, h2])}
            for l1 in range(n_l) for h1 in range(n_h) for l2 in range(l1 + 1, n_l) for h2 in range(n_h)]
    return make_frame(pd.DataFrame(rows).assign(model=model_name(model), task=task))


def weight_scores(model, *, n_tokens: int = 1000, seed: int = 0, task: str = "weights") -> pd.DataFrame:
    """Per head: ``ov_copying`` (Σλ/Σ|λ| of the full OV circuit), ``qk_same_token`` (share of ``n_tokens`` sampled
    tokens whose own key is the top key among them) and, with learned positions, ``qk_prev_token``."""
    from interp.models import model_name
    from interp.schema import make_frame

    if n_tokens < 2:
        raise InputError(f"n_tokens must be at least 2, got {n_tokens}")
    g = torch.Generator().manual_seed(seed)
    vocab = model.cfg.d_vocab
    toks = torch.randperm(vocab, generator=g)[:min(n_tokens, vocab)]
    w_e = model.W_E.detach().double()
    w_u = model.W_U.detach().double()
    e = w_e[toks]  # [n d_model]
    w_pos = None
    try:
        w_pos = model.W_pos.detach().double()
    except (AttributeError, KeyError):
        pass
    rows = []
    for l in range(model.cfg.n_layers):
        for i in range(model.cfg.n_heads):
            h = HeadId(l, i)
            wq, wk, wv, wo = (f(model, h).double() for f in (_wq, _wk, _wv, _wo))
            # eigenvalues of W_E W_V W_O W_U equal the nonzero ones of (W_V W_O W_U W_E) [d_head d_head] ... via d_head core
            lam = torch.linalg.eigvals(wo @ w_u @ w_e @ wv)  # [d_head]
            copy = float(lam.real.sum() / lam.abs().sum().clamp_min(1e-30))
            qk = (e @ wq) @ (e @ wk).T  # [n n]: query token × key token
            same = float((qk.argmax(1) == torch.arange(len(toks))).double().mean())
            rows += [{"layer": l, "head": i, "metric": "ov_copying", "value": copy},
                     {"layer": l, "head": i, "metric": "qk_same_token", "value": same}]
            if w_pos is not None:
                n = min(w_pos.shape[0], 256)
                s = (w_pos[:n] @ wq) @ (w_pos[:n] @ wk).T  # [query key]
                s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
                prev = float((s[1:].argmax(1) == torch.arange(n - 1)).double().mean())
                rows.append({"layer": l, "head": i, "metric": "qk_prev_token", "value": prev})
    return make_frame(pd.DataFrame(rows).assign(model=model_name(model), task=task))


__all__ = ["qk_circuit", "ov_circuit", "composition_scores", "composition_matrix", "weight_scores", "KINDS"]
