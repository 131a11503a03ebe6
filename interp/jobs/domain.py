"""Declared domains of job options: each numeric field of a job's config says what values it takes, beside its
default, and one checker enforces them for every verb and every sweep spec.

A config declares ``alpha: float = num(5.0, finite=True)`` or ``stages: int = num(3, lo=1, model="layers")``
and derives from :class:`Checked`; its ``__post_init__`` then first checks every declared field (type, finite,
range), and its ``check(spec)`` first checks the bounds tied to the model (layers, heads, context). A new verb
gets the checks by declaring its fields; nothing is written verb by verb. Light (no torch, no pandas).

The option a field belongs to is ``--`` plus its name with dashes (``max_new_tokens`` → ``--max-new-tokens``),
or ``option=`` where the CLI spells it otherwise. Messages name that option, the value, the bound and why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from interp.errors import InputError

# what a model-tied bound means: index bounds (0 <= v < n) and count bounds (1 <= v <= n)
MODEL_BOUNDS = {"layer": "layers (index)", "head": "query heads (index)", "layers": "layers (count)",
                "heads": "heads in all layers (count)", "context": "context length (tokens)"}


@dataclass(frozen=True)
class Domain:
    """The values a numeric option takes. ``lo``/``hi`` bound it (``*_open``: strictly); ``model`` ties a
    further bound to the model (a key of ``MODEL_BOUNDS``); ``why`` says why a static bound is where it is.
    Non-finite values (NaN, ±inf) are always refused. For tuple fields the domain applies to each item."""

    kind: type = float
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    model: str | None = None
    why: str = ""

    def __post_init__(self):
        if self.model is not None and self.model not in MODEL_BOUNDS:
            raise ValueError(f"unknown model bound {self.model!r}; use one of {', '.join(MODEL_BOUNDS)}")

    def describe(self) -> str:
        """``"an integer in [1, 1000]"``, ``"a finite number in (0, 1)"``: the domain for messages and test ids."""
        what = "an integer" if self.kind is int else "a finite number"
        lo = "-inf" if self.lo is None else _fmt(self.lo)
        hi = "inf" if self.hi is None else _fmt(self.hi)
        rng = f"{'(' if self.lo_open or self.lo is None else '['}{lo}, {hi}{')' if self.hi_open or self.hi is None else ']'}"
        tie = f", within the model's {MODEL_BOUNDS[self.model]}" if self.model else ""
        return f"{what} in {rng}{tie}"

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in the static part of the domain (the model-tied bound aside)."""
        try:
            self.check("value", value)
        except InputError:
            return False
        return True

    def check(self, option: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "an integer" if self.kind is int else "a number"
            raise InputError(f"{option} must be {kind}, got {value!r} ({type(value).__name__})")
        if not math.isfinite(value):
            raise InputError(f"{option} must be a finite number, got {value}")
        if self.kind is int and value != int(value):
            raise InputError(f"{option} must be an integer, got {value}")
        low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if low or high:
            raise InputError(f"{option} {self._range_words(high)}, got {_fmt(value)}{f' ({self.why})' if self.why and high else ''}")

    def _range_words(self, high: bool) -> str:
        """The bound that was broken; a natural two-sided range (such as [0, 1], no ``why``) is named whole."""
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None and self.lo_open and self.hi_open:
            return f"must lie strictly between {_fmt(lo)} and {_fmt(hi)}"
        if lo is not None and hi is not None and not self.why:  # a natural range such as [0, 1]; a cap has a why
            return f"must lie in {'(' if self.lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if self.hi_open else ']'}"
        if high:
            return f"must be below {_fmt(hi)}" if self.hi_open else f"must be at most {_fmt(hi)}"
        return f"must be above {_fmt(lo)}" if self.lo_open else f"must be at least {_fmt(lo)}"

    def check_model(self, option: str, value: Any, spec) -> None:
        """The model-tied bound; ``spec`` is an ``interp.models.spec.ModelSpec`` (its config only)."""
        if self.model is None:
            return
        n_layers, n_heads = spec.n_layers, spec.n_heads
        if self.model in ("layer", "layers"):
            n, what = n_layers, "layers"
        elif self.model == "head":
            n, what = n_heads, "query heads"
        elif self.model == "heads":
            n, what = (n_layers * n_heads if n_layers and n_heads else None), "heads"
        else:
            spec.require_fits(int(value), f"{option} {value}")
            return
        if n is None:
            return
        if self.model in ("layer", "head") and not 0 <= value < n:
            raise InputError(f"{option} {value} out of range: {spec.name!r} has {n} {what} (0-{n - 1})")
        if self.model in ("layers", "heads") and value > n:
            raise InputError(f"{option} {value} is out of range: {spec.name!r} has {n} {what}; use 1..{n}")


def _fmt(v) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return str(v)


def num(default: Any, *, lo=None, hi=None, lo_open=False, hi_open=False, model=None, why="", option=None,
        kind: type | None = None):
    """A dataclass field with a declared domain. ``kind`` defaults to the default's type (a tuple default: int
    items unless ``kind=float``)."""
    if kind is None:
        kind = float if isinstance(default, float) else int
    dom = Domain(kind, lo, hi, lo_open, hi_open, model, why)
    return field(default=default, metadata={"domain": dom, "option": option})


@dataclass(frozen=True)
class Choice:
    """The names a text option takes: anything else is refused in one line that lists them."""

    names: tuple[str, ...]

    def check(self, option: str, value: Any) -> None:
        if value in self.names:
            return
        if len(self.names) == 1:
            hint = f"the only value is {self.names[0]}"
        elif len(self.names) == 2:
            hint = f"use {self.names[0]} or {self.names[1]}"
        else:
            hint = f"use one of {', '.join(self.names)}"
        raise InputError(f"{option} {value!r} unknown; {hint}")


def choice(default: str, names, *, option=None):
    """A dataclass text field that takes one of ``names`` (checked with the numeric domains, before any work)."""
    names = tuple(names)
    if default not in names:
        raise ValueError(f"default {default!r} is not among {names}")
    return field(default=default, metadata={"choice": Choice(names), "option": option})


def _option_of(f) -> str:
    return f.metadata.get("option") or "--" + f.name.replace("_", "-")


def check_choices(obj) -> None:
    """Every ``choice`` field of ``obj`` holds one of its names."""
    for f in fields(obj):
        ch = f.metadata.get("choice")
        if ch is not None:
            ch.check(_option_of(f), getattr(obj, f.name))


def domains(cls_or_obj) -> dict[str, tuple[str, Domain]]:
    """``field name → (option, Domain)`` of every declared field."""
    out = {}
    for f in fields(cls_or_obj):
        dom = f.metadata.get("domain")
        if dom is not None:
            out[f.name] = (_option_of(f), dom)
    return out


def _items(value) -> list:
    return list(value) if isinstance(value, (tuple, list)) else [value]


def check_fields(obj) -> None:
    """Type, finiteness and static range of every declared field of ``obj`` (a dataclass instance), and the
    names of its ``choice`` fields."""
    check_choices(obj)
    for name, (option, dom) in domains(obj).items():
        value = getattr(obj, name)
        if value is None:
            continue
        for v in _items(value):
            dom.check(option, v)


def check_model_fields(obj, spec) -> None:
    """The model-tied bounds of every declared field of ``obj``."""
    for name, (option, dom) in domains(obj).items():
        value = getattr(obj, name)
        if value is None:
            continue
        for v in _items(value):
            dom.check_model(option, v, spec)


REGISTRY: dict[str, list[tuple[type, str, Domain]]] = {}  # option → [(config class, field, domain)]


class Checked:
    """Base of job configs: the declared domains are checked before the config's own ``__post_init__`` and
    before its own ``check(spec)``, for every subclass without it writing a line."""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        own_post = cls.__dict__.get("__post_init__")
        if own_post is not None or not hasattr(cls, "__post_init__"):
            def __post_init__(self, _own=own_post):
                check_fields(self)
                if _own is not None:
                    _own(self)

            cls.__post_init__ = __post_init__
        own_check = cls.__dict__.get("check")
        if own_check is not None or not hasattr(cls, "check"):
            def check(self, spec, _own=own_check):
                check_model_fields(self, spec)
                if _own is not None:
                    _own(self, spec)

            check.__doc__ = getattr(own_check, "__doc__", None)
            cls.check = check

    def __post_init__(self):  # replaced per subclass; present so a subclass's super().__post_init__() works
        check_fields(self)

    def check(self, spec) -> None:
        check_model_fields(self, spec)


def register(cls):
    """Record ``cls``'s declared options (called by the ``dataclass`` decorator wrapper below)."""
    for name, (option, dom) in domains(cls).items():
        REGISTRY.setdefault(option, []).append((cls, name, dom))
    return cls


def config(cls=None, **kw):
    """``@config``: a frozen dataclass whose declared options are registered (see :data:`REGISTRY`)."""
    from dataclasses import dataclass as _dc

    def wrap(c):
        return register(_dc(frozen=True, **kw)(c))

    return wrap if cls is None else wrap(cls)


SEED = dict(lo=0, hi=2**32 - 1, why="numpy seeds are 32-bit")


__all__ = ["Domain", "num", "Choice", "choice", "domains", "check_fields", "check_model_fields", "Checked", "config", "REGISTRY", "SEED",
           "MODEL_BOUNDS"]
