"""Offline texts: the shipped prose in ``data/`` and Python's ``pydoc_data.topics`` (always installed)."""
from __future__ import annotations

import re

import torch

from interp.inputs import start_token_id
from interp.tasks.sources import DATA_DIR, pydoc_text  # noqa: F401 (pydoc_text lives with the light loaders)



def shipped_prose() -> str:
    """A few paragraphs of plain English shipped in ``data/prose.txt`` (falls back to pydoc text)."""
    path = DATA_DIR / "prose.txt"
    return path.read_text(encoding="utf-8") if path.exists() else pydoc_text(4000)


def text_tokens(tokenizer, text: str, n: int) -> torch.Tensor:
    """``[1, ≤n]`` token ids of ``text``, starting with the start token even if the tokenizer does not add it."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    start = start_token_id(tokenizer)
    if start is not None and (ids.numel() == 0 or int(ids[0, 0]) != start):
        ids = torch.cat([torch.tensor([[start]]), ids], 1)
    return ids[:, :n]


def repeated_random_tokens(vocab_size: int, seq_len: int, batch: int, *, seed: int = 0, bos: int | None = None,
                           low: int = 100) -> torch.Tensor:
    """``[batch, 1 + 2*seq_len]``: BOS then a random sequence repeated twice (the induction test input).

    Token ids are drawn from ``[low, vocab_size)`` to avoid special tokens."""
    g = torch.Generator().manual_seed(seed)
    low = min(low, vocab_size // 2)
    half = torch.randint(low, vocab_size, (batch, seq_len), generator=g)
    parts = [half, half]
    if bos is not None:
        parts.insert(0, torch.full((batch, 1), bos))
    return torch.cat(parts, dim=1)
