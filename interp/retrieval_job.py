"""The ``interp retrieval`` job: retrieval-head detection, the masking test, and the report.

Writes ``scores.parquet`` (tidy: per-head ``retrieval_score`` plus per-sample ``copy_paste`` rows),
``niah.parquet`` (tidy ``niah_recall`` per sample and condition), ``samples.parquet`` (responses),
``report.html`` and ``run.json``. Every decoded sample is stored as it finishes under ``.parts/``, so an
interrupted run resumes where it stopped without losing or duplicating rows.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from interp.analyze.retrieval import (RETRIEVAL_THRESHOLD, NiahConfig, masking_grid, niah_frame, retrieval_scores,
                                      run_niah)
from interp.atlas import check_out_dir
from interp.io import write_json, write_parquet
from interp.models import model_name
from interp.plot import head_heatmap, write_report
from interp.plot.niah import niah_grid, ranked_table
from interp.sweep import ResumableTable
from interp.tasks.niah import load_needles


def run_retrieval(model, out: str | Path, config: NiahConfig = NiahConfig(), *, needles_path=None, n_needles: int | None = None,
                  mask_top=(), mask_random=(), draws: int = 3, seed: int = 0, progress: bool = True) -> dict[str, Path]:
    out = check_out_dir(out)
    needles = load_needles(needles_path)[: n_needles or None]
    store = ResumableTable(out / ".parts")
    t0 = time.perf_counter()
    base = run_niah(model, needles, config, store=store, progress=progress)
    scores = retrieval_scores(model, base)
    grid = masking_grid(model, needles, config, scores, top_k=mask_top, random_k=mask_random, draws=draws, seed=seed,
                        baseline=base, store=store, progress=progress) if (mask_top or mask_random) and not scores.empty else base
    niah = niah_frame(model, grid)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"scores": write_parquet(out / "scores.parquet", scores),
             "niah": write_parquet(out / "niah.parquet", niah),
             "samples": write_parquet(out / "samples.parquet", grid.drop(columns=["scores"]))}
    paths["report"] = write_report(out / "report.html", f"Retrieval heads · {model_name(model)}", _sections(scores, niah),
                                   intro=_intro(model, scores, base, niah))
    paths["run"] = write_json(out / "run.json", {"model": model_name(model), "config": asdict(config), "needles": len(needles),
                                                 "mask_top": list(mask_top), "mask_random": list(mask_random), "draws": draws,
                                                 "seed": seed, "wall_s": time.perf_counter() - t0})
    return paths


def summary(scores: pd.DataFrame, niah: pd.DataFrame) -> dict:
    n_ret = int((scores["value"] > RETRIEVAL_THRESHOLD).sum()) if not scores.empty else 0
    return {"retrieval_heads": n_ret, "heads": len(scores),
            "recall_by_condition": niah.groupby("condition")["value"].mean().round(1).to_dict()}


def _sections(scores, niah):
    sections = [(f"NIAH recall · {c}", niah_grid(niah, c)) for c in niah["condition"].unique()]
    if not scores.empty:
        sections.append(("Retrieval score (layer × head)", head_heatmap(scores, "retrieval_score", colorscale="Reds")))
        sections.append(("Top retrieval heads", ranked_table(scores, "retrieval_score")))
    return sections


def _intro(model, scores, base, niah) -> str:
    s = summary(scores, niah)
    kept = int(base["kept"].sum())
    recall = ", ".join(f"{k}: {v:.0f}" for k, v in s["recall_by_condition"].items())
    return (f"<p>{kept}/{len(base)} samples retrieved (ROUGE-1 recall &gt; 50) and were scored. "
            f"{s['retrieval_heads']} of {model.cfg.n_layers * model.cfg.n_heads} heads have retrieval score &gt; {RETRIEVAL_THRESHOLD}. "
            f"Mean NIAH recall by condition: {recall}.</p>")
