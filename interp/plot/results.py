"""A report for any tidy result: per metric, a layer × head heatmap, a per-condition comparison and a top-heads
table, each faceted by model, task, condition and seed.

Facets are the combinations of the facet columns that take more than one value in the table. The heatmap has a
dropdown over them (the first entry averages over all of them, on the same colour range); the comparison draws
one line per facet; the table lists the highest and lowest heads per facet. Rows that differ only in the other
columns (``prompt_id``, ``position``, extra columns) are averaged.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.errors import InputError
from interp.plot.scales import colour_axis

FACETS = ("model", "task", "condition", "seed")
ALL = "all facets (mean)"


def facet_columns(df: pd.DataFrame) -> list[str]:
    """The facet columns present in ``df`` that take more than one value."""
    return [c for c in FACETS if c in df.columns and df[c].nunique(dropna=False) > 1]


def _facets(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """``(label, rows)`` per facet combination, in sorted order; one ``("", df)`` when nothing varies."""
    cols = facet_columns(df)
    if not cols:
        return [("", df)]
    keyed = df.assign(**{c: df[c].astype(str) for c in cols})
    out = []
    for key, rows in keyed.groupby(cols, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        out.append((" · ".join(f"{c}={v}" for c, v in zip(cols, key)), df.loc[rows.index]))
    return out


def _head_grid(rows: pd.DataFrame) -> pd.DataFrame:
    """``[layer, head]`` means of the per-head rows."""
    return rows.pivot_table(index="layer", columns="head", values="value", aggfunc="mean").sort_index()


def metric_heatmap(df: pd.DataFrame, metric: str, *, title: str | None = None) -> go.Figure:
    """Layer × head heatmap of ``metric`` with a dropdown over facets (all on one colour range)."""
    rows = df[(df["metric"] == metric) & (df["head"] >= 0) & (df["layer"] >= 0)]
    if rows.empty:
        raise InputError(f"no per-head rows for metric {metric!r}")
    facets = _facets(rows)
    panels = ([(ALL, rows)] if len(facets) > 1 else []) + facets
    grids = [(label, _head_grid(r)) for label, r in panels]
    zmin = float(min(np.nanmin(g.values) for _, g in grids))  # grids of a few heads hold NaN where no head was run
    zmax = float(max(np.nanmax(g.values) for _, g in grids))
    fig = go.Figure()
    for i, (label, grid) in enumerate(grids):
        text = [[f"L{l}H{h}" for h in grid.columns] for l in grid.index]
        fig.add_trace(go.Heatmap(z=grid.values, x=[str(h) for h in grid.columns], y=[str(l) for l in grid.index],
                                 text=text, **colour_axis(metric, [zmin, zmax]), visible=i == 0, name=label or metric,
                                 hovertemplate="%{text}<br>" + html.escape(metric) + "=%{z:.4g}<extra></extra>",
                                 colorbar={"title": metric[:18]}))
    name = title or metric
    layout = {"title": f"{name}{' · ' + grids[0][0] if grids[0][0] else ''}", "xaxis_title": "head",
              "yaxis_title": "layer", "yaxis": {"autorange": "reversed"}, "width": 560,
              "height": max(360, 16 * len(grids[0][1]) + 140)}
    if len(grids) > 1:
        layout["updatemenus"] = [{"buttons": [{"label": label[:60], "method": "update",
                                               "args": [{"visible": [j == i for j in range(len(grids))]},
                                                        {"title": f"{name} · {label}"}]}
                                              for i, (label, _) in enumerate(grids)],
                                  "x": 0, "y": 1.12, "xanchor": "left", "yanchor": "bottom"}]
        layout["margin"] = {"t": 110}
    fig.update_layout(**layout)
    return fig


def condition_comparison(df: pd.DataFrame, metric: str, *, title: str | None = None) -> go.Figure:
    """Per-layer mean of ``metric`` (over heads), one line per facet; a bar per facet when the metric has no
    layer axis (every row at layer −1)."""
    rows = df[df["metric"] == metric]
    if rows.empty:
        raise InputError(f"no rows for metric {metric!r}")
    facets = _facets(rows)
    fig = go.Figure()
    if (rows["layer"] < 0).all():
        means = [(label or metric, float(r["value"].mean())) for label, r in facets]
        fig.add_trace(go.Bar(x=[m[0] for m in means], y=[m[1] for m in means],
                             hovertemplate="%{x}<br>" + html.escape(metric) + "=%{y:.4g}<extra></extra>"))
        xaxis, legend = "facet", False
    else:
        for label, r in facets:
            line = r[r["layer"] >= 0].groupby("layer")["value"].mean()
            fig.add_trace(go.Scatter(x=line.index, y=line.values, mode="lines+markers", name=label or metric,
                                     hovertemplate="layer %{x}<br>" + html.escape(metric) + "=%{y:.4g}<extra></extra>"))
        xaxis, legend = "layer", len(facets) > 1
    fig.update_layout(title=title or f"{metric}: mean over heads, per {'layer' if xaxis == 'layer' else 'facet'}",
                      xaxis_title=xaxis, yaxis_title=metric, width=620, height=400, showlegend=legend,
                      legend={"font": {"size": 10}})
    return fig


def top_heads_table(df: pd.DataFrame, metric: str, k: int = 10) -> str:
    """HTML table: per facet, the ``k`` heads with the highest and the lowest mean ``metric``."""
    rows = df[(df["metric"] == metric) & (df["head"] >= 0) & (df["layer"] >= 0)]
    if rows.empty:
        return "<p>No per-head rows for this metric.</p>"
    body = []
    for label, r in _facets(rows):
        means = r.groupby(["layer", "head"])["value"].mean().sort_values(ascending=False)
        fmt = lambda s: ", ".join(f"L{l}H{h}&nbsp;({v:.3g})" for (l, h), v in s.items())  # noqa: E731
        body.append(f"<tr><td>{html.escape(label or '—')}</td><td>{fmt(means.head(k))}</td>"
                    f"<td>{fmt(means.tail(k)[::-1])}</td></tr>")
    return (f"<table><tr><th>facet</th><th>highest {k}</th><th>lowest {k}</th></tr>{''.join(body)}</table>")


def results_sections(df: pd.DataFrame, *, top: int = 10) -> list:
    """One report section per metric: heatmap and comparison side by side, then the top-heads table."""
    from interp.plot.export import Grid

    sections = []
    for metric in sorted(df["metric"].astype(str).unique()):
        per_head = ((df["metric"] == metric) & (df["head"] >= 0) & (df["layer"] >= 0)).any()
        figs: list = [metric_heatmap(df, metric)] if per_head else []
        figs.append(condition_comparison(df, metric))
        if per_head:
            figs.append(top_heads_table(df, metric, top))
        sections.append((metric, Grid(figs)))
    return sections


def results_intro(df: pd.DataFrame, source: str | None = None) -> str:
    facets = facet_columns(df)
    values = "".join(f"<li><b>{c}</b>: {html.escape(', '.join(map(str, sorted(df[c].astype(str).unique())[:12])))}"
                     f"{' …' if df[c].nunique() > 12 else ''}</li>" for c in FACETS if c in df.columns)
    where = f" from <code>{html.escape(source)}</code>" if source else ""
    return (f"<p>{len(df)} rows{where}, {df['metric'].nunique()} metrics. Facets: "
            f"{', '.join(facets) if facets else 'none (one model, task, condition and seed)'}.</p><ul>{values}</ul>")


def write_results_report(df: pd.DataFrame, path: str | Path, *, title: str = "Results", source: str | None = None,
                         top: int = 10) -> Path:
    """Write the self-contained report of a tidy table (see the module docstring) and return its path."""
    from interp.plot.export import write_report

    return write_report(path, title, results_sections(df, top=top), intro=results_intro(df, source))


__all__ = ["metric_heatmap", "condition_comparison", "top_heads_table", "results_sections", "write_results_report",
           "facet_columns", "FACETS"]
