"""Greedy decoding through the fused path, reading every head's top-1 attended key at each step.

Follows the reference retrieval-head procedure (methods.md §1): prefill all prompt tokens but the last
with the KV cache, then feed the last prompt token and decode greedily. Edits apply to the decoding steps
only (``edit_prefill=False``), as in the masking experiment. No n×n tensor exists at any step.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from interp.attnstats.fused import Recorder, activate, hf_model_of
from interp.edits import Edit, compile_edits
from interp.errors import InputError


@dataclass
class DecodeTrace:
    prompt: torch.Tensor  # [pos]
    generated: list[int]
    argmax: torch.Tensor  # [step layer head_index] key index attended most by the step's query
    max_weight: torch.Tensor  # [step layer head_index]
    text: str = ""
    stop_reason: str = "max_new_tokens"  # or "stop_id" / "stop_when"


def generate_with_stats(model, tokens: torch.Tensor, *, max_new_tokens: int = 50, stop_ids: Sequence[int] = (),
                        edits: Sequence[Edit] = (), edit_prefill: bool = False, backend: str = "auto",
                        prefill_chunk: int = 512, stop_when: Callable[[list[int]], bool] | None = None) -> DecodeTrace:
    """Greedy decoding of one prompt. The prefill runs in chunks of ``prefill_chunk`` tokens through the KV
    cache, so transient activations stay bounded and only the cache grows with the prompt. Decoding stops after a
    token in ``stop_ids`` (kept), when ``stop_when(generated)`` is true, or after ``max_new_tokens``."""
    from transformers import DynamicCache

    tokens = tokens.view(1, -1) if tokens.ndim == 1 else tokens
    if tokens.shape[0] != 1 or tokens.shape[1] == 0:
        raise InputError(f"generate_with_stats takes one non-empty prompt, got tokens of shape {tuple(tokens.shape)}")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    hf = hf_model_of(model)
    cfg = getattr(hf.config, "text_config", None) or hf.config
    n_layers = int(cfg.num_hidden_layers)
    layer_edits = compile_edits(edits, n_layers, int(cfg.num_attention_heads), ())
    device = next(hf.parameters()).device
    tokens = tokens.to(device)
    cache = DynamicCache(config=hf.config)
    # Only the last position's logits are read; the full [pos, d_vocab] prefill logits would dominate memory.
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(hf.forward).parameters else {}
    stops = set(int(s) for s in stop_ids)
    generated, args, maxw, reason = [], [], [], "max_new_tokens"
    with torch.no_grad():
        if tokens.shape[1] > 1:
            pre = Recorder(None, edits=layer_edits if edit_prefill else {}, backend=backend, keep=False)
            with activate(model, pre) as run:
                for start in range(0, tokens.shape[1] - 1, max(1, prefill_chunk)):
                    chunk = tokens[:, start: min(start + prefill_chunk, tokens.shape[1] - 1)]
                    run(input_ids=chunk, past_key_values=cache, use_cache=True, **last_only)
        rec = Recorder(None, edits=layer_edits, backend=backend, keep=False)
        with activate(model, rec) as run:
            step_in = tokens[:, -1:]
            for _ in range(max_new_tokens):
                out = run(input_ids=step_in, past_key_values=cache, use_cache=True, **last_only)
                w = int(out.logits[0, -1].argmax())
                args.append(torch.stack([rec.last[l].argmax[0, :, -1] for l in range(n_layers)]).cpu())
                maxw.append(torch.stack([rec.last[l].max_weight[0, :, -1] for l in range(n_layers)]).cpu())
                generated.append(w)
                if w in stops or (stop_when is not None and stop_when(generated)):
                    reason = "stop_id" if w in stops else "stop_when"
                    break
                step_in = torch.tensor([[w]], device=device)
    tok = getattr(model, "tokenizer", None)
    return DecodeTrace(tokens[0].cpu(), generated, torch.stack(args), torch.stack(maxw),
                       tok.decode(generated, skip_special_tokens=True) if tok is not None else "", reason)
