"""The subspace report's figure: effects of each intervention, and the dormancy histograms (methods.md §11)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

ORDER = ("subspace", "row", "null", "whole")


def subspace_figure(df: pd.DataFrame, projections: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Left: FLDD (%) per intervention, interchange accuracy as text. Right: clean projections onto the row part
    for the two classes (histograms) with the values after the subspace patch marked below the axis."""
    fig = make_subplots(1, 2, subplot_titles=("effect of each patch (FLDD %)", "dormancy: clean projections onto v_row"))
    eff = df[df["metric"] == "fldd"].set_index("condition")["value"]
    acc = df[df["metric"] == "interchange_accuracy"].set_index("condition")["value"]
    names = [c for c in ORDER if c in eff.index]
    fig.add_trace(go.Bar(x=names, y=[eff[c] for c in names], text=[f"acc {acc.get(c, float('nan')):.2f}" for c in names],
                         showlegend=False), 1, 1)
    if "clean" in projections:
        groups = projections.groupby("class") if "class" in projections else [("all", projections)]
        for label, g in groups:
            fig.add_trace(go.Histogram(x=g["clean"], name=f"clean, class {label}", opacity=0.6, nbinsx=40), 1, 2)
        fig.add_trace(go.Scatter(x=projections["patched"], y=[0] * len(projections), mode="markers", name="after subspace patch",
                                 marker={"symbol": "line-ns-open", "size": 14, "color": "black"}), 1, 2)
        fig.update_layout(barmode="overlay")
    verdict = bool(df["illusion_suspected"].iloc[0]) if "illusion_suspected" in df else None
    fig.update_layout(title=title or f"subspace report: illusion_suspected = {verdict}", height=420, width=1000)
    return fig


__all__ = ["subspace_figure"]
