"""Command line: ``interp atlas | sinks | entropy | retrieval | capture | patch | steer | subspace | weights | vision | circuits | reuse | repair | sweep | plot``.

Every verb follows one pattern: build the job's config (every option checked against its declared domain,
``interp.jobs.domain``), check threads and device (without importing torch on a CPU build), resolve the model
name to its config and check the job against it (context length, prompt tokens, model kind, head counts), claim
and lock the output folder (created, written, bound to the config by its manifest), and only then import torch
and load the model. Exit codes: 0 done, 2 bad input (one line on stderr), 130 interrupted (one line with the
command that resumes), 1 anything unexpected (one line;
``INTERP_DEBUG=1`` shows the traceback). List options take several values after one flag (``--lengths 1000
2000``) or the flag repeated.
"""
from __future__ import annotations

import os
import signal
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from interp.errors import InputError, InterpError

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Mechanistic interpretability of attention heads.")

MODEL_HELP = "bundled name (smollm2-135m, minilm-l6), local directory, or cached HF id"
THREADS_HELP = "CPU threads: a number, or 'auto' (the cores not busy with other processes)"
INTERRUPTED = "interrupted; resume with:"  # followed by the exact command (see resume_command)


def _version(value: bool) -> None:
    if value:
        from interp import __version__

        typer.echo(f"interp {__version__}")
        raise typer.Exit()


@app.callback()
def _group(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
           self_contained: bool = typer.Option(False, "--self-contained", help="embed plotly.js in every HTML report "
                                               "(a single file that travels alone) instead of one plotly.min.js per run folder")) -> None:
    """Mechanistic interpretability of attention heads."""
    import sys

    if self_contained or "interp.plot.export" in sys.modules:  # set, or reset after an earlier main() in this process
        from interp.plot.export import set_self_contained

        set_self_contained(self_contained)


def _prepare(verb: str, model: str, out: Path | None, config, device: Optional[str] = None, threads: str = "auto"):
    """Everything that can fail before the model loads, cheapest first; returns the model's spec."""
    from interp.jobs.config import resolved
    from interp.jobs.outdir import check_writable, claim
    from interp.models.spec import resolve_model
    from interp.runtime import precheck_device, resolve_threads

    resolve_threads(threads)
    precheck_device(device)
    if out is not None:
        check_writable(out)
    spec = resolve_model(model)
    config.check(spec)
    if out is not None:
        claim(out, verb, resolved(spec.name, spec.source, config))
    return spec


DTYPE_HELP = "model dtype: float32, bfloat16, float16 (default: the checkpoint's own)"
DEVICE_MAP_HELP = "'auto' or a JSON dict of module name -> device, passed to transformers (needs CUDA)"


def _load(model: str, device: Optional[str], threads: str, dtype: Optional[str] = None, device_map: Optional[str] = None):
    from interp.models.loader import _dtype, check_device_map
    from interp.runtime import check_device, set_threads

    _dtype(dtype)  # bad values end in one line before the model loads
    dm = check_device_map(_parse_device_map(device_map))
    set_threads(threads)
    dev = None if dm is not None else check_device(device)
    from interp.models import load_model

    return load_model(model, device=dev, dtype=dtype, device_map=dm)


def _parse_device_map(text: Optional[str]):
    if text is None or text == "auto":
        return text
    import json

    try:
        value = json.loads(text)
    except ValueError:
        raise InputError(f"--device-map must be 'auto' or a JSON object such as '{{\"\": 0}}', got {text!r}") from None
    return value


def _echo_paths(paths: dict) -> None:
    for p in paths.values():
        typer.echo(str(p))


@app.command()
def atlas(model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
          out: Path = typer.Option(Path("runs/atlas"), help="output directory"),
          seed: int = typer.Option(0), seq_len: int = typer.Option(40, help="random sequence length for detectors"),
          text_tokens: int = typer.Option(256, help="prose tokens for entropy and sink mass"),
          device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda if available)"),
          dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP), device_map: Optional[str] = typer.Option(None, help=DEVICE_MAP_HELP),
          threads: str = typer.Option("auto", help=THREADS_HELP), quiet: bool = typer.Option(False, help="no progress bar")):
    """Per-head atlas: detectors, entropy, sink mass, retrieval score → heads.parquet, report.html, run.json."""
    from interp.jobs.config import AtlasConfig

    config = AtlasConfig(seed=seed, seq_len=seq_len, text_tokens=text_tokens)
    _prepare("atlas", model, out, config, device, threads)
    m = _load(model, device, threads, dtype, device_map)
    from interp.jobs.atlas import run_atlas

    _echo_paths(run_atlas(m, out, config, progress=not quiet))


@app.command()
def sinks(model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
          out: Path = typer.Option(Path("runs/sinks"), help="output directory"),
          prompts: int = typer.Option(8, help="number of pydoc-text prompts"),
          tokens: int = typer.Option(64, help="tokens per prompt (BOS included)"),
          text: Optional[Path] = typer.Option(None, help="analyze this UTF-8 text file (first --tokens tokens) instead"),
          eps: float = typer.Option(0.3, help="sink threshold ε on α (0 < ε < 1)"),
          tau: float = typer.Option(0.1, help="hidden-sink threshold τ on α (0 < τ < 1)"),
          ratio: float = typer.Option(20.0, help="massive activation: norm above this × the layer median"),
          device: Optional[str] = typer.Option(None, help="cpu or cuda"),
          dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP), device_map: Optional[str] = typer.Option(None, help=DEVICE_MAP_HELP), threads: str = typer.Option("auto", help=THREADS_HELP)):
    """Attention sinks: α_k, Sink_k rates, hidden sinks, massive activations → sinks.parquet, report.html."""
    from interp.jobs.config import SinksConfig

    config = SinksConfig(prompts=prompts, tokens=tokens, text=None if text is None else str(text), eps=eps, tau=tau, ratio=ratio)
    _prepare("sinks", model, out, config, device, threads)
    m = _load(model, device, threads, dtype, device_map)
    from interp.jobs.sinks import run_sinks

    _echo_paths(run_sinks(m, out, config))


@app.command()
def entropy(model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
            out: Path = typer.Option(Path("runs/entropy"), help="output directory"),
            prompts: int = typer.Option(8, help="number of pydoc-text prompts"),
            tokens: int = typer.Option(64, help="tokens per prompt (BOS included)"),
            text: Optional[Path] = typer.Option(None, help="analyze this UTF-8 text file (first --tokens tokens) instead"),
            collapse: float = typer.Option(0.1, help="flag heads with normalized entropy below this"),
            overload: float = typer.Option(0.9, help="flag heads with normalized entropy above this"),
            device: Optional[str] = typer.Option(None, help="cpu or cuda"),
          dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP), device_map: Optional[str] = typer.Option(None, help=DEVICE_MAP_HELP), threads: str = typer.Option("auto", help=THREADS_HELP)):
    """Per-head attention entropy, collapse and overload flags → entropy.parquet, report.html."""
    from interp.jobs.config import EntropyConfig

    config = EntropyConfig(prompts=prompts, tokens=tokens, text=None if text is None else str(text), collapse=collapse,
                           overload=overload)
    _prepare("entropy", model, out, config, device, threads)
    m = _load(model, device, threads, dtype, device_map)
    from interp.jobs.sinks import run_entropy

    _echo_paths(run_entropy(m, out, config))


@app.command()
def retrieval(model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
              out: Path = typer.Option(Path("runs/retrieval"), help="output directory (resumes if interrupted)"),
              lengths: List[int] = typer.Option([1000, 2000, 3000], help="context lengths in tokens, e.g. --lengths 1000 2000"),
              depths: List[float] = typer.Option([0, 50, 100], help="needle depths in percent, e.g. --depths 0 50 100"),
              needles: Optional[Path] = typer.Option(None, help="JSONL of needle/question/answer (default: data/needles.jsonl)"),
              n_needles: int = typer.Option(3, help="use the first N needles"),
              haystack: Optional[Path] = typer.Option(None, help="UTF-8 text file for the haystack (default: Python's pydoc topics)"),
              max_new_tokens: int = typer.Option(50, help="most tokens decoded per answer"),
              stop: str = typer.Option("line", help="when decoding stops: line (a line break after answer text), first-newline, eos"),
              mask_top: List[int] = typer.Option([], help="mask the top-K retrieval heads, e.g. --mask-top 5 10"),
              mask_random: List[int] = typer.Option([], help="mask K random non-retrieval heads, e.g. --mask-random 10"),
              draws: int = typer.Option(3, help="random draws per --mask-random K"),
              seed: int = typer.Option(0), device: Optional[str] = typer.Option(None, help="cpu or cuda"),
          dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP), device_map: Optional[str] = typer.Option(None, help=DEVICE_MAP_HELP),
              threads: str = typer.Option("auto", help=THREADS_HELP), quiet: bool = typer.Option(False, help="no progress bar")):
    """Retrieval heads (Wu et al.): NIAH detection + masking test → scores.parquet, niah.parquet, report.html."""
    from interp.jobs.config import RetrievalConfig
    from interp.tasks.sources import NiahConfig

    config = RetrievalConfig(niah=NiahConfig(tuple(lengths), tuple(depths), max_new_tokens, stop),
                             needles=None if needles is None else str(needles), n_needles=n_needles,
                             haystack=None if haystack is None else str(haystack), mask_top=tuple(mask_top),
                             mask_random=tuple(mask_random), draws=draws, seed=seed)
    _prepare("retrieval", model, out, config, device, threads)
    m = _load(model, device, threads, dtype, device_map)
    from interp.jobs.retrieval import run_retrieval

    _echo_paths(run_retrieval(m, out, config, progress=not quiet))


@app.command()
def capture(prompt: List[str] = typer.Option(..., help="prompt text (several after one flag, or repeat the flag)"),
            site: List[str] = typer.Option(["pattern"], help="site names, e.g. --site pattern z resid_post"),
            layer: List[int] = typer.Option([], help="layers (default all)"),
            head: List[int] = typer.Option([], help="query heads (default all)"),
            model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
            out: Path = typer.Option(Path("runs/capture"), help="output directory"),
            device: Optional[str] = typer.Option(None, help="cpu or cuda"),
          dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP), device_map: Optional[str] = typer.Option(None, help=DEVICE_MAP_HELP), threads: str = typer.Option("auto", help=THREADS_HELP)):
    """Capture activations → capture.safetensors (keys "site/layer") and capture.json (tokens, spec)."""
    from interp.jobs.config import CaptureConfig

    config = CaptureConfig(prompts=tuple(prompt), sites=tuple(site), layers=tuple(layer), heads=tuple(head))
    _prepare("capture", model, out, config, device, threads)
    m = _load(model, device, threads, dtype, device_map)
    from interp.jobs.capture import run_capture

    _echo_paths(run_capture(m, out, config))


@app.command()
def sweep(spec: Path = typer.Argument(..., help="the sweep spec (TOML): models, tasks, interventions, analyses, metrics, seeds"),
          out: Path = typer.Option(Path("runs/sweep"), help="output directory (results.parquet, run.json, units/)"),
          backend: str = typer.Option("local", help="local (this process) or ray"),
          address: Optional[str] = typer.Option(None, help="Ray cluster address (host:port or ray://host:port); default: start a local Ray"),
          workers: int = typer.Option(2, help="Ray actors per model (each holds one loaded model)"),
          resume: bool = typer.Option(False, help="continue a sweep in --out: keep finished units, retry failed ones"),
          device: Optional[str] = typer.Option(None, help="cpu or cuda"), threads: str = typer.Option("auto", help=THREADS_HELP),
          quiet: bool = typer.Option(False, help="no progress bar")):
    """Run a grid of interventions and analyses over models, tasks and seeds → results.parquet (tidy), run.json."""
    from interp.jobs.config import SweepOptions
    from interp.runtime import precheck_device, resolve_threads
    from interp.sweep.spec import check_models, check_units, load_spec

    SweepOptions(backend=backend, workers=workers, address=address)
    n_threads = resolve_threads(threads)
    precheck_device(device)
    s = load_spec(spec)
    models = check_models(s)
    check_units(s, models)
    if backend == "ray":
        from interp.sweep.backends import import_ray, probe_address

        import_ray()
        if address:
            probe_address(address)
    from interp.sweep.run import run_sweep

    paths = run_sweep(s, out, model_specs=models, backend=backend, address=address, resume=resume, workers=workers,
                      threads=n_threads, device=device, progress=not quiet)
    _echo_paths({k: v for k, v in paths.items() if isinstance(v, Path)})
    if paths["failed"]:
        print(f"error: {paths['failed']} of {paths['total']} units failed (errors in {paths['run']}); "
              f"rerun with --resume to retry them", file=sys.stderr)
        raise typer.Exit(1)


@app.command()
def plot(results: Path = typer.Argument(..., help="a tidy results .parquet (any interp job's or sweep's)"),
         out: Path = typer.Option(Path("report.html"), help="the HTML report to write"),
         title: Optional[str] = typer.Option(None, help="report title (default: the results file name)"),
         top: int = typer.Option(10, help="heads listed per facet in the top-heads tables")):
    """Report of any tidy result: per metric a layer × head heatmap, a per-condition comparison and a top-heads
    table, with facets for model, task, condition and seed → one self-contained HTML file."""
    from interp.io import read_results
    from interp.jobs.config import PlotConfig

    PlotConfig(top=top)
    target = _report_path(out)
    df = read_results(results, plot=True)
    from interp.plot.results import write_results_report

    typer.echo(str(write_results_report(df, target, title=title or f"Results · {results.name}", source=str(results), top=top)))


def _report_path(out: Path) -> Path:
    """``out`` as a writable file path (its folder is created and probed), checked before any work."""
    from interp.jobs.outdir import check_writable

    out = out.expanduser()
    if out.is_dir():
        raise InputError(f"--out {str(out)!r} is a directory; pass a file name such as {str(out / 'report.html')!r}")
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--out {str(out)!r} is not an .html file name; pass one such as report.html (an existing "
                         f"file of another kind is never overwritten)")
    check_writable(out.parent if str(out.parent) else Path("."))
    return out


@app.command()
def patch(model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
          task: str = typer.Option("ioi", help="task: ioi"),
          method: str = typer.Option("exact", help="exact (activation patching), atp or atp* (attribution patching)"),
          by: str = typer.Option("head", help="head (all positions) or head_pos"),
          prompts: int = typer.Option(20, help="number of task prompts"), seed: int = typer.Option(0),
          corruption: str = typer.Option("abc", help="abc (pABC) or flip (S2↔IO)"),
          direction: str = typer.Option("denoising", help="denoising (clean z into the corrupted run) or noising (corrupted into clean)"),
          out: Path = typer.Option(Path("runs/patch"), help="output directory"),
          device: Optional[str] = typer.Option(None, help="cpu or cuda"),
          dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP), device_map: Optional[str] = typer.Option(None, help=DEVICE_MAP_HELP), threads: str = typer.Option("auto", help=THREADS_HELP),
          quiet: bool = typer.Option(False, help="no progress bar")):
    """Per-head patching effects on a task → effects.parquet, report.html, run.json."""
    from interp.jobs.patch_config import PatchConfig

    config = PatchConfig(task=task, method=method, by=by, prompts=prompts, seed=seed, corruption=corruption, direction=direction)
    _prepare("patch", model, out, config, device, threads)
    m = _load(model, device, threads, dtype, device_map)
    from interp.jobs.patch import run_patch

    _echo_paths(run_patch(m, out, config, progress=not quiet))


@app.command()
def subspace(model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
             task: str = typer.Option("ioi", help="task: ioi (name position ABB vs BAB at END)"),
             site: str = typer.Option("mlp_post", help="mlp_post, resid_pre, resid_mid or resid_post (resid_* need --split-heads)"),
             layer: Optional[int] = typer.Option(None, help="layer of the site (default: two thirds of the depth, as the paper's MLP8 of 12)"),
             pairs: int = typer.Option(200, help="base/source pairs (>= 10; 20% held out)"),
             dim: int = typer.Option(1, help="subspace dimension (1 .. width-1)"),
             epochs: int = typer.Option(30, help="DAS epochs"), batch_size: int = typer.Option(20, help="DAS batch size"),
             lr: float = typer.Option(0.1, help="Adam learning rate (decays linearly to --lr-end)"),
             lr_end: float = typer.Option(0.01, help="final learning rate"),
             boundless: bool = typer.Option(False, help="Boundless DAS (learned mask over a full rotation)"),
             split_heads: List[str] = typer.Option([], help="heads whose W_Q span splits a residual direction, e.g. --split-heads L23H3 L23H0"),
             weight: str = typer.Option("q", help="which weight of --split-heads spans the connected part: q, k or v"),
             seed: int = typer.Option(0), out: Path = typer.Option(Path("runs/subspace"), help="output directory (resumes if interrupted)"),
             device: Optional[str] = typer.Option(None, help="cpu or cuda"), threads: str = typer.Option("auto", help=THREADS_HELP),
             quiet: bool = typer.Option(False, help="no progress output")):
    """DAS subspace at one site + the illusion checks → subspace.parquet, report.html, run.json."""
    from interp.jobs.subspace_config import SubspaceConfig

    config = SubspaceConfig(task=task, site=site, layer=layer, pairs=pairs, dim=dim, epochs=epochs, batch_size=batch_size, lr=lr,
                            lr_end=lr_end, seed=seed, boundless=boundless, split_heads=tuple(split_heads), weight=weight)
    _prepare("subspace", model, out, config)
    m = _load(model, device, threads)
    from interp.jobs.subspace import run_subspace

    _echo_paths(run_subspace(m, out, config, progress=not quiet))


@app.command()
def weights(model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
            kinds: List[str] = typer.Option(["q", "k", "v"], help="composition kinds: q, k, v"),
            top: int = typer.Option(20, help="top pairs listed per kind"),
            n_tokens: int = typer.Option(1000, help="sampled tokens for the QK same-token score"),
            seed: int = typer.Option(0), out: Path = typer.Option(Path("runs/weights"), help="output directory"),
            device: Optional[str] = typer.Option(None, help="cpu or cuda"), threads: str = typer.Option("auto", help=THREADS_HELP)):
    """Head circuits from the weights: composition scores, OV copying, QK scores → weights.parquet, report.html, run.json."""
    from interp.jobs.subspace_config import WeightsConfig

    config = WeightsConfig(kinds=tuple(kinds), top=top, n_tokens=n_tokens, seed=seed)
    _prepare("weights", model, out, config)
    m = _load(model, device, threads)
    from interp.jobs.subspace import run_weights

    _echo_paths(run_weights(m, out, config))


@app.command()
def steer(prompt: str = typer.Option(..., help="prompt to continue"),
          heads: List[str] = typer.Option(..., help="heads to steer, e.g. --heads 9.6 12.3 (or L9H6)"),
          alpha: float = typer.Option(5.0, help="steering strength (multiples of the direction's std)"),
          max_new_tokens: int = typer.Option(20, help="tokens to generate"),
          concept: str = typer.Option("sentiment", help="direction: sentiment (positive − negative, shipped data/mc items)"),
          model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
          device: Optional[str] = typer.Option(None, help="cpu or cuda"),
          dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP), device_map: Optional[str] = typer.Option(None, help=DEVICE_MAP_HELP), threads: str = typer.Option("auto", help=THREADS_HELP)):
    """ITI-style head steering: print the unsteered and steered continuations side by side."""
    from interp.jobs.patch_config import SteerConfig

    config = SteerConfig(prompt=prompt, heads=tuple(heads), alpha=alpha, max_new_tokens=max_new_tokens, concept=concept)
    _prepare("steer", model, None, config, device, threads)
    m = _load(model, device, threads, dtype, device_map)
    from interp.jobs.patch import steer_text

    typer.echo(steer_text(m, config))


@app.command()
def vision(model: str = typer.Option("tinyvlm", help="a LLaVA-style model: tinyvlm, a local directory or a cached HF id"),
           out: Path = typer.Option(Path("runs/vision"), help="output directory"),
           seed: int = typer.Option(1000, help="seed of the held-out shapes sets"),
           n_ordinary: int = typer.Option(10, help="held-out scenes with ordinary questions"),
           n_trap: int = typer.Option(6, help="trap scenes (a prior shape in a rare color; 3 questions each)"),
           n_captions: int = typer.Option(4, help="scenes captioned for the CHAIR-style rates"),
           max_caption_tokens: int = typer.Option(20, help="most tokens per caption"),
           alpha: float = typer.Option(2.0, help="VHR: factor on the selected heads' outputs (1 = identity)"),
           vhr_layers: List[int] = typer.Option([], help="VHR layers (default: the first half)"),
           p: float = typer.Option(0.6, help="VAR: share of sink attention kept (1 = identity)"),
           rho: float = typer.Option(0.5, help="VAR: image-centric if the visual-sink share of image attention <= rho"),
           summ: float = typer.Option(0.2, help="VAR: ... and the image attention >= summ"),
           tau: float = typer.Option(20.0, help="VAR: sink threshold on the RMS-normalized activation in the sink dims"),
           var_layers: List[int] = typer.Option([], help="VAR layers (default: all but the last)"),
           top_k: int = typer.Option(10, help="T-VHD: mean of the top-k head VHDs"),
           image: Optional[Path] = typer.Option(None, help="example image for the attention overlay (default: a trap scene)"),
           question: str = typer.Option("Describe the image.", help="question asked about --image"),
           resize: bool = typer.Option(True, help="resize an --image of another size (with a warning) instead of rejecting it"),
           device: Optional[str] = typer.Option(None, help="cpu or cuda"),
          dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP), device_map: Optional[str] = typer.Option(None, help=DEVICE_MAP_HELP),
           threads: str = typer.Option("auto", help=THREADS_HELP), quiet: bool = typer.Option(False, help="no progress bar")):
    """Vision-aware heads: VHD/T-VHD, VHR and VAR vs random-head controls → vision.parquet, report.html, run.json."""
    from interp.jobs.config import VisionConfig

    config = VisionConfig(seed=seed, n_ordinary=n_ordinary, n_trap=n_trap, n_captions=n_captions,
                          max_caption_tokens=max_caption_tokens, alpha=alpha,
                          vhr_layers=tuple(vhr_layers), p=p, rho=rho, summ=summ, tau=tau, var_layers=tuple(var_layers),
                          top_k=top_k, image=None if image is None else str(image), question=question, resize=resize)
    _prepare("vision", model, out, config, device, threads)
    m = _load(model, device, threads, dtype, device_map)
    from interp.jobs.vision import run_vision

    _echo_paths(run_vision(m, out, config, progress=not quiet))


@app.command()
def circuits(model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
             task: str = typer.Option("ioi", help="task: ioi or colored-objects"),
             prompts: int = typer.Option(100, help="number of task prompts"), seed: int = typer.Option(0),
             stages: int = typer.Option(3, help="path-patching stages backwards from the logits"),
             prune: bool = typer.Option(True, help="AtP* prunes the senders before exact path patching"),
             keep: int = typer.Option(16, help="senders path patched exactly per stage when pruning"),
             top_frac: float = typer.Option(0.02, help="fraction of all heads kept per stage"),
             min_effect: float = typer.Option(0.02, help="smallest |normalized path effect| of a circuit head"),
             attn_threshold: float = typer.Option(0.2, help="attention mass that assigns an attention-based class"),
             copy_threshold: float = typer.Option(0.3, help="|copy score| that assigns a mover class"),
             faithfulness: bool = typer.Option(True, help="measure faithfulness (three mean-ablated runs)"),
             out: Path = typer.Option(Path("runs/circuits"), help="output directory (resumes if interrupted)"),
             device: Optional[str] = typer.Option(None, help="cpu or cuda"),
          dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP), device_map: Optional[str] = typer.Option(None, help=DEVICE_MAP_HELP), threads: str = typer.Option("auto", help=THREADS_HELP),
             quiet: bool = typer.Option(False, help="no progress bar")):
    """Circuit discovery by path patching → circuit.parquet, patching.parquet, report.html, run.json."""
    from interp.jobs.circuits_config import CircuitsConfig

    config = CircuitsConfig(task=task, prompts=prompts, seed=seed, stages=stages, prune=prune, keep=keep, top_frac=top_frac,
                            min_effect=min_effect, attn_threshold=attn_threshold, copy_threshold=copy_threshold,
                            faithfulness=faithfulness)
    _prepare("circuits", model, out, config, device, threads)
    m = _load(model, device, threads, dtype, device_map)
    from interp.jobs.circuits import run_circuits

    _echo_paths(run_circuits(m, out, config, progress=not quiet))


@app.command()
def reuse(dir_a: Path = typer.Argument(..., help="an `interp circuits` folder (e.g. IOI)"),
          dir_b: Path = typer.Argument(..., help="another `interp circuits` folder of the same model"),
          top_frac: float = typer.Option(0.02, help="fraction of all heads taken per stage"),
          out: Path = typer.Option(Path("runs/reuse"), help="output directory")):
    """Overlap of two circuits (top 2% per stage), Jaccard, rank correlation → reuse.parquet, report.html."""
    from interp.jobs.circuits_config import ReuseConfig
    from interp.jobs.outdir import check_writable

    config = ReuseConfig(dir_a=str(dir_a), dir_b=str(dir_b), top_frac=top_frac)
    check_writable(out)
    from interp.jobs.circuits import run_reuse

    _echo_paths(run_reuse(out, config))


@app.command()
def repair(model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
           prompts: int = typer.Option(100, help="Colored Objects prompts"),
           circuit: Optional[Path] = typer.Option(None, help="an `interp circuits --task ioi` folder (default: discover it here)"),
           ioi_prompts: int = typer.Option(60, help="IOI prompts when the circuit is discovered here"),
           draws: int = typer.Option(5, help="random-heads control draws"),
           n_inhibition: int = typer.Option(3, help="inhibition-head analogues taken from the IOI circuit"),
           keep: int = typer.Option(16, help="senders path patched per stage when discovering the IOI circuit"),
           seed: int = typer.Option(0), out: Path = typer.Option(Path("runs/repair"), help="output directory (resumes)"),
           device: Optional[str] = typer.Option(None, help="cpu or cuda"),
          dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP), device_map: Optional[str] = typer.Option(None, help=DEVICE_MAP_HELP), threads: str = typer.Option("auto", help=THREADS_HELP),
           quiet: bool = typer.Option(False, help="no progress bar")):
    """Repair Colored Objects with the IOI circuit's inhibition/negative-mover analogues → repair.parquet, report.html."""
    from interp.jobs.circuits_config import RepairConfig

    config = RepairConfig(prompts=prompts, ioi_prompts=ioi_prompts, circuit=None if circuit is None else str(circuit),
                          draws=draws, n_inhibition=n_inhibition, seed=seed, keep=keep)
    _prepare("repair", model, out, config, device, threads)
    m = _load(model, device, threads, dtype, device_map)
    from interp.jobs.circuits import run_repair

    _echo_paths(run_repair(m, out, config, progress=not quiet))


_GROUP: dict[int, object] = {}


def command_group():
    """The click group of ``app``, built once per set of registered verbs (building it takes ~20 ms a call,
    most of a rejected command's time)."""
    key = len(app.registered_commands)
    if key not in _GROUP:
        _GROUP.clear()
        _GROUP[key] = typer.main.get_command(app)
    return _GROUP[key]


def expand_lists(argv: list[str]) -> list[str]:
    """``--lengths 1000 2000`` → ``--lengths 1000 --lengths 2000`` for every multi-value option of the verb."""
    # typer may vendor its own click, so options are recognized by their attributes, not their class
    group = command_group()
    cmd = getattr(group, "commands", {}).get(argv[0]) if argv else None
    if cmd is None:
        return argv
    options = [p for p in cmd.params if getattr(p, "param_type_name", "") == "option"]
    multi = {o for p in options if p.multiple for o in p.opts}
    known = {o for p in options for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    out, current = [argv[0]], None
    for tok in argv[1:]:
        if tok in known or tok.startswith("--"):
            current = tok if tok in multi else None
            out.append(tok)
        elif current is not None and out[-1] != current:
            out += [current, tok]  # a further value of the same list option
        else:
            out.append(tok)
    return out


def _install(sig, handler):
    """Set a signal handler where that is allowed (the main thread), returning the previous one."""
    try:
        return signal.signal(sig, handler)
    except ValueError:  # not the main thread (e.g. called from a worker); keep the default behaviour
        return None if handler is None else signal.getsignal(sig)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {str(message).splitlines()[0] if str(message) else category.__name__}", file=sys.stderr)


class Interrupted(BaseException):
    """Raised by our SIGINT handler; click turns a KeyboardInterrupt into an Abort after printing an empty line."""


def _on_sigint(signum, frame):
    raise Interrupted()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    previous = (warnings.showwarning, _install(signal.SIGINT, _on_sigint))
    warnings.showwarning = _one_line_warning
    try:
        code = _run(argv or ["--help"])
    finally:
        warnings.showwarning = previous[0]
        if previous[1] is not None:
            _install(signal.SIGINT, previous[1])
    if code:
        sys.exit(code)


def resume_command(argv: list[str]) -> str:
    """The command that continues an interrupted run: the same arguments, plus ``--resume`` for a verb that
    needs it to continue (declared by having that flag), shell-quoted so it can be pasted."""
    import shlex

    group = command_group()
    cmd = getattr(group, "commands", {}).get(argv[0]) if argv else None
    flags = {o for p in getattr(cmd, "params", []) for o in getattr(p, "opts", [])}
    extra = ["--resume"] if "--resume" in flags and "--resume" not in argv else []
    return "interp " + shlex.join([*argv, *extra])


def _run(argv: list[str]) -> int:
    """Run one command; return its exit code, printing one line for any failure."""
    try:
        code = command_group()(args=expand_lists(argv), standalone_mode=False)
    except (Interrupted, KeyboardInterrupt, typer.Abort):
        print(f"{INTERRUPTED} {resume_command(argv)}", file=sys.stderr)
        return 130
    except InterpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except Exception as e:
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # click usage errors: unknown option, bad value
            print(f"error: {e.format_message()}", file=sys.stderr)
            return 2
        if os.environ.get("INTERP_DEBUG") == "1":
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: unexpected {type(e).__name__}: {msg[:300]} (rerun with INTERP_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    main()
