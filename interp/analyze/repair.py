"""The repair experiment (Merullo et al. 2024, §8): move Colored Objects onto the IOI circuit's mechanism.

From the IOI circuit take the analogues of the paper's inhibition heads (the ``n_inhibition`` stage-2 heads,
those classed S-inhibition first, by |effect|) and its negative mover (the stage-1 head with a negative effect,
one classed negative mover first, by |effect|). ``SetPattern`` makes each of them, at the final position of every Colored
Objects prompt, attend 1/2 to each of the two wrong colors of the query and 0 elsewhere (so 0 on the right
color). Reported per condition: top-1 accuracy over the 8 colors and the mean logit difference; the
random-heads control draws heads of the same count (excluding the chosen ones) ``draws`` times; and the mover
heads' attention (stage-1 heads with positive effect) from the final position to the right color and to the
two wrong colors, before and after (the stage-1 heads classed name mover, else those with positive effect).
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import pandas as pd
import torch

from interp.errors import InputError
from interp.hooks import CaptureSpec
from interp.intervene.run import run
from interp.intervene.values import SetPattern
from interp.schema import make_frame
from interp.store import cached
from interp.types import HeadId


def repair_heads(circuit_heads: pd.DataFrame, n_inhibition: int = 3) -> tuple[list[HeadId], list[HeadId], list[HeadId]]:
    """``(inhibition, negative movers, movers)`` chosen from an IOI circuit frame (``circuit.parquet``)."""
    df = circuit_heads
    s2 = df[df["stage"] == 2].assign(is_inh=lambda d: d["class"] == "S-inhibition")
    s2 = s2.assign(mag=s2["effect"].abs()).sort_values(["is_inh", "mag"], ascending=False)
    inh = [HeadId(int(l), int(h)) for l, h in zip(s2["layer"], s2["head"])][:n_inhibition]
    s1 = df[df["stage"] == 1]
    neg = s1[s1["effect"] < 0].assign(is_neg=lambda d: d["class"] == "negative mover", mag=lambda d: d["effect"].abs())
    neg = neg.sort_values(["is_neg", "mag"], ascending=False)
    negs = [HeadId(int(l), int(h)) for l, h in zip(neg["layer"], neg["head"])][:1]
    pos = s1[s1["class"] == "name mover"]
    pos = pos if len(pos) else s1[s1["effect"] > 0]
    movers = [HeadId(int(l), int(h)) for l, h in zip(pos["layer"], pos["head"])]
    if not inh and not negs:
        raise InputError("the IOI circuit has no stage-2 or negative-mover heads to repair with; run more stages or prompts")
    return inh, negs, movers


def repair_edits(heads: Sequence[HeadId], wrong: Sequence[torch.Tensor], n_keys: int) -> list[SetPattern]:
    """``SetPattern`` for each head at the last query position: 1/len(wrong) on each wrong-color position of
    each prompt (``wrong``: tensors ``[batch]`` of key positions), 0 elsewhere."""
    n = wrong[0].shape[0]
    w = torch.zeros(n, n_keys)
    rows = torch.arange(n)
    for pos in wrong:
        w[rows, pos] += 1.0 / len(wrong)
    return [SetPattern(h, (-1,), w) for h in heads]


def _evaluate(model, data, heads, wrong, n_keys: int, movers: Sequence[HeadId], chunk: int = 16) -> dict:
    """Accuracy (with its interval), mean logit difference (with its t interval) and the movers' attention, over
    prompt chunks (a full batch's logits over the vocabulary would not fit: 200 prompts × 187 tokens × 49k)."""
    from interp.stats import mean_ci, rate_of

    spec = CaptureSpec(sites=("pattern",), layers=tuple(sorted({h.layer for h in movers}))) if movers else None
    last, right, wrong_mass = [], [], []
    p = data.positions
    for i in range(0, len(data), chunk):
        idx = torch.arange(i, min(i + chunk, len(data)))
        edits = repair_edits(heads, [w[idx] for w in wrong], n_keys) if heads else []
        texts = [data.clean[int(j)] for j in idx]
        logits, cap = run(model, texts, edits, capture=spec) if spec else (run(model, texts, edits), None)
        b = torch.arange(len(idx))
        last.append(logits[b, p["end"][idx].to(logits.device)].float().cpu())  # [chunk d_vocab]
        if cap is not None:
            for h in movers:
                A = cap["pattern", h.layer][:, h.head].float().cpu()  # [chunk query_pos key_pos]
                e = p["end"][idx]
                right.append(A[b, e, p["io"][idx]])
                wrong_mass.append(A[b, e, p["wrong1"][idx]] + A[b, e, p["wrong2"][idx]])
    last = torch.cat(last)  # [batch d_vocab]
    pred = last[:, data.label_ids].argmax(-1)
    acc = rate_of((pred == data.answer_index).tolist(), list(data.answer), chance=1 / len(data.label_ids))
    rows = torch.arange(len(data))
    ld = mean_ci((last[rows, data.metric.io] - last[rows, data.metric.s]).tolist())
    res = {"accuracy": (acc.rate, acc.columns()), "logit_diff": (ld.mean, {"n": ld.n, "low": ld.low, "high": ld.high})}
    if right:
        res["mover_attn_right"] = (float(torch.cat(right).mean()), {})
        res["mover_attn_wrong"] = (float(torch.cat(wrong_mass).mean()), {})
    return res


def repair_experiment(model, data, inhibition: Sequence[HeadId], negative: Sequence[HeadId], movers: Sequence[HeadId],
                      *, draws: int = 5, seed: int = 0, store=None, progress: bool = False) -> pd.DataFrame:
    """Tidy table: per condition (``clean``, ``inhibition``, ``inhibition+negative``, ``random`` per seed)
    ``accuracy``, ``logit_diff`` and the movers' attention to the right and wrong colors."""
    from tqdm.auto import tqdm

    from interp.models import model_name

    if draws < 1:
        raise InputError(f"draws must be at least 1, got {draws}")
    n_keys = int(data.positions["end"][0]) + 1
    wrong = [data.positions["wrong1"], data.positions["wrong2"]]
    chosen = list(inhibition) + list(negative)
    everything = [HeadId(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    pool = [h for h in everything if h not in set(chosen)]
    conds = [("clean", None, []), ("inhibition", None, list(inhibition)), ("inhibition+negative", None, chosen)]
    rng = random.Random(seed)
    conds += [("random", s, rng.sample(pool, len(chosen))) for s in range(draws)]
    rows = []
    for name, s, heads in tqdm(conds, disable=not progress, desc="repair", leave=False):
        key = f"{name}-{s}-{' '.join(map(str, heads))}"  # a changed head choice never reuses a stale part
        rows.append(cached(store, key, lambda: _condition_frame(model, data, heads, wrong, n_keys, movers, name, s)))
    return make_frame(pd.concat(rows, ignore_index=True).assign(model=model_name(model), task="colored-objects"))


def _condition_frame(model, data, heads, wrong, n_keys, movers, name: str, seed) -> pd.DataFrame:
    res = _evaluate(model, data, heads, wrong, n_keys, movers)
    return pd.DataFrame([{"layer": -1, "head": -1, "metric": k, "value": v, "condition": name, **cols,
                          **({"seed": seed} if seed is not None else {}), "heads": " ".join(str(h) for h in heads)}
                         for k, (v, cols) in res.items()])


def repair_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Wide table: one row per condition (random averaged over draws, with its std), one column per metric, and
    for accuracy its 95% Wilson interval, prompts ``n``, majority-class baseline and chance (random: pooled over
    draws, ``k`` correct of ``draws × n``), for the logit difference its 95% t interval (random: the mean of the
    draws' bounds; the draws' spread is ``accuracy_std``)."""
    from interp.stats import rate

    g = df.groupby(["condition", "metric"])["value"]
    wide = g.mean().unstack()
    std = g.std().unstack().add_suffix("_std")
    order = [c for c in ("clean", "inhibition", "inhibition+negative", "random") if c in wide.index]
    out = wide.join(std[[c for c in std.columns if c.startswith("accuracy")]]).loc[order]
    acc = df[df["metric"] == "accuracy"]
    out["draws"] = acc.groupby("condition").size().reindex(order)
    if "low" in df.columns:
        for cond in order:
            a = acc[acc["condition"] == cond]
            n = int(a["n"].sum())
            r = rate(round(float((a["value"] * a["n"]).sum())), n, chance=float(a["chance"].iloc[0]))
            out.loc[cond, ["accuracy_low", "accuracy_high", "n", "majority", "chance"]] = [
                r.low, r.high, int(a["n"].iloc[0]), float(a["majority"].iloc[0]), r.chance]
            ld = df[(df["metric"] == "logit_diff") & (df["condition"] == cond)]
            out.loc[cond, ["logit_diff_low", "logit_diff_high"]] = [ld["low"].mean(), ld["high"].mean()]
    out.columns.name = None  # the columns are metrics; a leftover axis name shows as an empty column in tables
    return out


def repair_accuracy(df: pd.DataFrame, n_prompts: int) -> pd.DataFrame:
    """Accuracy per condition as a rate: ``k`` of ``n`` prompts right, with its 95% Wilson interval (``lo, hi``).
    The random control pools its draws (``n = n_prompts × draws``); ``draws`` says how many."""
    from interp.stats import wilson

    acc = df[df["metric"] == "accuracy"]
    rows = []
    for c in [c for c in ("clean", "inhibition", "inhibition+negative", "random") if c in set(acc["condition"])]:
        v = acc.loc[acc["condition"] == c, "value"].to_numpy()
        k, n = int(round(float(v.sum()) * n_prompts)), n_prompts * len(v)
        lo, hi = wilson(k, n)
        rows.append({"condition": c, "k": k, "n": n, "accuracy": k / n, "lo": lo, "hi": hi, "draws": len(v)})
    return pd.DataFrame(rows)


__all__ = ["repair_heads", "repair_edits", "repair_experiment", "repair_summary", "repair_accuracy"]
