"""Execution settings shared by every verb: the device and the number of CPU threads.

Thread default: on a shared CPU, intra-op parallel regions that spin-wait for a core another process holds
make PyTorch many times slower than one thread (measured: the atlas ran twice as slowly at 2 threads as at 1
with one competing process). ``auto`` therefore takes the cores this process may use, minus the ones the
1-minute load average says are busy, and never fewer than one.
"""
from __future__ import annotations

import os

from interp.errors import InputError


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_threads() -> int:
    """Cores that are free right now (at least 1)."""
    cores = available_cores()
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:
        busy = 0
    return max(1, min(cores, cores - busy))


def resolve_threads(threads: int | str | None) -> int:
    """``None``/``"auto"`` → :func:`auto_threads`; else a positive integer."""
    if threads is None or str(threads).lower() == "auto":
        return auto_threads()
    try:
        n = int(threads)
    except (TypeError, ValueError):
        raise InputError(f"--threads must be a positive integer or 'auto', got {threads!r}") from None
    if n < 1:
        raise InputError(f"--threads must be at least 1, got {n}")
    return n


def set_threads(threads: int | str | None) -> int:
    """Set PyTorch's intra-op threads and return the number used."""
    import torch

    n = resolve_threads(threads)
    torch.set_num_threads(n)
    return n


def torch_has_cuda() -> bool | None:
    """Whether the installed torch was built with CUDA, read from ``torch/version.py`` without importing torch
    (None when that file cannot be read)."""
    import importlib.util
    import re
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("torch")
        text = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8")
    except Exception:
        return None
    m = re.search(r"^cuda\s*(?::[^=]*)?=\s*(.+)$", text, re.M)
    return None if m is None else m.group(1).strip() not in ("None", "'None'")


def precheck_device(device: str | None) -> None:
    """The device checks that need no model, cheapest first: the name, then (for CUDA) the torch build read from
    disk, and only then ``torch.cuda.is_available()`` (torch imported lazily). Runs before the model load."""
    if device is None:
        return
    name = str(device).strip().lower()
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise InputError(f"unknown device {device!r}; use 'cpu' or 'cuda' (or 'cuda:N')")
    if kind == "cuda" and torch_has_cuda() is False:
        raise InputError(f"device {device!r} is not available: this torch build has no CUDA; use device 'cpu'")
    if kind != "cpu":
        check_device(device)


def check_device(device):
    """A ``torch.device`` that exists here, or InputError naming what is available."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {device!r}; use 'cpu' or 'cuda' (or 'cuda:N')") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InputError(f"device {device!r} is not available: {build}; use device 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s); use cuda:0..")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError(f"device {device!r} is not available here; use device 'cpu'")
    elif dev.type != "cpu":
        raise InputError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    return dev


__all__ = ["auto_threads", "resolve_threads", "set_threads", "check_device", "precheck_device", "torch_has_cuda",
           "available_cores"]
