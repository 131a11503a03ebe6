"""Per-head attention statistics without any ``n×n`` tensor: ``attention_stats(model, inputs) -> AttnStats``.

The attention computation itself is replaced (see :mod:`interp.attnstats.fused`) by one of the kernels
behind one interface (:mod:`interp.attnstats.kernels`): ``reference`` (eager, the specification), ``cpu``
(blocked PyTorch, O(n) extra memory), ``triton`` (one pass), and ``flex`` / ``flash`` (exact identities on
FlexAttention or the SDPA flash operator; they give what they can give exactly, so ask for a subset with
``stats=``, e.g. ``stats=("lse", "entropy")``). ``backend="auto"`` picks the fastest exact one for the device and
the statistics asked (:func:`interp.attnstats.kernels.choose_backend`); ``AttnStats.backend`` says which ran. ``backend="eager"`` instead reduces the
bridge's own eager ``hook_pattern`` layer by layer: O(n²) memory, but it works for any architecture the
bridge hooks and is the fallback the errors name.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from interp.attnstats.fused import Recorder, activate, hf_model_of
from interp.attnstats.kernels import BACKENDS, HeadEdit, KernelStats
from interp.attnstats.kernels._common import wanted
from interp.attnstats.segments import build_segments
from interp.edits import Edit, compile_edits
from interp.errors import InputError
from interp.inputs import Batch, Inputs, to_batch
from interp.schema import make_frame

STAT_BACKENDS = (*BACKENDS, "eager")


@dataclass
class AttnStats:
    """Statistics of every head's attention, float32 ``[batch layer head_index query_pos]`` unless noted.

    ``backend`` names the kernel that actually ran (``cpu``, ``triton``, ``flex``, ``flash``, ``reference`` or
    ``eager``). ``lse``, ``entropy``, ``max_weight`` and ``argmax`` are None when left out of ``stats=``.
    ``segment_mass [batch layer head_index query_pos n_segments]``, ``key_mass [batch layer head_index key_pos]``
    (column sums over real queries), ``z [batch layer query_pos head_index d_head]`` (per-head output before
    W_O, when requested), ``logits [batch pos d_vocab]`` (left on the model's device: on a GPU, copying them
    to the host cost more than all the statistics). The statistics are on the CPU. Rows of padding queries carry no meaning; use
    ``attention_mask``.

    ``sink_logit_mass [batch layer head_index query_pos]``: for models with learned sink logits (GPT-OSS
    ``s_aux``), the probability of the sink column, an extra softmax outcome per head that has no value (the
    attention sink made explicit); 0 in layers without one, ``None`` for models without any. ``entropy`` and
    ``lse`` then describe the distribution the model really uses, sink column included; ``max_weight``,
    ``argmax`` and the masses stay over real keys (they sum to ``1 - sink_logit_mass``)."""

    model: str
    tokens: torch.Tensor
    attention_mask: torch.Tensor
    lse: torch.Tensor | None
    entropy: torch.Tensor | None
    max_weight: torch.Tensor | None
    argmax: torch.Tensor | None
    segment_names: tuple[str, ...] = ()
    segment_mass: torch.Tensor | None = None
    key_mass: torch.Tensor | None = None
    z: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    backend: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    sink_logit_mass: torch.Tensor | None = None

    @property
    def query_valid(self) -> torch.Tensor:
        """``[batch query_pos]`` real queries, excluding each row's first token (it can only see itself)."""
        valid = self.attention_mask.bool().clone()
        valid[torch.arange(valid.shape[0]), valid.float().argmax(1)] = False
        return valid

    def visible_keys(self) -> torch.Tensor:
        """``[batch query_pos]`` number of keys each query sees (causal + padding), ignoring sliding windows
        and sink columns; :meth:`outcomes` counts those per layer."""
        m = self.attention_mask.float()
        return m.cumsum(1) if self.meta.get("causal", True) else m.sum(1, keepdim=True).expand_as(m)

    def outcomes(self) -> torch.Tensor:
        """``[batch layer 1 query_pos]`` number of outcomes of each row's distribution: the keys it sees
        through causality, padding and the layer's sliding window (``meta["windows"]``), plus one sink column
        in layers with learned sink logits (``meta["sinks"]``). Normalized entropy divides by its log."""
        full = self.visible_keys()
        windows = self.meta.get("windows") or [None] * self.entropy.shape[1]
        sinks = self.meta.get("sinks") or [False] * self.entropy.shape[1]
        csum = torch.nn.functional.pad(self.attention_mask.float().cumsum(1), (1, 0))  # [batch pos+1]
        per = []
        for w, sk in zip(windows, sinks):
            v = full
            if w is not None:  # real keys in (p - w, p]
                pos = torch.arange(full.shape[1])
                v = csum[:, pos + 1] - csum[:, (pos + 1 - w).clamp_min(0)]
            per.append(v + (1.0 if sk else 0.0))
        return torch.stack(per, 1)[:, :, None, :]

    def to_frame(self, task: str = "attention_stats", condition: str | None = None) -> pd.DataFrame:
        """Tidy per-head means over real queries: entropy, normalized entropy, max_weight, mass:<segment>, and
        sink_logit_mass for models with learned sink logits (those that were computed)."""
        w = self.query_valid[:, None, None, :].float()  # [batch 1 1 query_pos]
        series = {}
        if self.entropy is not None:
            series["entropy"] = self.entropy
            series["normalized_entropy"] = self.entropy / self.outcomes().clamp_min(2).log().to(self.entropy)
        if self.max_weight is not None:
            series["max_weight"] = self.max_weight
        for i, name in enumerate(self.segment_names):
            series[f"mass:{name}"] = self.segment_mass[..., i]
        if self.sink_logit_mass is not None:
            series["sink_logit_mass"] = self.sink_logit_mass
        rows = []
        denom = w.sum((0, 3)).clamp_min(1)
        for metric, t in series.items():
            means = (t.nan_to_num(0.0) * w).sum((0, 3)) / denom  # [layer head_index]
            rows += [{"layer": l, "head": h, "metric": metric, "value": float(v), "condition": condition}
                     for l, row in enumerate(means.tolist()) for h, v in enumerate(row)]
        df = pd.DataFrame(rows).assign(model=self.model, task=task)
        return make_frame(df if condition is not None else df.drop(columns="condition"))


def attention_stats(model, inputs: Inputs, *, segments: Mapping[str, Any] | None = None, key_mass: bool = False,
                    edits: Sequence[Edit] = (), row_edits: Sequence[Sequence[Edit]] | None = None,
                    backend: str = "auto", stats: Sequence[str] | None = None, return_z: bool = False,
                    padding_side: str = "right", allow_overlap: bool = False, tokenizer=None,
                    attention_mask: torch.Tensor | None = None) -> AttnStats:
    """Run ``model`` (a ``TransformerBridge`` or a plain transformers model) once and return every head's
    attention statistics, with ``edits`` applied inside the attention computation.

    ``segments`` maps names to key spans (see :mod:`interp.attnstats.segments`); default ``{"first": "first"}``.
    ``edits`` apply to every batch row; ``row_edits`` (one edit list per batch row) add a different edit to
    each row, so one pass runs many edits (batched head sweeps).
    ``attention_mask [batch pos]`` (1 = real token) goes with token-tensor inputs that carry padding.
    ``stats`` names the per-row statistics to compute (default all: ``lse, entropy, max_weight, argmax``); the
    ``flex``/``flash`` backends refuse, in one line, those they cannot give exactly.
    """
    if backend not in STAT_BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(STAT_BACKENDS)}")
    want = wanted(stats)
    if backend == "eager" and stats is not None:
        raise InputError("stats= selects statistics of the fused backends; backend='eager' computes them all (drop stats=)")
    host = _host(model, tokenizer)
    batch = to_batch(host, inputs, padding_side=padding_side, attention_mask=attention_mask)
    names, seg = build_segments(segments, batch.attention_mask, allow_overlap=allow_overlap)
    hf = hf_model_of(model)
    if backend != "eager":  # before reading head counts: state-space models have none
        from interp.attnstats.fused import check_supported

        check_supported(hf)
    n_layers, n_heads = _dims(hf)
    if row_edits is not None and len(row_edits) != batch.tokens.shape[0]:
        raise InputError(f"row_edits has {len(row_edits)} lists but the batch has {batch.tokens.shape[0]} rows; give one edit list per row")
    layer_edits = compile_edits(edits, n_layers, n_heads, names, row_edits=row_edits, attention_mask=batch.attention_mask)
    if backend == "eager":
        from interp.attnstats.eager import eager_stats

        return eager_stats(model, batch, names, seg, key_mass=key_mass, edits=layer_edits, return_z=return_z)
    rec = Recorder(seg, key_valid=batch.attention_mask.bool(), key_mass=key_mass, edits=layer_edits, backend=backend,
                   keep_z=return_z, stats=None if stats is None else tuple(sorted(want)))
    with torch.no_grad(), activate(model, rec) as hf_run:
        out = hf_run(input_ids=batch.tokens, attention_mask=batch.attention_mask, position_ids=position_ids(batch), use_cache=False)
    if sorted(rec.calls) != list(range(n_layers)):
        from interp.errors import UnsupportedModelError

        raise UnsupportedModelError(f"only layers {sorted(rec.calls)} of {n_layers} ran through the fused path; use attention_stats(..., backend='eager')")
    ran = "+".join(sorted({st.backend for calls in rec.calls.values() for st in calls}))
    return _assemble(model, batch, rec.calls, names, getattr(out, "logits", None), ran, hf, rec.windows)


def position_ids(batch: Batch) -> torch.Tensor:
    """Positions count real tokens only, so a left-padded row sees the same positions as an unpadded one."""
    return (batch.attention_mask.long().cumsum(1) - 1).clamp_min(0)


def _assemble(model, batch: Batch, calls: Mapping[int, Sequence[KernelStats]], names, logits, backend, hf,
              windows: Mapping[int, int | None] = {}) -> AttnStats:
    from interp.models import is_causal, model_name

    per_layer = [calls[l][-1] for l in sorted(calls)]

    def stack(attr, dim=1):
        vals = [getattr(s, attr) for s in per_layer]
        return None if vals[0] is None else torch.stack(vals, dim).cpu()

    z = stack("out", 1)
    sinks = [s.sink_mass for s in per_layer]
    sink_mass = None
    if any(t is not None for t in sinks):  # layers without sink logits put no mass on one
        like = next(t for t in sinks if t is not None)
        sink_mass = torch.stack([torch.zeros_like(like) if t is None else t for t in sinks], 1).cpu()
    return AttnStats(
        model=model_name(model), tokens=batch.tokens.cpu(), attention_mask=batch.attention_mask.cpu(),
        lse=stack("lse"), entropy=stack("entropy"), max_weight=stack("max_weight"), argmax=stack("argmax"),
        segment_names=tuple(names), segment_mass=stack("segment_mass"), key_mass=stack("key_mass"),
        z=None if z is None else z.transpose(2, 3),  # [batch layer head q d] -> [batch layer query_pos head_index d_head]
        logits=None if logits is None else logits.detach(), backend=backend,
        meta={"causal": is_causal(hf), "windows": [windows.get(l) for l in sorted(calls)],
              "sinks": [s.sink_mass is not None for s in per_layer]}, sink_logit_mass=sink_mass,
    )


def _dims(hf) -> tuple[int, int]:
    cfg = getattr(hf.config, "text_config", None) or hf.config
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


class _HfHost:
    """Lets ``to_batch`` tokenize for a plain transformers model."""

    def __init__(self, hf, tokenizer):
        from types import SimpleNamespace

        self._hf, self.tokenizer = hf, tokenizer
        cfg = getattr(hf.config, "text_config", None) or hf.config  # LLaVA-style configs keep the vocabulary there
        self.cfg = SimpleNamespace(d_vocab=cfg.vocab_size, default_prepend_bos=False)

    def parameters(self):
        return self._hf.parameters()


def _host(model, tokenizer):
    if hasattr(model, "original_model") and hasattr(model, "cfg"):
        return model
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise InputError(f"attention_stats takes a model from interp.load_model (or a transformers model), not a {type(model).__name__}")
    tokenizer = tokenizer or getattr(model, "interp_tokenizer", None)
    if tokenizer is None:
        tokenizer = _NoTokenizer()
    return _HfHost(model, tokenizer)


class _NoTokenizer:
    def __call__(self, *a, **k):
        raise InputError("a plain transformers model needs tokenizer=... to take text; or pass token ids")


def __getattr__(name: str):
    if name == "attention_rows":  # lazily: rows.py imports this module
        from interp.attnstats.rows import attention_rows

        return attention_rows
    raise AttributeError(f"module 'interp.attnstats' has no attribute {name!r}")


__all__ = ["attention_stats", "attention_rows", "AttnStats", "HeadEdit", "STAT_BACKENDS"]
