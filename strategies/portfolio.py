"""Portfolio strategy on the cross-asset model: one Signal per asset per model step (``value_names``
``(ret_<h>, weight)``), all with the same data time ``ts_event``; a step is complete when every configured
asset has one.

Target weights: ``weights = "head"`` takes the portfolio head's ``weight``; ``"returns"`` takes each
asset's predicted return over its realised volatility (std of the last ``vol_window`` log returns of its
closed bars at the model's resolution; while any asset has too few bars, the plain predicted returns), so
an asset's expected move counts in units of its usual move. Without ``allow_short`` negative weights become
0. Weights are normalised to gross 1 (sum of |w|), times ``capital``, each asset capped at
``max_position`` (quote notional), / its latest mid.

Rebalance on a complete step when (a) it is the first, (b) ``rebalance_bars`` bars of ``bar_interval_s``
have closed since the last rebalance (a bar = a new open time on any of the assets; ``rebalance_on =
"signals"`` counts complete steps instead), or (c) some asset's target weight differs from the weight it
holds now by more than ``drift_band``. The weight held is the last target quantity at the current mid over
``capital``: price moves drift it, and so do the model's new weights.

Limit orders (``order_type = "limit"``, ``strategies.limit``): an asset whose order ended short of its
target (rejected, or cancelled at ``limit_timeout_s``) holds what filled, and the next complete step
rebalances (reason ``unfilled``) so the strategy targets again.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from bot.events import BookUpdate, KlineClosed, Signal
from bot.orders import Intent, OrderUpdate
from strategies.base import NO_INTENTS, Strategy
from strategies.common import Mids, qty_for, sign_of
from strategies.config import PortfolioConfig
from strategies.limit import LimitOrders


class PortfolioStrategy(Strategy):
    kind = "portfolio"

    def __init__(self, cfg: PortfolioConfig) -> None:
        super().__init__(cfg.name, cfg.venue, cfg.symbols, (cfg.model,))
        self.cfg = cfg
        self.mids = Mids()
        self.counts: collections.Counter[str] = collections.Counter()
        self.orders = LimitOrders(cfg.name, cfg.venue, cfg, self.counts)
        self._unreached: set[str] = set()  # symbols whose order ended short of the target
        self._step_ts: int | None = None  # data time of the step being collected
        self._step: dict[str, Signal] = {}
        self._closes: dict[str, collections.deque[float]] = {
            s: collections.deque(maxlen=cfg.vol_window + 1) for s in cfg.symbols
        }
        self._last_open_ms: int | None = None
        self._since = 0  # bars (or steps) since the last rebalance
        self._held: dict[str, Decimal] = {}  # symbol -> last target qty
        self._rebalanced = False
        self.last_weights: dict[str, float] = {}

    # -- inputs ------------------------------------------------------------------------------------------

    def on_book(self, b: BookUpdate) -> Sequence[Intent]:
        self.mids.on_book(b)
        return self.orders.expired(b.ts_recv)

    def on_time(self, ts_ns: int) -> Sequence[Intent]:
        return self.orders.expired(ts_ns)

    def on_order(self, o: OrderUpdate) -> Sequence[Intent]:
        symbol = self.orders.on_order(o)
        if symbol is not None:  # it holds what filled; the next step targets again
            self._held[symbol] = self.position(self.venue, symbol)
            self._unreached.add(symbol)
        return NO_INTENTS

    def on_bar(self, k: KlineClosed) -> Sequence[Intent]:
        if k.venue != self.venue or k.interval_s != self.cfg.bar_interval_s or k.symbol not in self._closes:
            return NO_INTENTS
        closes = self._closes[k.symbol]
        if k.close > 0:
            closes.append(k.close)
        if self._last_open_ms is None or k.open_time_ms > self._last_open_ms:
            self._last_open_ms = k.open_time_ms
            if self.cfg.rebalance_on == "bars":
                self._since += 1
        return NO_INTENTS

    def on_signal(self, s: Signal) -> Sequence[Intent]:
        if s.symbol not in self.symbols:
            return NO_INTENTS
        self.counts["signals"] += 1
        if s.ts_event != self._step_ts:
            if self._step:
                self.counts["incomplete_steps"] += 1
            self._step_ts, self._step = s.ts_event, {}
        self._step[s.symbol] = s
        if len(self._step) < len(self.symbols):
            return NO_INTENTS
        step, self._step, self._step_ts = self._step, {}, None
        if self.cfg.rebalance_on == "signals" and self._rebalanced:
            self._since += 1
        return self._evaluate(step, s.ts_recv)

    # -- decision ----------------------------------------------------------------------------------------

    def target_weights(self, step: dict[str, Signal]) -> dict[str, float] | None:
        """Normalised target weights (gross 1, or all 0), or None when a signal lacks the value needed."""
        raw: dict[str, float] = {}
        vols = {sym: self.volatility(sym) for sym in self.symbols}
        use_vol = all(v is not None and v > 0 for v in vols.values())
        for sym in self.symbols:
            sig = step[sym]
            values = dict(zip(sig.value_names, sig.values, strict=False))
            if self.cfg.weights == "head":
                w = values.get("weight")
            else:
                w = next((v for n, v in values.items() if n.startswith("ret_")), None)
                vol = vols[sym]
                if w is not None and use_vol and vol is not None:
                    w = w / vol
            if w is None or not math.isfinite(w):
                return None
            raw[sym] = w if self.cfg.allow_short else max(w, 0.0)
        gross = sum(abs(w) for w in raw.values())
        return {sym: (w / gross if gross > 0 else 0.0) for sym, w in raw.items()}

    def volatility(self, symbol: str) -> float | None:
        closes = list(self._closes[symbol])
        if len(closes) < 3:
            return None
        rets = [math.log(b / a) for a, b in itertools.pairwise(closes)]
        mean = sum(rets) / len(rets)
        return math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1))

    def _evaluate(self, step: dict[str, Signal], ts_ns: int) -> list[Intent]:
        weights = self.target_weights(step)
        if weights is None:
            self.counts["bad_signal"] += 1
            return []
        self.last_weights = weights
        cfg = self.cfg
        notional: dict[str, Decimal] = {}
        for sym, w in weights.items():
            n = cfg.capital * Decimal(repr(abs(w)))
            if n > cfg.max_position:
                n = cfg.max_position
                self.counts["capped"] += 1
            notional[sym] = n if w >= 0 else -n
        reason = ""
        if not self._rebalanced:
            reason = "first"
        elif self._since >= cfg.rebalance_bars:
            reason = f"{self._since} {cfg.rebalance_on}"
        else:
            for sym in self.symbols:
                held = self.held_weight(sym)
                target = float(notional[sym] / cfg.capital)
                if held is not None and abs(target - held) > cfg.drift_band:
                    reason = f"drift {sym} {held:.3f} -> {target:.3f}"
                    break
        if not reason and self._unreached:
            reason = f"unfilled {','.join(sorted(self._unreached))}"
        if not reason:
            return []
        out: list[Intent] = []
        for sym in self.symbols:
            mid = self.mids.mid(self.venue, sym)
            if mid is None:
                self.counts["no_mid"] += 1
                continue
            qty = qty_for(abs(notional[sym]), mid, sign_of(float(notional[sym])))
            self._held[sym] = qty
            self._unreached.discard(sym)
            out.append(self.orders.target(
                symbol=sym, qty=qty, position=self.position(self.venue, sym), top=self.mids.top(self.venue, sym),
                ts_ns=ts_ns, signal_ts=step[sym].ts_event, reason=f"rebalance ({reason}): w {weights[sym]:.3f}",
            ))
        if out:
            self._rebalanced = True
            self._since = 0
            self.counts["rebalances"] += 1
        return out

    def held_weight(self, symbol: str) -> float | None:
        """The weight the last target holds at the current mid (None: no mid)."""
        mid = self.mids.mid(self.venue, symbol)
        if mid is None:
            return None
        return float(self._held.get(symbol, Decimal(0))) * mid / float(self.cfg.capital)

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "weights": dict(self.last_weights), **self.counts}
