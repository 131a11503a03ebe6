"""The ``interp sinks`` and ``interp entropy`` jobs: analyze → tidy parquet → self-contained HTML report.

Both default to chunks of Python's ``pydoc_data.topics`` text (``probe_tokens``: ``n_prompts`` × ``n_tokens``,
each chunk starting with BOS), or take a text file. Each writes ``<name>.parquet``, ``report.html`` and
``run.json`` atomically into the output directory.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from interp.analyze.entropy import entropy_frame
from interp.analyze.sinks import REPORT_MIN_QUERIES, massive_activations, probe_tokens, sink_frame, summarize
from interp.attnstats import attention_stats
from interp.io import write_parquet
from interp.jobs.config import EntropyConfig, ProbeConfig, SinksConfig, resolved
from interp.jobs.outdir import claim
from interp.jobs.runinfo import write_run
from interp.models import model_name, model_source
from interp.plot import head_heatmap, write_report
from interp.tasks.sources import read_text_file
from interp.tasks.texts import text_tokens


def _inputs(model, config: ProbeConfig):
    """``[batch pos]`` tokens and a description of where they came from."""
    if config.text is None:
        tokens = probe_tokens(model, n_prompts=config.prompts, n_tokens=config.tokens)
        return tokens, f"Python's pydoc topics: {tokens.shape[0]} chunks of {tokens.shape[1]} tokens"
    tokens = text_tokens(model.tokenizer, read_text_file(config.text, "--text"), config.tokens)  # keeps the BOS position
    if tokens.shape[1] < config.tokens:
        import warnings

        warnings.warn(f"--text {config.text} has only {tokens.shape[1]} tokens; analyzing those instead of --tokens {config.tokens}",
                      stacklevel=2)
    return tokens, f"{config.text} (first {tokens.shape[1]} tokens)"


def _records(tokens, source: str) -> dict:
    return {"source": source, "prompts": int(tokens.shape[0]), "tokens_per_prompt": int(tokens.shape[1]),
            "tokens": int(tokens.numel())}


def run_sinks(model, out: str | Path, config: SinksConfig = SinksConfig(), *,
              min_queries: int = REPORT_MIN_QUERIES) -> dict[str, Path]:
    od = claim(out, "sinks", resolved(model_name(model), model_source(model), config))
    eps, tau, ratio = config.eps, config.tau, config.ratio
    t0 = time.perf_counter()
    inputs, source = _inputs(model, config)
    st = attention_stats(model, inputs, segments={"first": "first"}, key_mass=True)
    sinks = sink_frame(st, eps=eps, tau=tau, min_queries=min_queries, max_positions=config.tokens, tokenizer=model.tokenizer)
    ent = entropy_frame(st, task="sinks")
    massive = massive_activations(model, inputs, ratio=ratio, max_positions=config.tokens)
    df = pd.concat([sinks, ent, massive], ignore_index=True)
    s = summarize(sinks)
    from interp.plot.sinks import alpha_positions, hidden_sink_table, massive_norms, sink_rate_bars

    out = od.path
    paths = {"sinks": write_parquet(out / "sinks.parquet", df)}
    intro = (f"<p>{model_name(model)}: {st.tokens.shape[0]} prompts × {st.tokens.shape[1]} tokens. "
             f"Sink<sub>1</sub><sup>ε={eps}</sup> = <b>{100 * s.sink_rate_first:.1f}%</b> of (prompt, layer, head) "
             f"(95% interval over prompts {100 * s.sink_rate_first_ci[0]:.1f}–{100 * s.sink_rate_first_ci[1]:.1f}%, "
             f"n = {s.sink_rate_first_ci[2]} prompts{', fewer than 200: the interval only bounds it' if s.sink_rate_first_ci[2] < 200 else ''}). "
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
    paths["run"] = write_run(od, model, inputs=_records(inputs, source), timings={"total_s": time.perf_counter() - t0},
                             min_queries=min_queries, backend=st.backend,
                             summary={"sink_rate_first": s.sink_rate_first, "sink_rate_first_low": s.sink_rate_first_ci[0],
                                      "sink_rate_first_high": s.sink_rate_first_ci[1], "prompts": s.sink_rate_first_ci[2],
                                      "strongest": s.strongest})
    return paths


def run_entropy(model, out: str | Path, config: EntropyConfig = EntropyConfig()) -> dict[str, Path]:
    from interp.plot.entropy import layer_entropy_bars

    od = claim(out, "entropy", resolved(model_name(model), model_source(model), config))
    t0 = time.perf_counter()
    inputs, source = _inputs(model, config)
    st = attention_stats(model, inputs)
    df = entropy_frame(st, collapse=config.collapse, overload=config.overload)
    paths = {"entropy": write_parquet(od.path / "entropy.parquet", df)}
    collapsed, overloaded = _flagged(df, "collapsed"), _flagged(df, "overloaded")
    n_heads = int((df[(df["head"] >= 0)]["metric"] == "collapsed").sum())
    intro = (f"<p>{model_name(model)}: {st.tokens.shape[0]} prompts × {st.tokens.shape[1]} tokens.</p><ul>"
             f"<li><b>Collapsed</b> (normalized entropy &lt; {config.collapse}): {len(collapsed)}/{n_heads}"
             f"{': ' + ', '.join(collapsed) if collapsed else ''}</li>"
             f"<li><b>Overloaded</b> (normalized entropy &gt; {config.overload}): {len(overloaded)}/{n_heads}"
             f"{': ' + ', '.join(overloaded) if overloaded else ''}</li></ul>")
    sections = [("Mean attention entropy (nats)", head_heatmap(df, "entropy", title="entropy (nats)")),
                ("Normalized entropy (entropy / log visible keys)", head_heatmap(df, "normalized_entropy", title="normalized entropy")),
                ("Per layer", layer_entropy_bars(df))]
    paths["report"] = write_report(od.path / "report.html", f"Attention entropy · {model_name(model)}", sections, intro=intro)
    paths["run"] = write_run(od, model, inputs=_records(inputs, source), timings={"total_s": time.perf_counter() - t0},
                             backend=st.backend, summary={"collapsed": collapsed, "overloaded": overloaded})
    return paths


def _flagged(df: pd.DataFrame, flag: str) -> list[str]:
    """Heads flagged ``flag`` (1.0), as ``L9H6`` labels in layer/head order."""
    rows = df[(df["metric"] == flag) & (df["head"] >= 0) & (df["value"] > 0.5)].sort_values(["layer", "head"])
    return [f"L{int(r.layer)}H{int(r.head)}" for r in rows.itertuples()]


__all__ = ["run_sinks", "run_entropy"]
