"""Turning user inputs (text, list of texts, token tensors) into a padded token batch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

from interp.errors import InputError

Inputs = Union[str, Sequence[str], torch.Tensor]


@dataclass(frozen=True)
class Batch:
    tokens: torch.Tensor  # [batch pos] int64
    attention_mask: torch.Tensor  # [batch pos] int64, 1 = real token
    padding_side: str

    @property
    def padded(self) -> bool:
        return bool((self.attention_mask == 0).any())


def to_batch(model, inputs: Inputs, *, padding_side: str = "right", attention_mask: torch.Tensor | None = None) -> Batch:
    """Tokenize (or check) ``inputs``; uneven texts are padded on ``padding_side``."""
    if not hasattr(model, "parameters") or not hasattr(model, "tokenizer"):
        raise InputError(f"expected a model from interp.load_model, got a {type(model).__name__}; load it first, "
                         f"e.g. model = interp.load_model('smollm2-135m')")
    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    if isinstance(inputs, torch.Tensor):
        tokens = _check_tokens(model, inputs)
        mask = torch.ones_like(tokens) if attention_mask is None else attention_mask.to(tokens.device).long()
        if mask.shape != tokens.shape:
            raise InputError(f"attention_mask shape {tuple(mask.shape)} differs from tokens {tuple(tokens.shape)}; pass one mask entry per token")
        return Batch(tokens, mask, padding_side)
    texts = check_prompts(inputs)
    tok = model.tokenizer
    enc = tok(texts, return_tensors="pt", padding=True, padding_side=padding_side, add_special_tokens=True)
    tokens, mask = enc["input_ids"], enc["attention_mask"]
    start = start_token_id(tok)
    if _prepends_bos(model) and start is not None and not bool((tokens[mask.bool()][:1] == start).all()):
        tokens, mask = _prepend_bos(tokens, mask, start, tok.pad_token_id, padding_side)
    device = _device(model)
    return Batch(tokens.to(device), mask.to(device), padding_side)


def check_prompts(inputs: str | Sequence[str]) -> list[str]:
    """The prompts as a list, or InputError for no prompts, a non-string, or an empty one."""
    if isinstance(inputs, str):
        texts = [inputs]
    elif isinstance(inputs, (list, tuple)):
        texts = list(inputs)
    else:
        raise InputError(f"inputs must be a string, a list of strings or a token tensor, not a {type(inputs).__name__}")
    if not texts:
        raise InputError("no prompts given; pass a string, a list of strings or a token tensor")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"prompt {i} is a {type(t).__name__}, not a string; pass text or a token tensor")
        if not t.strip():
            raise InputError(f"prompt {i} is empty; pass non-empty text")
    return texts


def start_token_id(tokenizer) -> int | None:
    """The id a prompt starts with: ``[CLS]`` for BERT-style tokenizers, else BOS (None if it has neither)."""
    return tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id


def _prepends_bos(model) -> bool:
    return bool(getattr(getattr(model, "cfg", None), "default_prepend_bos", False))


def _prepend_bos(tokens, mask, bos, pad, side):
    b = tokens.shape[0]
    if side == "right":
        return torch.cat([torch.full((b, 1), bos), tokens], 1), torch.cat([torch.ones(b, 1, dtype=mask.dtype), mask], 1)
    # left padding: insert BOS just before each row's first real token
    out_t = torch.full((b, tokens.shape[1] + 1), pad if pad is not None else 0)
    out_m = torch.zeros_like(out_t)
    for i in range(b):
        real = tokens[i][mask[i].bool()]
        n = real.numel() + 1
        out_t[i, -n:] = torch.cat([torch.tensor([bos]), real])
        out_m[i, -n:] = 1
    return out_t, out_m


def _check_tokens(model, tokens: torch.Tensor) -> torch.Tensor:
    if tokens.dtype not in (torch.int64, torch.int32):
        raise InputError(f"token tensor has dtype {tokens.dtype}; pass integer token ids")
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        raise InputError(f"token tensor has shape {tuple(tokens.shape)}; pass [pos] or [batch, pos] with pos > 0")
    vocab = model.cfg.d_vocab
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
        raise InputError(f"token ids must lie in [0, {vocab}); got range [{int(tokens.min())}, {int(tokens.max())}]")
    return tokens.long().to(_device(model))


def _device(model) -> torch.device:
    return next(model.parameters()).device
