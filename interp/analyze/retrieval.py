"""Retrieval heads (Wu et al. 2024), exactly as methods.md §1 specifies.

For each needle-in-a-haystack sample we decode greedily through the fused path and read every head's
top-1 attended key per step (no n×n tensor). A copy-paste event is a step whose top-1 key lies in the
answer span ``[s, e)`` and whose token equals the generated token; each adds ``1/(e−s)`` to the head's
sample score (repeats count again, as in the reference code). Samples count only when the response's
ROUGE-1 recall of the answer exceeds 0.5; a head's retrieval score is its mean over kept samples
(zeros included). Heads scoring > 0.1 are retrieval heads.

ROUGE-1 here is the multiset unigram recall over lower-cased word tokens (``\\w+``), without stemming.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from interp.attnstats.decode import generate_with_stats
from interp.edits import RetrievalMask
from interp.errors import InputError
from interp.models import model_name
from interp.schema import make_frame
from interp.store import ResumableTable
from interp.tasks.niah import Needle, build_prompt
from interp.tasks.sources import NiahConfig  # noqa: F401  (part of this module's API)
from interp.types import HeadId

RETRIEVAL_THRESHOLD = 0.1
KEEP_RECALL = 0.5


def rouge1_recall(response: str, reference: str) -> float:
    ref = Counter(re.findall(r"\w+", reference.lower()))
    if not ref:
        raise InputError("the reference answer has no words; pass a non-empty answer")
    got = Counter(re.findall(r"\w+", response.lower()))
    return sum((ref & got).values()) / sum(ref.values())


def copy_paste_scores(argmax: torch.Tensor, generated: Sequence[int], prompt_ids: torch.Tensor,
                      span: tuple[int, int]) -> torch.Tensor:
    """``argmax [step layer head_index]`` → per-head sample score ``[layer head_index]``."""
    s, e = span
    if not 0 <= s < e <= len(prompt_ids):
        raise InputError(f"answer span {span} is outside the prompt of {len(prompt_ids)} tokens")
    score = torch.zeros(argmax.shape[1:], dtype=torch.float64)
    for t, w in enumerate(generated):
        j = argmax[t]
        inside = (j >= s) & (j < e)
        same = prompt_ids[j.clamp(0, len(prompt_ids) - 1)] == w
        score += (inside & same).double() / (e - s)
    return score


def _stop_rule(tok, rule: str):
    """``(stop_ids, stop_when)`` for :func:`generate_with_stats` under a ``NiahConfig.stop`` rule."""
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    newline = tok("\n", add_special_tokens=False)["input_ids"][-1:]
    if rule == "first-newline":
        return eos + newline, None
    if rule == "eos":
        return eos, None

    def after_text(generated: list[int]) -> bool:  # "line": a line break ends the answer once it has begun
        return generated[-1] in newline and bool(tok.decode(generated[:-1], skip_special_tokens=True).strip())

    return eos, after_text


def run_niah(model, needles: Sequence[Needle], config: NiahConfig, *, condition: str = "none", edits=(),
             haystack: str | None = None, store: ResumableTable | None = None, progress: bool = False,
             seed: int | None = None) -> pd.DataFrame:
    """One decode per (length, depth, needle). Returns a per-sample table with the per-head copy scores
    (column ``scores``, ``[layer head_index]`` as nested lists) and the ROUGE-1 recall."""
    from tqdm.auto import tqdm

    tok = model.tokenizer
    units = [(n, d, i) for n in config.lengths for d in config.depths for i in range(len(needles))]
    rows = []
    for n, d, i in tqdm(units, desc=f"niah[{condition}]", disable=not progress):
        key = f"{condition}|{seed}|{n}|{d}|{i}"
        if store is not None and store.done(key):
            rows.append(store.get(key))
            continue
        p = build_prompt(tok, needles[i], n, d, haystack=haystack)
        stop_ids, stop_when = _stop_rule(tok, config.stop)
        tr = generate_with_stats(model, p.tokens, max_new_tokens=config.max_new_tokens, stop_ids=stop_ids,
                                 stop_when=stop_when, edits=edits)
        rec = rouge1_recall(tr.text, needles[i].answer)
        sc = copy_paste_scores(tr.argmax, tr.generated, p.tokens, p.answer_span)
        row = pd.DataFrame([{"condition": condition, "seed": -1 if seed is None else seed, "context_len": n, "depth": float(d),
                             "needle_id": i, "prompt_tokens": len(p.tokens), "response": tr.text, "rouge1_recall": rec,
                             "kept": rec > KEEP_RECALL, "stopped_by": _stopped_by(tr, tok), "scores": sc.flatten().tolist()}])
        if store is not None:
            store.put(key, row)
        rows.append(row)
    return pd.concat(rows, ignore_index=True).drop(columns=["unit"], errors="ignore")


def _stopped_by(trace, tok) -> str:
    if trace.stop_reason == "max_new_tokens":
        return "max_new_tokens"
    return "eos" if trace.generated[-1] == tok.eos_token_id else "newline"


def retrieval_scores(model, samples: pd.DataFrame, *, task: str = "retrieval") -> pd.DataFrame:
    """Tidy ``retrieval_score`` per head: mean copy score over kept samples (0 rows if none kept)."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    kept = samples[samples["kept"]]
    if kept.empty:
        return make_frame([])
    mean = torch.from_numpy(np.stack(kept["scores"].to_numpy()).astype(np.float64)).mean(0).view(L, H)
    return make_frame([{"model": model_name(model), "task": task, "layer": l, "head": h, "metric": "retrieval_score",
                        "value": float(mean[l, h]), "condition": "none"} for l in range(L) for h in range(H)])


def top_heads(scores: pd.DataFrame, k: int) -> list[HeadId]:
    rows = scores[scores["metric"] == "retrieval_score"].nlargest(k, "value")
    return [HeadId(int(r.layer), int(r.head)) for r in rows.itertuples()]


def random_heads(scores: pd.DataFrame, k: int, seed: int, n_layers: int, n_heads: int,
                 exclude_frac: float = 0.1) -> list[HeadId]:
    """``k`` random heads outside the top ``exclude_frac`` of retrieval scores (Wu et al. exclude the top 100
    of 1024 heads, about 10%)."""
    n_ex = max(k, int(round(exclude_frac * n_layers * n_heads)))
    excluded = set(top_heads(scores, n_ex))
    pool = [HeadId(l, h) for l in range(n_layers) for h in range(n_heads) if HeadId(l, h) not in excluded]
    if k > len(pool):
        raise InputError(f"cannot draw {k} random heads from {len(pool)} non-retrieval heads; lower --mask-random")
    return sorted(random.Random(seed).sample(pool, k))


def masking_grid(model, needles, config: NiahConfig, scores: pd.DataFrame, *, top_k: Iterable[int] = (),
                 random_k: Iterable[int] = (), draws: int = 3, seed: int = 0, baseline: pd.DataFrame | None = None,
                 store: ResumableTable | None = None, progress: bool = False, haystack: str | None = None) -> pd.DataFrame:
    """NIAH samples for no masking, top-K retrieval heads masked, and K random non-retrieval heads masked."""
    runs = [baseline if baseline is not None else run_niah(model, needles, config, store=store, progress=progress, haystack=haystack)]
    L, H = model.cfg.n_layers, model.cfg.n_heads
    for k in top_k:
        heads = top_heads(scores, k)
        runs.append(run_niah(model, needles, config, condition=f"top{k}", edits=[RetrievalMask(tuple(heads))],
                             store=store, progress=progress, haystack=haystack).assign(masked=", ".join(map(str, heads))))
    for k in random_k:
        for d in range(draws):
            heads = random_heads(scores, k, seed + d, L, H)
            runs.append(run_niah(model, needles, config, condition=f"random{k}", edits=[RetrievalMask(tuple(heads))],
                                 store=store, progress=progress, seed=seed + d, haystack=haystack)
                        .assign(masked=", ".join(map(str, heads))))
    return pd.concat(runs, ignore_index=True)


def niah_frame(model, samples: pd.DataFrame, task: str = "niah") -> pd.DataFrame:
    """Tidy NIAH recall (×100) per sample, with ``context_len``/``depth``/``needle_id`` as extra columns."""
    df = pd.DataFrame({"model": model_name(model), "task": task, "layer": -1, "head": -1, "metric": "niah_recall",
                       "value": samples["rouge1_recall"] * 100, "condition": samples["condition"],
                       "seed": samples["seed"], "prompt_id": samples.apply(lambda r: f"{r.context_len}-{r.depth:g}-{r.needle_id}", axis=1),
                       "context_len": samples["context_len"], "depth": samples["depth"], "needle_id": samples["needle_id"],
                       "response": samples["response"]})
    return make_frame(df)


@dataclass(frozen=True)
class AnswerRows:
    """Attention rows of chosen heads while one NIAH sample's answer is produced.

    ``rows [head answer_token key_pos]``: query ``P-1+t`` (``P`` prompt tokens) is the position whose next-token
    prediction is answer token ``t``, so each row is what the head read to produce that token."""

    rows: torch.Tensor
    heads: list[HeadId]
    answer_tokens: list[str]
    needle_span: tuple[int, int]  # [s, e): the answer inside the needle, in key positions
    prompt_tokens: int
    context_len: int
    depth: float
    key_tokens: list[str] = field(default_factory=list)  # the token of each key position (prompt, then answer)


def answer_rows(model, needle: Needle, context_len: int, depth: float, response: str, heads: Sequence[HeadId], *,
                haystack: str | None = None, max_answer_tokens: int = 24) -> AnswerRows:
    """Rebuild a sample's prompt (as :func:`run_niah` did) and take ``heads``' full attention rows at its answer
    tokens from the fused path (:func:`interp.attnstats.rows.attention_rows`): no ``n×n`` pattern, so a
    3000-token haystack costs ``heads × answer tokens × n`` floats. The answer is the response re-tokenized
    (teacher-forced); it can differ from the decoded ids where a tokenizer does not round-trip."""
    from interp.attnstats.rows import attention_rows

    tok = model.tokenizer
    p = build_prompt(tok, needle, context_len, depth, haystack=haystack)
    ans = tok(response, add_special_tokens=False)["input_ids"][:max_answer_tokens]
    if not ans:
        raise InputError("the response is empty, so there are no answer tokens to show; pick a sample that answered")
    P = len(p.tokens)
    ids = torch.cat([p.tokens, torch.tensor(ans[:-1], dtype=p.tokens.dtype)])[None]
    rows = attention_rows(model, ids, heads=list(heads), queries=list(range(P - 1, P - 1 + len(ans))))[0]
    return AnswerRows(rows=rows, heads=list(heads), answer_tokens=[tok.decode([t]) for t in ans],
                      needle_span=tuple(int(x) for x in p.answer_span), prompt_tokens=P,
                      context_len=context_len, depth=depth, key_tokens=[tok.decode([t]) for t in ids[0].tolist()])
