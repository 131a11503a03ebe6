"""Indirect object identification (Wang et al. 2022): prompts, corruptions, answers and the logit difference.

``ioi(model, n)`` builds ABBA and BABA prompts ("When Mary and John went to the store, John gave a drink to"
→ " Mary") from templates whose names, places and objects are single tokens for the model's tokenizer, so a
clean prompt and its corruption have the same token positions. Corruptions: ``"abc"`` (pABC: all three names
replaced by three other names) and ``"flip"`` (S2 replaced by IO, so the answer flips). The metric is the
TransformerLens/ARENA logit difference ``logit(IO) − logit(S)`` at the last real token, averaged over prompts
(methods.md §12).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp.errors import InputError

TEMPLATES = (
    "When {A} and {B} went to the {PLACE}, {C} gave a {OBJECT} to",
    "After {A} and {B} went to the {PLACE}, {C} gave a {OBJECT} to",
    "While {A} and {B} were working at the {PLACE}, {C} gave a {OBJECT} to",
    "Then, {A} and {B} went to the {PLACE}. {C} gave a {OBJECT} to",
    "Friends {A} and {B} found a {OBJECT} at the {PLACE}. {C} gave it to",
)
NAMES = ("Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy", "Paul", "Kate", "Anne", "Sarah", "Lisa", "Mark",
         "Emma", "David", "Peter", "Laura", "Rachel", "Jack", "Alice", "Michael", "Robert", "Linda", "Susan", "Steve",
         "George", "Henry", "Grace", "Ben", "Sam", "Lucy", "Adam", "Eric", "Jane", "Rose", "Chris", "Kevin", "Tim", "Max")
PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "station", "park", "house", "market", "beach")
OBJECTS = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack", "book", "letter", "ball")


def single_tokens(tokenizer, words: Sequence[str], what: str = "name", strict: bool = True) -> dict[str, int]:
    """``{word: id}`` of words that are one token after a space. ``strict``: any other word is an error."""
    out = {}
    for w in words:
        ids = tokenizer(" " + w, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            out[w] = ids[0]
        elif strict:
            raise InputError(f"{what} {w!r} is not a single token for this tokenizer (' {w}' is {len(ids)} tokens); "
                             f"pick {what}s from interp.tasks.ioi.single_tokens(tokenizer, ..., strict=False)")
    return out


@dataclass(frozen=True)
class LogitDiff:
    """``mean_b logits[b, end_b, io_b] − logits[b, end_b, s_b]`` (``per_prompt`` keeps the batch axis)."""

    io: torch.Tensor  # [batch]
    s: torch.Tensor  # [batch]
    end: torch.Tensor  # [batch]
    name: str = "logit_diff"

    def per_prompt(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[0] != self.io.shape[0]:
            raise InputError(f"logit_diff has {self.io.shape[0]} prompts but the logits have {logits.shape[0]} rows")
        b = torch.arange(logits.shape[0], device=logits.device)
        last = logits[b, self.end.to(logits.device)]  # [batch d_vocab]
        return last[b, self.io.to(logits.device)] - last[b, self.s.to(logits.device)]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.per_prompt(logits).mean()


@dataclass(frozen=True)
class Normalized:
    """``(m(logits) − corrupt)/(clean − corrupt)``: 0 at the corrupted baseline, 1 at the clean one (§12)."""

    metric: LogitDiff
    clean: float
    corrupt: float
    name: str = "normalized_logit_diff"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return (self.metric(logits) - self.corrupt) / (self.clean - self.corrupt)


@dataclass(frozen=True)
class IOIData:
    clean: list[str]
    corrupted: list[str]
    io: list[str]
    s: list[str]
    templates: list[int]
    order: list[str]  # "ABBA" or "BABA" per prompt
    corruption: str
    metric: LogitDiff

    def __len__(self) -> int:
        return len(self.clean)

    @property
    def answers(self) -> torch.Tensor:
        """``[batch 2]`` token ids (IO, S), TransformerLens's ``answer_tokens``."""
        return torch.stack([self.metric.io, self.metric.s], 1)

    def accuracy(self, logits: torch.Tensor) -> float:
        """Fraction of prompts whose IO logit beats the S logit."""
        return float((self.metric.per_prompt(logits) > 0).float().mean())


def ioi(model, n: int = 100, *, seed: int = 0, corruption: str = "abc", templates: Sequence[int] | None = None,
        names: Sequence[str] | None = None) -> IOIData:
    """``n`` IOI prompts, half ABBA and half BABA, with their corruptions and the logit-difference metric."""
    from interp.inputs import to_batch

    if corruption not in ("abc", "flip"):
        raise InputError(f"corruption must be 'abc' (pABC) or 'flip' (S2↔IO), got {corruption!r}")
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    tok = model.tokenizer
    name_ids = single_tokens(tok, names, "name") if names is not None else single_tokens(tok, NAMES, strict=False)
    if len(name_ids) < 5:
        raise InputError(f"need at least 5 single-token names, got {len(name_ids)}")
    places = list(single_tokens(tok, PLACES, "place", strict=False))
    objects = list(single_tokens(tok, OBJECTS, "object", strict=False))
    tids = list(range(len(TEMPLATES))) if templates is None else [int(t) for t in templates]
    if any(not 0 <= t < len(TEMPLATES) for t in tids):
        raise InputError(f"template index out of range; there are {len(TEMPLATES)} templates (0-{len(TEMPLATES) - 1})")
    rng = random.Random(seed)
    pool = sorted(name_ids)
    rows = []
    for i in range(n):
        t = tids[i % len(tids)]
        io, s, x, y, z = rng.sample(pool, 5)
        fill = {"PLACE": rng.choice(places), "OBJECT": rng.choice(objects)}
        order = "ABBA" if i % 2 == 0 else "BABA"
        a, b = (io, s) if order == "ABBA" else (s, io)
        clean = TEMPLATES[t].format(A=a, B=b, C=s, **fill)
        if corruption == "abc":
            bad = TEMPLATES[t].format(A=x, B=y, C=z, **fill)
        else:
            bad = TEMPLATES[t].format(A=a, B=b, C=io, **fill)
        rows.append((clean, bad, io, s, t, order))
    clean = [r[0] for r in rows]
    batch = to_batch(model, clean)
    end = batch.attention_mask.sum(1).cpu() - 1 if batch.padding_side == "right" else torch.full((n,), batch.tokens.shape[1] - 1)
    metric = LogitDiff(torch.tensor([name_ids[r[2]] for r in rows]), torch.tensor([name_ids[r[3]] for r in rows]), end)
    return IOIData(clean, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows],
                   [r[5] for r in rows], corruption, metric)


@dataclass(frozen=True)
class PositionPairs:
    """Base/source prompt pairs for the IOI *name position* feature (Makelov et al., methods.md §11): each base
    and source come from the same template with independent names, so their tokens align. The order is ABB
    (IO first: "When Mary and John …, John gave … to") or BAB. Patching the source's position feature into the
    base makes the base answer with the name at the source's IO position: ``target`` is the base's IO when the
    orders agree and the base's S when they differ."""

    base: list[str]
    source: list[str]
    base_order: list[str]  # "ABB" or "BAB"
    source_order: list[str]
    answers: torch.Tensor  # [batch 2]: the base's (IO, S) token ids
    target: torch.Tensor  # [batch]: the source-implied answer

    def __len__(self) -> int:
        return len(self.base)

    @property
    def flips(self) -> torch.Tensor:
        """``[batch]`` bool: base and source orders differ (the pairs whose target is the base's S)."""
        return torch.tensor([a != b for a, b in zip(self.base_order, self.source_order)])


def position_pairs(model, n: int = 200, *, seed: int = 0, templates: Sequence[int] | None = None) -> PositionPairs:
    """``n`` pairs cycling through the four (base, source) order combinations ABB/BAB × ABB/BAB."""
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    tok = model.tokenizer
    name_ids = single_tokens(tok, NAMES, strict=False)
    places = list(single_tokens(tok, PLACES, "place", strict=False))
    objects = list(single_tokens(tok, OBJECTS, "object", strict=False))
    if len(name_ids) < 4 or not places or not objects:
        raise InputError(f"this tokenizer has {len(name_ids)} single-token names, {len(places)} places and {len(objects)} objects; "
                         "position pairs need at least 4 names and one of each (use a model with a word-level vocabulary)")
    tids = list(range(len(TEMPLATES))) if templates is None else [int(t) for t in templates]
    if any(not 0 <= t < len(TEMPLATES) for t in tids):
        raise InputError(f"template index out of range; there are {len(TEMPLATES)} templates (0-{len(TEMPLATES) - 1})")
    rng = random.Random(seed)
    pool = sorted(name_ids)
    combos = [("ABB", "ABB"), ("ABB", "BAB"), ("BAB", "ABB"), ("BAB", "BAB")]
    rows = []
    for i in range(n):
        t = tids[rng.randrange(len(tids))]
        bo, so = combos[i % 4]
        fill = {"PLACE": rng.choice(places), "OBJECT": rng.choice(objects)}

        def prompt(order):
            io, s = rng.sample(pool, 2)
            a, b = (io, s) if order == "ABB" else (s, io)
            return TEMPLATES[t].format(A=a, B=b, C=s, **fill), io, s

        base, io, s = prompt(bo)
        source, _, _ = prompt(so)
        rows.append((base, source, bo, so, name_ids[io], name_ids[s]))
    answers = torch.tensor([[r[4], r[5]] for r in rows])
    target = torch.where(torch.tensor([r[2] == r[3] for r in rows]), answers[:, 0], answers[:, 1])
    return PositionPairs([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], answers, target)


__all__ = ["ioi", "IOIData", "PositionPairs", "position_pairs", "LogitDiff", "Normalized", "single_tokens", "TEMPLATES", "NAMES"]
