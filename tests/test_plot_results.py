"""``interp plot``: a report for any tidy table, and one line + exit 2 for files that are not one."""
import json
import re

import numpy as np
import pandas as pd
import pytest

from interp.cli import main
from interp.plot.results import condition_comparison, facet_columns, metric_heatmap, top_heads_table
from interp.schema import make_frame


def _frame(models=("m1", "m2"), conditions=("zero", "mean"), n_layers=3, n_heads=4):
    rng = np.random.default_rng(0)
    rows = [dict(model=m, task="ioi", layer=l, head=h, metric="logit_diff", value=float(rng.normal()), condition=c, seed=0)
            for m in models for c in conditions for l in range(n_layers) for h in range(n_heads)]
    rows += [dict(model=m, task="ioi", layer=-1, head=-1, metric="clean_logit_diff", value=3.0 + i, condition="none", seed=0)
             for i, m in enumerate(models)]
    return make_frame(rows)


def test_facets_are_the_columns_that_vary():
    assert facet_columns(_frame()) == ["model", "condition"]
    one = _frame(models=("m1",), conditions=("zero",))
    assert facet_columns(one) == ["condition"]  # the clean row's condition "none"
    assert facet_columns(one[one.metric == "logit_diff"]) == []


def test_heatmap_has_one_panel_per_facet_plus_the_mean_on_one_colour_range():
    df = _frame()
    fig = metric_heatmap(df, "logit_diff")
    labels = [b["label"] for b in fig.layout.updatemenus[0].buttons]
    assert labels[0].startswith("all facets") and len(labels) == 1 + 4
    assert "model=m2 · condition=zero" in labels
    assert len({(t.zmin, t.zmax) for t in fig.data}) == 1
    # the panel of one facet is that facet's layer × head grid
    i = labels.index("model=m1 · condition=mean")
    sub = df[(df.model == "m1") & (df.condition == "mean") & (df.metric == "logit_diff")]
    want = sub.pivot_table(index="layer", columns="head", values="value").values
    np.testing.assert_allclose(np.asarray(fig.data[i].z, dtype=float), want)


def test_heatmap_of_a_few_heads_keeps_a_finite_colour_range():
    df = _frame()
    few = df[(df.metric == "logit_diff") & (df["head"] == df["layer"])]  # one head per layer: the grid is mostly NaN
    fig = metric_heatmap(few, "logit_diff")
    assert np.isfinite(fig.data[0].zmin) and np.isfinite(fig.data[0].zmax) and fig.data[0].zmin < fig.data[0].zmax


def test_comparison_and_table():
    df = _frame()
    lines = condition_comparison(df, "logit_diff")
    assert len(lines.data) == 4 and list(lines.data[0].x) == [0, 1, 2]
    bars = condition_comparison(df, "clean_logit_diff")  # no layer axis: one bar per facet
    assert list(bars.data[0].y) == [3.0, 4.0]
    table = top_heads_table(df, "logit_diff", k=2)
    sub = df[(df.model == "m1") & (df.condition == "mean") & (df.metric == "logit_diff")].nlargest(1, "value").iloc[0]
    assert f"L{sub['layer']}H{sub['head']}&nbsp;" in table.split("model=m1 · condition=mean")[1].split("</tr>")[0]


def test_cli_plot_writes_one_self_contained_report(tmp_path, capsys):
    src = tmp_path / "results.parquet"
    _frame().to_parquet(src)
    main(["--self-contained", "plot", str(src), "--out", str(tmp_path / "sub" / "report.html"), "--top", "3"])
    page = (tmp_path / "sub" / "report.html").read_text()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["report.html"]  # one file that travels alone
    assert page.count("Plotly.newPlot") == 2 + 1  # logit_diff: heatmap + comparison; clean_logit_diff: comparison
    assert len(re.findall(r"plotly\.js v\d", page)) == 1  # plotly.js embedded once
    assert not re.search(r"<script[^>]+src=", page)  # nothing loaded from outside the file
    assert "<h2>logit_diff</h2>" in page and "<h2>clean_logit_diff</h2>" in page
    assert "<title>Results · results.parquet</title>" in page and "<h1>Results · results.parquet</h1>" in page


@pytest.mark.parametrize("case, message", [
    ("not_tidy", "lacks the tidy columns layer, head"),
    ("corrupt", "is not a readable parquet file"),
    ("missing", "does not exist"),
    ("empty", "holds no rows"),
    ("text_values", "column 'value' must be numeric"),
])
def test_cli_plot_bad_input_one_line_exit_2(case, message, tmp_path, capsys):
    path = tmp_path / f"{case}.parquet"
    if case == "not_tidy":
        pd.DataFrame({"model": ["m"], "task": ["t"], "metric": ["x"], "value": [1.0]}).to_parquet(path)
    elif case == "corrupt":
        path.write_bytes(b"PAR1 this is not parquet")
    elif case == "empty":
        _frame().iloc[0:0].to_parquet(path)
    elif case == "text_values":
        _frame().assign(value="high").to_parquet(path)
    with pytest.raises(SystemExit) as e:
        main(["plot", str(path), "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "r.html").exists()


def test_cli_plot_refuses_a_directory_as_out(tmp_path, capsys):
    src = tmp_path / "results.parquet"
    _frame().to_parquet(src)
    with pytest.raises(SystemExit) as e:
        main(["plot", str(src), "--out", str(tmp_path)])
    assert e.value.code == 2 and "is a directory" in capsys.readouterr().err


def test_cli_plot_by_default_loads_the_folders_plotly_js(tmp_path, capsys):
    """Without --self-contained (also right after a --self-contained call in this process) the report loads
    plotly.min.js from its folder, written there once however many reports share it."""
    src = tmp_path / "results.parquet"
    _frame().to_parquet(src)
    main(["--self-contained", "plot", str(src), "--out", str(tmp_path / "alone.html")])
    for name in ("a.html", "b.html"):
        main(["plot", str(src), "--out", str(tmp_path / "site" / name)])
        page = (tmp_path / "site" / name).read_text()
        assert "plotly.js v" not in page and page.count("<script src='plotly.min.js'") == 1
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == ["a.html", "b.html", "plotly.min.js"]
    assert "plotly.js v" in (tmp_path / "alone.html").read_text()
