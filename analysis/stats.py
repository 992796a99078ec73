"""Statistics for the tables: the mean's t interval, Welch's t-test and interval, Hedges' g, Holm's correction."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


def mean_ci(values: pd.Series | np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """Mean, std and Student-t confidence interval of the mean. CI is NaN with fewer than 2 values."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    n = len(finite)
    if n == 0:
        return (math.nan,) * 4
    mean = float(finite.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(finite.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


@dataclass(frozen=True)
class Welch:
    """A difference of means with Welch's unequal-variance t-test and its effect size."""

    diff: float  # mean(a) - mean(b)
    ci_low: float  # 95% CI of the difference, Welch-Satterthwaite degrees of freedom
    ci_high: float
    hedges_g: float  # the difference in pooled standard deviations, small-sample corrected
    t: float
    df: float
    p_value: float  # two-sided


def welch(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE) -> Welch:
    """Welch's t-test of mean(a) - mean(b), its CI, and Hedges' g; NaN where undefined (n < 2, no spread)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(a), len(b)
    diff = float(a.mean() - b.mean()) if n1 and n2 else math.nan
    if n1 < 2 or n2 < 2:
        return Welch(diff, *(math.nan,) * 6)
    v1, v2 = a.var(ddof=1) / n1, b.var(ddof=1) / n2
    pooled = math.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))
    g = diff / pooled * (1 - 3 / (4 * (n1 + n2) - 9)) if pooled > 0 else math.nan
    se = math.sqrt(v1 + v2)
    if se == 0:
        return Welch(diff, diff, diff, g, math.nan, math.nan, math.nan)
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    t = diff / se
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return Welch(diff, diff - half, diff + half, g, t, df, float(2 * stats.t.sf(abs(t), df)))


def holm(p_values: pd.Series) -> pd.Series:
    """Holm's step-down adjustment: controls the chance of any false "better/worse" in a family."""
    p = p_values.dropna().sort_values()
    m = len(p)
    adjusted = (p * (m - np.arange(m))).cummax().clip(upper=1.0)
    return adjusted.reindex(p_values.index)
