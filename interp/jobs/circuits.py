"""The ``interp circuits``, ``interp reuse`` and ``interp repair`` jobs.

``circuits``: a task's circuit by path patching (:mod:`interp.analyze.circuits`) → ``circuit.parquet`` (one row
per circuit head: stage, class, effect, copy score, attention features), ``patching.parquet`` (tidy: every exact
path-patching value per stage and the AtP* scores), ``report.html`` (circuit graph, classes, faithfulness) and
``run.json`` (metric values, exact runs and runs saved by pruning, forward-pass equivalents, timings). AtP* and
each finished stage are parts under ``.parts/<config hash>/``, so an interrupted run resumes.

``reuse``: two circuit folders of one model → ``reuse.parquet`` (tidy), ``report.html`` (both circuits side by
side, shared heads ringed) and ``run.json``. No model is loaded.

``repair``: the IOI circuit (from ``--circuit`` or discovered here as a part) → the inhibition and negative-mover
analogues → ``repair.parquet`` (tidy, per condition and draw), ``report.html``, ``run.json``; each condition is a part.
"""
from __future__ import annotations

import html
import time
from pathlib import Path

import pandas as pd

from interp.io import write_parquet
from interp.jobs.circuits_config import CircuitsConfig, RepairConfig, ReuseConfig
from interp.jobs.config import resolved
from interp.jobs.outdir import claim
from interp.jobs.runinfo import write_run
from interp.models import model_name, model_source
from interp.store import cached


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0, na_rep="—")


def run_circuits(model, out: str | Path, config: CircuitsConfig, *, progress: bool = True) -> dict[str, Path]:
    from interp.analyze.circuits import discover_circuit, faithfulness, make_task
    from interp.plot.circuits import circuit_graph
    from interp.plot.export import write_report
    from interp.store import ResumableTable

    t0 = time.perf_counter()
    task = make_task(model, config.task, config.prompts, config.seed)
    check_atp_memory(model, task, config.chunk_tokens, "--chunk-tokens")
    od = claim(out, "circuits", resolved(model_name(model), model_source(model), config))
    store = ResumableTable(od.parts_dir)
    circ = discover_circuit(model, task, config.params(), store=store, progress=progress)
    info = dict(circ.info)
    if config.faithfulness:
        t = time.perf_counter()
        info["faithfulness"] = _faith_part(store, lambda: faithfulness(model, task, circ.head_ids(), chunk_tokens=config.chunk_tokens))
        intro = _intro(config, info)
        info["faithfulness"] = _no_nan(info["faithfulness"])
        info["timings"]["faithfulness_s"] = time.perf_counter() - t
    paths = {"circuit": write_parquet(od.path / "circuit.parquet", circ.heads),
             "patching": write_parquet(od.path / "patching.parquet", circ.patching)}
    fig = circuit_graph(circ.heads, model.cfg.n_layers, model.cfg.n_heads, title=f"{config.task} circuit · {model_name(model)}")
    paths["report"] = write_report(od.path / "report.html", f"interp circuits — {config.task} · {model_name(model)}",
                                   [("Circuit graph", fig), ("Heads", _table(circ.heads)), ("Stages", _table(pd.DataFrame(info["stages"])))],
                                   intro=intro if config.faithfulness else _intro(config, info))
    paths["run"] = write_run(od, model, inputs={"prompts": len(task), "clean": task.clean[:2], "corrupted": task.corrupted[:2]},
                             timings={"total_s": time.perf_counter() - t0, **info.pop("timings")}, summary=info)
    return paths


def check_atp_memory(model, task, chunk_tokens: int, option: str) -> None:
    """Refuse, in one line and before any forward, a task whose AtP pass over one chunk of prompts would not fit
    in the free memory (discovery runs chunks of about ``chunk_tokens`` tokens one at a time), naming the chunk
    size that fits."""
    from interp.analyze.attribution import atp_bytes
    from interp.errors import InputError
    from interp.inputs import to_batch
    from interp.jobs.config import free_memory_bytes

    free = free_memory_bytes()
    batch, seq = to_batch(model, task.clean).tokens.shape
    rows = min(batch, max(1, chunk_tokens // seq))
    need = atp_bytes(model, rows, seq)
    if free is None or need <= 0.8 * free:
        return
    fits = int(0.8 * free // atp_bytes(model, 1, seq))
    what = (f"the attribution pass over a chunk of {rows} prompts of {seq} tokens ({task.name}) needs about "
            f"{need / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB is free")
    if fits < 1:
        raise InputError(f"{what}, and one prompt does not fit; use a machine with more free memory")
    raise InputError(f"{what}; use {option} {fits * seq} or fewer")


def _faith_part(store, compute) -> dict:
    return cached(store, "faithfulness", lambda: pd.DataFrame([compute()])).iloc[0].to_dict()


def _intro(config: CircuitsConfig, info: dict) -> str:
    f = info.get("faithfulness")
    faith = ""
    if f:
        ratio = lambda v: "undefined (NaN)" if v != v else f"{v:.2f}"  # noqa: E731
        faith = (f" Faithfulness (circuit / full model, others mean-ablated over the corrupted prompts): "
                 f"{f['circuit']:.3f} / {f['full']:.3f} = {ratio(f['faithfulness'])}; all heads ablated: {f['empty']:.3f}; "
                 f"normalized (circuit − empty)/(full − empty) = {ratio(f['faithfulness_norm'])}; spread of the metric "
                 f"across prompts (sd) {f.get('spread', float('nan')):.3f}.")
        for key in ("reason", "reason_norm"):
            if f.get(key):
                faith += f"</p><p><b>Warning:</b> {html.escape(str(f[key]))}."
    if info.get("warning"):
        faith += (f"</p><p><b>Warning:</b> {html.escape(str(info['warning']))}; the path-patching effects below are "
                  "normalized by that gap, so read them as a ranking, not as fractions of the behaviour.")
    return (f"<p>{html.escape(config.task)}, {info['prompts']} prompts; metric clean {info['metric_clean']:.3f}, corrupted "
            f"{info['metric_corrupt']:.3f}. Exact path-patching runs: {info['exact_runs']} (pruning by AtP* saved "
            f"{info['exact_runs_saved']}); about {info['forward_equiv']:.0f} forward passes of the prompt batch.{faith}</p>")


def _no_nan(d: dict) -> dict:
    """NaN → None, so run.json stays strict JSON (a NaN ratio's reason sits beside it)."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


def run_reuse(out: str | Path, config: ReuseConfig) -> dict[str, Path]:
    from dataclasses import asdict

    from interp.analyze.reuse import circuit_reuse
    from interp.jobs.circuits_config import read_circuit_dir, read_circuit_tables
    from interp.plot.circuits import reuse_figure
    from interp.plot.export import write_report

    cfg_a = read_circuit_dir(config.dir_a)
    od = claim(out, "reuse", {"model": cfg_a.get("model"), **asdict(config)})
    t0 = time.perf_counter()
    (ha, pa), (hb, pb) = read_circuit_tables(config.dir_a, "DIR_A"), read_circuit_tables(config.dir_b, "DIR_B")
    n_layers = int(max(pa["layer"].max(), pb["layer"].max())) + 1
    n_heads = int(max(pa["head"].max(), pb["head"].max())) + 1
    n_total = _n_total(cfg_a, n_layers * n_heads)
    df = circuit_reuse(pa, pb, n_heads_total=n_total, top_frac=config.top_frac)
    s = df.attrs["summary"]
    na, nb = df.attrs["tasks"]
    shared = {(int(l), int(h)) for l, h, c in zip(df["layer"], df["head"], df["condition"].fillna("")) if c == "shared"}
    fig = reuse_figure(ha, hb, n_layers, n_heads, shared, (na, nb))
    members = df[df["metric"] == "membership"][["layer", "head", "condition", "stage_a", "stage_b"]]
    intro = (f"<p>Top {config.top_frac:.0%} of heads per path-patching stage, union over stages: {na} {s['heads_a']} heads, "
             f"{nb} {s['heads_b']}, shared {s['heads_shared']}. Overlap (shared / {na}) {s['overlap']:.0%} "
             f"(Merullo et al., GPT2-Medium: 25/32 = 78%); Jaccard {s['jaccard']:.2f}; Spearman of head effects "
             f"{s['spearman']:.2f}.</p>")
    paths = {"reuse": write_parquet(od.path / "reuse.parquet", df)}
    paths["report"] = write_report(od.path / "report.html", f"interp reuse — {na} vs {nb}",
                                   [("Both circuits", fig), ("Heads", _table(members))], intro=intro)
    from interp.io import write_json
    from interp.jobs.runinfo import versions

    paths["run"] = write_json(od.path / "run.json", {"verb": "reuse", "config_key": od.key, "config": od.config,
                                                     "summary": s, "versions": versions(),
                                                     "timings": {"total_s": time.perf_counter() - t0}})
    return paths


def _n_total(cfg: dict, fallback: int) -> int:
    from interp.models.spec import resolve_model

    try:
        spec = resolve_model(cfg.get("model_source") or cfg.get("model"))
        return int(spec.n_layers * spec.n_heads)
    except Exception:  # the source may have moved; the patched heads still bound the count
        return fallback


def run_repair(model, out: str | Path, config: RepairConfig, *, progress: bool = True) -> dict[str, Path]:
    from interp.analyze.circuits import CircuitParams, discover_circuit, ioi_task
    from interp.analyze.repair import repair_accuracy, repair_experiment, repair_heads, repair_summary
    from interp.plot.circuits import repair_figure
    from interp.plot.export import write_report
    from interp.stats import majority_baseline
    from interp.store import ResumableTable
    from interp.tasks.colored_objects import colored_objects

    ioi = None
    if config.circuit is None:  # discovered here: its AtP pass must fit
        ioi = ioi_task(model, config.ioi_prompts, config.seed)
        check_atp_memory(model, ioi, config.chunk_tokens, "--chunk-tokens")
    od = claim(out, "repair", resolved(model_name(model), model_source(model), config))
    t0 = time.perf_counter()
    store = ResumableTable(od.parts_dir)
    if config.circuit is not None:
        from interp.jobs.circuits_config import read_circuit_tables

        heads = read_circuit_tables(config.circuit, "--circuit")[0]
    else:
        heads = cached(store, "ioi-circuit", lambda: discover_circuit(
            model, ioi, CircuitParams(keep=config.keep, chunk_tokens=config.chunk_tokens), progress=progress).heads)
    inh, neg, movers = repair_heads(heads, config.n_inhibition)
    if len(inh) < config.n_inhibition:
        import warnings

        warnings.warn(f"--n-inhibition {config.n_inhibition}: the IOI circuit has only {len(inh)} stage-2 heads; using those",
                      stacklevel=2)
    data = colored_objects(model, config.prompts, seed=config.seed + 1)
    df = repair_experiment(model, data, inh, neg, movers, draws=config.draws, seed=config.seed, store=store, progress=progress)
    summary = repair_summary(df)
    paths = {"repair": write_parquet(od.path / "repair.parquet", df)}
    intro = (f"<p>Inhibition analogues {', '.join(map(str, inh)) or 'none'}; negative mover {', '.join(map(str, neg)) or 'none'}; "
             f"movers measured {', '.join(map(str, movers)) or 'none'}. At the final position each edited head attends 1/2 to each "
             f"wrong color. Merullo et al. (GPT2-Medium): 49.6% → 81.5% (inhibition) → 93.7% (+ negative mover). "
             f"{config.prompts} Colored Objects prompts; random control: {config.draws} draws of {len(inh) + len(neg)} heads.</p>")
    acc = repair_accuracy(df, len(data))
    baseline = majority_baseline(data.answer)
    sections = [("Accuracy by condition", repair_figure(acc, df[(df["metric"] == "accuracy") & (df["condition"] == "random")],
                                                        baseline)),
                ("Accuracy as rates (95% Wilson intervals; random: draws pooled)", _table(acc)),
                ("All metrics by condition (random: mean over draws, accuracy_std across draws)", _table(summary.reset_index()))]
    intro += (f"<p>n = {len(data)} prompts per condition{' (under 200: wide intervals)' if len(data) < 200 else ''}; "
              f"majority-class baseline (always the most common color) {baseline:.3f}.</p>")
    paths["report"] = write_report(od.path / "report.html", f"interp repair · {model_name(model)}", sections, intro=intro)
    paths["run"] = write_run(od, model, inputs={"prompts": len(data), "inhibition": [str(h) for h in inh],
                                                "negative": [str(h) for h in neg], "movers": [str(h) for h in movers]},
                             timings={"total_s": time.perf_counter() - t0},
                             summary=summary.reset_index().to_dict(orient="records"))
    return paths


__all__ = ["run_circuits", "run_reuse", "run_repair"]
