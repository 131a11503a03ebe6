"""The ``eager`` backend: reduce the bridge's own ``hook_pattern`` layer by layer.

It needs O(n²) memory per layer (the bridge materializes every pattern), but works for every architecture
the bridge hooks, so it is the fallback named when the fused path cannot run. It also serves as the
pattern-based oracle in the tests.
"""
from __future__ import annotations

import torch

from interp.errors import InputError
from interp.inputs import Batch
from interp.types import hook_name


def stats_from_pattern(a: torch.Tensor, segments: torch.Tensor | None, query_valid: torch.Tensor | None,
                       scores: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
    """``a [batch head_index query_pos key_pos]`` → the per-row statistics of ``KernelStats``.

    ``segments [batch n_segments key_pos]``; ``query_valid [batch query_pos]`` selects the queries summed into
    ``key_mass``; ``scores`` (pre-softmax, masked with -inf) give ``lse``."""
    a = a.float()
    ent = -(a * a.clamp_min(1e-30).log()).sum(-1)
    mx, arg = a.max(-1)
    out = {"entropy": ent, "max_weight": mx, "argmax": arg,
           "lse": None if scores is None else torch.logsumexp(scores.float(), -1),
           "segment_mass": None if segments is None else torch.einsum("bhqk,bsk->bhqs", a, segments.to(a)),
           "key_mass": None}
    if query_valid is not None:
        out["key_mass"] = (a * query_valid[:, None, :, None].to(a)).sum(2)
    return out


def eager_stats(model, batch: Batch, names, seg, *, key_mass: bool, edits, return_z: bool):
    from interp.attnstats import AttnStats
    from interp.models import is_causal, model_name

    if edits:
        raise InputError("edits run inside the fused path only; use backend='auto', 'cpu', 'reference' or 'triton'")
    hf = getattr(model, "original_model", model)
    # Learned sink logits (GPT-OSS): the pattern holds the real keys only; the sink column's mass is what a row
    # lacks, and entropy gains its term, as in the fused path.
    sinks = any(isinstance(getattr(m, "sinks", None), torch.nn.Parameter) for m in hf.modules())
    n_layers = model.cfg.n_layers
    got: dict[int, dict] = {l: {} for l in range(n_layers)}
    qv = batch.attention_mask.bool()

    def on_scores(t, hook, l):
        got[l]["scores"] = t.detach()

    def on_pattern(t, hook, l):
        got[l].update(stats_from_pattern(t.detach(), seg, qv if key_mass else None, got[l].pop("scores", None)))
        if sinks:
            sink = (1 - t.detach().double().sum(-1)).clamp_min(0)
            got[l]["entropy"] = (got[l]["entropy"].double() - torch.special.xlogy(sink, sink)).float()
            got[l]["sink_mass"] = sink.float()
            got[l]["lse"] = None  # the bridge's scores omit the sink logit

    def on_z(t, hook, l):
        got[l]["z"] = t.detach()

    hooks = []
    for l in range(n_layers):
        hooks += [(hook_name("attn_scores", l), lambda t, hook, l=l: on_scores(t, hook, l)),
                  (hook_name("pattern", l), lambda t, hook, l=l: on_pattern(t, hook, l))]
        if return_z:
            hooks.append((hook_name("z", l), lambda t, hook, l=l: on_z(t, hook, l)))
    with torch.no_grad():
        logits = model.run_with_hooks(batch.tokens, fwd_hooks=hooks, attention_mask=batch.attention_mask)

    def stack(k):
        vals = [got[l].get(k) for l in range(n_layers)]
        return None if any(v is None for v in vals) else torch.stack(vals, 1).cpu()

    return AttnStats(model=model_name(model), tokens=batch.tokens.cpu(), attention_mask=batch.attention_mask.cpu(),
                     lse=stack("lse"), entropy=stack("entropy"), max_weight=stack("max_weight"), argmax=stack("argmax"),
                     segment_names=tuple(names), segment_mass=stack("segment_mass"), key_mass=stack("key_mass"),
                     z=stack("z"), logits=logits.detach(), backend="eager",
                     meta={"causal": is_causal(model)}, sink_logit_mass=stack("sink_mass"))
