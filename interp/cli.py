"""Command line: ``interp atlas``. Any ``InterpError`` becomes one line on stderr and exit code 2."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

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
