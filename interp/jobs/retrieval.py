"""The ``interp retrieval`` job: retrieval-head detection, the masking test, and the report.

Writes ``scores.parquet`` (tidy: per-head ``retrieval_score`` plus per-sample ``copy_paste`` rows),
``niah.parquet`` (tidy ``niah_recall`` per sample and condition), ``samples.parquet`` (responses),
``report.html`` and ``run.json``. Every decoded sample is stored as it finishes under ``.parts/``, so an
interrupted run resumes where it stopped without losing or duplicating rows.
"""
from __future__ import annotations

import html
import time
from pathlib import Path

import pandas as pd

from interp.analyze.retrieval import (RETRIEVAL_THRESHOLD, answer_rows, masking_grid, niah_frame, retrieval_scores,
                                      run_niah, top_heads)
from interp.errors import UnsupportedModelError
from interp.io import write_parquet
from interp.jobs.config import RetrievalConfig, resolved
from interp.jobs.outdir import claim
from interp.jobs.runinfo import write_run
from interp.models import model_name, model_source
from interp.plot import Grid, head_heatmap, write_report
from interp.plot.niah import answer_row_view, masking_curve, niah_grid, ranked_table
from interp.store import ResumableTable
from interp.tasks.sources import load_needles, read_text_file


def run_retrieval(model, out: str | Path, config: RetrievalConfig = RetrievalConfig(), *, progress: bool = True) -> dict[str, Path]:
    """Detection, then the masking grid; every decoded sample is a part under ``.parts/<config hash>/``."""
    od = claim(out, "retrieval", resolved(model_name(model), model_source(model), config))
    needles = load_needles(config.needles)[: config.n_needles]
    haystack = read_text_file(config.haystack, "--haystack") if config.haystack else None
    store = ResumableTable(od.parts_dir)
    t0 = time.perf_counter()
    niah_cfg = config.niah
    base = run_niah(model, needles, niah_cfg, store=store, progress=progress, haystack=haystack)
    scores = retrieval_scores(model, base)
    masking = (config.mask_top or config.mask_random) and not scores.empty
    grid = masking_grid(model, needles, niah_cfg, scores, top_k=config.mask_top, random_k=config.mask_random,
                        draws=config.draws, seed=config.seed, baseline=base, store=store, progress=progress,
                        haystack=haystack) if masking else base
    niah = niah_frame(model, grid)
    out = od.path
    paths = {"scores": write_parquet(out / "scores.parquet", scores),
             "niah": write_parquet(out / "niah.parquet", niah),
             "samples": write_parquet(out / "samples.parquet", grid.drop(columns=["scores"]))}
    sections = _sections(scores, niah, grid) + _answer_section(model, needles, base, scores, haystack)
    paths["report"] = write_report(out / "report.html", f"Retrieval heads · {model_name(model)}",
                                   sections, intro=_intro(model, scores, base, niah, grid, niah_cfg.stop))
    inputs = {"needles": config.needles or "data/needles.jsonl", "n_needles": len(needles),
              "haystack": config.haystack or "Python's pydoc topics",
              "prompt_tokens": int(grid["prompt_tokens"].sum()), "samples": len(grid)}
    paths["run"] = write_run(od, model, inputs=inputs, timings={"total_s": time.perf_counter() - t0},
                             summary={**summary(scores, niah), "stopped_by": grid["stopped_by"].value_counts().to_dict()})
    return paths


def summary(scores: pd.DataFrame, niah: pd.DataFrame) -> dict:
    n_ret = int((scores["value"] > RETRIEVAL_THRESHOLD).sum()) if not scores.empty else 0
    return {"retrieval_heads": n_ret, "heads": len(scores),
            "recall_by_condition": niah.groupby("condition")["value"].mean().round(1).to_dict()}


def _sections(scores, niah, grid):
    sections = [("NIAH recall (depth × length)", Grid(niah_grid(niah, c) for c in niah["condition"].unique()))]
    if niah["condition"].nunique() > 1:
        curve, heads = masking_curve(niah, grid)
        sections += [("Masking test: recall against K", curve), ("Masked heads", heads)]
    if not scores.empty:
        sections.append(("Retrieval score (layer × head)", head_heatmap(scores, "retrieval_score", colorscale="Reds")))
        sections.append(("Top retrieval heads", ranked_table(scores, "retrieval_score")))
    return sections


def _answer_section(model, needles, base, scores, haystack, k: int = 4) -> list:
    """The top retrieval heads' exact attention rows at the answer tokens of the longest retrieved sample (the
    depth nearest the middle), from the fused path: the whole haystack on the key axis, the needle shaded (the
    row view of :mod:`interp.plot.rowview`)."""
    kept = base[base["kept"]]
    if kept.empty or scores.empty:
        return []
    kept = kept.assign(off_mid=(kept["depth"] - 50).abs()).sort_values(["context_len", "off_mid"], ascending=[False, True])
    s = kept.iloc[0]
    title = "Top retrieval heads at the answer tokens"
    try:
        ar = answer_rows(model, needles[int(s["needle_id"])], int(s["context_len"]), float(s["depth"]),
                         str(s["response"]), top_heads(scores, k), haystack=haystack)
    except UnsupportedModelError as e:  # the fused path cannot run this model: the rest of the report still can
        return [(title, f"<p>Not shown: {html.escape(str(e))}</p>")]
    metrics = {str(h): {"retrieval_score": v} for h, v in zip(ar.heads, _scores_of(scores, ar.heads))}
    return [(f"{title} ({ar.prompt_tokens}-token prompt; pick a head and an answer token, hover a key; needle shaded)",
             answer_row_view(ar, metrics=metrics))]


def _scores_of(scores: pd.DataFrame, heads) -> list[float]:
    by = scores[scores["metric"] == "retrieval_score"].groupby(["layer", "head"])["value"].mean()
    return [float(by.get((h.layer, h.head), float("nan"))) for h in heads]


def _intro(model, scores, base, niah, grid, stop: str) -> str:
    s = summary(scores, niah)
    kept = int(base["kept"].sum())
    recall = ", ".join(f"{k}: {v:.0f}" for k, v in s["recall_by_condition"].items())
    cut = int((grid["stopped_by"] == "newline").sum())
    return (f"<p>{kept}/{len(base)} samples retrieved (ROUGE-1 recall &gt; 50) and were scored. "
            f"{s['retrieval_heads']} of {model.cfg.n_layers * model.cfg.n_heads} heads have retrieval score &gt; {RETRIEVAL_THRESHOLD}. "
            f"Mean NIAH recall by condition: {recall}. Decoding stopped at a line break (stop rule "
            f"<code>{stop}</code>) in {cut} of {len(grid)} samples.</p>")
