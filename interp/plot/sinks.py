"""Sink figures from the tidy frames of :mod:`interp.analyze.sinks`."""
from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from interp.errors import InputError


def _rows(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = df[df["metric"] == metric]
    if rows.empty:
        raise InputError(f"no rows for metric {metric!r}; available: {sorted(df['metric'].unique())}")
    return rows


def sink_rate_bars(df: pd.DataFrame, position: int = 0) -> go.Figure:
    """Per-layer ``Sink^ε`` at ``position`` (0 = the first token, the paper's Sink_1), in percent."""
    rows = _rows(df, "sink_rate")
    rows = rows[(rows["layer"] >= 0) & (rows["head"] == -1) & (rows["position"] == position)].sort_values("layer")
    overall = df[(df["metric"] == "sink_rate") & (df["layer"] == -1) & (df["position"] == position)]["value"]
    fig = go.Figure(go.Bar(x=rows["layer"], y=100 * rows["value"], hovertemplate="layer %{x}: %{y:.1f}%<extra></extra>"))
    title = f"Sink rate at position {position} per layer"
    if len(overall):
        title += f" (overall {100 * float(overall.iloc[0]):.1f}%)"
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="% of heads with α > ε", yaxis_range=[0, 100], height=360, width=820)
    return fig


def alpha_positions(df: pd.DataFrame, *, layers=None) -> go.Figure:
    """α_k as a layer × key-position heatmap (mean over heads; log colour scale, since the first key dominates)."""
    import numpy as np

    rows = _rows(df, "alpha")
    rows = rows[rows["head"] >= 0]
    if layers is not None:
        rows = rows[rows["layer"].isin(list(layers))]
    grid = rows.pivot_table(index="layer", columns="position", values="value", aggfunc="mean").sort_index()
    z = np.log10(grid.values.clip(min=1e-6))
    fig = go.Figure(go.Heatmap(z=z, x=[str(c) for c in grid.columns], y=[str(l) for l in grid.index], colorscale="Magma",
                               customdata=grid.values, colorbar={"title": "log10 α_k"},
                               hovertemplate="layer %{y}, key %{x}<br>α_k=%{customdata:.4f}<extra></extra>"))
    fig.update_layout(title="Key importance α_k (mean over heads) by layer and key position", xaxis_title="key position",
                      yaxis_title="layer", yaxis={"autorange": "reversed"}, height=max(360, 14 * len(grid) + 140), width=820)
    return fig


def massive_norms(df: pd.DataFrame) -> go.Figure:
    """Hidden-state norm of the first token vs the layer median, per hidden-state index (log scale)."""
    norms = _rows(df, "hidden_norm")
    first = norms[norms["position"] == 0].groupby("layer")["value"].mean()
    med = _rows(df, "hidden_norm_median").groupby("layer")["value"].mean()
    fig = go.Figure([go.Scatter(x=first.index, y=first.values, mode="lines+markers", name="first token"),
                     go.Scatter(x=med.index, y=med.values, mode="lines+markers", name="median token")])
    for metric, dash in (("key_norm", "dot"), ("value_norm", "dash")):
        kv = df[df["metric"] == metric]
        for cond, d in kv.groupby("condition"):
            line = d.groupby("layer")["value"].mean()
            fig.add_trace(go.Scatter(x=line.index, y=line.values, mode="lines", line={"dash": dash},
                                     name=f"{metric.split('_')[0]} norm · {cond}"))
    fig.update_layout(title="Massive activations: hidden-state norms (and key/value norms)", xaxis_title="hidden state / layer",
                      yaxis_title="L2 norm", yaxis_type="log", height=420, width=820)
    return fig


def hidden_sink_table(df: pd.DataFrame, k: int = 20) -> str:
    """HTML table of the tokens that are hidden sinks, by the number of (prompt position, head) hits."""
    hs = df[df["metric"] == "hidden_sink_heads"]
    if hs.empty:
        return "<p>No hidden sinks above τ.</p>"
    t = (hs.groupby("token").agg(positions=("value", "size"), head_hits=("value", "sum"))
         .sort_values("head_hits", ascending=False).head(k).reset_index())
    body = "".join(f"<tr><td><code>{html.escape(repr(r.token))}</code></td><td>{r.positions}</td><td>{int(r.head_hits)}</td></tr>"
                   for r in t.itertuples())
    return f"<table><tr><th>token</th><th>prompt positions</th><th>heads (summed)</th></tr>{body}</table>"


__all__ = ["sink_rate_bars", "alpha_positions", "massive_norms", "hidden_sink_table"]
