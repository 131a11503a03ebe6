"""Module-level ``__getattr__`` that imports a name's module on first use (PEP 562), so that packages stay cheap
to import and the CLI can check its arguments without importing torch."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_getattr(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """``table`` maps an attribute to the module (relative to ``package``, e.g. ``".loader"``) that defines it."""

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
