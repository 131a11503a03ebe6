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


def masking_curve(niah: pd.DataFrame, samples: pd.DataFrame) -> tuple[go.Figure, str]:
    """NIAH recall against K for top-K and random-K masking (K=0 is no masking), and an HTML list of the
    heads masked in each condition."""
    rec = niah[niah["metric"] == "niah_recall"]
    base = float(rec[rec["condition"] == "none"]["value"].mean())
    fig = go.Figure()
    for kind, colour in (("top", "#d62728"), ("random", "#1f77b4")):
        by_k = {0: base}
        for cond, d in rec.groupby("condition"):
            if cond.startswith(kind) and cond[len(kind):].isdigit():
                by_k[int(cond[len(kind):])] = float(d["value"].mean())
        ks = sorted(by_k)
        fig.add_trace(go.Scatter(x=ks, y=[by_k[k] for k in ks], mode="lines+markers", name=f"{kind}-K masked",
                                 line={"color": colour}, hovertemplate="K=%{x}: recall %{y:.1f}<extra></extra>"))
    fig.update_layout(title="NIAH recall when K heads are masked (uniform attention)", xaxis_title="K (heads masked)",
                      yaxis_title="mean NIAH recall", yaxis_range=[0, 105], width=620, height=380)
    masked = samples.dropna(subset=["masked"]) if "masked" in samples else samples.iloc[0:0]
    items = "".join(f"<li><b>{html.escape(str(c))}</b> (seed {s}): {html.escape(str(m))}</li>"
                    for (c, s), m in masked.groupby(["condition", "seed"])["masked"].first().items())
    return fig, f"<ul>{items}</ul>" if items else "<p>No heads were masked.</p>"
