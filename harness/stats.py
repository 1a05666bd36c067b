"""Intervals and tests for accuracies measured on a fixed question set."""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sound near 0 and 1, unlike Wald)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def macro_interval(parts: list[tuple[int, int]], z: float = Z95) -> tuple[float, float]:
    """Normal interval for the unweighted mean of independent per-subject accuracies.

    Each subject's variance is taken at its Agresti–Coull estimate (k + z²/2) / (n + z²), not at
    k/n: a subject answered all right or all wrong is still uncertain, and the interval must not
    shrink to a point (as the plain estimate's zero variance would make it)."""
    parts = [(k, n) for k, n in parts if n]
    if not parts:
        return (0.0, 1.0)
    mean = sum(k / n for k, n in parts) / len(parts)
    z2 = z * z
    var = sum(p * (1 - p) / (n + z2) for p, n in (((k + z2 / 2) / (n + z2), n) for k, n in parts)) / len(parts) ** 2
    half = z * math.sqrt(var)
    return (max(0.0, mean - half), min(1.0, mean + half))


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the discordant pairs at p = 1/2."""
    from scipy.stats import binomtest  # scipy.stats costs half a second to import

    n = right_to_wrong + wrong_to_right
    if n == 0:
        return 1.0
    return float(binomtest(min(right_to_wrong, wrong_to_right), n, 0.5).pvalue)


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order): reject where adjusted p < alpha, family-wise."""
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
