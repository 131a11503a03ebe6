"""Sink interventions as data: ``SinkCalibrate`` (ACT, methods.md §3) and ``InitialTokenScale`` (ZeroTuning, §5),
their head searches, and accuracy on the shipped multiple-choice set.

Both compile to :mod:`interp.edits` values applied inside the fused attention path; nothing here re-implements
attention.

- ``InitialTokenScale(heads, gamma)`` → ``ScaleSegment(h, "first", γ, "renormalize")`` per head: the first
  token's attention ×γ, row renormalized (a logit bias of log γ).
- ``SinkCalibrate(heads, beta=0.4, tau=0.1)`` → per head ``ScaleSegment(h, "sinks:<head>", β, "redistribute")``:
  the attention on the head's hidden sinks becomes β× and the freed mass goes to the other keys in proportion.
  ACT detects each head's sink set on the head's own attention map; the kernel takes key *segments* shared
  by all heads, so each calibrated head gets its own segment (a ``[batch key_pos]`` mask of that head's hidden
  sinks, segments overlapping across heads) and an edit on that segment only (β = 1 on the others is the
  identity). Detection runs on a clean forward pass (``key_mass``) before the calibrated pass, not inside the
  calibrated pass as in ACT's code; with several heads calibrated, later layers therefore use sink sets
  from the uncalibrated model. Sink sets exclude each row's first token (``act_quirk=True``: drop the first
  element of the sink set instead, as ACT's code does; see :mod:`interp.analyze.sinks`) and use ACT's α > τ
  with no minimum query count. ACT also forces
  row 0 to [1, 0, …]; with causal attention row 0 already is.

Evaluation: an MC item's option score is the log-probability of the option's first token after the prompt
(:mod:`interp.tasks.mc`); the prediction is the arg-max option. Head searches follow the papers: ACT keeps
every head (layers ≥ 2) that, calibrated alone, raises calibration-split accuracy above the baseline; ZeroTuning
profiles each candidate (a head or a whole layer) at a fixed γ, keeps the "up-effective" ones and then picks γ
from a grid on the calibration split. Both are then scored once on the test split.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from interp.analyze.sinks import DEFAULT_TAU, check_threshold, hidden_sinks, key_importance
from interp.edits import Edit, ScaleSegment
from interp.errors import InputError
from interp.schema import make_frame
from interp.types import HeadId


def _heads(heads) -> tuple[HeadId, ...]:
    out = tuple(h if isinstance(h, HeadId) else HeadId.parse(str(h)) for h in heads)
    if not out:
        raise InputError("an intervention needs at least one head, e.g. heads=[HeadId(14, 3)]")
    return out


@dataclass(frozen=True)
class InitialTokenScale:
    """ZeroTuning: scale the first token's attention by ``gamma`` in ``heads`` and renormalize each row."""

    heads: tuple[HeadId, ...]
    gamma: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "heads", _heads(self.heads))
        if not self.gamma >= 0:
            raise InputError(f"InitialTokenScale gamma must be >= 0, got {self.gamma}")

    def segments(self, stats=None) -> dict:
        return {"first": "first"}

    def to_edits(self, segment: str = "first") -> list[Edit]:
        return [ScaleSegment(h, segment, float(self.gamma), "renormalize") for h in self.heads]


@dataclass(frozen=True)
class SinkCalibrate:
    """ACT: in ``heads``, scale attention to each head's hidden sinks (α > ``tau``, not the first token) by
    ``beta`` and give the freed mass to the other keys in proportion to their attention."""

    heads: tuple[HeadId, ...]
    beta: float = 0.4
    tau: float = DEFAULT_TAU
    act_quirk: bool = False

    def __post_init__(self):
        object.__setattr__(self, "heads", _heads(self.heads))
        if not self.beta >= 0:
            raise InputError(f"SinkCalibrate beta must be >= 0 (0.4 in ACT), got {self.beta}")
        check_threshold("tau", self.tau)

    @staticmethod
    def segment_name(head: HeadId) -> str:
        return f"sinks:{head}"

    def segments(self, stats) -> dict:
        """``{segment_name(h): [batch key_pos] mask}`` from clean statistics computed with ``key_mass=True``."""
        if stats is None or stats.key_mass is None:
            raise InputError("SinkCalibrate needs clean statistics with key_mass=True to detect the hidden sinks")
        a = key_importance(stats.key_mass, stats.attention_mask, causal=stats.meta.get("causal", True))
        hid = hidden_sinks(a, stats.attention_mask, tau=self.tau, min_queries=1, act_quirk=self.act_quirk)
        return {self.segment_name(h): hid[:, h.layer, h.head, :] for h in self.heads}

    def to_edits(self, segment: str | None = None) -> list[Edit]:
        """One redistribute edit per head on its own segment (or on the shared ``segment`` when given)."""
        return [ScaleSegment(h, segment or self.segment_name(h), float(self.beta), "redistribute") for h in self.heads]


Intervention = InitialTokenScale | SinkCalibrate


@dataclass
class _Batch:
    items: list[dict]
    option_ids: list[list[int]]
    clean: object = None  # AttnStats with key_mass
    base_scores: list[list[float]] = field(default_factory=list)


def _option_scores(stats, batch: _Batch) -> list[list[float]]:
    last = stats.attention_mask.sum(1) - 1  # right padding: the last real token predicts the option
    logp = stats.logits[torch.arange(len(batch.items)), last].float().log_softmax(-1)  # [batch d_vocab]
    return [[float(logp[i, t]) for t in ids] for i, ids in enumerate(batch.option_ids)]


class MCEvaluator:
    """Scores MC items under interventions, running the clean pass (scores + sink detection) once per batch."""

    def __init__(self, model, items: Sequence[dict], *, batch_size: int = 16, backend: str = "auto"):
        from interp.attnstats import attention_stats
        from interp.tasks.mc import option_token_ids

        if not items:
            raise InputError("no MC items to evaluate; load some with interp.tasks.mc.load_mc()")
        self.model, self.backend = model, backend
        ids = option_token_ids(model.tokenizer, list(items))
        self.batches = []
        for i in range(0, len(items), batch_size):
            chunk = list(items[i: i + batch_size])
            b = _Batch(chunk, ids[i: i + batch_size])
            b.clean = attention_stats(model, self._prompts(b), segments={"first": "first"}, key_mass=True, backend=backend,
                                      padding_side="right")
            b.base_scores = _option_scores(b.clean, b)
            self.batches.append(b)

    @staticmethod
    def _prompts(b: _Batch) -> list[str]:
        return [it["prompt"] for it in b.items]

    @property
    def clean_stats(self):
        return [b.clean for b in self.batches]

    def scores(self, interventions: Sequence[Intervention] = ()) -> list[list[float]]:
        from interp.attnstats import attention_stats

        if not interventions:
            return [s for b in self.batches for s in b.base_scores]
        out = []
        for b in self.batches:
            segs, edits = {}, []
            for iv in interventions:
                segs.update(iv.segments(b.clean))
                edits += iv.to_edits()
            st = attention_stats(self.model, self._prompts(b), segments=segs, edits=edits, backend=self.backend,
                                 allow_overlap=True, padding_side="right")
            out += _option_scores(st, b)
        return out

    def accuracy(self, interventions: Sequence[Intervention] = ()) -> float:
        return _accuracy(self.scores(interventions), [it for b in self.batches for it in b.items])

    def items(self) -> list[dict]:
        return [it for b in self.batches for it in b.items]


def _accuracy(scores, items) -> float:
    return sum(int(max(range(len(s)), key=s.__getitem__) == it["answer"]) for s, it in zip(scores, items)) / max(len(items), 1)


def sink_heads(evaluator: MCEvaluator, *, tau: float = DEFAULT_TAU, min_layer: int = 2) -> list[tuple[HeadId, float]]:
    """Heads (layer ≥ ``min_layer``) that have hidden sinks on the evaluator's prompts, with their mean hidden-sink
    α mass per prompt, strongest first. Calibrating any other head is a no-op."""
    tot = None
    for st in evaluator.clean_stats:
        a = key_importance(st.key_mass, st.attention_mask)
        m = (a * hidden_sinks(a, st.attention_mask, tau=tau)).sum((0, 3))  # [layer head]
        tot = m if tot is None else tot + m
    n = sum(st.tokens.shape[0] for st in evaluator.clean_stats)
    ranked = [(HeadId(l, h), float(tot[l, h]) / n) for l in range(min_layer, tot.shape[0]) for h in range(tot.shape[1]) if tot[l, h] > 0]
    return sorted(ranked, key=lambda x: -x[1])


def search_act_heads(evaluator: MCEvaluator, *, beta: float = 0.4, tau: float = DEFAULT_TAU, max_candidates: int | None = 32,
                     min_layer: int = 2, progress: bool = False) -> pd.DataFrame:
    """ACT head search: calibrate one head at a time; returns one row per candidate with ``accuracy`` and ``gain``."""
    base = evaluator.accuracy()
    cands = sink_heads(evaluator, tau=tau, min_layer=min_layer)[:max_candidates]
    rows = []
    for h, strength in _progress(cands, progress, "ACT heads"):
        acc = evaluator.accuracy([SinkCalibrate((h,), beta, tau)])
        rows.append({"head_id": str(h), "layer": h.layer, "head": h.head, "sink_alpha": strength, "accuracy": acc, "gain": acc - base})
    return pd.DataFrame(rows, columns=["head_id", "layer", "head", "sink_alpha", "accuracy", "gain"])


def search_zerotuning(evaluator: MCEvaluator, *, profile_gamma: float = 2.0, gammas: Sequence[float] = (0.5, 1.5, 2.0, 3.0),
                      unit: str = "layer", progress: bool = False) -> tuple[pd.DataFrame, tuple[HeadId, ...], float, float]:
    """ZeroTuning: profile each ``unit`` (``"layer"`` = all heads of a layer, or ``"head"``) at ``profile_gamma``,
    keep the up-effective ones (calibration accuracy above baseline), then pick γ from ``gammas`` for them.
    Returns ``(profile rows, chosen heads, chosen γ, calibration accuracy at γ)``; no heads → γ = 1."""
    if unit not in ("layer", "head"):
        raise InputError(f"unit must be 'layer' or 'head', got {unit!r}")
    base = evaluator.accuracy()
    L, H = evaluator.model.cfg.n_layers, evaluator.model.cfg.n_heads
    units = [tuple(HeadId(l, h) for h in range(H)) for l in range(L)] if unit == "layer" else [(HeadId(l, h),) for l in range(L) for h in range(H)]
    rows = []
    for heads in _progress(units, progress, "ZeroTuning units"):
        acc = evaluator.accuracy([InitialTokenScale(heads, profile_gamma)])
        rows.append({"unit": f"L{heads[0].layer}" if unit == "layer" else str(heads[0]), "layer": heads[0].layer,
                     "accuracy": acc, "gain": acc - base})
    prof = pd.DataFrame(rows)
    up = [u for u, r in zip(units, rows) if r["gain"] > 0]
    chosen = tuple(h for u in up for h in u)
    if not chosen:
        return prof, (), 1.0, base
    best = max(((evaluator.accuracy([InitialTokenScale(chosen, g)]), g) for g in gammas), key=lambda x: (x[0], -abs(x[1] - 1)))
    return prof, chosen, float(best[1]), float(best[0])


def _interleave(items: list[dict], limit: int | None) -> list[dict]:
    """Round-robin over tasks, so that a limit keeps every task represented."""
    by_task: dict[str, list[dict]] = {}
    for it in items:
        by_task.setdefault(it["task"], []).append(it)
    out = [it for group in zip(*by_task.values()) for it in group]
    used = {it["id"] for it in out}
    out += [it for it in items if it["id"] not in used]
    return out[:limit]


def _progress(xs, on: bool, desc: str):
    if not on:
        return xs
    from tqdm.auto import tqdm

    return tqdm(xs, desc=desc)


def evaluate_sink_interventions(model, *, tasks=None, beta: float = 0.4, tau: float = DEFAULT_TAU, max_candidates: int | None = 32,
                                calib_limit: int | None = None, test_limit: int | None = None, zt_unit: str = "layer",
                                batch_size: int = 16, progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Search ACT heads and ZeroTuning heads/γ on the calibration split, then score baseline, ACT and ZeroTuning
    on the test split (overall and per task). Returns a tidy frame (metric ``accuracy``, layer = head = −1,
    ``condition`` ∈ {baseline, act, zerotuning}, ``prompt_id`` = task or "all") and a dict with the choices."""
    from interp.models import model_name
    from interp.tasks.mc import load_mc

    calib = _interleave(load_mc(tasks, "calib"), calib_limit)
    test = _interleave(load_mc(tasks, "test"), test_limit)
    ev_c = MCEvaluator(model, calib, batch_size=batch_size)
    act_rows = search_act_heads(ev_c, beta=beta, tau=tau, max_candidates=max_candidates, progress=progress)
    act_heads = tuple(HeadId(int(r.layer), int(r.head)) for r in act_rows.itertuples() if r.gain > 0)
    zt_prof, zt_heads, gamma, zt_calib = search_zerotuning(ev_c, unit=zt_unit, progress=progress)
    ev_t = MCEvaluator(model, test, batch_size=batch_size)
    conds = {"baseline": [], "act": [SinkCalibrate(act_heads, beta, tau)] if act_heads else [],
             "zerotuning": [InitialTokenScale(zt_heads, gamma)] if zt_heads else []}
    rows, items = [], ev_t.items()
    for cond, ivs in conds.items():
        scores = ev_t.scores(ivs)
        for task in ["all", *sorted({it["task"] for it in items})]:
            sel = [i for i, it in enumerate(items) if task == "all" or it["task"] == task]
            rows.append({"layer": -1, "head": -1, "metric": "accuracy", "condition": cond, "prompt_id": task,
                         "value": _accuracy([scores[i] for i in sel], [items[i] for i in sel])})
    df = make_frame(pd.DataFrame(rows).assign(model=model_name(model), task="mc"))
    info = {"calib_items": len(calib), "test_items": len(test), "calib_baseline": ev_c.accuracy(),
            "act_heads": [str(h) for h in act_heads], "act_search": act_rows, "beta": beta, "tau": tau,
            "zerotuning_unit": zt_unit, "zerotuning_heads": [str(h) for h in zt_heads], "gamma": gamma,
            "zerotuning_calib_accuracy": zt_calib, "zerotuning_profile": zt_prof}
    return df, info


__all__ = ["SinkCalibrate", "InitialTokenScale", "MCEvaluator", "sink_heads", "search_act_heads", "search_zerotuning",
           "evaluate_sink_interventions"]
