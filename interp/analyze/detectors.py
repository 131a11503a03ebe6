"""Previous-token, duplicate-token and induction head detectors.

Patterns and the ``"mul"`` score follow TransformerLens's ``head_detector`` exactly (methods.md §12):
``score = Σ(A ⊙ P) / Σ A`` after optionally zeroing column 0 (``exclude_bos``) and the diagonal
(``exclude_current_token``). With ``rows="pattern"`` the sums run only over query rows where the detection
pattern has support, so a perfect induction head scores 1 rather than ≈ 0.5 on a twice-repeated sequence;
``rows="all"`` is TransformerLens's definition. The atlas reports ``rows="pattern"``.
"""
from __future__ import annotations

import pandas as pd
import torch

from interp.errors import InputError, UnknownNameError
from interp.hooks import CaptureSpec, capture
from interp.models import model_name
from interp.schema import make_frame
from interp.inputs import start_token_id
from interp.tasks.texts import repeated_random_tokens, shipped_prose, text_tokens


def previous_token_pattern(tokens: torch.Tensor) -> torch.Tensor:
    """``[pos pos]`` with 1 at (i, i-1)."""
    n = tokens.shape[-1]
    return torch.diag(torch.ones(n - 1), -1)


def duplicate_token_pattern(tokens: torch.Tensor) -> torch.Tensor:
    """``[pos pos]`` with 1 at (i, j) for j < i where token j equals token i."""
    eq = (tokens[:, None] == tokens[None, :]).float()
    return torch.tril(eq, -1)


def induction_pattern(tokens: torch.Tensor) -> torch.Tensor:
    """The duplicate pattern shifted right one column (attend to the token after the earlier copy)."""
    dup = duplicate_token_pattern(tokens)
    ind = torch.roll(dup, shifts=1, dims=1)
    ind[:, 0] = 0
    return ind


PATTERNS = {"previous_token": previous_token_pattern, "duplicate_token": duplicate_token_pattern, "induction": induction_pattern}


def pattern_score(attn: torch.Tensor, pattern: torch.Tensor, *, exclude_bos: bool = False,
                  exclude_current_token: bool = False, rows: str = "pattern") -> torch.Tensor:
    """Score every head. ``attn``: ``[... head_index query_pos key_pos]``; ``pattern``: ``[query_pos key_pos]``.
    Returns ``[... head_index]``."""
    if rows not in ("pattern", "all"):
        raise InputError(f"rows must be 'pattern' or 'all', not {rows!r}")
    a = attn.clone()
    if exclude_bos:
        a[..., 0] = 0
    if exclude_current_token:
        a = a * (1 - torch.eye(a.shape[-1], device=a.device, dtype=a.dtype))
    p = pattern.to(a)
    if rows == "pattern":
        a = a * (p.sum(-1, keepdim=True) > 0)
    return (a * p).sum((-2, -1)) / a.sum((-2, -1)).clamp_min(1e-12)


def detector_scores(model, *, seq_len: int = 40, batch: int = 4, seed: int = 0, text: str | None = None,
                    task: str = "detectors") -> pd.DataFrame:
    """All three detectors on repeated random tokens, plus previous-token on shipped prose. Tidy frame."""
    if seq_len < 2:
        raise InputError(f"seq_len must be at least 2, got {seq_len}")
    if batch < 1:
        raise InputError(f"batch must be at least 1, got {batch}")
    bos = start_token_id(model.tokenizer)
    rand = repeated_random_tokens(model.cfg.d_vocab, seq_len, batch, seed=seed, bos=bos)
    rows = _score_rows(model, rand, ["previous_token", "duplicate_token", "induction"], "repeated_random", seed)
    prose = text_tokens(model.tokenizer, text or shipped_prose(), 256)
    rows += _score_rows(model, prose, ["previous_token"], "prose", seed)
    return make_frame([{**r, "model": model_name(model), "task": task} for r in rows])


def _score_rows(model, tokens: torch.Tensor, names: list[str], condition: str, seed: int) -> list[dict]:
    cap = capture(model, tokens, CaptureSpec(sites=("pattern",)), return_logits=False)
    rows = []
    for name in names:
        if name not in PATTERNS:
            raise UnknownNameError(f"unknown detector {name!r}; choose from {sorted(PATTERNS)}")
        for layer in cap.layers:
            pat = cap["pattern", layer].float()  # [batch head_index query_pos key_pos]
            scores = torch.stack([pattern_score(pat[b], PATTERNS[name](tokens[b])) for b in range(tokens.shape[0])]).mean(0)
            rows += [{"layer": layer, "head": h, "metric": name, "value": float(s), "condition": condition, "seed": seed}
                     for h, s in enumerate(scores.tolist())]
    return rows
