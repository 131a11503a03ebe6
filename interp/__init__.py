"""interp: mechanistic interpretability of attention heads.

The public API is imported lazily so that ``import interp`` stays cheap and has no side effects.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_model": "interp.models",
    "from_hf": "interp.models",
    "tiny_model": "interp.models",
    "capture": "interp.hooks",
    "Capture": "interp.hooks",
    "CaptureSpec": "interp.hooks",
    "HeadId": "interp.types",
    "validate_frame": "interp.schema",
    "attention_stats": "interp.attnstats",
    "AttnStats": "interp.attnstats",
    "attention_rows": "interp.attnstats.rows",
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
    "KVGroup": "interp.types",
    "run": "interp.intervene.run",
    "edited": "interp.intervene.run",
    "ZeroAblate": "interp.intervene.values",
    "MeanAblate": "interp.intervene.values",
    "ResampleAblate": "interp.intervene.values",
    "Patch": "interp.intervene.values",
    "AddToHead": "interp.intervene.values",
    "AddVector": "interp.intervene.values",
    "SetPattern": "interp.intervene.values",
    "SubspacePatch": "interp.intervene.values",
    "das": "interp.analyze.subspace",
    "Subspace": "interp.analyze.subspace",
    "subspace_report": "interp.analyze.subspace",
    "qk_circuit": "interp.analyze.weights",
    "ov_circuit": "interp.analyze.weights",
    "composition_scores": "interp.analyze.weights",
    "mean_activations": "interp.intervene.means",
    "probe_heads": "interp.intervene.steering",
    "iti_edits": "interp.intervene.steering",
    "actadd": "interp.intervene.steering",
    "caa": "interp.intervene.steering",
    "activation_patching": "interp.analyze.patching",
    "path_patching": "interp.analyze.patching",
    "attribution_patching": "interp.analyze.attribution",
    "sweep_heads": "interp.sweep.heads",
    "vhd": "interp.analyze.vision",
    "VHR": "interp.intervene.vision",
    "VAR": "interp.intervene.vision",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


_SUBMODULES = {"analyze", "attnstats", "edits", "hooks", "intervene", "jobs", "models", "plot", "runtime", "schema",
               "sweep", "tasks", "train", "types"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"interp.{name}")
    raise AttributeError(f"module 'interp' has no attribute {name!r}")
