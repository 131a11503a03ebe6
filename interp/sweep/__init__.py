"""Sweeps: resumable result storage (local). Distributed runs use Ray through the same store."""
from interp.sweep.store import ResumableTable

__all__ = ["ResumableTable"]
