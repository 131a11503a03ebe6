"""Applying edits: ``run(model, inputs, edits, capture)`` and ``with edited(model, edits): ...``.

Two engines apply the same compiled :class:`~interp.intervene.compile.Op` values:

- ``hf``: hooks on the plain transformers modules (:mod:`interp.intervene.hf`); attention edits that only the
  fused kernel knows (``ScaleSegment``, or ``MixUniform`` when no pattern hook is wanted) run inside the fused
  attention path. Used whenever the architecture is known and no site needs the attention pattern. It can also
  start a run at layer l from a recorded clean residual stream (``Prefix``), which batched sweeps use.
- ``bridge``: hooks on the TransformerBridge hook points; needed for ``pattern``/``attn_scores`` edits and
  captures, and the fallback for other architectures.

Both give the bridge's own numbers (raw HF numerics, eager attention). Rows of one batch may carry different
edits (``groups``): group g owns rows ``g·B … g·B + B − 1``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from interp.errors import InputError
from interp.inputs import Batch, to_batch
from interp.intervene import compile as C
from interp.intervene.hf import HF_SITES, find_stack, plain

_ACTIVE_ATTR = "_interp_active_edits"


@dataclass(eq=False)
class Plan:
    """Compiled edits for a batch of ``len(groups)`` row groups of ``rows_per_group`` rows each."""

    model: object
    engine: str
    ops: dict[tuple[str, int], list[tuple[slice | None, C.Op]]]
    fused: list
    rows_per_group: int
    n_groups: int
    start_layer: int = 0
    captured: dict = field(default_factory=dict)
    fused_rows: list | None = None  # per group: fused-kernel edits of that group's rows (several groups)

    @classmethod
    def build(cls, model, groups: Sequence[Sequence], rows_per_group: int, capture_sites=(), engine: str | None = None) -> "Plan":
        dims = C.Dims.of(model)
        groups = [C.flatten(g) for g in groups]
        every = [e for g in groups for e in g]
        engine = engine or choose_engine(model, every, capture_sites, dims)
        ops: dict = {}
        fused: list = []
        per_group: list[list] = [[] for _ in groups]
        start = dims.n_layers
        for gi, g in enumerate(groups):
            rows = None if len(groups) == 1 else slice(gi * rows_per_group, (gi + 1) * rows_per_group)
            for e in g:
                r = C.rule(e)
                compiled = r.hooks(e, dims) if r.hooks else None
                if compiled is not None and (engine == "bridge" or all(op.site in HF_SITES for op in compiled)):
                    for op in compiled:
                        ops.setdefault((op.site, op.layer), []).append((rows, op))
                        start = min(start, op.layer)
                else:  # the fused kernel takes per-row edit parameters, so each group keeps its own
                    (fused if len(groups) == 1 else per_group[gi]).extend(r.fused(e))
                    start = 0
        rows = per_group if any(per_group) else None
        return cls(model, engine, ops, fused, rows_per_group, len(groups), 0 if not ops else start, fused_rows=rows)

    def row_edits(self) -> list[list] | None:
        """One fused edit list per batch row (``None`` when every row has the same)."""
        if self.fused_rows is None:
            return None
        return [g for g in self.fused_rows for _ in range(self.rows_per_group)]

    def add_reads(self, spec, store: dict, layers, heads, rows) -> None:
        """Capture the sites of ``spec`` (after the edits) into ``store[(site, layer)]``; ``rows [batch k]`` are
        the padded-batch indices of the spec's positions (``interp.hooks.row_positions``)."""
        from interp.hooks import _make_hook

        for s in spec.sites:
            for l in layers:
                src = "z" if s == "result" else s
                h = _make_hook(self.model, store, s, l, heads, rows)
                self.ops.setdefault((src, l), []).append((None, C.Op(src, l, _reader(h), writes=False)))

    def hooks(self, mask: torch.Tensor, causal: bool) -> dict[tuple[str, int], callable]:
        ctx = C.Ctx(mask.bool(), causal)
        return {key: _composite(entries, ctx) for key, entries in self.ops.items()}


def _reader(hook):
    def fn(t, ctx):
        hook(t)
        return None
    return fn


def choose_engine(model, edits, capture_sites, dims: C.Dims) -> str:
    """``hf`` unless a site needs the bridge's pattern hook or the architecture is unknown to the hf engine."""
    needs_bridge = find_stack(model) is None or any(s in C.PATTERN_SITES for s in capture_sites)
    fused_only = []
    for e in edits:
        r = C.rule(e)
        sites = {op.site for op in r.hooks(e, dims)} if r.hooks else None
        if sites is None:
            fused_only.append(e)
        elif not sites <= HF_SITES and (r.fused is None or r.fused(e) is None):
            needs_bridge = True
    if needs_bridge and fused_only:
        raise InputError(f"{fused_only[0]!r} runs only in the fused attention kernel, which cannot be combined with pattern "
                         "hooks or this architecture; apply it in a separate run (interp.attention_stats)")
    return "bridge" if needs_bridge else "hf"


def _merge_affine(writes, n_rows: int, n_heads: int, d: int, like: torch.Tensor):
    scale = torch.ones(n_rows, n_heads, dtype=like.dtype, device=like.device)  # [rows head_index]
    shift = torch.zeros(n_rows, n_heads, d, dtype=like.dtype, device=like.device)  # [rows head_index d_head]
    for rows, op in writes:
        h, s, sh = op.affine
        r = slice(None) if rows is None else rows
        scale[r, h] *= s
        shift[r, h] *= s
        if sh is not None:
            shift[r, h] += sh.to(like)
    return scale, shift


def _composite(entries, ctx: C.Ctx):
    """One hook for all ops at a site: writes in order (per-row affine ops merged), then reads."""
    writes = [(r, op) for r, op in entries if op.writes]
    reads = [(r, op) for r, op in entries if not op.writes]
    affine = len(writes) > 1 and all(op.affine is not None for _, op in writes)
    cache: dict = {}

    def fn(t: torch.Tensor):
        out = t
        if affine:
            key = (t.shape[0], t.dtype, t.device)
            if key not in cache:
                cache[key] = _merge_affine(writes, t.shape[0], t.shape[2], t.shape[3], t)
            scale, shift = cache[key]
            out = t * scale[:, None, :, None] + shift[:, None]
        else:
            for rows, op in writes:
                if rows is None:
                    out = op.fn(out, _ctx_rows(ctx, None, out))
                else:
                    sub = op.fn(out[rows], _ctx_rows(ctx, rows, out))
                    out = out.clone() if out is t else out
                    out[rows] = sub
        for rows, op in reads:
            op.fn(out if rows is None else out[rows], _ctx_rows(ctx, rows, out))
        return out if writes else None

    return fn


def _ctx_rows(ctx: C.Ctx, rows, t) -> C.Ctx:
    mask = ctx.attention_mask
    if mask.shape[0] != t.shape[0] and rows is None:  # inside `edited`: no padding information
        mask = torch.ones(t.shape[0], mask.shape[1], dtype=torch.bool)
    return C.Ctx(mask if rows is None else mask[rows], ctx.causal)


@contextlib.contextmanager
def _hf_context(model, plan: Plan, mask: torch.Tensor):
    """The plain HF model (fused attention when the plan has fused edits) with the plan's hooks attached."""
    from interp.models import is_causal

    stack = find_stack(model)
    if plan.fused or plan.fused_rows:
        from interp.attnstats.fused import Recorder, activate
        from interp.edits import compile_edits

        d = C.Dims.of(model)
        edits = compile_edits(plan.fused, d.n_layers, d.n_heads, (), row_edits=plan.row_edits(), attention_mask=mask)
        rec = Recorder(None, key_valid=mask.bool(), edits=edits, keep=False)
        cm = activate(model, rec)
    else:
        cm = plain(model)
    handles: list = []
    with cm as hf:
        try:
            for (s, l), fn in plan.hooks(mask, is_causal(model)).items():
                handles += stack.attach(s, l, fn)
            yield hf, stack
        finally:
            for h in handles:
                h.remove()


@contextlib.contextmanager
def _bridge_context(model, plan: Plan, mask: torch.Tensor | None):
    from interp.models import is_causal
    from interp.types import hook_name

    m = mask if mask is not None else torch.ones(1, 1, dtype=torch.bool)
    hooks = [(hook_name(s, l), _tl(fn)) for (s, l), fn in plan.hooks(m, is_causal(model)).items()]
    with model.hooks(fwd_hooks=hooks):
        yield model


def _tl(fn):
    def hook(t, hook=None):
        return fn(t)
    return hook


def execute(plan: Plan, tokens: torch.Tensor, mask: torch.Tensor, *, logit_positions=None) -> torch.Tensor:
    """Logits ``[rows pos d_vocab]`` (or ``[rows len(logit_positions) d_vocab]``) of one full forward pass."""
    with torch.no_grad():
        if plan.engine == "bridge":
            with _bridge_context(plan.model, plan, mask):
                logits = plan.model(tokens, attention_mask=mask)
            return logits if logit_positions is None else logits[:, logit_positions]
        with _hf_context(plan.model, plan, mask) as (hf, stack):
            keep = 0 if logit_positions is None else torch.as_tensor(logit_positions)
            return hf(input_ids=tokens, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits


def active_edits(model) -> list:
    return list(getattr(model, _ACTIVE_ATTR, []))


def run(model, inputs, edits=(), capture=None, *, attention_mask: torch.Tensor | None = None, padding_side: str = "right"):
    """Logits ``[batch pos d_vocab]`` of ``model`` on ``inputs`` with ``edits`` applied; with ``capture`` (a
    ``CaptureSpec``) also the ``Capture`` of those sites as edited: ``logits, cap = run(..., capture=spec)``."""
    from interp.hooks import Capture, CaptureSpec, _resolve, row_positions
    from interp.models import model_name

    if capture is not None and not isinstance(capture, CaptureSpec):
        hint = f"CaptureSpec(sites=({capture!r},))" if isinstance(capture, str) else "CaptureSpec(sites=('z',))"
        raise InputError(f"capture must be a CaptureSpec, got a {type(capture).__name__}; pass capture={hint}")
    batch = to_batch(model, inputs, padding_side=padding_side, attention_mask=attention_mask)
    edits = C.flatten(edits)
    sites = () if capture is None else capture.sites
    engine = choose_engine(model, edits + active_edits(model), sites, C.Dims.of(model))
    plan = Plan.build(model, [edits + (active_edits(model) if engine == "hf" else [])], batch.tokens.shape[0], sites, engine)
    store: dict = {}
    if capture is not None:
        layers, heads, positions = _resolve(model, capture, batch)
        rows = None if positions is None else row_positions(positions, batch.attention_mask)
        plan.add_reads(capture, store, layers, heads, rows)
    logits = execute(plan, batch.tokens, batch.attention_mask)
    if capture is None:
        return logits
    cap = Capture(model_name(model), batch.tokens.cpu(), batch.attention_mask.cpu(), capture, layers, heads, positions,
                  store, logits.detach(), {"padding_side": padding_side, "n_layers": model.cfg.n_layers,
                                           "n_heads": model.cfg.n_heads, "edits": [repr(e) for e in edits]})
    return logits, cap


@contextlib.contextmanager
def edited(model, edits):
    """Apply ``edits`` to every forward pass of ``model`` inside the block (bridge calls, ``run_with_hooks``,
    ``interp.run``). On exit, also after an exception, every hook is removed. Pattern edits here assume
    unpadded inputs. Fused-only edits (``ScaleSegment``) cannot be held open; use ``run``/``attention_stats``."""
    edits = C.flatten(edits)
    for e in edits:
        if C.rule(e).hooks is None:
            raise InputError(f"{e!r} runs only inside the fused attention kernel; pass it to interp.run or attention_stats instead of edited()")
    plan = Plan.build(model, [edits], 0, (), engine="bridge")
    stack = getattr(model, _ACTIVE_ATTR, None)
    if stack is None:
        stack = []
        setattr(model, _ACTIVE_ATTR, stack)
    n = len(stack)
    stack.extend(edits)
    try:
        with _bridge_context(model, plan, None):
            yield model
    finally:
        del stack[n:]


def check_batches_align(model, clean, corrupted, what: str = "clean and corrupted prompts") -> tuple[Batch, Batch]:
    """Token batches of equal shape, or a one-line error."""
    a, b = to_batch(model, clean), to_batch(model, corrupted)
    if a.tokens.shape != b.tokens.shape:
        raise InputError(f"{what} tokenize to different shapes {list(a.tokens.shape)} vs {list(b.tokens.shape)}; "
                         "positions must align: use prompts of the same token length (e.g. single-token names)")
    if not torch.equal(a.attention_mask, b.attention_mask):
        raise InputError(f"{what} have different padding; positions must align: give each pair the same token length")
    return a, b


__all__ = ["run", "edited", "Plan", "execute", "choose_engine", "active_edits", "check_batches_align"]
