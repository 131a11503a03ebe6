"""The ``interp sinks`` and ``interp entropy`` jobs: analyze → tidy parquet → self-contained HTML report.

Both default to chunks of Python's ``pydoc_data.topics`` text (``probe_tokens``: ``n_prompts`` × ``n_tokens``,
each chunk starting with BOS), or take a text file. Each writes ``<name>.parquet``, ``report.html`` and
``run.json`` atomically into the output directory.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from interp.analyze.entropy import COLLAPSE, OVERLOAD, entropy_frame
from interp.analyze.sinks import (DEFAULT_EPS, DEFAULT_MASSIVE_RATIO, DEFAULT_TAU, REPORT_MIN_QUERIES, check_threshold,
                                  massive_activations, probe_tokens, sink_frame, summarize)
from interp.attnstats import attention_stats
from interp.io import write_json, write_parquet
from interp.models import model_name
from interp.plot import head_heatmap, write_report
from interp.tasks.texts import text_tokens


def _inputs(model, text_file: Path | None, n_prompts: int, n_tokens: int):
    if text_file is None:
        return probe_tokens(model, n_prompts=n_prompts, n_tokens=n_tokens)
    from interp.errors import InputError

    path = Path(text_file)
    if not path.is_file():
        raise InputError(f"text file {str(path)!r} does not exist; pass a UTF-8 text file or omit --text")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise InputError(f"text file {str(path)!r} has no tokens; pass a non-empty text")
    return text_tokens(model.tokenizer, text, n_tokens)  # the sink analysis expects the BOS position


def run_sinks(model, out: str | Path, *, n_prompts: int = 8, n_tokens: int = 64, text_file: Path | None = None,
              eps: float = DEFAULT_EPS, tau: float = DEFAULT_TAU, ratio: float = DEFAULT_MASSIVE_RATIO,
              min_queries: int = REPORT_MIN_QUERIES) -> dict[str, Path]:
    check_threshold("eps", eps)
    check_threshold("tau", tau)
    t0 = time.perf_counter()
    inputs = _inputs(model, text_file, n_prompts, n_tokens)
    st = attention_stats(model, inputs, segments={"first": "first"}, key_mass=True)
    sinks = sink_frame(st, eps=eps, tau=tau, min_queries=min_queries, max_positions=n_tokens, tokenizer=model.tokenizer)
    ent = entropy_frame(st, task="sinks")
    massive = massive_activations(model, inputs, ratio=ratio, max_positions=n_tokens)
    df = pd.concat([sinks, ent, massive], ignore_index=True)
    s = summarize(sinks)
    from interp.plot.sinks import alpha_positions, hidden_sink_table, massive_norms, sink_rate_bars

    out = Path(out)
    paths = {"sinks": write_parquet(out / "sinks.parquet", df)}
    intro = (f"<p>{model_name(model)}: {st.tokens.shape[0]} prompts × {st.tokens.shape[1]} tokens. "
             f"Sink<sub>1</sub><sup>ε={eps}</sup> = <b>{100 * s.sink_rate_first:.1f}%</b> of (prompt, layer, head). "
             f"Strongest first-token sinks (α<sub>1</sub>): {', '.join(f'{h} ({v:.2f})' for h, v in s.strongest[:8])}. "
             f"Hidden sinks: keys other than the first with α &gt; τ={tau}, seen by ≥ {min_queries} queries. "
             f"Massive activations: hidden-state norm &gt; {ratio:g}× the layer median.</p>")
    sections = [("Sink rate per layer (first token)", sink_rate_bars(sinks)),
                ("α_k over key positions", alpha_positions(sinks)),
                ("First-token importance α_1 per head", head_heatmap(sinks, "alpha_first", title="α_1 (first token)")),
                ("Mean attention entropy (nats)", head_heatmap(ent, "entropy", title="entropy (nats)")),
                ("Hidden sinks (tokens)", hidden_sink_table(sinks)),
                ("Massive activations", massive_norms(massive))]
    paths["report"] = write_report(out / "report.html", f"Attention sinks · {model_name(model)}", sections, intro=intro)
    paths["run"] = write_json(out / "run.json", {"model": model_name(model), "eps": eps, "tau": tau, "ratio": ratio,
                                                 "min_queries": min_queries, "n_prompts": int(st.tokens.shape[0]),
                                                 "n_tokens": int(st.tokens.shape[1]), "sink_rate_first": s.sink_rate_first,
                                                 "strongest": s.strongest, "seconds": time.perf_counter() - t0})
    return paths


def run_entropy(model, out: str | Path, *, n_prompts: int = 8, n_tokens: int = 64, text_file: Path | None = None,
                collapse: float = COLLAPSE, overload: float = OVERLOAD) -> dict[str, Path]:
    from interp.plot.entropy import layer_entropy_bars

    t0 = time.perf_counter()
    st = attention_stats(model, _inputs(model, text_file, n_prompts, n_tokens))
    df = entropy_frame(st, collapse=collapse, overload=overload)
    out = Path(out)
    paths = {"entropy": write_parquet(out / "entropy.parquet", df)}
    heads = df[df["head"] >= 0]
    n = heads[heads.metric == "collapsed"]
    intro = (f"<p>{model_name(model)}: {st.tokens.shape[0]} prompts × {st.tokens.shape[1]} tokens. "
             f"Collapsed heads (normalized entropy &lt; {collapse}): {int(n.value.sum())}/{len(n)}; "
             f"overloaded (&gt; {overload}): {int(heads[heads.metric == 'overloaded'].value.sum())}/{len(n)}.</p>")
    sections = [("Mean attention entropy (nats)", head_heatmap(df, "entropy", title="entropy (nats)")),
                ("Normalized entropy (entropy / log visible keys)", head_heatmap(df, "normalized_entropy", title="normalized entropy")),
                ("Per layer", layer_entropy_bars(df))]
    paths["report"] = write_report(out / "report.html", f"Attention entropy · {model_name(model)}", sections, intro=intro)
    paths["run"] = write_json(out / "run.json", {"model": model_name(model), "collapse": collapse, "overload": overload,
                                                 "seconds": time.perf_counter() - t0})
    return paths


__all__ = ["run_sinks", "run_entropy"]
