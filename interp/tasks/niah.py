"""Needle-in-a-haystack prompts (Wu et al. 2024 setup, methods.md §1).

The haystack is tokenized and cut to fit the context length; the needle goes in at ``depth`` percent,
moved back to just after the nearest sentence end; the question follows. Chat-template models get their
template with the context wrapped in ``<book>…</book>``. The answer's token span is located with the
reference rule: the first window of ``len(answer)`` tokens whose token-id *set* covers more than 90% of the
answer's token-id set.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.errors import InputError
from interp.tasks.sources import Needle, load_needles  # noqa: F401  (re-exported)
from interp.tasks.texts import pydoc_text

QUESTION = "Based on the content of the book, Question: {question}\nAnswer:"
_SENTENCE_END = (".", "!", "?", ".\n", "\n")


@dataclass(frozen=True)
class NiahPrompt:
    tokens: torch.Tensor  # [pos]
    answer_span: tuple[int, int]  # [s, e) in token positions
    needle: Needle
    context_len: int
    depth: float
    text: str


def default_haystack() -> str:
    return pydoc_text()


def build_prompt(tokenizer, needle: Needle, context_len: int, depth: float, *, haystack: str | None = None,
                 chat: bool | None = None, buffer: int = 0) -> NiahPrompt:
    """A prompt of about ``context_len`` tokens with the needle at ``depth`` percent of the context."""
    if not 0 <= depth <= 100:
        raise InputError(f"depth {depth} is outside [0, 100]; give depths as percentages of the context")
    haystack = default_haystack() if haystack is None else haystack
    if not haystack.strip():
        raise InputError("the haystack text is empty; pass some text (the default is Python's pydoc topics)")
    chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    needle_ids = _ids(tokenizer, " " + needle.needle.strip() + " ")
    overhead = len(_ids(tokenizer, _wrap(tokenizer, "", needle.question, chat)))
    budget = context_len - overhead - len(needle_ids) - buffer
    if budget <= 0:
        raise InputError(f"needle and question need {context_len - budget} tokens, longer than the context of {context_len}; use a longer context")
    hay = _ids(tokenizer, haystack)
    while len(hay) < budget:  # repeat a short haystack until it fills the context
        hay = hay + hay
    hay = hay[:budget]
    at = _sentence_boundary(tokenizer, hay, int(len(hay) * depth / 100))
    context = tokenizer.decode(hay[:at]) + " " + needle.needle.strip() + " " + tokenizer.decode(hay[at:])
    text = _wrap(tokenizer, context, needle.question, chat)
    ids = _ids(tokenizer, text, special=not chat)
    span = find_span(ids, _ids(tokenizer, needle.answer))
    if span is None:
        span = find_span(ids, _ids(tokenizer, " " + needle.answer))
    if span is None:
        raise InputError(f"the answer {needle.answer!r} could not be located in the tokenized prompt; check its spelling against the needle")
    return NiahPrompt(torch.tensor(ids), span, needle, context_len, float(depth), text)


def find_span(prompt_ids: list[int], answer_ids: list[int], cover: float = 0.9) -> tuple[int, int] | None:
    """First window of ``len(answer_ids)`` tokens whose id set covers more than ``cover`` of the answer's id set."""
    n, target = len(answer_ids), set(answer_ids)
    if n == 0:
        raise InputError("the answer tokenizes to nothing; pass a non-empty answer")
    for s in range(len(prompt_ids) - n + 1):
        if len(set(prompt_ids[s:s + n]) & target) / len(target) > cover:
            return s, s + n
    return None


def _wrap(tokenizer, context: str, question: str, chat: bool) -> str:
    q = QUESTION.format(question=question)
    if not chat:
        return f"{context}\n\n{q}"
    msgs = [{"role": "user", "content": f"<book>{context}</book>\n{q}"}]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def _ids(tokenizer, text: str, special: bool = False) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def _sentence_boundary(tokenizer, ids: list[int], at: int) -> int:
    """Move ``at`` back to just after the nearest sentence-ending token (the reference inserts after a period)."""
    for i in range(min(at, len(ids)), 0, -1):
        if tokenizer.decode(ids[i - 1: i]).rstrip(" ").endswith(_SENTENCE_END):
            return i
    return 0
