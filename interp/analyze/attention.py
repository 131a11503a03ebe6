"""Per-head attention summaries on a text, from the fused statistics path (no n×n tensor).

Metrics are means over every real query except each row's first token (which can only see itself):
``entropy`` (nats), ``normalized_entropy`` (entropy / log of visible keys), ``max_weight`` and
``first_token_mass`` (attention on each row's first real token, the sink position).
"""
from __future__ import annotations

import pandas as pd

from interp.attnstats import AttnStats, attention_stats
from interp.inputs import Inputs


def attention_summary(model, inputs: Inputs, *, task: str = "attention", condition: str = "prose",
                      backend: str = "auto") -> pd.DataFrame:
    return summary_frame(attention_stats(model, inputs, segments={"first": "first"}, backend=backend), task, condition)


def summary_frame(st: AttnStats, task: str = "attention", condition: str = "prose") -> pd.DataFrame:
    """The summary metrics of an ``AttnStats`` whose segments include ``"first"``."""
    df = st.to_frame(task=task, condition=condition)
    df["metric"] = df["metric"].replace({"mass:first": "first_token_mass"})
    return df
