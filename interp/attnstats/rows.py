"""Full attention rows for chosen heads and query positions, at any context length, without ``n×n``.

``attention_rows(model, inputs, heads=[HeadId(18, 6)], queries=[-1]) -> [batch head query key_pos]``.
The fused path runs as for :func:`interp.attnstats.attention_stats`; for the layers that hold a chosen head,
the kernel also returns those heads' rows at those queries: the cpu kernel copies them out of its exact
per-query-block softmax, the triton kernel recomputes them in a second blockwise pass from the known ``lse``.
Extra memory is ``batch × heads × queries × n`` floats; the forward stops after the last chosen layer.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.attnstats.fused import Recorder, StopForward, activate, hf_model_of
from interp.edits import Edit, compile_edits
from interp.errors import InputError
from interp.inputs import Inputs, to_batch
from interp.types import HeadId


def attention_rows(model, inputs: Inputs, *, heads: Sequence[HeadId | str], queries: Sequence[int],
                   edits: Sequence[Edit] = (), row_edits: Sequence[Sequence[Edit]] | None = None,
                   backend: str = "auto", padding_side: str = "right", tokenizer=None,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention weights ``[batch head query key_pos]`` (float32) of ``heads`` at ``queries``.

    ``queries`` count from each row's first real token; negative ones from its end (-1: the last real token).
    The key axis is in padded-batch coordinates (as ``attention_mask``); padding keys get 0. ``edits`` and
    ``row_edits`` act as in ``attention_stats``, and the rows are those of the edited pattern."""
    from interp.attnstats import STAT_BACKENDS, _dims, _host, position_ids

    if backend not in STAT_BACKENDS or backend == "eager":
        raise InputError(f"attention_rows runs in the fused path; use backend='auto', 'cpu', 'reference' or 'triton', not {backend!r}")
    hf = hf_model_of(model)
    n_layers, n_heads = _dims(hf)
    ids = _heads(heads, n_layers, n_heads)
    batch = to_batch(_host(model, tokenizer), inputs, padding_side=padding_side, attention_mask=attention_mask)
    qpos = _query_positions(queries, batch.attention_mask)  # [batch n_q] padded positions
    layers = sorted({h.layer for h in ids})
    plan = {l: torch.tensor([h.head for h in ids if h.layer == l]) for l in layers}
    rec = Recorder(None, key_valid=batch.attention_mask.bool(), backend=backend, stop_after=layers[-1],
                   edits=compile_edits(edits, n_layers, n_heads, (), row_edits=row_edits, attention_mask=batch.attention_mask),
                   rows={l: (h, qpos) for l, h in plan.items()})
    with torch.no_grad(), activate(model, rec) as hf_run:
        try:
            hf_run(input_ids=batch.tokens, attention_mask=batch.attention_mask, position_ids=position_ids(batch), use_cache=False)
        except StopForward:
            pass
    out = torch.zeros(qpos.shape[0], len(ids), qpos.shape[1], batch.tokens.shape[1])
    for l in layers:
        got = rec.last[l].rows.cpu()  # [batch n_heads_l n_q key_pos]
        slots = [i for i, h in enumerate(ids) if h.layer == l]
        out[:, slots] = got
    return out


def _heads(heads, n_layers: int, n_heads: int) -> list[HeadId]:
    ids = [h if isinstance(h, HeadId) else HeadId.parse(str(h)) for h in heads]
    if not ids:
        raise InputError("attention_rows needs at least one head, e.g. heads=[HeadId(18, 6)]")
    for h in ids:
        if not (0 <= h.layer < n_layers and 0 <= h.head < n_heads):
            raise InputError(f"head {h} is outside the model's {n_layers} layers × {n_heads} heads")
    return ids


def _query_positions(queries: Sequence[int], attention_mask: torch.Tensor) -> torch.Tensor:
    qs = list(queries)
    if not qs or not all(isinstance(q, int) for q in qs):
        raise InputError(f"queries must be a non-empty list of ints (negative counts from the end), got {queries!r}")
    mask = attention_mask.bool().cpu()
    starts, lengths = mask.float().argmax(1), mask.sum(1)
    q = torch.tensor(qs)[None, :].expand(mask.shape[0], -1)
    rel = torch.where(q < 0, lengths[:, None] + q, q)
    if bool(((rel < 0) | (rel >= lengths[:, None])).any()):
        raise InputError(f"queries {qs} fall outside a row of {int(lengths.min())} tokens; use -length <= q < length")
    return (starts[:, None] + rel).to(attention_mask.device)


__all__ = ["attention_rows"]
