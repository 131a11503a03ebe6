"""``run.json``: what a reader needs to reproduce a result folder (versions, seed, the resolved config and its
hash, input sources and token counts, device, threads, timings, the command line)."""
from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from interp.jobs.outdir import OutDir


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("interp", "torch", "transformers", "transformer-lens", "triton"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def write_run(od: OutDir, model, *, inputs: dict[str, Any], timings: dict[str, float], **extra: Any) -> Path:
    """Write ``run.json`` into the job's folder (atomically) and return its path."""
    import torch

    from interp.io import write_json

    record = {"verb": od.verb, "model": od.config.get("model"), "model_source": od.config.get("model_source"),
              "config_key": od.key, "seed": od.config.get("seed"), "config": od.config, "inputs": inputs,
              "versions": versions(), "device": str(next(model.parameters()).device),
              "threads": torch.get_num_threads(), "timings": timings,
              "command": sys.argv if Path(sys.argv[0]).name == "interp" else None, **extra}
    return write_json(od.path / "run.json", record)


__all__ = ["write_run", "versions"]
