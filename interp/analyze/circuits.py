"""Circuit discovery by path patching, stage by stage backwards from the logits (methods.md §8, Wang et al. 2022,
Merullo et al. 2024), with AtP* pruning, head classes and faithfulness.

**Stages.** Stage 1 patches each sender head's ``z`` (all positions) from the corrupted run into the clean run
with every later head frozen at its clean ``z``, and reads the metric directly (path to the logits, MLPs
included). Stage s ≥ 2 takes the heads kept at stage s − 1 as receivers: the sender is patched and later heads
frozen up to the last receiver layer, the receivers' ``q``, ``k`` and ``v`` (KV groups for GQA, so a k/v receiver
is shared by the group's query heads) are recorded, and a fresh clean run patches only those receivers that sit
after the sender. The effect is ``(m − m_clean)/(m_corrupt − m_clean)`` (1 = the sender's path carries the
whole corruption effect; negative = the path works against the task).

**Which heads are kept.** Per stage, the top ``top_frac`` of all heads (2%, the paper's rule; at least one) by
``|effect|`` whose ``|effect| ≥ min_effect``. They are the circuit's heads at that stage and the next stage's
receivers.

**Pruning.** One AtP* pass (:func:`interp.analyze.attribution.attribution_patching`) estimates every head's
total effect; only the ``keep`` heads with the largest ``|atp:z|`` among a stage's eligible senders are path
patched exactly. A head with a large path effect has a large total effect unless other paths cancel it, so
this is a heuristic: ``benchmarks/circuits.py`` reports how many of the unpruned circuit's heads it keeps.

**Classes** (thresholds are :class:`CircuitParams` fields):

- stage 1, a head that moves a token: ``|copy score| ≥ copy_threshold`` or attention END→IO or END→S2 ≥
  ``attn_threshold``. With effect > 0 it is a name mover (the color mover in Colored Objects; a head that
  attends S and writes −S, negative copy score, also raises the logit difference and counts here), with
  effect < 0 a negative mover;
- stage ≥ 2: the largest of these attention masses if it is ≥ ``attn_threshold``: END→S2 (S-inhibition in IOI,
  content gatherer in Colored Objects, where S2 is the queried object in the question), S2→S1+1 (induction),
  S2→S1 (duplicate token), t→t−1 averaged over positions (previous token);
- anything else: other.

In Colored Objects, S1 is the queried object's occurrence in the list and IO the answer color. Attention is
averaged over the first ``attn_prompts`` clean prompts. The copy score (Wang et al.) of head h is
``P(token in top-k) − P(token in bottom-k)`` of ``unembed(norm(OV_h(x_t)))`` over the task's answer tokens, with
``x_t`` the residual stream after layer 0 on ``BOS + token`` (the "embedding after MLP0") and k = ``copy_top``.

**Chunks.** Prompts are processed in chunks of at most ``chunk_tokens`` padded tokens (:func:`task_chunks`):
the AtP* pass, the clean and corrupted runs, every path-patching sweep and the faithfulness runs. Every quantity
here is a mean over prompts of a per-prompt value, and prompts do not interact (each row attends to itself only),
so a chunk's result weighted by its share of the prompts sums to the whole batch's: chunking changes float
rounding, not the circuit. It is what lets 200 Colored Objects prompts (37,400 tokens) run in a few GB.

**Faithfulness**: the metric with every head outside the circuit mean-ablated (per-position means of ``z`` over
the corrupted prompts of the same template), divided by the full model's; ``faithfulness_norm`` also
subtracts the metric with every head ablated. Either is NaN, with a reason, when its denominator is below 10% of
the metric's spread across prompts (:func:`interp.stats.guard`). When ``|m_clean − m_corrupt|`` is, every
normalized path-patching effect divides by noise: discovery still ranks the senders (the order does not depend on
the denominator) but warns, and ``info["warning"]`` and a ``warning`` column on the stage rows say why.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from interp.analyze.circuit_params import CircuitParams
from interp.errors import InputError, UnknownNameError
from interp.hooks import CaptureSpec
from interp.intervene.run import Plan, check_batches_align, run
from interp.intervene.values import MeanAblate, Patch
from interp.schema import make_frame
from interp.intervene.heads import execute_from, record_prefix, scalar, sweep_edits
from interp.stats import GUARD_FRAC
from interp.store import cached
from interp.tasks.ioi import LogitDiff
from interp.types import HeadId

CLASSES = ("name mover", "negative mover", "S-inhibition", "content gatherer", "induction", "duplicate token",
           "previous token", "other")


@dataclass(frozen=True)
class CircuitTask:
    """What circuit discovery needs from a task: aligned clean/corrupted prompts, a logit-difference metric,
    named token positions per prompt (``end``, ``io``, ``s1``, ``s2``), template groups for per-position means,
    and ``(token read, token written)`` pairs for the copy score."""

    name: str
    clean: list[str]
    corrupted: list[str]
    metric: LogitDiff
    positions: dict[str, torch.Tensor]
    groups: list[int]
    copy_pairs: tuple[tuple[int, int], ...]
    s2_class: str = "S-inhibition"
    data: object = None

    def __len__(self) -> int:
        return len(self.clean)


# ---------------------------------------------------------------------------------------------- tasks


def ioi_task(model, n: int, seed: int = 0) -> CircuitTask:
    """IOI (pABC corruption) with END, IO, S1, S2 located in each prompt's tokens."""
    from interp.inputs import to_batch
    from interp.tasks.ioi import NAMES, ioi, single_tokens

    data = ioi(model, n, seed=seed, corruption="abc")
    tokens = to_batch(model, data.clean).tokens.cpu()
    pos = {"end": data.metric.end.clone(), "io": [], "s1": [], "s2": []}
    for b in range(len(data)):
        row = tokens[b].tolist()
        s_at = [p for p, t in enumerate(row) if t == int(data.metric.s[b])]
        pos["io"].append(row.index(int(data.metric.io[b])))
        pos["s1"].append(s_at[0])
        pos["s2"].append(s_at[1])
    pos = {k: torch.as_tensor(v) for k, v in pos.items()}
    names = single_tokens(model.tokenizer, NAMES, strict=False)
    return CircuitTask("ioi", data.clean, data.corrupted, data.metric, pos, list(data.templates),
                       tuple((i, i) for i in names.values()), "S-inhibition", data)


def colored_objects_task(model, n: int, seed: int = 0) -> CircuitTask:
    """Colored Objects (mindiff counterfactual) in the default format (:data:`interp.tasks.colored_objects.DEFAULT_FORMAT`);
    the copy pairs read a color (" red") and write its label (" Red", or " red" in a cloze format)."""
    from interp.tasks.colored_objects import colored_objects

    data = colored_objects(model, n, seed=seed)
    pairs = tuple(zip(data.color_ids.tolist(), data.label_ids.tolist()))
    return CircuitTask("colored-objects", data.clean, data.corrupted, data.metric, data.positions, [0] * len(data),
                       pairs, "content gatherer", data)


TASKS = {"ioi": ioi_task, "colored-objects": colored_objects_task}


def make_task(model, name: str, n: int, seed: int = 0) -> CircuitTask:
    if name not in TASKS:
        raise UnknownNameError(f"unknown task {name!r}; available tasks: {', '.join(TASKS)}")
    if n < 1:
        raise InputError(f"--prompts must be at least 1, got {n}")
    return TASKS[name](model, n, seed)


# ---------------------------------------------------------------------------------------------- chunks


def subtask(task: CircuitTask, idx: Sequence[int]) -> CircuitTask:
    """Prompts ``idx`` of ``task`` as a task of their own (metric, positions and groups restricted to them)."""
    from dataclasses import replace

    i = torch.as_tensor(list(idx), dtype=torch.long)
    m = task.metric
    return replace(task, clean=[task.clean[j] for j in idx], corrupted=[task.corrupted[j] for j in idx],
                   metric=replace(m, io=m.io[i], s=m.s[i], end=m.end[i]), positions={k: v[i] for k, v in task.positions.items()},
                   groups=[task.groups[j] for j in idx], data=None)


def task_chunks(model, task: CircuitTask, max_tokens: int) -> list[CircuitTask]:
    """Consecutive prompts in chunks of at most ``max_tokens`` padded tokens (one prompt at least); the task
    itself when it fits. See the module docstring for why chunking is exact."""
    from interp.inputs import to_batch

    lengths = to_batch(model, task.clean).attention_mask.sum(1).tolist()
    groups: list[list[int]] = [[]]
    width = 0
    for i, n in enumerate(lengths):
        if groups[-1] and max(width, n) * (len(groups[-1]) + 1) > max_tokens:
            groups.append([])
            width = 0
        groups[-1].append(i)
        width = max(width, n)
    return [task] if len(groups) == 1 else [subtask(task, g) for g in groups]


def _weighted(per_chunk: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
    """Σ_c w_c · v_c per position: chunk means → the whole batch's mean."""
    return [sum(w * v[i] for w, v in zip(weights, per_chunk)) for i in range(len(per_chunk[0]))]


@dataclass(eq=False)
class _Part:
    """One chunk's clean and corrupted runs: tokens, ``z`` captures (logits dropped) and metric values."""

    task: CircuitTask
    weight: float
    clean: torch.Tensor  # [batch pos]
    corrupted: torch.Tensor  # [batch pos]
    caches: tuple
    per_prompt: torch.Tensor  # [batch] clean metric


def _part(model, task: CircuitTask, weight: float) -> _Part:
    a, b = check_batches_align(model, task.clean, task.corrupted)
    _, cap_clean = run(model, a.tokens, capture=CaptureSpec(sites=("z",)), attention_mask=a.attention_mask)
    _, cap_bad = run(model, b.tokens, capture=CaptureSpec(sites=("z",)), attention_mask=b.attention_mask)
    per = task.metric.per_prompt(cap_clean.logits).detach().float().cpu()
    m_clean, m_bad = scalar(task.metric(cap_clean.logits)), scalar(task.metric(cap_bad.logits))
    cap_clean.logits = cap_bad.logits = None  # every position's vocabulary row: the bulk of a capture, not needed again
    return _Part(task, weight, a.tokens, b.tokens, (cap_clean, cap_bad, m_clean, m_bad), per)


# ------------------------------------------------------------------------------------ path patching


class _Recorded:
    """A Capture-like source of receiver activations for ``Patch`` (one row group of a batched run)."""

    heads = None
    positions = None

    def __init__(self, model: str, tensors: dict):
        self.model, self.tensors = model, tensors

    def __getitem__(self, key):
        return self.tensors[key]


def _receivers(model, heads: Sequence[HeadId]) -> list[tuple[str, int, int]]:
    """``(site, layer, index)`` for the q of each head and the k/v of its KV group (deduplicated)."""
    n_heads = model.cfg.n_heads
    r = n_heads // (getattr(model.cfg, "n_key_value_heads", None) or n_heads)
    out = []
    for h in heads:
        out.append(("q", h.layer, h.head))
        out += [(s, h.layer, h.head // r) for s in ("k", "v")]
    return sorted(set(out))


def path_patch_senders(model, clean, corrupted, metric, senders: Sequence[HeadId], receivers=None, *,
                       max_rows: int = 256, progress: bool = False, caches=None) -> tuple[list[float], float, float, float]:
    """Batched path patching: ``(metric per sender, m_clean, m_corrupt, forward-pass equivalents)``.

    ``caches`` are the clean and corrupted ``z`` captures of these prompts, optionally followed by the two metric
    values (then the captures need no logits). ``receivers`` is None (to the logits) or ``(site, layer, index)`` triples (``q`` index = query head, ``k``/``v``
    index = KV group). A sender is patched into the receivers after its own layer only. The readable reference
    is :func:`interp.analyze.patching.path_patching`, which this matches where every sender precedes every receiver.
    """
    from interp.models import model_name

    a, b = check_batches_align(model, clean, corrupted)
    L = model.cfg.n_layers
    if caches is None:
        _, cap_clean = run(model, a.tokens, capture=CaptureSpec(sites=("z",)), attention_mask=a.attention_mask)
        _, cap_bad = run(model, b.tokens, capture=CaptureSpec(sites=("z",)), attention_mask=b.attention_mask)
        caches = (cap_clean, cap_bad)
    cap_clean, cap_bad, *known = caches  # (clean, corrupted[, m_clean, m_corrupt]) when the logits were dropped
    m_clean, m_bad = known or (scalar(metric(cap_clean.logits)), scalar(metric(cap_bad.logits)))
    if receivers is None:
        items = [[Patch("z", h.layer, h.head, source=cap_bad)] + [Patch("z", l, None, source=cap_clean) for l in range(h.layer + 1, L)]
                 for h in senders]
        values, _ = sweep_edits(model, a.tokens, items, metric, attention_mask=a.attention_mask, max_rows=max_rows, progress=progress)
        return values, m_clean, m_bad, sum(L - h.layer for h in senders) / L
    top = max(r[1] for r in receivers)
    late = [h for h in senders if h.layer >= top]
    if late:
        raise InputError(f"sender {late[0]} is not before the last receiver layer {top}")
    prefix = record_prefix(model, a)
    spec = CaptureSpec(sites=tuple(sorted({r[0] for r in receivers})))
    layers = sorted({r[1] for r in receivers})
    n, per = a.tokens.shape[0], max(1, max_rows // a.tokens.shape[0])
    order = sorted(senders, key=lambda h: (h.layer, h.head))
    items, cost = {}, 0.0
    for i in range(0, len(order), per):
        chunk = order[i:i + per]
        start = min(h.layer for h in chunk)
        groups = [[Patch("z", h.layer, h.head, source=cap_bad)] + [Patch("z", l, None, source=cap_clean) for l in range(h.layer + 1, top)]
                  for h in chunk]
        plan = Plan.build(model, groups, n, engine="hf")  # starts at the chunk's first sender layer
        store: dict = {}
        plan.add_reads(spec, store, layers, None, None)
        execute_from(plan, prefix, a.attention_mask, None, stop=top + 1)
        cost += len(chunk) * (top + 1 - start) / L
        for g, h in enumerate(chunk):
            src = _Recorded(model_name(model), {k: t[g * n:(g + 1) * n] for k, t in store.items()})
            after = [r for r in receivers if r[1] > h.layer]
            items[h] = [Patch(s, l, idx, source=src) for s, l, idx in after]
            cost += (L - min(r[1] for r in after)) / L
    values, _ = sweep_edits(model, a.tokens, [items[h] for h in senders], metric, attention_mask=a.attention_mask,
                            max_rows=max_rows, progress=progress)
    return values, m_clean, m_bad, cost


# ------------------------------------------------------------------------------------------ discovery


@dataclass
class Circuit:
    """The result of :func:`discover_circuit`: ``heads`` (one row per circuit head: stage, class, effect, copy
    score, attention features), ``patching`` (every exact path-patching value and the AtP* scores, tidy) and
    ``info`` (metric values, runs, forward-pass equivalents, timings, faithfulness)."""

    model: str
    task: str
    heads: pd.DataFrame
    patching: pd.DataFrame
    info: dict = field(default_factory=dict)

    def head_ids(self, stage: int | None = None) -> list[HeadId]:
        df = self.heads if stage is None else self.heads[self.heads["stage"] == stage]
        return sorted({HeadId(int(l), int(h)) for l, h in zip(df["layer"], df["head"])})


def _all_heads(model) -> list[HeadId]:
    return [HeadId(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]


def atp_scores(model, task: CircuitTask, chunks: Sequence[CircuitTask] | None = None) -> pd.DataFrame:
    """AtP* noising estimates for every head (tidy, ``atp:z`` and friends), normalized by ``m_corrupt − m_clean``
    (AtP* itself changes only the ``atp*:q``/``atp*:k`` rows; pruning ranks by ``atp:z``). With ``chunks`` (a
    partition of the task's prompts) one pass per chunk, weighted by its share: the estimate is a mean over
    prompts, so this equals the one-pass value while memory follows the chunk."""
    from interp.analyze.attribution import attribution_patching

    chunks = list(chunks) if chunks else [task]
    frames = [attribution_patching(model, c.clean, c.corrupted, c.metric, by="head", qk_fix=True, task=task.name,
                                   direction="noising")  # path patching is noising: rank senders by the same effect
              for c in chunks]
    weights = [len(c) / len(task) for c in chunks]
    df = frames[0]
    df["value"] = _weighted([f["value"].tolist() for f in frames], weights)
    for key in ("clean", "corrupt", "scale"):
        df.attrs[key] = sum(w * f.attrs[key] for w, f in zip(weights, frames))
    scale = df.attrs["scale"]
    return df.assign(value=df["value"] / (scale if abs(scale) > 1e-12 else 1.0), condition="atp")


def _stopped_early(info: dict, done: int, asked: int, why: str) -> None:
    """Fewer stages than asked is a finding, not a clamp: said in a warning and recorded in ``info``."""
    import warnings

    info["stopped_early"] = f"{done} of {asked} stages: {why}"
    warnings.warn(f"circuit discovery stopped after {done} of {asked} stages: {why}", stacklevel=3)


def discover_circuit(model, task: CircuitTask, params: CircuitParams = CircuitParams(), *, store=None,
                     progress: bool = False) -> Circuit:
    """Path patching backwards from the logits, ``params.n_stages`` stages; ``store`` (a ResumableTable) keeps
    each finished stage, so an interrupted run resumes."""
    from interp.models import model_name

    from interp.stats import guard

    t0 = time.perf_counter()
    name = model_name(model)
    check_batches_align(model, task.clean, task.corrupted)  # one error for the whole task before any forward
    chunks = task_chunks(model, task, params.chunk_tokens)
    parts = [_part(model, c, len(c) / len(task)) for c in chunks]
    m_clean = sum(p.weight * p.caches[2] for p in parts)
    m_bad = sum(p.weight * p.caches[3] for p in parts)
    per_prompt = torch.cat([p.per_prompt for p in parts])
    if abs(m_clean - m_bad) < 1e-12:
        raise InputError(f"the metric is the same on clean and corrupted prompts ({m_clean:.4g}); path patching needs them to differ")
    sd = float(per_prompt.std()) if len(per_prompt) > 1 else float("nan")
    why = guard(m_clean - m_bad, sd, "|clean − corrupted|", params.guard_frac)
    if why:  # the ranking of senders does not depend on the denominator, so discovery goes on, flagged
        warnings.warn(f"circuit discovery on {task.name}: metric clean {m_clean:.4g}, corrupted {m_bad:.4g}; {why}", stacklevel=2)
    info = {"metric_clean": m_clean, "metric_corrupt": m_bad, "warning": why, "prompts": len(task), "chunks": len(chunks),
            "stages": [], "exact_runs": 0,
            "exact_runs_saved": 0, "forward_equiv": 2.0, "timings": {}}
    frames = []
    scores = None
    if params.prune:
        t = time.perf_counter()
        atp = cached(store, "atp", lambda: atp_scores(model, task, chunks))
        frames.append(atp)
        z = atp[atp["metric"] == "atp:z"]
        scores = {HeadId(int(l), int(h)): abs(v) for l, h, v in zip(z["layer"], z["head"], z["value"])}
        info["forward_equiv"] += 4.0  # clean forward, corrupted forward, backward (~2 forwards)
        info["timings"]["atp_s"] = time.perf_counter() - t
    k = params.top_k(model.cfg.n_layers * model.cfg.n_heads)
    kept: list[HeadId] = []
    chosen_rows = []
    for stage in range(1, params.n_stages + 1):
        recv = None if stage == 1 else _receivers(model, kept)
        top = model.cfg.n_layers if recv is None else max(r[1] for r in recv)
        eligible = [h for h in _all_heads(model) if h.layer < top]
        if not eligible:
            _stopped_early(info, stage - 1, params.n_stages, "no head lies below the previous stage's receivers")
            break
        cands = sorted(eligible, key=lambda h: -scores[h])[:params.keep] if scores is not None else eligible
        t = time.perf_counter()

        def compute(cands=cands, recv=recv, stage=stage):
            runs = [path_patch_senders(model, p.clean, p.corrupted, p.task.metric, cands, recv, max_rows=params.max_rows,
                                       progress=progress, caches=p.caches) for p in parts]
            values = _weighted([r[0] for r in runs], [p.weight for p in parts])
            cost = sum(p.weight * r[3] for p, r in zip(parts, runs))
            rows = [{"layer": h.layer, "head": h.head, "metric": "path_patch", "value": (v - m_clean) / (m_bad - m_clean),
                     "condition": f"stage{stage}", "direction": "noising"} for h, v in zip(cands, values)]
            df = make_frame(pd.DataFrame(rows).assign(model=name, task=task.name, **({"warning": why} if why else {})))
            df["forward_equiv"] = cost
            return df

        df = cached(store, f"stage{stage}", compute)
        frames.append(df)
        info["forward_equiv"] += float(df["forward_equiv"].iloc[0]) if len(df) else 0.0
        info["exact_runs"] += len(cands)
        info["exact_runs_saved"] += len(eligible) - len(cands)
        effects = df.sort_values("value", key=abs, ascending=False)
        effects = effects[effects["value"].abs() >= params.min_effect].head(k)
        info["stages"].append({"stage": stage, "receivers": "logits" if recv is None else [str(h) for h in kept],
                               "senders_eligible": len(eligible), "senders_patched": len(cands),
                               "seconds": time.perf_counter() - t})
        if effects.empty:
            if stage < params.n_stages:
                _stopped_early(info, stage, params.n_stages, f"no sender of stage {stage} reaches --min-effect {params.min_effect}")
            break
        kept = [HeadId(int(l), int(h)) for l, h in zip(effects["layer"], effects["head"])]
        chosen_rows += [{"layer": h.layer, "head": h.head, "stage": stage, "effect": float(v)}
                        for h, v in zip(kept, effects["value"])]
    patching = make_frame(pd.concat(frames, ignore_index=True).drop(columns=["forward_equiv", "unit"], errors="ignore"))
    heads = pd.DataFrame(chosen_rows, columns=["layer", "head", "stage", "effect"])
    t = time.perf_counter()
    heads = classify(model, task, heads, params)
    info["timings"]["classify_s"] = time.perf_counter() - t
    info["timings"]["discovery_s"] = time.perf_counter() - t0
    patching.attrs.update(clean=m_clean, corrupt=m_bad)
    return Circuit(name, task.name, heads, patching, info)


# -------------------------------------------------------------------------------------------- classes


def attention_features(model, task: CircuitTask, heads: Sequence[HeadId], n_prompts: int = 32) -> pd.DataFrame:
    """Mean attention of each head on the task's named position pairs: ``end_io``, ``end_s2``, ``s2_s1``,
    ``s2_s1p1`` (induction), ``prev`` (t → t−1, over real tokens t ≥ 1)."""
    from interp.inputs import to_batch

    heads = sorted(set(heads))
    if not heads:
        return pd.DataFrame(columns=["layer", "head", "end_io", "end_s2", "s2_s1", "s2_s1p1", "prev"])
    n = min(n_prompts, len(task))
    batch = to_batch(model, task.clean[:n])
    layers = tuple(sorted({h.layer for h in heads}))
    _, cap = run(model, batch.tokens, capture=CaptureSpec(sites=("pattern",), layers=layers), attention_mask=batch.attention_mask)
    p = {k: v[:n] for k, v in task.positions.items()}
    rows_b = torch.arange(n)
    mask = batch.attention_mask.cpu().bool()
    out = []
    for h in heads:
        A = cap["pattern", h.layer][:, h.head].float()  # [batch query_pos key_pos]
        t = torch.arange(1, A.shape[1])
        prev_ok = mask[:, 1:]
        prev = (A[:, t, t - 1] * prev_ok).sum(1) / prev_ok.sum(1).clamp_min(1)
        out.append({"layer": h.layer, "head": h.head,
                    "end_io": float(A[rows_b, p["end"], p["io"]].mean()),
                    "end_s2": float(A[rows_b, p["end"], p["s2"]].mean()),
                    "s2_s1": float(A[rows_b, p["s2"], p["s1"]].mean()),
                    "s2_s1p1": float(A[rows_b, p["s2"], p["s1"] + 1].mean()),
                    "prev": float(prev.mean())})
    return pd.DataFrame(out)


def copy_scores(model, heads: Sequence[HeadId], pairs: Sequence[tuple[int, int]], top: int = 5) -> dict[HeadId, float]:
    """OV copy score per head: ``P(written token in top-k) − P(in bottom-k)`` over ``(read, written)`` pairs."""
    from interp.inputs import start_token_id
    from interp.intervene.hf import find_stack, plain

    heads = sorted(set(heads))
    if not heads or not pairs:
        return {h: 0.0 for h in heads}
    stack = find_stack(model)
    if stack is None:
        from interp.errors import UnsupportedModelError

        raise UnsupportedModelError("copy scores need a Llama-family decoder (q/k/v/o projections)")
    start = start_token_id(model.tokenizer)
    read = torch.tensor([p[0] for p in pairs])
    written = torch.tensor([p[1] for p in pairs])
    toks = read[:, None] if start is None else torch.stack([torch.full_like(read, start), read], 1)  # [n 1|2]
    _, cap = run(model, toks, capture=CaptureSpec(sites=("resid_post",), layers=(0,), positions=(-1,)))
    x = cap["resid_post", 0][:, 0].float()  # [n d_model]
    d, r = stack.d_head, stack.n_heads // stack.n_kv
    out = {}
    with torch.no_grad(), plain(model) as hf:
        dev = next(hf.parameters()).device
        x = x.to(dev)
        for h in heads:
            attn = hf.model.layers[h.layer].self_attn
            v = attn.v_proj(hf.model.layers[h.layer].input_layernorm(x)).view(len(pairs), stack.n_kv, d)[:, h.head // r]
            o = v @ attn.o_proj.weight[:, h.head * d:(h.head + 1) * d].T  # [n d_model]
            logits = hf.lm_head(hf.model.norm(o)).float().cpu()
            k = min(top, logits.shape[-1])
            hi = (logits.topk(k, -1).indices == written[:, None]).any(-1).float().mean()
            lo = ((-logits).topk(k, -1).indices == written[:, None]).any(-1).float().mean()
            out[h] = float(hi - lo)
    return out


def classify(model, task: CircuitTask, heads: pd.DataFrame, params: CircuitParams = CircuitParams()) -> pd.DataFrame:
    """Add ``class``, ``copy_score`` and the attention features to a frame of (layer, head, stage, effect)."""
    ids = [HeadId(int(l), int(h)) for l, h in zip(heads["layer"], heads["head"])]
    feats = attention_features(model, task, ids, params.attn_prompts)
    copies = copy_scores(model, ids, task.copy_pairs, params.copy_top)
    df = heads.merge(feats, on=["layer", "head"], how="left") if len(heads) else heads.assign(
        **{c: pd.Series(dtype=float) for c in ("end_io", "end_s2", "s2_s1", "s2_s1p1", "prev")})
    df["copy_score"] = [copies.get(h, 0.0) for h in ids]
    df["class"] = [head_class(r, params, task.s2_class) for r in df.to_dict("records")]
    return df.assign(model=model_name_of(model), task=task.name)[
        ["model", "task", "layer", "head", "stage", "class", "effect", "copy_score", "end_io", "end_s2", "s2_s1", "s2_s1p1", "prev"]]


def model_name_of(model) -> str:
    from interp.models import model_name

    return model_name(model)


def head_class(row: dict, params: CircuitParams, s2_class: str = "S-inhibition") -> str:
    """The class rule of the module docstring for one head's stage, effect, copy score and attention."""
    att, cp = params.attn_threshold, params.copy_threshold
    if row["stage"] == 1:
        moves = abs(row["copy_score"]) >= cp or max(row["end_io"], row["end_s2"]) >= att
        if moves:
            return "name mover" if row["effect"] > 0 else "negative mover"
        return "other"
    feats = {s2_class: row["end_s2"], "induction": row["s2_s1p1"], "duplicate token": row["s2_s1"],
             "previous token": row["prev"]}
    best = max(feats, key=feats.get)
    return best if feats[best] >= att else "other"


# ------------------------------------------------------------------------------------- faithfulness


def mean_ablated_metric(model, task: CircuitTask, ablate: Sequence[HeadId], *, per_prompt: bool = False,
                        chunk_tokens: int = CircuitParams.chunk_tokens):
    """The task metric (mean over prompts; ``per_prompt``: the ``[batch]`` values) with ``ablate`` heads' ``z`` set
    to their per-position mean over the corrupted prompts of the same group (template); runs of at most
    ``chunk_tokens`` tokens."""
    from interp.inputs import to_batch
    from interp.intervene.means import mean_activations

    ablate = sorted(set(ablate))
    values = torch.zeros(len(task))
    lengths = to_batch(model, task.clean).attention_mask.sum(1).tolist()
    keys = list(zip(task.groups, lengths))  # per-position means need one template and one length
    for g in sorted(set(keys)):
        idx = [i for i, x in enumerate(keys) if x == g]
        rows = max(1, chunk_tokens // g[1])
        edits = []
        if ablate:
            means = mean_activations(model, [task.corrupted[i] for i in idx], sites=("z",), batch_size=rows,
                                     layers=sorted({h.layer for h in ablate}), per_position=True)
            edits = [MeanAblate("z", h.layer, h.head, mean=means) for h in ablate]
        for j in range(0, len(idx), rows):
            part = subtask(task, idx[j:j + rows])
            values[idx[j:j + rows]] = part.metric.per_prompt(run(model, part.clean, edits)).float().cpu()
    return values if per_prompt else float(values.mean())


def faithfulness(model, task: CircuitTask, circuit_heads: Sequence[HeadId], *, guard_frac: float = GUARD_FRAC,
                 chunk_tokens: int = CircuitParams.chunk_tokens) -> dict:
    """``{"full", "circuit", "empty", "spread", "faithfulness", "faithfulness_norm", "reason", "reason_norm"}``.

    ``spread`` is the standard deviation of the full model's metric across prompts. A ratio whose denominator
    (``full``, or ``full − empty``) is below :data:`interp.stats.GUARD_FRAC` of it is NaN, and its ``reason``
    says so (:func:`interp.stats.guard`): a circuit "explaining" a difference the prompts' own scatter swamps
    would otherwise read as a large faithfulness."""
    from interp.stats import guard

    everything = _all_heads(model)
    keep = set(circuit_heads)
    full_pp = mean_ablated_metric(model, task, [], per_prompt=True, chunk_tokens=chunk_tokens)
    full, sd = float(full_pp.mean()), float(full_pp.std()) if len(full_pp) > 1 else float("nan")
    circ = mean_ablated_metric(model, task, [h for h in everything if h not in keep], chunk_tokens=chunk_tokens)
    empty = mean_ablated_metric(model, task, everything, chunk_tokens=chunk_tokens)
    why = guard(full, sd, "the full model's metric", guard_frac)
    why_norm = guard(full - empty, sd, "full − empty", guard_frac)
    return {"full": full, "circuit": circ, "empty": empty, "spread": sd,
            "faithfulness": float("nan") if why else circ / full,
            "faithfulness_norm": float("nan") if why_norm else (circ - empty) / (full - empty),
            "reason": why, "reason_norm": why_norm}


__all__ = ["CircuitTask", "CircuitParams", "Circuit", "TASKS", "make_task", "ioi_task", "colored_objects_task", "subtask", "task_chunks",
           "path_patch_senders", "discover_circuit", "atp_scores", "attention_features", "copy_scores", "classify",
           "head_class", "mean_ablated_metric", "faithfulness", "CLASSES"]
