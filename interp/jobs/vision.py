"""The ``interp vision`` job: VHD / T-VHD, visual sinks and image-centric heads, VHR and VAR against random-head
controls, on the held-out shapes sets (:mod:`interp.tasks.shapes`).

Writes ``vision.parquet`` (tidy; conditions in ``condition``: ``baseline``, ``vhr``, ``vhr_random``, ``var``,
``var_random``), ``report.html`` (VHD heatmap, top heads, an example image with the answer query's per-patch
attention for a chosen head, the before/after table, the sink evidence) and ``run.json``.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from interp.analyze import vision as V
from interp.errors import InputError
from interp.io import write_parquet
from interp.jobs.config import VisionConfig, resolved
from interp.jobs.outdir import claim
from interp.jobs.runinfo import write_run
from interp.models import model_name, model_source
from interp.plot import head_heatmap, write_report
from interp.schema import make_frame

CONDITIONS = ("baseline", "vhr", "vhr_random", "var", "var_random")


def usable_kinds(model) -> tuple[str, ...]:
    """Question kinds whose options the model's tokenizer tells apart by their first token."""
    out = []
    for kind in ("color", "shape", "count", "exist"):
        try:
            V.option_ids(model.tokenizer, kind)
            out.append(kind)
        except InputError:
            pass
    return tuple(out)


def run_vision(model, out: str | Path, config: VisionConfig = VisionConfig(), *, progress: bool = True) -> dict[str, Path]:
    from interp.images import vlm_config
    from interp.analyze import vision_interventions as IV

    vlm_config(model)  # a text-only model fails here with one line
    od = claim(out, "vision", resolved(model_name(model), model_source(model), config))
    t0 = time.perf_counter()
    ordinary, traps, caps = V.eval_sets(config.seed, config.n_ordinary, config.n_trap, config.n_captions)
    kinds = usable_kinds(model)
    answers = V.items(model, ordinary, kinds=kinds) + V.items(model, traps, kinds=kinds)
    captions = V.items(model, caps, kinds=("caption",))
    n_layers = int(vlm_config(model).text_config.num_hidden_layers)
    timings: dict[str, float] = {}

    tick = time.perf_counter()
    vhd_df = V.vhd(model, answers, top_k=config.top_k)
    timings["vhd_s"] = time.perf_counter() - tick

    dims = V.sink_dims(model, min_value=config.tau)
    scan = _sink_scan(model, answers, dims, config.tau)
    sink_df = scan.frame(model_name(model))
    seg_cache: dict[str, dict] = {}

    def segments(item):
        if item.prompt_id not in seg_cache:
            seg_cache[item.prompt_id] = IV.var_segments(model, item, dims, config.tau)
        return seg_cache[item.prompt_id]

    vhr = IV.VHR(alpha=config.alpha, layers=config.vhr_layers or tuple(range(n_layers // 2)))
    var = IV.VAR(p=config.p, rho=config.rho, summ=config.summ, layers=config.var_layers or None)
    outcomes, frames, summary_kinds, left_out = {}, [vhd_df, sink_df], None, []
    bar = _bar(progress, len(CONDITIONS) * (len(answers) + len(captions)))
    plan = {"baseline": (lambda i, ref: None, None, None), "vhr": (lambda i, ref: vhr, None, None),
            "vhr_random": (lambda i, ref: IV.RandomHeads(vhr, ref, seed=config.seed + i), "vhr", None),
            "var": (lambda i, ref: var, None, segments),
            "var_random": (lambda i, ref: IV.RandomHeads(var, ref, seed=config.seed + i), "var", segments)}
    for cond, (policy, ref, seg) in plan.items():
        tick = time.perf_counter()
        outcomes[cond] = IV.evaluate(model, answers, captions, policy, reference=outcomes.get(ref), segments=seg,
                                     max_caption_tokens=config.max_caption_tokens, progress=bar)
        timings[f"{cond}_s"] = time.perf_counter() - tick
        if cond == "baseline":  # a kind the model answers no better than its majority answer stays out of the summary
            left_out = V.below_baseline(V.answer_frame(model, answers, outcomes[cond].preds, cond))
            summary_kinds = [k for k in kinds if k not in left_out]
        frames.append(V.answer_frame(model, answers, outcomes[cond].preds, cond, summary_kinds=summary_kinds))
        if captions:
            frames.append(V.chair_frame(model, outcomes[cond].captions, [c.objects for c in captions], cond))
        frames.append(_chosen_frame(model, outcomes[cond], cond, len(answers)))
    if bar is not None:
        bar.close()
    frames += _caption_vhd(model, captions, outcomes["baseline"], config.top_k)
    frames.append(_centric_frame(model, answers, segments, config))
    df = pd.concat([f for f in frames if len(f)], ignore_index=True)
    paths = {"vision": write_parquet(od.path / "vision.parquet", df)}
    summary = _summary(df, vhd_df, scan, dims, outcomes, captions)
    summary["summary_kinds"], summary["below_majority_baseline"] = summary_kinds, left_out
    summary["t_vhd_by_answer"] = _t_vhd_by_answer(vhd_df, answers, outcomes["baseline"].preds)
    example = _example(model, config, traps, kinds)
    paths["report"] = write_report(od.path / "report.html", f"Vision-aware heads · {model_name(model)}",
                                   _sections(model, df, vhd_df, sink_df, example, config), intro=_intro(summary, config))
    timings["total_s"] = time.perf_counter() - t0
    paths["run"] = write_run(od, model, inputs={"answer_items": len(answers), "caption_items": len(captions),
                                                "kinds": list(kinds), "sink_dims": list(dims)},
                             timings=timings, summary=summary)
    return paths


def _bar(progress: bool, total: int):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="vision", unit="item")


def _sink_scan(model, its, dims, tau):
    from interp.images import vlm_batch

    b = vlm_batch(model, [it.prompt for it in its[:16]], [it.image for it in its[:16]], pad_id=V._pad(model))
    return V.scan_sinks(model, b, dims, tau=tau)


def _chosen_frame(model, outcome, cond: str, n_answers: int) -> pd.DataFrame:
    """How often each head was edited at the answer step (answer items only), per condition."""
    if cond == "baseline":
        return pd.DataFrame()
    counts: dict[tuple[int, int], int] = {}
    for log in outcome.logs[:n_answers]:
        for (step, layer), heads in log.chosen.items():
            if step == 0:
                for h in heads:
                    counts[(layer, h)] = counts.get((layer, h), 0) + 1
    rows = [{"layer": l, "head": h, "metric": "edited_rate", "value": c / max(n_answers, 1), "condition": cond}
            for (l, h), c in sorted(counts.items())]
    return make_frame(pd.DataFrame(rows).assign(model=model_name(model), task="shapes")) if rows else pd.DataFrame()


def _caption_vhd(model, captions, baseline, top_k: int) -> list[pd.DataFrame]:
    tok = model.tokenizer
    out = []
    for item, text in zip(captions, baseline.captions):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if ids:
            out.append(V.caption_t_vhd(model, item, ids, top_k=top_k))
    return out


def _centric_frame(model, answers, segments, config: VisionConfig) -> pd.DataFrame:
    """Per head: mean image attention of the answer query and how often the head is image-centric there."""
    from interp.images import vlm_batch

    ratios, centric = [], []
    for it in answers[: min(len(answers), 16)]:
        seg = segments(it)
        b = vlm_batch(model, [it.prompt], [it.image], pad_id=V._pad(model))
        st = V.vlm_stats(model, b, segments={k: v[None] for k, v in seg.items()})
        m = st.segment_mass[0, :, :, -1]  # [layer head_index n_segments]
        names = list(st.segment_names)
        ratios.append(m[..., names.index("image")])
        centric.append(V.image_centric(m, names, rho=config.rho, summ=config.summ).float())
    r, c = torch_mean(ratios), torch_mean(centric)
    rows = [{"layer": l, "head": h, "metric": metric, "value": float(t[l, h])}
            for metric, t in (("image_attention", r), ("image_centric_rate", c))
            for l in range(t.shape[0]) for h in range(t.shape[1])]
    return make_frame(pd.DataFrame(rows).assign(model=model_name(model), task="var"))


def torch_mean(ts):
    import torch

    return torch.stack(ts).mean(0)


def _summary(df, vhd_df, scan, dims, outcomes, captions) -> dict:
    def val(metric, cond, pid):
        v = df[(df.metric == metric) & (df.condition == cond) & (df.prompt_id == pid)]["value"]
        return None if v.empty else round(float(v.iloc[0]), 4)

    visual, _ = scan.union()
    toks = df[df.metric == "t_vhd_token"]
    return {"top_vhd_heads": V.top_heads(vhd_df, 10), "sink_dims": list(dims),
            "visual_sinks_found": int(visual.sum()), "max_image_sink_value": round(float(scan.value[:, scan.image_mask].max()), 3) if scan.image_mask.any() else None,
            "conditions": {c: {"accuracy": val("accuracy", c, "all"), "hallucination_rate": val("hallucination_rate", c, "trap"),
                               "trap_accuracy": val("trap_accuracy", c, "trap"), "chair_i": val("chair_i", c, "captions"),
                               "chair_s": val("chair_s", c, "captions")} for c in outcomes},
            "t_vhd_shape_words": {k: round(float(g.mean()), 4) for k, g in toks.groupby("shape_word")["value"] if k} if len(toks) else {}}


def _t_vhd_by_answer(vhd_df, answers, preds) -> dict:
    """Mean answer-step T-VHD of trap questions answered from the prior vs correctly, and of ordinary
    questions answered correctly vs not (He et al.: hallucinated tokens have lower T-VHD)."""
    t = vhd_df[vhd_df.metric == "t_vhd"].set_index("prompt_id")["value"]
    groups: dict[str, list[float]] = {}
    for it, p in zip(answers, preds):
        if it.prompt_id not in t.index:
            continue
        if it.trap:
            key = "trap_prior_answer" if p == it.prior else ("trap_correct" if p == it.answer else "trap_other")
        else:
            key = f"{it.group}_{'correct' if p == it.answer else 'wrong'}"
        groups.setdefault(key, []).append(float(t[it.prompt_id]))
    return {k: {"mean_t_vhd": round(sum(v) / len(v), 4), "n": len(v)} for k, v in sorted(groups.items())}


def _example(model, config: VisionConfig, traps, kinds):
    """The example image and its item: ``--image`` with ``--question``, else the first trap scene."""
    from interp.images import image_size, load_image, n_image_tokens, vlm_config
    from interp.models.tinyvlm import chat_ids

    if config.image is not None:
        img = load_image(config.image, image_size(model), resize=config.resize)
        ids = chat_ids(model.tokenizer, config.question, n_image_tokens(model), int(vlm_config(model).image_token_id))
        return V.Item("example", "caption", tuple(ids), img, "", None, False)
    its = V.items(model, traps[:1], kinds=kinds)
    return its[0]


def _sections(model, df, vhd_df, sink_df, example, config):
    from interp.plot.niah import ranked_table
    from interp.plot.vision import condition_table, patch_overlay, sink_evidence

    att = V.answer_attention(model, example)  # [layer head_index n_image]
    grid = int(round(att.shape[-1] ** 0.5))
    ranked = V.top_heads(vhd_df, 12)
    labels = [h for h, _ in ranked]
    overlay = {}
    for label in labels:
        l, h = (int(x) for x in label[1:].split("H"))
        a = att[l, h].numpy()
        overlay[f"{label} (image mass {a.sum():.2f})"] = a.reshape(grid, grid) if grid * grid == a.size else a[None]
    conds = [c for c in CONDITIONS if (df["condition"] == c).any()]
    metrics = [("accuracy (ordinary questions)", "accuracy", "all")]
    metrics += [(f"accuracy · {k}", "accuracy", k) for k in sorted(df[(df.metric == "accuracy") & (df.prompt_id != "all")]["prompt_id"].unique())]
    metrics += [("trap hallucination rate (prior answer)", "hallucination_rate", "trap"),
                ("  · color traps", "hallucination_rate", "trap_color"), ("  · existence traps", "hallucination_rate", "trap_exist"),
                ("trap-set accuracy", "trap_accuracy", "trap"), ("trap positives accuracy", "trap_positive_accuracy", "trap"),
                ("CHAIR_i (hallucinated shape mentions)", "chair_i", "captions"), ("CHAIR_s (captions with any)", "chair_s", "captions"),
                ("CHAIR attribute rate", "chair_attr", "captions")]
    question = example.prompt_id if example.prompt_id != "example" else config.question
    sections = [("VHD per head (answer step, mean over items)", head_heatmap(vhd_df, "vhd", title="VHD", colorscale="Reds")),
                ("Top vision-aware heads", ranked_table(vhd_df, "vhd", k=15)),
                (f"Answer-query attention on the image patches ({html_escape(question)}); pick a head", patch_overlay(example.image, overlay)),
                ("Before / after: VHR and VAR against random-head controls", condition_table(df, conds, metrics)),
                ("Visual sinks: massive activation in the sink dimensions", sink_evidence(sink_df, config.tau)),
                ("Image attention of the answer query per head", head_heatmap(df, "image_attention", title="image attention")),
                ("How often each head is image-centric (VAR selection)", head_heatmap(df, "image_centric_rate", title="image-centric rate"))]
    return sections


def html_escape(s: str) -> str:
    import html

    return html.escape(str(s))


def _intro(summary: dict, config: VisionConfig) -> str:
    c = summary["conditions"]
    base = c.get("baseline", {})
    sinks = (f"{summary['visual_sinks_found']} visual sink tokens" if summary["visual_sinks_found"]
             else f"<b>no visual sink tokens</b>: the largest normalized activation of an image token in the sink dims "
                  f"{summary['sink_dims']} is {summary['max_image_sink_value']} (τ = {config.tau:g}); see the evidence plot")
    left = summary.get("below_majority_baseline") or []
    note = (f" <b>{', '.join(left)}</b> answers do not beat the majority-class baseline (always the most frequent true "
            f"answer), so the summary accuracy and the VHR/VAR comparison leave them out (their rows stay in the table)."
            if left else "")
    return (f"<p>Held-out accuracy on ordinary questions{' (' + ', '.join(summary.get('summary_kinds') or []) + ')' if left else ''}: "
            f"<b>{base.get('accuracy')}</b>;{note} trap hallucination rate "
            f"(prior answers): <b>{base.get('hallucination_rate')}</b>; CHAIR_i {base.get('chair_i')}, CHAIR_s {base.get('chair_s')}. "
            f"Top vision-aware heads (VHD): {', '.join(f'{h} ({v:.2f})' for h, v in summary['top_vhd_heads'][:6])}. "
            f"VAR found {sinks}. VHR: α = {config.alpha:g}; VAR: p = {config.p:g}, ρ = {config.rho:g}, summ = {config.summ:g}. "
            f"Random controls edit the same number of heads per layer and step.</p>")


__all__ = ["run_vision", "CONDITIONS", "usable_kinds"]
