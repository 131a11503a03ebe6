"""σReparam (Zhai et al. 2023; methods.md §6): ``Ŵ = (γ / σ(W)) · W`` with σ(W) the top singular value.

σ(W) comes from one power-iteration step per training forward on persistent unit vectors (buffers ``u``
in the input space, ``v`` in the output space; ``v ← normalize(W u)``, ``u ← normalize(Wᵀ v)``,
``σ ≈ vᵀ W u``), updated only in training mode and without gradient. The vectors start from an SVD of the
initial weight and γ starts at the initial σ(W), so ``Ŵ = W`` at construction (the reference vision code's
choice; the paper's pseudocode starts γ at 1). Gradients flow through σ as in the reference. Once the power
iteration has converged, the top singular value of ``Ŵ`` is γ. ``stats_only=True`` tracks σ and leaves the
weight alone. The spectral norm and the matmul run in float32.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from interp.errors import InputError


class SigmaReparam(nn.Module):
    """Wraps an ``nn.Linear`` (its ``weight`` and ``bias`` stay the same parameters) and adds the learned scale ``gamma``."""

    def __init__(self, linear: nn.Linear, *, stats_only: bool = False):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise InputError(f"SigmaReparam wraps an nn.Linear, got {type(linear).__name__}")
        self.linear = linear
        self.stats_only = stats_only
        with torch.no_grad():
            w = linear.weight.detach().float()
            U, S, Vh = torch.linalg.svd(w, full_matrices=False)
        self.register_buffer("u", Vh[0].clone())  # [in_features]
        self.register_buffer("v", U[:, 0].clone())  # [out_features]
        self.gamma = nn.Parameter(S[0].clone().to(linear.weight.dtype))

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    @property
    def bias(self):
        return self.linear.bias

    def sigma(self) -> torch.Tensor:
        """Current estimate ``vᵀ W u`` (differentiable in W)."""
        return torch.einsum("o,oi,i->", self.v, self.weight.float(), self.u)

    @torch.no_grad()
    def power_step(self) -> None:
        w = self.weight.float()
        self.v.copy_(F.normalize(w @ self.u, dim=0))
        self.u.copy_(F.normalize(w.T @ self.v, dim=0))

    def effective_weight(self) -> torch.Tensor:
        if self.stats_only:
            return self.weight
        return (self.gamma.float() / self.sigma() * self.weight.float()).to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.power_step()
        return F.linear(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.linear.in_features}, out={self.linear.out_features}, stats_only={self.stats_only}"


def _in_attention(name: str, module: nn.Module, parent: nn.Module) -> bool:
    return "attn" in name.lower() or "attention" in type(parent).__name__.lower()


def sigma_reparam(model: nn.Module, select: Callable[[str, nn.Module, nn.Module], bool] | str = "attention",
                  *, stats_only: bool = False) -> list[str]:
    """Replace ``nn.Linear`` submodules of ``model`` in place by :class:`SigmaReparam` and return their names.

    ``select`` is ``"attention"`` (linear layers inside attention modules: a name containing "attn", or a
    parent class named ``*Attention*``), ``"all"`` (every linear layer, the paper's recommendation) or a
    predicate ``(name, module, parent) -> bool``. ``nn.MultiheadAttention`` reads its projection weights
    directly, so its ``out_proj`` is never replaced. Build the optimizer after calling this (γ is a new parameter)."""
    if isinstance(select, str):
        if select not in ("attention", "all"):
            raise InputError(f"select must be 'attention', 'all' or a predicate, got {select!r}")
        pred = _in_attention if select == "attention" else (lambda n, m, p: True)
    else:
        pred = select
    found = []
    for pname, parent in list(model.named_modules()):
        for cname, child in list(parent.named_children()):
            full = f"{pname}.{cname}" if pname else cname
            if isinstance(child, nn.Linear) and not isinstance(parent, (SigmaReparam, nn.MultiheadAttention)) and pred(full, child, parent):
                setattr(parent, cname, SigmaReparam(child, stats_only=stats_only))
                found.append(full)
    if not found:
        raise InputError(f"no nn.Linear layer matched select={select!r}; pass select='all' or a predicate")
    return found


__all__ = ["SigmaReparam", "sigma_reparam"]
