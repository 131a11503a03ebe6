"""An attention viewer worth sharing (in the spirit of CircuitsVis), drawn with plotly and a little plain
JavaScript; no ipywidgets, no server.

- **Token hover**: hovering a token colours every token by how much the hovered one attends to it (blue
  background, its pattern row) and how much it is attended to by each (orange bar, its pattern column); the
  heatmap marks the same row and column. Hovering a heatmap cell does the same for its query token.
- **Head picker** with the head's metrics (e.g. the atlas's) beside it, and a **prompt picker** for several prompts.
- **Export**: ``viewer.save("viewer.html")`` writes one self-contained file; in a notebook the viewer displays
  itself (``_repr_html_``, plotly.js inlined); inside a report (``write_report``) plotly.js is embedded once.
- **Long prompts** are downsampled by blocks: above ``max_tokens`` tokens, B consecutive tokens form a block
  and the viewer shows ``[blocks × blocks]`` patterns, each cell the attention mass from the query block to the key
  block averaged over the block's queries (so rows still sum to 1). The viewer says so above the plot
  (``AttentionViewer.describe()``). A 4096-token prompt at the default 256 blocks costs about 0.3 MB per head.

For one query's exact row over every key of a long prompt (a retrieval head at the answer token, 8192 keys, the
needle marked) use the row view, :mod:`interp.plot.rowview`.

Patterns come from a :class:`~interp.hooks.Capture` (:func:`viewer_from_capture`) or straight from the model
(:func:`viewer_from_model`). For long prompts ``viewer_from_model`` takes the rows from the fused path's
``attention_rows`` (:data:`ATTENTION_ROWS`), so no layer's whole ``[head query key]`` pattern is built.
"""
from __future__ import annotations

import html
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.errors import InputError, UnsupportedModelError

MAX_TOKENS = 256
_ids = itertools.count()


def block_downsample(pattern: np.ndarray, block: int) -> np.ndarray:
    """``[q k]`` → ``[ceil(q/block) ceil(k/block)]``: the mass each query block puts on each key block, averaged
    over the queries of the block. Rows that summed to 1 still do."""
    q, k = pattern.shape
    mq, mk = -(-q // block), -(-k // block)
    padded = np.zeros((mq * block, mk * block), dtype=np.float64)
    padded[:q, :k] = pattern
    mass = padded.reshape(mq, block, mk, block).sum(axis=3)  # [q_block q_in_block k_block]
    counts = np.minimum(block, q - np.arange(mq) * block)  # real queries per block (the last may be short)
    return mass.sum(axis=1) / counts[:, None]


def _block_downsample_reference(pattern: np.ndarray, block: int) -> np.ndarray:
    """Loop form of :func:`block_downsample`, for the tests."""
    q, k = pattern.shape
    out = np.zeros((-(-q // block), -(-k // block)))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = pattern[i * block:(i + 1) * block, j * block:(j + 1) * block].sum(axis=1).mean()
    return out


def block_labels(tokens: Sequence[str], block: int, width: int = 14) -> tuple[list[str], list[str]]:
    """Short labels and full hover texts of each block of ``block`` tokens."""
    short, full = [], []
    for start in range(0, len(tokens), block):
        text = "".join(tokens[start:start + block])
        end = min(start + block, len(tokens)) - 1
        short.append(f"[{start}–{end}] {' '.join(text.split())[:width]}")  # one line per block, whatever the text holds
        full.append(f"tokens {start}–{end}: {text[:300]}")
    return short, full


@dataclass
class ViewerPrompt:
    """One prompt's tokens and per-head patterns (``[query key]``, float, at full or block resolution)."""

    id: str
    tokens: list[str]
    patterns: dict[str, np.ndarray]
    block: int = 1

    @property
    def n_cells(self) -> int:
        return next(iter(self.patterns.values())).shape[0] if self.patterns else 0


@dataclass
class AttentionViewer:
    prompts: list[ViewerPrompt]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    title: str = "Attention patterns"

    def __post_init__(self):
        if not self.prompts or not any(p.patterns for p in self.prompts):
            raise InputError("the attention viewer needs at least one prompt with one head's pattern")
        heads = [list(p.patterns) for p in self.prompts]
        if any(h != heads[0] for h in heads):
            raise InputError(f"every prompt needs the same heads; got {heads[0]} and {next(h for h in heads if h != heads[0])}")

    @property
    def heads(self) -> list[str]:
        return list(self.prompts[0].patterns)

    def describe(self) -> str:
        """What the viewer shows of each prompt: full resolution or blocks, in words."""
        parts = []
        for p in self.prompts:
            if p.block == 1:
                parts.append(f"{p.id}: all {len(p.tokens)} tokens")
            else:
                parts.append(f"{p.id}: {len(p.tokens)} tokens downsampled to {p.n_cells} blocks of {p.block} tokens "
                             f"(each cell: attention mass from a query block to a key block, averaged over the block's queries)")
        return "; ".join(parts)

    def _data(self) -> dict:
        prompts = []
        for p in self.prompts:
            labels, texts = _labels(p)
            prompts.append({"id": p.id, "labels": labels, "texts": texts, "block": p.block, "n_tokens": len(p.tokens),
                            "rows": {h: _encode(a) for h, a in p.patterns.items()}})
        metrics = {h: [[k, _fmt(v)] for k, v in self.metrics.get(h, {}).items()] for h in self.heads}
        return {"prompts": prompts, "heads": self.heads, "metrics": metrics, "title": self.title}

    def figure(self, prompt: int = 0, head: str | None = None) -> go.Figure:
        """The heatmap of one prompt and head (what the viewer shows first)."""
        p = self.prompts[prompt]
        head = head or self.heads[0]
        z = p.patterns[head]
        n = z.shape[0]
        labels = _labels(p)[0]
        small = n <= 64  # per-cell hover labels for big patterns are built in the page (see _JS), not stored
        fig = go.Figure(go.Heatmap(z=np.round(z, 3), colorscale="Blues", zmin=0, zmax=1,
                                   customdata=[[f"{labels[i]} → {labels[j]}" for j in range(n)] for i in range(n)] if small else None,
                                   hovertemplate=("%{customdata}" if small else "query %{y} → key %{x}") + "<br>weight %{z:.3f}<extra></extra>",
                                   colorbar={"title": "weight", "len": 0.8}))
        ticks = {"tickmode": "array", "tickvals": list(range(n)), "ticktext": labels, "tickfont": {"size": 8}} if small else {}
        fig.update_layout(title=f"{head} · {p.id}", width=620, height=600, margin={"l": 110, "b": 110, "t": 50},
                          xaxis={"title": "key", **ticks}, yaxis={"title": "query", "autorange": "reversed", **ticks})
        return fig

    def to_html(self, include_plotlyjs: bool = True) -> str:
        """The viewer as an HTML fragment (plotly.js inlined when ``include_plotlyjs``)."""
        uid = f"iv{next(_ids)}x{id(self) & 0xffff:x}"
        fig = self.figure().to_html(full_html=False, include_plotlyjs=include_plotlyjs, include_mathjax=False,
                                    div_id=f"{uid}-plot", config={"displaylogo": False},
                                    post_script=f"window.interpAttentionViewer('{uid}');")
        first = self.prompts[0]
        options = lambda values: "".join(f"<option value='{i}'>{html.escape(str(v))}</option>" for i, v in enumerate(values))  # noqa: E731
        data = json.dumps(self._data(), separators=(",", ":")).replace("</", "<\\/")
        # the init script and the data come before the plot: plotly calls the init as soon as the plot exists
        return (f"<div class='interp-viewer' id='{uid}'><style>{_CSS}</style>"
                f"<div class='iv-controls'><label>prompt <select class='iv-prompt'>{options([p.id for p in self.prompts])}</select></label> "
                f"<label>head <select class='iv-head'>{options(self.heads)}</select></label> "
                f"<span class='iv-mode'>{html.escape(_mode(first))}</span></div>"
                f"<script type='application/json' class='iv-data'>{data}</script><script>{_JS}</script>"
                f"<div class='iv-main'><div class='iv-plot'>{fig}</div><div class='iv-side'><table class='iv-metrics'></table>"
                f"<p class='iv-legend'><span class='iv-sw iv-sw-row'></span> attended to by the hovered token (its row)<br>"
                f"<span class='iv-sw iv-sw-col'></span> attends to the hovered token (its column)</p></div></div>"
                f"<div class='iv-tokens'></div></div>")

    def _repr_html_(self) -> str:
        return self.to_html(include_plotlyjs=True)

    def save(self, path) -> Path:
        """One self-contained HTML file (plotly.js embedded, works offline)."""
        from interp.plot.export import write_report

        return write_report(path, self.title, [("", self)], intro=f"<p>{html.escape(self.describe())}</p>", self_contained=True)


def _labels(p: ViewerPrompt) -> tuple[list[str], list[str]]:
    """Axis labels and hover texts of a prompt's cells (tokens, or blocks of tokens)."""
    if p.block == 1:  # line breaks show as ↵ so that the token strip keeps one token per box
        return [f"{i}:{t!r}"[:24] for i, t in enumerate(p.tokens)], [t.replace("\n", "↵") for t in p.tokens]
    return block_labels(p.tokens, p.block)


def _mode(p: ViewerPrompt) -> str:
    return f"all {len(p.tokens)} tokens" if p.block == 1 else f"{len(p.tokens)} tokens in blocks of {p.block}"


def _encode(pattern: np.ndarray) -> list[list[int]]:
    """Rows in thousandths, each cut after its last non-zero entry (a causal pattern stores its lower triangle)."""
    q = np.rint(np.clip(pattern, 0, 1) * 1000).astype(np.int32)
    out = []
    for row in q:
        nz = np.flatnonzero(row)
        out.append(row[: nz[-1] + 1 if len(nz) else 0].tolist())
    return out


def _fmt(v: float) -> str:
    return f"{v:.3g}" if isinstance(v, (int, float, np.floating)) else str(v)


def _as_array(pattern) -> np.ndarray:
    if hasattr(pattern, "detach"):
        pattern = pattern.detach().float().cpu().numpy()
    a = np.asarray(pattern, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InputError(f"a pattern must be [query key] with as many queries as keys, got shape {list(a.shape)}")
    return a


def attention_viewer(patterns: Mapping[tuple[str, str], object], tokens: Mapping[str, Sequence[str]], *,
                     metrics: Mapping[str, Mapping[str, float]] | None = None, max_tokens: int = MAX_TOKENS,
                     title: str = "Attention patterns") -> AttentionViewer:
    """``patterns[(prompt_id, head_label)]`` is a ``[query key]`` pattern (tensor or array) of prompt
    ``prompt_id`` whose token strings are ``tokens[prompt_id]``. Prompts longer than ``max_tokens`` are
    downsampled by blocks (module docstring)."""
    if max_tokens < 2:
        raise InputError(f"max_tokens must be at least 2, got {max_tokens}")
    by_prompt: dict[str, dict[str, np.ndarray]] = {}
    for (pid, head), pat in patterns.items():
        a = _as_array(pat)
        if pid not in tokens:
            raise InputError(f"no tokens for prompt {pid!r}; pass tokens[{pid!r}]")
        if a.shape[0] != len(tokens[pid]):
            raise InputError(f"pattern for {pid}/{head} has shape {list(a.shape)} but the prompt has {len(tokens[pid])} tokens")
        by_prompt.setdefault(pid, {})[head] = a
    prompts = []
    for pid, pats in by_prompt.items():
        n = len(tokens[pid])
        block = 1 if n <= max_tokens else -(-n // max_tokens)
        prompts.append(ViewerPrompt(pid, list(tokens[pid]), {h: a if block == 1 else block_downsample(a, block)
                                                             for h, a in pats.items()}, block))
    return AttentionViewer(prompts, {k: dict(v) for k, v in (metrics or {}).items()}, title)


def _label(head) -> str:
    from interp.types import HeadId

    return str(head if isinstance(head, HeadId) else HeadId(*head))


def viewer_from_capture(cap, tokenizer, heads: Sequence | None = None, *, prompt_ids: Sequence[str] | None = None,
                        metrics: Mapping[str, Mapping[str, float]] | None = None, max_tokens: int = MAX_TOKENS,
                        title: str = "Attention patterns") -> AttentionViewer:
    """A viewer of the ``pattern`` site of a capture: every captured head by default, or ``heads`` (``HeadId``
    or ``(layer, head)``), one prompt per batch row (padding dropped)."""
    layers = [l for (s, l) in cap.tensors if s == "pattern"]
    if not layers:
        raise InputError("the capture has no 'pattern' site; capture with CaptureSpec(sites=('pattern',), ...)")
    if heads is None:
        n = cap.tensors["pattern", layers[0]].shape[1]
        heads = [(l, h) for l in sorted(layers) for h in (cap.heads or range(n))]
    heads = [(int(h[0]), int(h[1])) if isinstance(h, tuple) else (h.layer, h.head) for h in heads]
    ids = list(prompt_ids) if prompt_ids is not None else [f"prompt {i}" for i in range(cap.tokens.shape[0])]
    if len(ids) != cap.tokens.shape[0]:
        raise InputError(f"{len(ids)} prompt ids for {cap.tokens.shape[0]} captured prompts")
    patterns, tokens = {}, {}
    for row, pid in enumerate(ids):
        real = cap.attention_mask[row].bool()
        tokens[pid] = cap.str_tokens(tokenizer, row)
        for l, h in heads:
            pat = cap.get("pattern", l, h)[row]  # [query_pos key_pos]
            patterns[(pid, _label((l, h)))] = pat[real][:, real]
    return attention_viewer(patterns, tokens, metrics=metrics, max_tokens=max_tokens, title=title)


# (model, tokens [1 pos], heads [(layer, head)], queries) -> {head_label: [len(queries) key_pos]}
AttentionRows = Callable[..., Mapping[str, object]]


def fused_rows(model, tokens, heads, queries) -> dict[str, object]:
    """Rows from the fused path (:func:`interp.attnstats.rows.attention_rows`): the forward stops after the last
    chosen layer and no layer's full ``[head query key]`` pattern is built."""
    from interp.attnstats.rows import attention_rows
    from interp.types import HeadId

    ids = [HeadId(l, h) for l, h in heads]
    rows = attention_rows(model, tokens, heads=ids, queries=list(queries))  # [batch head query key_pos]
    return {str(h): rows[0, i] for i, h in enumerate(ids)}


ATTENTION_ROWS: AttentionRows = fused_rows


def viewer_from_model(model, prompts: Mapping[str, object] | Sequence[str], heads: Sequence, *,
                      metrics: Mapping[str, Mapping[str, float]] | None = None, max_tokens: int = MAX_TOKENS,
                      title: str = "Attention patterns", attention_rows: AttentionRows | None = None) -> AttentionViewer:
    """The patterns of ``heads`` on each prompt (text or ``[1 pos]`` tokens; a mapping names them), one run per
    prompt for all the heads. Prompts up to ``max_tokens`` tokens are captured (the bridge's pattern hook);
    longer ones take their rows from ``attention_rows`` (default :data:`ATTENTION_ROWS`, the fused path), which
    never builds a whole layer's pattern, and are then downsampled by blocks. A model the fused path does not
    cover falls back to the capture, with a warning."""
    from interp.hooks import CaptureSpec, capture

    named = dict(prompts) if isinstance(prompts, Mapping) else {f"prompt {i}": p for i, p in enumerate(prompts)}
    heads = [(int(h[0]), int(h[1])) if isinstance(h, tuple) else (h.layer, h.head) for h in heads]
    if not heads:
        raise InputError("give at least one head to view")
    rows_fn = attention_rows or ATTENTION_ROWS
    layers = tuple(sorted({l for l, _ in heads}))
    patterns, tokens = {}, {}
    for pid, prompt in named.items():
        cap = None
        if rows_fn is None or _n_tokens(model, prompt) <= max_tokens:
            cap = capture(model, prompt, CaptureSpec(sites=("pattern",), layers=layers), return_logits=False)
            tokens[pid] = cap.str_tokens(model.tokenizer)
            for l, h in heads:
                patterns[(pid, _label((l, h)))] = cap.get("pattern", l, h)[0]
        else:
            try:
                tokens[pid], rows = _rows_from(rows_fn, model, prompt, heads)
            except UnsupportedModelError as e:
                import warnings

                warnings.warn(f"attention rows by the fused path are not available for this model ({e}); capturing the "
                              f"full patterns of prompt {pid!r} instead", stacklevel=2)
                rows_fn = None
                tokens[pid], rows = _rows_from(_captured_rows, model, prompt, heads)
            patterns.update({(pid, k): v for k, v in rows.items()})
    return attention_viewer(patterns, tokens, metrics=metrics, max_tokens=max_tokens, title=title)


def _captured_rows(model, tokens, heads, queries) -> dict[str, object]:
    """:data:`AttentionRows` from the bridge's pattern hook (the whole ``[query key]`` pattern of each layer)."""
    from interp.hooks import CaptureSpec, capture

    cap = capture(model, tokens, CaptureSpec(sites=("pattern",), layers=tuple(sorted({l for l, _ in heads}))), return_logits=False)
    return {_label((l, h)): cap.get("pattern", l, h)[0, list(queries)] for l, h in heads}


def _n_tokens(model, prompt) -> int:
    from interp.inputs import to_batch

    return int(to_batch(model, prompt).attention_mask.sum())


def _rows_from(rows_fn: AttentionRows, model, prompt, heads) -> tuple[list[str], dict[str, np.ndarray]]:
    from interp.inputs import to_batch

    batch = to_batch(model, prompt)
    n = int(batch.attention_mask.sum())
    toks = [model.tokenizer.decode([i]) for i in batch.tokens[0, :n].tolist()]
    rows = rows_fn(model, batch.tokens[:, :n], heads, list(range(n)))
    return toks, {k: _as_array(v) for k, v in rows.items()}


def head_metrics(df: pd.DataFrame, heads: Sequence | None = None) -> dict[str, dict[str, float]]:
    """``{"L3H1": {metric: mean value}}`` from a tidy per-head frame (e.g. the atlas's), for the viewer's side
    table; a metric measured under several conditions gets one entry per condition."""
    rows = df[(df["head"] >= 0) & (df["layer"] >= 0)]
    if heads is not None:
        keep = {_label(h) for h in heads}
        rows = rows[[f"L{l}H{h}" in keep for l, h in zip(rows["layer"], rows["head"])]]
    cond = rows["condition"].fillna("").astype(str) if "condition" in rows.columns else pd.Series("", index=rows.index)
    multi = rows.assign(_c=cond).groupby("metric")["_c"].nunique()
    out: dict[str, dict[str, float]] = {}
    for (l, h, metric, c), v in rows.assign(_c=cond).groupby(["layer", "head", "metric", "_c"])["value"].mean().items():
        name = f"{metric} · {c}" if multi[metric] > 1 and c else metric
        out.setdefault(f"L{l}H{h}", {})[name] = float(v)
    return out


_CSS = """
.interp-viewer{font-family:system-ui,sans-serif;font-size:13px;border:1px solid #ddd;padding:8px;border-radius:6px}
.interp-viewer .iv-controls{margin-bottom:6px}.interp-viewer .iv-controls label{margin-right:12px}
.interp-viewer .iv-mode{color:#555;font-style:italic}
.interp-viewer .iv-main{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.interp-viewer .iv-side{min-width:220px}.interp-viewer .iv-metrics td{padding:1px 6px;border:1px solid #ddd}
.interp-viewer .iv-sw{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:4px}
.interp-viewer .iv-sw-row{background:rgba(31,119,180,.8)}.interp-viewer .iv-sw-col{background:rgba(255,127,14,.9)}
.interp-viewer .iv-tokens{line-height:2.1;margin-top:8px;max-height:320px;overflow-y:auto}
.interp-viewer .iv-tok{display:inline-block;padding:1px 2px;margin:0 1px;border-bottom:4px solid transparent;cursor:default;white-space:pre;
 font-family:ui-monospace,monospace;font-size:12px}
.interp-viewer .iv-tok.iv-hover{outline:2px solid #222}
"""

# One init function per page (defined by the first viewer); each viewer calls it with its id once its plot exists.
_JS = r"""
window.interpAttentionViewer = window.interpAttentionViewer || function (uid) {
  if (document.readyState === 'loading') {  // a file still being parsed: the token strip is not there yet
    document.addEventListener('DOMContentLoaded', function () { window.interpAttentionViewer(uid); });
    return;
  }
  var root = document.getElementById(uid);
  if (!root || root.dataset.ready) return;
  root.dataset.ready = '1';
  var D = JSON.parse(root.querySelector('.iv-data').textContent);
  var gd = document.getElementById(uid + '-plot');
  var strip = root.querySelector('.iv-tokens'), pSel = root.querySelector('.iv-prompt'), hSel = root.querySelector('.iv-head');
  var state = {p: 0, h: D.heads[0], hover: -1};
  function rows() { return D.prompts[state.p].rows[state.h]; }
  function weight(r, q, k) { var row = r[q]; return k < row.length ? row[k] / 1000 : 0; }
  function matrix() {
    var r = rows(), n = D.prompts[state.p].labels.length, z = [];
    for (var q = 0; q < n; q++) { var row = []; for (var k = 0; k < n; k++) row.push(weight(r, q, k)); z.push(row); }
    return z;
  }
  function drawTokens() {
    var P = D.prompts[state.p];
    strip.innerHTML = '';
    P.labels.forEach(function (lab, i) {
      var s = document.createElement('span');
      s.className = 'iv-tok'; s.dataset.i = i;
      s.textContent = P.block > 1 ? lab : P.texts[i];
      s.title = P.texts[i];
      s.addEventListener('mouseenter', function () { highlight(i); });
      strip.appendChild(s);
    });
  }
  function highlight(i) {
    var r = rows(), spans = strip.children;
    state.hover = i;
    for (var j = 0; j < spans.length; j++) {
      var a = weight(r, i, j), b = weight(r, j, i);
      spans[j].style.background = a > 0 ? 'rgba(31,119,180,' + Math.sqrt(a).toFixed(3) + ')' : '';
      spans[j].style.borderBottomColor = b > 0 ? 'rgba(255,127,14,' + Math.sqrt(b).toFixed(3) + ')' : 'transparent';
      spans[j].dataset.row = a.toFixed(3); spans[j].dataset.col = b.toFixed(3);
      spans[j].classList.toggle('iv-hover', j === i);
    }
    var n = spans.length, line = {color: '#ff7f0e', width: 2};
    Plotly.relayout(gd, {shapes: [
      {type: 'rect', xref: 'x', yref: 'y', x0: -0.5, x1: n - 0.5, y0: i - 0.5, y1: i + 0.5, line: {color: '#1f77b4', width: 2}},
      {type: 'rect', xref: 'x', yref: 'y', x0: i - 0.5, x1: i + 0.5, y0: -0.5, y1: n - 0.5, line: line}]});
  }
  function drawMetrics() {
    var t = root.querySelector('.iv-metrics'), m = D.metrics[state.h] || [];
    t.innerHTML = '<tr><th colspan=2>' + state.h + '</th></tr>' + (m.length ? m.map(function (kv) {
      return '<tr><td>' + kv[0] + '</td><td>' + kv[1] + '</td></tr>'; }).join('') : '<tr><td colspan=2>no metrics</td></tr>');
  }
  function redraw() {
    var P = D.prompts[state.p], n = P.labels.length, custom = [];
    for (var q = 0; q < n; q++) { var c = []; for (var k = 0; k < n; k++) c.push(P.labels[q] + ' → ' + P.labels[k]); custom.push(c); }
    var ticks = n <= 64 ? {tickmode: 'array', tickvals: P.labels.map(function (_, i) { return i; }), ticktext: P.labels} : {tickmode: 'auto'};
    Plotly.update(gd, {z: [matrix()], customdata: [custom]},
                  {title: {text: state.h + ' · ' + P.id}, shapes: [], 'xaxis.tickmode': ticks.tickmode, 'xaxis.tickvals': ticks.tickvals,
                   'xaxis.ticktext': ticks.ticktext, 'yaxis.tickmode': ticks.tickmode, 'yaxis.tickvals': ticks.tickvals,
                   'yaxis.ticktext': ticks.ticktext});
    drawTokens(); drawMetrics();
    root.querySelector('.iv-mode').textContent = P.block > 1
      ? P.n_tokens + ' tokens downsampled to ' + n + ' blocks of ' + P.block + ' tokens (attention mass between blocks)'
      : 'all ' + P.n_tokens + ' tokens';
  }
  pSel.addEventListener('change', function () { state.p = +pSel.value; redraw(); });
  hSel.addEventListener('change', function () { state.h = D.heads[+hSel.value]; redraw(); if (state.hover >= 0) highlight(state.hover); });
  gd.on('plotly_hover', function (ev) { if (ev.points && ev.points.length) highlight(ev.points[0].y); });
  redraw();
};
"""

__all__ = ["AttentionViewer", "ViewerPrompt", "attention_viewer", "viewer_from_capture", "viewer_from_model",
           "block_downsample", "head_metrics", "fused_rows", "ATTENTION_ROWS", "MAX_TOKENS"]
