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
from interp.jobs.domain import SEED, Checked, choice, config, num
from interp.models.spec import ModelSpec
from interp.tasks.sources import NiahConfig, load_needles, read_text_file


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


@config
class AtlasConfig(Checked):
    seed: int = num(0, **SEED)
    seq_len: int = num(40, lo=2)  # length of the random sequence that is repeated for the detectors
    batch: int = num(4, lo=1, hi=256, why="prompts per detector batch")
    text_tokens: int = num(256, lo=2, model="context")  # shipped prose for entropy, sink mass and prose previous-token
    view_heads: int = num(3, lo=1, model="heads")  # top heads per detector shown in the pattern viewer
    view_tokens: int = num(48, lo=2, model="context")
    niah_lengths: tuple[int, ...] = (600,)  # built-in NIAH run for the retrieval score; () skips it
    niah_depths: tuple[float, ...] = (25, 75)
    niah_needles: int = num(2, lo=1, hi=100, why="needles in one NIAH run")

    def __post_init__(self):
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


@config
class ProbeConfig(Checked):
    """Inputs of ``interp sinks`` and ``interp entropy``: pydoc chunks, or the first tokens of a text file."""

    prompts: int = num(8, lo=1, hi=4096, why="one forward pass each; the pydoc text holds under 2000 64-token chunks")
    tokens: int = num(64, lo=2, model="context")
    text: str | None = None  # absolute path of a UTF-8 text file
    text_sha: str | None = None

    def __post_init__(self):
        if self.text is not None:
            read_text_file(self.text, "--text")
            object.__setattr__(self, "text", _abs(self.text))
            object.__setattr__(self, "text_sha", file_digest(self.text))

    def check(self, spec: ModelSpec) -> None:
        if self.text is None:
            self._check_pydoc_tokens(spec)

    def _check_pydoc_tokens(self, spec: ModelSpec) -> None:
        """The pydoc chunks must exist: a request that could fit is counted with the tokenizer alone (~0.2 s)."""
        from interp.jobs.prompts import count_tokens
        from interp.tasks.sources import pydoc_text

        need = self.prompts * (self.tokens - 1)  # the BOS of each chunk is not drawn from the text
        if need <= 20_000:  # far below the ~110 k tokens our tokenizers make of its ~465 k characters
            return
        text = pydoc_text()
        if need > len(text):  # a token covers at least one character: no need to count
            have = f"{len(text)} characters, so fewer tokens"
        else:
            n = count_tokens(spec, text)
            have = None if n is None or need <= n else f"{n} tokens"
        if have is not None:
            raise InputError(f"--prompts {self.prompts} × --tokens {self.tokens} needs {need} tokens of Python's pydoc text, "
                             f"which holds {have}; ask for fewer, or pass --text")


@config
class SinksConfig(ProbeConfig):
    eps: float = num(0.3, lo=0, hi=1, lo_open=True, hi_open=True)
    tau: float = num(0.1, lo=0, hi=1, lo_open=True, hi_open=True)
    ratio: float = num(20.0, lo=1, lo_open=True, hi=10_000, why="a multiple of the layer median norm; no activation is that large")


@config
class EntropyConfig(ProbeConfig):
    collapse: float = num(0.1, lo=0, hi=1)
    overload: float = num(0.9, lo=0, hi=1)

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.collapse < self.overload <= 1:
            raise InputError(f"need 0 <= --collapse < --overload <= 1, got {self.collapse} and {self.overload}")


@config
class RetrievalConfig(Checked):
    niah: NiahConfig = field(default_factory=NiahConfig)
    needles: str | None = None  # JSONL path; None = the shipped data/needles.jsonl
    n_needles: int = num(3, lo=1, hi=1000, why="one NIAH grid per needle")
    haystack: str | None = None  # UTF-8 text path; None = Python's pydoc topics
    mask_top: tuple[int, ...] = num((), lo=1, model="heads")
    mask_random: tuple[int, ...] = num((), lo=1, model="heads")
    draws: int = num(3, lo=1, hi=100, why="each draw reruns the NIAH grid")
    seed: int = num(0, **SEED)
    needles_sha: str | None = None
    haystack_sha: str | None = None

    def __post_init__(self):
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


@config
class CaptureConfig(Checked):
    prompts: tuple[str, ...] = ()
    sites: tuple[str, ...] = ("pattern",)
    layers: tuple[int, ...] = num((), model="layer", option="--layer")
    heads: tuple[int, ...] = num((), model="head", option="--head")

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
        from interp.jobs.prompts import check_prompt_lengths

        check_prompt_lengths(spec, self.prompts, "--prompt")


@config
class VisionConfig(Checked):
    """``interp vision``: VHD / T-VHD, VHR and VAR (with random-head controls) on the shapes task.

    ``image`` (+ ``question``) picks the example shown with the attention overlay; by default it is the first
    trap item. ``vhr_layers`` / ``var_layers`` empty means the method's default (VHR: the first half of the
    layers; VAR: every layer but the last)."""

    seed: int = num(1000, **SEED)
    n_ordinary: int = num(10, lo=1, hi=1000, why="each scene is generated and answered")  # up to 4 questions per scene
    n_trap: int = num(6, lo=1, hi=1000, why="each scene is generated and answered")  # trap scenes (3 questions each)
    n_captions: int = num(4, lo=1, hi=1000, why="each caption is decoded token by token")
    max_caption_tokens: int = num(20, lo=1, hi=512, why="a caption of a shapes scene")
    top_k: int = num(10, lo=1, model="heads")  # T-VHD: mean of the top-k head VHDs of a step
    alpha: float = num(2.0, lo=0, hi=100, why="a factor on head outputs; 1 is the identity")
    vhr_layers: tuple[int, ...] = num((), model="layer")
    p: float = num(0.6, lo=0, hi=1)
    rho: float = num(0.5, lo=0, hi=1)
    summ: float = num(0.2, lo=0, hi=1)
    tau: float = num(20.0, lo=0, lo_open=True, hi=1e6, why="a threshold on an RMS-normalized activation")
    var_layers: tuple[int, ...] = num((), model="layer")
    image: str | None = None
    question: str = "Describe the image."
    resize: bool = True
    image_sha: str | None = None

    def __post_init__(self):
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
        if self.image is not None:
            size = (spec.config.get("vision_config") or {}).get("image_size")
            if size is not None:
                from interp.images import check_image_size

                check_image_size(self.image, int(size), resize=self.resize)


@config
class PlotConfig(Checked):
    """``interp plot``: options besides the results file."""

    top: int = num(10, lo=1, hi=1000, why="heads listed per facet in a top-heads table")


@config
class SweepOptions(Checked):
    """``interp sweep``: how it runs (not what: that is the spec). Not part of the sweep's key."""

    backend: str = choice("local", ("local", "ray"))
    workers: int = num(2, lo=1, hi=256, why="Ray actors per model, each holding a loaded model")
    address: str | None = None

    def __post_init__(self):
        if self.address and self.backend != "ray":
            raise InputError("--address needs --backend ray")


def resolved(model_name: str, model_source: str, config: Any) -> dict:
    """The dict that keys a run: the model's identity plus every field of the job's config."""
    return {"model": model_name, "model_source": model_source, **asdict(config)}


__all__ = ["PlotConfig", "SweepOptions", "AtlasConfig", "SinksConfig", "EntropyConfig", "RetrievalConfig", "CaptureConfig", "VisionConfig", "resolved",
           "free_memory_bytes", "file_digest"]
