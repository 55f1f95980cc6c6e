"""Order-path domain types: what strategies emit, what the risk gate and execution publish.

Pure data (no I/O), like ``bot.events``: the strategies, the risk gate, the paper matcher, the ledger, the
state database and (later) live execution and the loopback exchange's private side all speak these types.

    strategy ──TargetPosition / OrderIntent / CancelIntent──► engine ──► RiskGate.check ──► OrderRequest
        ▲                                                                   │ denied: OrderDenied
        │                                                                   ▼
        └──── OrderUpdate, Fill (its own only) ◄──── Execution (paper: bot.execution.paper; live: ccxt)

Quantities, prices, fees and PnL are ``Decimal`` (they are sent to venues and booked); market data stays
float. A quantity is in the base asset (BTC for BTCUSDT); a signed quantity is + long, - short. Times are
ns in the bot's event clock (``bot.clock``): ``ts_event`` when it happened at the (paper) venue,
``ts_recv`` when we learned it (equal for paper).
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Any

import msgspec

from bot.events import Event, Side, Venue

ZERO = Decimal(0)


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(StrEnum):
    GTC = "gtc"  # rests until filled or cancelled
    IOC = "ioc"  # fills what it can on arrival, the rest is cancelled
    POST_ONLY = "post_only"  # rests; rejected if it would cross on arrival


class OrderStatus(StrEnum):
    NEW = "new"  # decided and sent; not yet at the venue (paper: inside the latency)
    ACCEPTED = "accepted"  # at the venue, resting, nothing filled
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # refused by the venue (paper: post-only would cross, no book, no liquidity)
    EXPIRED = "expired"  # IOC / market remainder not filled

    @property
    def is_open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)


class Liquidity(StrEnum):
    MAKER = "maker"
    TAKER = "taker"


class TradingState(StrEnum):
    """The risk gate's state. ACTIVE: anything the rules allow; REDUCING: only orders that reduce a
    position; HALTED: nothing but cancels."""

    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """A venue's trading rules for one symbol (Binance ``exchangeInfo`` filters, Bybit ``instruments-info``)."""

    venue: Venue
    symbol: str
    base: str
    quote: str
    tick_size: Decimal  # prices are multiples of this
    step_size: Decimal  # quantities are multiples of this
    min_qty: Decimal
    min_notional: Decimal = ZERO  # price x qty must reach this (quote asset)
    max_qty: Decimal | None = None

    @property
    def perpetual(self) -> bool:
        return self.venue.market != "spot"


# -- what strategies emit ---------------------------------------------------------------------------------


class TargetPosition(Event, frozen=True, kw_only=True):
    """"Hold ``qty`` (signed base quantity) of ``symbol`` on ``venue``": the engine turns the difference to
    the current position (net of open orders) into an order. ``signal_ts``: ``ts_event`` (the data time)
    of the signal the decision rests on (None: no signal, e.g. a time exit); the risk gate refuses stale
    ones."""

    strategy: str
    venue: Venue
    symbol: str
    qty: Decimal
    signal_ts: int | None = None
    reason: str = ""
    order_type: OrderType = OrderType.MARKET
    price: Decimal | None = None  # limit orders
    tif: TimeInForce = TimeInForce.GTC


class OrderIntent(Event, frozen=True, kw_only=True):
    """An explicit order a strategy wants placed (before the risk gate)."""

    strategy: str
    venue: Venue
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType = OrderType.MARKET
    price: Decimal | None = None
    tif: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False
    signal_ts: int | None = None
    reason: str = ""


class CancelIntent(Event, frozen=True, kw_only=True):
    strategy: str
    client_order_id: str
    reason: str = ""


Intent = TargetPosition | OrderIntent | CancelIntent


# -- what goes to execution --------------------------------------------------------------------------------


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A risk-checked order, rounded to the instrument's rules, with its client order id."""

    client_order_id: str
    strategy: str
    venue: Venue
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType
    price: Decimal | None
    tif: TimeInForce
    reduce_only: bool
    ts_decision: int  # event-clock time the decision was made; paper arrival = this + latency

    def update(self, status: OrderStatus, ts_ns: int, **changes: Any) -> OrderUpdate:
        """This order as an ``OrderUpdate`` in ``status`` at ``ts_ns`` (``changes``: filled_qty, reason ...)."""
        return OrderUpdate(
            ts_event=ts_ns, ts_recv=ts_ns, client_order_id=self.client_order_id, strategy=self.strategy,
            venue=self.venue, symbol=self.symbol, side=self.side, order_type=self.order_type, tif=self.tif,
            qty=self.qty, price=self.price, status=status, reduce_only=self.reduce_only, **changes,
        )  # fmt: skip


# -- what execution and the risk gate publish ---------------------------------------------------------------


class OrderUpdate(Event, frozen=True, kw_only=True):
    """The whole order after each change of status or fill (the last one seen is the order's state)."""

    client_order_id: str
    strategy: str
    venue: Venue
    symbol: str
    side: Side
    order_type: OrderType
    tif: TimeInForce
    qty: Decimal
    price: Decimal | None
    status: OrderStatus
    filled_qty: Decimal = ZERO
    avg_price: Decimal | None = None
    reduce_only: bool = False
    reason: str = ""  # why it was rejected / cancelled / expired
    venue_order_id: str = ""


class Fill(Event, frozen=True, kw_only=True):
    client_order_id: str
    strategy: str
    venue: Venue
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal  # in ``fee_asset``; positive = paid
    fee_asset: str
    liquidity: Liquidity
    trade_id: str


class OrderDenied(Event, frozen=True, kw_only=True):
    """The risk gate refused an intent. ``reason`` is a stable code (``min_notional``, ``halted``, ...);
    ``detail`` says it for people."""

    strategy: str
    venue: Venue
    symbol: str
    side: Side | None
    qty: Decimal
    reason: str
    detail: str = ""


class RiskStateChanged(Event, frozen=True, kw_only=True):
    previous: TradingState
    state: TradingState
    reason: str  # e.g. "operator", "daily_drawdown", "rejects", "book_resyncing", "clock_skew"
    detail: str = ""


class StrategyHealth(Event, frozen=True, kw_only=True):
    """A strategy stopped (or restarted) by the risk gate, e.g. its model's latency or input age too high."""

    strategy: str
    enabled: bool
    reason: str
    detail: str = ""


class InstrumentInfo(Event, frozen=True, kw_only=True):
    """The collectors fetched a venue's rules for a symbol (at start, and again now and then)."""

    instrument: Instrument


class ClockSkew(Event, frozen=True, kw_only=True):
    """Venue server time minus local time, measured at the middle of a round trip (ms)."""

    venue: Venue
    offset_ms: float
    round_trip_ms: float


class FundingRate(Event, frozen=True, kw_only=True):
    """A perpetual's funding rate for the funding time ``funding_time_ns`` (venue clock)."""

    venue: Venue
    symbol: str
    rate: Decimal
    funding_time_ns: int
    mark_price: Decimal | None = None


class PositionSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    venue: Venue
    symbol: str
    qty: Decimal  # signed, base asset
    avg_price: Decimal  # average entry of the open quantity (0 when flat)
    realized_pnl: Decimal  # quote asset, after fees and funding
    mark: Decimal | None  # last mid (None: never seen)
    unrealized_pnl: Decimal


class EquitySnapshot(Event, frozen=True, kw_only=True):
    """One venue account's books at a time: ``equity == cash + sum(value of each position at mark)``.

    Spot: a position's value is ``qty * mark`` (the base asset held). Perpetual (linear, USDT-margined):
    ``qty * (mark - avg_price)`` (cash moves only by realised PnL, fees and funding)."""

    venue: Venue
    quote: str
    cash: Decimal
    equity: Decimal
    fees: Decimal
    funding: Decimal
    positions: tuple[PositionSnapshot, ...] = ()
