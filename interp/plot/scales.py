"""Colour scales, chosen in one place: signed quantities (patching effects, logit differences, AtP estimates, any
metric whose values straddle 0) take a diverging scale centred at 0, symmetric about it, so white means "no
effect" and the sign reads as blue (negative) or red (positive); other metrics a sequential scale."""
from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

DIVERGING = "RdBu_r"  # blue < 0 < red
SEQUENTIAL = "Viridis"
# metric names that are signed by definition, e.g. "atp:z", "atp*:q", "patch:z", "logit_diff", "clean_logit_diff",
# "effect", "loss_delta", "logit_diff[ioi]"
_SIGNED = re.compile(r"(^|[^a-z])(atp\*?|patch(ing)?|path_patch(ing)?|effect|logit_diff|diff|delta)([^a-z]|$)", re.I)


def is_signed(metric: str, values: Iterable[float] | None = None) -> bool:
    """Signed by name (an effect or a difference), or by its values (some below 0 and some above)."""
    if _SIGNED.search(metric):
        return True
    if values is None:
        return False
    v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return bool(v.size) and v.min() < 0 < v.max()


def colour_axis(metric: str, values, colorscale: str | None = None) -> dict:
    """Heatmap colour settings for ``metric`` over ``values``: a signed one gets ``DIVERGING`` with
    ``zmin = -zmax`` (plotly ignores ``zmid`` once zmin/zmax are set, so the symmetry is what centres it);
    otherwise ``colorscale`` (default ``SEQUENTIAL``) over the data's range."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if is_signed(metric, v):
        m = float(np.abs(v).max()) if v.size else 0.0
        m = m if m > 0 else 1.0
        return {"colorscale": DIVERGING, "zmin": -m, "zmax": m, "zmid": 0.0}
    out = {"colorscale": colorscale or SEQUENTIAL}
    if v.size:
        out.update(zmin=float(v.min()), zmax=float(v.max()))
    return out


__all__ = ["DIVERGING", "SEQUENTIAL", "colour_axis", "is_signed"]
