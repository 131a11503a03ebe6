"""Vision figures: per-patch attention overlays with a head picker, sink-dimension evidence, and the
before/after intervention table."""
from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.errors import InputError


def patch_overlay(image: np.ndarray, attention: dict[str, np.ndarray], *, title: str = "Attention on image patches") -> go.Figure:
    """The image with one semi-transparent ``[grid grid]`` heatmap per head (``attention[label]``: the answer
    query's attention on each image patch); a dropdown picks the head."""
    if not attention:
        raise InputError("patch_overlay needs at least one head's patch attention")
    h, w = image.shape[:2]
    fig = go.Figure(go.Image(z=image, hoverinfo="skip"))
    labels = list(attention)
    for i, label in enumerate(labels):
        a = np.asarray(attention[label], dtype=float)
        if a.ndim != 2:
            raise InputError(f"patch attention for {label} must be [grid, grid], got shape {a.shape}")
        gy, gx = a.shape
        fig.add_trace(go.Heatmap(z=a, x0=w / gx / 2 - 0.5, dx=w / gx, y0=h / gy / 2 - 0.5, dy=h / gy, opacity=0.55,
                                 colorscale="Inferno", zmin=0, zmax=max(float(a.max()), 1e-9), visible=i == 0,
                                 colorbar={"title": "attention"}, name=label,
                                 hovertemplate="patch row %{y:.0f}, col %{x:.0f}<br>attention %{z:.3f}<extra></extra>"))
    buttons = [{"label": lab, "method": "update",
                "args": [{"visible": [True] + [j == i for j in range(len(labels))]}, {"title": f"{title}: {lab}"}]}
               for i, lab in enumerate(labels)]
    fig.update_layout(title=f"{title}: {labels[0]}", width=560, height=560,
                      updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.12, "xanchor": "right"}],
                      xaxis={"showticklabels": False}, yaxis={"showticklabels": False})
    return fig


def sink_evidence(df: pd.DataFrame, tau: float) -> go.Figure:
    """Per layer, the largest RMS-normalized activation in the sink dims over image tokens, text tokens and
    on the first token, against the sink threshold τ."""
    fig = go.Figure()
    for metric, name in (("sink_dim_first_token", "first token"), ("sink_dim_max_text", "max over text tokens"),
                         ("sink_dim_max_image", "max over image tokens")):
        rows = df[(df["metric"] == metric)].groupby("layer")["value"].max()
        if rows.empty:
            raise InputError(f"no rows for metric {metric!r}; pass the frame of SinkScan.frame()")
        fig.add_trace(go.Scatter(x=rows.index, y=rows.values, mode="lines+markers", name=name))
    fig.add_hline(y=tau, line_dash="dash", annotation_text=f"τ = {tau:g}")
    fig.update_layout(title="Massive activation in the sink dimensions (RMS-normalized |x̂|)", xaxis_title="layer",
                      yaxis_title="max |x̂_d|, d ∈ D_sink", height=380, width=820)
    return fig


def condition_table(df: pd.DataFrame, conditions: Sequence[str], metrics: Sequence[tuple[str, str, str]]) -> str:
    """HTML table: one row per ``(label, metric, prompt_id)``, one column per condition; rates show their 95%
    interval and n (marked when n < 200)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in conditions)
    body = []
    for label, metric, pid in metrics:
        cells = []
        for c in conditions:
            v = df[(df["metric"] == metric) & (df["condition"] == c) & (df["prompt_id"] == pid)]
            cells.append(f"<td>{html.escape(_cell(v.iloc[0]))}</td>" if len(v) else "<td>–</td>")
        body.append(f"<tr><td>{html.escape(label)}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(body)}</table>"


def _cell(row) -> str:
    """A rate with its 95% interval and n where the frame carries them (``interp.stats.RATE_COLUMNS``)."""
    from interp.stats import format_rate

    if "low" in row.index and row["n"] == row["n"]:
        return format_rate(float(row["value"]), float(row["low"]), float(row["high"]), int(row["n"]))
    return f"{float(row['value']):.3f}"


__all__ = ["patch_overlay", "sink_evidence", "condition_table"]
