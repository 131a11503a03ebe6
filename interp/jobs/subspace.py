"""The ``interp subspace`` and ``interp weights`` jobs.

``subspace``: IOI name-position pairs (ABB/BAB, :func:`interp.tasks.ioi.position_pairs`) → DAS at one site and
layer (END token) → the illusion report (:func:`interp.analyze.subspace.subspace_report`) on the held-out pairs
whose base and source orders differ (ABB→BAB and BAB→ABB, the paper's test) → ``subspace.parquet`` (tidy),
``report.html`` (the table and the histograms) and ``run.json``. The trained basis, its curve and the report are
parts under ``.parts/<config hash>/`` (with the dormancy projections), so an interrupted run resumes without
training again, and a finished one rebuilds its outputs without running the model.

``weights``: composition scores of every head pair (q, k, v) and the per-head OV copying / QK same-token
scores → ``weights.parquet`` (tidy), ``report.html`` (composition between layers, top pairs) and ``run.json``;
each kind is a part.
"""
from __future__ import annotations

import html
import time
from pathlib import Path

import pandas as pd

from interp.io import write_parquet
from interp.jobs.config import resolved
from interp.jobs.outdir import claim
from interp.jobs.runinfo import write_run
from interp.jobs.subspace_config import SubspaceConfig, WeightsConfig
from interp.models import model_name, model_source
from interp.store import cached


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0)


def run_subspace(model, out: str | Path, config: SubspaceConfig, *, progress: bool = True) -> dict[str, Path]:
    import torch

    from interp.analyze.subspace import Subspace, das, subspace_report
    from interp.plot.export import write_report
    from interp.plot.subspace import subspace_figure
    from interp.store import ResumableTable
    from interp.tasks.ioi import position_pairs
    from interp.types import HeadId

    od = claim(out, "subspace", resolved(model_name(model), model_source(model), config))
    t0 = time.perf_counter()
    store = ResumableTable(od.parts_dir)
    pairs = position_pairs(model, config.pairs, seed=config.seed)
    heads = [HeadId.parse(h) for h in config.split_heads] or None
    layer = config.layer_for(model.cfg.n_layers)

    ix_cache: list = []

    def interchanger():  # one no-grad prefix for training and the report; none at all when both are parts
        from interp.analyze.subspace import Interchanger

        if not ix_cache:
            ix_cache.append(Interchanger(model, pairs.base, pairs.source, config.site, layer, (-1,)))
        return ix_cache[0]

    def train() -> pd.DataFrame:
        sub = das(model, pairs.base, pairs.source, config.site, layer, -1, pairs.target, dim=config.dim,
                  epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, lr_end=config.lr_end,
                  test_fraction=config.test_fraction, seed=config.seed, boundless=config.boundless,
                  candidates=pairs.answers, interchanger=interchanger(), progress=progress)
        b = pd.DataFrame(sub.basis.numpy(), columns=[f"b{i}" for i in range(sub.dim)])
        return b.assign(kind="basis", accuracy=sub.accuracy, n_test=sub.n_test, test=",".join(map(str, sub.test)),
                        curve=",".join(f"{x:.5g}" for x in sub.curve["loss"]))

    t = time.perf_counter()
    part = cached(store, "das", train)
    t_das = time.perf_counter() - t
    basis = torch.tensor(part[[c for c in part.columns if c.startswith("b") and c[1:].isdigit()]].to_numpy(), dtype=torch.float32)
    test = [int(i) for i in str(part["test"].iloc[0]).split(",") if i]
    sub = Subspace(basis, config.site, layer, (-1,), model=model_name(model), test=tuple(test))
    rows = [i for i in test if bool(pairs.flips[i])]
    reports: list = []

    def report() -> pd.DataFrame:
        reports.append(subspace_report(model, sub, pairs.base, pairs.source, pairs.answers, pairs.target, heads=heads,
                                       weight=config.weight, classes=pairs.base_order, rows=rows, task="ioi",
                                       interchanger=interchanger()))
        return reports[0].frame

    df = cached(store, "report", report)
    proj = cached(store, "projections", lambda: reports[0].projections if reports else
                  subspace_report(model, sub, pairs.base, pairs.source, pairs.answers, pairs.target, heads=heads, weight=config.weight,
                                  classes=pairs.base_order, rows=rows, task="ioi", interchanger=interchanger()).projections)
    fig = subspace_figure(df, proj)
    curve = [float(x) for x in str(part["curve"].iloc[0]).split(",") if x]
    paths = {"subspace": write_parquet(od.path / "subspace.parquet", df)}
    verdict = bool(df["illusion_suspected"].iloc[0])
    table = df[["condition", "metric", "value"] + [c for c in ("n", "ci_low", "ci_high", "baseline") if c in df]]
    intro = (f"<p>IOI name position (ABB vs BAB) at END, {config.pairs} pairs, DAS dim {config.dim} at "
             f"{html.escape(config.site)} layer {layer}; held-out interchange accuracy (all held-out pairs) "
             f"{float(part['accuracy'].iloc[0]):.3f} (n = {int(part['n_test'].iloc[0])}). The table is on the held-out pairs "
             f"whose orders differ (n = {len(rows)}). illusion_suspected = <b>{verdict}</b>.</p>")
    paths["report"] = write_report(od.path / "report.html", f"interp subspace — {model_name(model)}",
                                   [("Effects and dormancy", fig), ("Table", _table(table))], intro=intro)
    paths["run"] = write_run(od, model, inputs={"pairs": len(pairs), "base": pairs.base[:2], "source": pairs.source[:2]},
                             timings={"total_s": time.perf_counter() - t0, "das_s": t_das},
                             summary={"illusion_suspected": verdict, "held_out_accuracy": float(part["accuracy"].iloc[0]),
                                      "loss_first": curve[0] if curve else None, "loss_last": curve[-1] if curve else None})
    return paths


def run_weights(model, out: str | Path, config: WeightsConfig) -> dict[str, Path]:
    from interp.analyze.weights import composition_scores, weight_scores
    from interp.plot.export import write_report
    from interp.plot.heads import head_heatmap
    from interp.plot.weights import layer_composition_heatmap
    from interp.store import ResumableTable

    od = claim(out, "weights", resolved(model_name(model), model_source(model), config))
    t0 = time.perf_counter()
    store = ResumableTable(od.parts_dir)
    frames = [cached(store, f"composition:{k}", lambda k=k: composition_scores(model, k)) for k in config.kinds]
    frames.append(cached(store, "scores", lambda: weight_scores(model, n_tokens=config.n_tokens, seed=config.seed)))
    df = pd.concat(frames, ignore_index=True)
    from interp.schema import make_frame

    df = make_frame(df)
    paths = {"weights": write_parquet(od.path / "weights.parquet", df)}
    sections = []
    for k in config.kinds:
        comp = df[df["metric"] == f"{k}_composition"]
        sections.append((f"{k.upper()}-composition between layers (max over head pairs)", layer_composition_heatmap(comp, f"{k}_composition")))
        top = comp.nlargest(config.top, "value")
        top = top.assign(sender=[f"L{int(a)}H{int(b)}" for a, b in zip(top["sender_layer"], top["sender_head"])],
                         receiver=[f"L{int(a)}H{int(b)}" for a, b in zip(top["layer"], top["head"])])[["sender", "receiver", "value"]]
        sections.append((f"Top {config.top} {k.upper()}-composition pairs", _table(top)))
    for metric in ("ov_copying", "qk_same_token", "qk_prev_token"):
        if (df["metric"] == metric).any():
            sections.append((metric, head_heatmap(df, metric, title=metric)))
    intro = ("<p>Composition scores ‖L·R‖_F/(‖L‖_F‖R‖_F) of every sender head (OV) and later receiver head (Q: W_Q W_Kᵀ, "
             "K: W_K W_Qᵀ, V: W_V W_O), Elhage et al. 2021, on the weights as loaded (norm scales not folded).</p>")
    paths["report"] = write_report(od.path / "report.html", f"interp weights — {model_name(model)}", sections, intro=intro)
    paths["run"] = write_run(od, model, inputs={"kinds": list(config.kinds)}, timings={"total_s": time.perf_counter() - t0})
    return paths


__all__ = ["run_subspace", "run_weights"]
