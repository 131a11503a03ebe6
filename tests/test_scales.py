"""Signed quantities (patching effects, logit differences, AtP estimates) are drawn on a diverging scale centred at
0 by every heatmap builder the reports use; other metrics keep a sequential scale."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from interp.plot.heads import head_heatmap
from interp.plot.patching import position_head_heatmap
from interp.plot.results import results_sections
from interp.plot.scales import DIVERGING, colour_axis, is_signed


def _frame(metric: str, values, position: bool = False) -> pd.DataFrame:
    n = len(values)
    df = pd.DataFrame({"model": "m", "task": "ioi", "layer": np.arange(n) // 2, "head": np.arange(n) % 2, "metric": metric,
                       "value": np.asarray(values, dtype=float)})
    return df.assign(position=np.arange(n) % 3) if position else df


def _centred(trace) -> bool:
    scale = go.Figure(go.Heatmap(colorscale=DIVERGING)).data[0].colorscale
    return trace.colorscale == scale and trace.zmin == -trace.zmax and trace.zmax > 0


@pytest.mark.parametrize("metric", ["patch:z", "atp:z", "atp*:q", "logit_diff", "clean_logit_diff", "effect", "logit_diff[ioi]"])
def test_signed_names_are_signed_even_when_every_value_is_positive(metric):
    assert is_signed(metric, [0.1, 0.5])
    assert _centred(head_heatmap(_frame(metric, [0.1, 0.2, 0.5, 0.05]), metric).data[0])
    assert _centred(position_head_heatmap(_frame(metric, [0.1, 0.2, 0.5, 0.05], position=True), metric).data[0])


def test_values_that_straddle_zero_are_signed_and_the_scale_is_symmetric():
    axis = colour_axis("copy_score", [-0.2, 0.1, 1.0])
    assert axis["colorscale"] == DIVERGING and (axis["zmin"], axis["zmax"]) == (-1.0, 1.0)
    assert not is_signed("entropy", [0.1, 2.0]) and not is_signed("induction") and not is_signed("duplicate_token")
    seq = head_heatmap(_frame("entropy", [0.1, 0.2, 0.5, 1.5]), "entropy").data[0]
    assert not _centred(seq) and seq.zmin == 0.1 and seq.zmax == 1.5
    reds = head_heatmap(_frame("retrieval_score", [0.0, 0.3]), "retrieval_score", colorscale="Reds").data[0]
    assert reds.colorscale == go.Figure(go.Heatmap(colorscale="Reds")).data[0].colorscale


def test_every_heatmap_of_a_results_report_centres_signed_metrics():
    df = pd.concat([_frame("atp:z", [0.1, 0.4, 0.2, 0.3]), _frame("logit_diff", [-0.2, 1.0, 0.5, 0.3]),
                    _frame("entropy", [0.5, 1.0, 2.0, 1.5])], ignore_index=True)
    seen = {}
    for metric, item in results_sections(df):
        figs = item if isinstance(item, list) else [item]
        for fig in figs:
            if isinstance(fig, go.Figure):
                for t in fig.data:
                    if isinstance(t, go.Heatmap):
                        seen.setdefault(metric, []).append(_centred(t))
    assert seen and all(all(v) for k, v in seen.items() if k != "entropy") and not any(seen["entropy"]), seen
