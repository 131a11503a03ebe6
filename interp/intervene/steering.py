"""Steering (methods.md §13): ITI head probes and directions, ActAdd and CAA residual vectors, greedy decoding
under edits.

- ``probe_heads(model, pos, neg)``: each head's ``z`` at the last real token, one scikit-learn logistic probe
  per head on a train split, accuracy on the validation split (stratified: each class split alike).
  ``iti_edits(probes, k, alpha)``: for the top-k heads by validation accuracy, ``AddToHead(h, σ_h·θ_h, α)``
  with θ_h the normalized mass-mean shift ``mean(z | pos) − mean(z | neg)`` and σ_h the std of the training
  activations projected on θ_h.
- ``actadd(model, pos_prompt, neg_prompt, layer)``: ``resid_pre`` difference of a prompt pair, added at the
  front positions; ``caa(model, pos, neg, layer)``: the mean difference at the last token over contrastive
  pairs, added at every position.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from interp.errors import InputError
from interp.hooks import CaptureSpec
from interp.inputs import check_prompts, to_batch
from interp.intervene.run import run
from interp.intervene.values import AddToHead, AddVector
from interp.types import HeadId


def last_token_site(model, prompts, site: str, layers=None, batch_size: int = 32) -> torch.Tensor:
    """``[prompt layer …]`` activations of ``site`` at each prompt's last real token."""
    out = []
    for i in range(0, len(prompts), batch_size):
        batch = to_batch(model, prompts[i:i + batch_size])
        _, cap = run(model, batch.tokens, capture=CaptureSpec(sites=(site,), layers=layers), attention_mask=batch.attention_mask)
        last = batch.attention_mask.sum(1).cpu() - 1
        rows = torch.arange(batch.tokens.shape[0])
        out.append(torch.stack([cap[site, l][rows, last] for l in cap.layers], 1))
    return torch.cat(out).float()


@dataclass(eq=False)
class HeadProbes:
    """Per-head probes. ``frame`` is tidy (metrics ``probe_train_acc``, ``probe_val_acc``, ``sigma``);
    ``direction [layer head_index d_head]`` is θ (unit), ``weight`` the probe weights, ``sigma [layer head_index]``."""

    model: str
    frame: pd.DataFrame
    direction: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    sigma: torch.Tensor
    val_acc: torch.Tensor

    def top(self, k: int) -> list[HeadId]:
        order = torch.argsort(self.val_acc.flatten(), descending=True, stable=True)[:k]
        H = self.val_acc.shape[1]
        return [HeadId(int(i) // H, int(i) % H) for i in order]


def probe_heads(model, pos_prompts, neg_prompts, *, val_fraction: float = 0.3, seed: int = 0, C: float = 1.0) -> HeadProbes:
    """Train one logistic probe per head on ``z`` at the last token; see the module docstring."""
    from sklearn.linear_model import LogisticRegression

    from interp.models import model_name
    from interp.schema import make_frame

    pos, neg = check_prompts(pos_prompts), check_prompts(neg_prompts)
    if len(pos) < 2 or len(neg) < 2:
        raise InputError("probe_heads needs at least 2 positive and 2 negative prompts")
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    both = sorted(set(pos) & set(neg))
    if both:
        raise InputError(f"probe_heads: {len(both)} prompt(s) are in both classes (e.g. {both[0][:40]!r}); the classes "
                         f"must differ, or the probes learn noise")
    z = last_token_site(model, pos + neg, "z")  # [n layer head d]
    _require_separable(z, len(pos))
    y = np.array([1] * len(pos) + [0] * len(neg))
    val, train = _stratified_split(y, val_fraction, seed)
    L, H, d = z.shape[1:]
    direction, weight, bias = torch.zeros(L, H, d), torch.zeros(L, H, d), torch.zeros(L, H)
    sigma, val_acc, rows = torch.zeros(L, H), torch.zeros(L, H), []
    for l in range(L):
        for h in range(H):
            x = z[:, l, h].numpy()
            clf = LogisticRegression(C=C, max_iter=1000).fit(x[train], y[train])
            shift = x[train][y[train] == 1].mean(0) - x[train][y[train] == 0].mean(0)
            theta = shift / max(np.linalg.norm(shift), 1e-12)
            direction[l, h], weight[l, h], bias[l, h] = torch.tensor(theta), torch.tensor(clf.coef_[0]), float(clf.intercept_[0])
            sigma[l, h] = float((x[train] @ theta).std())
            val_acc[l, h] = float(clf.score(x[val], y[val]))
            rows += [{"layer": l, "head": h, "metric": "probe_train_acc", "value": float(clf.score(x[train], y[train]))},
                     {"layer": l, "head": h, "metric": "probe_val_acc", "value": float(val_acc[l, h])},
                     {"layer": l, "head": h, "metric": "sigma", "value": float(sigma[l, h])}]
    frame = make_frame(pd.DataFrame(rows).assign(model=model_name(model), task="iti_probe", seed=seed))
    return HeadProbes(model_name(model), frame, direction, weight, bias, sigma, val_acc)


def _require_separable(z: torch.Tensor, n_pos: int) -> None:
    """InputError when no head's ``z`` differs between the classes (e.g. prompts that differ only before a
    shared last token window the model cannot see): every probe would fit noise."""
    shift = (z[:n_pos].mean(0) - z[n_pos:].mean(0)).norm(dim=-1)  # [layer head]
    scale = z.std(0).norm(dim=-1).clamp_min(1e-12)  # [layer head]
    if not bool((shift > 1e-6 * scale).any()) or not bool(torch.isfinite(z).all()):
        raise InputError("probe_heads: the two classes give the same head outputs at the last token in every head; "
                         "pass prompts whose classes differ")


def _stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation/train indices holding ``val_fraction`` of each class (at least one of each on both sides).
    An unstratified split of a few dozen prompts can leave the validation set's majority the training set's
    minority, so that a probe that learned nothing scores well below chance."""
    rng = np.random.default_rng(seed)
    val, train = [], []
    for c in (1, 0):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = min(len(idx) - 1, max(1, int(round(val_fraction * len(idx)))))
        val += idx[:k].tolist()
        train += idx[k:].tolist()
    return np.array(val), np.array(train)


def iti_edits(probes: HeadProbes, k: int = 48, alpha: float = 15.0, positions=None) -> list[AddToHead]:
    """ITI: ``AddToHead(h, σ_h·θ_h, alpha)`` for the top-``k`` heads by validation accuracy."""
    from interp.types import finite_scalar

    finite_scalar("iti_edits", "alpha", alpha)
    if not isinstance(probes, HeadProbes):
        raise InputError(f"iti_edits needs the HeadProbes of probe_heads(model, pos, neg), got a {type(probes).__name__}")
    n = probes.val_acc.numel()
    if isinstance(k, bool) or not isinstance(k, int):
        raise InputError(f"k must be an integer number of heads, got {k!r}")
    if not 1 <= k <= n:
        raise InputError(f"k must lie in 1..{n} (the number of heads), got {k}")
    return [AddToHead(h, probes.sigma[h.layer, h.head] * probes.direction[h.layer, h.head], alpha, positions) for h in probes.top(k)]


def actadd(model, pos_prompt: str, neg_prompt: str, layer: int, coeff: float = 1.0, site: str = "resid_pre") -> AddVector:
    """ActAdd: ``resid(pos) − resid(neg)`` at ``layer`` (the shorter prompt padded on the right), added at the
    front positions with coefficient ``coeff``."""
    batch = to_batch(model, [pos_prompt, neg_prompt])
    _, cap = run(model, batch.tokens, capture=CaptureSpec(sites=(site,), layers=(layer,)), attention_mask=batch.attention_mask)
    r = cap[site, layer] * batch.attention_mask.cpu()[..., None]
    n = int(batch.attention_mask.sum(1).max())
    return AddVector(layer, (r[0] - r[1])[:n], coeff, site=site)


def caa(model, pos_prompts, neg_prompts, layer: int, multiplier: float = 1.0, site: str = "resid_pre") -> AddVector:
    """CAA: the mean of ``resid(pos) − resid(neg)`` at the last token over contrastive pairs, added at every
    position with ``multiplier``."""
    pos, neg = check_prompts(pos_prompts), check_prompts(neg_prompts)
    if len(pos) != len(neg):
        raise InputError(f"CAA needs contrastive pairs: {len(pos)} positive vs {len(neg)} negative prompts")
    a = last_token_site(model, pos, site, layers=(layer,))[:, 0]
    b = last_token_site(model, neg, site, layers=(layer,))[:, 0]
    return AddVector(layer, (a - b).mean(0), multiplier, site=site)


def generate(model, prompt: str, edits=(), max_new_tokens: int = 20) -> str:
    """Greedy continuation of ``prompt`` with ``edits`` applied at every step (full recompute; short texts)."""
    batch = to_batch(model, prompt)
    toks = batch.tokens
    eos = model.tokenizer.eos_token_id
    for _ in range(max_new_tokens):
        nxt = run(model, toks, edits)[:, -1].argmax(-1, keepdim=True)
        toks = torch.cat([toks, nxt], 1)
        if eos is not None and int(nxt) == eos:
            break
    return model.tokenizer.decode(toks[0, batch.tokens.shape[1]:], skip_special_tokens=True)


__all__ = ["probe_heads", "iti_edits", "HeadProbes", "actadd", "caa", "generate", "last_token_site"]
