"""Atomic writes: a reader (or a crash) never sees a half-written result file or directory."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp file path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are meant to be shared
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory beside ``path``; on success it becomes ``path`` (replacing any old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_parquet(path: str | Path, df: "pd.DataFrame") -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def read_results(path: str | Path) -> "pd.DataFrame":
    """A tidy result table from a parquet file, or InputError naming what is wrong: a missing or unreadable
    file, the tidy columns it lacks (``interp.schema.REQUIRED``), a non-numeric or NaN ``value``."""
    import pandas as pd
    import pyarrow

    from interp.schema import REQUIRED, validate_frame

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist or is not a file; pass a results .parquet file")
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError, pyarrow.ArrowException) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{str(path)!r} is not a readable parquet file ({first[:200]}); pass a results .parquet file") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"{str(path)!r} lacks the tidy columns {', '.join(missing)} (a result needs "
                         f"{', '.join(REQUIRED)}); pass a table written by an interp job or built with interp.schema.make_frame")
    if df.empty:
        raise InputError(f"{str(path)!r} holds no rows; nothing to plot")
    try:
        return validate_frame(df)
    except InputError as e:
        raise InputError(f"{str(path)!r}: {e}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
