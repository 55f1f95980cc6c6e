"""How a strategy's targets go to the venue: at market (the default) or as resting limit (maker) orders,
and the timeout of the strategy's own resting orders. Every kind uses it (``order_type``,
``limit_offset_bps``, ``post_only``, ``limit_timeout_s``, ``exit_market`` in ``strategies.config``).

Price. A buy rests at the best bid the strategy saw last x (1 - ``limit_offset_bps`` / 1e4), a sell at the
best ask x (1 + offset): a Decimal from the float book price (``Decimal(repr(px))``), not rounded here; the
risk gate rounds it to the tick (down for a buy, up for a sell), which only moves it further from the
touch. The side is the sign of target - the strategy's position: whenever the engine places an order for a
target, that is the side it places (``bot.engine``: opposite open orders are cancelled first). Post-only
orders go as ``TimeInForce.POST_ONLY`` (a venue refuses one that would cross rather than let it take),
others as GTC. A time exit goes at market while ``exit_market`` is on, so a position is never stuck behind
a price that ran away; without a book seen yet (a position restored before the first book) an order goes
at market too (counted ``limit_without_book``): there is no price to rest at.

Timeout. The strategy learns its order ids from ``on_order`` (its own orders only) and keeps the open
ones. A limit order still open ``limit_timeout_s`` after its first update (the decision time, event
clock) gets a ``CancelIntent`` from ``expired`` (each book and timer tick), and another after each further
timeout while it stays open (a cancel that got lost). An order that ends short of its target, rejected
(a post-only that would have crossed), expired, or cancelled by *our* timeout, while no other order of the
strategy is open on the symbol, is handed back to the strategy as *unreached*: it then aims again at its
next decision instead of believing its last target stands. A cancel the strategy did not ask for (the
engine replacing an order by a newer target's, the operator's stop) is not a miss: a newer target stands.

With ``order_type = "market"`` nothing here changes what a strategy did before: targets are market orders
and no order is tracked.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from bot.events import Venue
from bot.orders import CancelIntent, OrderStatus, OrderType, OrderUpdate, TargetPosition, TimeInForce

NS_PER_S = 1_000_000_000
BPS = Decimal(10_000)
NO_CANCELS: tuple[CancelIntent, ...] = ()


class OrderStyle(Protocol):
    """The common strategy config fields this reads (every ``strategies.config`` kind has them)."""

    @property
    def order_type(self) -> str: ...
    @property
    def limit_offset_bps(self) -> float: ...
    @property
    def post_only(self) -> bool: ...
    @property
    def limit_timeout_s(self) -> float | None: ...
    @property
    def exit_market(self) -> bool: ...


@dataclass(frozen=True)
class MarketOrders:
    """The style of a strategy built without a config: market orders, as the config's defaults."""

    order_type: str = "market"
    limit_offset_bps: float = 0.0
    post_only: bool = True
    limit_timeout_s: float | None = 30.0
    exit_market: bool = True


@dataclass
class _Open:
    symbol: str
    since_ns: int  # first update seen: the decision time
    limit: bool
    cancel_ns: int | None = None  # when our timeout asked to cancel it


class LimitOrders:
    """One strategy's order style and its open orders (see the module docstring)."""

    def __init__(self, strategy: str, venue: Venue, style: OrderStyle,
                 counts: collections.Counter[str] | None = None) -> None:
        self.strategy = strategy
        self.venue = venue
        self.limit = style.order_type == "limit"
        self.post_only = style.post_only
        self.exit_market = style.exit_market
        self.offset = Decimal(repr(style.limit_offset_bps)) / BPS
        self.timeout_ns = None if style.limit_timeout_s is None else int(style.limit_timeout_s * NS_PER_S)
        self.counts: collections.Counter[str] = collections.Counter() if counts is None else counts
        self._open: dict[str, _Open] = {}  # client order id -> what we know of it, open orders only

    # -- targets ----------------------------------------------------------------------------------------

    def target(self, *, symbol: str, qty: Decimal, position: Decimal, top: tuple[float, float] | None,
               ts_ns: int, signal_ts: int | None, reason: str, time_exit: bool = False) -> TargetPosition:
        """``TargetPosition`` for ``qty``, at market or as a limit order at the offset from ``top``
        (best bid, best ask) on the side ``qty - position`` points to."""
        order_type, price, tif = OrderType.MARKET, None, TimeInForce.GTC
        side = (qty > position) - (qty < position)
        if self.limit and side != 0 and not (time_exit and self.exit_market):
            if top is None:
                self.counts["limit_without_book"] += 1
            else:
                price = Decimal(repr(top[0] if side > 0 else top[1]))
                if self.offset:
                    price *= 1 - self.offset if side > 0 else 1 + self.offset
                order_type = OrderType.LIMIT
                tif = TimeInForce.POST_ONLY if self.post_only else TimeInForce.GTC
                self.counts["limit_targets"] += 1
        return TargetPosition(ts_event=ts_ns, ts_recv=ts_ns, strategy=self.strategy, venue=self.venue, symbol=symbol,
                              qty=qty, signal_ts=signal_ts, reason=reason, order_type=order_type, price=price,
                              tif=tif)

    # -- own orders -------------------------------------------------------------------------------------

    def on_order(self, o: OrderUpdate) -> str | None:
        """Track ``o``; the symbol when it ended short of its target with nothing else open there, else None."""
        if not self.limit or o.strategy != self.strategy:
            return None
        cid = o.client_order_id
        if o.status.is_open:
            if cid not in self._open:
                self._open[cid] = _Open(o.symbol, o.ts_event, o.order_type is OrderType.LIMIT)
            return None
        known = self._open.pop(cid, None)
        if o.status is OrderStatus.FILLED:
            return None
        if o.status is OrderStatus.CANCELLED and (known is None or known.cancel_ns is None):
            return None  # not our timeout's cancel: a newer target replaced it, or the operator stopped
        self.counts[f"unfilled_{o.status.value}"] += 1
        if any(x.symbol == o.symbol for x in self._open.values()):
            return None
        return o.symbol

    def expired(self, ts_ns: int) -> Sequence[CancelIntent]:
        """Cancels for the open limit orders that have been open ``limit_timeout_s`` by ``ts_ns``."""
        timeout = self.timeout_ns
        if timeout is None or not self._open:
            return NO_CANCELS
        out: list[CancelIntent] = []
        for cid, o in self._open.items():
            if not o.limit or ts_ns - (o.since_ns if o.cancel_ns is None else o.cancel_ns) < timeout:
                continue
            self.counts["timeout_cancels" if o.cancel_ns is None else "timeout_cancels_repeated"] += 1
            o.cancel_ns = ts_ns
            out.append(CancelIntent(
                ts_event=ts_ns, ts_recv=ts_ns, strategy=self.strategy, client_order_id=cid,
                reason=f"limit order open {(ts_ns - o.since_ns) / NS_PER_S:g}s >= {timeout / NS_PER_S:g}s",
            ))
        return out

    def open_ids(self) -> list[str]:
        return list(self._open)


__all__ = ["LimitOrders", "MarketOrders", "OrderStyle"]
