"""Rates with honest uncertainty: Wilson score intervals, Newcombe's interval for a difference of two
rates, and the accounts per group a two-proportion test needs.

The formulas are closed forms of a few lines; the normal quantiles come from the standard library's
`statistics.NormalDist`. docs/growth.md ("Dependencies") says why this is not scipy or statsmodels; the
unit tests pin the results to published values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

CONFIDENCE = 0.95
POWER = 0.8


def _z(confidence: float) -> float:
    """Two-sided normal quantile: 1.959964 for 95%."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True, slots=True)
class Rate:
    """k of n, with its Wilson interval. n = 0 has no rate and the interval [0, 1]."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> Rate:
    """Wilson's score interval (Wilson 1927): unlike the textbook p +- z*sqrt(p(1-p)/n), it stays
    inside [0, 1] and keeps its coverage for small n and for rates near 0 or 1, which conversion rates
    are."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Rate(0, 0, 0.0, 1.0)
    z = _z(confidence)
    p = k / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    # At k = 0 or k = n one bound is exactly 0 or 1; the closed form gives it up to rounding.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Rate(k, n, low, high)


@dataclass(frozen=True, slots=True)
class Difference:
    """a - b of two rates, with Newcombe's hybrid score interval."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def difference(a: Rate, b: Rate, confidence: float = CONFIDENCE) -> Difference | None:
    """Newcombe's method 10 (Newcombe 1998, "Interval estimation for the difference between
    independent proportions"): built from the two Wilson intervals, so it inherits their behaviour for
    small counts and rates near 0, where the Wald interval of a difference fails. None without data."""
    if a.n == 0 or b.n == 0:
        return None
    pa, pb = a.k / a.n, b.k / b.n
    ia, ib = wilson(a.k, a.n, confidence), wilson(b.k, b.n, confidence)
    d = pa - pb
    low = d - math.sqrt((pa - ia.low) ** 2 + (ib.high - pb) ** 2)
    high = d + math.sqrt((ia.high - pa) ** 2 + (pb - ib.low) ** 2)
    return Difference(d, low, high)


def accounts_per_group(
    base: float, lift: float, confidence: float = CONFIDENCE, power: float = POWER
) -> int | None:
    """Accounts each group needs for a two-sided test at `confidence` to detect a difference of `lift`
    (absolute) from the rate `base` with probability `power` (the usual normal approximation, e.g.
    Fleiss, Levin & Paik, "Statistical Methods for Rates and Proportions", eq. 4.14 without the
    continuity correction). None when base + lift is not a rate or lift is 0."""
    p1, p2 = base, base + lift
    if lift == 0 or not (0 <= p1 <= 1 and 0 <= p2 <= 1):
        return None
    za, zb = _z(confidence), NormalDist().inv_cdf(power)
    pbar = (p1 + p2) / 2
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(num * num / (lift * lift))
