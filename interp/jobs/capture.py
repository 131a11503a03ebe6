"""The ``interp capture`` job: run prompts once and save the chosen activations.

Writes ``capture.safetensors`` (keys ``"site/layer"``), ``capture.json`` (tokens, string tokens, shapes) and
``run.json``.
"""
from __future__ import annotations

import time
from pathlib import Path

from interp.hooks import CaptureSpec, capture
from interp.hooks.save import save_capture
from interp.jobs.config import CaptureConfig, resolved
from interp.jobs.outdir import claim
from interp.jobs.runinfo import write_run
from interp.models import model_name, model_source


def run_capture(model, out: str | Path, config: CaptureConfig) -> dict[str, Path]:
    od = claim(out, "capture", resolved(model_name(model), model_source(model), config))
    t0 = time.perf_counter()
    spec = CaptureSpec(sites=config.sites, layers=config.layers or None, heads=config.heads or None)
    cap = capture(model, list(config.prompts), spec)
    paths = save_capture(cap, model.tokenizer, od.path)
    inputs = {"prompts": len(config.prompts), "tokens": int(cap.attention_mask.sum())}
    paths["run"] = write_run(od, model, inputs=inputs, timings={"total_s": time.perf_counter() - t0})
    return paths


__all__ = ["run_capture"]
