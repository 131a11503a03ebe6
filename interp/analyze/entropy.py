"""Per-head attention entropy (methods.md §6, §7): mean entropy, normalized entropy, collapse and overload flags.

``Ent(A_i) = −Σ_j A_ij log A_ij`` in nats. The normalized entropy divides each query's entropy by the log of
the number of keys it sees (``log(i+1)`` for causal query ``i``), so 1 is uniform attention at every length.
Means run over real queries except each row's first token (which sees only itself).

Flags (per head, on the mean normalized entropy ``ĥ``):

- ``collapsed``: ``ĥ < 0.1`` (default ``collapse=0.1``). At 256 visible keys this is an entropy below
  0.55 nats, i.e. attention concentrated on about two keys or fewer. Zhai et al. describe collapse as the
  layer-average entropy falling towards 0 during training; on a *trained* model the flag also marks healthy
  sink heads (all mass on the first token), so read it together with ``alpha_first`` from
  :mod:`interp.analyze.sinks`.
- ``overloaded`` ("entropic overload", Jha & Reagen): ``ĥ > 0.9`` (default ``overload=0.9``), near-uniform
  attention. The paper's exact band was not recovered (methods.md §7); 0.9 is our documented choice.
"""
from __future__ import annotations

import pandas as pd
import torch

from interp.errors import InputError
from interp.schema import make_frame

COLLAPSE = 0.1
OVERLOAD = 0.9


def entropy_of(probs: torch.Tensor) -> torch.Tensor:
    """``[... key_pos]`` probabilities → ``[...]`` entropy in nats (0·log 0 = 0)."""
    p = probs.float()
    return -torch.special.xlogy(p, p).sum(-1)


def _check_flags(collapse: float, overload: float) -> None:
    if not 0.0 <= collapse < overload <= 1.0:
        raise InputError(f"need 0 <= collapse < overload <= 1 (fractions of the maximal entropy), got collapse={collapse}, overload={overload}")


def head_entropy(stats) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head means over real queries (first token excluded): ``(entropy, normalized) [layer head_index]``."""
    w = stats.query_valid[:, None, None, :].float()  # [batch 1 1 query_pos]
    logn = stats.outcomes().clamp_min(2).log().float()
    ent = stats.entropy.float().nan_to_num(0.0)
    denom = w.sum((0, 3)).clamp_min(1)
    if float(w.sum()) == 0:
        raise InputError("no query sees more than one key; pass prompts of at least 2 tokens")
    return (ent * w).sum((0, 3)) / denom, (ent / logn * w).sum((0, 3)) / denom


def entropy_frame(stats, *, collapse: float = COLLAPSE, overload: float = OVERLOAD, task: str = "entropy") -> pd.DataFrame:
    """Tidy rows: per head ``entropy``, ``normalized_entropy``, ``collapsed`` and ``overloaded`` (0/1); per layer
    (head −1) the head means of ``entropy`` and ``normalized_entropy`` and ``frac_collapsed`` / ``frac_overloaded``."""
    _check_flags(collapse, overload)
    ent, norm = head_entropy(stats)
    flags = {"collapsed": (norm < collapse).float(), "overloaded": (norm > overload).float()}
    rows = []
    for metric, t in {"entropy": ent, "normalized_entropy": norm, **flags}.items():
        for l, row in enumerate(t.tolist()):
            rows += [{"layer": l, "head": h, "metric": metric, "value": float(v)} for h, v in enumerate(row)]
    for metric, t in {"entropy": ent, "normalized_entropy": norm, "frac_collapsed": flags["collapsed"],
                      "frac_overloaded": flags["overloaded"]}.items():
        rows += [{"layer": l, "head": -1, "metric": metric, "value": float(v)} for l, v in enumerate(t.mean(1).tolist())]
    return make_frame(pd.DataFrame(rows).assign(model=stats.model, task=task))


def analyze_entropy(model, inputs, *, collapse: float = COLLAPSE, overload: float = OVERLOAD, backend: str = "auto",
                    task: str = "entropy") -> pd.DataFrame:
    """Run the fused statistics once and return :func:`entropy_frame`."""
    from interp.attnstats import attention_stats

    _check_flags(collapse, overload)
    return entropy_frame(attention_stats(model, inputs, backend=backend), collapse=collapse, overload=overload, task=task)


__all__ = ["entropy_of", "head_entropy", "entropy_frame", "analyze_entropy", "COLLAPSE", "OVERLOAD"]
