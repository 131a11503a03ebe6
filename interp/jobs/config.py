"""The resolved configuration of every job, and the checks that need only the config and the model's config.

Light on purpose (no torch, no pandas): the CLI builds these, checks them against the ``ModelSpec`` and claims the
output folder before anything slow is imported or loaded. The same values key the manifest and the resumable
parts (``interp.jobs.outdir``), so they hold everything that changes a result and nothing that does not (the
device, the thread count, progress bars).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from interp.errors import InputError
from interp.models.spec import ModelSpec
from interp.tasks.sources import NiahConfig, load_needles, read_text_file


def _at_least(**values: int) -> None:
    for name, (v, lo) in values.items():
        if v < lo:
            raise InputError(f"--{name.replace('_', '-')} must be at least {lo}, got {v}")


def _unit_interval(name: str, v: float) -> None:
    if not 0.0 < v < 1.0:
        raise InputError(f"--{name} must lie strictly between 0 and 1, got {v}")


def file_digest(path: str | Path | None) -> str | None:
    """Content hash of an input file, so that editing the file (not just renaming it) changes the config."""
    if path is None:
        return None
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()[:16]


def _abs(path: str | Path | None) -> str | None:
    return None if path is None else os.path.abspath(os.path.expanduser(str(path)))


def free_memory_bytes() -> int | None:
    """``MemAvailable`` from /proc/meminfo (None where that does not exist)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


@dataclass(frozen=True)
class AtlasConfig:
    seed: int = 0
    seq_len: int = 40  # length of the random sequence that is repeated for the detectors
    batch: int = 4
    text_tokens: int = 256  # tokens of shipped prose for entropy, sink mass and the prose previous-token score
    view_heads: int = 3  # top heads per detector shown in the pattern viewer
    view_tokens: int = 48
    niah_lengths: tuple[int, ...] = (600,)  # built-in NIAH run for the retrieval score; () skips it
    niah_depths: tuple[float, ...] = (25, 75)
    niah_needles: int = 2

    def __post_init__(self):
        _at_least(seq_len=(self.seq_len, 2), text_tokens=(self.text_tokens, 2), batch=(self.batch, 1),
                  view_tokens=(self.view_tokens, 2))
        if self.niah_lengths:
            NiahConfig(self.niah_lengths, self.niah_depths)

    def check(self, spec: ModelSpec) -> None:
        spec.require_fits(2 * self.seq_len + 1, f"--seq-len {self.seq_len} (BOS + the sequence twice)")
        spec.require_fits(self.text_tokens, f"--text-tokens {self.text_tokens}")
        if spec.kind == "causal" and self.niah_lengths:
            spec.require_fits(max(self.niah_lengths) + 32, "the atlas's NIAH run")
        need = self.pattern_bytes(spec)
        free = free_memory_bytes()
        if need and free is not None and need > 0.8 * free:
            raise InputError(f"--seq-len {self.seq_len} needs about {_gib(need)} for the detectors' attention patterns, "
                             f"but only {_gib(free)} is free; use a smaller --seq-len")

    def pattern_bytes(self, spec: ModelSpec) -> int | None:
        """Detectors keep every layer's ``[batch head query key]`` fp32 pattern, and the eager forward needs a
        few more per layer in flight."""
        if spec.n_layers is None or spec.n_heads is None:
            return None
        n = 2 * self.seq_len + 1
        return 4 * self.batch * spec.n_heads * n * n * (spec.n_layers + 3)


@dataclass(frozen=True)
class ProbeConfig:
    """Inputs of ``interp sinks`` and ``interp entropy``: pydoc chunks, or the first tokens of a text file."""

    prompts: int = 8
    tokens: int = 64
    text: str | None = None  # absolute path of a UTF-8 text file
    text_sha: str | None = None

    def __post_init__(self):
        _at_least(prompts=(self.prompts, 1), tokens=(self.tokens, 2))
        if self.text is not None:
            read_text_file(self.text, "--text")
            object.__setattr__(self, "text", _abs(self.text))
            object.__setattr__(self, "text_sha", file_digest(self.text))

    def check(self, spec: ModelSpec) -> None:
        spec.require_fits(self.tokens, f"--tokens {self.tokens}")


@dataclass(frozen=True)
class SinksConfig(ProbeConfig):
    eps: float = 0.3
    tau: float = 0.1
    ratio: float = 20.0

    def __post_init__(self):
        super().__post_init__()
        _unit_interval("eps", self.eps)
        _unit_interval("tau", self.tau)
        if self.ratio <= 1:
            raise InputError(f"--ratio must be above 1 (a multiple of the layer median), got {self.ratio}")


@dataclass(frozen=True)
class EntropyConfig(ProbeConfig):
    collapse: float = 0.1
    overload: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.collapse < self.overload <= 1:
            raise InputError(f"need 0 <= --collapse < --overload <= 1, got {self.collapse} and {self.overload}")


@dataclass(frozen=True)
class RetrievalConfig:
    niah: NiahConfig = field(default_factory=NiahConfig)
    needles: str | None = None  # JSONL path; None = the shipped data/needles.jsonl
    n_needles: int = 3
    haystack: str | None = None  # UTF-8 text path; None = Python's pydoc topics
    mask_top: tuple[int, ...] = ()
    mask_random: tuple[int, ...] = ()
    draws: int = 3
    seed: int = 0
    needles_sha: str | None = None
    haystack_sha: str | None = None

    def __post_init__(self):
        _at_least(n_needles=(self.n_needles, 1), draws=(self.draws, 1))
        found = load_needles(self.needles)
        if self.n_needles > len(found):
            raise InputError(f"--n-needles {self.n_needles} exceeds the {len(found)} needles in the file; lower it")
        if self.haystack is not None:
            read_text_file(self.haystack, "--haystack")
        for name in ("needles", "haystack"):
            path = getattr(self, name)
            object.__setattr__(self, name, _abs(path))
            object.__setattr__(self, f"{name}_sha", file_digest(path))
        object.__setattr__(self, "mask_top", tuple(int(k) for k in self.mask_top))
        object.__setattr__(self, "mask_random", tuple(int(k) for k in self.mask_random))

    def check(self, spec: ModelSpec) -> None:
        spec.require_causal("retrieval")
        spec.require_fits(max(self.niah.lengths) + self.niah.max_new_tokens, f"--lengths {max(self.niah.lengths)} plus the answer")
        total = (spec.n_layers or 0) * (spec.n_heads or 0)
        for opt, ks in (("--mask-top", self.mask_top), ("--mask-random", self.mask_random)):
            for k in ks:
                if total and not 1 <= k <= total:
                    raise InputError(f"{opt} {k} is out of range: {spec.name!r} has {total} heads; use 1..{total}")


@dataclass(frozen=True)
class CaptureConfig:
    prompts: tuple[str, ...]
    sites: tuple[str, ...] = ("pattern",)
    layers: tuple[int, ...] = ()
    heads: tuple[int, ...] = ()

    def __post_init__(self):
        from interp.types import site

        if not self.prompts:
            raise InputError("give at least one --prompt")
        for i, p in enumerate(self.prompts):
            if not isinstance(p, str) or not p.strip():
                raise InputError(f"--prompt {i} is empty; pass non-empty text")
        if not self.sites:
            raise InputError("give at least one --site")
        for s in self.sites:
            site(s)

    def check(self, spec: ModelSpec) -> None:
        for what, values, n in (("layer", self.layers, spec.n_layers), ("head", self.heads, spec.n_heads)):
            bad = [v for v in values if n is not None and not 0 <= v < n]
            if bad:
                raise InputError(f"--{what} {bad[0]} out of range: {spec.name!r} has {n} {what}s (0-{n - 1})")


@dataclass(frozen=True)
class VisionConfig:
    """``interp vision``: VHD / T-VHD, VHR and VAR (with random-head controls) on the shapes task.

    ``image`` (+ ``question``) picks the example shown with the attention overlay; by default it is the first
    trap item. ``vhr_layers`` / ``var_layers`` empty means the method's default (VHR: the first half of the
    layers; VAR: every layer but the last)."""

    seed: int = 1000
    n_ordinary: int = 10  # held-out scenes with ordinary questions (up to 4 per scene)
    n_trap: int = 6  # trap scenes (3 questions each)
    n_captions: int = 4
    max_caption_tokens: int = 20
    top_k: int = 10  # T-VHD: mean of the top-k head VHDs of a step
    alpha: float = 2.0
    vhr_layers: tuple[int, ...] = ()
    p: float = 0.6
    rho: float = 0.5
    summ: float = 0.2
    tau: float = 20.0
    var_layers: tuple[int, ...] = ()
    image: str | None = None
    question: str = "Describe the image."
    resize: bool = True
    image_sha: str | None = None

    def __post_init__(self):
        _at_least(n_ordinary=(self.n_ordinary, 1), n_trap=(self.n_trap, 1), n_captions=(self.n_captions, 0),
                  max_caption_tokens=(self.max_caption_tokens, 1), top_k=(self.top_k, 1))
        if self.alpha < 0:
            raise InputError(f"--alpha must be >= 0 (1 is the identity), got {self.alpha}")
        if not 0 <= self.p <= 1:
            raise InputError(f"--p must lie in [0, 1] (the share of sink attention VAR keeps; 1 is the identity), got {self.p}")
        for name in ("rho", "summ"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"--{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.tau <= 0:
            raise InputError(f"--tau must be positive, got {self.tau}")
        if not self.question.strip():
            raise InputError("--question is empty; pass the question asked about --image")
        object.__setattr__(self, "vhr_layers", tuple(int(x) for x in self.vhr_layers))
        object.__setattr__(self, "var_layers", tuple(int(x) for x in self.var_layers))
        if self.image is not None:
            from interp.images import read_image_file

            read_image_file(self.image)  # a corrupt or missing file fails here, before the model loads
            object.__setattr__(self, "image", _abs(self.image))
            object.__setattr__(self, "image_sha", file_digest(self.image))

    def check(self, spec: ModelSpec) -> None:
        if spec.kind != "vision-language":
            raise InputError(f"`interp vision` needs a LLaVA-style vision-language model, but {spec.name!r} is a "
                             f"{spec.kind} model; pass --model tinyvlm (or a LLaVA checkpoint)")
        n_layers = spec.n_layers
        for opt, layers in (("--vhr-layers", self.vhr_layers), ("--var-layers", self.var_layers)):
            bad = [l for l in layers if n_layers is not None and not 0 <= l < n_layers]
            if bad:
                raise InputError(f"{opt} {bad[0]} out of range: {spec.name!r} has {n_layers} layers (0-{n_layers - 1})")
        if self.image is not None:
            size = (spec.config.get("vision_config") or {}).get("image_size")
            if size is not None:
                from interp.images import check_image_size

                check_image_size(self.image, int(size), resize=self.resize)


def resolved(model_name: str, model_source: str, config: Any) -> dict:
    """The dict that keys a run: the model's identity plus every field of the job's config."""
    return {"model": model_name, "model_source": model_source, **asdict(config)}


__all__ = ["AtlasConfig", "SinksConfig", "EntropyConfig", "RetrievalConfig", "CaptureConfig", "VisionConfig", "resolved",
           "free_memory_bytes", "file_digest"]
