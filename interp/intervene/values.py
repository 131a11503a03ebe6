"""Activation edits as data: frozen, printable values that turn into hooks only when applied.

Every edit names a *site* (``interp.types.SITES``), a layer, optionally a head and positions:

- ``ZeroAblate``, ``MeanAblate`` (the mean over a reference set, computed once and kept in the value) and
  ``ResampleAblate`` (values drawn from other prompts' run);
- ``Patch`` (values from another run's ``Capture``), ``SubspacePatch`` (only the component in a subspace), ``AddToHead`` (a direction added to a head's ``z``),
  ``AddVector`` (residual steering), ``SetPattern`` (overwrite attention rows).

A head on ``q``/``z``/``pattern`` is a query head (``HeadId`` or an int); on ``k``/``v`` it is a key/value
group (``KVGroup`` or an int). Naming the wrong kind raises an error that says which one the site needs.
Writing a ``HeadId`` as the site means ``z`` of that head: ``ZeroAblate(HeadId(9, 6))``.

Positions index the (padded) ``pos`` axis, negatives from the end; ``None`` is every position. For
``pattern`` they are query positions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Union

import torch

from interp.errors import InputError
from interp.types import HeadId, KVGroup, finite_scalar, finite_tensor, site

HeadLike = Union[HeadId, KVGroup, int, None]


def _positions(val) -> tuple[int, ...] | None:
    if val is None:
        return None
    vals = (val,) if isinstance(val, int) else tuple(int(p) for p in val)
    if not vals:
        raise InputError("positions is empty; pass None for every position or a list of indices")
    return vals


def _short(val: Any) -> str:
    if isinstance(val, torch.Tensor):
        return f"tensor{list(val.shape)}"
    if hasattr(val, "tensors") and hasattr(val, "model"):
        return f"<{type(val).__name__} of {val.model}>"
    return str(val)


def _vector(owner: str, vector) -> torch.Tensor:
    """A float32 copy of a steering vector, or InputError for a non-numeric or non-finite one."""
    try:
        vec = torch.as_tensor(vector, dtype=torch.float32).detach()
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{owner}: vector must be a tensor or a list of numbers, got a {type(vector).__name__}") from None
    return finite_tensor(owner, "vector", vec)


class _Value:
    """Printable: tensors and captures print as their shape, not their contents."""

    def __repr__(self) -> str:
        parts = [f"{f.name}={_short(getattr(self, f.name))}" for f in fields(self) if getattr(self, f.name) is not None]
        return f"{type(self).__name__}({', '.join(parts)})"


@dataclass(frozen=True, eq=False, repr=False)
class _Located(_Value):
    site: Any = None
    layer: int | None = None
    head: HeadLike = None
    positions: tuple[int, ...] | None = None

    def __post_init__(self):
        _locate(self)


def _locate(self) -> None:
    """Normalise ``site``/``layer``/``head``/``positions`` of a located edit in place (a HeadId site means its z)."""
    s, layer, head = self.site, self.layer, self.head
    if isinstance(s, HeadId):
        s, layer, head = "z", s.layer, s
    elif isinstance(s, KVGroup):
        raise InputError(f"{type(self).__name__}: a KVGroup ({s}) needs its site; pass site 'k' or 'v', e.g. {type(self).__name__}('v', {s.layer}, {s!r})")
    if not isinstance(s, str):
        raise InputError(f"{type(self).__name__}: site must be a site name or a HeadId, got {s!r}")
    site(s)
    if isinstance(head, (HeadId, KVGroup)):
        if layer is None:
            layer = head.layer
        if head.layer != layer:
            raise InputError(f"{type(self).__name__}: head {head} is in layer {head.layer}, but layer={layer} was given")
    if layer is None:
        raise InputError(f"{type(self).__name__}({s!r}) needs a layer")
    object.__setattr__(self, "site", s)
    object.__setattr__(self, "layer", int(layer))
    object.__setattr__(self, "head", head)
    object.__setattr__(self, "positions", _positions(self.positions))


@dataclass(eq=False)
class ActivationMeans:
    """``means[site, layer]``: the site's mean without the batch axis; ``[pos, …]`` when ``per_position``,
    else ``[…]`` (averaged over real tokens too)."""

    model: str
    tensors: dict[tuple[str, int], torch.Tensor]
    per_position: bool

    def __getitem__(self, key: tuple[str, int]) -> torch.Tensor:
        if key not in self.tensors:
            raise InputError(f"mean of {key[0]!r} at layer {key[1]} was not computed; pass it in sites=/layers= of mean_activations")
        return self.tensors[key]

    def __repr__(self) -> str:
        return f"ActivationMeans({self.model}, {len(self.tensors)} sites, per_position={self.per_position})"


@dataclass(frozen=True, eq=False, repr=False)
class ZeroAblate(_Located):
    """Set the site (one head of it, or everything) to 0."""


@dataclass(frozen=True, eq=False, repr=False)
class MeanAblate(_Located):
    """Set the site to its mean over a reference set. ``mean`` is an :class:`ActivationMeans` (from
    :func:`interp.intervene.mean_activations`, or all at once with
    :func:`interp.intervene.mean_ablate`) or a tensor shaped like the site without its batch axis
    (``[pos, …]``) or without batch and pos (``[…]``, the same at every position)."""

    mean: Any = None

    def __post_init__(self):
        super().__post_init__()
        if self.mean is None:
            raise InputError("MeanAblate needs mean=...; compute it once with interp.mean_activations(model, reference_prompts)")


@dataclass(frozen=True, eq=False, repr=False)
class ResampleAblate(_Located):
    """Set the site to its value on other prompts: row ``b`` takes row ``perm[b]`` of ``source`` (a
    ``Capture`` of the corrupted prompts), ``perm`` drawn with ``seed``."""

    source: Any = None
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.source is None:
            raise InputError("ResampleAblate needs source=capture of the prompts to resample from")


@dataclass(frozen=True, eq=False, repr=False)
class Patch(_Located):
    """Set the site to its value in ``source`` (a ``Capture`` of another run of the same model, with the same
    number of positions; one row, or one row per input row)."""

    source: Any = None

    def __post_init__(self):
        super().__post_init__()
        if self.source is None:
            raise InputError("Patch needs source=capture, e.g. interp.run(model, clean, capture=CaptureSpec(sites=('z',)))[1]")


@dataclass(frozen=True, eq=False, repr=False)
class AddToHead(_Value):
    """Add ``alpha · vector`` (``[d_head]``) to a query head's output ``z`` at ``positions`` (all by default)."""

    head: HeadId
    vector: Any
    alpha: float = 1.0
    positions: tuple[int, ...] | None = None

    def __post_init__(self):
        if not isinstance(self.head, HeadId):
            raise InputError(f"AddToHead needs a HeadId (a query head), got {self.head!r}")
        object.__setattr__(self, "vector", _vector("AddToHead", self.vector))
        if self.vector.ndim != 1:
            raise InputError(f"AddToHead vector must be [d_head], got shape {list(self.vector.shape)}")
        object.__setattr__(self, "alpha", finite_scalar("AddToHead", "alpha", self.alpha))
        object.__setattr__(self, "positions", _positions(self.positions))


@dataclass(frozen=True, eq=False, repr=False)
class AddVector(_Value):
    """Add ``alpha · vector`` to a residual-width site (``resid_pre`` by default). ``vector`` is ``[d_model]``
    (added at every listed position) or ``[n, d_model]`` (row i at ``positions[i]``, default ``0..n-1``:
    ActAdd's front positions)."""

    layer: int
    vector: Any
    alpha: float = 1.0
    positions: tuple[int, ...] | None = None
    site: str = "resid_pre"

    def __post_init__(self):
        s = site(self.site)
        if s.per_head:
            raise InputError(f"AddVector acts on residual-width sites, not {self.site!r}; use AddToHead for a head")
        vec = _vector("AddVector", self.vector)
        object.__setattr__(self, "alpha", finite_scalar("AddVector", "alpha", self.alpha))
        if vec.ndim not in (1, 2):
            raise InputError(f"AddVector vector must be [d_model] or [n, d_model], got shape {list(vec.shape)}")
        pos = _positions(self.positions)
        if vec.ndim == 2:
            pos = pos if pos is not None else tuple(range(vec.shape[0]))
            if len(pos) != vec.shape[0]:
                raise InputError(f"AddVector has {vec.shape[0]} vector rows but {len(pos)} positions; give one position per row")
        object.__setattr__(self, "vector", vec)
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "layer", int(self.layer))


@dataclass(frozen=True, eq=False, repr=False)
class SetPattern(_Value):
    """Overwrite a query head's attention rows at ``query_positions`` with ``weights``: a mapping
    ``{key_pos: weight}`` or a tensor ``[key_pos]`` / ``[batch, key_pos]``. Weights are ≥ 0, sum to 1 and sit on
    keys the query can see; the row written is exactly these weights (zero elsewhere)."""

    head: HeadId
    query_positions: tuple[int, ...]
    weights: Any

    def __post_init__(self):
        if not isinstance(self.head, HeadId):
            raise InputError(f"SetPattern needs a HeadId (a query head), got {self.head!r}")
        object.__setattr__(self, "query_positions", _positions(self.query_positions))
        w = self.weights
        if isinstance(w, Mapping):
            if not w:
                raise InputError("SetPattern weights are empty; give {key_pos: weight} summing to 1")
            w = dict((int(k), float(v)) for k, v in w.items())
            total = sum(w.values())
        else:
            w = torch.as_tensor(w, dtype=torch.float32).detach()
            if w.ndim not in (1, 2):
                raise InputError(f"SetPattern weights must be [key_pos] or [batch, key_pos], got {list(w.shape)}")
            total = w.sum(-1)
        vals = list(w.values()) if isinstance(w, dict) else w.flatten().tolist()
        if min(vals) < 0:
            raise InputError("SetPattern weights must be >= 0")
        if not bool(torch.all((torch.as_tensor(total, dtype=torch.float64) - 1).abs() < 1e-5)):
            raise InputError(f"SetPattern weights must sum to 1 per row, got {total}")
        object.__setattr__(self, "weights", w)


SUBSPACE_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post", "z")


@dataclass(frozen=True, eq=False, repr=False)
class SubspacePatch(_Value):
    """Replace the activation's component in span(``basis``) with ``source``'s and keep the rest (methods.md §11):
    ``w' = w + (u − w)·B Bᵀ`` for base ``w``, source ``u`` and ``basis`` B ``[d, k]`` with orthonormal columns
    (checked to 1e-5; ``orthonormalize=True`` takes the QR basis of the given columns instead). For k = 1 this is
    ``w + (⟨u,v⟩ − ⟨w,v⟩)·v``. ``d`` is the site's width: d_model for the residual sites, attn_out and
    mlp_out, d_mlp for ``mlp_post``, d_head for ``z`` (one head, or every head with the same basis when
    ``head`` is None). ``source`` is a ``Capture`` of the same model on prompts of the same token length.
    k = d is allowed and equals a full :class:`Patch`."""

    site: Any = None
    layer: int | None = None
    basis: Any = None
    source: Any = None
    head: HeadLike = None
    positions: tuple[int, ...] | None = None
    orthonormalize: bool = False

    def __post_init__(self):
        _locate(self)
        if self.site not in SUBSPACE_SITES:
            raise InputError(f"SubspacePatch: site {self.site!r} is not supported; use one of {', '.join(SUBSPACE_SITES)}")
        if self.source is None:
            raise InputError("SubspacePatch needs source=capture of the source prompts, e.g. interp.run(model, source, capture=CaptureSpec(sites=('resid_post',)))[1]")
        object.__setattr__(self, "basis", check_basis(self.basis, None, "SubspacePatch", orthonormalize=self.orthonormalize))


def check_basis(basis, d: int | None, who: str, *, orthonormalize: bool = False, tol: float = 1e-5) -> torch.Tensor:
    """``basis`` as a float32 ``[d, k]`` tensor with orthonormal columns, or a one-line InputError."""
    if basis is None:
        raise InputError(f"{who} needs basis=[d, k] with orthonormal columns")
    b = torch.as_tensor(basis).detach().to(torch.float64)
    if b.ndim == 1:
        b = b[:, None]
    if b.ndim != 2 or b.shape[1] == 0 or b.shape[0] == 0:
        raise InputError(f"{who}: basis must be [d, k] with k >= 1 columns, got shape {list(b.shape)}")
    if not bool(torch.isfinite(b).all()):
        raise InputError(f"{who}: basis has NaN or infinite entries")
    if d is not None and b.shape[0] != d:
        raise InputError(f"{who}: basis has {b.shape[0]} rows, but the site's width is {d}; give a [{d}, k] basis")
    if b.shape[1] > b.shape[0]:
        raise InputError(f"{who}: basis has k={b.shape[1]} columns in d={b.shape[0]} dimensions; at most d orthonormal columns exist")
    if orthonormalize:
        q, r = torch.linalg.qr(b)
        if bool((r.diagonal().abs() < 1e-8).any()):
            raise InputError(f"{who}: basis columns are linearly dependent; orthonormalize needs k independent columns")
        b = q
    err = float((b.T @ b - torch.eye(b.shape[1], dtype=b.dtype)).abs().max())
    if err > tol:
        raise InputError(f"{who}: basis columns are not orthonormal (max |BᵀB − I| = {err:.2g} > {tol:g}); "
                         "pass orthonormalize=True or orthonormalize them (torch.linalg.qr)")
    return b.to(torch.float32)


ActivationEdit = Union[ZeroAblate, MeanAblate, ResampleAblate, Patch, AddToHead, AddVector, SetPattern, SubspacePatch]

__all__ = ["ActivationMeans", "ZeroAblate", "MeanAblate", "ResampleAblate", "Patch", "AddToHead", "AddVector", "SetPattern", "SubspacePatch",
           "ActivationEdit", "check_basis", "SUBSPACE_SITES"]
