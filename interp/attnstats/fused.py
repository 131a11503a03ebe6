"""Running a model with the attention computation itself replaced by the fused statistics kernel.

We register ``interp_stats`` in transformers' attention-function registry and, for the duration of a call,
(1) point the HF model at it and (2) swap TransformerLens bridge components back to their HF originals,
because the bridge re-implements rotary attention eagerly (materializing ``[batch head query key]``).
No ``n×n`` tensor is created; each layer's ``KernelStats`` is handed to a ``Recorder``.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from interp.attnstats.kernels import HeadEdit, KernelStats, attn_stats_kernel
from interp.attnstats.kernels._threads import release_free_heap
from interp.errors import UnsupportedModelError

IMPL_NAME = "interp_stats"
_ACTIVE: contextvars.ContextVar["Recorder | None"] = contextvars.ContextVar("interp_stats_recorder", default=None)


class StopForward(Exception):
    """Raised by the fused attention once ``Recorder.stop_after`` has run; the caller catches it."""


@dataclass
class Recorder:
    """Parameters for, and results of, every fused attention call made while it is active."""

    segments: torch.Tensor | None  # [batch n_segments pos] float 0/1, in padded-batch coordinates
    key_valid: torch.Tensor | None = None  # [batch pos] bool; transformers drops the 2D mask for custom kernels
    key_mass: bool = False
    edits: dict[int, HeadEdit] = field(default_factory=dict)
    backend: str = "auto"
    stats: tuple[str, ...] | None = None  # per-row statistics to compute (None: all); see kernels.ROW_STATS
    keep_z: bool = False
    keep: bool = True  # False: run the edits only (decoding loops that read stats via `last`)
    rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # layer -> (heads, queries)
    stop_after: int | None = None  # raise StopForward once this layer has run (later layers are not needed)
    calls: dict[int, list[KernelStats]] = field(default_factory=dict)
    windows: dict[int, int | None] = field(default_factory=dict)  # layer -> the sliding window of its last call
    last: dict[int, KernelStats] = field(default_factory=dict)

    fitted: dict = field(default_factory=dict, repr=False)  # (name, k_len, device) -> tensor, shared by layers

    def segments_for(self, k_len: int, device) -> torch.Tensor | None:
        """Segments cover the prompt; keys beyond it (generated tokens) belong to no segment."""
        return self._fit("segments", k_len, device, 0.0)

    def key_valid_for(self, k_len: int, device) -> torch.Tensor | None:
        """Keys beyond the prompt (generated tokens) are real."""
        return self._fit("key_valid", k_len, device, True)

    def _fit(self, name: str, k_len: int, device, fill):
        # one tensor for every layer: the kernel checks and classifies a segments tensor once, not per layer
        key = (name, k_len, str(device))
        if key not in self.fitted:
            self.fitted[key] = _fit_keys(getattr(self, name), k_len, device, fill)
        return self.fitted[key]

    def store(self, layer: int, st: KernelStats) -> None:
        if not self.keep_z:
            st = dataclasses.replace(st, out=None)  # by name: KernelStats grows fields (rows, backend)
        self.last[layer] = st
        if self.keep:
            self.calls.setdefault(layer, []).append(st)


def _fit_keys(t: torch.Tensor | None, k_len: int, device, fill) -> torch.Tensor | None:
    """Cut or extend (with ``fill``) the last, key axis of a prompt-length tensor to ``k_len``."""
    if t is None:
        return None
    t = t.to(device)
    if t.shape[-1] >= k_len:
        return t[..., :k_len]
    return torch.nn.functional.pad(t, (0, k_len - t.shape[-1]), value=fill)


# Keywords of transformers' attention call that change nothing here: bookkeeping, or positions that rotary
# embeddings already applied to q and k. Every other keyword is implemented below or refused.
_INERT_KWARGS = frozenset({
    "position_ids", "cache_position", "use_cache", "output_attentions", "output_hidden_states", "return_dict",
    "past_key_values", "past_key_value", "layer_idx", "is_cross_attention", "config", "position_embeddings",
    "token_type_ids", "logits_to_keep", "labels", "head_mask",
})
_IMPLEMENTED_KWARGS = frozenset({"sliding_window", "softcap", "s_aux", "is_causal"})


def _check_kwargs(module, kwargs: dict) -> None:
    """Refuse, in one line, any keyword that could change the scores or the probabilities and is not implemented
    (packed sequences ``cu_seq_lens_*``, sparse ``indices``, ``position_bias``, ...). ``None`` changes nothing."""
    unknown = sorted(k for k, v in kwargs.items()
                     if v is not None and k not in _INERT_KWARGS and k not in _IMPLEMENTED_KWARGS and v is not False)
    if unknown:
        raise UnsupportedModelError(
            f"{type(module).__name__} passes attention argument(s) {', '.join(unknown)} that the fused path does not implement; use attention_stats(..., backend='eager')"
        )


def _sinks(module, kwargs: dict):
    """GPT-OSS passes its learned sink logits as ``s_aux`` [head_index]; a model that keeps ``sinks`` on the module
    but does not pass them would be silently wrong, so that is refused."""
    s_aux = kwargs.get("s_aux")
    if s_aux is None and isinstance(getattr(module, "sinks", None), torch.Tensor):
        raise UnsupportedModelError(
            f"{type(module).__name__} has learned sink logits that its attention call does not pass as s_aux; use attention_stats(..., backend='eager')"
        )
    if s_aux is not None and isinstance(s_aux, torch.Tensor) and s_aux.dim() != 1:
        s_aux = s_aux.reshape(-1)
    return s_aux


def _n_layers(module) -> int:
    cfg = getattr(module, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    return int(getattr(cfg, "num_hidden_layers", 0) or 0)


def _interp_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    rec = _ACTIVE.get()
    if rec is None:
        raise RuntimeError("interp_stats attention called outside interp.attnstats.fused.activate(); use attention_stats()")
    _check_kwargs(module, kwargs)
    layer = getattr(module, "layer_idx", None)
    if layer is None:
        raise UnsupportedModelError(f"{type(module).__name__} has no layer_idx; use attention_stats(..., backend='eager')")
    key_valid = rec.key_valid_for(key.shape[2], query.device)
    if attention_mask is not None and attention_mask.ndim == 2:
        key_valid = attention_mask.to(device=query.device).bool()
    softcap = kwargs.get("softcap", getattr(module, "attn_logit_softcapping", None))
    causal = kwargs.get("is_causal")
    causal = bool(getattr(module, "is_causal", True) if causal is None else causal)
    if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim != 2:
        _check_full_mask(module, attention_mask, key_valid, causal, kwargs.get("sliding_window"), query.shape[2])
    scale = float(scaling if scaling is not None else query.shape[-1] ** -0.5)  # before any zero columns
    dv = value.shape[-1]
    query, key, value = _common_head_size(query, key, value)
    st = attn_stats_kernel(
        query, key, value, scale=scale,
        causal=causal, key_valid=key_valid,
        segments=rec.segments_for(key.shape[2], query.device), key_mass=rec.key_mass, softcap=softcap,
        edit=rec.edits.get(layer), backend=rec.backend, rows=rec.rows.get(layer), stats=rec.stats,
        window=kwargs.get("sliding_window"), sinks=_sinks(module, kwargs),
    )
    rec.store(layer, st)
    if query.device.type == "cpu" and layer == _n_layers(module) - 1:  # before the logits are allocated
        release_free_heap(query.shape[0] * query.shape[1] * query.shape[2] * key.shape[2])
    window = kwargs.get("sliding_window")
    rec.windows[layer] = None if window is None else int(window)
    if rec.stop_after == layer:
        raise StopForward()
    return st.out[..., :dv].transpose(1, 2).contiguous(), None  # [batch query_pos head_index d_head]


def _check_full_mask(module, mask: torch.Tensor, key_valid, causal: bool, window, q_len: int) -> None:
    """A 4-D mask (built by the model, or by a runner that calls the layers itself) is accepted only where it says
    no more than the kernel applies anyway (causal band, window, key padding) on every real query row; a mask that
    carries anything else (sparse indexers, image-token blocks) is refused, never silently dropped."""
    allowed = mask if mask.dtype == torch.bool else mask == 0  # [batch|1 head|1 query_pos key_pos]
    if allowed.ndim != 4 or not bool((allowed == allowed[:, :1]).all()):
        raise UnsupportedModelError(f"{type(module).__name__} builds its own per-head attention mask, which the fused path "
                                    "does not apply; use attention_stats(..., backend='eager')")
    allowed = allowed[:, 0]  # [batch|1 query_pos key_pos]
    k_len = allowed.shape[-1]
    qpos = torch.arange(k_len - q_len, k_len, device=allowed.device)[:, None]
    kpos = torch.arange(k_len, device=allowed.device)[None, :]
    expect = torch.ones(q_len, k_len, dtype=torch.bool, device=allowed.device)
    if causal:
        expect &= kpos <= qpos
    if window is not None:
        expect &= kpos > qpos - int(window)
    expect = expect[None]
    rows = torch.ones(1, q_len, dtype=torch.bool, device=allowed.device)
    if key_valid is not None:
        kv = key_valid.to(allowed.device)
        expect = expect & kv[:, None, :]
        rows = kv[:, k_len - q_len:]
    same = (allowed == expect) | ~rows[..., None]  # padding query rows are never read
    if not bool(same.all()):
        raise UnsupportedModelError(f"{type(module).__name__} builds its own {mask.ndim}-D attention mask that differs from "
                                    "causal + window + padding, which the fused path cannot apply; use attention_stats(..., backend='eager')")


def _common_head_size(query, key, value):
    """Multi-head latent attention (DeepSeek V2/V3, GLM-4 MoE Lite) has value heads narrower (or wider) than
    query/key heads. Zero columns make one width without changing anything: zero value columns give zero
    output columns (cut off again), zero query/key columns add nothing to the scores."""
    d, dv = query.shape[-1], value.shape[-1]
    if dv < d:
        value = torch.nn.functional.pad(value, (0, d - dv))
    elif dv > d:
        query, key = (torch.nn.functional.pad(t, (0, dv - d)) for t in (query, key))
    return query, key, value


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(IMPL_NAME, _interp_attention)


def hf_model_of(model) -> torch.nn.Module:
    return getattr(model, "original_model", model)


def _unwrap_bridge(module: torch.nn.Module, swaps: list) -> None:
    if "transformer_lens" not in sys.modules:  # no bridge was ever built, so a plain HF model holds none
        return
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    for name, child in list(module._modules.items()):
        if child is None:
            continue
        if isinstance(child, GeneralizedComponent) and child.original_component is not None:
            swaps.append((module, name, child))
            module._modules[name] = child = child.original_component
        _unwrap_bridge(child, swaps)


def check_supported(hf) -> None:
    if not getattr(hf, "_supports_attention_backend", False):
        raise UnsupportedModelError(
            f"{type(hf).__name__} does not dispatch through transformers' attention interface, so the fused path cannot replace its attention; use attention_stats(..., backend='eager')"
        )
    if any(isinstance(getattr(m, "indexer", None), torch.nn.Module) for m in hf.modules()):
        raise UnsupportedModelError(
            f"{type(hf).__name__} uses sparse attention (an indexer picks each query's keys through its own mask), which the fused path does not implement; use attention_stats(..., backend='eager')"
        )


@contextlib.contextmanager
def hf_with_attention(model, implementation: str) -> Iterator[torch.nn.Module]:
    """Yield the plain HF model of ``model`` (bridge components swapped back to their HF originals) running
    ``implementation`` (a name in transformers' attention registry, e.g. ``"sdpa"``) while the block runs."""
    hf = hf_model_of(model)
    configs = {id(c): c for c in [hf.config, *(getattr(hf.config, a, None) for a in ("text_config",))] if c is not None}
    old = {k: c._attn_implementation for k, c in configs.items()}
    swaps: list = []
    try:
        _unwrap_bridge(hf, swaps)
        for c in configs.values():
            c._attn_implementation = implementation
        yield hf
    finally:
        for k, c in configs.items():
            c._attn_implementation = old[k]
        for parent, name, child in reversed(swaps):
            parent._modules[name] = child


@contextlib.contextmanager
def activate(model, recorder: Recorder) -> Iterator[torch.nn.Module]:
    """Yield the plain HF model, wired to the fused kernel, for as long as the block runs."""
    check_supported(hf_model_of(model))
    _register()
    token = _ACTIVE.set(recorder)
    try:
        with hf_with_attention(model, IMPL_NAME) as hf:
            yield hf
    finally:
        _ACTIVE.reset(token)
