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
        _, cap = run(model, b.tokens, capture=CaptureSpec(sites=(site,), layers=(self.layer,)), attention_mask=b.attention_mask)
        self.src = self._gather(cap[site, self.layer].to(a.tokens.device), torch.arange(self.n))  # [batch k d]
        _, cap_base = run(model, a.tokens, capture=CaptureSpec(sites=(site,), layers=(self.layer,)), attention_mask=a.attention_mask)
        self.base = self._gather(cap_base[site, self.layer].to(a.tokens.device), torch.arange(self.n))  # [batch k d]
        self.clean_logits = cap_base.logits[torch.arange(self.n), self.end.cpu()]  # [batch d_vocab]
        self.stack = find_stack(model)
        self.prefix = None
        if self.stack is not None:
            from interp.sweep.heads import record_prefix

            self.prefix = record_prefix(model, a)

    def _gather(self, t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``t``'s values at the patch positions of rows ``idx``: ``[n k d]`` (one head for z, or ``[n k head d]``)."""
        w = t[idx[:, None], self.rows[idx]]
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
        from interp.intervene.hf import plain

        n_layers = self.dims.n_layers
        direct = self.site == "resid_pre" or (self.site == "resid_post" and self.layer + 1 < n_layers)
        start = self.layer + 1 if (direct and self.site == "resid_post") else self.layer
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


def _hook(fn):
    def wrapped(t):
        return fn(t)
    return wrapped


class _Rotation(torch.nn.Module):
    """DAS: ``dim`` orthonormal rows (``torch.nn.utils.parametrizations.orthogonal`` on a ``[dim, d]`` weight, the
    first rows of a rotation). Boundless: a full ``[d, d]`` rotation and a learned sigmoid mask over the rotated
    coordinates, sharpened by the temperature."""

    def __init__(self, d: int, dim: int, boundless: bool, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        rows = d if boundless else dim
        lin = torch.nn.Linear(d, rows, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.linalg.qr(torch.randn(d, rows, generator=g))[0].T)
        self.rot = torch.nn.utils.parametrizations.orthogonal(lin)
        self.boundless = boundless
        self.mask_logits = torch.nn.Parameter(torch.full((d,), -1.0)) if boundless else None
        self.temperature = 1.0

    def mask(self) -> torch.Tensor:
        return torch.sigmoid(self.mask_logits / self.temperature)

    def forward(self, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r = self.rot.weight  # [rows d]
        if not self.boundless:
            return w + ((u - w) @ r.T) @ r
        m = self.mask()
        return w + (((u - w) @ r.T) * m) @ r

    def basis(self) -> torch.Tensor:
        """The learned subspace ``[d, k]``: DAS's rows; Boundless's rows whose final mask exceeds 0.5 (at least one)."""
        r = self.rot.weight.detach()
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
        candidates=None, progress: bool = False) -> Subspace:
    """Train a ``dim``-dimensional subspace of ``site`` at ``layer`` (methods.md §11 settings: Adam, lr 0.1
    decaying linearly to 0.01, 30 epochs, batch 20) so that interchanging it from ``source`` into ``base`` makes
    the model predict ``target`` (the source-implied answers: token ids or single-token strings, one per pair).

    The pairs are split once (``test_fraction`` held out, seeded); the loss is the cross-entropy of the patched
    answer logits on the training split. ``candidates [n c]`` (token ids), if given, restricts the held-out
    accuracy's top-1 to those tokens (e.g. the two IOI names); otherwise it is over the whole vocabulary.

    ``boundless=True`` (Boundless DAS, Wu et al. 2023; our reading, decided here): a full rotation and a sigmoid
    mask over its coordinates, temperature annealed geometrically from ``temperature[0]`` to ``temperature[1]``,
    plus ``mask_l1 · Σ mask`` in the loss; the basis is the coordinates whose final mask exceeds 0.5."""
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
    n_prompts = len(base) if isinstance(base, (list, tuple)) else int(torch.as_tensor(base).shape[0]) if not isinstance(base, str) else 1
    if target is None:
        raise InputError("das needs target=the source-implied answer per pair (token ids or single-token strings)")
    y = token_ids(model, target, n_prompts)
    if n_prompts < 2:
        raise InputError(f"das needs at least 2 base/source pairs (a training and a held-out split), got {n_prompts}")
    cand = None if candidates is None else torch.as_tensor(candidates, dtype=torch.long).reshape(n_prompts, -1)
    ix = Interchanger(model, base, source, site, layer, positions, head)

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(ix.n, generator=g)
    n_test = max(1, int(round(test_fraction * ix.n)))
    test, train = perm[:n_test].sort().values, perm[n_test:].sort().values
    torch.manual_seed(seed)
    rot = _Rotation(d, dim, boundless, seed)
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
    counts = torch.bincount(y[test]).max() if len(test) else torch.tensor(0)
    return Subspace(basis, site, int(layer), ix.positions, ix.head, model_name(model), pd.DataFrame(curve),
                    k / len(test), len(test), wilson(k, len(test)), float(counts) / len(test),
                    tuple(train.tolist()), tuple(test.tolist()),
                    {"dim": dim, "boundless": boundless, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                     "lr_end": lr_end, "seed": seed, "n_pairs": ix.n})


def _hf_of(model) -> torch.nn.Module:
    from interp.attnstats.fused import hf_model_of

    return hf_model_of(model)


def _hits(logits: torch.Tensor, y: torch.Tensor, cand: torch.Tensor | None) -> torch.Tensor:
    """``[n]`` bool: the top-1 (over ``cand`` if given, else the vocabulary) is ``y``."""
    if cand is None:
        return logits.argmax(-1).cpu() == y
    sub = logits.gather(1, cand.to(logits.device))
    return cand[torch.arange(len(y)), sub.argmax(-1).cpu()] == y


__all__ = ["das", "Subspace", "Interchanger", "wilson", "token_ids"]
