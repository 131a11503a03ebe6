"""Errors raised by interp.

Every error is an :class:`InterpError` *and* a builtin (``ValueError``, ``KeyError``, ...), so callers can
catch either. Messages are one line: what is wrong, then how to fix it. The CLI turns any ``InterpError``
into that line on stderr and exit code 2.
"""
from __future__ import annotations


class InterpError(Exception):
    """Base class: a problem with the user's input or environment, reported in one line."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class InputError(InterpError, ValueError):
    """Bad argument value: empty prompt, out-of-range layer, overlapping segments, ..."""


class UnknownNameError(InterpError, KeyError):
    """An unknown site, model or metric name."""


class ModelUnavailableError(InterpError, OSError):
    """Weights that cannot be loaded here (not cached, no network, path missing)."""


class UnsupportedModelError(InterpError, NotImplementedError):
    """An architecture that a fast path does not cover."""


class DeviceMismatchError(InterpError, ValueError):
    """Tensors on different devices or with different dtypes."""
