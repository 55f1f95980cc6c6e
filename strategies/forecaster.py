"""Forecaster strategy on the multi-venue LOB forecaster: predicted mid move of the target book in bps of
the mid now, per horizon (``value_names`` ``mid_bps_5s`` .. and ``spread_bps_5s`` ..).

A round trip at market pays the spread (half on the way in, half out) and the taker fee twice, so the
predicted move at ``horizon_index`` must beat ``spread_bps (current book) + 2 * taker_fee_bps +
margin_bps``, strictly, before it trades in the move's direction. The position is held for the horizon
(``hold_s``, default the horizon's own length) in event time, or until the forecast's sign reverses: then it
flips if the reversed forecast beats the costs (and shorting is allowed), else it goes flat. No book seen
yet for the target: no trade (the cost is unknown).
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.events import Signal
from bot.orders import Intent
from strategies.common import Directional, sign_of
from strategies.config import ForecasterConfig


class ForecasterStrategy(Directional[ForecasterConfig]):
    kind = "forecaster"

    def cost_bps(self, symbol: str) -> float | None:
        spread = self.mids.spread_bps(self.venue, symbol)
        return None if spread is None else spread + 2 * self.cfg.taker_fee_bps + self.cfg.margin_bps

    def decide(self, s: Signal, out: list[Intent]) -> Sequence[Intent]:
        moves = [(n[len("mid_bps_"):], v) for n, v in zip(s.value_names, s.values, strict=False)
                 if n.startswith("mid_bps_")]
        if self.cfg.horizon_index >= len(moves):
            self.counts["bad_signal"] += 1
            return out
        label, pred = moves[self.cfg.horizon_index]
        cost = self.cost_bps(s.symbol)
        if cost is None:
            self.counts["no_book"] += 1
            return out
        have = self.direction(s.symbol)
        d = sign_of(pred) if abs(pred) > cost else 0
        text = f"{label} {pred:+.2f} bps vs cost {cost:.2f}"
        if have != 0 and sign_of(pred) == -have and not (d == -have and (d > 0 or self.cfg.allow_short)):
            return [*out, self.exit(s.symbol, s.ts_recv, s.ts_event, f"reversed: {text}")]
        if d == 0 or (d == have and not self.unreached(s.symbol)):
            if d == 0 and have == 0:
                self.counts["below_cost"] += 1
            return out
        if d < 0 and not self.cfg.allow_short:
            self.counts["no_short"] += 1
            return out
        hold = self.hold_for(label)
        t = self.enter(s.symbol, d, self.cfg.notional, s.ts_recv, s.ts_event, hold, text)
        if t is not None:
            out.append(t)
        return out
