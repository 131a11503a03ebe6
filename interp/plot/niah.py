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


def answer_rows_figure(ar, *, title: str | None = None) -> go.Figure:
    """One heatmap per head: attention from each answer token (rows) over every key position (columns), the
    needle's answer span outlined. ``ar`` is an :class:`interp.analyze.retrieval.AnswerRows`."""
    from plotly.subplots import make_subplots

    n = len(ar.heads)
    s, e = ar.needle_span
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[f"{h}: mass on the needle span {float(ar.rows[i][:, s:e].sum(-1).mean()):.2f}"
                                        for i, h in enumerate(ar.heads)])
    labels = [f"{t}: {tok!r}" for t, tok in enumerate(ar.answer_tokens)]
    for i in range(n):
        fig.add_trace(go.Heatmap(z=ar.rows[i].numpy(), y=labels, colorscale="Blues", zmin=0, zmax=1, showscale=i == 0,
                                 colorbar={"title": "weight"},
                                 hovertemplate="key %{x}<br>answer token %{y}<br>weight %{z:.3f}<extra></extra>"),
                      row=i + 1, col=1)
        fig.add_vrect(x0=s - 0.5, x1=e - 0.5, line={"color": "#d62728", "width": 2}, fillcolor="rgba(214,39,40,0.08)",
                      row=i + 1, col=1)
    fig.update_xaxes(title_text="key position", row=n, col=1)
    fig.update_layout(title=title or (f"Attention at the answer tokens · {ar.prompt_tokens}-token prompt, needle at "
                                      f"{ar.depth:g}% (span {s}–{e}, red)"),
                      height=160 * n + 140, width=900)
    return fig


def answer_row_view(ar, *, max_queries: int = 8, metrics=None):
    """The row view (:class:`interp.plot.rowview.RowView`) of an :class:`interp.analyze.retrieval.AnswerRows`:
    each head's exact row over every key of the haystack, one query per answer token (the first is the position
    whose prediction is the answer's first token; the one with most needle mass is shown first), the needle's answer
    span and the first token shaded."""
    from interp.plot.rowview import row_view

    s, e = ar.needle_span
    n_q = min(max_queries, len(ar.answer_tokens))
    # shown first: the answer token where the heads put most mass on the needle (often not the first: a response
    # may restate the question before it copies); the others follow in answer order
    best = int(ar.rows[:, :n_q, s:e].sum(-1).mean(0).argmax())
    order = [best] + [t for t in range(n_q) if t != best]
    queries = [(ar.prompt_tokens - 1 + t, f"answer token {t}: {ar.answer_tokens[t]!r}") for t in order]
    return row_view({str(h): ar.rows[i, order] for i, h in enumerate(ar.heads)}, ar.key_tokens, queries,
                    segments=[("needle", s, e)], metrics=metrics,
                    title=f"Attention rows at the answer · {ar.prompt_tokens}-token prompt, needle at {ar.depth:g}%")
