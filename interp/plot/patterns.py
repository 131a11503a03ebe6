"""An attention-pattern viewer with token labels and a dropdown over (prompt, head)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
import torch

from interp.errors import InputError


def pattern_viewer(patterns: Mapping[tuple[str, str], torch.Tensor], tokens: Mapping[str, Sequence[str]],
                   *, title: str = "Attention pattern") -> go.Figure:
    """``patterns[(prompt_id, head_label)]`` is a ``[query_pos key_pos]`` pattern of prompt ``prompt_id``,
    whose token strings are ``tokens[prompt_id]``. One trace per entry; a dropdown picks which is shown."""
    if not patterns:
        raise InputError("pattern_viewer needs at least one pattern")
    fig = go.Figure()
    labels = []
    for i, ((pid, head), pat) in enumerate(patterns.items()):
        toks = [f"{j}:{t!r}"[:24] for j, t in enumerate(tokens[pid])]
        if pat.shape != (len(toks), len(toks)):
            raise InputError(f"pattern for {pid}/{head} has shape {tuple(pat.shape)} but the prompt has {len(toks)} tokens")
        fig.add_trace(go.Heatmap(z=pat.float().numpy(), x=toks, y=toks, colorscale="Blues", zmin=0, zmax=1,
                                 visible=i == 0, name=f"{head} · {pid}",
                                 hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"))
        labels.append(f"{head} · {pid}")
    buttons = [{"label": lab, "method": "update",
                "args": [{"visible": [j == i for j in range(len(labels))]}, {"title": f"{title}: {lab}"}]}
               for i, lab in enumerate(labels)]
    fig.update_layout(title=f"{title}: {labels[0]}", updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.15, "xanchor": "right"}],
                      xaxis={"title": "key", "tickfont": {"size": 8}}, yaxis={"title": "query", "autorange": "reversed", "tickfont": {"size": 8}},
                      height=720, width=760)
    return fig
