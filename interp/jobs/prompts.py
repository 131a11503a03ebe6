"""Prompt length against the model's context, counted before the model loads.

A prompt of ``b`` UTF-8 bytes is at most ``b`` tokens under the byte-level and byte-fallback tokenizers our
models use (every token covers at least one byte), plus the special tokens the tokenizer adds. So a prompt whose
bytes fit is accepted at once; only a long one is counted, with the model's ``tokenizer.json`` read by the
``tokenizers`` library alone (well under a second, no torch, no transformers).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from interp.errors import InputError

SPECIAL_MARGIN = 2  # BOS/EOS or [CLS]/[SEP] a tokenizer may add


def tokenizer_file(spec) -> Path | None:
    """The ``tokenizer.json`` of a resolved model (None where there is none offline)."""
    from interp.models import bundled

    try:
        if spec.name in ("smollm2-135m", "tinyvlm") and not Path(spec.source).is_dir():
            folder = bundled.cache_dir() / "smollm2-135m-instruct"
        elif spec.name == "minilm-l6" and not Path(spec.source).is_dir():
            folder = bundled.minilm_dir()
        elif Path(spec.source).is_dir():
            folder = Path(spec.source)
        else:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(spec.source, "tokenizer.json")
            return Path(hit) if isinstance(hit, str) else None
    except Exception:  # a bundled package missing: the load reports that with its own line
        return None
    path = folder / "tokenizer.json"
    return path if path.is_file() else None


def count_tokens(spec, text: str) -> int | None:
    """Tokens of ``text`` (without special tokens) under ``spec``'s tokenizer, or None if it cannot be read."""
    path = tokenizer_file(spec)
    if path is None:
        return None
    try:
        from tokenizers import Tokenizer

        return len(Tokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids)
    except Exception:
        return None


def check_prompt_lengths(spec, prompts: Sequence[str], option: str, extra: int = 0, extra_what: str = "") -> None:
    """Each prompt plus ``extra`` tokens (e.g. ``--max-new-tokens``) must fit ``spec``'s context.

    A prompt is refused only on its counted tokens, never on the byte bound alone; where no tokenizer can be read
    offline it passes here and the model's own check runs after the load."""
    ctx = spec.context
    if ctx is None:
        return
    for i, p in enumerate(prompts):
        n_bytes = len(p.encode("utf-8"))
        if n_bytes + SPECIAL_MARGIN + extra <= ctx:
            continue
        n = count_tokens(spec, p)
        if n is None:
            continue  # cannot count offline: the model's own check runs after the load
        n += SPECIAL_MARGIN
        if n + extra > ctx:
            label = option if len(prompts) == 1 else f"{option} {i}"
            plus = f" plus {extra_what} {extra}" if extra else ""
            raise InputError(f"{label} is {n} tokens{plus}, more than {spec.name!r}'s context of {ctx}; "
                             f"shorten it{' or lower ' + extra_what if extra else ''}")


__all__ = ["check_prompt_lengths", "count_tokens", "tokenizer_file"]
