"""The entropy regularizer of Jha & Reagen 2025 (methods.md §7).

For each layer and head, with ``E_max = log(context_size)`` (the probabilities' last dimension unless
given), tolerance ``m = 0.2·E_max`` and a per-head target fraction θ_h: the per-(batch, query) entropy
``H = −Σ_j A_ij log(A_ij + 1e-9)`` is penalized by ``(H − θ_h·E_max)²`` where ``|H − θ_h·E_max| > m``.
Penalties are summed over batch and queries, averaged over heads, then over layers, and multiplied by
λ = 1e-5. Add the result to the cross-entropy in training only.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from interp.errors import InputError


def entropy_regularization(probs: Sequence[torch.Tensor], theta: torch.Tensor, *, context_size: int | None = None,
                           tolerance: float = 0.2, coeff: float = 1e-5) -> torch.Tensor:
    """``probs``: one ``[batch head_index query_pos key_pos]`` tensor per layer; ``theta [head_index]`` (or a
    scalar) target entropies as fractions of ``E_max``. Returns a differentiable scalar."""
    if not len(probs):
        raise InputError("entropy_regularization needs the attention probabilities of at least one layer")
    per_layer = []
    for p in probs:
        if p.ndim != 4:
            raise InputError(f"attention probabilities must be [batch head_index query_pos key_pos], got {tuple(p.shape)}")
        e_max = math.log(context_size or p.shape[-1])
        h = -(p * torch.log(p + 1e-9)).sum(-1)  # [batch head q]
        dev = h - torch.as_tensor(theta, dtype=h.dtype, device=h.device).reshape(1, -1, 1) * e_max
        pen = torch.where(dev.abs() > tolerance * e_max, dev ** 2, torch.zeros_like(dev))
        per_layer.append(pen.sum((0, 2)).mean())
    return coeff * torch.stack(per_layer).mean()


class EntropyRegularization(nn.Module):
    """Learnable per-head thresholds θ_h (shared across layers, as in the reference example)."""

    def __init__(self, n_heads: int, *, init: float = 0.5, tolerance: float = 0.2, coeff: float = 1e-5):
        super().__init__()
        self.theta = nn.Parameter(torch.full((n_heads,), float(init)))
        self.tolerance, self.coeff = tolerance, coeff

    def forward(self, probs: Sequence[torch.Tensor], context_size: int | None = None) -> torch.Tensor:
        if not self.training:
            return torch.zeros((), device=self.theta.device)
        return entropy_regularization(probs, self.theta, context_size=context_size, tolerance=self.tolerance, coeff=self.coeff)


__all__ = ["entropy_regularization", "EntropyRegularization"]
