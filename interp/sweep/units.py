"""Running one sweep unit on a loaded model: the same library functions and jobs as the CLI verbs.

- **Interventions** run through :func:`interp.intervene.heads.sweep_heads` (batched: many heads per forward), one
  call per metric; the unedited value is stored beside them (layer and head −1, condition ``clean``).
- **Patching / AtP** call :func:`interp.analyze.patching.activation_patching` and
  :func:`interp.analyze.attribution.attribution_patching` per head; their metric is renamed
  ``<their metric>[<logits metric>]``, e.g. ``patch:z[logit_diff]``. AtP values are divided by
  ``m_corrupt − m_clean``, as ``interp patch`` does, so both read as the share of the behaviour a head carries.
- **Jobs** (atlas, sinks, entropy, retrieval) run their ``run_*`` function into a temporary folder; the unit
  returns the job's tidy rows and the folder's files, which the driver stores under ``DIR/units/``.

Every unit's rows carry ``seed`` (the unit's), ``condition`` (the intervention's label, or the job's own
condition) and ``action`` (the unit's label).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from interp.errors import InputError
from interp.sweep.spec import Unit, job_config
from interp.types import HeadId


@dataclass
class UnitResult:
    frame: pd.DataFrame
    files: dict[str, bytes] = field(default_factory=dict)  # job outputs, stored under DIR/units/<unit>/
    seconds: float = 0.0


@dataclass
class TaskData:
    name: str
    clean: Any  # texts or [batch pos] tokens
    corrupted: Any | None
    tokens: torch.Tensor  # [batch pos] the clean batch, right-padded
    scored: torch.Tensor  # [batch pos] bool: positions whose next token the loss scores
    ioi: Any | None = None


def build_task(model, task: dict, seed: int) -> TaskData:
    """The task's prompts (and corruptions) for ``seed``."""
    from interp.inputs import start_token_id, to_batch

    name = task["name"]
    if name == "ioi":
        from interp.tasks.ioi import ioi

        data = ioi(model, task["size"], seed=seed, corruption=task["corruption"])
        batch = to_batch(model, data.clean)
        scored = batch.attention_mask.bool().clone()
        scored[torch.arange(scored.shape[0]), batch.attention_mask.sum(1) - 1] = False  # the last token has no next
        return TaskData(name, data.clean, data.corrupted, batch.tokens, scored, data)
    if name == "induction":
        from interp.tasks.texts import repeated_random_tokens

        n, L = task["size"], task["length"]
        bos = start_token_id(model.tokenizer)
        clean = repeated_random_tokens(model.cfg.d_vocab, L, n, seed=seed, bos=bos)
        fresh = repeated_random_tokens(model.cfg.d_vocab, L, n, seed=seed + 10_000, bos=bos)
        start = clean.shape[1] - L  # the second copy
        corrupted = torch.cat([clean[:, :start], fresh[:, start:]], 1)
        scored = torch.zeros_like(clean, dtype=torch.bool)
        scored[:, start - 1:-1] = True  # positions that predict the second copy
        return TaskData(name, clean, corrupted, clean, scored)
    if name == "prose":
        from interp.analyze.sinks import probe_tokens

        tokens = probe_tokens(model, n_prompts=task["size"], n_tokens=task["tokens"])
        scored = torch.ones_like(tokens, dtype=torch.bool)
        scored[:, -1] = False
        return TaskData(name, tokens, None, tokens, scored)
    raise InputError(f"unknown task {name!r}")


@dataclass(frozen=True)
class NextTokenLoss:
    """Mean next-token cross-entropy over the scored positions (only those are read, so a sweep unembeds only them)."""

    tokens: torch.Tensor  # [batch pos]
    scored: torch.Tensor  # [batch pos] bool
    name: str = "loss"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        at = self.scored[:, :-1].to(logits.device)
        picked = logits[:, :-1][at]  # [n_scored d_vocab]
        target = self.tokens[:, 1:].to(logits.device)[at]  # [n_scored]
        return torch.nn.functional.cross_entropy(picked.float(), target)


@dataclass(frozen=True)
class Accuracy:
    data: Any  # IOIData
    name: str = "accuracy"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return (self.data.metric.per_prompt(logits) > 0).float().mean()


def metric_fn(name: str, data: TaskData):
    if name == "loss":
        return NextTokenLoss(data.tokens, data.scored)
    if data.ioi is None:
        raise InputError(f"metric {name!r} needs the ioi task, not {data.name!r}")
    return data.ioi.metric if name == "logit_diff" else Accuracy(data.ioi)


def _heads(model, heads) -> list[HeadId]:
    if heads == "all":
        return [HeadId(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    return [HeadId.parse(h) for h in heads]


def make_edit(model, action: dict, data: TaskData):
    """``head → edit value`` for a per-head intervention (what ``sweep_heads`` applies one head at a time)."""
    from interp.intervene import values as V

    name = action["name"]
    if name == "ablate" and action["how"] == "zero":
        return V.ZeroAblate
    if name == "ablate":
        from interp.intervene.means import mean_activations

        reference = data.corrupted if data.corrupted is not None else data.clean
        means = mean_activations(model, reference, sites=("z",))
        return lambda h: V.MeanAblate("z", h.layer, h, mean=means)
    if name == "scale":
        from interp.edits import ScaleHeadOutput

        return lambda h: ScaleHeadOutput(h, float(action["factor"]))
    if name == "patch":
        from interp.hooks import CaptureSpec
        from interp.intervene.run import check_batches_align, run

        _, bad = check_batches_align(model, data.clean, data.corrupted)
        _, cap = run(model, bad.tokens, capture=CaptureSpec(sites=("z",)), attention_mask=bad.attention_mask)
        return lambda h: V.Patch("z", h.layer, h, source=cap)
    if name == "steer":
        vectors = steering_vectors(model, data)
        return lambda h: V.AddToHead(h, vectors[h.layer, h.head], float(action["alpha"]))
    if name == "edit":
        from interp import edits as attn_edits

        cls = getattr(attn_edits, action["edit"], None) or getattr(V, action["edit"])
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in action["fields"].items()}
        return lambda h: cls(h, **kw)
    raise InputError(f"unknown intervention {name!r}")


def steering_vectors(model, data: TaskData) -> torch.Tensor:
    """``[layer head_index d_head]``: per head, the mass-mean shift of ``z`` at the last token from corrupted to
    clean prompts, as a unit direction times the std of the prompts' projections on it (ITI's σθ)."""
    from interp.intervene.steering import last_token_site

    zc, zn = last_token_site(model, data.clean, "z"), last_token_site(model, data.corrupted, "z")  # [n layer head d]
    shift = zc.mean(0) - zn.mean(0)
    theta = shift / shift.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    proj = (torch.cat([zc, zn]) * theta).sum(-1)  # [2n layer head]
    return theta * proj.std(0, unbiased=False)[..., None]


def _intervention(model, unit: Unit, data: TaskData) -> pd.DataFrame:
    from interp.intervene.heads import sweep_heads

    heads = _heads(model, unit.action["heads"])
    edit = make_edit(model, unit.action, data)
    frames = []
    for m in unit.metrics:
        df = sweep_heads(model, data.clean, edit, metric_fn(m, data), heads, progress=False, task=unit.task_name, metric_name=m)
        clean = df.iloc[:1].assign(layer=-1, head=-1, value=df.attrs["clean"], condition="clean")
        frames += [df.assign(condition=unit.label), clean]
    return pd.concat(frames, ignore_index=True)


def _task_analysis(model, unit: Unit, data: TaskData) -> pd.DataFrame:
    frames = []
    for m in unit.metrics:
        metric = metric_fn(m, data)
        if unit.action["name"] == "patching":
            from interp.analyze.patching import activation_patching

            df = activation_patching(model, data.clean, data.corrupted, metric, site=unit.action["site"], by="head", task=unit.task_name)
        else:
            from interp.analyze.attribution import attribution_patching

            df = attribution_patching(model, data.clean, data.corrupted, metric, by="head", qk_fix=unit.action["qk_fix"],
                                      task=unit.task_name)
            df["value"] = df["value"] / df.attrs["scale"]  # m_source − m_base, as `interp patch` reports AtP
        frames.append(df.assign(metric=df["metric"] + f"[{m}]", condition=unit.label))
    return pd.concat(frames, ignore_index=True)


# job → (its run function's module and name, the result files that hold its tidy rows)
JOBS = {"atlas": ("interp.jobs.atlas", "run_atlas", ("heads",)), "sinks": ("interp.jobs.sinks", "run_sinks", ("sinks",)),
        "entropy": ("interp.jobs.sinks", "run_entropy", ("entropy",)),
        "retrieval": ("interp.jobs.retrieval", "run_retrieval", ("scores", "niah"))}


def _job(model, unit: Unit) -> tuple[pd.DataFrame, dict[str, bytes]]:
    import importlib
    import inspect

    module, fn_name, tables = JOBS[unit.action["name"]]
    fn = getattr(importlib.import_module(module), fn_name)
    config = job_config(unit.action, unit.seed)
    quiet = {"progress": False} if "progress" in inspect.signature(fn).parameters else {}
    from interp.plot.export import PLOTLY_JS, plotly_js_at

    with tempfile.TemporaryDirectory(prefix="interp-unit-") as tmp, plotly_js_at(f"../../{PLOTLY_JS}"):
        paths = fn(model, Path(tmp) / "out", config, **quiet)  # its report will sit in <sweep>/units/<unit>/
        df = pd.concat([pd.read_parquet(paths[t]) for t in tables], ignore_index=True)
        files = {p.name: p.read_bytes() for p in (Path(tmp) / "out").iterdir() if p.is_file() and not p.name.startswith(".")}
    wanted = unit.action.get("metrics") or []
    if wanted:
        df = df[df["metric"].isin(wanted)]
    if "condition" not in df.columns:
        df["condition"] = unit.label
    return df.assign(condition=df["condition"].fillna(unit.label)), files


def execute(model, unit: Unit) -> UnitResult:
    """Compute one unit on ``model`` (already loaded) and return its tidy rows (and a job's files)."""
    from interp.schema import make_frame

    t0 = time.perf_counter()
    files: dict[str, bytes] = {}
    if unit.kind == "analysis" and unit.task is None:
        df, files = _job(model, unit)
    else:
        data = build_task(model, unit.task, unit.seed)
        df = _intervention(model, unit, data) if unit.kind == "intervention" else _task_analysis(model, unit, data)
    df = df.assign(seed=unit.seed, action=unit.label)
    df = make_frame(df.drop(columns=[c for c in ("unit",) if c in df.columns]))
    return UnitResult(df, files, time.perf_counter() - t0)


__all__ = ["execute", "UnitResult", "build_task", "metric_fn", "make_edit", "steering_vectors", "NextTokenLoss"]
