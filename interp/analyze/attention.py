"""Per-head attention summaries on a text: mean entropy (nats) and first-token (sink) mass.

Both are means over every real query position of every prompt. The first query attends only to itself,
so its entropy is 0 and its first-token mass is 1; position 0 is excluded from both means.
"""
from __future__ import annotations

import pandas as pd
import torch

from interp.hooks import CaptureSpec, capture
from interp.inputs import Inputs
from interp.models import model_name
from interp.schema import make_frame


def attention_summary(model, inputs: Inputs, *, task: str = "attention", condition: str = "prose") -> pd.DataFrame:
    cap = capture(model, inputs, CaptureSpec(sites=("pattern",)), return_logits=False)
    valid = cap.attention_mask.bool()  # [batch pos]
    valid[:, 0] = False
    rows = []
    for layer in cap.layers:
        a = cap["pattern", layer].float()  # [batch head_index query_pos key_pos]
        ent = -(a * a.clamp_min(1e-30).log()).sum(-1)  # [batch head_index query_pos]
        first = a[..., 0]
        w = valid[:, None, :].float()
        for metric, t in (("entropy", ent), ("first_token_mass", first)):
            per_head = (t * w).sum((0, 2)) / w.sum((0, 2)).clamp_min(1)
            rows += [{"layer": layer, "head": h, "metric": metric, "value": float(v), "condition": condition}
                     for h, v in enumerate(per_head.tolist())]
    return make_frame([{**r, "model": model_name(model), "task": task} for r in rows])
