"""Rates as the house reports them: a count out of n with its 95% Wilson interval (scipy's ``binomtest``), so
that every accuracy travels with its n and its uncertainty."""
from __future__ import annotations

from interp.errors import InputError


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes out of ``n``."""
    from scipy.stats import binomtest

    if n < 1 or not 0 <= k <= n:
        raise InputError(f"a rate needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def majority_baseline(labels) -> float:
    """The accuracy of always answering the most common label."""
    from collections import Counter

    labels = list(labels)
    if not labels:
        raise InputError("the majority-class baseline needs at least one label")
    return Counter(labels).most_common(1)[0][1] / len(labels)


__all__ = ["wilson_interval", "majority_baseline"]
