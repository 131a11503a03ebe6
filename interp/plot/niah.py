"""NIAH recall grids (the classic green-to-red length × depth plot) and ranked head tables."""
from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from interp.errors import InputError


def niah_grid(df: pd.DataFrame, condition: str, *, title: str | None = None) -> go.Figure:
    """Mean ``niah_recall`` (0–100) over needles and draws, depth (rows) × context length (columns)."""
    rows = df[(df["metric"] == "niah_recall") & (df["condition"] == condition)]
    if rows.empty:
        raise InputError(f"no NIAH rows for condition {condition!r}; available: {sorted(df['condition'].dropna().unique())}")
    grid = rows.pivot_table(index="depth", columns="context_len", values="value", aggfunc="mean").sort_index()
    fig = go.Figure(go.Heatmap(z=grid.values, x=[str(c) for c in grid.columns], y=[f"{d:g}%" for d in grid.index],
                               colorscale="RdYlGn", zmin=0, zmax=100, colorbar={"title": "recall"},
                               hovertemplate="length %{x}<br>depth %{y}<br>recall %{z:.0f}<extra></extra>"))
    fig.update_layout(title=title or f"NIAH recall · {condition} (mean {grid.values.mean():.0f})",
                      xaxis_title="context length (tokens)", yaxis_title="needle depth", width=520, height=380)
    return fig


def ranked_table(scores: pd.DataFrame, metric: str, k: int = 20) -> str:
    rows = scores[scores["metric"] == metric].nlargest(k, "value")
    body = "".join(f"<tr><td>{i + 1}</td><td>L{r.layer}H{r.head}</td><td>{r.value:.3f}</td></tr>"
                   for i, r in enumerate(rows.itertuples()))
    return f"<table><tr><th>rank</th><th>head</th><th>{html.escape(metric)}</th></tr>{body}</table>"
