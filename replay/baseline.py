"""The no-model baseline: the same replay with every model replaced by persistence ("the last move goes on").

A model earns its keep only against something that knows nothing: the report sets each run beside
buy-and-hold and beside this. Each worker keeps its ticks, inputs and gating (``ModelWorker.stand_in``)
and publishes, per signal, what persistence says over the model's own horizons, from the mids the replay
saw at its grid ticks (never later ones):

* class probabilities (down / flat / up): 0.8 on the class of the mid's move over the horizon just past
  (flat when it moved less than ``FLAT_BPS``), 0.1 on each other;
* predicted returns (``ret_<h>``): the return over the last ``h``; a portfolio ``weight``: its sign over
  the number of assets;
* a forecast mid move (``mid_bps_<h>``): the last ``h``'s move in bps; a spread (``spread_bps_<h>``): the
  spread now.

The strategies, their thresholds, the risk gate and the matcher are untouched, so the difference between
a run and its baseline is what the models add.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

from bot.events import Venue
from bot.heads import SignalFields, Target

FLAT_BPS = 1.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])$")


def seconds(label: str) -> float | None:
    """``"5m"`` -> 300.0, ``"10s"`` -> 10.0 (the labels of ``bot.heads.duration_label``), else None."""
    m = _DURATION.search(label)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


class MidHistory:
    """Mids (and spreads) per book at the grid ticks, kept for at least ``keep_s`` seconds."""

    def __init__(self, keep_s: float) -> None:
        self.keep_ns = int(keep_s * 1e9)
        self._t: dict[tuple[Venue, str], list[int]] = {}
        self._mid: dict[tuple[Venue, str], list[float]] = {}
        self.spread: dict[tuple[Venue, str], float] = {}

    def add(self, venue: Venue, symbol: str, ts: int, bid: float, ask: float) -> None:
        key = (venue, symbol)
        t = self._t.setdefault(key, [])
        m = self._mid.setdefault(key, [])
        mid = (bid + ask) / 2
        t.append(ts)
        m.append(mid)
        self.spread[key] = (ask - bid) / mid * 1e4 if mid else 0.0
        if t[0] < ts - 2 * self.keep_ns:  # trim now and then, not at every tick
            cut = bisect.bisect_left(t, ts - self.keep_ns)
            del t[:cut], m[:cut]

    def move(self, venue: Venue, symbol: str, ts: int, horizon_s: float) -> float:
        """Relative mid change over the ``horizon_s`` up to ``ts`` (0.0 without that much history)."""
        t = self._t.get((venue, symbol))
        m = self._mid.get((venue, symbol))
        if not t or not m:
            return 0.0
        i = bisect.bisect_right(t, ts) - 1
        j = bisect.bisect_right(t, ts - int(horizon_s * 1e9)) - 1
        if i < 0 or j < 0 or m[j] == 0:
            return 0.0
        return m[i] / m[j] - 1.0


def _probs(move: float, classes: Sequence[str]) -> tuple[float, ...]:
    bps = move * 1e4
    label = "flat" if abs(bps) < FLAT_BPS else ("up" if bps > 0 else "down")
    if label not in classes:
        return tuple(1.0 / len(classes) for _ in classes)
    return tuple(0.8 if c == label else 0.2 / (len(classes) - 1) for c in classes)


class Persistence:
    """A stand-in predictor for one worker (``ModelWorker.stand_in``), shaped like its head's output."""

    def __init__(self, worker: object, mids: MidHistory) -> None:
        head = worker.head  # type: ignore[attr-defined]
        self.family: str = worker.family  # type: ignore[attr-defined]
        self.mids = mids
        self.classes: tuple[str, ...] = tuple(getattr(head, "classes", ("down", "flat", "up")))
        self.horizons = [s for h in head.horizon.split(",") if (s := seconds(h)) is not None]
        self.value_names: tuple[str, ...] = tuple(getattr(head, "value_names", ()))

    def __call__(self, target: Target, ts: int) -> list[SignalFields]:
        v = target.venue
        if self.family == "crossasset":
            h = self.horizons[0] if self.horizons else 60.0
            moves = {a: self.mids.move(v, a, ts, h) for a in target.symbols}
            n = len(target.symbols)
            return [SignalFields(symbol=a, classes=self.classes, probabilities=_probs(r, self.classes),
                                 value_names=self.value_names, values=(r, ((r > 0) - (r < 0)) / n))
                    for a, r in moves.items()]
        sym = target.symbol
        if self.family == "lobforecast":
            vals = [self.mids.move(v, sym, ts, h) * 1e4 for h in self.horizons]
            vals += [self.mids.spread.get((v, sym), 0.0) for _ in self.horizons]
            return [SignalFields(symbol=sym, value_names=self.value_names, values=tuple(vals))]
        probs: list[float] = []
        for h in self.horizons or [60.0]:
            probs.extend(_probs(self.mids.move(v, sym, ts, h), self.classes))
        values = tuple(self.mids.move(v, sym, ts, s) for n in self.value_names if (s := seconds(n)) is not None)
        conf = max(probs[: len(self.classes)]) if probs else None
        return [SignalFields(symbol=sym, classes=self.classes, probabilities=tuple(probs),
                             value_names=self.value_names if values else (), values=values, confidence=conf)]
