"""Labelled key spans ("segments") → a ``[batch n_segments pos]`` 0/1 tensor in padded-batch coordinates.

A segment spec is one of:
- ``"first"``: each row's first real token (the attention-sink position);
- ``(start, end)``: the same half-open span in every row, counted from the row's first real token;
- a list with one ``(start, end)`` (or list of spans, or None) per row;
- a bool/0-1 tensor ``[pos]`` or ``[batch pos]`` already in padded-batch coordinates.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from interp.errors import InputError

DEFAULT_SEGMENTS = {"first": "first"}


def build_segments(specs: Mapping[str, Any] | None, attention_mask: torch.Tensor, *, allow_overlap: bool = False):
    """Return ``(names, tensor)``; ``tensor`` is None when there are no segments."""
    specs = DEFAULT_SEGMENTS if specs is None else specs
    if not specs:
        return (), None
    if not isinstance(specs, Mapping):
        raise InputError("segments must be a dict {name: spec}, e.g. {'first': 'first', 'needle': (120, 140)}")
    valid = attention_mask.bool().cpu()  # [batch pos]
    starts = valid.float().argmax(1)  # first real token per row
    lengths = valid.sum(1)
    out = torch.stack([_one(name, spec, valid, starts, lengths) for name, spec in specs.items()], 1)
    if not allow_overlap and bool((out.sum(1) > 1).any()):
        b, pos = (out.sum(1) > 1).nonzero()[0].tolist()
        raise InputError(f"segments overlap at row {b}, position {pos}; make them disjoint or pass allow_overlap=True")
    return tuple(specs), out.to(attention_mask.device)


def _one(name, spec, valid, starts, lengths) -> torch.Tensor:
    b, n = valid.shape
    seg = torch.zeros(b, n)
    if isinstance(spec, str):
        if spec != "first":
            raise InputError(f"segment {name!r}: unknown shortcut {spec!r}; use 'first', a (start, end) span or a mask")
        seg[torch.arange(b), starts] = 1
        return seg
    if isinstance(spec, torch.Tensor):
        t = spec.to(torch.float32).cpu()
        t = t.expand(b, -1) if t.ndim == 1 else t
        if t.shape != (b, n):
            raise InputError(f"segment {name!r}: mask shape {tuple(spec.shape)} must be [{n}] or [{b}, {n}]")
        if bool((t * (~valid)).any()):
            raise InputError(f"segment {name!r} covers padding positions; restrict it to real tokens")
        return t
    rows = [spec] * b if _is_span(spec) else list(spec)
    if len(rows) != b:
        raise InputError(f"segment {name!r}: got spans for {len(rows)} rows but the batch has {b}")
    for r, row in enumerate(rows):
        for span in ([] if row is None else [row] if _is_span(row) else row):
            s, e = (int(x) for x in span)
            if not 0 <= s < e <= int(lengths[r]):
                raise InputError(f"segment {name!r}: span ({s}, {e}) out of range for row {r} of {int(lengths[r])} tokens; use 0 <= start < end <= length")
            seg[r, int(starts[r]) + s: int(starts[r]) + e] = 1
    return seg


def _is_span(x) -> bool:
    return isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(v, int) for v in x)
