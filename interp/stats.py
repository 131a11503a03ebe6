"""Rates and means with their uncertainty: the one place that turns counts into reported figures.

Every accuracy, hallucination rate or sink rate the toolkit reports goes through :func:`rate`: its ``n``, a 95%
Wilson score interval (``scipy.stats.binomtest``), the majority-class baseline (the accuracy of always giving the
most frequent true answer, when the true answers are known) beside the uniform ``chance``, and ``small_n`` for
fewer than :data:`SMALL_N` items (such a rate only bounds an effect: one item moves it by more than 0.005).
:func:`mean_ci` gives a mean with its 95% t interval (logit differences and other per-prompt values).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from interp.errors import InputError

SMALL_N = 200
LEVEL = 0.95


def _prefixed(record, prefix: str) -> dict:
    return {f"{prefix}{k}": v for k, v in asdict(record).items()}


@dataclass(frozen=True)
class Rate:
    """A rate ``k/n`` with its 95% Wilson interval, majority-class baseline and chance (NaN where unknown)."""

    k: int
    n: int
    rate: float
    low: float
    high: float
    majority: float
    chance: float
    small_n: bool

    def as_dict(self, prefix: str = "") -> dict:
        return _prefixed(self, prefix)

    def columns(self) -> dict:
        """The interval columns a tidy row carries beside its ``value`` (the rate)."""
        return {"n": self.n, "low": self.low, "high": self.high, "majority": self.majority, "chance": self.chance,
                "small_n": self.small_n}

    def __str__(self) -> str:
        text = f"{self.rate:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n}"
        if self.majority == self.majority:
            text += f", majority {self.majority:.3f}"
        if self.chance == self.chance:
            text += f", chance {self.chance:.3f}"
        return text + (", n<200)" if self.small_n else ")")


RATE_COLUMNS = ("n", "low", "high", "majority", "chance", "small_n")


def format_rate(value: float, low: float, high: float, n: int) -> str:
    """``0.730 [0.61, 0.83] n=37`` (``n<200`` marked), for tables and reports."""
    if value != value:
        return "–"
    text = f"{value:.3f}" if low != low else f"{value:.3f} [{low:.2f}, {high:.2f}]"
    return text + (f" n={n}" + (" (n<200)" if n < SMALL_N else "") if n == n else "")


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials (NaNs for n = 0)."""
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def majority_baseline(labels: Iterable) -> float:
    """The share of the most frequent label: the accuracy of always answering it (NaN with no labels)."""
    counts = Counter(labels)
    total = sum(counts.values())
    return max(counts.values()) / total if total else math.nan


def rate(k: int, n: int, labels: Sequence | None = None, *, chance: float | None = None) -> Rate:
    """``k`` of ``n`` with its 95% Wilson interval; ``labels`` (the ``n`` true answers) give the majority-class
    baseline, ``chance`` the uniform-guess rate (1 / number of options)."""
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise InputError(f"a rate needs 0 <= k <= n, got k={k}, n={n}")
    if labels is not None and len(labels) != n:
        raise InputError(f"rate: {len(labels)} labels for n={n} items; pass one true answer per item")
    low, high = wilson(k, n)
    return Rate(k, n, k / n if n else math.nan, low, high, majority_baseline(labels) if labels is not None else math.nan,
                math.nan if chance is None else float(chance), n < SMALL_N)


def rate_of(hits: Iterable[bool], labels: Sequence | None = None, *, chance: float | None = None) -> Rate:
    """:func:`rate` of a sequence of hits (NaNs are not allowed: drop unanswered items first)."""
    hits = [bool(h) for h in hits]
    return rate(sum(hits), len(hits), labels, chance=chance)


@dataclass(frozen=True)
class Mean:
    """A mean with its 95% t interval over ``n`` values."""

    mean: float
    low: float
    high: float
    sd: float
    n: int

    def as_dict(self, prefix: str = "") -> dict:
        return _prefixed(self, prefix)

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


def mean_ci(values: Iterable[float], level: float = LEVEL) -> Mean:
    """Mean, 95% t interval and standard deviation of ``values`` (interval NaN for fewer than 2 values)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Mean(math.nan, math.nan, math.nan, math.nan, 0)
    m = sum(xs) / n
    if n < 2:
        return Mean(m, math.nan, math.nan, math.nan, n)
    from scipy.stats import t

    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Mean(m, m - half, m + half, sd, n)


GUARD_FRAC = 0.1


def guard(denominator: float, spread: float, what: str, frac: float = GUARD_FRAC) -> str:
    """Why a ratio over ``denominator`` is undefined, or "" when it is safe.

    A normalized effect ``(m − a)/(b − a)`` or a faithfulness ``(circuit − empty)/(full − empty)`` is noise when
    its denominator is small beside how much the metric varies between prompts: below ``frac`` (10%) of
    ``spread`` (the standard deviation of the per-prompt metric), or zero. Then the ratio is reported as NaN with
    this reason instead of a large number."""
    d, sp = abs(float(denominator)), float(spread)
    if not d > 1e-12:
        return f"{what} is 0; the ratio is undefined"
    if sp == sp and d < frac * sp:
        return (f"{what} = {d:.3g} is below {frac:g} x the metric's spread across prompts ({sp:.3g}); "
                "the ratio would be noise (use a task the model does, or more prompts)")
    return ""


def spread(metric, logits) -> float:
    """Standard deviation across prompts of a metric with ``per_prompt`` (NaN for a metric without it)."""
    per = getattr(metric, "per_prompt", None)
    if per is None:
        return math.nan
    return float(per(logits).detach().float().std())


__all__ = ["guard", "spread", "GUARD_FRAC", "Rate", "Mean", "rate", "rate_of", "wilson", "majority_baseline", "mean_ci", "format_rate", "SMALL_N",
           "RATE_COLUMNS"]
