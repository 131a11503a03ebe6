"""The head atlas: one tidy table of per-head metrics plus a self-contained interactive report.

Writes ``heads.parquet`` (tidy schema), ``report.html`` (loading the folder's ``plotly.min.js``) and ``run.json`` (model,
versions, seed, config, timings) into the output directory, each atomically.
"""
from __future__ import annotations

import html
import time
from pathlib import Path

import pandas as pd

from interp.analyze.attention import summary_frame
from interp.analyze.detectors import PATTERNS, detector_scores
from interp.analyze.metrics import ATLAS_METRICS
from interp.io import write_parquet
from interp.jobs.config import AtlasConfig, resolved
from interp.jobs.outdir import claim
from interp.jobs.runinfo import write_run
from interp.models import is_causal, model_name, model_source
from interp.plot import Grid, head_heatmap, write_report
from interp.attnstats import attention_stats
from interp.inputs import start_token_id
from interp.tasks.texts import repeated_random_tokens, shipped_prose, text_tokens

METRICS = ATLAS_METRICS  # declared in interp.analyze.metrics


def _retrieval(model, config: AtlasConfig) -> pd.DataFrame:
    from interp.analyze.retrieval import NiahConfig, retrieval_scores, run_niah
    from interp.tasks.niah import load_needles

    cfg = NiahConfig(lengths=config.niah_lengths, depths=config.niah_depths, max_new_tokens=32)
    samples = run_niah(model, load_needles()[: config.niah_needles], cfg)
    return retrieval_scores(model, samples, task="atlas")


def run_atlas(model, out: str | Path, config: AtlasConfig = AtlasConfig(), *, progress: bool = True) -> dict[str, Path]:
    od = claim(out, "atlas", resolved(model_name(model), model_source(model), config))
    out = od.path
    from tqdm.auto import tqdm

    steps = tqdm(total=4, desc="atlas", disable=not progress)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    steps.set_postfix_str("detectors")
    det = detector_scores(model, seq_len=config.seq_len, batch=config.batch, seed=config.seed, task="atlas")
    timings["detectors_s"] = time.perf_counter() - t0
    steps.update()

    steps.set_postfix_str("entropy + sink mass")
    tokens = text_tokens(model.tokenizer, shipped_prose(), config.text_tokens)
    st = attention_stats(model, tokens, key_mass=True)  # one fused pass serves entropy, sink mass and sinks
    att = pd.concat([summary_frame(st, task="atlas"), _sink_metrics(st)], ignore_index=True)
    timings["attention_s"] = time.perf_counter() - t0 - timings["detectors_s"]
    steps.update()

    parts = [det, att]
    skipped = _retrieval_skipped(model, config)
    if skipped:
        import warnings

        warnings.warn(skipped, stacklevel=2)
    elif config.niah_lengths:
        steps.set_postfix_str("retrieval (NIAH)")
        parts.append(_retrieval(model, config))
        timings["retrieval_s"] = time.perf_counter() - t0 - timings["detectors_s"] - timings["attention_s"]
    df = pd.concat(parts, ignore_index=True)
    paths = {"heads": write_parquet(out / "heads.parquet", df)}
    steps.update()

    steps.set_postfix_str("report")
    intro = _intro(model, df) + (f"<p><b>Note:</b> {html.escape(skipped)}.</p>" if skipped else "")
    paths["report"] = write_report(out / "report.html", f"Head atlas · {model_name(model)}", _sections(model, df, tokens, config),
                                   intro=intro)
    steps.update()
    steps.close()
    timings["total_s"] = time.perf_counter() - t0
    inputs = {"detectors": f"{config.batch} × random sequences of {config.seq_len} tokens, repeated (seed {config.seed})",
              "detector_tokens": config.batch * (2 * config.seq_len + 1), "prose": "data/prose.txt",
              "prose_tokens": int(tokens.shape[1]), **({"retrieval_skipped": skipped} if skipped else {})}
    paths["run"] = write_run(od, model, inputs=inputs, timings=timings)
    return paths


def _retrieval_skipped(model, config: AtlasConfig) -> str | None:
    """Why the retrieval score is not computed for this model (None when it is, or was not asked for)."""
    if config.niah_lengths and not is_causal(model):
        return (f"retrieval score skipped: {model_name(model)} is not a causal language model, and retrieval heads are "
                f"found by generating answers (needle in a haystack), which it cannot do")
    return None


def _sink_metrics(st) -> pd.DataFrame:
    """Per-head ``sink_rate`` (fraction of prompts with α_1 > 0.3), ``alpha_first`` and ``hidden_sink_count``."""
    from interp.analyze.sinks import sink_frame

    sk = sink_frame(st, task="atlas", max_positions=1)
    sk = sk[sk["metric"].isin(["sink_first", "alpha_first", "hidden_sink_count"])].copy()
    sk["metric"] = sk["metric"].replace({"sink_first": "sink_rate"})
    return sk.drop(columns=[c for c in ("position", "prompt_id", "token") if c in sk.columns]).assign(condition="prose")


def top_heads(df: pd.DataFrame, metric: str, k: int, condition: str | None = None) -> list[tuple[int, int, float]]:
    rows = df[df["metric"] == metric]
    if condition is not None:
        rows = rows[rows["condition"] == condition]
    rows = rows.groupby(["layer", "head"], as_index=False)["value"].mean().nlargest(k, "value")
    return [(int(r.layer), int(r.head), float(r.value)) for r in rows.itertuples()]


def _sections(model, df, tokens, config):
    grid = Grid()
    titles = {"previous_token": "Previous-token score", "duplicate_token": "Duplicate-token score",
              "induction": "Induction score", "entropy": "Mean attention entropy (nats)", "first_token_mass": "First-token (sink) mass",
              "normalized_entropy": "Normalized entropy (entropy / log visible keys)",
              "sink_rate": "Sink rate (α_1 > 0.3; Gu et al.)", "hidden_sink_count": "Hidden sinks per prompt (ACT, α > 0.1, not the first token)",
              "retrieval_score": "Retrieval score (Wu et al., built-in NIAH run)"}
    for metric in (*METRICS, "retrieval_score"):
        sub = df[df["metric"] == metric]
        if sub.empty:  # e.g. no NIAH sample was retrieved, or the run was skipped
            continue
        if metric == "previous_token":
            sub = sub[sub["condition"] == "prose"]
        grid.append(head_heatmap(sub, metric, title=titles[metric]))
    heads = []
    for metric in PATTERNS:
        heads += [(l, h) for l, h, _ in top_heads(df, metric, config.view_heads, "repeated_random")]
    heads = list(dict.fromkeys(heads))
    sinks = [(l, h) for l, h, _ in top_heads(df, "first_token_mass", config.view_heads)]
    return [("Per-head metrics (layer × head)", grid),
            ("Attention patterns (top detector heads; hover a token)", _viewer(model, df, heads, tokens, config)),
            (f"Attention rows of the top sink heads (first-token mass; the whole {tokens.shape[1]}-token prose prompt, "
             "exact; hover a key)", _sink_rows(model, df, sinks, tokens))]


def _sink_rows(model, df, heads, tokens):
    """The top sink heads' exact rows over the prose prompt, at its last and middle tokens (fused path)."""
    from interp.errors import UnsupportedModelError
    from interp.plot.rowview import row_view_from_model
    from interp.plot.viewer import head_metrics

    n = tokens.shape[1]
    try:
        return row_view_from_model(model, tokens[:1], heads, [(n - 1, f"last token ({n - 1})"), (n // 2, f"middle token ({n // 2})")],
                                   metrics=head_metrics(df, heads), title="Attention rows of the top sink heads")
    except UnsupportedModelError as e:  # the fused path does not cover this model; the rest of the report stands
        return f"<p>Not shown: {html.escape(str(e))}</p>"


def _viewer(model, df, heads, tokens, config):
    from interp.plot.viewer import head_metrics, viewer_from_model

    rand = repeated_random_tokens(model.cfg.d_vocab, config.view_tokens // 2, 1, seed=config.seed,
                                  bos=start_token_id(model.tokenizer))
    prompts = {"prose": tokens[:, : config.view_tokens], "repeated random": rand}
    return viewer_from_model(model, prompts, heads, metrics=head_metrics(df, heads),
                             title="Attention patterns of the top detector heads")


def _intro(model, df) -> str:
    items = []
    for metric, cond in (("previous_token", "prose"), ("induction", "repeated_random"), ("duplicate_token", "repeated_random")):
        top = ", ".join(f"L{l}H{h} ({v:.2f})" for l, h, v in top_heads(df, metric, 5, cond))
        items.append(f"<li><b>{metric}</b>: {top}</li>")
    return f"<p>{model.cfg.n_layers} layers × {model.cfg.n_heads} heads. Strongest heads:</p><ul>{''.join(items)}</ul>"
