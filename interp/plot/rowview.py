"""The row view of the attention viewer: one head's exact attention row over every key position, for long prompts.

The block view of :mod:`interp.plot.viewer` averages a 4096-token prompt into blocks; a researcher looking at a
retrieval head wants the exact row instead: one query (e.g. the answer token), every key of a 3000–8000-token
haystack, the needle marked, each key's token on hover. :class:`RowView` shows that:

- a **line** over key positions (y: attention weight, linear or log) below a one-row **strip** (the same row as
  colour), both with the key's token and weight on hover; the hovered key is also written under the plot;
- a **head picker** and a **query picker** (several heads, several queries per head);
- the **top-k keys** of the shown row listed beside it (position, token, weight, segment), computed exactly in
  Python (:func:`top_keys`);
- **segments** (the needle, the first token, image tokens, ...) shaded over the key axis, each outlined so that a
  span of one key stays visible at 8192 keys, and a button per segment that zooms to it.

Rows are stored exactly (float32, base64) rather than in thousandths: 10 heads × 8192 keys is about 0.45 MB,
and the key tokens about 0.1 MB. Rows come from the fused path (:func:`interp.attnstats.rows.attention_rows`),
so no ``n × n`` pattern is built (:func:`row_view_from_model`).
"""
from __future__ import annotations

import base64
import html
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from interp.errors import InputError

TOP_K = 10
# segment name → fill colour (others cycle through _OTHER)
COLOURS = {"needle": "214,39,40", "first token": "255,127,14", "image": "44,160,44"}
_OTHER = ("148,103,189", "140,86,75", "227,119,194", "23,190,207")
STRIP_SCALE = [[0.0, "#f7fbff"], [0.35, "#9ecae1"], [1.0, "#08306b"]]  # white at 0 (plotly.js's own "Blues" is reversed)
_ids = itertools.count()


@dataclass(frozen=True)
class Segment:
    """Key positions ``[start, end)`` to shade, named (``"needle"``, ``"first token"``, ``"image"``, ...)."""

    name: str
    start: int
    end: int


@dataclass
class RowView:
    """``rows[head][i]``: the ``[key]`` attention row of query ``queries[i]`` (a position and a label)."""

    tokens: list[str]
    rows: dict[str, np.ndarray]  # head label → [query key] float32
    queries: list[tuple[int, str]]
    segments: list[Segment] = field(default_factory=list)
    top_k: int = TOP_K
    title: str = "Attention rows"
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.tokens)
        if not self.rows:
            raise InputError("the row view needs at least one head's rows")
        for head, a in self.rows.items():
            if a.shape != (len(self.queries), n):
                raise InputError(f"rows of {head} have shape {list(a.shape)}; expected [queries keys] = [{len(self.queries)}, {n}]")
        for s in self.segments:
            if not 0 <= s.start < s.end <= n:
                raise InputError(f"segment {s.name!r} spans keys {s.start}–{s.end}, outside the {n} keys; give 0 <= start < end <= {n}")
        if self.top_k < 1:
            raise InputError(f"top_k must be at least 1, got {self.top_k}")

    @property
    def heads(self) -> list[str]:
        return list(self.rows)

    def segment_of(self, key: int) -> str:
        return next((s.name for s in self.segments if s.start <= key < s.end), "")

    def _data(self) -> dict:
        rows = {h: [base64.b64encode(np.ascontiguousarray(r, dtype="<f4").tobytes()).decode() for r in a]
                for h, a in self.rows.items()}
        top = {h: [[[int(k), float(a[i, k])] for k in top_keys(a[i], self.top_k)] for i in range(len(self.queries))]
               for h, a in self.rows.items()}
        return {"tokens": [_display(t) for t in self.tokens], "rows": rows, "scale": STRIP_SCALE, "top": top, "heads": self.heads,
                "queries": [[q, html.escape(label)] for q, label in self.queries],  # the page writes these as HTML
                "segments": [[html.escape(s.name), s.start, s.end, _colour(s.name, i)] for i, s in enumerate(self.segments)],
                "metrics": {h: [[html.escape(k), f"{v:.3g}"] for k, v in self.metrics.get(h, {}).items()] for h in self.heads}}

    def figure(self, head: str | None = None, query: int = 0) -> go.Figure:
        """The line and strip of one head's row (what the page shows first; the page redraws on a pick)."""
        head = head or self.heads[0]
        row = self.rows[head][query]
        keys = np.arange(len(self.tokens))
        text = [_display(t) for t in self.tokens]
        hover = "key %{x}: %{customdata}<br>weight %{y:.4g}<extra></extra>"
        fig = go.Figure([go.Scatter(x=keys, y=row, mode="lines", line={"width": 1, "color": "#1f77b4"}, customdata=text,
                                    hovertemplate=hover, name="weight"),
                         go.Heatmap(z=[row], x=keys, y=[0], customdata=[text], colorscale=STRIP_SCALE, zmin=0, showscale=False,
                                    yaxis="y2", hovertemplate="key %{x}: %{customdata}<br>weight %{z:.4g}<extra></extra>")])
        fig.update_layout(**_layout(self, head, query))
        return fig

    def to_html(self, include_plotlyjs: bool = True) -> str:
        """The row view as an HTML fragment (plotly.js inlined when ``include_plotlyjs``). The plot is drawn
        from the embedded rows by the page script, so each row is stored once."""
        uid = f"rv{next(_ids)}x{id(self) & 0xffff:x}"
        empty = go.Figure(layout=_layout(self, self.heads[0], 0))
        fig = empty.to_html(full_html=False, include_plotlyjs=include_plotlyjs, include_mathjax=False, div_id=f"{uid}-plot",
                            config={"displaylogo": False}, post_script=f"window.interpRowView('{uid}');")
        opts = lambda values: "".join(f"<option value='{i}'>{html.escape(str(v))}</option>" for i, v in enumerate(values))  # noqa: E731
        data = json.dumps(self._data(), separators=(",", ":")).replace("</", "<\\/")
        zoom = "".join(f"<button type='button' class='rv-zoom' data-i='{i}'>{html.escape(s.name)} ({s.start}–{s.end - 1})</button>"
                       for i, s in enumerate(self.segments))
        return (f"<div class='interp-rowview' id='{uid}'><style>{_CSS}</style>"
                f"<div class='rv-controls'><label>head <select class='rv-head'>{opts(self.heads)}</select></label> "
                f"<label>query <select class='rv-query'>{opts(label for _, label in self.queries)}</select></label> "
                f"<label><input type='checkbox' class='rv-log'> log weight</label> "
                f"<button type='button' class='rv-all'>all {len(self.tokens)} keys</button>{zoom}</div>"
                f"<script type='application/json' class='rv-data'>{data}</script><script>{_JS}</script>"
                f"<div class='rv-main'><div class='rv-plot'>{fig}<div class='rv-status'>hover a key</div></div>"
                f"<div class='rv-side'><table class='rv-top'></table><table class='rv-metrics'></table></div></div></div>")

    def _repr_html_(self) -> str:
        return self.to_html(include_plotlyjs=True)

    def save(self, path) -> Path:
        """One self-contained HTML file (plotly.js embedded, works offline)."""
        from interp.plot.export import write_report

        return write_report(path, self.title, [("", self)], self_contained=True)


def top_keys(row: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest weights of ``row [key]``, largest first (ties: the earlier key first)."""
    k = min(k, row.shape[0])
    kth = -np.partition(-row, k - 1)[k - 1]  # the k-th largest weight; of the keys tied there, the earliest count
    above = np.flatnonzero(row > kth)
    idx = np.concatenate([above, np.flatnonzero(row == kth)[: k - len(above)]])
    return idx[np.lexsort((idx, -row[idx]))]


def _top_keys_reference(row: np.ndarray, k: int) -> np.ndarray:
    """Sort form of :func:`top_keys`, for the tests."""
    return np.array(sorted(range(len(row)), key=lambda i: (-row[i], i))[:k], dtype=np.int64)


def _display(token: str) -> str:
    """A token as hover text: HTML-escaped (plotly's labels read tags), line breaks and tabs visible."""
    return html.escape(token.replace("\n", "↵").replace("\t", "⇥"))


def _colour(name: str, i: int) -> str:
    return COLOURS.get(name, _OTHER[i % len(_OTHER)])


def _layout(view: RowView, head: str, query: int) -> dict:
    n = len(view.tokens)
    shapes, notes = [], []
    for i, s in enumerate(view.segments):
        c = _colour(s.name, i)
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": s.start - 0.5, "x1": s.end - 0.5, "y0": 0, "y1": 1,
                       "fillcolor": f"rgba({c},0.25)", "line": {"color": f"rgba({c},0.9)", "width": 2}, "layer": "below"})
        notes.append({"x": (s.start + s.end - 1) / 2, "xref": "x", "y": 1.0, "yref": "paper", "yanchor": "bottom",
                      "text": html.escape(s.name), "showarrow": False, "font": {"color": f"rgb({c})", "size": 11}})
    pos, label = view.queries[query]
    return {"title": {"text": f"{head} · query {html.escape(label)} (position {pos}) · {n} keys"}, "height": 380,
            "margin": {"l": 60, "r": 20, "t": 60, "b": 45}, "shapes": shapes, "annotations": notes, "showlegend": False,
            "hovermode": "closest", "xaxis": {"title": {"text": "key position"}, "range": [-0.5, n - 0.5]},
            "yaxis": {"title": {"text": "attention weight"}, "domain": [0.0, 0.8]},
            "yaxis2": {"domain": [0.86, 1.0], "showticklabels": False, "fixedrange": True, "title": {"text": "strip"}}}


def row_view(rows: Mapping[str, object], tokens: Sequence[str], queries: Sequence[int | tuple[int, str]], *,
             segments: Sequence[Segment | tuple[str, int, int]] = (), top_k: int = TOP_K, title: str = "Attention rows",
             metrics: Mapping[str, Mapping[str, float]] | None = None, first_token: bool = True) -> RowView:
    """``rows[head_label]`` is ``[query key]`` (or ``[key]`` for one query), tensor or array, over ``tokens``
    (the key tokens); ``queries`` are the query positions (or ``(position, label)``). ``first_token`` shades key
    0 as a segment (the usual attention sink)."""
    qs = [(int(q[0]), str(q[1])) if isinstance(q, tuple) else (int(q), f"{int(q)}") for q in queries]
    out = {}
    for head, r in rows.items():
        a = r.detach().float().cpu().numpy() if hasattr(r, "detach") else np.asarray(r, dtype=np.float32)
        out[str(head)] = (a[None] if a.ndim == 1 else a).astype(np.float32)
    segs = [s if isinstance(s, Segment) else Segment(str(s[0]), int(s[1]), int(s[2])) for s in segments]
    if first_token and len(tokens) and not any(s.start == 0 for s in segs):
        segs.insert(0, Segment("first token", 0, 1))
    return RowView(list(tokens), out, qs, segs, top_k, title, {k: dict(v) for k, v in (metrics or {}).items()})


def token_runs(ids: Sequence[int], token_id: int, name: str = "image") -> list[Segment]:
    """Segments over each run of ``token_id`` in ``ids`` (e.g. a VLM prompt's image tokens)."""
    out, start = [], None
    for i, t in enumerate([*ids, None]):
        if t == token_id and start is None:
            start = i
        elif t != token_id and start is not None:
            out.append(Segment(name, start, i))
            start = None
    return out


def row_view_from_model(model, prompt, heads: Sequence, queries: Sequence[int | tuple[int, str]] = (-1,), *,
                        segments: Sequence[Segment | tuple[str, int, int]] = (), top_k: int = TOP_K,
                        title: str = "Attention rows", metrics: Mapping[str, Mapping[str, float]] | None = None) -> RowView:
    """Exact rows of ``heads`` (``HeadId`` or ``(layer, head)``) at ``queries`` of one prompt (text or ``[1 pos]``
    tokens), from the fused path: the forward stops after the last chosen layer and no layer's ``[query key]``
    pattern is built. Negative query positions count from the end (-1: the last token)."""
    from interp.attnstats.rows import attention_rows
    from interp.inputs import to_batch
    from interp.types import HeadId

    if not heads:
        raise InputError("give at least one head to view")
    ids = [h if isinstance(h, HeadId) else HeadId(int(h[0]), int(h[1])) for h in heads]
    batch = to_batch(model, prompt)
    if batch.tokens.shape[0] != 1:
        raise InputError(f"the row view takes one prompt, got {batch.tokens.shape[0]}")
    n = int(batch.attention_mask.sum())
    toks = batch.tokens[:, :n]
    qs = [q if isinstance(q, tuple) else (q, None) for q in queries]
    pos = [(q + n if q < 0 else q) for q, _ in qs]
    if any(not 0 <= p < n for p in pos):
        raise InputError(f"query positions {[q for q, _ in qs]} fall outside the prompt's {n} tokens")
    rows = attention_rows(model, toks, heads=ids, queries=pos)[0]  # [head query key]
    words = [model.tokenizer.decode([t]) for t in toks[0].tolist()]
    labels = [(p, lab or f"{p}: {_display(words[p])}") for p, (_, lab) in zip(pos, qs)]
    return row_view({str(h): rows[i] for i, h in enumerate(ids)}, words, labels, segments=segments, top_k=top_k,
                    title=title, metrics=metrics)


_CSS = """
.interp-rowview{font-family:system-ui,sans-serif;font-size:13px;border:1px solid #ddd;padding:8px;border-radius:6px}
.interp-rowview .rv-controls label{margin-right:12px}.interp-rowview .rv-controls button{margin-right:6px;font-size:12px}
.interp-rowview .rv-main{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}.interp-rowview .rv-plot{flex:1 1 600px;min-width:0}
.interp-rowview .rv-side{flex:0 0 310px;overflow-x:auto}.interp-rowview td,.interp-rowview th{padding:1px 6px;border:1px solid #ddd;font-size:12px}
.interp-rowview .rv-tok{font-family:ui-monospace,monospace;white-space:pre}
.interp-rowview .rv-status{font-family:ui-monospace,monospace;color:#333;min-height:1.4em;margin-top:2px}
"""

# One init function per page; each row view calls it with its id once its (empty) plot exists.
_JS = r"""
window.interpRowView = window.interpRowView || function (uid) {
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', function () { window.interpRowView(uid); });
    return;
  }
  var root = document.getElementById(uid);
  if (!root || root.dataset.ready) return;
  root.dataset.ready = '1';
  var D = JSON.parse(root.querySelector('.rv-data').textContent);
  var gd = document.getElementById(uid + '-plot');
  var hSel = root.querySelector('.rv-head'), qSel = root.querySelector('.rv-query'), logBox = root.querySelector('.rv-log');
  var status = root.querySelector('.rv-status'), n = D.tokens.length, keys = new Array(n);
  for (var i = 0; i < n; i++) keys[i] = i;
  var cache = {};
  function row(h, q) {
    var id = h + '/' + q;
    if (!cache[id]) {
      var s = atob(D.rows[D.heads[h]][q]), b = new Uint8Array(s.length);
      for (var j = 0; j < s.length; j++) b[j] = s.charCodeAt(j);
      cache[id] = Array.prototype.slice.call(new Float32Array(b.buffer));
    }
    return cache[id];
  }
  function segmentOf(k) {
    for (var i = 0; i < D.segments.length; i++) { var s = D.segments[i]; if (k >= s[1] && k < s[2]) return s[0]; }
    return '';
  }
  function esc(t) { var d = document.createElement('span'); d.innerHTML = t; return d.textContent; }
  function draw() {
    var h = +hSel.value, q = +qSel.value, y = row(h, q), head = D.heads[h], query = D.queries[q];
    var hover = 'key %{x}: %{customdata}<br>weight %{y:.4g}<extra></extra>';
    var traces = [
      {type: 'scatter', mode: 'lines', x: keys, y: y, customdata: D.tokens, hovertemplate: hover, line: {width: 1, color: '#1f77b4'}},
      {type: 'heatmap', z: [y], x: keys, y: [0], customdata: [D.tokens], colorscale: D.scale, zmin: 0, showscale: false, yaxis: 'y2',
       hovertemplate: 'key %{x}: %{customdata}<br>weight %{z:.4g}<extra></extra>'}];
    // a new layout object each time: Plotly.react redraws what differs from the last one it was given
    var layout = Object.assign({}, gd.layout, {
      title: {text: head + ' · query ' + query[1] + ' (position ' + query[0] + ') · ' + n + ' keys'},
      yaxis: Object.assign({}, gd.layout.yaxis, {type: logBox.checked ? 'log' : 'linear', autorange: true})});
    Plotly.react(gd, traces, layout, {displaylogo: false});
    var top = D.top[head][q], rowsHtml = '<tr><th>#</th><th>key</th><th>token</th><th>weight</th><th>segment</th></tr>';
    top.forEach(function (kw, r) {
      rowsHtml += '<tr><td>' + (r + 1) + '</td><td>' + kw[0] + '</td><td class="rv-tok">' + D.tokens[kw[0]] + '</td><td>' +
        kw[1].toFixed(4) + '</td><td>' + segmentOf(kw[0]) + '</td></tr>';
    });
    root.querySelector('.rv-top').innerHTML = rowsHtml;
    var m = D.metrics[head] || [];
    root.querySelector('.rv-metrics').innerHTML = m.map(function (kv) { return '<tr><td>' + kv[0] + '</td><td>' + kv[1] + '</td></tr>'; }).join('');
    root.dataset.drawn = head + '/' + q;
    if (!root.dataset.drawnAt) root.dataset.drawnAt = performance.now();  // ms after navigation (benchmarks read it)
  }
  function show(k) {
    var y = row(+hSel.value, +qSel.value), seg = segmentOf(k);
    status.textContent = 'key ' + k + ': ' + esc(D.tokens[k]) + '  weight ' + y[k].toFixed(4) + (seg ? '  (' + esc(seg) + ')' : '');
    status.dataset.key = k;
  }
  gd.on('plotly_hover', function (ev) { if (ev.points && ev.points.length) show(ev.points[0].x); });
  hSel.addEventListener('change', draw);
  qSel.addEventListener('change', draw);
  logBox.addEventListener('change', draw);
  root.querySelector('.rv-all').addEventListener('click', function () { Plotly.relayout(gd, {'xaxis.range': [-0.5, n - 0.5]}); });
  root.querySelectorAll('.rv-zoom').forEach(function (b) {
    b.addEventListener('click', function () {
      var s = D.segments[+b.dataset.i], pad = Math.max(20, (s[2] - s[1]) * 2);
      Plotly.relayout(gd, {'xaxis.range': [Math.max(-0.5, s[1] - pad), Math.min(n - 0.5, s[2] + pad)]});
    });
  });
  draw();
};
"""
