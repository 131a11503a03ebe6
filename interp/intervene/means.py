"""Mean activations over a reference set, computed once and shared by many ``MeanAblate`` values."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.errors import InputError


@dataclass(eq=False)
class ActivationMeans:
    """``means[site, layer]``: the site's mean without the batch axis; ``[pos, …]`` when ``per_position``,
    else ``[…]`` (averaged over real tokens too)."""

    model: str
    tensors: dict[tuple[str, int], torch.Tensor]
    per_position: bool

    def __getitem__(self, key: tuple[str, int]) -> torch.Tensor:
        if key not in self.tensors:
            raise InputError(f"mean of {key[0]!r} at layer {key[1]} was not computed; pass it in sites=/layers= of mean_activations")
        return self.tensors[key]

    def __repr__(self) -> str:
        return f"ActivationMeans({self.model}, {len(self.tensors)} sites, per_position={self.per_position})"


def mean_activations(model, reference, sites=("z",), layers=None, *, per_position: bool = False,
                     batch_size: int = 64) -> ActivationMeans:
    """Mean of each site over the ``reference`` prompts (texts or a token tensor)."""
    from interp.hooks import CaptureSpec
    from interp.inputs import to_batch
    from interp.intervene.run import run
    from interp.models import model_name

    batch = to_batch(model, reference)
    if per_position and batch.padded:
        raise InputError("per_position means need reference prompts of one token length; use per_position=False")
    spec = CaptureSpec(sites=tuple(sites), layers=None if layers is None else tuple(layers))
    sums: dict = {}
    n = 0
    for i in range(0, batch.tokens.shape[0], batch_size):
        toks, mask = batch.tokens[i:i + batch_size], batch.attention_mask[i:i + batch_size]
        _, cap = run(model, toks, capture=spec, attention_mask=mask)
        for key, t in cap.tensors.items():
            t = t.double()
            if key[0] in ("pattern", "attn_scores"):
                raise InputError("mean ablation of attention patterns is not supported; use MixUniform for a uniform pattern")
            s = t.sum(0) if per_position else (t * mask.cpu().double().reshape(*mask.shape, *([1] * (t.ndim - 2)))).sum((0, 1))
            sums[key] = s if key not in sums else sums[key] + s
        n += toks.shape[0] if per_position else int(mask.sum())
    return ActivationMeans(model_name(model), {k: (v / n).float() for k, v in sums.items()}, per_position)


__all__ = ["ActivationMeans", "mean_activations"]
