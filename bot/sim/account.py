"""The loopback exchange's one trading account: balances, positions and orders per venue.

Orders are matched by the bot's own paper matcher (``bot.execution.paper.PaperExecution``) against the
sim's truth books (``bot.sim.replay.VenueReplay``), with zero latency: a new order arrives at the book
when it is placed, and resting orders are checked each time the private side is asked (``sync``) and
whenever the replay publishes. Fees: 0.1 % spot, 0.02 % / 0.05 % USD-M and Bybit linear (maker / taker).

Spot balances move by fills (base and quote, fee in the quote); perpetuals keep a signed position per
symbol with an average entry, and cash moves by realised PnL and fees (each fill's realised PnL is kept
in ``trade_pnl`` by venue trade id, the running sum in ``Position.realized``).

Every change of an order reaches ``SimAccount.listeners`` (the private streams) once its state is
current: ``listener(order, fill, trade_id)``, with the fill and its venue trade id when the change was
a fill, else ``None, None``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from types import SimpleNamespace
from typing import Any

import msgspec

from bot.events import BookUpdate, Event, Side, Venue
from bot.execution.paper import PaperExecution
from bot.orders import ZERO, Fill, OrderRequest, OrderStatus, OrderType, OrderUpdate, TimeInForce
from bot.sim.replay import VenueReplay

QUOTES = ("USDT", "USDC", "FDUSD", "BTC", "ETH")
FEE_STEP = Decimal("1e-8")  # commissions are stated to 8 decimals
FEES: dict[Venue, tuple[Decimal, Decimal]] = {
    Venue.BINANCE_SPOT: (Decimal("0.001"), Decimal("0.001")),
    Venue.BYBIT_SPOT: (Decimal("0.001"), Decimal("0.001")),
    Venue.BINANCE_USDM: (Decimal("0.0002"), Decimal("0.0005")),
    Venue.BYBIT_LINEAR: (Decimal("0.0002"), Decimal("0.00055")),
}


def split_symbol(symbol: str) -> tuple[str, str]:
    for q in QUOTES:
        if symbol.endswith(q) and len(symbol) > len(q):
            return symbol[: -len(q)], q
    return symbol[:-4], symbol[-4:]


class _FloatBook:
    """A truth book as the paper matcher reads it: float levels, best first."""

    def __init__(self, replay: VenueReplay, symbol: str) -> None:
        self.replay, self.symbol = replay, symbol

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        ref = self.replay.reference(self.symbol, n)
        return ([], []) if ref is None else (ref.bids, ref.asks)


@dataclass
class SimOrder:
    order_id: int
    client_id: str
    venue: Venue
    symbol: str
    side: Side
    order_type: OrderType
    tif: TimeInForce
    qty: Decimal
    price: Decimal | None
    time_ms: int
    status: OrderStatus = OrderStatus.NEW
    filled: Decimal = ZERO
    avg_price: Decimal | None = None
    update_ms: int = 0
    fills: list[Fill] = field(default_factory=list)
    trade_ids: list[int] = field(default_factory=list)  # the venue's trade id of each fill, in order

    @property
    def cum_quote(self) -> Decimal:
        return sum((f.qty * f.price for f in self.fills), ZERO)


@dataclass
class Position:
    qty: Decimal = ZERO  # signed
    entry: Decimal = ZERO
    realized: Decimal = ZERO  # accumulated realised PnL before fees (the venue's "cr")


Listener = Callable[[SimOrder, Fill | None, int | None], None]


class SimAccount:
    """Balances, positions and orders of the sim's one account, on every venue."""

    def __init__(self, replays: dict[Venue, VenueReplay], balances: dict[Venue, dict[str, Decimal]]) -> None:
        self.replays = replays
        self.balances: dict[Venue, dict[str, Decimal]] = {
            v: {a: Decimal(q) for a, q in balances.get(v, {"USDT": Decimal(10_000)}).items()} for v in Venue
        }
        self.positions: dict[tuple[Venue, str], Position] = {}
        self.orders: dict[int, SimOrder] = {}
        self.by_client: dict[tuple[Venue, str], int] = {}
        self._ids = itertools.count(1_000_001)
        venues = {v: SimpleNamespace(latency_ms=0.0, cancel_latency_ms=0.0, maker_fee=m, taker_fee=t)
                  for v, (m, t) in FEES.items()}  # fmt: skip
        cfg: Any = SimpleNamespace(venues=venues)  # duck-typed PaperConfig: the sim reads no bot config
        self.matcher = PaperExecution(cfg, self._book, self._on_event)
        self._t = 0
        self._trade_ids = itertools.count(5_000_001)
        self._pending: dict[int, tuple[Fill, int]] = {}  # the fill whose order update comes next
        self.trade_pnl: dict[int, Decimal] = {}  # venue trade id -> realised PnL of that fill (perpetuals)
        self.listeners: list[Listener] = []

    def _book(self, venue: Venue, symbol: str) -> _FloatBook | None:
        rp = self.replays.get(venue)
        return None if rp is None or symbol not in rp.tl.symbols else _FloatBook(rp, symbol)

    def _tick(self) -> int:
        self._t += 1
        return self._t

    # -- orders --------------------------------------------------------------------------------------------
    def new_client_id(self) -> str:
        return f"sim{next(self._ids)}"

    def place(
        self, venue: Venue, symbol: str, side: Side, order_type: OrderType, tif: TimeInForce, qty: Decimal,
        price: Decimal | None, client_id: str, now_ms: int,
    ) -> SimOrder:  # fmt: skip
        oid = next(self._ids)
        order = SimOrder(oid, client_id, venue, symbol, side, order_type, tif, qty, price, now_ms, update_ms=now_ms)
        self.orders[oid] = order
        self.by_client[(venue, client_id)] = oid
        req = OrderRequest(client_order_id=f"{venue.value}|{oid}", strategy="sim", venue=venue, symbol=symbol,
                           side=side, qty=qty, order_type=order_type, price=price, tif=tif, reduce_only=False,
                           ts_decision=self._tick())  # fmt: skip
        self.matcher.submit(req)
        self.matcher.on_time(self._tick())
        return order

    def cancel(self, order: SimOrder) -> None:
        self.matcher.cancel(f"{order.venue.value}|{order.order_id}", self._tick())
        self.matcher.on_time(self._tick())

    def find(self, venue: Venue, order_id: int | None, client_id: str | None) -> SimOrder | None:
        if order_id is None and client_id:
            order_id = self.by_client.get((venue, client_id))
        o = self.orders.get(order_id) if order_id is not None else None
        return o if o is not None and o.venue is venue else None

    def open_orders(self, venue: Venue, symbol: str | None = None) -> list[SimOrder]:
        return [o for o in self.orders.values()
                if o.venue is venue and o.status.is_open and (symbol is None or o.symbol == symbol)]  # fmt: skip

    def sync(self, venue: Venue, symbol: str) -> None:
        """Resting orders of ``symbol`` against the book as it is now (a trade-through fills them)."""
        if any(o.symbol == symbol for o in self.open_orders(venue)):
            t = self._tick()
            self.matcher.on_book(BookUpdate(ts_event=t, ts_recv=t, venue=venue, symbol=symbol, update_id=0,
                                            bid_px=0.0, bid_sz=0.0, ask_px=0.0, ask_sz=0.0))  # fmt: skip

    # -- money ---------------------------------------------------------------------------------------------
    def can_afford(self, venue: Venue, symbol: str, side: Side, qty: Decimal, price: Decimal) -> bool:
        bal = self.balances[venue]
        base, quote = split_symbol(symbol)
        if venue.market == "spot":
            if side is Side.BUY:
                return bal.get(quote, ZERO) >= qty * price * (1 + FEES[venue][1]) + self._locked(venue, quote)
            return bal.get(base, ZERO) >= qty + self._locked(venue, base)
        pos = self.positions.get((venue, symbol), Position())
        grows = (side is Side.BUY) == (pos.qty >= 0) or pos.qty == 0
        return not grows or bal.get(quote, ZERO) >= qty * price * FEES[venue][1]

    def _locked(self, venue: Venue, asset: str) -> Decimal:
        total = ZERO
        for o in self.open_orders(venue):
            base, quote = split_symbol(o.symbol)
            left = o.qty - o.filled
            if o.side is Side.BUY and quote == asset and o.price is not None:
                total += left * o.price
            elif o.side is Side.SELL and base == asset:
                total += left
        return total

    def free_locked(self, venue: Venue, asset: str) -> tuple[Decimal, Decimal]:
        if venue.market != "spot":
            return self.balances[venue].get(asset, ZERO), ZERO
        locked = self._locked(venue, asset)
        return self.balances[venue].get(asset, ZERO) - locked, locked

    def _on_event(self, ev: Event) -> None:
        # The matcher publishes a fill, then the order's new state: listeners hear both as one change.
        if isinstance(ev, OrderUpdate):
            oid = int(ev.client_order_id.split("|")[1])
            o = self.orders.get(oid)
            if o is not None:
                o.status, o.filled, o.avg_price = ev.status, ev.filled_qty, ev.avg_price
                fill, tid = self._pending.pop(oid, (None, None))
                for listener in self.listeners:
                    listener(o, fill, tid)
        elif isinstance(ev, Fill):
            # the venue charges, and reports, a commission of 8 decimals (myTrades "commission"): the balance
            # must move by that same amount, not by the matcher's unrounded fee
            ev = msgspec.structs.replace(ev, fee=ev.fee.quantize(FEE_STEP, ROUND_HALF_UP))
            oid = int(ev.client_order_id.split("|")[1])
            o = self.orders.get(oid)
            pnl = self._book_fill(ev)
            if o is not None:
                tid = next(self._trade_ids)
                o.fills.append(ev)
                o.trade_ids.append(tid)
                self.trade_pnl[tid] = pnl
                self._pending[oid] = (ev, tid)

    def _book_fill(self, f: Fill) -> Decimal:
        """Balances and position after ``f``; returns its realised PnL (zero on spot)."""
        bal = self.balances[f.venue]
        base, quote = split_symbol(f.symbol)
        sign = 1 if f.side is Side.BUY else -1
        if f.venue.market == "spot":
            bal[base] = bal.get(base, ZERO) + sign * f.qty
            bal[quote] = bal.get(quote, ZERO) - sign * f.qty * f.price - f.fee
            return ZERO
        pos = self.positions.setdefault((f.venue, f.symbol), Position())
        signed = sign * f.qty
        realized = ZERO
        if pos.qty == 0 or (pos.qty > 0) == (signed > 0):
            total = pos.qty + signed
            pos.entry = (pos.entry * abs(pos.qty) + f.price * f.qty) / abs(total)
            pos.qty = total
        else:
            closed = min(abs(pos.qty), f.qty)
            realized = closed * (f.price - pos.entry) * (1 if pos.qty > 0 else -1)
            pos.qty += signed
            if pos.qty == 0:
                pos.entry = ZERO
            elif (pos.qty > 0) == (signed > 0):  # flipped
                pos.entry = f.price
        pos.realized += realized
        bal[quote] = bal.get(quote, ZERO) + realized - f.fee
        return realized
