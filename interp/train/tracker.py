"""``EntropyTracker``: per-head attention entropy logged from any PyTorch training loop into the tidy schema.

It registers forward hooks on the model's attention modules and reduces their attention probabilities
``[batch head_index query_pos key_pos]`` to per-head means as they are produced. Attention modules are:

- ``torch.nn.MultiheadAttention`` (the tracker forces ``need_weights=True, average_attn_weights=False``);
- any module with the attribute ``returns_attention_probs = True`` whose output is ``(out, probs, ...)``
  (e.g. :class:`interp.train.tiny_lm.CausalSelfAttention`);
- transformers attention modules (class name ending in ``Attention`` with a ``config``; the innermost
  one). They return probabilities only with ``attn_implementation="eager"``; otherwise the first tracked
  forward raises.

Rows: ``layer`` = the module's index in model order, ``head``, ``metric`` ∈ {``entropy``,
``normalized_entropy``} (entropy / log of the keys with non-zero probability, over rows with at least two),
``value`` = mean over batch and queries of every tracked forward of that step, and an extra ``step`` column.
``log(step, metric, value)`` adds scalar rows (loss, …) with layer = head = −1.
"""
from __future__ import annotations

from collections import defaultdict

import pandas as pd
import torch
from torch import nn

from interp.errors import InputError
from interp.schema import make_frame


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules the tracker hooks, in model order."""
    def is_attn(m: nn.Module) -> bool:
        return (isinstance(m, nn.MultiheadAttention) or getattr(m, "returns_attention_probs", False) is True
                or (type(m).__name__.endswith("Attention") and hasattr(m, "config")))

    cands = [(n, m) for n, m in model.named_modules() if is_attn(m)]
    names = [n for n, _ in cands]
    # keep the innermost: drop a module that contains another candidate (e.g. BertAttention ⊃ BertSelfAttention)
    return [(n, m) for n, m in cands if not any(o != n and o.startswith(n + ".") for o in names)]


class EntropyTracker:
    """``with EntropyTracker(model, every=10) as tr: ... tr.step = i; loss = ...; tr.log(i, "loss", loss)``,
    then ``tr.frame()``. Only steps divisible by ``every`` are reduced (the hooks are cheap otherwise)."""

    def __init__(self, model: nn.Module, *, every: int = 1, task: str = "training", condition: str | None = None,
                 model_name: str | None = None):
        if every < 1:
            raise InputError(f"every must be >= 1, got {every}")
        self.modules = attention_modules(model)
        if not self.modules:
            raise InputError(f"{type(model).__name__} has no attention modules the tracker knows (nn.MultiheadAttention, "
                             "transformers *Attention, or returns_attention_probs=True); nothing to track")
        self.every, self.task, self.condition = every, task, condition
        self.model_name = model_name or type(model).__name__
        self.step = 0
        self._sums: dict[tuple[int, int, int, str], list[float]] = defaultdict(lambda: [0.0, 0])
        self._scalars: list[dict] = []
        self._handles: list = []
        self.attach()

    def attach(self) -> "EntropyTracker":
        if self._handles:
            return self
        for layer, (name, m) in enumerate(self.modules):
            if isinstance(m, nn.MultiheadAttention):
                self._handles.append(m.register_forward_pre_hook(_force_weights, with_kwargs=True))
            self._handles.append(m.register_forward_hook(self._hook(layer, name)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    close = detach

    def __enter__(self) -> "EntropyTracker":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _active(self) -> bool:
        return self.step % self.every == 0

    def _hook(self, layer: int, name: str):
        def hook(module, args, output):
            if not self._active():
                return None
            probs = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
            if not isinstance(probs, torch.Tensor):
                raise InputError(f"attention module {name!r} returned no attention probabilities; load transformers models "
                                 "with attn_implementation='eager'")
            with torch.no_grad():
                p = probs.detach().float()
                if p.ndim == 3:  # unbatched nn.MultiheadAttention: [head q k]
                    p = p[None]
                ent = -torch.special.xlogy(p, p).sum(-1)  # [batch head q]
                n = (p > 0).sum(-1)
                ok = (n >= 2).float()
                norm = (ent / n.clamp_min(2).float().log() * ok).sum((0, 2)) / ok.sum((0, 2)).clamp_min(1)
                for h, (e, z) in enumerate(zip(ent.mean((0, 2)).tolist(), norm.tolist())):
                    for metric, v in (("entropy", e), ("normalized_entropy", z)):
                        acc = self._sums[self.step, layer, h, metric]
                        acc[0] += v
                        acc[1] += 1
            return None
        return hook

    def log(self, step: int, metric: str, value) -> None:
        """Add a scalar row (``layer = head = -1``), e.g. the training loss."""
        self._scalars.append({"step": int(step), "layer": -1, "head": -1, "metric": metric, "value": float(value)})

    def frame(self) -> pd.DataFrame:
        rows = [{"step": s, "layer": l, "head": h, "metric": m, "value": tot / max(n, 1)}
                for (s, l, h, m), (tot, n) in sorted(self._sums.items())]
        df = pd.DataFrame(rows + self._scalars, columns=["step", "layer", "head", "metric", "value"])
        df = df.assign(model=self.model_name, task=self.task)
        if self.condition is not None:
            df["condition"] = self.condition
        return make_frame(df)


def _force_weights(module, args, kwargs):
    kwargs["need_weights"] = True
    kwargs["average_attn_weights"] = False
    return args, kwargs


__all__ = ["EntropyTracker", "attention_modules"]
