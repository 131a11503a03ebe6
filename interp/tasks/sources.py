"""User-supplied inputs read from disk (text files, needle files) and the NIAH grid, checked before any model
loads. Light: imports neither torch nor pandas, so the CLI rejects bad files in well under a second.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from interp.errors import InputError

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
STOP_RULES = ("line", "first-newline", "eos")


def read_text_file(path: str | Path, option: str = "--text") -> str:
    """The UTF-8 text of ``path``, or one line saying why it cannot be used (missing, binary, empty)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{option} file {str(p)!r} does not exist or is not a file; pass a UTF-8 text file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"{option} file {str(p)!r} cannot be read ({e.strerror or e}); pass a readable UTF-8 text file") from None
    if b"\x00" in data[:8192]:
        raise InputError(f"{option} file {str(p)!r} is binary, not text; pass a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{option} file {str(p)!r} is not valid UTF-8 (byte {e.start}); convert it with iconv -t utf-8") from None
    if not text.strip():
        raise InputError(f"{option} file {str(p)!r} is empty; pass a file with some text")
    return text


def pydoc_text(n_chars: int | None = None) -> str:
    """English prose from the standard library's help topics, whitespace-normalized."""
    import re

    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    text = re.sub(r"[ \t]+", " ", text)
    return text if n_chars is None else text[:n_chars]


@dataclass(frozen=True)
class Needle:
    needle: str
    question: str
    answer: str

    def __post_init__(self):
        for f in ("needle", "question", "answer"):
            if not isinstance(getattr(self, f), str) or not getattr(self, f).strip():
                raise InputError(f"needle field {f!r} must be a non-empty string")
        if self.answer.lower() not in self.needle.lower():
            raise InputError(f"answer {self.answer!r} is not found in its needle; the answer must be a substring of the needle sentence")


def load_needles(path: str | Path | None = None) -> list[Needle]:
    """Needles from a JSONL file (one ``{"needle", "question", "answer"}`` object per line); errors name the line."""
    path = Path(path).expanduser() if path is not None else DATA_DIR / "needles.jsonl"
    text = read_text_file(path, "--needles")
    needles = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise InputError(f"{str(path)!r} line {no} is not valid JSON ({e.msg}); each line needs one object with needle, question and answer") from None
        if not isinstance(row, dict) or not {"needle", "question", "answer"} <= set(row):
            raise InputError(f"{str(path)!r} line {no} lacks needle, question or answer; each line needs all three fields")
        try:
            needles.append(Needle(row["needle"], row["question"], row["answer"]))
        except InputError as e:
            raise InputError(f"{str(path)!r} line {no}: {e}") from None
    if not needles:
        raise InputError(f"{str(path)!r} holds no needles; add JSON lines with needle, question and answer")
    return needles


@dataclass(frozen=True)
class NiahConfig:
    """The NIAH grid: context lengths (tokens) × needle depths (percent), and how decoding stops.

    ``stop``: ``"line"`` (default) stops at EOS or at the first line break *after* some answer text, so an
    answer that opens with a line break is not cut to nothing; ``"first-newline"`` stops at any line break
    (the earlier rule); ``"eos"`` stops only at EOS. Decoding always stops after ``max_new_tokens``."""

    lengths: tuple[int, ...] = (1000, 2000, 3000)
    depths: tuple[float, ...] = (0, 50, 100)
    max_new_tokens: int = 50
    stop: str = "line"

    def __post_init__(self):
        object.__setattr__(self, "lengths", tuple(int(n) for n in self.lengths))
        object.__setattr__(self, "depths", tuple(float(d) for d in self.depths))
        if not self.lengths or not self.depths:
            raise InputError("give at least one context length and one depth")
        for d in self.depths:
            if not 0 <= d <= 100:
                raise InputError(f"depth {d:g} is outside [0, 100]; give depths as percentages")
        for n in self.lengths:
            if n < 64:
                raise InputError(f"context length {n} is too short; use at least 64 tokens")
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.stop not in STOP_RULES:
            raise InputError(f"unknown stop rule {self.stop!r}; use one of {', '.join(STOP_RULES)}")


__all__ = ["read_text_file", "pydoc_text", "Needle", "load_needles", "NiahConfig", "STOP_RULES", "DATA_DIR"]
