"""Build and load ``_rows.c``, the cpu kernel's fused row pass, with the system C compiler.

Built once per machine on first use (about a second) into ``$INTERP_CACHE/ext`` (default
``~/.cache/interp/ext``), under a name that hashes the source, the flags and the processor, so an edit, a
different CPU or a shared home directory never loads a stale or foreign build. Written to a temporary name
and renamed, so concurrent first uses cannot see half a file. Without a working compiler, or with
``INTERP_NO_CEXT=1``, :func:`rows_lib` returns ``None`` and the kernel uses its pure-PyTorch row pass.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional

_SRC = Path(__file__).with_name("_rows.c")
_FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno", "-std=gnu11"]
_PORTABLE = [f for f in _FLAGS if f != "-march=native"]  # for compilers without -march=native (some Arm clangs)
_LOCK = threading.Lock()
_LIB: Optional[ctypes.CDLL] = None
_TRIED = False
_ERROR: Optional[str] = None

_i64 = ctypes.c_int64
_P = ctypes.c_void_p
_ARGTYPES = [  # interp_attn_rows, in order
    _P, _i64, _i64, _i64, _i64, _i64, _i64,  # s, n_groups, nq, ld, k0, kend, pos0
    ctypes.c_int, _i64, _i64,  # causal, window, group_per_batch
    _P, _i64, _i64, _P, _i64, _i64,  # bias, bias_div, bias_ld, qw, q_len, i0
    _P, _i64, _P, _i64, _i64, _P, _P,  # kacc, kacc_ld, seg, n_seg, seg_ld, seg_span, segm
    _P, _P, _P, _P,  # lse, ent, maxw, amax
    _P, _P, _P,  # sinks, sinkm, rinv
]


def _cache_dir() -> Path:
    return Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp")) / "ext"


def _cpu_tag() -> str:
    try:  # model name and flags: -march=native code must not run on another CPU
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "Features"))][:2]
    except OSError:
        lines = []
    return "\n".join([platform.machine(), platform.processor(), *lines])


def _compiler() -> Optional[str]:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _build(cc: str) -> Path:
    try:
        return _build_with(cc, _FLAGS)
    except subprocess.CalledProcessError:
        return _build_with(cc, _PORTABLE)


def _build_with(cc: str, flags: list[str]) -> Path:
    key = hashlib.sha256(b"\0".join([_SRC.read_bytes(), " ".join(flags).encode(), cc.encode(), _cpu_tag().encode()]))
    out = _cache_dir() / f"interp_rows_{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name, suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *flags, str(_SRC), "-o", tmp, "-lm"], check=True, capture_output=True, timeout=120)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def rows_lib() -> Optional[ctypes.CDLL]:
    """The loaded row-pass library, or ``None`` (no compiler, build failed, or ``INTERP_NO_CEXT=1``)."""
    global _LIB, _TRIED, _ERROR
    if os.environ.get("INTERP_NO_CEXT") == "1":
        return None
    if _TRIED:
        return _LIB
    with _LOCK:
        if not _TRIED:
            cc = _compiler()
            try:
                if cc is None:
                    raise OSError("no C compiler found (set CC)")
                lib = ctypes.CDLL(str(_build(cc)))
                fn = lib.interp_attn_rows
                fn.argtypes, fn.restype = _ARGTYPES, None
                _LIB = lib
            except (OSError, subprocess.SubprocessError) as exc:
                detail = getattr(exc, "stderr", None)  # a compile error: the compiler's first line says why
                text = (detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail or exc)).strip()
                _ERROR = text.splitlines()[0] if text else type(exc).__name__
            _TRIED = True
    return _LIB


def build_error() -> Optional[str]:
    """Why :func:`rows_lib` returned ``None`` (after it was called), for diagnostics."""
    return _ERROR


if __name__ == "__main__":  # `make install` builds it once, so a first call does not pay the compile
    lib = rows_lib()
    print("interp: compiled attention row pass " + ("built" if lib else f"unavailable ({build_error()}); using PyTorch"))
