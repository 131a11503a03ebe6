"""interp: mechanistic interpretability of attention heads.

The public API is imported lazily so that ``import interp`` stays cheap and has no side effects.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_model": "interp.models",
    "tiny_model": "interp.models",
    "capture": "interp.hooks",
    "Capture": "interp.hooks",
    "CaptureSpec": "interp.hooks",
    "HeadId": "interp.types",
    "validate_frame": "interp.schema",
    "attention_stats": "interp.attnstats",
    "AttnStats": "interp.attnstats",
    "analyze_sinks": "interp.analyze.sinks",
    "massive_activations": "interp.analyze.sinks",
    "analyze_entropy": "interp.analyze.entropy",
    "SinkCalibrate": "interp.intervene.sinks",
    "InitialTokenScale": "interp.intervene.sinks",
    "SigmaReparam": "interp.train.sigma_reparam",
    "EntropyTracker": "interp.train.tracker",
    "ScaleHeadOutput": "interp.edits",
    "ScaleSegment": "interp.edits",
    "MixUniform": "interp.edits",
    "MixIdentity": "interp.edits",
    "RetrievalMask": "interp.edits",
    "generate_with_stats": "interp.attnstats.decode",
    "vhd": "interp.analyze.vision",
    "VHR": "interp.intervene.vision",
    "VAR": "interp.intervene.vision",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'interp' has no attribute {name!r}")
