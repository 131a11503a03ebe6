"""The spectral lower bound on attention entropy (Zhai et al. 2023, Theorem 3.1; methods.md §6).

With ``σ = ‖W_Q W_Kᵀ‖₂`` (the attention-logit bilinear form, any fixed logit scale folded in),
``σ_x = ‖X Xᵀ‖₂`` for the layer input ``X [T d]`` and ``𝛔 = σ·σ_x``, every query row of ``softmax(X W_Q W_Kᵀ Xᵀ)``
has entropy at least

    log(1 + (T−1)β) + 𝛔·√(T(T−1))·β / (1 + (T−1)β),   β = exp(−𝛔·√(T/(T−1))).

The right side is the entropy of a softmax whose one logit exceeds the other ``T−1`` equal logits by
``Δ = 𝛔·√(T/(T−1))``: a logit vector of L2 norm at most ``𝛔`` cannot be sharper. The bound is for
bidirectional attention over ``T`` keys.
"""
from __future__ import annotations

import math

import torch

from interp.errors import InputError


def entropy_lower_bound(sigma, T: int):
    """The bound in nats for spectral scale ``sigma`` (float or tensor, >= 0) and ``T >= 2`` keys."""
    if int(T) != T or T < 2:
        raise InputError(f"the entropy bound needs T >= 2 keys (an integer), got T={T}")
    s = torch.as_tensor(sigma, dtype=torch.float64)
    if bool((s < 0).any()) or not bool(torch.isfinite(s).all()):
        raise InputError(f"sigma must be finite and >= 0, got {sigma}")
    beta = torch.exp(-s * math.sqrt(T / (T - 1)))
    bound = torch.log1p((T - 1) * beta) + s * math.sqrt(T * (T - 1)) * beta / (1 + (T - 1) * beta)
    return float(bound) if bound.ndim == 0 and not isinstance(sigma, torch.Tensor) else bound


def attention_logit_sigma(w_q: torch.Tensor, w_k: torch.Tensor, x: torch.Tensor, *, scale: float = 1.0) -> float:
    """``𝛔 = ‖scale · W_Q W_Kᵀ‖₂ · ‖X Xᵀ‖₂`` for ``w_q, w_k [d_model d_head]`` and ``x [T d_model]``; the logits
    are ``scale · (X W_Q)(X W_K)ᵀ``."""
    if w_q.shape != w_k.shape or w_q.ndim != 2 or x.ndim != 2 or x.shape[1] != w_q.shape[0]:
        raise InputError(f"need w_q, w_k [d_model d_head] and x [T d_model]; got {tuple(w_q.shape)}, {tuple(w_k.shape)}, {tuple(x.shape)}")
    qk = scale * (w_q.double() @ w_k.double().T)
    xx = x.double() @ x.double().T
    return float(torch.linalg.matrix_norm(qk, ord=2) * torch.linalg.matrix_norm(xx, ord=2))


__all__ = ["entropy_lower_bound", "attention_logit_sigma"]
