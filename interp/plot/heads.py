"""Layer × head heatmaps of one metric from a tidy frame."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from interp.errors import InputError
from interp.plot.scales import colour_axis


def head_heatmap(df: pd.DataFrame, metric: str, *, title: str | None = None, colorscale: str | None = None,
                 agg: str = "mean") -> go.Figure:
    """Pivot the tidy rows of ``metric`` to ``[layer, head]`` (averaging any extra rows) and draw them. A signed
    metric (:func:`interp.plot.scales.is_signed`) takes the diverging scale centred at 0 whatever ``colorscale``
    says; others take ``colorscale`` (default Viridis)."""
    rows = df[(df["metric"] == metric) & (df["head"] >= 0)]
    if rows.empty:
        raise InputError(f"no rows for metric {metric!r}; available: {sorted(df['metric'].unique())}")
    grid = rows.pivot_table(index="layer", columns="head", values="value", aggfunc=agg).sort_index()
    text = [[f"L{l}H{h}" for h in grid.columns] for l in grid.index]
    fig = go.Figure(go.Heatmap(z=grid.values, x=[str(h) for h in grid.columns], y=[str(l) for l in grid.index],
                               **colour_axis(metric, grid.values, colorscale), text=text,
                               hovertemplate="%{text}<br>" + metric + "=%{z:.3f}<extra></extra>",
                               colorbar={"title": metric}))
    fig.update_layout(title=title or metric, xaxis_title="head", yaxis_title="layer", height=max(350, 16 * len(grid) + 120),
                      width=520, yaxis={"autorange": "reversed"})
    return fig
