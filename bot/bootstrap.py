"""Block bootstrap confidence intervals for a statistic of a series, or of paired series (pure numpy, no I/O).

Why blocks. The classic bootstrap resamples single observations and so assumes they are independent. Ours
are not: a 60-bar direction label scored at every bar shares 59 of its 60 bars with its neighbour, so a run
of 17,000 scored samples holds about 17,000 / 60 ~ 290 independent ones, and an interval that treats them
as 17,000 is about sqrt(60) ~ 8x too narrow: a 1-point accuracy edge looks "significant" when it is noise.
Returns of a strategy are autocorrelated too (positions are held over many bars, volatility clusters).
Resampling *blocks* of consecutive observations keeps that dependence inside each block; with blocks at
least as long as the overlap, the resampled series varies about as much as fresh data would.

How. ``bootstrap`` draws ``resamples`` series of the original length, each a concatenation of blocks of
``block`` consecutive indices (the *circular* variant by default: a block may wrap from the end to the
start, so every observation is equally likely to be drawn; ``circular=False`` is the moving-block variant,
blocks wholly inside the series). Several series of equal length are resampled with the *same* indices
(paired), which is what a difference between two methods scored on the same samples needs: the interval of
``metric(model) - metric(baseline)`` then reflects how much the two move together. The interval is the
percentile interval of the resampled statistics. Everything is deterministic from ``seed``.

Block length:

* overlapping labels or horizons: ``horizon_block(horizon_samples, stride)``, the label horizon in samples
  divided by the sampling stride (a 60-bar label scored every 5th bar overlaps its next 11 neighbours);
* returns with no known overlap: ``rule_of_thumb_block(n)`` = n^(1/3) rounded, the usual order for the
  block length of a block bootstrap of a mean (Hall, Horowitz and Jing 1995).

A statistic is *vectorised*: it gets each series with a leading resample axis (shape ``(B, n, ...)``) and
returns ``B`` values, e.g. ``lambda x: x.mean(axis=1)``; ``bootstrap`` feeds it bounded chunks of resamples.
The point estimate is the statistic of the original series (as a batch of one). Resamples whose statistic is
not finite (a zero standard deviation, say) are left out of the percentiles; ``Interval.valid`` counts those
kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Statistic = Callable[..., NDArray[Any]]

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
_CHUNK_ELEMENTS = 2_000_000  # resampled values held at once (per series)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its block-bootstrap percentile interval at ``level``."""

    estimate: float
    low: float
    high: float
    level: float
    block: int
    n: int
    resamples: int
    valid: int  # resamples with a finite statistic (the percentiles are of these)

    @property
    def above_zero(self) -> bool:
        return self.low > 0

    @property
    def below_zero(self) -> bool:
        return self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": _num(self.estimate), "low": _num(self.low), "high": _num(self.high),
                "level": self.level, "block": self.block, "n": self.n, "resamples": self.resamples,
                "valid": self.valid}


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def horizon_block(horizon_samples: float, stride: int = 1) -> int:
    """The block length for labels spanning ``horizon_samples`` steps scored every ``stride`` steps:
    ``ceil(horizon / stride)``, at least 1 (labels that do not overlap need no blocks)."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if not math.isfinite(horizon_samples) or horizon_samples <= 0:
        return 1
    return max(1, math.ceil(horizon_samples / stride - 1e-9))


def rule_of_thumb_block(n: int) -> int:
    """n^(1/3) rounded, at least 1: the block length for returns when no overlap is known."""
    return max(1, round(n ** (1.0 / 3.0))) if n > 0 else 1


def block_indices(n: int, block: int, resamples: int, rng: np.random.Generator,
                  circular: bool = True) -> NDArray[np.int64]:
    """``(resamples, n)`` indices: each row ``ceil(n / block)`` blocks of ``block`` consecutive indices,
    cut to ``n``. Circular blocks wrap around the end; moving blocks start in ``[0, n - block]``."""
    if n < 1:
        raise ValueError("cannot resample an empty series")
    block = max(1, min(int(block), n))
    per_row = -(-n // block)
    starts = rng.integers(0, n if circular else n - block + 1, size=(resamples, per_row))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(resamples, per_row * block)[:, :n]
    out: NDArray[np.int64] = idx % n if circular else idx
    return out


def bootstrap(
    statistic: Statistic,
    *series: ArrayLike,
    block: int,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    circular: bool = True,
) -> Interval:
    """The block-bootstrap interval of ``statistic(*series)`` (see the module docstring).

    ``series``: one or more arrays of equal length along axis 0, resampled with the same indices.
    ``statistic``: vectorised, ``(B, n, ...)`` arrays in, ``B`` values out. An empty series gives NaNs.
    """
    if not series:
        raise ValueError("bootstrap needs at least one series")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    arrays = [np.asarray(s) for s in series]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"paired series must have equal lengths, got {[len(a) for a in arrays]}")
    block = max(1, min(int(block), max(n, 1)))
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, level, block, 0, resamples, 0)
    estimate = float(np.asarray(statistic(*[a[None] for a in arrays]), dtype=np.float64).reshape(-1)[0])
    rng = np.random.default_rng(seed)
    width = max(int(np.prod(a.shape[1:], dtype=np.int64)) for a in arrays)
    chunk = max(1, _CHUNK_ELEMENTS // (n * max(width, 1)))
    values: list[NDArray[np.float64]] = []
    done = 0
    while done < resamples:
        b = min(chunk, resamples - done)
        idx = block_indices(n, block, b, rng, circular)
        values.append(np.asarray(statistic(*[a[idx] for a in arrays]), dtype=np.float64).reshape(b))
        done += b
    stats = np.concatenate(values)
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return Interval(estimate, math.nan, math.nan, level, block, n, resamples, 0)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return Interval(estimate, float(low), float(high), level, block, n, resamples, int(finite.size))


def verdict(difference: Interval, tolerance: float = 0.0) -> str:
    """From the interval of ``ours - theirs`` (higher is better): "beats" only when the whole interval lies
    above ``tolerance``, "worse" when it lies below ``-tolerance``, else "indistinguishable" (an interval
    that could not be computed, too)."""
    if not (math.isfinite(difference.low) and math.isfinite(difference.high)):
        return "indistinguishable"
    if difference.low > tolerance:
        return "beats"
    if difference.high < -tolerance:
        return "worse"
    return "indistinguishable"


# -- vectorised statistics used by more than one caller ------------------------------------------------


def mean_stat(x: NDArray[Any]) -> NDArray[np.float64]:
    """Mean over axis 1 (all trailing axes)."""
    out: NDArray[np.float64] = x.reshape(x.shape[0], -1).mean(axis=1)
    return out


def sharpe_stat(periods_per_year: float) -> Statistic:
    """Annualised Sharpe ratio of per-period returns: ``mean / std(ddof=1) * sqrt(periods_per_year)``
    (NaN where the standard deviation is 0)."""
    scale = math.sqrt(periods_per_year)

    def stat(r: NDArray[Any]) -> NDArray[np.float64]:
        return sharpe_rows(r, scale)

    return stat


def sharpe_rows(r: NDArray[Any], scale: float) -> NDArray[np.float64]:
    r = np.asarray(r, dtype=np.float64)
    if r.shape[1] < 2:
        return np.full(r.shape[0], np.nan)
    sd = r.std(axis=1, ddof=1)
    mean = r.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: NDArray[np.float64] = np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0) * scale, np.nan)
    return out


def sortino_rows(r: NDArray[Any], scale: float) -> NDArray[np.float64]:
    """``mean / sqrt(mean(min(r, 0)^2)) * scale`` per row (downside deviation about 0, over all periods);
    NaN where no period lost."""
    r = np.asarray(r, dtype=np.float64)
    down = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2, axis=1))
    mean = r.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: NDArray[np.float64] = np.where(down > 0, mean / np.where(down > 0, down, 1.0) * scale, np.nan)
    return out
