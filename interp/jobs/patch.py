"""The ``interp patch`` and ``interp steer`` jobs.

``patch``: IOI prompts → per-head effects of ``z`` → ``effects.parquet`` (tidy), ``report.html`` (layer×head
heatmap; with ``--by head_pos`` also a position×head heatmap labelled with the tokens) and ``run.json``.
``--direction`` (both methods): ``denoising`` (default) patches clean ``z`` into the corrupted run
(TransformerLens's convention, normalized 0 = corrupted, 1 = clean), ``noising`` corrupted ``z`` into the clean run
(normalized 0 = clean, 1 = corrupted). ``exact`` is activation patching; ``atp``/``atp*`` estimate the same
quantity, divided by ``m_source − m_base``, so for one direction the two methods' frames compare directly. Every
frame carries a ``direction`` column. ``atp*`` adds the QK-fixed query/key rows (``atp*:q``, ``atp*:k``); its
head-output rows (``atp:z``, the heatmap) are the same as ``atp``'s.

``steer``: the ITI direction (mass-mean, σ-scaled) of each given head on the shipped sentiment items, added with
``alpha``; greedy continuations with and without it.
"""
from __future__ import annotations

import time
import textwrap
from pathlib import Path

from interp.io import write_parquet
from interp.jobs.outdir import claim
from interp.jobs.patch_config import PatchConfig, SteerConfig
from interp.jobs.runinfo import write_run
from interp.models import model_name, model_source


def run_patch(model, out: str | Path, config: PatchConfig, *, progress: bool = True) -> dict[str, Path]:
    from interp.analyze.attribution import attribution_patching
    from interp.analyze.patching import activation_patching
    from interp.jobs.config import resolved
    from interp.plot.export import write_report
    from interp.plot.heads import head_heatmap
    from interp.plot.patching import position_head_heatmap
    from interp.tasks.ioi import ioi

    od = claim(out, "patch", resolved(model_name(model), model_source(model), config))
    t0 = time.perf_counter()
    data = ioi(model, config.prompts, seed=config.seed, corruption=config.corruption,
               templates=[0] if config.by == "head_pos" else None)
    if config.method == "exact":
        df = activation_patching(model, data.clean, data.corrupted, data.metric, site="z", by=config.by, progress=progress,
                                 task="ioi", direction=config.direction)
        main = "patch:z"
    else:
        df = attribution_patching(model, data.clean, data.corrupted, data.metric, by=config.by, qk_fix=config.method == "atp*",
                                  task="ioi", direction=config.direction)
        df["value"] = df["value"] / df.attrs["scale"]
        main = "atp:z"
    attrs = dict(df.attrs)
    paths = {"effects": write_parquet(od.path / "effects.parquet", df)}
    sections = [("Layer × head", head_heatmap(df, main, title=f"{config.method} {config.direction} effect of z (summed over positions)"))]
    if config.by == "head_pos":
        from interp.inputs import to_batch

        tokens = [model.tokenizer.decode([t]) for t in to_batch(model, data.clean[:1]).tokens[0].tolist()]
        sections.append(("Position × head", position_head_heatmap(df, main, tokens)))
    source, base = ("clean", "corrupted") if config.direction == "denoising" else ("corrupted", "clean")
    intro = (f"<p>IOI ({config.prompts} prompts, corruption {config.corruption}); logit difference clean "
             f"{attrs.get('clean', float('nan')):.3f}, corrupted {attrs.get('corrupt', float('nan')):.3f}. "
             f"Direction: <b>{config.direction}</b> ({source} z patched into the {base} run; effect 1 = the {source} "
             f"behaviour).</p>")
    paths["report"] = write_report(od.path / "report.html", f"interp patch — {model_name(model)}", sections, intro=intro)
    paths["run"] = write_run(od, model, inputs={"prompts": len(data), "clean": data.clean[:3], "direction": config.direction,
                                                "metric_clean": attrs.get("clean"),
                                                "metric_corrupt": attrs.get("corrupt")},
                             timings={"total_s": time.perf_counter() - t0})
    return paths


def steer_text(model, config: SteerConfig) -> str:
    """The side-by-side table that ``interp steer`` prints."""
    import torch

    from interp.intervene.steering import generate, last_token_site
    from interp.intervene.values import AddToHead
    from interp.tasks.mc import load_mc
    from interp.types import HeadId

    items = load_mc("sentiment")
    pos = [it["prompt"] for it in items if it["answer"] == 0]
    neg = [it["prompt"] for it in items if it["answer"] == 1]
    heads = [HeadId.parse(h) for h in config.heads]
    layers = tuple(sorted({h.layer for h in heads}))
    zp, zn = last_token_site(model, pos, "z", layers=layers), last_token_site(model, neg, "z", layers=layers)
    edits = []
    for h in heads:
        i = layers.index(h.layer)
        shift = zp[:, i, h.head].mean(0) - zn[:, i, h.head].mean(0)
        theta = shift / shift.norm().clamp_min(1e-12)
        sigma = float(torch.cat([zp[:, i, h.head] @ theta, zn[:, i, h.head] @ theta]).std())
        edits.append(AddToHead(h, sigma * theta, config.alpha))
    plain = generate(model, config.prompt, (), config.max_new_tokens)
    steered = generate(model, config.prompt, edits, config.max_new_tokens)
    return _side_by_side(config, plain, steered)


def _side_by_side(config: SteerConfig, plain: str, steered: str, width: int = 48) -> str:
    left, right = textwrap.wrap(plain, width) or [""], textwrap.wrap(steered, width) or [""]
    n = max(len(left), len(right))
    left, right = left + [""] * (n - len(left)), right + [""] * (n - len(right))
    head = f"{'unsteered':<{width}} | steered ({', '.join(config.heads)}, alpha={config.alpha:g})"
    lines = [f"prompt: {config.prompt}", head, "-" * len(head)] + [f"{a:<{width}} | {b}" for a, b in zip(left, right)]
    return "\n".join(lines)


__all__ = ["run_patch", "steer_text"]
