"""The interval helper (interp.stats) against published values, and the rate columns the analyzers carry."""
import math

import pytest

from interp.errors import InputError
from interp.stats import format_rate, majority_baseline, mean_ci, rate, rate_of, wilson


@pytest.mark.parametrize("k,n,low,high", [
    (8, 10, 0.4902, 0.9433),   # Wilson 1927 / Newcombe 1998 table values
    (0, 10, 0.0, 0.2775),
    (50, 100, 0.4038, 0.5962),
    (81, 263, 0.2553, 0.3662),  # Newcombe (1998), example (d): 81/263
])
def test_wilson_known_values(k, n, low, high):
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=5e-4) and hi == pytest.approx(high, abs=5e-4)


def test_wilson_closed_form():
    k, n, z = 31, 200, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson(k, n) == pytest.approx((centre - half, centre + half), abs=1e-9)


def test_rate_fields():
    r = rate(131, 200, ["0"] * 131 + ["1"] * 50 + ["2"] * 19, chance=0.2)
    assert r.rate == pytest.approx(0.655) and r.majority == pytest.approx(0.655) and r.chance == 0.2
    assert not r.small_n and r.low < 0.655 < r.high
    small = rate_of([True, False, True], ["a", "a", "b"])
    assert small.n == 3 and small.small_n and small.majority == pytest.approx(2 / 3) and math.isnan(small.chance)
    assert set(small.columns()) == {"n", "low", "high", "majority", "chance", "small_n"}
    assert "n<200" in str(small) and "n<200" in format_rate(small.rate, small.low, small.high, small.n)
    assert math.isnan(majority_baseline([]))


def test_rate_rejects_bad_counts():
    with pytest.raises(InputError, match="0 <= k <= n"):
        rate(5, 3)
    with pytest.raises(InputError, match="labels"):
        rate(1, 3, ["a"])


def test_mean_ci_known_value():
    m = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])  # t(0.975, 4) = 2.776; sd = 1.581
    assert m.mean == 3.0 and m.sd == pytest.approx(1.5811, abs=1e-4)
    assert (m.low, m.high) == pytest.approx((3 - 1.9632, 3 + 1.9632), abs=1e-3)
    assert math.isnan(mean_ci([2.0]).low)
