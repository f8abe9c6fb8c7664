"""Engagement decay: points halve every ``half_life_days``.

One expression, shared by scoring (which sums it into a lead's engagement) and the lead reader (which
explains the sum line by line from the stored items), so that both arrive at the very same float::

    rate = per_second(30)                              # 0.0 when the half-life is 0: no decay
    decayed(10.0, age_seconds=30 * 86400.0, rate=rate)   # 5.0
    decayed(10.0, age_seconds=-5.0, rate=rate)           # 10.0: a future touchpoint is not decayed
"""

from __future__ import annotations


def per_second(half_life_days: float) -> float:
    """The decay rate in half-lives per second; 0.0 (no decay) for a half-life of 0 or less."""
    return 1.0 / (86400.0 * half_life_days) if half_life_days > 0 else 0.0


def decayed(points: float, age_seconds: float, rate: float) -> float:
    """``points`` after ``age_seconds`` at ``rate`` (from :func:`per_second`)."""
    return points * 0.5 ** (age_seconds * rate) if age_seconds > 0 and rate else points
