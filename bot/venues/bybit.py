"""Bybit v5 public streams, spot and linear: the two adapters. Their wire formats and parsers are in
``bot.venues.bybit_wire``.

Venue spellings stay in these files: topics (``orderbook.200.BTCUSDT``), ``S: "Buy"``, ``confirm``,
interval codes ``1``/``60``/``D``. Outside them there are only canonical symbols and domain events.

Frames are parsed by key only (``bybit_wire``): the hot path merely *looks* for the topic near the front
(its position varies with the connection) to pick the typed decoder, and the decoder itself matches keys.
A frame that does not decode is counted and dropped (a delta with malformed levels too, the book untouched).

Book depth: live, the book is the configured ``orderbook.{depth}.{symbol}``. Offline (``live=False``:
replays, ``bot books``) it is the depth the data has: an archive comes at its topic's depth
(``orderbook.500`` linear, ``orderbook.200`` spot) whatever the config says, so the first orderbook topic
of a symbol fixes its book's depth; another depth of that symbol later is counted (``stats.skipped``
``other_depth:...``), never mixed into the book.

Book sync (``shared/PROTOCOLS.md`` 1.4): a ``snapshot`` resets the book, always (Bybit resends one
after a back-end restart, possibly with ``u == 1``; level-1 books push snapshots only, repeating ``u``);
a ``delta`` must have ``u == previous u + 1``, anything else is a gap: the book becomes RESYNCING and a
``Resubscribe`` is queued, whose fresh snapshot re-syncs it. Deltas before the first snapshot (or while
resyncing) are ignored.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import structlog

from bot.book import OrderBook
from bot.bus import EventBus
from bot.config import INTERVALS_S, BookConfig, VenueConfig
from bot.errors import MalformedMessage
from bot.events import BookState, BookUpdate, KlineClosed, Trade, Venue
from bot.orders import FundingRate
from bot.venues import bybit_kernels as bk
from bot.venues import json_kernels as jk
from bot.venues._shared import DECODE_ERRORS, NS_PER_MS, BookAdapter, Handler
from bot.venues.base import NO_CLOCK, ConnectionSpec, Publish, ReplayClock, Resubscribe
from bot.venues.bybit_wire import (
    BOOK_DECODER,
    FUNDING_DECODER,
    KLINES_DECODER,
    REST_KLINES,
    TOPIC_DECODER,
    TRADES_DECODER,
    BookMsg,
    FundingMsg,
    FundingView,
    KlineMsg,
    OpMsg,
    OrderBookMsg,
    TickerMsg,
    TradeMsg,
    Wire,
    merge_funding,
    parse_frame,
    to_trades,
)
from bot.venues.funding import FundingFilter, float_decimal

if TYPE_CHECKING:
    from bot.recording import Frames

log = structlog.get_logger(__name__)

# Our interval names -> Bybit's kline interval codes (minutes, or D/W/M).
INTERVAL_CODES = {"1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "4h": "240", "1d": "D"}
MAX_ARGS_PER_SUBSCRIBE = 10
_LIVE = BookState.LIVE  # an enum member read once (per delta)


class _FrameTable(NamedTuple):
    """The routes as ``on_ws_frames`` hands them to its compiled loop (``bot.venues.bybit_kernels``)."""

    key: tuple[int, int]  # (routes version, bus version) it was made for
    names: np.ndarray  # the topics, packed
    bounds: np.ndarray
    routes: np.ndarray  # per topic: (kind, book index)
    handlers: list[tuple[Handler, str]]  # per topic: the route


class _BybitAdapter(BookAdapter):
    category: str
    resubscribe_after_ignored = 2000  # deltas ignored while resyncing before the resubscribe is sent again

    def __init__(self, cfg: VenueConfig, book_cfg: BookConfig, publish: Publish, *, live: bool = True) -> None:
        super().__init__(cfg, book_cfg, publish, live=live)
        self.synced: dict[str, bool] = dict.fromkeys(self.symbols, False)
        # Funding (linear, cfg.funding): tickers subscribed, FundingRate published when the rate changes.
        # Otherwise tickers are not subscribed, and those a recording holds are counted as skipped, not decoded.
        self.funding: FundingFilter | None = None
        if cfg.funding and self.category == "linear":
            self.funding = FundingFilter(self.venue)
        self.funding_views: dict[str, FundingView] = {}
        self.subscribe_failures: list[str] = []
        self.pongs = 0
        self._waiting: dict[str, int] = dict.fromkeys(self.symbols, 0)  # deltas ignored since the last request
        self._conn = f"{self.venue.value}/public"
        self._book_depth: dict[str, str] = dict.fromkeys(self.symbols, cfg.depth)
        self._depth_fixed: dict[str, bool] = dict.fromkeys(self.symbols, live)  # offline: fixed by the data
        self._routes: dict[str, tuple[Handler, str]] = {}  # topic -> (handler, symbol)
        for s in self.symbols:
            self._routes[self.book_topic(s)] = (self._on_book if live else self._on_first_book, s)
            self._routes[f"publicTrade.{s}"] = (self._on_trades, s)
            if self.funding is not None:
                self._routes[f"tickers.{s}"] = (self._on_ticker, s)
            else:  # a skipped topic's route holds its reason for stats.skipped instead of a symbol
                self._routes[f"tickers.{s}"] = (self._on_unused, f"not_handled:tickers.{s}")
            for code in {INTERVAL_CODES[i] for i in cfg.klines}:
                self._routes[f"kline.{code}.{s}"] = (self._on_klines, s)
        self._routes_b = {k.encode(): r for k, r in self._routes.items()}
        self._routes_version = 0  # bumped by _route: on_ws_frames' compiled table follows the routes
        self._table: _FrameTable | None = None
        self._symbol_bytes = np.frombuffer("".join(self.symbols).encode(), np.uint8)
        self._symbol_bounds = np.cumsum([0, *(len(s) for s in self.symbols)], dtype=np.int64)

    # -- connection plan -------------------------------------------------------------------------
    def book_topic(self, symbol: str) -> str:
        return f"orderbook.{self._book_depth[symbol]}.{symbol}"

    def _follow_depth(self, symbol: str, topic: str) -> bool:
        """Offline, the first orderbook topic of ``symbol`` fixes its book's depth (see the module doc);
        False when the depth is fixed already (live: always) and ``topic`` is not it."""
        if topic == self.book_topic(symbol):
            if not self._depth_fixed[symbol]:
                self._depth_fixed[symbol] = True
                self._route(topic, self._on_book, symbol)
            return True
        depth = topic.split(".")[1]
        if self._depth_fixed[symbol] or not depth.isdigit():
            return False
        old = self.book_topic(symbol)
        del self._routes[old], self._routes_b[old.encode()]
        self._book_depth[symbol] = depth
        self._depth_fixed[symbol] = True
        self._route(topic, self._on_book, symbol)
        log.info("book_depth_from_data", venue=self.venue.value, symbol=symbol, depth=depth, configured=self.cfg.depth)
        return True

    def _route(self, topic: str, handler: Handler, symbol: str) -> None:
        self._routes[topic] = (handler, symbol)
        self._routes_b[topic.encode()] = (handler, symbol)
        self._routes_version += 1

    def topics(self) -> list[str]:
        out = []
        for s in self.symbols:
            out.append(self.book_topic(s))
            if self.cfg.trades:
                out.append(f"publicTrade.{s}")
            out.extend(f"kline.{INTERVAL_CODES[i]}.{s}" for i in self.cfg.klines)
        if self.funding is not None:
            out.extend(f"tickers.{s}" for s in self.symbols)
        return out

    @staticmethod
    def _op(op: str, args: list[str]) -> str:
        return json.dumps({"op": op, "args": args}, separators=(",", ":"))

    def connections(self) -> list[ConnectionSpec]:
        topics = self.topics()
        n = MAX_ARGS_PER_SUBSCRIBE
        subs = tuple(self._op("subscribe", topics[i : i + n]) for i in range(0, len(topics), n))
        return [ConnectionSpec(self._conn, self.cfg.ws_url, subs, self.symbols)]

    def ping_payload(self) -> str | None:
        return '{"op":"ping"}'

    def resubscribe_payloads(self, symbol: str) -> list[str]:
        topic = self.book_topic(symbol)
        return [self._op("unsubscribe", [topic]), self._op("subscribe", [topic])]

    def snapshot_url(self, symbol: str) -> str | None:
        return None  # the snapshot arrives on the stream, after the subscription

    def klines_url(self, symbol: str, interval: str, limit: int) -> str:
        code = INTERVAL_CODES.get(interval, interval)
        return (
            f"{self.cfg.rest_url}/v5/market/kline?category={self.category}&symbol={symbol}"
            f"&interval={code}&limit={limit}"
        )

    def parse_klines(self, symbol: str, interval: str, raw: str | bytes, ts_recv: int) -> list[KlineClosed]:
        """Closed candles from a REST klines body, oldest first; [] (counted, logged) for a bad body.

        Bybit lists the newest row first, and it is the candle still forming: a row counts as closed
        when start + interval is at or before ``ts_recv``.
        """
        try:
            body = REST_KLINES.decode(raw)
            if body.retCode != 0 or body.result is None:
                raise MalformedMessage(f"retCode {body.retCode}: {body.retMsg}")
        except (*DECODE_ERRORS, MalformedMessage) as e:
            self._malformed(f"klines {symbol} {interval}", e, raw)
            return []
        if interval not in INTERVALS_S:
            self._malformed(f"klines {symbol}", MalformedMessage(f"unknown interval {interval!r}"), raw)
            return []
        iv = INTERVALS_S[interval] * 1000
        now_ms = ts_recv // NS_PER_MS
        out = [
            KlineClosed(
                ts_event=(r.start + iv) * NS_PER_MS, ts_recv=ts_recv, venue=self.venue, symbol=symbol,
                interval_s=iv // 1000, open_time_ms=r.start, open=r.open, high=r.high, low=r.low,
                close=r.close, volume=r.volume, source="rest",
            )
            for r in reversed(body.result.rows)
            if r.start + iv <= now_ms
        ]
        if out:
            self._seen_closed(symbol, iv, out[-1].open_time_ms)
        return out

    # -- frames ----------------------------------------------------------------------------------
    def on_ws(self, raw: str | bytes, ts_recv: int, conn: str = "-") -> None:
        self.stats.messages += 1
        if not self._started:
            self._start(ts_recv)
        # Hot path: find the topic near the front (its position varies) to pick the typed decoder.
        route = None
        if isinstance(raw, str):
            j = raw.find('"topic":"', 0, 48)
            if j >= 0:
                route = self._routes.get(raw[j + 9 : raw.find('"', j + 9)])
        else:
            j = raw.find(b'"topic":"', 0, 48)
            if j >= 0:
                route = self._routes_b.get(raw[j + 9 : raw.find(b'"', j + 9)])
        self._handle(raw, route, ts_recv)

    def _handle(self, raw: str | bytes, route: tuple[Handler, str] | None, ts_recv: int) -> None:
        """One frame, its route looked up (None: none): decoded and acted on, or counted as malformed."""
        try:
            if route is None:
                msg = parse_frame(raw)
                if msg is None:  # a topic of a kind we do not know
                    self.ignored += 1
                    self._skip(f"unknown_topic:{TOPIC_DECODER.decode(raw).topic}")
                else:
                    self._on_other(msg, ts_recv)
            else:
                route[0](raw, route[1], ts_recv)
        except (*DECODE_ERRORS, MalformedMessage) as e:
            self._malformed("ws", e, raw)

    # -- recorded frames (the offline feed) ------------------------------------------------------
    def on_ws_frames(self, frames: Frames, clock: ReplayClock = NO_CLOCK) -> None:
        """``on_ws`` for the recorded frames of a block, the orderbook deltas applied by a compiled loop.

        Used when the bus is known (``publish`` is an ``EventBus``'s) and every ``BookUpdate`` handler takes
        batches (``bot.grid_set.GridSet``); otherwise one ``on_ws`` per frame. The frames are routed in one pass
        (``bybit_kernels.route_topics``: the lookup of ``on_ws``); ``bybit_kernels.apply_deltas`` then applies
        the deltas of the books whose updates may go as a batch (in sync, LIVE, ``EventBus.batches``) and
        stops at any frame it does not take (see that module), which goes to its handler here as ``on_ws``
        would hand it, and before any frame at which the clock is due, which ticks first. At each stop, first
        the run's books and counters are brought up to date and its ``BookUpdate`` events published as one
        ``BookUpdates`` batch, then the frames it passed over are handled in order: trades, klines and
        tickers whose events nobody receives (they touch no book, so their order against the deltas is
        nobody's business); the tickers put off or only counted are settled in bulk (``bybit_kernels``).
        Books, counters, events received, ticks and grids are what one ``on_ws`` per frame gives
        (``tests/replay/test_offline_loops.py``).
        A run of up to ``few_frames`` frames goes frame by frame (a replay merging venues by receive time
        slices that finely; the arrays would cost more).
        """
        bus = self._bus
        if (bus is None or len(frames.ts) <= self.few_frames or len(self.symbols) > jk.MAX_BOOKS
                or not bus.takes_batches(BookUpdate)):  # fmt: skip
            super().on_ws_frames(frames, clock)
            return
        data = frames.data
        buf = np.frombuffer(data, np.uint8)
        raw, end, ts = frames.raw, frames.end, frames.ts
        n = len(ts)
        raws, ends, times = raw.tolist(), end.tolist(), ts.tolist()
        tick_first = True
        if not self._started:  # the first frame of the session announces the books (as in on_ws)
            if times[0] > clock.due:
                clock.on_time(times[0])
            self._start(times[0])
            tick_first = False
        table = self._frame_table(bus)
        rid = bk.route_topics(buf, raw, end, table.names, table.bounds)
        rid_l = rid.tolist()
        books, tops, later, rows, row_tops, healed, healed_f = jk.scratch(len(self.symbols), n)
        pend = np.zeros((len(self.symbols), 2), np.int64)  # tickers put off, per symbol: count, mark frame
        pend[:, 1] = -1

        def settle(k: int, f: int, count: int) -> None:  # symbol k's put-off tickers, f the last with a mark
            self._repeats(self.symbols[k], data[raws[f] : ends[f]] if f >= 0 else None, count)

        flushes = np.empty((n, 3), np.int64)
        counted = np.zeros(len(table.handlers), np.int64)
        stats = self.stats
        i = 0
        while True:
            if table.key != (self._routes_version, bus.version):  # a handler changed the routes or the bus
                counted = self._count_passed(table, counted)
                table = self._frame_table(bus)
                rid = bk.route_topics(buf, raw, end, table.names, table.bounds)
                rid_l = rid.tolist()
            states = self._loop_books(bus, books, self.synced.__getitem__)
            i_end, why, n_later, n_rows, levels = bk.apply_deltas(
                buf, raw, end, ts, rid, i, tick_first, clock.due, table.routes, table.names, table.bounds,
                self._symbol_bytes, self._symbol_bounds, states, books, tops, later, rows, row_tops, healed, healed_f,
                pend, flushes, counted,
            )  # fmt: skip
            if n_rows:
                self._loop_took(bus, books, tops, rows[:n_rows], row_tops[:n_rows], levels)
            handlers = table.handlers
            for j in later[:n_later].tolist():  # routed, so as _handle does with a route
                if j < 0:  # tickers put off
                    settle(*flushes[-j - 1].tolist())
                    continue
                frame = data[raws[j] : ends[j]]
                handler, symbol = handlers[rid_l[j]]
                try:
                    handler(frame, symbol, times[j])
                except (*DECODE_ERRORS, MalformedMessage) as e:
                    self._malformed("ws", e, frame)
            stats.messages += i_end - i
            if why == jk.END:
                self._count_passed(table, counted)
                for k, (count, f) in enumerate(pend.tolist()):
                    if count:
                        settle(k, f, count)
                return
            t = times[i_end]
            if why == jk.TICK:
                clock.on_time(t)
                i, tick_first = i_end, False
                continue
            stats.messages += 1
            r = rid_l[i_end]
            if why == jk.HEALED:
                self._took_healed(table.handlers[r][1], healed.tolist(), healed_f.tolist(), t)
            else:
                self._handle(data[raws[i_end] : ends[i_end]], table.handlers[r] if r >= 0 else None, t)
            i, tick_first = i_end + 1, True

    def _frame_table(self, bus: EventBus) -> _FrameTable:
        """The routes for the compiled loop: a book's topic is ``BOOK`` once it has its own handler
        (``_on_book``); trades and klines are ``LATER`` when their events reach nobody; funding tickers are
        ``TICKER_LATER`` then, else ``TICKER_NOW``; skipped tickers (``_on_unused``) are ``COUNT``, counted by the
        loop itself (``_count_passed``)."""
        key = (self._routes_version, bus.version)
        if self._table is not None and self._table.key == key:
            return self._table
        later: dict[Handler, bool] = {
            self._on_trades: not bus.wants(Trade),
            self._on_klines: not bus.wants(KlineClosed),
        }
        ticker = bk.TICKER_NOW if bus.wants(FundingRate) else bk.TICKER_LATER
        names = list(self._routes_b)
        handlers = list(self._routes_b.values())
        if later[self._on_trades]:  # decoded (a frame that does not decode is malformed), counted as heard
            handlers = [(self._trades_unheard, s) if h == self._on_trades else (h, s) for h, s in handlers]
            later[self._trades_unheard] = True
        kinds = []
        for handler, symbol in handlers:
            if handler == self._on_book:
                kinds.append((jk.BOOK, self.symbols.index(symbol)))
            elif handler == self._on_ticker:
                kinds.append((ticker, self.symbols.index(symbol)))
            elif handler == self._on_unused:
                kinds.append((bk.COUNT, 0))
            else:
                kinds.append((jk.LATER if later.get(handler, False) else jk.NOW, 0))
        self._table = _FrameTable(
            key,
            np.frombuffer(b"".join(names), np.uint8),
            np.cumsum([0, *map(len, names)], dtype=np.int64),
            np.array(kinds, np.int64).reshape(-1, 2),
            handlers,
        )
        return self._table

    def _took_healed(self, symbol: str, healed: list[int], healed_f: list[float], ts_recv: int) -> None:
        """A delta the loop applied that crossed the book (healed): the rest of what ``_book`` does."""
        n, uid, ts_ms, removed = healed
        cross_b, cross_a, bp, bs, ap, as_ = healed_f
        self.stats.book_messages[symbol] += 1
        book = self.books[symbol]
        book.applied(uid, ts_ms * NS_PER_MS, (removed, cross_b, cross_a, bp, bs, ap, as_))
        self._applied(symbol, book, n, False, ts_recv)

    def _on_other(self, msg: Wire, ts_recv: int) -> None:
        if isinstance(msg, OpMsg):
            if msg.is_pong:
                self.pongs += 1
            elif msg.success is False:
                self.subscribe_failures.append(msg.ret_msg)
                log.warning("subscribe_refused", venue=self.venue.value, op=msg.op, ret_msg=msg.ret_msg[:200])
            else:
                self.ignored += 1
                self._skip(f"control:{msg.op}")
            return
        symbol = self._symbol_of(msg)
        if symbol is None:
            self.ignored += 1
            self._skip(f"symbol_not_configured:{msg.topic}")
        elif isinstance(msg, OrderBookMsg):
            if self._follow_depth(symbol, msg.topic):
                self._book(BookMsg.from_wire(msg), symbol, ts_recv)
            else:
                self.ignored += 1
                self._skip(f"other_depth:{msg.topic}")
        elif isinstance(msg, TradeMsg):
            for t in to_trades(self.venue, symbol, msg, ts_recv):
                self.publish(t)
        elif isinstance(msg, KlineMsg):
            self._klines(msg, symbol, ts_recv)
        elif isinstance(msg, TickerMsg) and self.funding is not None:
            self._ticker(msg, symbol, ts_recv)
        else:  # tickers without funding too, as _on_unused counts them
            self.ignored += 1
            self._skip(f"not_handled:{msg.topic}")

    def _symbol_of(self, msg: Wire) -> str | None:
        if isinstance(msg, OpMsg):
            return None
        s = msg.topic.rpartition(".")[2]
        return s if s in self.synced else None

    # -- order book ------------------------------------------------------------------------------
    def _on_book(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        self._book(BookMsg.from_raw(BOOK_DECODER.decode(data)), symbol, ts_recv)

    def _on_first_book(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        """Offline, the configured topic seen first: it is the data's depth (from now on ``_on_book``)."""
        self._follow_depth(symbol, self.book_topic(symbol))
        self._on_book(data, symbol, ts_recv)

    def _book(self, msg: BookMsg, symbol: str, ts_recv: int) -> None:
        d = msg
        if d.s != symbol:
            raise MalformedMessage(f"book data for {d.s} on topic {msg.topic}")
        self.stats.book_messages[symbol] += 1
        book = self.books[symbol]
        if msg.type == "snapshot":
            b, a = msg.levels()
            book.reset(b, a, d.u, msg.ts * NS_PER_MS)
            n = len(b) + len(a)
            snapshot = True
        elif msg.type == "delta":
            if not self.synced[symbol]:  # before the first snapshot, or waiting for a resubscription's
                self.ignored += 1
                if self.states[symbol] is BookState.RESYNCING:
                    self._waiting[symbol] += 1
                    if self._waiting[symbol] >= self.resubscribe_after_ignored:  # that request seems lost
                        self._waiting[symbol] = 0
                        self._actions.append(Resubscribe(symbol))
                return
            if d.u != book.update_id + 1:
                self.stats.gaps[symbol] += 1
                self._resync(symbol, f"gap: update {d.u} after {book.update_id}", ts_recv)
                return
            applied = None if msg.raw is None else book.apply_json(*msg.raw, d.u, msg.ts * NS_PER_MS)
            if applied is None:  # parsed already, or not in the venue's exact shape: msgspec decides (or raises)
                b, a = msg.levels()
                book.apply(b, a, d.u, msg.ts * NS_PER_MS)
                applied = len(b) + len(a)
            n = applied
            snapshot = False
        else:
            raise MalformedMessage(f"orderbook message of type {msg.type!r}")
        self._applied(symbol, book, n, snapshot, ts_recv)

    def _applied(self, symbol: str, book: OrderBook, n: int, snapshot: bool, ts_recv: int) -> None:
        """A snapshot or an in-sequence delta of ``n`` levels is in ``book``: count it, heal or resync a
        crossed book, publish the top of book, mark the book LIVE."""
        removed = book.last_healed
        self.stats.level_updates += n
        self.last_update_ns[symbol] = ts_recv
        if removed:
            self._crossed(symbol, book, removed, ts_recv)
            if self.live:
                self._resync(symbol, "crossed book", ts_recv)
                return
        self.synced[symbol] = True
        self._publish_top(symbol, book, ts_recv, snapshot=snapshot)
        if self.states[symbol] is not _LIVE:
            self._set_state(symbol, BookState.LIVE, "in sync" if snapshot else "updates flowing again", ts_recv)

    def _resync(self, symbol: str, reason: str, ts_recv: int) -> None:
        self.stats.resyncs[symbol] += 1
        self.books[symbol].clear()
        self.synced[symbol] = False
        self._waiting[symbol] = 0
        self._set_state(symbol, BookState.RESYNCING, reason, ts_recv)
        self._actions.append(Resubscribe(symbol))

    def on_snapshot(self, symbol: str, raw: str | bytes, ts_recv: int) -> None:
        log.warning("unexpected_rest_snapshot", venue=self.venue.value, symbol=symbol)  # never asked for

    def on_snapshot_failed(self, symbol: str, reason: str) -> None:
        return None  # Bybit snapshots are never fetched over REST

    def on_disconnect(self, conn: str, ts_recv: int) -> None:
        """Every book (all ride one connection) waits for the snapshot that follows the next subscription."""
        for symbol in self.symbols:
            if self.synced[symbol]:
                self.stats.resyncs[symbol] += 1
            self.books[symbol].clear()
            self.synced[symbol] = False
            self._waiting[symbol] = 0
            self._set_state(symbol, BookState.RESYNCING, f"disconnected ({conn})", ts_recv)

    # -- trades, klines, tickers -----------------------------------------------------------------
    def _on_trades(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        for t in to_trades(self.venue, symbol, TRADES_DECODER.decode(data), ts_recv):
            self.publish(t)

    def _trades_unheard(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        """``_on_trades`` while no handler receives ``Trade``: the frame decoded, its trades counted as published."""
        assert self._bus is not None
        self._bus.unheard(Trade, len(TRADES_DECODER.decode(data).data))

    def _on_klines(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        self._klines(KLINES_DECODER.decode(data), symbol, ts_recv)

    def _klines(self, msg: KlineMsg, symbol: str, ts_recv: int) -> None:
        for k in msg.data:
            if k.confirm:
                ev = self._kline_closed(
                    symbol, k.start, k.end - k.start + 1, (k.open, k.high, k.low, k.close, k.volume), ts_recv, "ws"
                )
                if ev is not None:
                    self.publish(ev)

    def _count_passed(self, table: _FrameTable, counted: np.ndarray) -> np.ndarray:
        """Count the frames the compiled loop passed over on ``COUNT`` routes as ``_on_unused`` counts them;
        a fresh array of counts for the next table."""
        for r in np.flatnonzero(counted).tolist():
            n = int(counted[r])
            self.ignored += n
            self._skip(table.handlers[r][1], n)
        return np.zeros(len(self._routes_b), np.int64)

    def _on_unused(self, data: str | bytes, reason: str, ts_recv: int) -> None:
        """A well-formed frame of a topic we have no use for (tickers without funding): counted, not decoded."""
        self.ignored += 1
        self._skip(reason)

    def _on_ticker(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        self._ticker(FUNDING_DECODER.decode(data), symbol, ts_recv)

    def _repeats(self, symbol: str, mark_frame: bytes | None, count: int) -> None:
        """``count`` ticker frames that carry no funding pair (put off by the compiled loop), as ``_on_ticker``
        for each would leave things: the last of them that carries a mark price merged into the view, and
        each one counted by the filter as it would (a repeat, almost always; see ``bybit_kernels``)."""
        assert self.funding is not None
        view = self.funding_views.get(symbol) or FundingView(None, None, math.nan)
        if mark_frame is not None:
            try:
                view = merge_funding(view, FUNDING_DECODER.decode(mark_frame))
            except DECODE_ERRORS as e:  # counted as frame by frame: malformed, not by the filter
                self._malformed("ws", e, mark_frame)
                count -= 1
        self.funding_views[symbol] = view
        for left in range(count, 0, -1):
            if self.funding.repeats(symbol, view.rate, view.next_funding_ms):
                self.funding.stats.unchanged += left - 1  # the same pair each time: the rest repeat it too
                return
            try:  # no pair (no_funding), or a rate that is no decimal (malformed, each time, as frame by frame)
                self.funding.update(symbol, view.rate, view.next_funding_ms, None, 0, 0)
            except MalformedMessage as e:
                self._malformed("ws", e, symbol)

    def _ticker(self, msg: FundingMsg | TickerMsg, symbol: str, ts_recv: int) -> None:
        """A linear ticker (``self.funding`` set): its funding fields merged, a FundingRate when they change."""
        if self.funding is None:
            return
        view = self.funding_views[symbol] = merge_funding(self.funding_views.get(symbol), msg)
        if self.funding.repeats(symbol, view.rate, view.next_funding_ms):  # ~10 a second: no Decimal work
            return
        mark = float_decimal(view.mark_px)
        ev = self.funding.update(symbol, view.rate, view.next_funding_ms, mark, msg.ts * NS_PER_MS or ts_recv, ts_recv)
        if ev is not None:
            self.publish(ev)


class BybitSpotAdapter(_BybitAdapter):
    venue = Venue.BYBIT_SPOT
    category = "spot"


class BybitLinearAdapter(_BybitAdapter):
    venue = Venue.BYBIT_LINEAR
    category = "linear"
