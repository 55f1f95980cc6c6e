"""Threshold strategy on TABL / multi-head TABL signals: per-horizon class probabilities of down/stationary/up.

At the configured horizon (``horizon_index``): "up" above ``threshold`` (and above "down") goes long, "down"
above it goes short (``allow_short``; on spot it only closes a long). A position is held until the opposite
signal (which flips it, or closes it where shorting is not allowed) or until the horizon has passed in event
time since entry (``hold_s``, default the model's horizon, e.g. 10 s for ``"10s"``): the model said nothing
about later. A signal below the threshold changes nothing. Qty = ``notional`` / the latest mid.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.events import Signal
from bot.orders import Intent
from strategies.common import Directional
from strategies.config import ThresholdConfig


class ThresholdStrategy(Directional[ThresholdConfig]):
    kind = "threshold"

    def decide(self, s: Signal, out: list[Intent]) -> Sequence[Intent]:
        probs = class_probs(s, self.cfg.horizon_index)
        if probs is None:
            self.counts["bad_signal"] += 1
            return out
        p_down, p_up = probs
        thr = self.cfg.threshold
        want = 1 if p_up > thr and p_up >= p_down else -1 if p_down > thr and p_down > p_up else 0
        have = self.direction(s.symbol)
        if want == 0 or (want == have and not self.unreached(s.symbol)):
            return out
        label = f"{'up' if want > 0 else 'down'} {max(p_up, p_down):.3f} > {thr:g}"
        if want < 0 and not self.cfg.allow_short:
            if have > 0:
                out.append(self.exit(s.symbol, s.ts_recv, s.ts_event, f"{label}: flat (no short)"))
            return out
        hold = self.hold_for(s.horizon, self.cfg.horizon_index)
        t = self.enter(s.symbol, want, self.cfg.notional, s.ts_recv, s.ts_event, hold, label)
        if t is not None:
            out.append(t)
        return out


def class_probs(s: Signal, horizon_index: int) -> tuple[float, float] | None:
    """(P(down), P(up)) at ``horizon_index`` of a classification signal (horizon-major probabilities), or
    None when the signal has no such horizon or classes."""
    try:
        down, up = s.classes.index("down"), s.classes.index("up")
    except ValueError:
        return None
    n = len(s.classes)
    row = s.probabilities[horizon_index * n : (horizon_index + 1) * n]
    if len(row) != n:
        return None
    return row[down], row[up]
