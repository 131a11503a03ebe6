"""Colored Objects (BIG-Bench style, Merullo et al. 2024): few-shot prompts with 3 objects and the "mindiff"
counterfactual (methods.md §8).

A prompt is ``shots`` solved examples followed by the query (the paper's format, ``"1shot"``)::

    Q: On the desk, I see a red cup, an orange pen, and a blue bowl. What color is the pen?
    A: Orange
    Q: On the floor, you see a green jug, a black ball, and a brown mug. What color is the ball?
    A:

The label is " " + the Title-cased color. The counterfactual is the same prompt with the queried object replaced
by another object of the list, so its answer is that object's color; the answer pair is (clean color,
counterfactual color) and the metric is their logit difference at the last token. Accuracy is top-1 over the 8
color labels.

Other formats (:data:`FORMATS`) add shots, list the 8 options after each question, or wrap the shots in the
model's chat template (one user/assistant turn per shot, each answer "A: Orange"; the query's assistant turn is
opened with "A:", so the label is " Orange" in every format). The counterfactual stays the paper's mindiff one in every format. SmolLM2-135M barely
does the paper's 1-shot format (``benchmarks/RESULTS.md``: mean logit difference and accuracy per format on 400
prompts), so :data:`DEFAULT_FORMAT` is the measured best whose mean logit difference has a 95% interval above 0.

Only objects and colors that are a single token (after a space) for the model's tokenizer are used, so a
prompt and its counterfactual have the same token positions and every prompt of a batch has the same length.
Colors must all be single tokens (the label set is fixed at 8); objects that are not are dropped (SmolLM2 keeps
14 of the 17).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from interp.errors import InputError, UnknownNameError
from interp.tasks.ioi import LogitDiff, single_tokens

OBJECTS = ("pencil", "notebook", "pen", "cup", "plate", "jug", "mug", "puzzle", "textbook", "leash", "necklace",
           "bracelet", "bottle", "ball", "envelope", "lighter", "bowl")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "brown", "black")
SURFACES = ("table", "desk", "floor")
SUBJECTS = ("there is", "you see", "I see")
TEMPLATE = "Q: On the {surface}, {subject} {items}. What color is the {object}?\nA:"
QUESTION = "On the {surface}, {subject} {items}. What color is the {object}?"
OPTIONS = "Options: " + ", ".join(c.title() for c in COLORS) + "."


@dataclass(frozen=True)
class Format:
    """A prompt format: ``shots`` solved examples, the options listed after each question, the chat template;
    ``fixed``: one set of solved examples shared by every prompt (a fixed few-shot prefix, as BIG-Bench builds
    its prompts; an evaluation can then reuse the prefix's keys and values), else new examples per prompt."""

    shots: int = 1
    options: bool = False
    chat: bool = False
    fixed: bool = False
    cloze: bool = False  # the answer is a sentence, "A: The pen is orange", and the label the lower-case " orange"


FORMATS = {"1shot": Format(1), "3shot": Format(3, fixed=True), "5shot": Format(5, fixed=True),
           "5shot-options": Format(5, options=True, fixed=True), "chat-5shot": Format(5, chat=True, fixed=True),
           "chat-5shot-options": Format(5, options=True, chat=True, fixed=True), "1shot-cloze": Format(1, cloze=True),
           "3shot-cloze": Format(3, cloze=True, fixed=True), "chat-3shot-cloze": Format(3, chat=True, fixed=True, cloze=True)}
# chat-3shot-cloze, 400 prompts (seed 1): mean logit difference 0.222 [0.081, 0.362], top-1 accuracy 0.392
# [0.346, 0.441] (majority 0.155, chance 0.125); the paper's 1shot: 0.192 [0.035, 0.349], 0.290 [0.248, 0.336]
DEFAULT_FORMAT = "chat-3shot-cloze"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _scene(rng: random.Random, objects: list[str], colors: list[str]) -> tuple[dict, list[str], list[str], int]:
    objs = rng.sample(objects, 3)
    cols = rng.sample(colors, 3)
    items = [f"{_article(c)} {c} {o}" for c, o in zip(cols, objs)]
    q = rng.randrange(3)
    parts = {"surface": rng.choice(SURFACES), "subject": rng.choice(SUBJECTS), "items": f"{items[0]}, {items[1]}, and {items[2]}"}
    return parts, objs, cols, q


def _question(parts: dict, obj: str, fmt: Format) -> str:
    text = QUESTION.format(object=obj, **parts)
    return f"{text}\n{OPTIONS}" if fmt.options else text


def _shots(rng: random.Random, objects: list[str], fmt: Format) -> list[tuple[str, str]]:
    out = []
    for _ in range(fmt.shots):
        parts, objs, cols, q = _scene(rng, objects, list(COLORS))
        out.append((_question(parts, objs[q], fmt), _lead(objs[q], fmt) + (f" {cols[q]}" if fmt.cloze else cols[q].title())))
    return out


def _lead(obj: str, fmt: Format) -> str:
    """What the answer line says before the color: "The pen is" in a cloze format, nothing otherwise."""
    return f"The {obj} is" if fmt.cloze else ""


def _render(tok, shots: list[tuple[str, str]], query: str, fmt: Format, lead: str = "") -> str:
    """The prompt text: solved ``(question, Answer)`` shots, then the query awaiting its answer."""
    if fmt.chat:
        msgs = []
        for q, a in shots:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": f"A: {a}"}]
        msgs.append({"role": "user", "content": query})
        # the assistant turn is opened with "A:" so the answer is " Red" as in the plain formats (SmolLM2 splits a bare "Orange")
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + "A:" + lead
    return "".join(f"Q: {q}\nA: {a}\n" for q, a in shots) + f"Q: {query}\nA:" + lead


@dataclass(frozen=True)
class ColoredObjectsData:
    clean: list[str]
    corrupted: list[str]  # mindiff: the queried object replaced by another object of the list
    answer: list[str]  # clean color (lower case)
    counterfactual: list[str]  # the counterfactual's color
    metric: LogitDiff  # logit(" Clean") − logit(" Counterfactual") at the last token
    label_ids: torch.Tensor  # [8] ids of " Red", " Orange", ... in COLORS order
    color_ids: torch.Tensor  # [8] ids of " red", " orange", ... (the colors as they appear in the prompt)
    answer_index: torch.Tensor  # [batch] index into COLORS of the clean answer
    positions: dict[str, torch.Tensor]  # [batch] token positions: end, io (answer color), s1, s2, wrong1, wrong2

    def __len__(self) -> int:
        return len(self.clean)

    def accuracy(self, logits: torch.Tensor) -> float:
        """Top-1 accuracy over the 8 color labels at each prompt's last token."""
        return float((self.predictions(logits) == self.answer_index).float().mean())

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        b = torch.arange(logits.shape[0])
        last = logits[b, self.metric.end.to(logits.device)]  # [batch d_vocab]
        return last[:, self.label_ids.to(logits.device)].argmax(-1).cpu()


def colored_objects(model, n: int = 100, *, seed: int = 0, format: str | None = None) -> ColoredObjectsData:
    """``n`` Colored Objects prompts in ``format`` (a :data:`FORMATS` name; default :data:`DEFAULT_FORMAT`)
    with their mindiff counterfactuals."""
    from interp.inputs import to_batch

    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    fmt = resolve_format(format)
    tok = model.tokenizer
    color_ids = single_tokens(tok, COLORS, "color")
    label_ids = color_ids if fmt.cloze else single_tokens(tok, [c.title() for c in COLORS], "color label")
    objects = list(single_tokens(tok, OBJECTS, "object", strict=False))
    if len(objects) < 4:
        raise InputError(f"only {len(objects)} of the {len(OBJECTS)} objects are single tokens for this tokenizer; "
                         "Colored Objects needs at least 4")
    rng = random.Random(seed)
    rows = []
    fixed = _shots(rng, objects, fmt) if fmt.fixed else None
    for _ in range(n):
        shots = fixed or _shots(rng, objects, fmt)
        parts, objs, cols, q = _scene(rng, objects, list(COLORS))
        other = rng.choice([i for i in range(3) if i != q])
        clean, cf = (_render(tok, shots, _question(parts, objs[i], fmt), fmt, " " + _lead(objs[i], fmt) if fmt.cloze else "")
                     for i in (q, other))
        rows.append((clean, cf, cols[q], cols[other], objs[q], [c for i, c in enumerate(cols) if i != q]))
    clean = [r[0] for r in rows]
    batch = to_batch(model, clean)
    if batch.padded:
        raise InputError("Colored Objects prompts tokenize to different lengths for this tokenizer; "
                         "its colors, objects or phrases are not all single tokens")
    tokens = batch.tokens.cpu()
    end = torch.full((n,), tokens.shape[1] - 1)
    obj_ids = single_tokens(tok, objects, "object")
    positions = {"end": end, "io": [], "s1": [], "s2": [], "wrong1": [], "wrong2": []}
    for b, (_, _, col, _, obj, wrong) in enumerate(rows):
        row = tokens[b].tolist()
        # the queried object in the question: no object follows it, except a cloze's "The <object> is" at the end
        s2 = _last(row, obj_ids[obj], len(row) - (2 if fmt.cloze else 0))
        positions["s2"].append(s2)
        positions["s1"].append(_last(row, obj_ids[obj], s2))
        positions["io"].append(_last(row, color_ids[col], s2))
        positions["wrong1"].append(_last(row, color_ids[wrong[0]], s2))
        positions["wrong2"].append(_last(row, color_ids[wrong[1]], s2))
    positions = {k: torch.as_tensor(v) for k, v in positions.items()}
    key = (lambda c: c) if fmt.cloze else str.title
    metric = LogitDiff(torch.tensor([label_ids[key(r[2])] for r in rows]), torch.tensor([label_ids[key(r[3])] for r in rows]), end)
    return ColoredObjectsData(clean, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], metric,
                              torch.tensor([label_ids[key(c)] for c in COLORS]),
                              torch.tensor([color_ids[c] for c in COLORS]),
                              torch.tensor([COLORS.index(r[2]) for r in rows]), positions)


def _last(row: list[int], token: int, before: int) -> int:
    """Position of the last ``token`` before ``before`` (the query's own list comes after the example)."""
    for p in range(before - 1, -1, -1):
        if row[p] == token:
            return p
    raise InputError(f"token {token} not found in the prompt; the tokenizer splits a color or object differently in context")


def resolve_format(name: str | None) -> Format:
    """The :class:`Format` called ``name`` (None: the default), or a one-line error listing the names."""
    name = DEFAULT_FORMAT if name is None else name
    if name not in FORMATS:
        raise UnknownNameError(f"Colored Objects format {name!r} unknown; available: {', '.join(FORMATS)}")
    return FORMATS[name]


__all__ = ["colored_objects", "ColoredObjectsData", "COLORS", "OBJECTS", "TEMPLATE", "FORMATS", "DEFAULT_FORMAT",
           "Format", "resolve_format"]
