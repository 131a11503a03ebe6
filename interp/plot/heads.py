"""Layer × head heatmaps of one metric from a tidy frame."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from interp.errors import InputError


def head_heatmap(df: pd.DataFrame, metric: str, *, title: str | None = None, colorscale: str = "Viridis",
                 agg: str = "mean") -> go.Figure:
    """Pivot the tidy rows of ``metric`` to ``[layer, head]`` (averaging any extra rows) and draw them."""
    rows = df[(df["metric"] == metric) & (df["head"] >= 0)]
    if rows.empty:
        raise InputError(f"no rows for metric {metric!r}; available: {sorted(df['metric'].unique())}")
    grid = rows.pivot_table(index="layer", columns="head", values="value", aggfunc=agg).sort_index()
    text = [[f"L{l}H{h}" for h in grid.columns] for l in grid.index]
    fig = go.Figure(go.Heatmap(z=grid.values, x=[str(h) for h in grid.columns], y=[str(l) for l in grid.index],
                               colorscale=colorscale, text=text,
                               hovertemplate="%{text}<br>" + metric + "=%{z:.3f}<extra></extra>",
                               colorbar={"title": metric}))
    fig.update_layout(title=title or metric, xaxis_title="head", yaxis_title="layer", height=max(350, 16 * len(grid) + 120),
                      width=520, yaxis={"autorange": "reversed"})
    return fig
