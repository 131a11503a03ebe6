"""HTML reports that open offline. By default a report loads ``plotly.min.js`` from its run folder's root by a
relative path, written there once however many reports the folder holds (a sweep's unit reports included), so a
folder of reports is one small site. ``self_contained=True`` (``interp --self-contained ...``) embeds plotly.js in
the file instead, for a single file that must travel alone."""
from __future__ import annotations

import contextlib
import html
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Protocol, runtime_checkable

import plotly.graph_objects as go

from interp.io import write_text

Section = tuple[str, "go.Figure | str | Grid | HtmlPart"]
PLOTLY_JS = "plotly.min.js"

# where reports written in this context load plotly.js from (a path relative to the report), or None: beside the report
_PLOTLY_SRC: ContextVar[str | None] = ContextVar("interp_plotly_src", default=None)
_SELF_CONTAINED: ContextVar[bool] = ContextVar("interp_self_contained", default=False)


@contextlib.contextmanager
def plotly_js_at(src: str) -> Iterator[None]:
    """Reports written inside load plotly.js from ``src`` (relative to the report, e.g. ``"../../plotly.min.js"``
    for a sweep unit's report) and write no copy of their own; whoever owns that root writes it
    (:func:`write_plotly_js`)."""
    token = _PLOTLY_SRC.set(src)
    try:
        yield
    finally:
        _PLOTLY_SRC.reset(token)


def set_self_contained(on: bool = True) -> None:
    """Make every report written from now on in this context embed plotly.js (the CLI's ``--self-contained``)."""
    _SELF_CONTAINED.set(on)


def write_plotly_js(folder: str | Path) -> Path:
    """``folder/plotly.min.js`` (plotly's own bundle, the version the figures were made for), written atomically
    unless an identical copy is already there."""
    from plotly.offline import get_plotlyjs

    path = Path(folder) / PLOTLY_JS
    js = get_plotlyjs()
    if not (path.exists() and path.stat().st_size == len(js.encode())):
        write_text(path, js)
    return path


class Grid(list):
    """Items laid out side by side (wrapping) in one section: ``Grid([fig, fig, html_table, ...])``."""


@runtime_checkable
class HtmlPart(Protocol):
    """Anything besides a figure that draws with plotly (e.g. the attention viewer): it renders itself,
    embedding plotly.js only when asked to."""

    def to_html(self, include_plotlyjs: bool) -> str: ...


def render_report(title: str, sections: Sequence[Section], *, intro: str = "", plotly_src: str | None = None) -> str:
    """One HTML page. ``plotly_src=None``: plotly.js is embedded with the first figure only, however many follow;
    otherwise the page loads it from ``plotly_src`` (a relative path) and embeds none."""
    parts, state = [], {"first": plotly_src is None}

    def body(item) -> str:
        if isinstance(item, str):
            return item
        if isinstance(item, Grid):
            return "<div class='grid'>" + "".join(f"<div>{body(f)}</div>" for f in item) + "</div>"
        if isinstance(item, go.Figure):
            out = item.to_html(full_html=False, include_plotlyjs=state["first"], include_mathjax=False,
                               config={"displaylogo": False})
        elif isinstance(item, HtmlPart):
            out = item.to_html(include_plotlyjs=state["first"])
        else:
            raise TypeError(f"a report section holds a figure, HTML text, a Grid or an HtmlPart, not {type(item).__name__}")
        state["first"] = False
        return out

    for heading, item in sections:
        h2 = f"<h2>{html.escape(heading)}</h2>\n" if heading else ""
        parts.append(f"<section>{h2}{body(item)}\n</section>")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        + (f"<script src='{html.escape(plotly_src)}' charset='utf-8'></script>" if plotly_src else "") +
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "section{margin-bottom:2em}.grid{display:flex;flex-wrap:wrap;gap:1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{intro}\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def write_report(path: str | Path, title: str, sections: Sequence[Section], *, intro: str = "",
                 self_contained: bool | None = None) -> Path:
    """Write the report atomically and return its path. It loads ``plotly.min.js`` from beside it (written there
    once) or from where :func:`plotly_js_at` says; ``self_contained`` (default: the CLI's ``--self-contained``)
    embeds plotly.js instead."""
    path = Path(path)
    if self_contained if self_contained is not None else _SELF_CONTAINED.get():
        src = None
    else:
        src = _PLOTLY_SRC.get()
        if src is None:
            write_plotly_js(path.parent)
            src = PLOTLY_JS
    return write_text(path, render_report(title, sections, intro=intro, plotly_src=src))


def use_notebook_renderer() -> str:
    """Show figures in notebooks with an HTML fallback: each output carries plotly's JSON (interactive in
    JupyterLab and VS Code) *and* a self-contained ``text/html`` copy with plotly.js inlined, which classic
    Jupyter, nbviewer and exported HTML display. (GitHub's static notebook preview runs no JavaScript; use the
    job's ``report.html`` to share figures there.) Returns the renderer name."""
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook"
    return pio.renderers.default
