"""Command line: ``interp atlas | sinks | entropy``. Any ``InterpError`` becomes one line on stderr and exit code 2."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from interp.errors import InterpError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Mechanistic interpretability of attention heads.")


@app.callback()
def _group() -> None:
    """Mechanistic interpretability of attention heads."""


@app.command()
def atlas(model: str = typer.Option("smollm2-135m", help="bundled name, local directory or cached HF id"),
          out: Path = typer.Option(Path("runs/atlas"), help="output directory"),
          seed: int = typer.Option(0), seq_len: int = typer.Option(40, help="random sequence length for detectors"),
          text_tokens: int = typer.Option(256, help="prose tokens for entropy and sink mass"),
          device: Optional[str] = typer.Option(None), quiet: bool = typer.Option(False, help="no progress bar")):
    """Per-head atlas: detectors, entropy, sink mass → heads.parquet, report.html, run.json."""
    from interp.atlas import AtlasConfig, check_out_dir, run_atlas
    from interp.models import load_model

    check_out_dir(out)  # fail before the slow model load
    if seq_len < 2 or text_tokens < 2:
        raise InterpError("--seq-len and --text-tokens must be at least 2")
    m = load_model(model, device=device)
    paths = run_atlas(m, out, AtlasConfig(seed=seed, seq_len=seq_len, text_tokens=text_tokens), progress=not quiet)
    for p in paths.values():
        typer.echo(str(p))


@app.command()
def sinks(model: str = typer.Option("smollm2-135m", help="bundled name, local directory or cached HF id"),
          out: Path = typer.Option(Path("runs/sinks"), help="output directory"),
          prompts: int = typer.Option(8, help="number of pydoc-text prompts"),
          tokens: int = typer.Option(64, help="tokens per prompt (BOS included)"),
          text: Optional[Path] = typer.Option(None, help="analyze this UTF-8 text file (first --tokens tokens) instead"),
          eps: float = typer.Option(0.3, help="sink threshold ε on α (0 < ε < 1)"),
          tau: float = typer.Option(0.1, help="hidden-sink threshold τ on α (0 < τ < 1)"),
          ratio: float = typer.Option(20.0, help="massive activation: norm above this × the layer median"),
          device: Optional[str] = typer.Option(None)):
    """Attention sinks: α_k, Sink_k rates, hidden sinks, massive activations → sinks.parquet, report.html."""
    from interp.analyze.sinks import check_threshold
    from interp.atlas import check_out_dir
    from interp.models import load_model
    from interp.sink_report import run_sinks

    check_out_dir(out)
    check_threshold("eps", eps)
    check_threshold("tau", tau)
    if prompts < 1 or tokens < 2:
        raise InterpError("--prompts must be at least 1 and --tokens at least 2")
    m = load_model(model, device=device)
    for p in run_sinks(m, out, n_prompts=prompts, n_tokens=tokens, text_file=text, eps=eps, tau=tau, ratio=ratio).values():
        typer.echo(str(p))


@app.command()
def entropy(model: str = typer.Option("smollm2-135m", help="bundled name, local directory or cached HF id"),
            out: Path = typer.Option(Path("runs/entropy"), help="output directory"),
            prompts: int = typer.Option(8, help="number of pydoc-text prompts"),
            tokens: int = typer.Option(64, help="tokens per prompt (BOS included)"),
            text: Optional[Path] = typer.Option(None, help="analyze this UTF-8 text file (first --tokens tokens) instead"),
            collapse: float = typer.Option(0.1, help="flag heads with normalized entropy below this"),
            overload: float = typer.Option(0.9, help="flag heads with normalized entropy above this"),
            device: Optional[str] = typer.Option(None)):
    """Per-head attention entropy, collapse and overload flags → entropy.parquet, report.html."""
    from interp.atlas import check_out_dir
    from interp.models import load_model
    from interp.sink_report import run_entropy

    check_out_dir(out)
    if not 0 <= collapse < overload <= 1:
        raise InterpError(f"need 0 <= --collapse < --overload <= 1, got {collapse} and {overload}")
    if prompts < 1 or tokens < 2:
        raise InterpError("--prompts must be at least 1 and --tokens at least 2")
    m = load_model(model, device=device)
    for p in run_entropy(m, out, n_prompts=prompts, n_tokens=tokens, text_file=text, collapse=collapse, overload=overload).values():
        typer.echo(str(p))


@app.command()
def retrieval(model: str = typer.Option("smollm2-135m", help="bundled name, local directory or cached HF id"),
              out: Path = typer.Option(Path("runs/retrieval"), help="output directory (resumes if interrupted)"),
              lengths: List[int] = typer.Option([1000, 2000, 3000], help="context lengths in tokens"),
              depths: List[float] = typer.Option([0, 50, 100], help="needle depths in percent"),
              needles: Optional[Path] = typer.Option(None, help="JSONL of needle/question/answer (default: data/needles.jsonl)"),
              n_needles: int = typer.Option(3, help="use the first N needles"),
              mask_top: List[int] = typer.Option([], help="mask the top-K retrieval heads (repeatable)"),
              mask_random: List[int] = typer.Option([], help="mask K random non-retrieval heads (repeatable)"),
              draws: int = typer.Option(3, help="random draws per --mask-random K"),
              seed: int = typer.Option(0), device: Optional[str] = typer.Option(None),
              quiet: bool = typer.Option(False, help="no progress bar")):
    """Retrieval heads (Wu et al.): NIAH detection + masking test → scores.parquet, niah.parquet, report.html."""
    from interp.analyze.retrieval import NiahConfig
    from interp.atlas import check_out_dir
    from interp.models import load_model
    from interp.retrieval_job import run_retrieval
    from interp.tasks.niah import load_needles

    check_out_dir(out)
    config = NiahConfig(lengths=tuple(lengths), depths=tuple(depths))
    load_needles(needles)  # fail on a bad needle file before the model loads
    if n_needles < 1 or draws < 1:
        raise InterpError("--n-needles and --draws must be at least 1")
    m = load_model(model, device=device)
    paths = run_retrieval(m, out, config, needles_path=needles, n_needles=n_needles, mask_top=tuple(mask_top),
                          mask_random=tuple(mask_random), draws=draws, seed=seed, progress=not quiet)
    for p in paths.values():
        typer.echo(str(p))


@app.command()
def capture(prompt: List[str] = typer.Option(..., help="prompt text (repeat for a batch)"),
            site: List[str] = typer.Option(["pattern"], help="site name (repeatable), e.g. pattern, z, resid_post"),
            layer: List[int] = typer.Option([], help="layer (repeatable; default all)"),
            head: List[int] = typer.Option([], help="query head (repeatable; default all)"),
            model: str = typer.Option("smollm2-135m", help="bundled name, local directory or cached HF id"),
            out: Path = typer.Option(Path("runs/capture"), help="output directory"),
            device: Optional[str] = typer.Option(None)):
    """Capture activations → capture.safetensors (keys "site/layer") and capture.json (tokens, spec)."""
    from interp.atlas import check_out_dir
    from interp.hooks import CaptureSpec
    from interp.hooks import capture as run_capture
    from interp.hooks.save import save_capture
    from interp.inputs import check_prompts
    from interp.models import load_model

    check_out_dir(out)
    check_prompts(prompt)
    spec = CaptureSpec(sites=tuple(site), layers=tuple(layer) or None, heads=tuple(head) or None)
    m = load_model(model, device=device)
    for p in save_capture(run_capture(m, list(prompt), spec), m.tokenizer, out).values():
        typer.echo(str(p))


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=False)
    except InterpError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code)
    except Exception as e:
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # click usage errors
            typer.echo(f"error: {e.format_message()}", err=True)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
