"""Stage 1, load. ``load_model`` (in :mod:`interp.models.loader`) returns a ``TransformerBridge``; name
resolution from the config alone lives in :mod:`interp.models.spec`. Attributes load lazily, so the CLI can
check names and configs without importing torch.
"""
from __future__ import annotations

from interp._lazy import lazy_getattr

_LAZY = {"load_model": ".loader", "from_hf": ".loader", "tiny_model": ".loader", "model_name": ".loader",
         "model_source": ".loader", "is_causal": ".loader", "DEFAULT_MODEL": ".loader", "TINY_ARCHS": ".loader",
         "BUNDLED": ".spec", "ModelSpec": ".spec", "resolve_model": ".spec"}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
