"""Site hooks on the plain transformers modules of a Llama-family decoder (the faster engine).

Sites map to modules as TransformerLens maps them: ``q/k/v`` are the projection outputs before rotary,
``z`` is the input of ``o_proj``, ``attn_out`` its output, ``mlp_out`` the MLP output, ``mlp_post`` the input of ``down_proj``, ``resid_pre`` /
``resid_post`` a decoder layer's input / output. ``resid_mid`` is not a module boundary: a write sets the
attention output to ``target − resid_pre``, so both the MLP and the skip connection see the new value.
Patterns need the bridge (``hook_pattern``); :func:`find_stack` returns None for architectures it does not know.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

HF_SITES = frozenset({"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post", "q", "k", "v", "z"})
HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]


@dataclass(eq=False)
class Stack:
    hf: torch.nn.Module
    n_heads: int
    n_kv: int
    d_head: int

    # Looked up on each use: inside `plain` they are the HF modules, outside the bridge's wrappers.
    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.hf.model.layers

    @property
    def norm(self) -> torch.nn.Module:
        return self.hf.model.norm

    @property
    def unembed(self) -> torch.nn.Module:
        return self.hf.lm_head

    def attach(self, site: str, layer: int, fn: HookFn) -> list:
        """Register ``fn`` (site tensor in TL layout → new tensor or None) and return the handles."""
        blk = self.layers[layer]
        attn = blk.self_attn
        if site == "resid_pre":
            return [blk.register_forward_pre_hook(_pre_arg0(fn), with_kwargs=True)]
        if site == "resid_post":
            return [blk.register_forward_hook(_out0(fn))]
        if site == "attn_out":
            return [attn.register_forward_hook(_out0(fn))]
        if site == "mlp_out":
            return [blk.mlp.register_forward_hook(_out0(fn))]
        if site == "mlp_post":
            return [blk.mlp.down_proj.register_forward_pre_hook(_pre_arg0(fn), with_kwargs=True)]
        if site == "resid_mid":
            return _resid_mid(blk, fn)
        if site in ("q", "k", "v"):
            n = self.n_heads if site == "q" else self.n_kv
            return [getattr(attn, f"{site}_proj").register_forward_hook(_out0(_heads_view(fn, n, self.d_head)))]
        if site == "z":
            return [attn.o_proj.register_forward_pre_hook(_pre_arg0(_heads_view(fn, self.n_heads, self.d_head)), with_kwargs=True)]
        raise KeyError(site)


def find_stack(model) -> Stack | None:
    from interp.attnstats.fused import hf_model_of

    hf = hf_model_of(model)
    base = getattr(hf, "model", None)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not hasattr(hf, "lm_head") or not hasattr(base, "norm"):
        return None
    if getattr(hf.config, "final_logit_softcapping", None) or getattr(hf.config, "model_type", "") not in _LLAMA_LIKE:
        return None
    cfg = hf.config
    n_heads = cfg.num_attention_heads
    return Stack(hf, n_heads, getattr(cfg, "num_key_value_heads", None) or n_heads,
                 getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)


_LLAMA_LIKE = {"llama", "mistral", "qwen2"}


def _pre_arg0(fn: HookFn):
    def hook(module, args, kwargs):
        if args:
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        new = fn(kwargs["hidden_states"])
        return None if new is None else (args, {**kwargs, "hidden_states": new})
    return hook


def _out0(fn: HookFn):
    def hook(module, args, out):
        t = out[0] if isinstance(out, tuple) else out
        new = fn(t)
        if new is None:
            return None
        return (new, *out[1:]) if isinstance(out, tuple) else new
    return hook


def _heads_view(fn: HookFn, n: int, d: int) -> HookFn:
    def wrapped(t):  # [batch pos n·d] ↔ [batch pos head d_head]
        new = fn(t.view(*t.shape[:-1], n, d))
        return None if new is None else new.reshape(t.shape)
    return wrapped


def _resid_mid(blk, fn: HookFn) -> list:
    state: dict = {}

    def pre(module, args, kwargs):
        state["pre"] = args[0] if args else kwargs["hidden_states"]

    def post(module, args, out):
        attn_out = out[0]
        pre_t = state.pop("pre")
        new = fn(pre_t + attn_out)
        return None if new is None else (new - pre_t, *out[1:])

    return [blk.register_forward_pre_hook(pre, with_kwargs=True), blk.self_attn.register_forward_hook(post)]


@contextlib.contextmanager
def plain(model):
    """The bridge's HF model with the bridge wrappers swapped out for the duration of the block."""
    from interp.attnstats.fused import _unwrap_bridge, hf_model_of

    hf = hf_model_of(model)
    swaps: list = []
    try:
        _unwrap_bridge(hf, swaps)
        yield hf
    finally:
        for parent, name, child in reversed(swaps):
            parent._modules[name] = child


__all__ = ["Stack", "find_stack", "plain", "HF_SITES"]
