"""Atomic writes: a reader (or a crash) never sees a half-written result file or directory. And the one
loader of files another run wrote (:func:`read_table`, :func:`read_json_file`, :func:`read_results`): format,
schema and non-emptiness checked, every failure one line naming the file and what it lacks."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
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


def read_table(path: str | Path, what: str, columns: Sequence[str] = (), *, fix: str = "", allow_empty: bool = False) -> "pd.DataFrame":
    """A parquet table another run wrote, checked: the file exists and is a file, reads as parquet, has
    ``columns`` and (unless ``allow_empty``) at least one row. Every failure is one ``InputError`` line naming
    ``what`` (e.g. ``"--circuit's circuit.parquet"``), the file, the problem (the missing columns) and ``fix``."""
    path = Path(path).expanduser()
    fix = f"; {fix}" if fix else ""
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} does not exist or is not a file{fix}")
    import pandas as pd
    import pyarrow

    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError, pyarrow.ArrowException) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{what} {str(path)!r} is not a readable parquet file ({first[:160]}){fix}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{what} {str(path)!r} lacks the columns {', '.join(missing)} (it has "
                         f"{', '.join(map(str, df.columns[:8])) or 'none'}){fix}")
    if df.empty and not allow_empty:
        raise InputError(f"{what} {str(path)!r} holds no rows{fix}")
    return df


def read_json_file(path: str | Path, what: str, keys: Sequence[str] = (), *, fix: str = "") -> dict:
    """A JSON object another run wrote (a manifest, ``run.json``), checked for ``keys``; one-line errors."""
    path = Path(path).expanduser()
    fix = f"; {fix}" if fix else ""
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} does not exist or is not a file{fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{what} {str(path)!r} is not readable JSON ({first[:120]}){fix}") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} {str(path)!r} holds a JSON {type(data).__name__}, not an object{fix}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise InputError(f"{what} {str(path)!r} lacks the keys {', '.join(missing)}{fix}")
    return data


# a layer or head index past this is no model's: a table holding one is corrupt (and would draw a huge heatmap)
MAX_INDEX = 100_000


def read_results(path: str | Path, *, plot: bool = False) -> "pd.DataFrame":
    """A tidy result table from a parquet file, or InputError naming what is wrong: a missing or unreadable
    file, the tidy columns it lacks (``interp.schema.REQUIRED``), no rows, a non-numeric, NaN or infinite
    ``value``, a layer or head index no model has."""
    import numpy as np

    from interp.schema import REQUIRED, validate_frame

    fix = "pass a table written by an interp job or built with interp.schema.make_frame"
    df = read_table(path, "results file", fix=fix, allow_empty=True)
    name = str(Path(path).expanduser())
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"{name!r} lacks the tidy columns {', '.join(missing)} (a result needs {', '.join(REQUIRED)}); {fix}")
    if df.empty:
        raise InputError(f"{name!r} holds no rows; nothing to {'plot' if plot else 'read'}")
    try:
        df = validate_frame(df)
    except InputError as e:
        raise InputError(f"{name!r}: {e}") from None
    vals = df["value"].to_numpy(dtype=float)
    if np.isinf(vals).any():
        bad = df.loc[np.isinf(vals), "metric"].unique()[:5]
        raise InputError(f"{name!r} holds infinite values for metrics {list(bad)}; drop or clip them before "
                         f"{'plotting' if plot else 'reading'}")
    for col in ("layer", "head"):
        top = int(df[col].max())
        if top >= MAX_INDEX:
            raise InputError(f"{name!r} has {col} {top}, past any model's (at most {MAX_INDEX - 1}); the table is corrupt")
    return df


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
