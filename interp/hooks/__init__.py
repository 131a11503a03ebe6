"""Stage 2, capture (hook-based): register only the hooks a ``CaptureSpec`` asks for and return a ``Capture``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from interp.errors import InputError
from interp.inputs import Batch, Inputs, to_batch
from interp.models import model_name
from interp.types import SITES, hook_name, site


@dataclass(frozen=True)
class CaptureSpec:
    """What to capture. ``None`` means all. ``heads`` are query heads; for the KV sites ``k``/``v`` they select
    the KV groups those query heads read. ``positions`` index ``pos`` (the query axis for ``pattern``/``attn_scores``)
    *within each prompt's real tokens*: ``0`` is a prompt's first token and ``-1`` its last, whatever the padding
    side, so a batch of uneven prompts selects the same tokens as running each prompt alone."""

    sites: tuple[str, ...] = ("resid_post",)
    layers: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None
    positions: tuple[int, ...] | None = None

    def __post_init__(self):
        sites = (self.sites,) if isinstance(self.sites, str) else tuple(self.sites)
        if not sites:
            raise InputError(f"CaptureSpec needs at least one site; valid sites are: {', '.join(SITES)}")
        for s in sites:
            site(s)  # raises UnknownNameError listing the valid names
        object.__setattr__(self, "sites", sites)
        for name in ("layers", "heads", "positions"):
            val = getattr(self, name)
            if val is not None:
                object.__setattr__(self, name, tuple(int(x) for x in ([val] if isinstance(val, int) else val)))


@dataclass
class Capture:
    """Captured activations. ``capture[site, layer]`` gives a tensor with the site's dimension words
    (see ``interp.types.SITES``), already restricted to the spec's heads and positions."""

    model: str
    tokens: torch.Tensor  # [batch pos]
    attention_mask: torch.Tensor  # [batch pos]
    spec: CaptureSpec
    layers: tuple[int, ...]
    heads: tuple[int, ...] | None
    positions: tuple[int, ...] | None
    tensors: dict[tuple[str, int], torch.Tensor]
    logits: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: tuple[str, int]) -> torch.Tensor:
        name, layer = key
        site(name)
        if (name, layer) not in self.tensors:
            raise InputError(f"site {name!r} at layer {layer} was not captured; captured: {sorted(self.tensors)[:6]}…")
        return self.tensors[name, layer]

    def get(self, name: str, layer: int, head: int | None = None) -> torch.Tensor:
        t = self[name, layer]
        if head is None:
            return t
        s = site(name)
        if not s.per_head:
            raise InputError(f"site {name!r} has no head axis; drop the head argument")
        idx = self.heads.index(head) if self.heads is not None and not s.kv else head
        axis = 1 if name in ("pattern", "attn_scores") else 2
        return t.select(axis, idx)

    def str_tokens(self, tokenizer, row: int = 0) -> list[str]:
        ids = self.tokens[row][self.attention_mask[row].bool()].tolist()
        return [tokenizer.decode([i]) for i in ids]


def capture(model, inputs: Inputs, spec: CaptureSpec | None = None, *, padding_side: str = "right",
            return_logits: bool = True) -> Capture:
    """Run ``model`` once on ``inputs`` and keep only what ``spec`` selects."""
    spec = spec or CaptureSpec()
    if not isinstance(spec, CaptureSpec):
        hint = f"CaptureSpec(sites=({spec!r},))" if isinstance(spec, str) else "CaptureSpec(sites=('z',))"
        raise InputError(f"capture's spec must be a CaptureSpec, got a {type(spec).__name__}; pass {hint}")
    batch = to_batch(model, inputs, padding_side=padding_side)
    layers, heads, positions = _resolve(model, spec, batch)
    store: dict[tuple[str, int], torch.Tensor] = {}
    rows = None if positions is None else row_positions(positions, batch.attention_mask)
    hooks = [(hook_name(s, l), _make_hook(model, store, s, l, heads, rows)) for s in spec.sites for l in layers]
    with torch.no_grad():
        logits = model.run_with_hooks(batch.tokens, fwd_hooks=_dedupe(hooks), attention_mask=batch.attention_mask)
    return Capture(model_name(model), batch.tokens.cpu(), batch.attention_mask.cpu(), spec, layers, heads, positions,
                   store, logits.detach() if return_logits and isinstance(logits, torch.Tensor) else None,
                   {"padding_side": padding_side, "n_layers": model.cfg.n_layers, "n_heads": model.cfg.n_heads})


def _dedupe(hooks):
    # `result` and `z` read the same hook; chain them so both fire.
    by_name: dict[str, list] = {}
    for name, fn in hooks:
        by_name.setdefault(name, []).append(fn)

    def chain(fns):
        def run(t, hook):
            for f in fns:
                f(t, hook)
        return run

    return [(n, fns[0] if len(fns) == 1 else chain(fns)) for n, fns in by_name.items()]


def _resolve(model, spec: CaptureSpec, batch: Batch):
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    layers = tuple(range(n_layers)) if spec.layers is None else spec.layers
    _check_range("layer", layers, n_layers)
    if spec.heads is not None:
        _check_range("head", spec.heads, n_heads)
    return layers, spec.heads, spec.positions


def row_positions(positions: tuple[int, ...], attention_mask: torch.Tensor) -> torch.Tensor:
    """``[batch k]`` padded-batch indices of ``positions`` counted within each row's real tokens."""
    real = attention_mask.bool().cpu()
    first, n = real.float().argmax(1), real.sum(1)  # [batch], [batch]; real tokens are contiguous
    p = torch.tensor(positions)[None, :]  # [1 k]
    for row in range(real.shape[0]):
        bad = [q for q in positions if not -int(n[row]) <= q < int(n[row])]
        if bad:
            raise InputError(f"position {bad[0]} out of range for prompt {row}, which has {int(n[row])} tokens; "
                             f"use 0..{int(n[row]) - 1} or -1..-{int(n[row])}")
    return first[:, None] + torch.where(p >= 0, p, n[:, None] + p)


def _check_range(what: str, values: Iterable[int], n: int) -> None:
    bad = [v for v in values if not 0 <= v < n]
    if bad:
        raise InputError(f"{what} {bad[0]} out of range: the model has {n} {what}s (0-{n - 1})")


def _make_hook(model, store, name: str, layer: int, heads, rows: torch.Tensor | None):
    s = site(name)
    n_heads = model.cfg.n_heads
    n_kv = getattr(model.cfg, "n_key_value_heads", None) or n_heads

    def hook(t: torch.Tensor, hook=None):
        t = t.detach()
        if name == "result":  # z [batch pos head_index d_head] @ W_O [head_index d_head d_model]
            w_o = model.blocks[layer].attn.W_O
            t = torch.einsum("bphd,hdm->bphm", t, w_o.to(t.dtype))
        pos_axis = 2 if name in ("pattern", "attn_scores") else 1
        head_axis = 1 if name in ("pattern", "attn_scores") else 2
        if rows is not None:
            idx = rows.to(t.device)  # [batch k]
            b = torch.arange(t.shape[0], device=t.device)
            if pos_axis == 1:
                t = t[b[:, None], idx]  # [batch k ...]
            else:
                h = torch.arange(t.shape[1], device=t.device)
                t = t[b[:, None, None], h[None, :, None], idx[:, None, :]]  # [batch head_index k key_pos]
        if heads is not None and s.per_head:
            idx = sorted({h // (n_heads // n_kv) for h in heads}) if s.kv else list(heads)
            t = t.index_select(head_axis, torch.tensor(idx, device=t.device))
        store[name, layer] = t.cpu()
        return None

    return hook


__all__ = ["CaptureSpec", "Capture", "capture"]
