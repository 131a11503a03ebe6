"""One parallel region per kernel call: a small pool of worker threads whose torch ops run single-threaded.

Why: the cpu kernel issues ~10 torch ops per query block, and each op is its own OpenMP parallel region whose
threads meet at a barrier. With another busy process on one core, the thread that shares that core is
descheduled for a whole time slice at almost every barrier, and a layer of thousands of small regions took
67-70× SDPA. Here each worker runs whole query blocks with one intra-op thread (no barriers), takes the next
chunk of blocks when it is done (a slowed worker just takes fewer) and the caller waits once per call.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import torch

T = TypeVar("T")
_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
_SIZE = 0


def _init_worker(ready: threading.Barrier) -> None:
    torch.set_num_threads(1)  # this thread's OpenMP/MKL thread count (it also sets a process default; see _pool)
    ready.wait()


def _share_malloc_arena() -> None:
    """Make new threads share glibc's malloc arenas instead of each getting its own. glibc keeps a thread's
    freed blocks in that thread's arena, so workers that allocate score buffers left the process's peak RSS
    ~0.3 GB higher at n=4096 (2.41 → 2.09 GB for SmolLM2; SDPA: 1.94). Process-wide and only for arenas made
    from now on; Linux/glibc only, a no-op elsewhere, skipped when ``INTERP_KEEP_MALLOC_ARENAS`` is set."""
    if not sys.platform.startswith("linux") or os.environ.get("INTERP_KEEP_MALLOC_ARENAS"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)  # M_ARENA_MAX = 1
    except (OSError, AttributeError):  # not glibc
        pass


_LIBC = None
TRIM_MIN_PRODUCTS = 2048 * 2048  # query x key products of one call above which its freed heap is handed back


def release_free_heap(products: int) -> None:
    """Hand glibc's free heap pages back to the OS (``malloc_trim(0)``) after a forward whose attention calls had
    ``products`` query x key products each; the fused path calls it once per forward, after the last layer.
    Why: the freed per-layer temporaries of a long prompt sit in the middle of the heap, where glibc does not trim
    them, and the logits are allocated on top of them: over SmolLM2's 30 layers at n = 8192 they held up to 0.85
    GB more than an SDPA forward's (peak RSS 1.01x-1.38x SDPA's in repeated runs). Once per forward it costs a
    heap walk; after every layer the page faults of reusing the released pages cost 15% at n = 4096. Linux/glibc
    only; a no-op elsewhere, for small calls, and when ``INTERP_KEEP_MALLOC_ARENAS`` is set."""
    global _LIBC
    if products < TRIM_MIN_PRODUCTS or not sys.platform.startswith("linux") or os.environ.get("INTERP_KEEP_MALLOC_ARENAS"):
        return
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _LIBC = False
    if _LIBC:
        _LIBC(0)


def _pool(n: int) -> ThreadPoolExecutor:
    global _POOL, _SIZE
    with _LOCK:
        if _POOL is None or _SIZE != n:
            _share_malloc_arena()
            if _POOL is not None:
                _POOL.shutdown(wait=True)
            ready = threading.Barrier(n + 1)
            _POOL = ThreadPoolExecutor(n, thread_name_prefix="interp-attn", initializer=_init_worker, initargs=(ready,))
            for _ in range(n):  # start every worker now, so all have set their thread count ...
                _POOL.submit(int)
            ready.wait()
            torch.set_num_threads(n)  # ... and then restore the default that set_num_threads(1) also changed
            _SIZE = n
        return _POOL


def run_chunks(fn: Callable[[Sequence], T], chunks: Sequence[Sequence]) -> list[T]:
    """``[fn(c) for c in chunks]``, spread over ``torch.get_num_threads()`` single-threaded workers.

    Chunks are submitted last first (with causal attention the last query blocks cost the most) and results
    come back in chunk order, so a reduction over them is deterministic."""
    n = torch.get_num_threads()
    if n <= 1 or len(chunks) <= 1 or threading.current_thread().name.startswith("interp-attn"):
        return [fn(c) for c in chunks]
    pool = _pool(n)
    futures = [pool.submit(fn, c) for c in reversed(chunks)][::-1]
    return [f.result() for f in futures]


def chunked(items: Sequence, n_chunks: int) -> list[list]:
    """Split ``items`` into at most ``n_chunks`` contiguous, near-equal chunks."""
    n_chunks = max(1, min(n_chunks, len(items)))
    step, extra = divmod(len(items), n_chunks)
    out, start = [], 0
    for i in range(n_chunks):
        end = start + step + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out
