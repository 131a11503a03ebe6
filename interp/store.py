"""A resumable table: each finished unit of work is one atomically written parquet part.

An interrupted sweep restarts, skips the units whose part exists, and ``collect()`` concatenates the parts
into the final file, so no row is lost or duplicated. A part is either complete or absent (atomic rename); a
part that still does not read back (cut short by a full disk, a crash of the filesystem, a hand edit) is moved
aside as ``*.corrupt`` with a one-line warning and counts as not done, so it is recomputed and the run goes on.
"""
from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path

import pandas as pd

from interp.io import write_parquet


class ResumableTable:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    def _part(self, key: str) -> Path:
        return self.dir / f"part-{hashlib.sha1(key.encode()).hexdigest()[:16]}.parquet"

    def done(self, key: str) -> bool:
        part = self._part(key)
        return part.exists() and self._verified(part)

    def _verified(self, part: Path) -> bool:
        """Whether the part's parquet footer reads (cheap: metadata only); if not, it is moved aside."""
        import pyarrow.parquet as pq

        try:
            pq.read_metadata(part)
            return True
        except Exception as e:  # any failure to read back means the part cannot be trusted
            self._set_aside(part, e)
            return False

    def _set_aside(self, part: Path, error: Exception) -> None:
        target = part.with_name(f"{part.name}.corrupt-{int(time.time())}")
        try:
            os.replace(part, target)
        except OSError:
            target = part
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        warnings.warn(f"part {part.name} under {self.dir} does not read back ({reason}); moved aside as {target.name} "
                      f"and recomputed", stacklevel=3)

    def put(self, key: str, df: pd.DataFrame) -> None:
        write_parquet(self._part(key), df.assign(unit=key))

    def get(self, key: str) -> pd.DataFrame:
        return pd.read_parquet(self._part(key))

    def collect(self) -> pd.DataFrame:
        parts = sorted(self.dir.glob("part-*.parquet")) if self.dir.exists() else []
        frames = []
        for p in parts:
            try:
                frames.append(pd.read_parquet(p))
            except Exception as e:
                self._set_aside(p, e)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def cached(store: "ResumableTable | None", key: str, compute) -> pd.DataFrame:
    """``compute()`` stored as the part ``key``; a finished part is read back (without its ``unit`` column)
    instead. With ``store=None`` it always computes."""
    if store is not None and store.done(key):
        try:
            return store.get(key).drop(columns=["unit"], errors="ignore")
        except Exception as e:  # the footer read but the data did not: set it aside and recompute
            store._set_aside(store._part(key), e)
    df = compute()
    if store is not None:
        store.put(key, df)
    return df

