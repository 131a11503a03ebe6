"""interp: mechanistic interpretability of attention heads.

The public API is imported lazily so that ``import interp`` stays cheap and has no side effects.

Layering (written down here once, as :data:`LAYERS`; ``tests/test_import_graph.py`` keeps the house to it). Lowest
first; a module may import its own layer and those below, never one above, and no import circle is allowed
(imports inside functions count too):

0. base: ``errors``, ``types``, ``io``, ``store`` (resumable parts), ``schema``, ``stats``, ``inputs``, ``images``,
   ``runtime`` and this package's lazy table.
1. kernels: ``attnstats.kernels``, pure tensor code (fused attention statistics) that knows no model; the
   edit compiler builds its parameter types.
2. ``edits``, ``tasks``: attention edits as values, prompt sets.
3. ``models``: load a ``TransformerBridge``.
4. ``hooks``, ``attnstats``: capture activations, attention statistics and rows.
5. ``intervene``, ``plot``, ``train``: activation edits and their runner (``intervene.heads``: one edit per head,
   many heads per forward), figures, training-time tools.
6. ``analyze``: analyzers returning the tidy schema; interventions built from an analysis (ACT, VHR/VAR) live
   here too, since they read the analysis.
7. ``jobs``: a model and a config in, a result folder out.
8. ``sweep``: a grid of units, each an intervention over heads, a task analysis or a whole job; so a sweep
   imports jobs, and a job never imports the sweep layer.
9. ``cli``.
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
    "SinkCalibrate": "interp.analyze.sink_interventions",
    "InitialTokenScale": "interp.analyze.sink_interventions",
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
    "sweep_heads": "interp.intervene.heads",
    "vhd": "interp.analyze.vision",
    "VHR": "interp.analyze.vision_interventions",
    "VAR": "interp.analyze.vision_interventions",
}

__all__ = sorted(_EXPORTS)

# lowest first: module-name prefixes (the longest matching prefix decides a module's layer); see the docstring
LAYERS: tuple[tuple[str, ...], ...] = (
    ("interp", "interp._lazy", "interp.errors", "interp.types", "interp.io", "interp.store", "interp.schema",
     "interp.stats", "interp.inputs", "interp.images", "interp.runtime"),
    ("interp.attnstats.kernels",),
    ("interp.edits", "interp.tasks"),
    ("interp.models",),
    ("interp.hooks", "interp.attnstats"),
    ("interp.intervene", "interp.plot", "interp.train"),
    ("interp.analyze",),
    ("interp.jobs",),
    ("interp.sweep",),
    ("interp.cli",),
)
__version__ = "0.1.0"


_SUBMODULES = {"analyze", "attnstats", "edits", "hooks", "intervene", "jobs", "models", "plot", "runtime", "schema",
               "sweep", "tasks", "train", "types"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"interp.{name}")
    raise AttributeError(f"module 'interp' has no attribute {name!r}")
