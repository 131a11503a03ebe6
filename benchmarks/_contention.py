"""A bounded busy competitor for ``--contention``: one process spinning on one core, as on a shared machine."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

SPIN = "import time\nend = time.time() + {limit}\nwhile time.time() < end:\n    pass\n"


@contextlib.contextmanager
def busy_core(enabled: bool = True, limit_s: float = 900.0, core: int = 0):
    """Run a CPU-bound process pinned to ``core`` for at most ``limit_s`` seconds while the block runs."""
    if not enabled:
        yield None
        return
    pin = (lambda: os.sched_setaffinity(0, {core})) if hasattr(os, "sched_setaffinity") else None
    proc = subprocess.Popen([sys.executable, "-c", SPIN.format(limit=float(limit_s))], preexec_fn=pin)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
