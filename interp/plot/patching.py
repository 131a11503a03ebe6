"""Position × head heatmap of per-position effects (columns ``L{layer}H{head}``, rows labelled with tokens)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from interp.errors import InputError
from interp.plot.scales import colour_axis


def position_head_heatmap(df: pd.DataFrame, metric: str, tokens: list[str] | None = None, *, title: str | None = None) -> go.Figure:
    rows = df[(df["metric"] == metric) & (df["head"] >= 0)]
    if rows.empty or "position" not in rows:
        raise InputError(f"no per-position rows for metric {metric!r}; run with by='head_pos'")
    grid = rows.pivot_table(index="position", columns=["layer", "head"], values="value", aggfunc="mean").sort_index()
    cols = [f"L{l}H{h}" for l, h in grid.columns]
    labels = [f"{p}: {tokens[p]!r}" if tokens and p < len(tokens) else str(p) for p in grid.index]
    fig = go.Figure(go.Heatmap(z=grid.values, x=cols, y=labels, **colour_axis(metric, grid.values),
                               hovertemplate="%{x} at %{y}<br>" + metric + "=%{z:.3f}<extra></extra>", colorbar={"title": metric}))
    fig.update_layout(title=title or f"{metric} by position", xaxis_title="head", yaxis_title="position (token)",
                      height=max(350, 22 * len(labels) + 150), width=max(600, 4 * len(cols) + 200), yaxis={"autorange": "reversed"})
    return fig


__all__ = ["position_head_heatmap"]
