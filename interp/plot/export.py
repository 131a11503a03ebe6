"""Self-contained HTML reports: plotly.js is embedded once, so the file works offline and can be shared."""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import plotly.graph_objects as go

from interp.io import write_text

Section = tuple[str, "go.Figure | str | Grid | HtmlPart"]


class Grid(list):
    """Items laid out side by side (wrapping) in one section: ``Grid([fig, fig, html_table, ...])``."""


@runtime_checkable
class HtmlPart(Protocol):
    """Anything besides a figure that draws with plotly (e.g. the attention viewer): it renders itself,
    embedding plotly.js only when asked to."""

    def to_html(self, include_plotlyjs: bool) -> str: ...


def render_report(title: str, sections: Sequence[Section], *, intro: str = "") -> str:
    """One HTML page; plotly.js is embedded with the first figure only, however many follow."""
    parts, state = [], {"first": True}

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
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "section{margin-bottom:2em}.grid{display:flex;flex-wrap:wrap;gap:1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{intro}\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def write_report(path: str | Path, title: str, sections: Sequence[Section], *, intro: str = "") -> Path:
    """Write the report atomically and return its path."""
    return write_text(path, render_report(title, sections, intro=intro))


def use_notebook_renderer() -> str:
    """Show figures in notebooks with an HTML fallback: each output carries plotly's JSON (interactive in
    JupyterLab and VS Code) *and* a self-contained ``text/html`` copy with plotly.js inlined, which classic
    Jupyter, nbviewer and exported HTML display. (GitHub's static notebook preview runs no JavaScript; use the
    job's ``report.html`` to share figures there.) Returns the renderer name."""
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook"
    return pio.renderers.default
