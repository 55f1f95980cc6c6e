"""Paper execution: orders filled the way the real book would have filled them.

Synchronous, clock-driven, no I/O (the ``bot.execution.base.Execution`` protocol): ``run --paper`` drives
it from the live feed, the replay engine from a recording, with the same calls. The event clock is the
events' ``ts_recv`` and ``on_time``'s argument; nothing here reads a wall clock.

**Latency.** A request decided at ``ts_decision`` arrives at the book at ``ts_decision + latency_ms`` (per
venue, ``PaperVenueConfig``); a cancel asked at ``t`` takes effect at ``t + cancel_latency_ms``. A decision
therefore never trades on the book it was made from. Due arrivals and cancels happen, in due-time order,
at the first ``on_time`` / ``on_book`` / ``on_trade`` call whose time is ``>= due``, against the book *as it
is then*: conservative by at most one book update (``stats["arrival_lag_ns_max"]`` says by how much time).

**Taking.** Market and IOC orders (and the crossing part of a GTC limit) walk the visible levels
(``books(venue, symbol).top(depth)``) best first, one ``Fill`` per level, up to the limit price if any;
what the visible levels cannot fill expires (``EXPIRED``, with the reason). Our own taker fills are
remembered per price level and deducted from that level's displayed size until a later book update shows
the level at another size (the venue then tells us the new truth), so one displayed lot is never taken
twice.

**Resting.** A GTC / post-only limit rests at its price with a queue ahead of it = the displayed size at
that price on arrival (0 for a new level). The queue shrinks by trades at our price (a sell-taker trade at
our bid advances a resting buy, and vice versa) and by the level's size going down
(``ahead = min(ahead, displayed now)``); trade volume beyond the queue fills us (partly, if the trade is
smaller than what we have left) as maker at our price. A trade strictly better than our price, or the
opposite best reaching our price, fills the rest at once. Several of our orders at one price share one
trade's volume (what filled one is not there for the next), but not the queue ahead (each keeps its own).
A post-only order that would cross on arrival is ``REJECTED`` (``post_only_would_cross``). A resting
price deeper than the levels we look at (``depth``) has an unknown queue: it gets one when the level comes
into view, and until then only a trade-through fills it.

**Refusals.** No book, a book that is not LIVE (``live(venue, symbol)``), or an empty side on arrival:
``REJECTED`` with the reason. Fees (maker / taker, fraction of notional, ``PaperVenueConfig``) are charged
in the quote asset in each ``Fill``. Prices and sizes from the book are floats and become ``Decimal`` by
their shortest repr (``Decimal(repr(px))``), never by their binary expansion.

Every fill is followed by an ``OrderUpdate`` (NEW -> ACCEPTED -> PARTIALLY_FILLED -> FILLED / CANCELLED /
EXPIRED / REJECTED) with ``filled_qty`` and the volume-weighted ``avg_price``; fill ids are
``f"{client_order_id}-{n}"``. Events carry the event-clock time at which they happened (both timestamps).
A cancel that arrives before its order cancels it in flight (``cancelled_before_arrival``).

Not modelled: ``reduce_only`` (the risk gate enforces it; paper knows no positions), our own orders
matching each other, and any effect of our fills on what other traders do.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from bot.config import PaperConfig, PaperVenueConfig
from bot.errors import InvariantViolation
from bot.events import BookUpdate, Event, Side, Trade, Venue
from bot.ledger import quote_asset, to_decimal
from bot.orders import ZERO, Fill, Liquidity, OrderRequest, OrderStatus, OrderType, OrderUpdate, TimeInForce

Level = tuple[float, float]
Key = tuple[Venue, str]

_ARRIVE = 0
_CANCEL = 1


class BookView(Protocol):
    """What the matcher reads of a book (``bot.book.OrderBook`` has it): the best ``n`` levels a side."""

    def top(self, n: int) -> tuple[Sequence[Level], Sequence[Level]]: ...


@dataclass
class _Order:
    req: OrderRequest
    due: int  # arrival at the book (event clock)
    status: OrderStatus = OrderStatus.NEW
    filled: Decimal = ZERO
    notional: Decimal = ZERO
    fills: int = 0
    reason: str = ""
    resting: bool = False
    ahead: Decimal | None = None  # displayed size ahead of us; None: our price is deeper than we look
    cancel_pending: bool = False
    fill_prefix: str = ""  # fill ids are f"{fill_prefix}-{n}"
    px: float = 0.0  # the limit price as the book's float (the same double the book holds for that price)
    buy: bool = field(init=False)  # read per order per market event: a plain attribute, not a property

    def __post_init__(self) -> None:
        self.buy = self.req.side is Side.BUY

    @property
    def left(self) -> Decimal:
        return self.req.qty - self.filled


@dataclass
class _Taken:
    """Our taker fills at one price level, since the level last showed ``shown``."""

    shown: float
    qty: Decimal = ZERO


@dataclass
class _BookState:
    resting: list[_Order] = field(default_factory=list)  # in arrival order
    taken: dict[tuple[bool, float], _Taken] = field(default_factory=dict)  # (ask side?, price)


class _Side:
    """One side of the book as we see it (its best ``depth`` levels), for lookups by price.

    Prices are compared as floats: a book price and an order price written with the same decimal digits
    are the same double (both are the nearest double to that decimal), so this is exact and spares a
    ``Decimal`` per level per update; only sizes we use become ``Decimal``."""

    __slots__ = ("bid", "complete", "levels", "sizes")

    def __init__(self, levels: Sequence[Level], bid: bool, depth: int) -> None:
        self.levels = levels
        self.bid = bid
        self.complete = len(levels) < depth  # fewer levels than asked: that is the whole side
        self.sizes: dict[float, float] | None = None

    def shown(self, px: float) -> float | None:
        """The displayed size at ``px``: 0 if ``px`` lies within what we see but has no level, None if it
        lies beyond the levels we look at (unknown)."""
        if self.sizes is None:
            self.sizes = dict(self.levels)
        size = self.sizes.get(px)
        if size is not None:
            return size
        if self.complete or (px > self.levels[-1][0] if self.bid else px < self.levels[-1][0]):
            return 0.0
        return None

    def best_available(self, st: _BookState) -> float | None:
        """The best price with displayed size we have not taken ourselves (None: none in view)."""
        ask = not self.bid
        for px, sz in self.levels:
            taken = st.taken.get((ask, px))
            if taken is None or taken.shown != sz or taken.qty < to_decimal(sz):
                return px
        return None


class PaperExecution:
    """The paper venue for every configured venue account (see the module docstring)."""

    def __init__(
        self,
        cfg: PaperConfig,
        books: Callable[[Venue, str], BookView | None],
        publish: Callable[[Event], None],
        live: Callable[[Venue, str], bool] = lambda v, s: True,
        depth: int = 50,
    ) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self._cfg = cfg
        self._books = books
        self._publish = publish
        self._live = live
        self._depth = depth
        self._orders: dict[str, _Order] = {}  # open orders only
        self._queue: list[tuple[int, int, int, str]] = []  # (due, seq, kind, client_order_id)
        self._seq = 0
        self._state: dict[Key, _BookState] = {}
        self._now = 0
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "submitted",
                "accepted",
                "rejected",
                "filled",
                "cancelled",
                "expired",
                "fills",
                "maker_fills",
                "taker_fills",
                "cancel_requests",
                "cancels_too_late",
                "arrival_lag_ns_max",
            ),
            0,
        )

    # -- the Execution protocol -----------------------------------------------------------------------------

    def submit(self, request: OrderRequest) -> None:
        """Publish ``OrderUpdate(NEW)`` now; the order reaches the book at ``ts_decision + latency``."""
        cid = request.client_order_id
        self.stats["submitted"] += 1
        order = _Order(request, request.ts_decision + _ns(self._venue_cfg(request.venue).latency_ms))
        if cid in self._orders:  # the engine makes the ids: a repeat is a bug, and would clobber the order
            raise InvariantViolation(f"paper: client order id {cid!r} is already open")
        self._emit(order, request.ts_decision)
        if request.qty <= 0 or (request.order_type is OrderType.LIMIT and (request.price or ZERO) <= 0):
            self._close(order, OrderStatus.REJECTED, "invalid_qty_or_price", request.ts_decision)
            return
        self._orders[cid] = order
        self._push(order.due, _ARRIVE, cid)

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        """Effective at ``ts_ns + cancel_latency``; an order that fills before then stays filled."""
        order = self._orders.get(client_order_id)
        if order is None or order.cancel_pending:
            return
        self.stats["cancel_requests"] += 1
        order.cancel_pending = True
        self._push(ts_ns + _ns(self._venue_cfg(order.req.venue).cancel_latency_ms), _CANCEL, client_order_id)

    def on_time(self, ts_ns: int) -> None:
        """Arrivals and cancels due by ``ts_ns`` happen now, in due order, against the books as they are."""
        if ts_ns > self._now:
            self._now = ts_ns
        q = self._queue
        while q and q[0][0] <= ts_ns:
            due, _, kind, cid = heapq.heappop(q)
            order = self._orders.get(cid)
            if order is None:  # closed meanwhile
                continue
            if kind == _CANCEL:
                if order.status is OrderStatus.NEW:
                    self._close(order, OrderStatus.CANCELLED, "cancelled_before_arrival", self._now)
                else:
                    self._close(order, OrderStatus.CANCELLED, "cancelled", self._now)
            elif order.status is OrderStatus.NEW:
                self.stats["arrival_lag_ns_max"] = max(self.stats["arrival_lag_ns_max"], self._now - due)
                self._arrive(order)

    def open_orders(self) -> list[OrderUpdate]:
        return [self._update(o, self._now) for o in self._orders.values()]

    # -- market data ----------------------------------------------------------------------------------------

    def quiet(self, venue: Venue, symbol: str) -> bool:
        """Whether the book's market events would only move the clock on: nothing in flight (no arrival or
        cancel queued, for any book) and nothing resting or taken on this book. Then ``on_book`` and
        ``on_trade`` of it do what ``on_time`` does (the engine batches such books' updates)."""
        if self._queue:
            return False
        st = self._state.get((venue, symbol))
        return st is None or not (st.resting or st.taken)

    def on_book(self, ev: BookUpdate) -> None:
        """Due arrivals first, then the resting orders of this book: trade-through by the opposite best,
        the queue ahead shrinking with the level, and the taken-liquidity memory refreshed."""
        self.on_time(ev.ts_recv)
        key = (ev.venue, ev.symbol)
        st = self._state.get(key)
        if st is None or not (st.resting or st.taken) or not self._live(*key):
            return
        book = self._books(*key)
        if book is None:
            return
        top_bids, top_asks = book.top(self._depth)
        bids, asks = _Side(top_bids, True, self._depth), _Side(top_asks, False, self._depth)
        if st.taken:
            self._refresh_taken(st, bids, asks)
        if not st.resting:
            return
        best_bid = bids.best_available(st)
        best_ask = asks.best_available(st)
        for order in list(st.resting):
            if order.buy and best_ask is not None and best_ask <= order.px:
                self._maker_fill(order, order.left, self._now)
                continue
            if not order.buy and best_bid is not None and best_bid >= order.px:
                self._maker_fill(order, order.left, self._now)
                continue
            shown = (bids if order.buy else asks).shown(order.px)
            if shown is not None:
                size = to_decimal(shown)
                if order.ahead is None or size < order.ahead:
                    order.ahead = size

    def on_trade(self, ev: Trade) -> None:
        """Due arrivals first, then a trade at our price advances our queue (and fills us past it); a trade
        strictly better than our price fills us fully."""
        self.on_time(ev.ts_recv)
        st = self._state.get((ev.venue, ev.symbol))
        if st is None or not st.resting:
            return
        px = ev.price
        size = to_decimal(ev.size)
        volume = size  # what of this trade is left for our orders at its price
        for order in list(st.resting):
            if (order.buy and px < order.px) or (not order.buy and px > order.px):
                self._maker_fill(order, order.left, self._now)
                continue
            if px != order.px or (ev.taker_side is Side.SELL) != order.buy:
                continue  # elsewhere, or a trade on the other side of our price
            if order.ahead is None:  # our place is unknown: count nothing, fill nothing
                continue
            beyond = size - order.ahead
            order.ahead = max(ZERO, order.ahead - size)
            qty = min(order.left, beyond, volume)
            if qty > 0:
                volume -= qty
                self._maker_fill(order, qty, self._now)

    # -- restart --------------------------------------------------------------------------------------------

    def restore(self, orders: Sequence[OrderUpdate], ts_ns: int) -> None:
        """Take back the open orders of a previous run (the state database's last ``OrderUpdate`` of each),
        publishing nothing. Resting ones rest again at the back of their level: their queue is unknown
        until the next book update shows the level. Ones never arrived (NEW) arrive at ``ts_ns``."""
        self._now = max(self._now, ts_ns)
        for u in orders:
            if not u.status.is_open or u.client_order_id in self._orders:
                continue
            req = OrderRequest(
                client_order_id=u.client_order_id,
                strategy=u.strategy,
                venue=u.venue,
                symbol=u.symbol,
                side=u.side,
                qty=u.qty,
                order_type=u.order_type,
                price=u.price,
                tif=u.tif,
                reduce_only=u.reduce_only,
                ts_decision=ts_ns,
            )
            order = _Order(req, ts_ns, status=u.status, filled=u.filled_qty)
            order.notional = u.filled_qty * (u.avg_price or ZERO)
            order.fill_prefix = f"{u.client_order_id}-r{ts_ns}"  # ids of fills before the restart stay unique
            self._orders[u.client_order_id] = order
            if u.status is OrderStatus.NEW:
                self._push(ts_ns, _ARRIVE, u.client_order_id)
            elif u.order_type is OrderType.LIMIT and u.price is not None:
                order.px = float(u.price)
                order.resting = True
                self._book_state(u.venue, u.symbol).resting.append(order)
            else:  # a market/IOC order cannot be open after its arrival; close it honestly
                self._close(order, OrderStatus.EXPIRED, "restart", ts_ns)

    # -- arrival --------------------------------------------------------------------------------------------

    def _arrive(self, order: _Order) -> None:
        req, now = order.req, self._now
        if not self._live(req.venue, req.symbol):
            self._close(order, OrderStatus.REJECTED, "book_not_live", now)
            return
        book = self._books(req.venue, req.symbol)
        if book is None:
            self._close(order, OrderStatus.REJECTED, "no_book", now)
            return
        top_bids, top_asks = book.top(self._depth)
        if not top_bids or not top_asks:
            self._close(order, OrderStatus.REJECTED, "empty_book_side", now)
            return
        bids, asks = _Side(top_bids, True, self._depth), _Side(top_asks, False, self._depth)
        opposite = asks if order.buy else bids
        limit = req.price if req.order_type is OrderType.LIMIT else None
        if limit is not None:
            order.px = float(limit)
        best = opposite.best_available(self._book_state(req.venue, req.symbol))
        # best None: all we see there we took already (a market order then expires unfilled)
        crosses = limit is None or (best is not None and (best <= order.px if order.buy else best >= order.px))
        if req.tif is TimeInForce.POST_ONLY and crosses:
            self._close(order, OrderStatus.REJECTED, "post_only_would_cross", now)
            return
        order.status = OrderStatus.ACCEPTED
        self.stats["accepted"] += 1
        self._emit(order, now)
        if crosses:
            self._take(order, opposite.levels, limit)
            if not order.status.is_open:
                return
        if limit is None or req.tif is TimeInForce.IOC:
            reason = "no_more_liquidity" if limit is None else "ioc_remainder"
            self._close(order, OrderStatus.EXPIRED, reason, now)
            return
        order.resting = True
        shown = (bids if order.buy else asks).shown(order.px)
        order.ahead = None if shown is None else to_decimal(shown)
        self._book_state(req.venue, req.symbol).resting.append(order)

    def _take(self, order: _Order, levels: Sequence[Level], limit: Decimal | None) -> None:
        """Walk ``levels`` best first (up to ``limit``), net of what we took there before."""
        st = self._book_state(order.req.venue, order.req.symbol)
        ask_side = order.buy
        for px_f, sz_f in levels:
            if order.left <= 0:
                break
            if limit is not None and (px_f > order.px if order.buy else px_f < order.px):
                break
            taken = st.taken.get((ask_side, px_f))
            if taken is None or taken.shown != sz_f:
                taken = st.taken[(ask_side, px_f)] = _Taken(sz_f)
            qty = min(order.left, to_decimal(sz_f) - taken.qty)
            if qty <= 0:
                continue
            taken.qty += qty
            self._fill(order, qty, to_decimal(px_f), Liquidity.TAKER, self._now)

    @staticmethod
    def _refresh_taken(st: _BookState, bids: _Side, asks: _Side) -> None:
        """Forget what we took at a level once the book shows that level at another size (or not at all)."""
        for (ask_side, px), taken in list(st.taken.items()):
            if (asks if ask_side else bids).shown(px) != taken.shown:
                del st.taken[(ask_side, px)]

    # -- fills and updates ----------------------------------------------------------------------------------

    def _maker_fill(self, order: _Order, qty: Decimal, ts: int) -> None:
        price = order.req.price
        assert price is not None
        self._fill(order, qty, price, Liquidity.MAKER, ts)

    def _fill(self, order: _Order, qty: Decimal, price: Decimal, liquidity: Liquidity, ts: int) -> None:
        req = order.req
        vcfg = self._venue_cfg(req.venue)
        rate = vcfg.maker_fee if liquidity is Liquidity.MAKER else vcfg.taker_fee
        order.fills += 1
        order.filled += qty
        order.notional += qty * price
        self.stats["fills"] += 1
        self.stats["maker_fills" if liquidity is Liquidity.MAKER else "taker_fills"] += 1
        self._publish(
            Fill(
                ts_event=ts,
                ts_recv=ts,
                client_order_id=req.client_order_id,
                strategy=req.strategy,
                venue=req.venue,
                symbol=req.symbol,
                side=req.side,
                qty=qty,
                price=price,
                fee=qty * price * rate,
                fee_asset=quote_asset(req.symbol),
                liquidity=liquidity,
                trade_id=f"{order.fill_prefix or req.client_order_id}-{order.fills}",
            )
        )
        if order.left <= 0:
            self._close(order, OrderStatus.FILLED, "", ts)
        else:
            order.status = OrderStatus.PARTIALLY_FILLED
            self._emit(order, ts)

    def _close(self, order: _Order, status: OrderStatus, reason: str, ts: int) -> None:
        order.status = status
        order.reason = reason
        self.stats[status.value] += 1
        if order.cancel_pending and status is not OrderStatus.CANCELLED:
            self.stats["cancels_too_late"] += 1  # it filled (or expired) while the cancel was on its way
        cid = order.req.client_order_id
        if self._orders.get(cid) is order:
            del self._orders[cid]
        if order.resting:
            order.resting = False
            self._book_state(order.req.venue, order.req.symbol).resting.remove(order)
        self._emit(order, ts)

    def _emit(self, order: _Order, ts: int) -> None:
        self._publish(self._update(order, ts))

    @staticmethod
    def _update(order: _Order, ts: int) -> OrderUpdate:
        return order.req.update(
            order.status, ts, filled_qty=order.filled, reason=order.reason,
            avg_price=order.notional / order.filled if order.filled else None,
        )  # fmt: skip

    # -- helpers --------------------------------------------------------------------------------------------

    def _venue_cfg(self, venue: Venue) -> PaperVenueConfig:
        return self._cfg.venues.get(venue) or PaperVenueConfig()

    def _book_state(self, venue: Venue, symbol: str) -> _BookState:
        st = self._state.get((venue, symbol))
        if st is None:
            st = self._state[(venue, symbol)] = _BookState()
        return st

    def _push(self, due: int, kind: int, cid: str) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (due, self._seq, kind, cid))


def _ns(ms: float) -> int:
    return round(ms * 1_000_000)
