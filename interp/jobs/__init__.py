"""Whole jobs: a model and a config in, a result folder out (tidy parquet, a self-contained ``report.html``,
``run.json``, and a ``manifest.json`` that binds the folder to one config). The CLI verbs and sweep units both
call these, so each job is spelled once. Configs and output-folder checks (:mod:`.config`, :mod:`.outdir`) are
light and run before any model loads.
"""
from __future__ import annotations

from interp._lazy import lazy_getattr

_LAZY = {"run_atlas": ".atlas", "run_sinks": ".sinks", "run_entropy": ".sinks", "run_retrieval": ".retrieval",
         "run_capture": ".capture", "run_vision": ".vision", "AtlasConfig": ".config", "SinksConfig": ".config",
         "EntropyConfig": ".config", "RetrievalConfig": ".config", "CaptureConfig": ".config", "VisionConfig": ".config",
         "claim": ".outdir"}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
