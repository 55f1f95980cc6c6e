"""bot.bootstrap: block indices, determinism, paired differences, the verdict, and why blocks matter for
overlapping labels (checked against the analytic variance of an overlapping sum)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from bot.bootstrap import (
    Interval,
    block_indices,
    bootstrap,
    horizon_block,
    mean_stat,
    rule_of_thumb_block,
    sharpe_rows,
    sortino_rows,
    verdict,
)

pytestmark = pytest.mark.unit


def test_block_lengths_from_the_horizon_and_the_rule_of_thumb() -> None:
    assert horizon_block(60, 1) == 60
    assert horizon_block(60, 5) == 12
    assert horizon_block(61, 5) == 13
    assert horizon_block(10, 20) == 1
    assert horizon_block(0, 1) == 1
    assert rule_of_thumb_block(1000) == 10
    assert rule_of_thumb_block(1) == 1
    with pytest.raises(ValueError, match="stride"):
        horizon_block(10, 0)


def test_circular_blocks_are_runs_of_consecutive_indices_that_wrap() -> None:
    idx = block_indices(10, 4, 50, np.random.default_rng(3))

    assert idx.shape == (50, 10)
    for row in idx:
        for start in range(0, 10, 4):  # blocks start at 0, 4, 8 (the last cut to 2)
            run = row[start : start + 4]
            assert all((b - a) % 10 == 1 for a, b in itertools.pairwise(run))
    moving = block_indices(10, 4, 50, np.random.default_rng(3), circular=False)
    assert moving.max() <= 9
    assert all(np.all(np.diff(r[0:4]) == 1) for r in moving)


def test_the_same_seed_gives_the_same_interval_and_another_seed_another() -> None:
    x = np.random.default_rng(0).normal(size=500)

    a = bootstrap(mean_stat, x, block=5, seed=11)
    b = bootstrap(mean_stat, x, block=5, seed=11)
    c = bootstrap(mean_stat, x, block=5, seed=12)

    assert a == b
    assert (a.low, a.high) != (c.low, c.high)
    assert a.estimate == pytest.approx(x.mean())
    assert a.low < a.estimate < a.high


def test_an_independent_series_gives_the_textbook_interval_of_a_mean() -> None:
    x = np.random.default_rng(1).normal(loc=0.3, scale=2.0, size=4000)

    ci = bootstrap(mean_stat, x, block=1, resamples=4000, seed=0)

    half_width = 1.96 * x.std(ddof=1) / math.sqrt(len(x))  # 0.062
    assert (ci.high - ci.low) / 2 == pytest.approx(half_width, rel=0.1)
    assert ci.low < 0.3 < ci.high


def test_overlapping_labels_need_blocks_as_long_as_the_horizon() -> None:
    # x_t = e_t + ... + e_{t+h-1}: neighbouring values share h-1 shocks, like an h-step label scored every step.
    # The true sd of the mean is about h*sigma/sqrt(n); an iid bootstrap sees only sqrt(h)*sigma/sqrt(n).
    h, n = 60, 6000
    e = np.random.default_rng(2).normal(size=n + h - 1)
    x = np.convolve(e, np.ones(h), mode="valid")
    assert len(x) == n

    iid = bootstrap(mean_stat, x, block=1, seed=0)
    blocked = bootstrap(mean_stat, x, block=horizon_block(h, 1), seed=0)

    true_sd = h / math.sqrt(n)
    iid_sd = math.sqrt(h) / math.sqrt(n)
    assert (iid.high - iid.low) / (2 * 1.96) == pytest.approx(iid_sd, rel=0.15)
    # a block of exactly h down-weights the autocovariances (Bartlett): sd ~ sqrt(2/3) of the truth
    assert (blocked.high - blocked.low) / (2 * 1.96) == pytest.approx(math.sqrt(2 / 3) * true_sd, rel=0.25)
    assert (blocked.high - blocked.low) > 4.5 * (iid.high - iid.low)


def test_paired_series_share_their_indices_so_equal_methods_differ_by_exactly_zero() -> None:
    x = np.random.default_rng(4).normal(size=300)

    same = bootstrap(lambda a, b: mean_stat(a) - mean_stat(b), x, x.copy(), block=7)
    shifted = bootstrap(lambda a, b: mean_stat(a) - mean_stat(b), x + 0.5, x, block=7)

    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    assert verdict(same) == "indistinguishable"
    assert shifted.low == pytest.approx(0.5)
    assert shifted.high == pytest.approx(0.5)
    assert verdict(shifted) == "beats"
    with pytest.raises(ValueError, match="equal lengths"):
        bootstrap(lambda a, b: mean_stat(a), x, x[:-1], block=3)


def test_verdict_needs_the_whole_interval_on_one_side_of_zero() -> None:
    def iv(lo: float, hi: float) -> Interval:
        return Interval(estimate=(lo + hi) / 2, low=lo, high=hi, level=0.95, block=1, n=10, resamples=10, valid=10)

    assert verdict(iv(0.01, 0.2)) == "beats"
    assert verdict(iv(-0.01, 0.2)) == "indistinguishable"
    assert verdict(iv(-0.3, -0.01)) == "worse"
    assert verdict(iv(math.nan, math.nan)) == "indistinguishable"


def test_an_empty_series_and_undefined_resamples_give_nan_not_an_error() -> None:
    empty = bootstrap(mean_stat, np.zeros(0), block=3)
    flat = bootstrap(lambda r: sharpe_rows(r, 1.0), np.ones(20), block=2)

    assert math.isnan(empty.estimate)
    assert empty.n == 0
    assert math.isnan(flat.estimate)
    assert flat.valid == 0
    assert flat.to_dict()["low"] is None


def test_sharpe_and_sortino_rows_match_a_hand_computation() -> None:
    r = np.array([[0.01, -0.005, 0.02, -0.01]])
    mean = 0.015 / 4  # 0.00375
    sd = math.sqrt(sum((v - mean) ** 2 for v in r[0]) / 3)
    down = math.sqrt((0.005**2 + 0.01**2) / 4)

    assert sharpe_rows(r, math.sqrt(365))[0] == pytest.approx(mean / sd * math.sqrt(365))
    assert sortino_rows(r, 2.0)[0] == pytest.approx(mean / down * 2.0)


def test_the_module_is_pure_numpy_and_does_no_io() -> None:
    import ast
    from pathlib import Path

    import bot.bootstrap as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= {"__future__", "math", "collections.abc", "dataclasses", "typing", "numpy", "numpy.typing"}
