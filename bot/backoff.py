"""Retry delays: capped exponential backoff with multiplicative jitter.

One policy for every retry against a venue: the collector's reconnects, snapshot requests and kline
backfill (``bot.feed``) and the reference data's fetches (``bot.reference``).
"""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential delays with multiplicative jitter: ``min(max, initial·2ⁿ)·(1 ± jitter)``."""

    def __init__(self, initial_s: float, max_s: float, jitter: float, rng: random.Random) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self._rng = rng
        self.attempts = 0

    def next(self) -> float:
        base = min(self.max_s, self.initial_s * 2.0 ** min(self.attempts, 60))
        self.attempts += 1
        return base * (1.0 + self.jitter * (2.0 * self._rng.random() - 1.0))

    def reset(self) -> None:
        self.attempts = 0


__all__ = ["Backoff"]
