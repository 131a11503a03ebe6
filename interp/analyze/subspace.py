"""Distributed alignment search (DAS, Boundless DAS) and the subspace-patching illusion checks (methods.md §11).

``das(model, base, source, site, layer, positions, target)`` learns a ``dim``-dimensional subspace of one site
whose interchange (base component replaced by the source's, :class:`interp.SubspacePatch`) makes the model
give the source-implied answer ``target``. ``subspace_report`` then asks whether that subspace is faithful or
an illusion (Makelov, Lange & Nanda): row/null-space split, effects of each part and of the whole component,
dormancy of the connected part on clean inputs, and a verdict.

Speed: nothing below the patched layer depends on the rotation. :class:`Interchanger` records, once and with
no grad, the base run's input to every decoder layer and the source's site activations; each training step
then runs only the layers from the patch upward, and the unembedding only at the answer position. Models the
hf engine does not know (``interp.intervene.hf.find_stack`` is None) fall back to whole-model runs through
the bridge's hooks (same numbers, slower).

Positions count within each prompt's real tokens (``-1`` is its last token, whatever the padding), as in
``CaptureSpec``; the answer is read at each base prompt's last real token.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from interp.errors import InputError
from interp.intervene.compile import Dims, head_index, interchange
from interp.intervene.values import SUBSPACE_SITES, check_basis

PATCH_AT_INPUT = ("resid_pre", "resid_post")  # sites that are a decoder layer's input: patched there, no hook


@dataclass(eq=False)
class Subspace:
    """A learned (or given) subspace of one site: ``basis [d, k]`` with orthonormal columns.

    ``curve`` has one row per optimiser step (``epoch, step, loss, lr, temperature``). ``accuracy`` is the
    held-out interchange accuracy on ``test`` (indices into the pairs das was given), with ``n_test``, its 95%
    Wilson interval ``ci`` and the majority-class ``baseline`` (the most common target's share)."""

    basis: torch.Tensor
    site: str
    layer: int
    positions: tuple[int, ...]
    head: int | None = None
    model: str = ""
    curve: pd.DataFrame = field(default_factory=pd.DataFrame)
    accuracy: float = float("nan")
    n_test: int = 0
    ci: tuple[float, float] = (float("nan"), float("nan"))
    baseline: float = float("nan")
    train: tuple[int, ...] = ()
    test: tuple[int, ...] = ()
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.basis.shape[1])

    def direction(self) -> torch.Tensor:
        """The first basis vector ``[d]`` (the direction, for dim = 1)."""
        return self.basis[:, 0]


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of ``k`` successes in ``n`` trials."""
    from scipy.stats import binomtest

    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def token_ids(model, target, n: int, what: str = "target") -> torch.Tensor:
    """``[n]`` token ids from ids or strings; each string must be exactly one token."""
    if isinstance(target, (str, int)):
        target = [target] * n
    if isinstance(target, torch.Tensor):
        ids = target.reshape(-1).long()
    else:
        target = list(target)
        ids = []
        for t in target:
            if isinstance(t, str):
                got = model.tokenizer(t, add_special_tokens=False)["input_ids"]
                if len(got) != 1:
                    raise InputError(f"{what} {t!r} is {len(got)} tokens, not one; give single-token answers (e.g. ' Mary' with its space) or token ids")
                ids.append(got[0])
            else:
                ids.append(int(t))
        ids = torch.tensor(ids, dtype=torch.long)
    if ids.shape[0] != n:
        raise InputError(f"{what} has {ids.shape[0]} entries for {n} prompts; give one per prompt")
    vocab = model.cfg.d_vocab
    if bool(((ids < 0) | (ids >= vocab)).any()):
        raise InputError(f"{what} has token ids outside the vocabulary (0-{vocab - 1})")
    return ids


@contextlib.contextmanager
def _frozen(module: torch.nn.Module):
    """Weights without grad for the duration (only the rotation trains), restored afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def _take(x, idx: torch.Tensor, b: int):
    """Rows ``idx`` of batch-leading tensors (dim 0 == b), recursing into tuples; the rest unchanged."""
    if isinstance(x, torch.Tensor):
        return x[idx] if x.ndim and x.shape[0] == b and b > 1 else x
    if isinstance(x, tuple):
        return tuple(_take(y, idx, b) for y in x)
    return x


class Interchanger:
    """Runs base prompts with a site's component swapped for the source's, from the patched layer upward.

    ``logits(fn, rows)`` gives ``[len(rows) d_vocab]`` at each base prompt's last token, where ``fn(w, u)``
    maps the base activations ``w [n k d]`` at the positions (``k`` of them) and the source's ``u`` to the new
    activations (it may carry grad). Everything below the patch is computed once in the constructor."""

    def __init__(self, model, base, source, site: str, layer: int, positions: Sequence[int] | int = (-1,), head=None):
        from interp.hooks import CaptureSpec, row_positions
        from interp.intervene.hf import find_stack
        from interp.intervene.run import check_batches_align, run

        if site not in SUBSPACE_SITES:
            raise InputError(f"site {site!r} is not supported for subspace patching; use one of {', '.join(SUBSPACE_SITES)}")
        dims = Dims.of(model)
        self.head = head_index(site, int(layer), head, dims, "das")
        self.model, self.site, self.layer, self.dims = model, site, int(layer), dims
        self.width = dims.width(site)
        positions = (positions,) if isinstance(positions, int) else tuple(int(p) for p in positions)
        if not positions:
            raise InputError("positions is empty; give the token positions to patch, e.g. (-1,) for the last token")
        self.positions = positions
        a, b = check_batches_align(model, base, source, "base and source prompts")
        self.tokens, self.mask = a.tokens, a.attention_mask
        self.n = a.tokens.shape[0]
        self.rows = row_positions(positions, a.attention_mask).to(a.tokens.device)  # [batch k] padded indices
        self.end = (row_positions((-1,), a.attention_mask)[:, 0]).to(a.tokens.device)  # [batch]
        spec = CaptureSpec(sites=(site,), layers=(self.layer,))
        src, base, clean = [], [], []
        # In chunks of rows: a whole-batch run would hold [batch pos d_vocab] logits (630 MiB at 200 × 16 tokens).
        for rows in torch.arange(self.n).split(CHUNK):
            _, cap = run(model, b.tokens[rows], capture=spec, attention_mask=b.attention_mask[rows])
            src.append(self._gather(cap[site, self.layer].to(a.tokens.device), rows, local=True))
            _, cap = run(model, a.tokens[rows], capture=spec, attention_mask=a.attention_mask[rows])
            base.append(self._gather(cap[site, self.layer].to(a.tokens.device), rows, local=True))
            clean.append(cap.logits[torch.arange(len(rows)), self.end[rows].cpu()])
        self.src, self.base = torch.cat(src), torch.cat(base)  # [batch k d] each
        self.clean_logits = torch.cat(clean)  # [batch d_vocab] at each base prompt's last token
        self.stack = find_stack(model)
        self.prefix = None
        self.kv: dict | None = None
        if self.stack is not None:
            self.prefix = _record_prefix_chunked(model, a)
            if self.positions == (-1,):
                self.kv = self._record_kv()

    def _start(self) -> tuple[int, bool]:
        """The first layer to run, and whether the patch is applied to that layer's input (no hook)."""
        direct = self.site == "resid_pre" or (self.site == "resid_post" and self.layer + 1 < self.dims.n_layers)
        return (self.layer + 1 if (direct and self.site == "resid_post") else self.layer), direct

    def _record_kv(self) -> dict:
        """Per layer from the start: the clean run's post-rotary keys and values ``[batch kv_head pos d_head]``.
        Positions before the last token do not depend on a patch there (causal), so each step recomputes only the
        last token's row of every layer above the patch and reads the other keys and values from here."""
        from interp.intervene.hf import plain

        rec = _KVRecord()
        start, _ = self._start()
        with torch.no_grad(), plain(self.model):
            for i in range(start, self.dims.n_layers):
                args, kwargs = self.prefix.calls[i]
                self.stack.layers[i](self.prefix.hidden[i], *args, **{**kwargs, "past_key_values": rec})
        return rec.kv

    def _gather(self, t: torch.Tensor, idx: torch.Tensor, local: bool = False) -> torch.Tensor:
        """``t``'s values at the patch positions of rows ``idx``: ``[n k d]`` (one head for z, or ``[n k head d]``);
        ``local``: ``t`` holds only those rows."""
        w = t[(torch.arange(len(idx)) if local else idx)[:, None], self.rows[idx]]
        return w if self.head is None or self.site != "z" else w[:, :, self.head]

    def _patch(self, t: torch.Tensor, idx: torch.Tensor, fn) -> torch.Tensor:
        """``t`` (the site's tensor for rows ``idx``) with ``fn`` applied at the positions, differentiably."""
        bidx = torch.arange(t.shape[0], device=t.device)[:, None]
        pos = self.rows[idx]
        new = fn(self._gather_live(t, bidx, pos), self.src[idx].to(t.dtype))
        key = (bidx, pos) if self.head is None or self.site != "z" else (bidx, pos, torch.tensor(self.head))
        return t.index_put(key, new.to(t.dtype))

    def _gather_live(self, t, bidx, pos):
        w = t[bidx, pos]
        return w if self.head is None or self.site != "z" else w[:, :, self.head]

    def logits(self, fn, idx: torch.Tensor | None = None) -> torch.Tensor:
        idx = torch.arange(self.n) if idx is None else torch.as_tensor(idx, dtype=torch.long)
        if self.stack is None:
            return self._bridge_logits(fn, idx)
        if self.kv is not None:
            return self._last_token_logits(fn, idx)
        from interp.intervene.hf import plain

        n_layers = self.dims.n_layers
        start, direct = self._start()
        h = self.prefix.hidden[start][idx]
        if direct:
            h = self._patch(h, idx, fn)
        handles = []
        with plain(self.model):
            try:
                if not direct:
                    handles = self.stack.attach(self.site, self.layer, _hook(lambda t: self._patch(t, idx, fn)))
                for i in range(start, n_layers):
                    args, kwargs = self.prefix.calls[i]
                    out = self.stack.layers[i](h, *_take(args, idx, self.n), **{k: _take(v, idx, self.n) for k, v in kwargs.items()})
                    h = out[0] if isinstance(out, tuple) else out
            finally:
                for hd in handles:
                    hd.remove()
            last = h[torch.arange(len(idx)), self.end[idx]]  # [n d_model]
            return self.stack.unembed(self.stack.norm(last))

    def _last_token_logits(self, fn, idx: torch.Tensor) -> torch.Tensor:
        """The fast path for a patch at each prompt's last token: every layer above runs on that one row."""
        from interp.intervene.hf import plain

        e = self.end[idx]  # [n]
        n = len(idx)
        start, direct = self._start()
        src = self.src[idx]  # [n 1 d] (z without a head: [n 1 head d_head])
        h = self.prefix.hidden[start][idx, e][:, None]  # [n 1 d_model]
        if direct:
            h = fn(h, src.to(h.dtype))

        def at_site(t):  # the site's tensor for the last token only: [n 1 ...]
            if self.site == "z" and self.head is not None:
                return t.index_put((torch.arange(n)[:, None], torch.zeros(n, 1, dtype=torch.long), torch.tensor(self.head)),
                                   fn(t[:, :, self.head], src.to(t.dtype)))
            return fn(t, src.to(t.dtype))

        handles = []
        with plain(self.model):
            try:
                if not direct:
                    handles = self.stack.attach(self.site, self.layer, _hook(at_site))
                for i in range(start, self.dims.n_layers):
                    _, kwargs = self.prefix.calls[i]
                    mask = kwargs.get("attention_mask")
                    cos, sin = kwargs["position_embeddings"]
                    pick = (lambda x: x[idx, e] if x.shape[0] > 1 else x[0, e])
                    kw = {"attention_mask": None if mask is None else (mask[idx, 0, e] if mask.shape[0] > 1 else mask[0, 0, e])[:, None, None, :],
                          "position_embeddings": (pick(cos)[:, None], pick(sin)[:, None]),
                          "position_ids": e[:, None], "past_key_values": _KVSwap(self.kv, idx, e)}
                    out = self.stack.layers[i](h, **kw)
                    h = out[0] if isinstance(out, tuple) else out
            finally:
                for hd in handles:
                    hd.remove()
            return self.stack.unembed(self.stack.norm(h[:, 0]))

    def _bridge_logits(self, fn, idx: torch.Tensor) -> torch.Tensor:
        from interp.types import hook_name

        def hook(t, hook=None):
            return self._patch(t, idx, fn)

        with self.model.hooks(fwd_hooks=[(hook_name(self.site, self.layer), hook)]):
            logits = self.model(self.tokens[idx], attention_mask=self.mask[idx])
        return logits[torch.arange(len(idx)), self.end[idx]]

    def with_basis(self, basis: torch.Tensor | None, idx=None) -> torch.Tensor:
        """Logits with the component in span(basis) interchanged (``None``: the whole activation), no grad."""
        with torch.no_grad():
            if basis is None:
                return self.logits(lambda w, u: u, idx)
            b = check_basis(basis, self.width, "basis")
            return self.logits(lambda w, u: interchange(w, u, b), idx)


CHUNK = 32  # rows per no-grad pass while recording


def _record_prefix_chunked(model, batch):
    """:func:`interp.intervene.heads.record_prefix` in row chunks, merged (the logits are not kept: only the layer
    inputs and call arguments are needed). The attention mask is per row; the other arguments are shared."""
    from interp.inputs import Batch
    from interp.intervene.heads import Prefix, record_prefix

    parts = [record_prefix(model, Batch(batch.tokens[r], batch.attention_mask[r], batch.padding_side))
             for r in torch.arange(batch.tokens.shape[0]).split(CHUNK)]
    hidden = [torch.cat([p.hidden[i] for p in parts]) for i in range(len(parts[0].hidden))]
    calls = []
    for i, (args, kwargs) in enumerate(parts[0].calls):
        kw = dict(kwargs)
        if isinstance(kw.get("attention_mask"), torch.Tensor) and len(parts) > 1:
            kw["attention_mask"] = torch.cat([p.calls[i][1]["attention_mask"].expand(len(p.hidden[i]), -1, -1, -1) for p in parts])
        calls.append((args, kw))
    return Prefix(hidden, calls, None)


class _KVRecord:
    """Stands in for a KV cache in one clean pass: keeps each layer's keys and values, returns them unchanged."""

    def __init__(self):
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, k, v, layer_idx, *args, **kwargs):
        self.kv[layer_idx] = (k.detach(), v.detach())
        return k, v


class _KVSwap:
    """Stands in for a KV cache in a last-token pass: the clean keys/values of rows ``idx`` with position ``e``
    (each row's last token) replaced by the new, patched ones (differentiably)."""

    def __init__(self, kv: dict, idx: torch.Tensor, e: torch.Tensor):
        self.kv, self.idx, self.e = kv, idx, e

    def update(self, k, v, layer_idx, *args, **kwargs):  # k, v: [n kv_head 1 d_head]
        kc, vc = self.kv[layer_idx]
        rows = torch.arange(len(self.idx))
        k_all, v_all = kc[self.idx].clone(), vc[self.idx].clone()  # [n kv_head pos d_head]
        k_all[rows, :, self.e] = k[:, :, 0].to(k_all.dtype)
        v_all[rows, :, self.e] = v[:, :, 0].to(v_all.dtype)
        return k_all, v_all


def _hook(fn):
    def wrapped(t):
        return fn(t)
    return wrapped


class _Rotation(torch.nn.Module):
    """DAS: ``dim`` orthonormal rows (``torch.nn.utils.parametrizations.orthogonal`` on a ``[dim, d]`` weight, the
    first rows of a rotation). Boundless: a full ``[d, d]`` rotation and a learned sigmoid mask over the rotated
    coordinates, sharpened by the temperature."""

    def __init__(self, d: int, dim: int, boundless: bool, seed: int, within: torch.Tensor | None = None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = d if within is None else within.shape[1]  # the rotation acts on span(within) when given
        rows = n if boundless else dim
        lin = torch.nn.Linear(n, rows, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.linalg.qr(torch.randn(n, rows, generator=g))[0].T)
        # Householder reflectors cost O(rows·n) per step; the default matrix exponential costs O(n³) (1.8 s at
        # n = 576 on a loaded core), which would dominate a DAS step. Boundless needs the full square rotation.
        self.rot = torch.nn.utils.parametrizations.orthogonal(lin, orthogonal_map=None if boundless else "householder")
        self.within = within  # [d r] orthonormal, or None
        self.boundless = boundless
        self.mask_logits = torch.nn.Parameter(torch.full((rows,), -1.0)) if boundless else None
        self.temperature = 1.0

    def mask(self) -> torch.Tensor:
        return torch.sigmoid(self.mask_logits / self.temperature)

    def rows(self) -> torch.Tensor:
        """The rotation's rows in the site's coordinates ``[rows d]`` (orthonormal)."""
        r = self.rot.weight
        return r if self.within is None else r @ self.within.T.to(r)

    def forward(self, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r = self.rows()  # [rows d]
        if not self.boundless:
            return w + ((u - w) @ r.T) @ r
        m = self.mask()
        return w + (((u - w) @ r.T) * m) @ r

    def basis(self) -> torch.Tensor:
        """The learned subspace ``[d, k]``: DAS's rows; Boundless's rows whose final mask exceeds 0.5 (at least one)."""
        r = self.rows().detach()
        if not self.boundless:
            return r.T.contiguous()
        m = self.mask().detach()
        keep = (m > 0.5).nonzero()[:, 0]
        if keep.numel() == 0:
            keep = m.argmax()[None]
        return r[keep].T.contiguous()


def das(model, base, source, site: str, layer: int, positions: Sequence[int] | int = (-1,), target=None, *, dim: int = 1,
        head=None, epochs: int = 30, batch_size: int = 20, lr: float = 0.1, lr_end: float = 0.01, test_fraction: float = 0.2,
        seed: int = 0, boundless: bool = False, temperature: tuple[float, float] = (50.0, 0.1), mask_l1: float = 1e-3,
        candidates=None, within=None, interchanger: "Interchanger | None" = None, progress: bool = False) -> Subspace:
    """Train a ``dim``-dimensional subspace of ``site`` at ``layer`` (methods.md §11 settings: Adam, lr 0.1
    decaying linearly to 0.01, 30 epochs, batch 20) so that interchanging it from ``source`` into ``base`` makes
    the model predict ``target`` (the source-implied answers: token ids or single-token strings, one per pair).

    The pairs are split once (``test_fraction`` held out, seeded); the loss is the cross-entropy of the patched
    answer logits on the training split. ``candidates [n c]`` (token ids), if given, restricts the held-out
    accuracy's top-1 to those tokens (e.g. the two IOI names); otherwise it is over the whole vocabulary.

    ``boundless=True`` (Boundless DAS, Wu et al. 2023; our reading, decided here): a full rotation and a sigmoid
    mask over its coordinates, temperature annealed geometrically from ``temperature[0]`` to ``temperature[1]``,
    plus ``mask_l1 · Σ mask`` in the loss; the basis is the coordinates whose final mask exceeds 0.5.

    ``within [d r]`` (orthonormal columns) restricts the search to a subspace, e.g. the null space of some heads'
    W_Q (:func:`complement` of :func:`connected_span`). ``interchanger`` reuses the prefix of an earlier call on
    the same pairs, site and layer (it must have been built from ``base``/``source``)."""
    from interp.models import model_name

    dims = Dims.of(model)
    for name, val, lo in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if not isinstance(val, int) or val < lo:
            raise InputError(f"{name} must be an integer >= {lo}, got {val!r}")
    for name, val in (("lr", lr), ("lr_end", lr_end)):
        if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0):
            raise InputError(f"{name} must be a positive number, got {val!r}")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if not (temperature[0] > 0 and temperature[1] > 0):
        raise InputError(f"temperatures must be > 0, got {temperature}")
    if site not in SUBSPACE_SITES:
        raise InputError(f"site {site!r} is not supported for subspace patching; use one of {', '.join(SUBSPACE_SITES)}")
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise InputError(f"das: site {site!r} needs an integer layer (0-{dims.n_layers - 1}), got {layer!r}")
    head_index(site, int(layer), head, dims, "das")
    d = dims.width(site)
    if not isinstance(dim, int) or not 1 <= dim < d:
        raise InputError(f"dim must be an integer in 1..{d - 1} (the site's width is {d}; dim = d would be the whole-component patch), got {dim!r}")
    if within is not None:
        within = check_basis(within, d, "das within")
        if dim > within.shape[1]:
            raise InputError(f"dim {dim} exceeds the {within.shape[1]} dimensions of within")
    n_prompts = len(base) if isinstance(base, (list, tuple)) else int(torch.as_tensor(base).shape[0]) if not isinstance(base, str) else 1
    if target is None:
        raise InputError("das needs target=the source-implied answer per pair (token ids or single-token strings)")
    y = token_ids(model, target, n_prompts)
    if n_prompts < 2:
        raise InputError(f"das needs at least 2 base/source pairs (a training and a held-out split), got {n_prompts}")
    cand = None if candidates is None else torch.as_tensor(candidates, dtype=torch.long).reshape(n_prompts, -1)
    ix = interchanger or Interchanger(model, base, source, site, layer, positions, head)
    if (ix.site, ix.layer, ix.n) != (site, int(layer), n_prompts):
        raise InputError(f"interchanger was built for {ix.site} layer {ix.layer} on {ix.n} pairs, not {site} layer {layer} on {n_prompts}")

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(ix.n, generator=g)
    n_test = max(1, int(round(test_fraction * ix.n)))
    test, train = perm[:n_test].sort().values, perm[n_test:].sort().values
    torch.manual_seed(seed)
    rot = _Rotation(d, dim, boundless, seed, within)
    opt = torch.optim.Adam(rot.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 + (lr_end / lr - 1.0) * min(s, total - 1) / max(1, total - 1))
    curve = []
    hf = _hf_of(model)
    step = 0
    with _frozen(hf), torch.enable_grad():
        for epoch in range(epochs):
            order = train[torch.randperm(len(train), generator=g)]
            for i in range(0, len(order), batch_size):
                rows = order[i:i + batch_size]
                if boundless:
                    frac = step / max(1, total - 1)
                    rot.temperature = float(temperature[0] * (temperature[1] / temperature[0]) ** frac)
                logits = ix.logits(rot, rows)
                loss = torch.nn.functional.cross_entropy(logits.float(), y[rows].to(logits.device))
                if boundless:
                    loss = loss + mask_l1 * rot.mask().sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                curve.append({"epoch": epoch, "step": step, "loss": float(loss.detach()), "lr": sched.get_last_lr()[0],
                              "temperature": rot.temperature if boundless else float("nan")})
                sched.step()
                step += 1
            if progress:
                print(f"das epoch {epoch + 1}/{epochs}: loss {curve[-1]['loss']:.4f}")
    basis = rot.basis()
    hits = _hits(ix.with_basis(basis, test), y[test], None if cand is None else cand[test])
    k = int(hits.sum())
    return Subspace(basis, site, int(layer), ix.positions, ix.head, model_name(model), pd.DataFrame(curve),
                    k / len(test), len(test), wilson(k, len(test)), _majority(y[test], None if cand is None else cand[test]),
                    tuple(train.tolist()), tuple(test.tolist()),
                    {"dim": dim, "boundless": boundless, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                     "lr_end": lr_end, "seed": seed, "n_pairs": ix.n})


def _hf_of(model) -> torch.nn.Module:
    from interp.attnstats.fused import hf_model_of

    return hf_model_of(model)


def _majority(y: torch.Tensor, cand: torch.Tensor | None) -> float:
    """The majority-class baseline: the best constant answer's accuracy (with candidates: always the same slot,
    e.g. always the second name; without: always the most common target token)."""
    if cand is None:
        return float(torch.bincount(y).max()) / len(y)
    return float(max((cand[:, j] == y).float().mean() for j in range(cand.shape[1])))


def _hits(logits: torch.Tensor, y: torch.Tensor, cand: torch.Tensor | None) -> torch.Tensor:
    """``[n]`` bool: the top-1 (over ``cand`` if given, else the vocabulary) is ``y``."""
    if cand is None:
        return logits.argmax(-1).cpu() == y
    sub = logits.gather(1, cand.to(logits.device))
    return cand[torch.arange(len(y)), sub.argmax(-1).cpu()] == y


__all__ = ["das", "Subspace", "Interchanger", "wilson", "token_ids"]


# --- the illusion diagnostics (§11) -------------------------------------------------------------------------------

SPAN_WEIGHTS = ("q", "k", "v")


@dataclass(eq=False)
class SubspaceReport:
    """``frame``: tidy rows (``condition`` names the intervention: clean, subspace, row, null, whole);
    ``figure``: effects and dormancy histograms; ``illusion_suspected``: the verdict (also a frame column)."""

    frame: pd.DataFrame
    figure: object
    illusion_suspected: bool
    projections: pd.DataFrame  # per base prompt: class, clean and patched projection onto the connected part


def connected_span(model, site: str, layer: int, *, span=None, heads=None, weight: str = "q") -> torch.Tensor:
    """Orthonormal ``[d, r]`` basis of the causally *connected* space of a site.

    ``span`` (any ``[d, r]`` matrix) is used as given. Otherwise, for ``mlp_post``: W_out's row space (the
    column space of ``W_out [d_mlp d_model]``, so that ``v_null·W_out = 0``); for a residual site: the span of
    the listed query heads' ``W_Q`` (``weight="k"``/``"v"``: their KV group's W_K/W_V) columns."""
    if span is not None:
        m = torch.as_tensor(span, dtype=torch.float64)
        m = m[:, None] if m.ndim == 1 else m
        return torch.linalg.qr(m)[0].float()
    if site == "mlp_post":
        w_out = model.blocks[layer].mlp.W_out.detach().double()  # [d_mlp d_model]
        return torch.linalg.qr(w_out)[0].float()  # [d_mlp d_model]
    if site.startswith("resid") and heads:
        if weight not in SPAN_WEIGHTS:
            raise InputError(f"weight must be one of {', '.join(SPAN_WEIGHTS)}, got {weight!r}")
        from interp.types import HeadId, kv_group_of

        cols = []
        dims = Dims.of(model)
        for h in heads:
            h = h if isinstance(h, HeadId) else HeadId.parse(str(h))
            head_index("q", h.layer, h, dims, "connected_span")
            attn = model.blocks[h.layer].attn
            if weight == "q":
                cols.append(attn.W_Q[h.head])  # [d_model d_head]
            else:
                g = kv_group_of(h, dims.n_heads, dims.n_kv).group
                cols.append((attn.W_K if weight == "k" else attn.W_V)[g])
        return torch.linalg.qr(torch.cat(cols, 1).detach().double())[0].float()
    raise InputError(f"to split a direction at site {site!r}, give heads=[...] (their W_{weight.upper()} span) or span=[d, r]")


def complement(q: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis ``[d, d − r]`` of the orthogonal complement of span(q) (q ``[d r]`` orthonormal)."""
    u = torch.linalg.svd(q.double(), full_matrices=True)[0]  # [d d]: first r columns span q
    return u[:, q.shape[1]:].float().contiguous()


def split(basis: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B_row, B_null)`` with ``B_row = Q Qᵀ B`` and ``B_null = B − B_row`` (they sum to B exactly in float64)."""
    b, q = basis.double(), q.double()
    row = q @ (q.T @ b)
    return row, b - row


def _unit_span(m: torch.Tensor, eps: float = 1e-6) -> torch.Tensor | None:
    """An orthonormal basis of the column span of ``m`` (None when ``m`` is ~0: nothing to patch)."""
    if float(m.norm()) < eps:
        return None
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    return u[:, s > eps * max(1.0, float(s[0]))].float()


def subspace_report(model, subspace: Subspace, base, source, answers, target=None, *, span=None, heads=None, weight: str = "q",
                    classes=None, candidates=None, rows=None, large_effect: float = 30.0, small_effect: float = 15.0,
                    null_effect: float = 5.0, dormant_auc: float = 0.75, outside_frac: float = 0.5, task: str = "subspace",
                    interchanger: Interchanger | None = None) -> SubspaceReport:
    """Faithful subspace or illusion? (Makelov, Lange & Nanda; methods.md §11.)

    ``answers [n 2]`` are each base prompt's (correct, incorrect) answers: LD = logit(correct) − logit(incorrect)
    at its last token, FLDD = 100·(1 − LD_patched/LD_clean) on the mean LDs. ``target`` (source-implied answers)
    gives the interchange accuracy, top-1 among ``candidates`` (default: the two answers). ``rows`` selects the
    pairs evaluated (default: the subspace's held-out split, else all). ``classes`` labels each base prompt's
    feature value (two classes) for the dormancy check.

    Interventions: ``subspace`` (the basis), ``row`` and ``null`` (its parts in and orthogonal to the connected
    span, see :func:`connected_span`; each patched along its own normalised span) and ``whole`` (the whole
    activation at the positions). Dormancy: clean projections of the base activations onto the unit row part,
    their class separation ``auc_row`` (max(AUC, 1 − AUC)) and ``patched_outside``, the share of values after
    the subspace patch outside the clean 1st–99th percentile range.

    ``illusion_suspected`` is True when all hold (thresholds in FLDD percentage points):
    the subspace patch has a large effect (FLDD ≥ ``large_effect``); the whole-component patch has little
    (FLDD < ``small_effect``); the null part alone has about none (|FLDD| ≤ ``null_effect``); and the row part is
    dormant on clean inputs: it does not separate the classes (``auc_row`` < ``dormant_auc``) or the patch pushes
    it outside its natural range (``patched_outside`` ≥ ``outside_frac``). Both dormancy signs are kept because a
    direction that barely varies can still separate the classes at float-noise scale (AUC alone would miss it).
    The thresholds are our choice (the paper gives none); they are stored in ``frame.attrs["thresholds"]``."""
    from sklearn.metrics import roc_auc_score

    from interp.plot.subspace import subspace_figure

    ix = interchanger or Interchanger(model, base, source, subspace.site, subspace.layer, subspace.positions, subspace.head)
    n = ix.n
    ans = torch.as_tensor(answers, dtype=torch.long).reshape(n, 2)
    y = ans[:, 0] if target is None else token_ids(model, target, n)
    cand = ans if candidates is None else torch.as_tensor(candidates, dtype=torch.long).reshape(n, -1)
    idx = torch.as_tensor(rows if rows is not None else (subspace.test or range(n)), dtype=torch.long)
    if idx.numel() == 0:
        raise InputError("rows is empty; give the indices of the pairs to evaluate")
    basis = check_basis(subspace.basis, ix.width, "subspace_report")
    q = connected_span(model, subspace.site, subspace.layer, span=span, heads=heads, weight=weight)
    if q.shape[0] != ix.width:
        raise InputError(f"the connected span has {q.shape[0]} rows, the site's width is {ix.width}")
    b_row, b_null = split(basis, q)
    k = basis.shape[1]

    def ld(lg):
        return (lg.gather(1, ans[idx, :1].to(lg.device)) - lg.gather(1, ans[idx, 1:].to(lg.device)))[:, 0].cpu()

    ld_clean = float(ld(ix.clean_logits[idx]).mean())
    majority = _majority(y[idx], cand[idx])
    recs = [{"condition": "clean", "metric": "logit_diff", "value": ld_clean, "n": len(idx)}]
    parts = {"subspace": basis, "row": _unit_span(b_row), "null": _unit_span(b_null), "whole": None}
    effects = {}
    for name, b in parts.items():
        if name in ("row", "null") and b is None:
            lg = ix.clean_logits[idx]
        else:
            lg = ix.with_basis(b, idx) if name != "whole" else ix.with_basis(None, idx)
        m = float(ld(lg).mean())
        hits = _hits(lg, y[idx], cand[idx])
        acc = float(hits.float().mean())
        lo, hi = wilson(int(hits.sum()), len(idx))
        fldd = 100.0 * (1.0 - m / ld_clean) if abs(ld_clean) > 1e-12 else float("nan")
        effects[name] = fldd
        base_rec = {"condition": name, "n": len(idx)}
        recs += [{**base_rec, "metric": "logit_diff", "value": m}, {**base_rec, "metric": "fldd", "value": fldd},
                 {**base_rec, "metric": "interchange_accuracy", "value": acc, "ci_low": lo, "ci_high": hi, "baseline": majority}]
    recs += [{"condition": "row", "metric": "norm", "value": float(b_row.norm() / math.sqrt(k))},
             {"condition": "null", "metric": "norm", "value": float(b_null.norm() / math.sqrt(k))}]

    # dormancy: clean vs patched projections onto the unit row part (first column for k > 1)
    r = b_row[:, 0]
    proj = pd.DataFrame({"row": range(n)})
    auc, outside = float("nan"), float("nan")
    if float(r.norm()) > 1e-6:
        r_hat = (r / r.norm()).float()
        w, u = ix.base[:, 0].float(), ix.src[:, 0].float()  # first patched position  [n d] (z: one head)
        if w.ndim > 2:
            w, u = w[:, 0], u[:, 0]
        clean = (w @ r_hat).numpy()
        patched = (interchange(w, u, basis) @ r_hat).numpy()
        proj = proj.assign(clean=clean, patched=patched)
        lo_, hi_ = np.percentile(clean, [1, 99])
        outside = float(((patched[idx.numpy()] < lo_) | (patched[idx.numpy()] > hi_)).mean())
        if classes is not None:
            labels = np.asarray(list(classes))
            if len(labels) != n:
                raise InputError(f"classes has {len(labels)} labels for {n} base prompts")
            kinds = sorted(set(labels.tolist()))
            if len(kinds) != 2:
                raise InputError(f"classes must hold exactly two feature values, got {kinds[:5]}")
            proj["class"] = labels
            a = roc_auc_score(labels == kinds[1], clean)
            auc = float(max(a, 1 - a))
    recs += [{"condition": "row", "metric": "auc_row", "value": auc}, {"condition": "row", "metric": "patched_outside", "value": outside}]
    dormant = ((not math.isnan(auc)) and auc < dormant_auc) or ((not math.isnan(outside)) and outside >= outside_frac)
    verdict = bool(effects["subspace"] >= large_effect and effects["whole"] < small_effect
                   and abs(effects["null"]) <= null_effect and dormant)
    recs.append({"condition": "verdict", "metric": "illusion_suspected", "value": float(verdict)})
    from interp.schema import make_frame

    df = pd.DataFrame([r_ for r_ in recs if not (isinstance(r_["value"], float) and math.isnan(r_["value"]))])
    df = df.assign(model=subspace.model or "", task=task, layer=subspace.layer, head=-1 if subspace.head is None else subspace.head,
                   site=subspace.site, illusion_suspected=verdict)
    df = make_frame(df)
    df.attrs.update(thresholds={"large_effect": large_effect, "small_effect": small_effect, "null_effect": null_effect,
                                "dormant_auc": dormant_auc, "outside_frac": outside_frac})
    return SubspaceReport(df, subspace_figure(df, proj), verdict, proj)


__all__ += ["subspace_report", "SubspaceReport", "connected_span", "split", "complement"]
