"""The paper matcher on real book sequences: Binance spot BTCUSDT, 2024-08-08 23:54 UTC.

The session fixture (built by ``tests.unit.demo_books``) drives the bot's own Binance adapter
(``bot.export.OfflineFeed``) over the embedded demo recording (``bot/demo/recording``: the hftbacktest file
of ``../shared/data``, unmodified) and keeps, for every ``BookUpdate`` and ``Trade`` of that book, the event
and the book's best 10 levels a side right after it. ``ReplayBook`` then shows the matcher the book as it
was at the event being handed in, so each test replays a stretch of the real session. The levels the
expected figures rest on are asserted first (they are the real book's), and every VWAP and fee is computed
by hand from them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from decimal import Decimal as D

import msgspec
import pytest

from bot.book import OrderBook
from bot.config import BotSettings, PaperConfig, PaperVenueConfig
from bot.errors import InvariantViolation
from bot.events import BookUpdate, Event, Side, Trade, Venue
from bot.execution.base import Execution
from bot.execution.paper import PaperExecution
from bot.export import OfflineFeed
from bot.ledger import Ledger
from bot.orders import Fill, Liquidity, OrderRequest, OrderStatus, OrderType, OrderUpdate, TimeInForce
from bot.recording import iter_rows
from bot.sim.cli import DEMO_DIR
from tests.unit.demo_books import DEPTH, SYM, Level, ReplayBook, Session, V, capture_session

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def session() -> Session:
    return capture_session()


def venue_cfg(latency_ms: float = 0, cancel_latency_ms: float = 0) -> PaperConfig:
    return PaperConfig(
        venues={
            V: PaperVenueConfig(
                latency_ms=latency_ms,
                cancel_latency_ms=cancel_latency_ms,
                maker_fee=D("0.0002"),
                taker_fee=D("0.0005"),
            )
        }
    )


class Harness:
    """The matcher fed the captured session event by event, with everything it publishes kept."""

    def __init__(self, s: Session, cfg: PaperConfig | None = None, live: bool = True, depth: int = DEPTH) -> None:
        self.s = s
        self.book = ReplayBook(s)
        self.out: list[Event] = []
        self.is_live = live
        self.paper = PaperExecution(
            cfg or venue_cfg(),
            lambda v, sym: self.book if (v, sym) == (V, SYM) else None,
            self.out.append,
            live=lambda v, sym: self.is_live,
            depth=depth,
        )
        self.pos = -1

    def to(self, i: int) -> None:
        """Hand in the events up to and including ``i``."""
        for j in range(self.pos + 1, i + 1):
            self.book.i = j
            ev = self.s.events[j]
            if isinstance(ev, BookUpdate):
                self.paper.on_book(ev)
            else:
                self.paper.on_trade(ev)
        self.pos = max(self.pos, i)

    def ts(self, i: int) -> int:
        return self.s.events[i].ts_recv

    def submit(self, cid: str, side: Side, qty: str, at: int, price: str | None = None, **kw: object) -> None:
        """Decide at the time of event ``at`` (already handed in); latency 0 arrives at once."""
        order_type = OrderType.MARKET if price is None else OrderType.LIMIT
        self.paper.submit(req(cid, side, qty, self.ts(at), order_type, price, **kw))  # type: ignore[arg-type]
        self.paper.on_time(self.ts(at))

    def fills(self, cid: str) -> list[Fill]:
        return [e for e in self.out if isinstance(e, Fill) and e.client_order_id == cid]

    def updates(self, cid: str) -> list[OrderUpdate]:
        return [e for e in self.out if isinstance(e, OrderUpdate) and e.client_order_id == cid]

    def last(self, cid: str) -> OrderUpdate:
        return self.updates(cid)[-1]


def req(
    cid: str,
    side: Side,
    qty: str,
    ts: int,
    order_type: OrderType = OrderType.MARKET,
    price: str | None = None,
    tif: TimeInForce = TimeInForce.GTC,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        strategy="test",
        venue=V,
        symbol=SYM,
        side=side,
        qty=D(qty),
        order_type=order_type,
        price=None if price is None else D(price),
        tif=tif,
        reduce_only=False,
        ts_decision=ts,
    )


def pq(fills: list[Fill]) -> list[tuple[str, str]]:
    return [(str(f.qty), str(f.price)) for f in fills]


# -- the real book the figures rest on ----------------------------------------------------------------


def test_the_session_starts_with_the_recorded_book(session: Session) -> None:
    ev = session.events[1]
    assert isinstance(ev, BookUpdate)
    assert (ev.update_id, ev.ts_recv) == (50093239218, 1723161254206652067)
    bids, asks = session.tops[1]
    assert bids[:2] == [(61837.63, 3.78826), (61837.62, 0.617)]
    assert asks[:7] == [
        (61837.64, 1.54698),
        (61837.65, 0.00843),
        (61837.68, 0.00016),
        (61838.13, 0.00086),
        (61838.95, 0.00082),
        (61839.87, 0.32331),
        (61839.92, 0.0001),
    ]
    assert session.tops[2][1][0] == (61837.64, 1.6052)  # the next diff, same receive time
    assert session.tops[3][1][5:8] == [(61839.92, 0.0001), (61840.49, 0.07284), (61840.81, 0.32331)]
    assert session.tops[4][1][0] == (61837.64, 3.48478)
    assert session.events[4].ts_recv == 1723161254337009767


def test_paper_execution_is_an_execution(session: Session) -> None:
    paper: Execution = Harness(session).paper
    assert paper.open_orders() == []


# -- taking ---------------------------------------------------------------------------------------------


def test_market_buy_walks_six_real_levels_with_hand_computed_vwap_and_taker_fee(session: Session) -> None:
    # Arrange
    h = Harness(session)
    h.to(1)
    # Act
    h.submit("m1", Side.BUY, "1.6", at=1)
    # Assert: 1.54698 + 0.00843 + 0.00016 + 0.00086 + 0.00082 = 1.55725, then 0.04275 of 0.32331 @ 61839.87
    fills = h.fills("m1")
    assert pq(fills) == [
        ("1.54698", "61837.64"),
        ("0.00843", "61837.65"),
        ("0.00016", "61837.68"),
        ("0.00086", "61838.13"),
        ("0.00082", "61838.95"),
        ("0.04275", "61839.87"),
    ]
    assert [f.trade_id for f in fills] == [f"m1-{n}" for n in range(1, 7)]
    assert all(f.liquidity is Liquidity.TAKER and f.fee_asset == "USDT" for f in fills)
    # notional 95,663.47 + 521.29... = 98,940.3209188 (exact); fee 0.05 % of it
    assert sum(f.qty * f.price for f in fills) == D("98940.3209188")
    assert sum(f.fee for f in fills) == D("49.47016045940")
    assert fills[0].fee == D("1.54698") * D("61837.64") * D("0.0005")
    last = h.last("m1")
    assert last.status is OrderStatus.FILLED
    assert last.filled_qty == D("1.6")
    assert last.avg_price == D("98940.3209188") / D("1.6") == D("61837.70057425")
    statuses = [u.status for u in h.updates("m1")]
    assert statuses == [OrderStatus.NEW, OrderStatus.ACCEPTED] + [OrderStatus.PARTIALLY_FILLED] * 5 + [
        OrderStatus.FILLED
    ]
    assert h.paper.open_orders() == []
    assert h.paper.stats["taker_fills"] == 6
    assert h.paper.stats["filled"] == 1


def test_ioc_fills_up_to_its_limit_and_the_rest_expires(session: Session) -> None:
    h = Harness(session)
    h.to(1)
    h.submit("i1", Side.BUY, "1.6", at=1, price="61837.65", tif=TimeInForce.IOC)
    assert pq(h.fills("i1")) == [("1.54698", "61837.64"), ("0.00843", "61837.65")]
    last = h.last("i1")
    assert (last.status, last.reason, last.filled_qty) == (OrderStatus.EXPIRED, "ioc_remainder", D("1.55541"))
    assert last.avg_price == (D("1.54698") * D("61837.64") + D("0.00843") * D("61837.65")) / D("1.55541")


def test_market_order_remainder_beyond_the_visible_levels_expires(session: Session) -> None:
    h = Harness(session, depth=3)  # the matcher looks at 3 levels: 1.54698 + 0.00843 + 0.00016 visible
    h.to(1)
    h.submit("m2", Side.BUY, "2", at=1)
    assert pq(h.fills("m2")) == [("1.54698", "61837.64"), ("0.00843", "61837.65"), ("0.00016", "61837.68")]
    last = h.last("m2")
    assert (last.status, last.reason, last.filled_qty) == (OrderStatus.EXPIRED, "no_more_liquidity", D("1.55557"))


def test_own_fills_are_not_taken_twice_until_the_level_shows_another_size(session: Session) -> None:
    h = Harness(session)
    h.to(2)  # asks 61837.64 x 1.6052
    h.submit("a", Side.BUY, "1", at=2)
    h.submit("b", Side.BUY, "1", at=2)  # same book: what "a" took is gone
    assert pq(h.fills("a")) == [("1", "61837.64")]
    assert pq(h.fills("b")) == [
        ("0.6052", "61837.64"),
        ("0.00843", "61837.65"),
        ("0.00016", "61837.68"),
        ("0.00086", "61838.13"),
        ("0.00082", "61838.95"),
        ("0.32331", "61839.87"),
        ("0.0001", "61839.92"),
        ("0.06112", "61840.49"),
    ]
    # event 3 leaves every level we took at the same size (61839.87's lot moved to 61840.81): still ours
    h.to(3)
    h.submit("c", Side.BUY, "0.1", at=3)
    assert pq(h.fills("c")) == [("0.01172", "61840.49"), ("0.08828", "61840.81")]  # 0.07284 - 0.06112
    # event 4 shows 61837.64 at 3.48478: the venue's new truth, our memory of that level is dropped
    h.to(4)
    h.submit("d", Side.BUY, "0.1", at=4)
    assert pq(h.fills("d")) == [("0.1", "61837.64")]


def test_latency_an_order_decided_on_one_book_fills_on_the_book_at_arrival(session: Session) -> None:
    # Decided at event 1 (ts ...254206652067) with 50 ms latency: due at ...254256652067. Events 2 and 3
    # (...254206652067, ...254236551067) come before that; event 4 (...254337009767) is the first at or after.
    h = Harness(session, cfg=venue_cfg(latency_ms=50))
    h.to(1)
    h.paper.submit(req("late", Side.BUY, "1.6", h.ts(1)))
    assert [u.status for u in h.updates("late")] == [OrderStatus.NEW]
    assert h.paper.open_orders()[0].status is OrderStatus.NEW
    h.to(3)
    assert h.fills("late") == []
    h.to(4)
    # On the book at decision it would have walked six levels (see the market test); at arrival 61837.64
    # shows 3.48478, so it all fills there.
    assert pq(h.fills("late")) == [("1.6", "61837.64")]
    assert h.fills("late")[0].ts_event == h.ts(4)
    assert h.paper.stats["arrival_lag_ns_max"] == 1723161254337009767 - (1723161254206652067 + 50_000_000)


# -- resting --------------------------------------------------------------------------------------------


def test_resting_sell_queue_advances_by_level_decrease_and_real_trades_then_fills(session: Session) -> None:
    # Arrange: event 205, best ask 61829.77 x 3.56765
    assert session.tops[205][1][0] == (61829.77, 3.56765)
    h = Harness(session)
    h.to(205)
    # Act
    h.submit("r", Side.SELL, "0.01", at=205, price="61829.77")
    order = h.paper._orders["r"]
    assert order.ahead == D("3.56765")  # queue = displayed size at our price on arrival
    # event 312: the level shows 0.02283 -> queue ahead min(3.56765, 0.02283)
    assert session.tops[312][1][2] == (61829.77, 0.02283)
    h.to(312)
    assert order.ahead == D("0.02283")
    # buy-taker trades at 61829.77: 0.00011, 0.00655, 0.00398 -> 0.01219 ahead
    trades = [session.events[i] for i in (392, 393, 394, 396, 397, 398)]
    assert [(t.price, t.size, t.taker_side) for t in trades if isinstance(t, Trade)] == [
        (61829.77, 0.00011, Side.BUY),
        (61829.77, 0.00655, Side.BUY),
        (61829.77, 0.00398, Side.BUY),
        (61829.77, 0.01219, Side.BUY),
        (61829.77, 0.00323, Side.BUY),
        (61829.99, 9e-05, Side.BUY),
    ]
    h.to(394)
    assert order.ahead == D("0.01219")
    assert h.fills("r") == []
    h.to(395)  # the level shows 0.01542 >= 0.01219: the queue does not grow back
    assert order.ahead == D("0.01219")
    h.to(396)  # exactly the queue: nothing for us yet
    assert order.ahead == 0
    assert h.fills("r") == []
    h.to(397)  # 0.00323 beyond the queue: a partial maker fill
    assert pq(h.fills("r")) == [("0.00323", "61829.77")]
    assert h.last("r").status is OrderStatus.PARTIALLY_FILLED
    h.to(398)  # a buy at 61829.99, strictly better than our ask: the rest fills
    fills = h.fills("r")
    assert pq(fills) == [("0.00323", "61829.77"), ("0.00677", "61829.77")]
    assert all(f.liquidity is Liquidity.MAKER for f in fills)
    assert [f.fee for f in fills] == [D("0.03994203142"), D("0.08371750858")]  # 0.02 % of qty x 61829.77
    assert [f.ts_event for f in fills] == [h.ts(397), h.ts(398)]
    last = h.last("r")
    assert (last.status, last.filled_qty, last.avg_price) == (OrderStatus.FILLED, D("0.01"), D("61829.77"))


def test_post_only_that_would_cross_is_rejected_and_one_that_does_not_rests(session: Session) -> None:
    h = Harness(session)
    h.to(205)  # bid 61829.76 x 0.66486, ask 61829.77
    h.submit("p1", Side.BUY, "0.01", at=205, price="61829.77", tif=TimeInForce.POST_ONLY)
    assert [(u.status, u.reason) for u in h.updates("p1")] == [
        (OrderStatus.NEW, ""),
        (OrderStatus.REJECTED, "post_only_would_cross"),
    ]
    h.submit("p2", Side.BUY, "0.01", at=205, price="61829.76", tif=TimeInForce.POST_ONLY)
    assert h.last("p2").status is OrderStatus.ACCEPTED
    assert h.paper._orders["p2"].ahead == D("0.66486")
    assert [o.client_order_id for o in h.paper.open_orders()] == ["p2"]


def test_gtc_limit_that_crosses_takes_the_crossing_part_and_rests_the_rest(session: Session) -> None:
    h = Harness(session)
    h.to(1)
    h.submit("g", Side.BUY, "1.56", at=1, price="61837.68")
    assert pq(h.fills("g")) == [("1.54698", "61837.64"), ("0.00843", "61837.65"), ("0.00016", "61837.68")]
    assert all(f.liquidity is Liquidity.TAKER for f in h.fills("g"))
    assert h.last("g").status is OrderStatus.PARTIALLY_FILLED
    assert h.paper._orders["g"].ahead == 0  # a new best bid: no one ahead
    # event 2: 61837.64 shows 1.6052 (another size: the venue's ask, below our resting bid) -> filled as maker
    h.to(2)
    assert pq(h.fills("g"))[-1] == ("0.00443", "61837.68")
    assert h.fills("g")[-1].liquidity is Liquidity.MAKER
    assert h.last("g").status is OrderStatus.FILLED


def test_cancel_latency_a_fill_that_lands_before_the_cancel_arrives_stands(session: Session) -> None:
    # The resting sell of the queue test; cancel asked right after trade 396 (queue now 0).
    for latency_ms, expect in ((1.0, OrderStatus.FILLED), (0.0, OrderStatus.CANCELLED)):
        h = Harness(session, cfg=venue_cfg(cancel_latency_ms=latency_ms))
        h.to(205)
        h.submit("r", Side.SELL, "0.01", at=205, price="61829.77")
        h.to(396)
        h.paper.cancel("r", h.ts(396))
        h.paper.cancel("r", h.ts(396))  # a repeat is ignored
        h.to(400)
        assert h.last("r").status is expect
        if expect is OrderStatus.FILLED:  # trades 397/398 came 0.8 and 1.3 us after: within the 1 ms
            assert pq(h.fills("r")) == [("0.00323", "61829.77"), ("0.00677", "61829.77")]
            assert h.paper.stats["cancels_too_late"] == 1
        else:
            assert h.fills("r") == []
            assert (h.last("r").reason, h.last("r").ts_event) == ("cancelled", h.ts(397))
        assert h.paper.stats["cancel_requests"] == 1


def test_cancel_before_arrival_cancels_the_order_in_flight(session: Session) -> None:
    h = Harness(session, cfg=venue_cfg(latency_ms=50, cancel_latency_ms=10))
    h.to(1)
    h.paper.submit(req("x", Side.BUY, "0.1", h.ts(1)))
    h.paper.cancel("x", h.ts(1))
    h.to(4)
    assert [(u.status, u.reason) for u in h.updates("x")] == [
        (OrderStatus.NEW, ""),
        (OrderStatus.CANCELLED, "cancelled_before_arrival"),
    ]
    assert h.fills("x") == []


def test_maker_and_taker_fees_differ_as_configured(session: Session) -> None:
    h = Harness(session)
    h.to(205)
    h.submit("r", Side.SELL, "0.01", at=205, price="61829.77")
    h.to(398)
    h.submit("t", Side.SELL, "0.01", at=398)  # taker into the bids at 398
    taker = h.fills("t")[0]
    bid_px = D(repr(session.tops[398][0][0][0]))
    assert (taker.price, taker.liquidity) == (bid_px, Liquidity.TAKER)
    assert taker.fee == D("0.01") * bid_px * D("0.0005")
    maker = h.fills("r")
    assert sum(f.fee for f in maker) == D("0.01") * D("61829.77") * D("0.0002")


# -- refusals, restart, determinism -----------------------------------------------------------------------


def test_no_book_not_live_or_an_empty_side_is_rejected_with_a_reason(session: Session) -> None:
    h = Harness(session, live=False)
    h.to(1)
    h.submit("nl", Side.BUY, "0.1", at=1)
    assert (h.last("nl").status, h.last("nl").reason) == (OrderStatus.REJECTED, "book_not_live")
    h.is_live = True
    h.paper.submit(msgspec.structs.replace(req("nb", Side.BUY, "0.1", h.ts(1)), symbol="ETHUSDT"))
    h.paper.on_time(h.ts(1))
    assert (h.last("nb").status, h.last("nb").reason) == (OrderStatus.REJECTED, "no_book")

    class OneSided:
        def top(self, n: int) -> tuple[Sequence[Level], Sequence[Level]]:
            return [(61837.63, 1.0)], []

    out: list[Event] = []
    paper = PaperExecution(venue_cfg(), lambda v, s: OneSided(), out.append)
    paper.submit(req("es", Side.SELL, "0.1", 1))
    paper.on_time(1)
    assert [(u.status, u.reason) for u in out if isinstance(u, OrderUpdate)][-1] == (
        OrderStatus.REJECTED,
        "empty_book_side",
    )
    assert paper.stats["rejected"] == 1


def test_a_repeated_open_client_order_id_is_a_bug(session: Session) -> None:
    h = Harness(session, cfg=venue_cfg(latency_ms=50))
    h.paper.submit(req("dup", Side.BUY, "0.1", h.ts(1)))
    with pytest.raises(InvariantViolation, match="dup"):
        h.paper.submit(req("dup", Side.BUY, "0.1", h.ts(1)))


def test_restore_re_rests_open_orders_at_the_back_of_the_queue(session: Session) -> None:
    # A run that rested the sell at 205 and stopped after event 312; a new matcher takes its open orders.
    before = Harness(session)
    before.to(205)
    before.submit("r", Side.SELL, "0.01", at=205, price="61829.77")
    before.to(312)
    saved = before.paper.open_orders()
    assert [(o.client_order_id, o.status) for o in saved] == [("r", OrderStatus.ACCEPTED)]
    after = Harness(session)
    after.pos = 312
    after.paper.restore(saved, after.ts(312))
    assert after.out == []  # restoring publishes nothing
    at = after.ts(312)
    assert after.paper.open_orders() == [msgspec.structs.replace(saved[0], ts_event=at, ts_recv=at)]
    assert after.paper._orders["r"].ahead is None  # unknown until the book shows the level
    after.to(314)  # the next book update (313 is a trade) shows the level at 0.02283: that is the queue ahead again
    assert session.tops[314][1][2] == (61829.77, 0.02283)
    assert after.paper._orders["r"].ahead == D("0.02283")
    after.to(400)  # from here on it meets the same trades as the original run
    fills = after.fills("r")
    assert pq(fills) == [("0.00323", "61829.77"), ("0.00677", "61829.77")]
    assert [f.trade_id for f in fills] == [f"r-r{after.ts(312)}-1", f"r-r{after.ts(312)}-2"]
    assert after.last("r").status is OrderStatus.FILLED


def test_real_order_book_gives_the_same_fills_as_the_captured_states(session: Session) -> None:
    """The matcher on the live OrderBook objects of an OfflineFeed run, orders placed from inside the
    event stream, gives exactly what the captured states gave (and the run is deterministic)."""

    def run() -> list[Event]:
        out: list[Event] = []
        feed: OfflineFeed
        paper: PaperExecution
        n = {"i": -1}

        def books(v: Venue, s: str) -> OrderBook | None:
            return feed.book(v, s)

        def publish(ev: Event) -> None:
            if not (isinstance(ev, BookUpdate | Trade) and ev.venue is V):
                return
            n["i"] += 1
            if isinstance(ev, BookUpdate):
                paper.on_book(ev)
            else:
                paper.on_trade(ev)
            if n["i"] == 1:
                paper.submit(req("m1", Side.BUY, "1.6", ev.ts_recv))
                paper.on_time(ev.ts_recv)
            if n["i"] == 205:
                paper.submit(req("r", Side.SELL, "0.01", ev.ts_recv, OrderType.LIMIT, "61829.77"))
                paper.on_time(ev.ts_recv)

        feed = OfflineFeed(BotSettings(), {V: (SYM,)}, publish)
        paper = PaperExecution(venue_cfg(), books, out.append, depth=DEPTH)
        rows = (r for r in iter_rows(DEMO_DIR / "recording") if r[1] == V.value)
        feed.run(itertools.islice(rows, 3000))
        return out

    first = run()
    assert first == run()
    h = Harness(session)
    h.to(1)
    h.submit("m1", Side.BUY, "1.6", at=1)
    h.to(205)
    h.submit("r", Side.SELL, "0.01", at=205, price="61829.77")
    h.to(797)  # the 3,000 records hold events 0 .. 797
    fills = [e for e in first if isinstance(e, Fill)]
    assert fills == [e for e in h.out if isinstance(e, Fill)]
    assert pq([f for f in fills if f.client_order_id == "r"]) == [("0.00323", "61829.77"), ("0.00677", "61829.77")]


def test_paper_fills_on_the_real_session_keep_the_ledger_identity_at_every_book_update(session: Session) -> None:
    """Paper fills from the real session into the ledger, marked at every real mid: cash is what the fills
    say (hand formula) and ``equity == cash + qty x mark`` holds after every update."""
    h = Harness(session)
    ledger = Ledger({V: {"USDT": D(100_000)}})
    orders = {
        1: ("m1", Side.BUY, "1.6", None),
        205: ("r", Side.SELL, "0.01", "61829.77"),
        400: ("s", Side.SELL, "1", None),
    }
    seen = 0
    for i, ev in enumerate(session.events[:798]):
        h.to(i)
        if i in orders:
            cid, side, qty, price = orders[i]
            h.submit(cid, side, qty, at=i, price=price)
        for e in h.out[seen:]:
            if isinstance(e, Fill):
                ledger.on_fill(e)
        seen = len(h.out)
        if isinstance(ev, BookUpdate):
            ledger.on_mark(V, SYM, (D(repr(ev.bid_px)) + D(repr(ev.ask_px))) / 2)
            snap = ledger.snapshot(V, ev.ts_recv)
            mark = ledger.mark(V, SYM)
            assert mark is not None
            assert snap.equity == snap.cash + ledger.position(V, SYM) * mark
    fills = [e for e in h.out if isinstance(e, Fill)]
    assert {f.client_order_id for f in fills} == {"m1", "r", "s"}
    signed = sum(f.qty if f.side is Side.BUY else -f.qty for f in fills)
    assert ledger.position(V, SYM) == signed == D("1.6") - D("0.01") - D("1")
    cash = D(100_000) - sum((f.qty * f.price if f.side is Side.BUY else -f.qty * f.price) + f.fee for f in fills)
    assert ledger.cash(V) == cash
    assert ledger.snapshot(V, 0).fees == sum(f.fee for f in fills)
