"""Composition between layers: the largest score of any head pair, sender layer × receiver layer."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from interp.errors import InputError


def layer_composition_heatmap(df: pd.DataFrame, metric: str, *, agg: str = "max", title: str | None = None) -> go.Figure:
    rows = df[df["metric"] == metric]
    if rows.empty or "sender_layer" not in rows:
        raise InputError(f"no composition rows for metric {metric!r}; compute them with interp.composition_scores")
    grid = rows.pivot_table(index="sender_layer", columns="layer", values="value", aggfunc=agg)
    fig = go.Figure(go.Heatmap(z=grid.values, x=[f"L{c}" for c in grid.columns], y=[f"L{i}" for i in grid.index],
                               colorscale="Viridis", colorbar={"title": f"{agg} {metric}"},
                               hovertemplate="sender %{y} → receiver %{x}<br>%{z:.3f}<extra></extra>"))
    fig.update_layout(title=title or f"{metric} ({agg} over head pairs)", xaxis_title="receiver layer",
                      yaxis_title="sender layer", height=520, width=620)
    return fig


__all__ = ["layer_composition_heatmap"]
