import pandas as pd
import pytest

from interp.errors import InputError
from interp.schema import make_frame, validate_frame


def test_make_frame_orders_and_types():
    df = make_frame([{"value": 1, "metric": "m", "model": "x", "task": "t", "layer": 0, "head": 1, "seed": 3}])
    assert list(df.columns)[:6] == ["model", "task", "layer", "head", "metric", "value"]
    assert df["value"].dtype == "float64"


def test_validate_rejects_missing_and_nan():
    with pytest.raises(InputError, match="lacks required columns"):
        validate_frame(pd.DataFrame({"value": [1.0]}))
    with pytest.raises(InputError, match="NaN values"):
        make_frame([{"model": "x", "task": "t", "layer": 0, "head": 0, "metric": "m", "value": float("nan")}])
