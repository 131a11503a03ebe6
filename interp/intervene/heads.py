"""Batched sweeps: one metric value per edit (or edit list), many edits per forward pass.

``sweep_edits`` evaluates ``metric(logits)`` under each item of ``items`` (an edit or a list of edits):

- **batched edits**: items that start at the same layer go into one expanded batch, group g on rows
  ``g·B … g·B + B − 1``; per-head affine edits (zero/mean ablation, scaling, ``AddToHead``) become per-row
  ``[rows, head_index]`` parameters of one hook (:func:`interp.intervene.run._merge_affine`);
- **clean prefix sharing** (hf engine): the clean run's residual stream entering every layer is recorded once;
  an item whose first edit is at layer l starts there and runs only layers ≥ l;
- **only the logits the metric reads**: the metric is probed on the clean logits (its gradient, then a check
  with NaN at every other position); when it reads only some positions, only those are unembedded and the
  metric gets a ``[batch pos d_vocab]`` tensor that holds NaN elsewhere. Otherwise every position is computed.

``_loop_reference`` is the plain one-run-per-item loop that the tests compare against.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from interp.errors import InputError
from interp.inputs import Batch, to_batch
from interp.intervene import compile as C
from interp.intervene.run import Plan, _hf_context, choose_engine, execute
from interp.types import HeadId

Metric = Callable[[torch.Tensor], "torch.Tensor | float"]


def scalar(value, what: str = "metric") -> float:
    """The metric's value as a float, or a one-line error."""
    if isinstance(value, (str, bytes, dict)) or value is None:
        raise InputError(f"{what} must return a number (a float or a one-element tensor), but it returned a "
                         f"{type(value).__name__}: {str(value)[:40]!r}")
    try:
        t = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{what} must return a number (a float or a one-element tensor), but it returned a "
                         f"{type(value).__name__}") from None
    if t.is_complex() or t.dtype == torch.bool:
        raise InputError(f"{what} must return a real number, but it returned a {t.dtype} tensor")
    if t.numel() != 1:
        raise InputError(f"{what} must return a scalar, but it returned shape {list(t.shape)}; reduce it, e.g. with .mean()")
    v = float(t)
    if v != v or v in (float("inf"), float("-inf")):
        raise InputError(f"{what} returned {v}; check that it reads only real tokens and valid answer ids")
    return v


def metric_positions(metric: Metric, logits: torch.Tensor) -> list[int] | None:
    """The positions the metric reads, if it provably reads fewer than all (see module docstring)."""
    x = logits.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        val = metric(x)
    base = scalar(val)
    if not isinstance(val, torch.Tensor) or not val.requires_grad:
        return None
    val.backward()
    used = (x.grad != 0).any(-1).any(0).nonzero().flatten().tolist()
    if not used or len(used) == logits.shape[1]:
        return None
    masked = torch.full_like(logits, float("nan"))
    masked[:, used] = logits[:, used]
    with torch.no_grad():
        ok = scalar_or_nan(metric(masked)) == base
    return used if ok else None


def scalar_or_nan(v) -> float:
    t = torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else v)
    return float(t) if t.numel() == 1 else float("nan")


@dataclass(eq=False)
class Prefix:
    """The clean run's input to every decoder layer and the arguments it was called with."""

    hidden: list[torch.Tensor]  # per layer: [batch pos d_model]
    calls: list[tuple[tuple, dict]]
    logits: torch.Tensor  # [batch pos d_vocab]


def record_prefix(model, batch: Batch) -> Prefix:
    plan = Plan.build(model, [[]], batch.tokens.shape[0], engine="hf")
    hidden: list = []
    calls: list = []

    def rec(module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        hidden.append(h.detach().clone())
        calls.append((tuple(args[1:]), {k: v for k, v in kwargs.items() if k != "hidden_states"}))

    with torch.no_grad(), _hf_context(model, plan, batch.attention_mask) as (hf, stack):
        handles = [layer.register_forward_pre_hook(rec, with_kwargs=True) for layer in stack.layers]
        try:
            logits = hf(input_ids=batch.tokens, attention_mask=batch.attention_mask, use_cache=False).logits
        finally:
            for h in handles:
                h.remove()
    return Prefix(hidden, calls, logits)


def _tile(x, b: int, k: int):
    """Repeat batch-leading tensors (dim 0 == b) k times, recursing into tuples; leave the rest."""
    if isinstance(x, torch.Tensor):
        return x.repeat(k, *([1] * (x.ndim - 1))) if x.ndim and x.shape[0] == b and b > 1 else x
    if isinstance(x, tuple):
        return tuple(_tile(y, b, k) for y in x)
    return x


def execute_from(plan: Plan, prefix: Prefix, mask: torch.Tensor, positions: list[int] | None, stop: int | None = None) -> torch.Tensor:
    """Logits of ``plan``'s row groups, starting from the clean residual stream at ``plan.start_layer``; with
    ``stop``, only layers before ``stop`` run and the residual stream there is returned (for reads)."""
    b, k, start = mask.shape[0], plan.n_groups, plan.start_layer
    with torch.no_grad(), _hf_context(plan.model, plan, mask.repeat(k, 1)) as (hf, stack):
        h = _tile(prefix.hidden[start], b, k) if b > 1 else prefix.hidden[start].repeat(k, 1, 1)
        for i in range(start, len(stack.layers) if stop is None else stop):
            args, kwargs = prefix.calls[i]
            out = stack.layers[i](h, *_tile(args, b, k), **{n: _tile(v, b, k) for n, v in kwargs.items()})
            h = out[0] if isinstance(out, tuple) else out
        if stop is not None:
            return h
        if positions is not None:
            h = h[:, positions]
        return stack.unembed(stack.norm(h))


def _as_list(item) -> list:
    return list(item) if isinstance(item, (list, tuple)) else [item]


def default_max_rows(model, n_pos: int) -> int:
    """Rows per batched forward. On a GPU, many (one small forward leaves it idle). On a CPU, rows enough for
    about ``CPU_TOKENS`` tokens: a forward there is compute-bound already, and larger batches push every
    layer's activations out of cache (on SmolLM2 IOI, 50 prompts × 15 tokens: 512 rows took 24.7–26.0 s
    for 36 heads, 50 or 150 rows 22.8–22.9 s, the same values)."""
    device = next(iter(model.parameters())).device
    return 512 if device.type != "cpu" else max(1, CPU_TOKENS // max(n_pos, 1))


CPU_TOKENS = 2048


def sweep_edits(model, inputs, items: Sequence, metric: Metric, *, attention_mask: torch.Tensor | None = None,
                max_rows: int | None = None, share_prefix: bool = True, progress: bool = False) -> tuple[list[float], float]:
    """``(values, clean)``: the metric under each item, and on the unedited inputs. ``max_rows`` caps the rows
    of one batched forward (default: :func:`default_max_rows`)."""
    batch = to_batch(model, inputs, attention_mask=attention_mask)
    b = batch.tokens.shape[0]
    if max_rows is None:
        max_rows = default_max_rows(model, batch.tokens.shape[1])
    dims = C.Dims.of(model)
    items = [C.flatten(_as_list(it)) for it in items]
    engines = [choose_engine(model, it, (), dims) for it in items]
    use_prefix = share_prefix and all(e == "hf" for e in engines)
    prefix = record_prefix(model, batch) if use_prefix else None
    clean_logits = prefix.logits if prefix else execute(Plan.build(model, [[]], b), batch.tokens, batch.attention_mask)
    clean = scalar(metric(clean_logits))
    positions = metric_positions(metric, clean_logits)
    per_row_bytes = (len(positions) if positions else batch.tokens.shape[1]) * clean_logits.shape[-1] * 4
    k_max = max(1, min(max_rows // b, (512 << 20) // max(per_row_bytes * b, 1)))
    plans = [Plan.build(model, [it], b, engine=e) for it, e in zip(items, engines)]
    order = sorted(range(len(items)), key=lambda i: (engines[i], plans[i].start_layer, bool(plans[i].fused)))
    chunks = _chunks(order, plans, engines, k_max)
    values: list[float] = [float("nan")] * len(items)
    buf = torch.full_like(clean_logits, float("nan")) if positions else None
    bar = _bar(len(items), progress)
    for chunk in chunks:
        plan = Plan.build(model, [items[i] for i in chunk], b, engine=engines[chunk[0]])
        if prefix is not None:
            logits = execute_from(plan, prefix, batch.attention_mask, positions)
        else:
            k = len(chunk)
            logits = execute(plan, batch.tokens.repeat(k, 1), batch.attention_mask.repeat(k, 1), logit_positions=positions)
        for g, i in enumerate(chunk):
            rows = logits[g * b:(g + 1) * b]
            if buf is not None:
                buf[:, positions] = rows
                rows = buf
            values[i] = scalar(metric(rows))
        bar.update(len(chunk))
    bar.close()
    return values, clean


def _chunks(order, plans, engines, k_max) -> list[list[int]]:
    out: list[list[int]] = []
    for i in order:
        key = (engines[i], plans[i].start_layer)
        last = out[-1] if out else None
        # fused-kernel edits batch too (per-row edit parameters), but only with each other: a chunk holding
        # any runs the fused attention in every layer, which hook-only items need not pay for
        if last and bool(plans[i].fused) == bool(plans[last[0]].fused) and len(last) < k_max \
                and (engines[last[0]], plans[last[0]].start_layer) == key:
            last.append(i)
        else:
            out.append([i])
    return out


def _bar(total: int, on: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not on, desc="sweep", leave=False)


def _loop_reference(model, inputs, items: Sequence, metric: Metric) -> list[float]:
    """One ``interp.run`` per item: the specification the batched sweep must match."""
    from interp.intervene.run import run

    return [scalar(metric(run(model, inputs, _as_list(it)))) for it in items]


def sweep_heads(model, inputs, make_edit, metric: Metric, heads: Sequence[HeadId] | None = None, *,
                attention_mask: torch.Tensor | None = None, max_rows: int | None = None, progress: bool = True,
                task: str = "sweep", metric_name: str | None = None) -> pd.DataFrame:
    """Apply ``make_edit(head)`` for each head (all query heads by default), or each item of a list of edits,
    and return a tidy frame with one row per head (or item): the metric ``value``; the clean value is in
    ``df.attrs["clean"]``."""
    from interp.models import model_name
    from interp.schema import make_frame

    if not callable(metric):
        raise InputError(f"metric must be a function of the logits returning a number, got a {type(metric).__name__}")
    if not callable(make_edit) and not isinstance(make_edit, (list, tuple)):
        raise InputError(f"make_edit must be a function of a HeadId returning an edit (or a list of edits), got a "
                         f"{type(make_edit).__name__}")

    if callable(make_edit):
        heads = list(heads) if heads is not None else [HeadId(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
        items = [make_edit(h) for h in heads]
        keys = [(h.layer, h.head) for h in heads]
    else:
        items = list(make_edit)
        keys = [_key(it) for it in items]
    if not items:
        raise InputError("nothing to sweep: no heads or edits given")
    values, clean = sweep_edits(model, inputs, items, metric, attention_mask=attention_mask, max_rows=max_rows, progress=progress)
    name = metric_name or getattr(metric, "name", None) or getattr(metric, "__name__", "metric")
    df = make_frame([{"model": model_name(model), "task": task, "layer": l, "head": h, "metric": name, "value": v}
                     for (l, h), v in zip(keys, values)])
    df.attrs["clean"] = clean
    return df


def _key(item) -> tuple[int, int]:
    e = _as_list(item)[0]
    head = getattr(e, "head", None)
    layer = getattr(e, "layer", getattr(head, "layer", -1))
    h = head.head if isinstance(head, HeadId) else (head.group if hasattr(head, "group") else (head if isinstance(head, int) else -1))
    return int(layer if layer is not None else -1), int(h)


__all__ = ["sweep_heads", "sweep_edits", "metric_positions", "record_prefix", "scalar"]
