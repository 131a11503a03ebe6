"""Activation patching and path patching (methods.md §12, §8), batched through :mod:`interp.intervene.heads`.

``activation_patching`` patches one location at a time, in the named ``direction``:

- ``"denoising"`` (the default; TransformerLens's ``patching.get_act_patch_*``): clean activations into the
  corrupted run; normalized effect ``(m_patched − m_corrupt)/(m_clean − m_corrupt)``, 1 = the location restores
  the clean behaviour;
- ``"noising"``: corrupted activations into the clean run; normalized effect
  ``(m_patched − m_clean)/(m_corrupt − m_clean)``, 1 = the location alone carries the whole corruption (AtP's
  ``c(n)`` and path patching's convention).

Both are ``(m_patched − m_base)/(m_source − m_base)`` with the base run patched from the source run, so a
location's normalized effect is positive when it moves the metric towards the source. ``normalize=False`` gives
the raw patched metric, as TL returns it. A normalization whose denominator is below ``guard_frac`` (10%) of the
metric's spread across prompts gives NaN values with a ``reason`` (:func:`interp.stats.guard`; ``guard_frac=0``
keeps only the zero check, for random test models whose prompts scatter widely). Every frame carries ``direction``.
On ``k``/``v`` the head axis is the KV group, as in TL for GQA models (``head_kind = "kv_group"``).

``path_patching`` (Wang et al.): for each sender head, patch its ``z`` from the corrupted run into the clean
run while every head in the later layers is frozen at its clean ``z`` (and, optionally, every MLP), record the
receivers' activations, then run the clean input again with only those receiver activations patched in.
Receivers are ``"logits"`` (the sender's path through the residual stream, MLPs included unless frozen) or
``(site, head)`` pairs such as ``("q", HeadId(9, 9))`` or ``("v", KVGroup(8, 1))``.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import pandas as pd
import torch

from interp.errors import InputError
from interp.hooks import CaptureSpec
from interp.intervene.run import check_batches_align, run
from interp.intervene.values import Patch
from interp.schema import make_frame
from interp.intervene.heads import scalar, sweep_edits
from interp.stats import GUARD_FRAC
from interp.types import HeadId, KVGroup, check_direction
from interp.types import site as site_spec

BY = ("layer", "layer_pos", "head", "head_pos")


def _locations(model, s: str, by: str, n_pos: int, layers: Sequence[int]):
    """``(layer, head, position)`` tuples in TL's order (layer, then position, then head)."""
    spec = site_spec(s)
    if by in ("head", "head_pos") and not spec.per_head:
        raise InputError(f"site {s!r} has no heads; use by='layer' or by='layer_pos'")
    n_heads = (getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads) if spec.kv else model.cfg.n_heads
    heads = range(n_heads) if by.startswith("head") else [None]
    positions = range(n_pos) if by.endswith("pos") else [None]
    return [(l, h, p) for l in layers for p in positions for h in heads]


def activation_patching(model, clean, corrupted, metric, site: str = "resid_pre", by: str = "layer_pos", *,
                        layers: Sequence[int] | None = None, normalize: bool = True, progress: bool = False,
                        task: str = "patching", direction: str = "denoising", guard_frac: float = GUARD_FRAC) -> pd.DataFrame:
    """Tidy frame of patching effects: one row per (layer[, head][, position]); ``metric = "patch:<site>"``,
    ``direction`` as given; ``df.attrs`` holds the clean and corrupted metric values."""
    from interp.models import model_name
    from interp.stats import guard, spread

    check_direction(direction)
    if by not in BY:
        raise InputError(f"by must be one of {', '.join(BY)}, got {by!r}")
    if site in ("attn_scores", "result"):
        raise InputError(f"patching site {site!r} is not supported; use pattern or z")
    a, b = check_batches_align(model, clean, corrupted)
    src, base = (a, b) if direction == "denoising" else (b, a)  # the source run's activations go into the base run
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [int(l) for l in layers]
    _, cap = run(model, src.tokens, capture=CaptureSpec(sites=(site,), layers=tuple(layers)), attention_mask=src.attention_mask)
    m_src = scalar(metric(cap.logits))
    locs = _locations(model, site, by, a.tokens.shape[1], layers)
    items = [Patch(site, l, h, None if p is None else (p,), source=cap) for l, h, p in locs]
    values, m_base = sweep_edits(model, base.tokens, items, metric, attention_mask=base.attention_mask, progress=progress)
    m_clean, m_corrupt = (m_src, m_base) if direction == "denoising" else (m_base, m_src)
    reason = ""
    if normalize:
        sd = float("nan")
        if hasattr(metric, "per_prompt"):  # the prompts' scatter on the clean run (noising: one more clean forward)
            sd = spread(metric, cap.logits if direction == "denoising" else run(model, a.tokens, attention_mask=a.attention_mask))
        reason = guard(m_src - m_base, sd, "|clean − corrupted|", guard_frac)
        if reason:
            warnings.warn(f"activation_patching: {reason}; the normalized effects are NaN", stacklevel=2)
        values = [float("nan") if reason else (v - m_base) / (m_src - m_base) for v in values]
    kind = "kv_group" if site_spec(site).kv else "query_head"
    rows = [{"layer": l, "head": -1 if h is None else h, "position": -1 if p is None else p, "metric": f"patch:{site}",
             "value": v, "condition": by} for (l, h, p), v in zip(locs, values)]
    df = pd.DataFrame(rows).assign(model=model_name(model), task=task, direction=direction)
    df = make_frame(df.assign(reason=reason) if reason else df)
    if by.startswith("head"):
        df["head_kind"] = kind
    df.attrs.update(clean=m_clean, corrupt=m_corrupt)
    return df


def _receiver(model, r):
    from interp.intervene.compile import Dims, head_index

    if isinstance(r, str):
        if r != "logits":
            raise InputError(f"receiver {r!r} unknown; use 'logits' or (site, head), e.g. ('q', HeadId(9, 9))")
        return None
    s, head = r
    if s not in ("q", "k", "v"):
        raise InputError(f"receiver site must be q, k or v, got {s!r}")
    if not isinstance(head, (HeadId, KVGroup)):
        raise InputError(f"receiver head must be a HeadId (q) or KVGroup (k/v), got {head!r}")
    return s, head.layer, head_index(s, head.layer, head, Dims.of(model), f"receiver ({s}, {head})")


def path_patching(model, clean, corrupted, metric, receivers="logits", senders: Sequence[HeadId] | None = None, *,
                  positions: Sequence[int] | None = None, freeze_mlps: bool = False, progress: bool = False,
                  task: str = "path_patching", guard_frac: float = GUARD_FRAC) -> pd.DataFrame:
    """One row per sender head: ``path_patch`` = ``(m − m_clean)/(m_corrupt − m_clean)`` (§8) and
    ``path_patch_rel`` = ``(m − m_clean)/m_clean`` (the IOI paper's relative change). Path patching is noising
    (the sender's corrupted output goes into the clean run): ``direction = "noising"`` on every row. A ratio whose
    denominator is below 10% of the metric's spread across prompts is NaN with a ``reason``."""
    from interp.models import model_name
    from interp.stats import guard, spread

    a, b = check_batches_align(model, clean, corrupted)
    recv = [_receiver(model, r) for r in (receivers if isinstance(receivers, list) else [receivers])]
    to_logits = any(r is None for r in recv)
    if to_logits and len(recv) > 1:
        raise InputError("receivers: 'logits' cannot be mixed with head receivers; run them separately")
    n_layers = model.cfg.n_layers
    top = n_layers if to_logits else min(r[1] for r in recv)
    senders = list(senders) if senders is not None else [HeadId(l, h) for l in range(top) for h in range(model.cfg.n_heads)]
    late = [h for h in senders if h.layer >= top]
    if late:
        raise InputError(f"sender {late[0]} is not before the first receiver layer {top}")
    pos = None if positions is None else tuple(positions)
    sites = ("z", "mlp_out") if freeze_mlps else ("z",)
    _, cap_clean = run(model, a.tokens, capture=CaptureSpec(sites=sites), attention_mask=a.attention_mask)
    _, cap_bad = run(model, b.tokens, capture=CaptureSpec(sites=("z",)), attention_mask=b.attention_mask)
    m_clean, m_bad = scalar(metric(cap_clean.logits)), scalar(metric(run(model, b.tokens, attention_mask=b.attention_mask)))
    sd = spread(metric, cap_clean.logits)
    why, why_rel = guard(m_bad - m_clean, sd, "|clean − corrupted|", guard_frac), guard(m_clean, sd, "the clean metric", guard_frac)

    def step1(h: HeadId) -> list:
        edits = [Patch("z", h.layer, h.head, pos, source=cap_bad)]
        edits += [Patch("z", l, None, pos, source=cap_clean) for l in range(h.layer + 1, top)]
        if freeze_mlps:
            edits += [Patch("mlp_out", l, None, pos, source=cap_clean) for l in range(h.layer, top)]
        return edits

    if to_logits:
        values, _ = sweep_edits(model, a.tokens, [step1(h) for h in senders], metric, attention_mask=a.attention_mask, progress=progress)
    else:
        values = [_two_step(model, a, step1(h), recv, metric) for h in senders]
    rows = []
    nan = float("nan")
    for h, v in zip(senders, values):
        rows.append({"layer": h.layer, "head": h.head, "metric": "path_patch", "reason": why,
                     "value": nan if why else (v - m_clean) / (m_bad - m_clean)})
        rows.append({"layer": h.layer, "head": h.head, "metric": "path_patch_rel", "reason": why_rel,
                     "value": nan if why_rel else (v - m_clean) / m_clean})
    df = pd.DataFrame(rows).assign(model=model_name(model), task=task, direction="noising")
    df = make_frame(df if why or why_rel else df.drop(columns="reason"))
    df.attrs.update(clean=m_clean, corrupt=m_bad, receivers=[str(r) for r in receivers] if isinstance(receivers, list) else receivers)
    return df


def _two_step(model, a, edits, recv, metric) -> float:
    """Record the receivers under the sender patch, then patch only them into a fresh clean run."""
    sites = tuple(sorted({r[0] for r in recv}))
    layers = tuple(sorted({r[1] for r in recv}))
    _, cap = run(model, a.tokens, edits, capture=CaptureSpec(sites=sites, layers=layers), attention_mask=a.attention_mask)
    patches = [Patch(s, l, h, source=cap) for s, l, h in recv]
    return scalar(metric(run(model, a.tokens, patches, attention_mask=a.attention_mask)))


__all__ = ["activation_patching", "path_patching"]
