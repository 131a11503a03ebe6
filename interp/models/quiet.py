"""Quiet transformers loads, shared by the loader and the tinyvlm builder (which the loader calls), so that
neither imports the other for it."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def quiet_transformers():
    """No per-load progress bars or warnings (MiniLM's untrained MLM head warns on every load); the
    caller's transformers logging settings are restored afterwards."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
