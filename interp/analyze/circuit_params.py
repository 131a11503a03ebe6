"""Parameters of circuit discovery (:mod:`interp.analyze.circuits`), torch-free so that the CLI's config of
``interp circuits`` takes its defaults from here before torch loads."""
from __future__ import annotations

import math
from dataclasses import dataclass

from interp.errors import InputError


@dataclass(frozen=True)
class CircuitParams:
    n_stages: int = 3
    top_frac: float = 0.02
    min_effect: float = 0.02
    prune: bool = True
    keep: int = 16
    attn_threshold: float = 0.2
    copy_threshold: float = 0.3
    copy_top: int = 5
    attn_prompts: int = 32
    max_rows: int = 256
    chunk_tokens: int = 2048  # prompts are processed in chunks of about this many (padded) tokens; exact (see circuits)
    guard_frac: float = 0.1  # refuse discovery when |clean − corrupted| < this × the metric's sd across prompts

    def __post_init__(self):
        if self.n_stages < 1 or self.keep < 1 or self.attn_prompts < 1 or self.copy_top < 1 or self.chunk_tokens < 1:
            raise InputError("n_stages, keep, attn_prompts, copy_top and chunk_tokens must be at least 1")
        if not 0 <= self.guard_frac < 1:
            raise InputError(f"guard_frac must lie in [0, 1), got {self.guard_frac}")
        if not 0 < self.top_frac <= 1:
            raise InputError(f"top_frac must lie in (0, 1], got {self.top_frac}")

    def top_k(self, n_heads_total: int) -> int:
        return max(1, math.ceil(self.top_frac * n_heads_total - 1e-9))


__all__ = ["CircuitParams"]
