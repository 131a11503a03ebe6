"""Mean activations over a reference set, computed once and shared by many ``MeanAblate`` values. Computing them
runs the model, so this sits above the runner (:mod:`.run`); the value types (``ActivationMeans``, ``MeanAblate``)
stay at the bottom in :mod:`.values`."""
from __future__ import annotations

from interp.errors import InputError
from interp.intervene.values import ActivationMeans, MeanAblate, _Located


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


def mean_ablate(model, reference, site_or_head, layer=None, head=None, positions=None, *,
                per_position: bool = False) -> MeanAblate:
    """A ``MeanAblate`` whose mean over ``reference`` prompts is computed once and kept in the value."""
    probe = _Located(site_or_head, layer, head)
    means = mean_activations(model, reference, sites=(probe.site,), layers=(probe.layer,), per_position=per_position)
    return MeanAblate(probe.site, probe.layer, probe.head, positions, mean=means)


__all__ = ["ActivationMeans", "mean_activations", "mean_ablate"]
