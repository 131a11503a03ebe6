"""Entropy figures: training curves from ``EntropyTracker`` frames, and per-layer entropy bars."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from interp.errors import InputError


def entropy_curves(df: pd.DataFrame, *, metric: str = "entropy", by: str = "layer") -> go.Figure:
    """Lines over ``step`` of ``metric``: per (condition, layer) averaged over heads (``by="layer"``), per
    (condition, head) label (``by="head"``), or the scalar rows (layer −1) such as ``loss``."""
    if "step" not in df.columns:
        raise InputError("entropy_curves needs a 'step' column; pass EntropyTracker.frame()")
    rows = df[df["metric"] == metric]
    if rows.empty:
        raise InputError(f"no rows for metric {metric!r}; available: {sorted(df['metric'].unique())}")
    cond = rows["condition"].astype(str) if "condition" in rows.columns else pd.Series("", index=rows.index)
    rows = rows.assign(_cond=cond.values)
    fig = go.Figure()
    scalar = bool((rows["layer"] < 0).all())
    keys = ["_cond"] if scalar else (["_cond", "layer"] if by == "layer" else ["_cond", "layer", "head"])
    for key, d in rows.groupby(keys):
        key = key if isinstance(key, tuple) else (key,)
        line = d.groupby("step")["value"].mean()
        name = " ".join([str(key[0])] + ([f"L{key[1]}"] if len(key) > 1 else []) + ([f"H{key[2]}"] if len(key) > 2 else []))
        fig.add_trace(go.Scatter(x=line.index, y=line.values, mode="lines", name=name.strip(),
                                 line={"dash": "dot" if "reparam" in str(key[0]) else "solid"}))
    fig.update_layout(title=f"{metric} over training", xaxis_title="step", yaxis_title=metric, height=420, width=820)
    return fig


def layer_entropy_bars(df: pd.DataFrame, metric: str = "normalized_entropy") -> go.Figure:
    """Per-layer mean of ``metric`` (layer rows with head −1 from :func:`interp.analyze.entropy.entropy_frame`)."""
    rows = df[(df["metric"] == metric) & (df["head"] == -1) & (df["layer"] >= 0)].sort_values("layer")
    if rows.empty:
        raise InputError(f"no layer rows for metric {metric!r}")
    fig = go.Figure(go.Bar(x=rows["layer"], y=rows["value"]))
    fig.update_layout(title=f"{metric} per layer (mean over heads)", xaxis_title="layer", yaxis_title=metric, height=360, width=820)
    return fig


__all__ = ["entropy_curves", "layer_entropy_bars"]
