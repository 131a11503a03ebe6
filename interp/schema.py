"""The tidy long-format schema that every analyzer and intervention returns.

One row per observation. Required columns: ``model, task, layer, head, metric, value``; optional:
``position, prompt_id, condition, seed, direction, reason``. ``head`` is -1 for layer-level metrics. Frames from
any analyzer concatenate, pivot and plot without reshaping. ``value`` is NaN only on a row whose ``reason`` says
why it is undefined (e.g. a normalized effect whose denominator is within the noise, :func:`interp.stats.guard`).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from interp.errors import InputError

REQUIRED: dict[str, str] = {
    "model": "string",
    "task": "string",
    "layer": "int64",
    "head": "int64",
    "metric": "string",
    "value": "float64",
}
OPTIONAL: dict[str, str] = {
    "position": "int64",
    "prompt_id": "string",
    "condition": "string",
    "seed": "int64",
    "direction": "string",
    "reason": "string",
}
COLUMNS = [*REQUIRED, *OPTIONAL]


def make_frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Build a schema-conforming frame: columns ordered, dtypes coerced, validated."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty:
        df = pd.DataFrame({c: pd.Series(dtype=t) for c, t in REQUIRED.items()})
    for col, dtype in {**REQUIRED, **OPTIONAL}.items():
        if col in df.columns:
            df[col] = df[col].astype("Int64" if dtype == "int64" and df[col].isna().any() else dtype)
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[[c for c in COLUMNS if c in df.columns] + extra].reset_index(drop=True)
    return validate_frame(df)


def validate_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Check the schema; returns ``df`` unchanged or raises InputError naming the first problem."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"result frame lacks required columns {missing}; build it with interp.schema.make_frame")
    if not pd.api.types.is_numeric_dtype(df["value"]):
        raise InputError("column 'value' must be numeric; cast metric values to float")
    vals = df["value"].to_numpy(dtype=float, na_value=np.nan)
    nan = np.isnan(vals)
    if "reason" in df.columns:  # an undefined value may stay when its row says why
        nan &= ~df["reason"].fillna("").astype(str).str.len().gt(0).to_numpy()
    if nan.any():
        bad = df.loc[nan, "metric"].unique()[:5]
        raise InputError(f"NaN values for metrics {list(bad)}; drop undefined observations instead of storing NaN "
                         "(or give the row a 'reason')")
    for col in ("layer", "head"):
        if not pd.api.types.is_integer_dtype(df[col]):
            raise InputError(f"column {col!r} must hold integers (-1 for 'not applicable'), got dtype {df[col].dtype}")
        if (df[col] < -1).any():
            raise InputError(f"column {col!r} has values below -1; use -1 only for 'not applicable'")
    return df
