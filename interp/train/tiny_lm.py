"""A minimal causal transformer LM (pre-LN, learned positions) for training demonstrations and tests.

Its attention modules return ``(out, probs)`` and set ``returns_attention_probs = True``, so
:class:`interp.train.EntropyTracker` reads their probabilities and :func:`interp.train.sigma_reparam`
finds their ``q, k, v, o`` projections.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class CausalSelfAttention(nn.Module):
    returns_attention_probs = True

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model) for _ in range(4))

    def forward(self, x: torch.Tensor):
        b, t, _ = x.shape

        def split(y):  # [batch pos d_model] -> [batch head_index pos d_head]
            return y.view(b, t, self.n_heads, self.d_head).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(self.d_head)  # [batch head q k], fp32 logits
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        out = (probs.to(v.dtype) @ v).transpose(1, 2).reshape(b, t, -1)  # [batch pos d_model]
        return self.o(out), probs


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))[0]
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    def __init__(self, vocab_size: int = 256, d_model: int = 128, n_layers: int = 2, n_heads: int = 4, seq_len: int = 64):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))  # [batch pos vocab]


__all__ = ["TinyLM", "CausalSelfAttention"]
