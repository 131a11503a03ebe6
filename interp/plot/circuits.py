"""Circuit graphs: heads as nodes laid out by layer (x) and head index (y), colored by class, sized by
``|effect|``; edges from each stage-s head to the stage-(s−1) heads it was path-patched into (stage 1 into the
logits), with width by ``|effect|``; hover shows head, class, stage, effect and copy score. ``reuse_figure``
draws two circuits side by side and rings the shared heads."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLORS = {"name mover": "#1f77b4", "negative mover": "#d62728", "S-inhibition": "#2ca02c", "content gatherer": "#17becf",
          "induction": "#9467bd", "duplicate token": "#8c564b", "previous token": "#e377c2", "other": "#7f7f7f"}


def _traces(heads: pd.DataFrame, n_layers: int, n_heads: int, shared: set | None = None) -> list:
    traces = []
    pos = {(int(r.layer), int(r.head)): (int(r.layer), int(r.head)) for r in heads.itertuples()}
    logits = (n_layers, (n_heads - 1) / 2)
    big = max(heads["effect"].abs().max(), 1e-9) if len(heads) else 1.0
    for r in heads.itertuples():
        targets = [logits] if r.stage == 1 else [pos[(int(t.layer), int(t.head))] for t in heads[heads["stage"] == r.stage - 1].itertuples()
                                                 if int(t.layer) > int(r.layer)]
        for x1, y1 in targets:
            traces.append(go.Scatter(x=[r.layer, x1], y=[r.head, y1], mode="lines", hoverinfo="skip", showlegend=False,
                                     line={"width": 0.5 + 4 * abs(r.effect) / big, "color": "rgba(120,120,120,0.45)"}))
    traces.append(go.Scatter(x=[logits[0]], y=[logits[1]], mode="markers+text", text=["logits"], textposition="top center",
                             marker={"size": 14, "color": "black", "symbol": "square"}, showlegend=False, hoverinfo="skip"))
    for cls, rows in heads.groupby("class"):
        ring = [(int(l), int(h)) in (shared or set()) for l, h in zip(rows["layer"], rows["head"])]
        hover = [f"L{r.layer}H{r.head} — {cls}<br>stage {r.stage}, effect {r.effect:.3f}<br>copy score {r.copy_score:.2f}"
                 + ("<br><b>shared</b>" if s else "") for r, s in zip(rows.itertuples(), ring)]
        traces.append(go.Scatter(x=rows["layer"], y=rows["head"], mode="markers", name=cls, legendgroup=cls,
                                 text=hover, hovertemplate="%{text}<extra></extra>",
                                 marker={"size": 8 + 22 * rows["effect"].abs() / big, "color": COLORS.get(cls, "#7f7f7f"),
                                         "line": {"width": [4 if s else 0.5 for s in ring], "color": ["gold" if s else "white" for s in ring]}}))
    return traces


def circuit_graph(heads: pd.DataFrame, n_layers: int, n_heads: int, *, title: str | None = None, shared: set | None = None) -> go.Figure:
    fig = go.Figure(_traces(heads, n_layers, n_heads, shared))
    fig.update_layout(title=title or "Circuit", xaxis_title="layer", yaxis_title="head", height=480, width=900,
                      xaxis={"range": [-0.5, n_layers + 0.8]}, yaxis={"range": [-0.8, n_heads - 0.2]})
    return fig


def reuse_figure(a: pd.DataFrame, b: pd.DataFrame, n_layers: int, n_heads: int, shared: set, titles: tuple[str, str]) -> go.Figure:
    """Two circuits side by side; shared heads (``{(layer, head)}``) are ringed in gold."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.06)
    for col, heads in ((1, a), (2, b)):
        for t in _traces(heads, n_layers, n_heads, shared):
            if col == 2:
                t.showlegend = False
            fig.add_trace(t, row=1, col=col)
        fig.update_xaxes(title_text="layer", range=[-0.5, n_layers + 0.8], row=1, col=col)
        fig.update_yaxes(title_text="head", range=[-0.8, n_heads - 0.2], row=1, col=col)
    fig.update_layout(title=f"Shared heads (gold ring): {len(shared)}", height=500, width=1300)
    return fig


__all__ = ["circuit_graph", "reuse_figure", "COLORS"]



def repair_figure(acc: pd.DataFrame, draws: pd.DataFrame, baseline: float | None = None) -> go.Figure:
    """Accuracy per repair condition as bars with their 95% Wilson intervals (``acc``: one row per condition with
    ``k, n, accuracy, lo, hi``, from :func:`interp.analyze.repair.repair_accuracy`), each random-head draw as a
    point (``draws``: the tidy accuracy rows of condition ``random``), the majority-class baseline dashed."""
    text = [f"{r.condition}: {r.k}/{r.n} = {r.accuracy:.3f}<br>95% Wilson [{r.lo:.3f}, {r.hi:.3f}]" for r in acc.itertuples()]
    fig = go.Figure(go.Bar(x=acc["condition"], y=acc["accuracy"], hovertext=text, hoverinfo="text", marker_color="#9ecae1",
                           error_y={"type": "data", "array": acc["hi"] - acc["accuracy"], "arrayminus": acc["accuracy"] - acc["lo"]},
                           name="accuracy, 95% Wilson interval"))
    if len(draws):
        labels = [f"draw {s}: {v:.3f} ({h})" for s, v, h in zip(draws["seed"], draws["value"], draws["heads"])]
        fig.add_trace(go.Scatter(x=["random"] * len(draws), y=draws["value"], mode="markers", name="random-head draws",
                                 marker={"color": "#d62728", "size": 9, "symbol": "circle-open"}, hovertext=labels, hoverinfo="text"))
    if baseline is not None:
        fig.add_hline(y=baseline, line={"dash": "dash", "color": "#555"}, annotation_text=f"majority class {baseline:.2f}",
                      annotation_position="top left")
    n = int(acc["n"].min()) if len(acc) else 0
    fig.update_layout(title=f"Colored Objects accuracy by condition (n = {n} prompts per condition"
                            f"{', under 200: wide intervals' if n < 200 else ''})",
                      yaxis={"title": "accuracy", "range": [0, 1.05]}, xaxis_title="condition", width=640, height=420,
                      legend={"orientation": "h", "y": -0.2})
    return fig
