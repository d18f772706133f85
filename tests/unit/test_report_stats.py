"""The report's statistics against published values."""

from __future__ import annotations

import pytest

from upsell_triggers.report.stats import accounts_per_group, difference, wilson


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat Med 17:857,
        # Table I, method 3 (Wilson score, no continuity correction).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_intervals(k: int, n: int, low: float, high: float) -> None:
    r = wilson(k, n)
    assert (round(r.low, 4), round(r.high, 4)) == (low, high)


def test_wilson_edges() -> None:
    assert wilson(0, 0).value is None and (wilson(0, 0).low, wilson(0, 0).high) == (0.0, 1.0)
    full = wilson(20, 20)
    assert full.high == 1.0 and round(full.low, 4) == 0.8389  # the mirror of 0/20
    with pytest.raises(ValueError):
        wilson(3, 2)


@pytest.mark.parametrize(
    ("a", "b", "low", "high"),
    [
        # Newcombe (1998), "Interval estimation for the difference between independent proportions",
        # Stat Med 17:873, Table II, method 10 (hybrid score, no continuity correction).
        ((56, 70), (48, 80), 0.0524, 0.3339),
        ((9, 10), (3, 10), 0.1705, 0.8090),
        ((5, 56), (0, 29), -0.0381, 0.1926),
        ((0, 10), (0, 20), -0.1611, 0.2775),
    ],
)
def test_difference_matches_newcombe(a: tuple[int, int], b: tuple[int, int], low: float, high: float) -> None:
    d = difference(wilson(*a), wilson(*b))
    assert d is not None
    assert (round(d.low, 4), round(d.high, 4)) == (low, high)
    assert d.estimate == pytest.approx(a[0] / a[1] - b[0] / b[1])


def test_difference_by_hand() -> None:
    """30/200 vs 20/200 by hand (z = 1.959964, z^2/n = 0.0192073):
    30/200: centre (0.15 + 0.0096037) / 1.0192073 = 0.156596,
            half 1.959964 * sqrt(0.0006375 + 0.0000240) / 1.0192073 = 0.049460 -> [0.107136, 0.206056]
    20/200: centre 0.107543, half 1.959964 * sqrt(0.00045 + 0.0000240) / 1.0192073 = 0.041868
            -> [0.065675, 0.149411]
    low  = 0.05 - sqrt((0.15 - 0.107136)^2 + (0.149411 - 0.10)^2) = 0.05 - 0.065412 = -0.015412
    high = 0.05 + sqrt((0.206056 - 0.15)^2 + (0.10 - 0.065675)^2) = 0.05 + 0.065731 = 0.115731"""
    a, b = wilson(30, 200), wilson(20, 200)
    assert (round(a.low, 5), round(a.high, 5)) == (0.10714, 0.20606)
    assert (round(b.low, 5), round(b.high, 5)) == (0.06567, 0.14941)
    d = difference(a, b)
    assert d is not None and not d.excludes_zero
    assert (round(d.low, 4), round(d.high, 4)) == (-0.0154, 0.1157)
    assert difference(a, wilson(0, 0)) is None


def test_accounts_per_group() -> None:
    # 5% vs 10%, two-sided 5%, power 80%: 434.4 per group (Fleiss, Levin & Paik, without continuity
    # correction), so 435.
    assert accounts_per_group(0.05, 0.05) == 435
    # 4% vs 5% by hand: (1.959964 * sqrt(2 * 0.045 * 0.955) + 0.841621 * sqrt(0.04 * 0.96 + 0.05 * 0.95))^2
    # / 0.01^2 = (0.574606 + 0.246668)^2 / 0.0001 = 6744.9
    assert accounts_per_group(0.04, 0.01) == 6745
    assert accounts_per_group(0.5, 0) is None
    assert accounts_per_group(0.95, 0.1) is None
