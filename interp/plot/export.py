"""Self-contained HTML reports: plotly.js is embedded once, so the file works offline and can be shared."""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

from interp.io import write_text

Section = tuple[str, "go.Figure | str | Grid"]


class Grid(list):
    """Figures laid out side by side (wrapping) in one section: ``Grid([fig, fig, ...])``."""


def render_report(title: str, sections: Sequence[Section], *, intro: str = "") -> str:
    """One HTML page; plotly.js is embedded with the first figure only, however many follow."""
    parts, state = [], {"first": True}

    def figure(fig: go.Figure) -> str:
        out = fig.to_html(full_html=False, include_plotlyjs=state["first"], include_mathjax=False,
                          config={"displaylogo": False})
        state["first"] = False
        return out

    for heading, body in sections:
        if isinstance(body, Grid):
            body = "<div class='grid'>" + "".join(f"<div>{figure(f)}</div>" for f in body) + "</div>"
        elif isinstance(body, go.Figure):
            body = figure(body)
        parts.append(f"<section><h2>{html.escape(heading)}</h2>\n{body}\n</section>")
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
