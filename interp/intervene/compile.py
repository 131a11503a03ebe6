"""Edit values → hook operations (and, for attention edits, fused-kernel edits).

``RULES`` maps each edit type to a :class:`Rule`: ``hooks`` compiles the edit to :class:`Op` values that act on
one site's tensor in its TransformerLens layout (``interp.types.SITES``); ``fused`` returns the
``interp.edits`` values that the fused attention kernel applies. An edit may have either or both; the
engine picks per run (see :mod:`interp.intervene.run`). Letting a new edit also run in the fused kernel is one
``fused=`` entry here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from interp import edits as attn_edits
from interp.errors import InputError
from interp.intervene import values as v
from interp.types import HeadId, KVGroup, kv_group_of, query_heads_of, site

PATTERN_SITES = ("pattern", "attn_scores")


@dataclass(frozen=True)
class Dims:
    model: str
    n_layers: int
    n_heads: int
    n_kv: int
    d_head: int
    d_model: int
    d_mlp: int | None = None

    @classmethod
    def of(cls, model) -> "Dims":
        from interp.models import model_name

        c = model.cfg
        return cls(model_name(model), c.n_layers, c.n_heads, getattr(c, "n_key_value_heads", None) or c.n_heads, c.d_head, c.d_model,
                   getattr(c, "d_mlp", None))

    def width(self, site_name: str) -> int:
        """The last-axis width of a site's activation (per head for per-head sites)."""
        if site_name == "mlp_post":
            if not self.d_mlp:
                raise InputError(f"model {self.model!r} has no MLP width (d_mlp) for site 'mlp_post'")
            return self.d_mlp
        return self.d_head if site(site_name).per_head else self.d_model


@dataclass(frozen=True)
class Ctx:
    """What an op may need besides the tensor: the rows' key padding and causality."""

    attention_mask: torch.Tensor  # [rows pos] bool
    causal: bool = True


@dataclass(frozen=True, eq=False)
class Op:
    """One action on a site's tensor. ``fn(t, ctx)`` returns the new tensor (``writes``) or None (a read).
    ``affine = (head, scale, shift [d_head] | None)`` marks an op that is ``z[:, :, head] * scale + shift`` at
    every position: the engine merges such ops of many rows into per-row ``[rows, head]`` parameters."""

    site: str
    layer: int
    fn: Callable[[torch.Tensor, Ctx], torch.Tensor | None]
    writes: bool = True
    affine: tuple[int, float, torch.Tensor | None] | None = None


@dataclass(frozen=True)
class Rule:
    hooks: Callable[[Any, Dims], list[Op]] | None = None
    fused: Callable[[Any], list] | None = None


def head_index(site_name: str, layer: int, head, dims: Dims, who: str) -> int | None:
    """The index into the site's head axis (query heads, or KV groups for k/v), or None for all heads."""
    if not 0 <= layer < dims.n_layers:
        raise InputError(f"{who}: layer {layer} out of range; the model has {dims.n_layers} layers (0-{dims.n_layers - 1})")
    s = site(site_name)
    if head is None:
        return None
    if not s.per_head:
        raise InputError(f"{who}: site {site_name!r} has no head axis; drop the head")
    gqa = dims.n_kv != dims.n_heads
    if s.kv:
        if isinstance(head, HeadId):
            if gqa:
                g = kv_group_of(head, dims.n_heads, dims.n_kv)
                others = ", ".join(str(h) for h in query_heads_of(g, dims.n_heads, dims.n_kv))
                raise InputError(f"{who}: site {site_name!r} belongs to a KV group, and {head} is a query head; it reads {g} "
                                 f"(shared by {others}); pass KVGroup({g.layer}, {g.group})")
            head = head.head
        elif isinstance(head, KVGroup):
            head = head.group
        n, what = dims.n_kv, "KV groups"
    else:
        if isinstance(head, KVGroup):
            qs = query_heads_of(head, dims.n_heads, dims.n_kv)
            raise InputError(f"{who}: site {site_name!r} is per query head, and {head} is a KV group (read by {qs[0]}..{qs[-1]}); "
                             f"pass a HeadId, e.g. HeadId({qs[0].layer}, {qs[0].head})")
        head = head.head if isinstance(head, HeadId) else head
        n, what = dims.n_heads, "query heads"
    if not 0 <= int(head) < n:
        raise InputError(f"{who}: head {head} out of range for site {site_name!r}: layer {layer} has {n} {what} (0-{n - 1})")
    return int(head)


def _layout(site_name: str) -> str:
    return "bhqk" if site_name in PATTERN_SITES else ("bphd" if site(site_name).per_head else "bpd")


def _pos_index(positions, n: int, who: str):
    if positions is None:
        return slice(None)
    bad = [p for p in positions if not -n <= p < n]
    if bad:
        raise InputError(f"{who}: position {bad[0]} out of range for {n} positions; use 0..{n - 1} or negatives")
    return torch.tensor([p % n for p in positions])


def _index(site_name: str, pos, h):
    """Index tuple selecting ``pos`` (a tensor or slice) and head ``h`` (int or None) in the site's layout."""
    hh = slice(None) if h is None else h
    if _layout(site_name) == "bhqk":
        return (slice(None), hh, pos)
    if _layout(site_name) == "bphd":
        return (slice(None), pos, hh)
    return (slice(None), pos)


def _n_pos(site_name: str, t: torch.Tensor) -> int:
    return t.shape[2] if _layout(site_name) == "bhqk" else t.shape[1]


def _setter(e, h: int | None, value_fn) -> Callable:
    """An op that writes ``value_fn(t, pos_idx, ctx)`` into the selected slice."""
    def fn(t, ctx):
        pos = _pos_index(e.positions, _n_pos(e.site, t), repr(e))
        idx = _index(e.site, pos, h)
        out = t.clone()
        out[idx] = value_fn(t, idx, pos, ctx).to(t.dtype)
        return out
    return fn


def _located(e, dims: Dims) -> int | None:
    return head_index(e.site, e.layer, e.head, dims, type(e).__name__)


def _zero_ops(e: v.ZeroAblate, dims: Dims) -> list[Op]:
    h = _located(e, dims)
    fn = _setter(e, h, lambda t, idx, pos, ctx: torch.zeros((), device=t.device))
    aff = (h, 0.0, None) if (h is not None and e.positions is None and _layout(e.site) == "bphd") else None
    return [Op(e.site, e.layer, fn, affine=aff)]


def _source_tensor(src, e, dims: Dims) -> torch.Tensor:
    if getattr(src, "model", dims.model) != dims.model:
        raise InputError(f"{type(e).__name__}: source was captured from model {src.model!r}, but this run is on {dims.model!r}; capture it from the same model")
    if getattr(src, "heads", None) is not None or getattr(src, "positions", None) is not None:
        raise InputError(f"{type(e).__name__}: source capture is restricted to some heads/positions; capture it with heads=None and positions=None")
    return src[e.site, e.layer]


def _check_rows(src: torch.Tensor, t: torch.Tensor, e) -> torch.Tensor:
    if tuple(src.shape[1:]) != tuple(t.shape[1:]):
        raise InputError(f"{type(e).__name__}: source {e.site} at layer {e.layer} has shape {list(src.shape)}, this run's is {list(t.shape)}; "
                         "capture the source from the same model on prompts of the same token length")
    return src.to(t.device)


def _mean_ops(e: v.MeanAblate, dims: Dims) -> list[Op]:
    h = _located(e, dims)
    mean = e.mean
    if hasattr(mean, "tensors"):
        if mean.model != dims.model:
            raise InputError(f"MeanAblate: means were computed on {mean.model!r}, this run is on {dims.model!r}")
        mean = mean[e.site, e.layer]
    mean = torch.as_tensor(mean, dtype=torch.float32)
    site_rank = 3 if _layout(e.site) == "bphd" else 2  # site rank without batch
    per_pos = mean.ndim == site_rank

    def value(t, idx, pos, ctx):
        if per_pos:
            if mean.shape[0] != _n_pos(e.site, t):
                raise InputError(f"MeanAblate: per-position mean has {mean.shape[0]} positions, the run has {_n_pos(e.site, t)}; use per_position=False")
            return mean.to(t.device)[(pos,) + ((h,) if h is not None else ())]
        return mean.to(t.device)[h] if h is not None else mean.to(t.device)

    aff = (h, 0.0, mean[h]) if (h is not None and not per_pos and e.positions is None and _layout(e.site) == "bphd") else None
    return [Op(e.site, e.layer, _setter(e, h, value), affine=aff)]


def _resample_ops(e: v.ResampleAblate, dims: Dims) -> list[Op]:
    h = _located(e, dims)

    def value(t, idx, pos, ctx):
        src = _source_tensor(e.source, e, dims)
        g = torch.Generator().manual_seed(int(e.seed))
        rows = torch.randint(0, src.shape[0], (t.shape[0],), generator=g)
        return _check_rows(src[rows], t, e)[idx]

    return [Op(e.site, e.layer, _setter(e, h, value))]


def _patch_ops(e: v.Patch, dims: Dims) -> list[Op]:
    h = _located(e, dims)
    _source_tensor(e.source, e, dims)  # fail at compile time on the wrong model or a missing site

    def value(t, idx, pos, ctx):
        src = _source_tensor(e.source, e, dims)
        if src.shape[0] not in (1, t.shape[0]):
            raise InputError(f"Patch: source has {src.shape[0]} rows, the run has {t.shape[0]}; capture one row or one per input row")
        return _check_rows(src, t, e).expand(t.shape[0], *src.shape[1:])[idx]

    return [Op(e.site, e.layer, _setter(e, h, value))]


def interchange(w: torch.Tensor, u: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``w + (u − w)·B Bᵀ``: ``w``'s component in span(B) replaced by ``u``'s (B ``[d, k]`` orthonormal; the
    fast form of :func:`interchange_rotated`). Exactly ``w`` when ``u`` equals ``w``."""
    b = basis.to(w.device, w.dtype)
    return w + ((u - w) @ b) @ b.T


def interchange_rotated(w: torch.Tensor, u: torch.Tensor, rotation: torch.Tensor, k: int) -> torch.Tensor:
    """Reference (DAS's definition, §11): rotate by the orthogonal ``rotation [d, d]`` (its first ``k`` columns
    span the subspace), take the first ``k`` rotated coordinates from ``u`` and the rest from ``w``, rotate back."""
    rw, ru = w @ rotation, u @ rotation
    mixed = torch.cat([ru[..., :k], rw[..., k:]], -1)
    return mixed @ rotation.T


def _subspace_ops(e: v.SubspacePatch, dims: Dims) -> list[Op]:
    h = _located(e, dims)
    d = dims.width(e.site)
    if e.basis.shape[0] != d:
        raise InputError(f"SubspacePatch: basis has {e.basis.shape[0]} rows, but site {e.site!r} has width {d}; give a [{d}, k] basis")
    _source_tensor(e.source, e, dims)

    def value(t, idx, pos, ctx):
        src = _source_tensor(e.source, e, dims)
        if src.shape[0] not in (1, t.shape[0]):
            raise InputError(f"SubspacePatch: source has {src.shape[0]} rows, the run has {t.shape[0]}; capture one row or one per input row")
        u = _check_rows(src, t, e).expand(t.shape[0], *src.shape[1:])[idx]
        return interchange(t[idx], u.to(t.dtype), e.basis)

    return [Op(e.site, e.layer, _setter(e, h, value))]


def _check_vector(vec: torch.Tensor, n: int, what: str, who: str) -> None:
    if vec.shape[-1] != n:
        raise InputError(f"{who}: vector has dimension {vec.shape[-1]}, but {what} is {n}")


def _add_to_head_ops(e: v.AddToHead, dims: Dims) -> list[Op]:
    h = head_index("z", e.head.layer, e.head, dims, "AddToHead")
    _check_vector(e.vector, dims.d_head, "d_head", "AddToHead")
    add = e.vector * float(e.alpha)
    probe = v.ZeroAblate("z", e.head.layer, h, e.positions)
    fn = _setter(probe, h, lambda t, idx, pos, ctx: t[idx] + add.to(t.device))
    return [Op("z", e.head.layer, fn, affine=(h, 1.0, add) if e.positions is None else None)]


def _add_vector_ops(e: v.AddVector, dims: Dims) -> list[Op]:
    head_index(e.site, e.layer, None, dims, "AddVector")
    _check_vector(e.vector, dims.d_model, "d_model", "AddVector")
    add = e.vector * float(e.alpha)
    probe = v.ZeroAblate(e.site, e.layer, None, e.positions)
    fn = _setter(probe, None, lambda t, idx, pos, ctx: t[idx] + add.to(t.device))
    return [Op(e.site, e.layer, fn)]


def _scale_head_ops(e: attn_edits.ScaleHeadOutput, dims: Dims) -> list[Op]:
    head = e.head if isinstance(e.head, HeadId) else HeadId.parse(str(e.head))
    h = head_index("z", head.layer, head, dims, "ScaleHeadOutput")
    f = float(e.factor)

    def fn(t, ctx):
        out = t.clone()
        out[:, :, h] = t[:, :, h] * f
        return out

    return [Op("z", head.layer, fn, affine=(h, f, None))]


def _visible(ctx: Ctx, n_q: int, n_k: int, device) -> torch.Tensor:
    """``[rows 1 query_pos key_pos]`` bool: keys a query may attend to (padding and causality)."""
    vis = ctx.attention_mask.to(device).bool()[:, None, None, :n_k].expand(-1, 1, n_q, n_k)
    if ctx.causal:
        vis = vis & torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(n_k - n_q)
    return vis


def _set_pattern_ops(e: v.SetPattern, dims: Dims) -> list[Op]:
    h = head_index("pattern", e.head.layer, e.head, dims, "SetPattern")

    def fn(t, ctx):  # t: [batch head_index query_pos key_pos]
        n_q, n_k = t.shape[2], t.shape[3]
        qpos = _pos_index(e.query_positions, n_q, "SetPattern")
        rows = torch.zeros(t.shape[0], n_k, dtype=t.dtype, device=t.device)
        if isinstance(e.weights, dict):
            keys = _pos_index(tuple(e.weights), n_k, "SetPattern key")
            rows[:, keys] = torch.tensor(list(e.weights.values()), dtype=t.dtype, device=t.device)
        else:
            w = e.weights.to(t.device, t.dtype)
            if w.shape[-1] != n_k or (w.ndim == 2 and w.shape[0] not in (1, t.shape[0])):
                raise InputError(f"SetPattern weights have shape {list(w.shape)}; the run needs [{n_k}] or [{t.shape[0]}, {n_k}]")
            rows[:] = w
        vis = _visible(ctx, n_q, n_k, t.device)[:, 0, qpos]  # [batch n_query key_pos]
        if bool(((rows[:, None, :] > 0) & ~vis).any()):
            raise InputError(f"SetPattern {e.head}: weights put mass on keys that query positions {list(e.query_positions)} cannot see (causal mask or padding)")
        out = t.clone()
        out[:, h, qpos] = rows[:, None, :].expand(-1, len(qpos), -1)
        return out

    return [Op("pattern", e.head.layer, fn)]


def _mix_ops(e, dims: Dims) -> list[Op]:
    head = e.head if isinstance(e.head, HeadId) else HeadId.parse(str(e.head))
    h = head_index("pattern", head.layer, head, dims, type(e).__name__)
    s = float(e.strength)
    if not 0.0 <= s <= 1.0:
        raise InputError(f"{type(e).__name__} strength must lie in [0, 1], got {s}")

    def fn(t, ctx):
        n_q, n_k = t.shape[2], t.shape[3]
        vis = _visible(ctx, n_q, n_k, t.device)[:, 0].to(t.dtype)  # [batch query_pos key_pos]
        if isinstance(e, attn_edits.MixUniform):
            target = vis / vis.sum(-1, keepdim=True).clamp_min(1)
        else:
            target = torch.eye(n_q, n_k, k=n_k - n_q, dtype=t.dtype, device=t.device).expand_as(vis) * vis
        out = t.clone()
        out[:, h] = (1 - s) * t[:, h] + s * target
        return out

    return [Op("pattern", head.layer, fn)]


def _same(e) -> list:
    return [e]


def _set_pattern_fused(e: v.SetPattern) -> list | None:
    """The kernel's exact row overwrite, where the value fits it (query positions from the start, one weight row);
    None otherwise, and the bridge's pattern hook applies it instead."""
    if any(q < 0 for q in e.query_positions):
        return None
    w = e.weights
    if isinstance(w, dict):
        if min(w) < 0:
            return None
        row = torch.zeros(max(w) + 1, dtype=torch.float64)
        for k, x in w.items():
            row[k] = x
    elif isinstance(w, torch.Tensor) and w.ndim == 1:
        row = w.double()
    else:
        return None
    return [attn_edits.SetPattern(e.head, e.query_positions, tuple(row.tolist()))]


RULES: dict[type, Rule] = {
    v.ZeroAblate: Rule(hooks=_zero_ops),
    v.MeanAblate: Rule(hooks=_mean_ops),
    v.ResampleAblate: Rule(hooks=_resample_ops),
    v.Patch: Rule(hooks=_patch_ops),
    v.SubspacePatch: Rule(hooks=_subspace_ops),
    v.AddToHead: Rule(hooks=_add_to_head_ops),
    v.AddVector: Rule(hooks=_add_vector_ops),
    v.SetPattern: Rule(hooks=_set_pattern_ops, fused=_set_pattern_fused),
    attn_edits.ScaleHeadOutput: Rule(hooks=_scale_head_ops, fused=_same),
    attn_edits.MixUniform: Rule(hooks=_mix_ops, fused=_same),
    attn_edits.MixIdentity: Rule(hooks=_mix_ops, fused=_same),
    attn_edits.ScaleSegment: Rule(fused=_same),
}


def flatten(edits) -> list:
    """Expand composite edits (``RetrievalMask``) and check every edit is known."""
    if edits is None:
        return []
    if not isinstance(edits, (list, tuple)):
        edits = [edits]
    out = []
    for e in edits:
        if hasattr(e, "expand") and not isinstance(e, torch.Tensor):
            out += flatten(e.expand())
        elif hasattr(e, "to_edits") and type(e) not in RULES:
            raise InputError(f"{type(e).__name__} needs clean statistics to compile (segments); apply it with interp.intervene.MCEvaluator or attention_stats")
        elif type(e) not in RULES:
            raise InputError(f"{e!r} is not an edit; known edits: {', '.join(t.__name__ for t in RULES)}")
        else:
            out.append(e)
    return out


def rule(e) -> Rule:
    return RULES[type(e)]


def op_sites(e, dims: Dims) -> set[str]:
    r = rule(e)
    return {op.site for op in r.hooks(e, dims)} if r.hooks else set()


__all__ = ["RULES", "Rule", "Op", "Ctx", "Dims", "flatten", "rule", "head_index", "PATTERN_SITES", "interchange",
           "interchange_rotated"]
