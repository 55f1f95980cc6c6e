"""Binance Spot and USD-M futures: the two adapters. Their wire formats and parsers are in
``bot.venues.binance_wire``, their offline recorded-frames path in ``bot.venues.binance_offline``.

Venue spellings stay in these files: lower-case stream names (``btcusdt@depth@100ms``), one-letter keys,
``m`` for "buyer is maker". Outside them there are only canonical symbols (``BTCUSDT``) and domain events.

The hot path reads the stream name at the front of the frame, looks it up in a table built from the config
and decodes the frame with the typed decoder of that stream (``binance_wire``); a diff's levels go to the
book as text (``depth_text``). Anything else (raw payloads, unknown streams, key orders other than
Binance's) takes ``parse_frame``. A frame that does not decode is counted and dropped; so is a diff whose
levels are malformed, with the book left as it was.

Book sync follows the official procedures exactly (``shared/PROTOCOLS.md`` 2.4 and 3.4):

* Spot: buffer diffs, ask for a snapshot (``NeedSnapshot``); snapshot ``lastUpdateId`` (L) < first
  buffered ``U``: ask again; drop buffered ``u <= L``; the first kept must have ``U <= L+1 <= u``;
  then every event must have ``U == previous u + 1``.
* USD-M: drop ``u < L`` (strictly less: one real session starts with ``u == L``); the first kept must
  have ``U <= L <= u``; then every event must have ``pu == previous u``.
* A gap restarts the procedure (the event that revealed it is the first of the new buffer). Events
  whose ``u`` is already in the book (duplicates) are dropped and counted in ``stats.dropped_stale``.
* Partial-depth streams (``depth5``/``10``/``20``) are whole top-N pictures: each one resets the book.
"""

from __future__ import annotations

import numpy as np
import structlog

from bot.book import OrderBook, as_levels
from bot.config import DEPTHS, INTERVALS_S, BookConfig, VenueConfig
from bot.errors import MalformedMessage
from bot.events import BookState, KlineClosed, Venue
from bot.venues._shared import DECODE_ERRORS, NS_PER_MS, Handler
from bot.venues.base import ConnectionSpec, NeedSnapshot, Publish
from bot.venues.binance_funding import MARK_PRICE_STREAM, MarkPriceUpdate, funding_args
from bot.venues.binance_offline import BinanceOffline
from bot.venues.binance_wire import (
    ENV_DEPTH,
    ENV_KLINE,
    ENV_MARK,
    ENV_SNAPSHOT,
    ENV_TRADE,
    PARTIAL_DEPTH_RE,
    REST_KLINES,
    DepthSnapshot,
    DepthText,
    DepthUpdate,
    Frame,
    Kind,
    WireKline,
    as_update,
    depth_text,
    parse_frame,
    parse_snapshot,
    stream_name,
    to_trade,
)
from bot.venues.funding import FundingFilter

log = structlog.get_logger(__name__)

_STALE = BookState.STALE


class _SymbolSync:
    """Where one symbol's book is in the sync procedure."""

    __slots__ = ("buffer", "buffered_levels", "first_u", "last_event_ms", "requested", "snapshot", "synced")

    def __init__(self) -> None:
        self.buffer: list[DepthUpdate] = []  # diffs waiting for a snapshot, oldest first
        self.buffered_levels = 0
        self.first_u: int | None = None  # U of the first diff buffered in this attempt ("step 2")
        self.snapshot: DepthSnapshot | None = None  # received, waiting for diffs
        self.requested = False  # a NeedSnapshot is out and not yet answered
        self.synced = False
        self.last_event_ms = 0  # newest venue time seen on the diff stream



class _BinanceAdapter(BinanceOffline):
    futures: bool
    depth_path: str
    klines_path: str
    max_buffer_levels = 250_000  # diff levels buffered while waiting for a snapshot (~3 min of BTC)

    def __init__(self, cfg: VenueConfig, book_cfg: BookConfig, publish: Publish, *, live: bool = True) -> None:
        super().__init__(cfg, book_cfg, publish, live=live)
        self._sync = {s: _SymbolSync() for s in self.symbols}
        self.partial = bool(PARTIAL_DEPTH_RE.match(cfg.depth))
        self.shutdown_notices = 0
        self.funding = FundingFilter(self.venue) if cfg.funding and self.futures else None  # spot: no funding
        # The hot path's table: the head of a combined-stream frame up to the end of the stream name
        # ('{"stream":"btcusdt@trade"') -> (handler, symbol); the handler None means "skip, no decoding".
        routes: dict[str, tuple[Handler | None, str]] = {}
        # Offline, a recording's diff stream is the book's whatever its speed (a session recorded on
        # @depth@0ms replayed with @depth@100ms configured): _on_other applies any diff stream by its name,
        # so every diff stream the venue serves gets the hot path's route too (same handling, no detour).
        diffs = [d for d in DEPTHS[self.venue] if not PARTIAL_DEPTH_RE.match(d)] if not (live or self.partial) else []
        for s in self.symbols:
            low = s.lower()
            for d in diffs:
                routes[f"{low}@{d}"] = (self._on_depth, s)
            routes[f"{low}@{cfg.depth}"] = (self._on_partial if self.partial else self._on_depth, s)
            routes[f"{low}@trade"] = (self._on_trade, s)
            for i in cfg.klines:
                routes[f"{low}@kline_{i}"] = (self._on_kline, s)
            # Not subscribed by connections(), but present in recordings: counted as ignored, not decoded;
            # a skipped stream's entry holds its reason for stats.skipped instead of a symbol.
            routes[f"{low}@bookTicker"] = (None, f"not_handled:{low}@bookTicker")
            if self.funding is not None:
                routes[f"{low}@{MARK_PRICE_STREAM}"] = (self._on_mark_price, s)
        self._routes = {f'{{"stream":"{name}"': r for name, r in routes.items()}
        self._payload_at = {s: f'{{"stream":"{s.lower()}@{cfg.depth}","data":{{'.encode() for s in self.symbols}
        self._routes_b = {k.encode(): r for k, r in self._routes.items()}
        # The same table for on_ws_frames: heads packed for the compiled router, and per head (index + 1;
        # 0 is "no head", which parse_frame decides) whether the frame is handled at all.
        heads = list(self._routes_b)
        self._heads = np.frombuffer(b"".join(heads), np.uint8)
        self._head_bounds = np.cumsum([0, *map(len, heads)], dtype=np.int64)
        self._head_routes = list(self._routes.values())
        self._handled = np.array([True, *(handler is not None for handler, _ in self._head_routes)])
        self._conn_books: dict[str, tuple[str, ...]] = {c.name: c.symbols for c in self.connections()}
        self._symbol_bytes = np.frombuffer("".join(self.symbols).encode(), np.uint8)  # for the compiled loop
        self._symbol_bounds = np.cumsum([0, *(len(s) for s in self.symbols)], dtype=np.int64)

    # -- connection plan -------------------------------------------------------------------------
    def _streams(self) -> tuple[list[str], list[str]]:
        """(book-tier streams, market-tier streams: klines, then mark prices on USD-M with funding)."""
        cfg = self.cfg
        book: list[str] = []
        klines: list[str] = []
        for s in self.symbols:
            low = s.lower()
            book.append(f"{low}@{cfg.depth}")
            if cfg.trades:
                book.append(f"{low}@trade")
            klines.extend(f"{low}@kline_{i}" for i in cfg.klines)
        if self.funding is not None:
            klines.extend(f"{s.lower()}@{MARK_PRICE_STREAM}" for s in self.symbols)
        return book, klines

    def connections(self) -> list[ConnectionSpec]:
        cfg = self.cfg
        path = cfg.ws_path or "/stream"
        kline_path = cfg.ws_kline_path or path
        book, klines = self._streams()
        if kline_path == path:
            url = f"{cfg.ws_url}{path}?streams=" + "/".join(book + klines)
            return [ConnectionSpec(f"{self.venue.value}/stream", url, (), self.symbols)]
        name = self.venue.value
        specs = [ConnectionSpec(f"{name}/depth", f"{cfg.ws_url}{path}?streams=" + "/".join(book), (), self.symbols)]
        if klines:
            specs.append(ConnectionSpec(f"{name}/klines", f"{cfg.ws_url}{kline_path}?streams=" + "/".join(klines)))
        return specs

    def resubscribe_payloads(self, symbol: str) -> list[str]:
        return []  # Binance resyncs through a REST snapshot, never a resubscription

    def snapshot_url(self, symbol: str) -> str | None:
        return f"{self.cfg.rest_url}{self.depth_path}?symbol={symbol}&limit={self._snapshot_limit()}"

    def _snapshot_limit(self) -> int:
        return self.cfg.snapshot_limit

    def klines_url(self, symbol: str, interval: str, limit: int) -> str:
        return f"{self.cfg.rest_url}{self.klines_path}?symbol={symbol}&interval={interval}&limit={limit}"

    def parse_klines(self, symbol: str, interval: str, raw: str | bytes, ts_recv: int) -> list[KlineClosed]:
        """Closed candles from a REST klines body, oldest first; [] (counted, logged) for a bad body.

        A row is closed when its open time + interval is at or before ``ts_recv`` (the last row of a
        live answer is the candle still forming).
        """
        try:
            rows = REST_KLINES.decode(raw)
        except DECODE_ERRORS as e:
            self._malformed(f"klines {symbol} {interval}", e, raw)
            return []
        interval_ms = INTERVALS_S[interval] * 1000 if interval in INTERVALS_S else 0
        now_ms = ts_recv // NS_PER_MS
        out = []
        for r in rows:
            iv = interval_ms or r.T - r.t + 1
            if r.t + iv <= now_ms:
                out.append(
                    KlineClosed(
                        ts_event=(r.t + iv) * NS_PER_MS, ts_recv=ts_recv, venue=self.venue, symbol=symbol,
                        interval_s=iv // 1000, open_time_ms=r.t, open=r.o, high=r.h, low=r.l, close=r.c,
                        volume=r.v, source="rest",
                    )
                )
        if out:
            self._seen_closed(symbol, out[-1].interval_s * 1000, out[-1].open_time_ms)
        return out

    # -- frames ----------------------------------------------------------------------------------
    def on_ws(self, raw: str | bytes, ts_recv: int, conn: str = "-") -> None:
        self.stats.messages += 1
        if not self._started:
            self._start(ts_recv)
        try:
            # Hot path: Binance puts "stream" first; the frame's head up to the end of the stream name
            # picks the typed decoder for the whole frame (which then matches keys, so a frame that merely
            # looks right still has to be right). A head that is no key (raw payloads, other key orders,
            # streams not configured) takes parse_frame.
            if isinstance(raw, str):
                route = self._routes.get(raw[: raw.find('"', 11) + 1])
            else:
                route = self._routes_b.get(raw[: raw.find(b'"', 11) + 1])
            if route is None:
                self._on_other(parse_frame(raw, self.futures), ts_recv)
            elif route[0] is None:
                self.ignored += 1
                self._skip(route[1])
            else:
                route[0](raw, route[1], ts_recv)
        except (*DECODE_ERRORS, MalformedMessage) as e:
            self._malformed("ws", e, raw)

    def _on_other(self, f: Frame, ts_recv: int) -> None:
        """Frames off the hot path: raw payloads, responses, shutdown notices, streams not subscribed."""
        if f.kind is Kind.RESPONSE:
            if f.msg.error is not None:
                log.warning("subscribe_refused", venue=self.venue.value, id=f.msg.id, error=str(f.msg.error)[:200])
            else:
                self.ignored += 1
                self._skip("control:response")
            return
        if f.kind is Kind.SHUTDOWN:
            self.shutdown_notices += 1
            log.info("server_shutdown_notice", venue=self.venue.value, event_time_ms=f.msg.E)
            return
        symbol = self._symbol_of(f)
        if symbol is None:
            self.ignored += 1
            self._skip(("unknown_stream:" if f.kind is Kind.UNKNOWN else "symbol_not_configured:") + stream_name(f))
            return
        # A diff stream is a diff by its name, whatever the config; a raw payload names no stream, and a USD-M
        # partial payload is a depthUpdate too: there the config decides.
        if f.kind is Kind.DEPTH and not (self.partial and not f.stream):
            self._depth(f.msg, symbol, ts_recv)
        elif f.kind is Kind.PARTIAL or f.kind is Kind.DEPTH:
            self._partial(f.msg, symbol, ts_recv)
        elif f.kind is Kind.TRADE:
            self.publish(to_trade(self.venue, symbol, f.msg, ts_recv))
        elif f.kind is Kind.KLINE:
            self._kline(f.msg, symbol, ts_recv)
        elif f.kind is Kind.MARK_PRICE and self.funding is not None:
            self._mark_price(f.msg, symbol, ts_recv)
        else:  # bookTicker and unknown streams: not ours to act on
            self.ignored += 1
            self._skip(f"not_handled:{stream_name(f)}")

    def _symbol_of(self, f: Frame) -> str | None:
        """The configured symbol a frame is about, or None."""
        s = getattr(f.msg, "s", None)
        if s is None and f.stream:
            s = f.stream.partition("@")[0]
        if s is None and len(self.symbols) == 1:  # a raw spot partial-depth payload names no symbol
            return self.symbols[0]
        s = str(s).upper() if s is not None else None
        return s if s in self._sync else None

    # -- depth -----------------------------------------------------------------------------------
    def _on_depth(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        ev: DepthUpdate | DepthText | None = depth_text(data, self._payload_at[symbol])
        if ev is None:
            ev = DepthUpdate.from_wire(ENV_DEPTH.decode(data).data)
        if ev.s != symbol:
            raise MalformedMessage(f"depth event for {ev.s} on the stream of {symbol}")
        self._depth(ev, symbol, ts_recv)

    def _depth(self, ev: DepthUpdate | DepthText, symbol: str, ts_recv: int) -> None:
        """One diff: from the hot path with its levels still text (read when applied or kept), or parsed."""
        st = self._sync[symbol]
        st.last_event_ms = ev.E
        self.stats.book_messages[symbol] += 1
        if not st.synced:
            self._buffer(symbol, st, as_update(ev), ts_recv)
            return
        book = self.books[symbol]
        if ev.u <= book.update_id:  # already in the book: a duplicate or a late copy
            self.stats.dropped_stale[symbol] = self.stats.dropped_stale.get(symbol, 0) + 1
            return
        if not self._chained(ev, book.update_id):
            keep = [as_update(ev)]  # first: a frame with malformed levels raises here, before anything counts
            self.stats.gaps[symbol] += 1
            self._restart(symbol, st, keep, f"gap after update {book.update_id}", ts_recv)
            return
        self._apply(symbol, st, book, ev, ts_recv)

    def _chained(self, ev: DepthUpdate | DepthText, last: int) -> bool:
        raise NotImplementedError

    def _first_fits(self, ev: DepthUpdate, last: int) -> bool:
        raise NotImplementedError

    def _already_in(self, ev: DepthUpdate, last: int) -> bool:
        """A buffered event older than the snapshot (dropped before the first kept one)."""
        raise NotImplementedError

    def _apply(
        self, symbol: str, st: _SymbolSync, book: OrderBook, ev: DepthUpdate | DepthText, ts_recv: int
    ) -> bool:
        """Apply one in-sequence diff and publish; False if a crossed book made a live adapter resync."""
        n = None
        if type(ev) is DepthText:
            n = book.apply_json(ev.b, ev.a, ev.u, ev.E * NS_PER_MS)
        if n is None:  # parsed already, or not in the venue's exact shape: msgspec decides (or raises)
            ev = as_update(ev)
            book.apply(ev.b, ev.a, ev.u, ev.E * NS_PER_MS)
            n = len(ev.b) + len(ev.a)
        return self._applied(symbol, st, book, n, ts_recv)

    def _applied(self, symbol: str, st: _SymbolSync, book: OrderBook, n: int, ts_recv: int) -> bool:
        """A diff of ``n`` levels is in ``book``: count it, heal or resync a crossed book, publish."""
        removed = book.last_healed
        self.stats.level_updates += n
        self.last_update_ns[symbol] = ts_recv
        if removed:
            self._crossed(symbol, book, removed, ts_recv)
            if self.live:
                self._restart(symbol, st, [], "crossed book", ts_recv)
                return False
        self._publish_top(symbol, book, ts_recv)
        if self.states[symbol] is _STALE:
            self._set_state(symbol, BookState.LIVE, "updates flowing again", ts_recv)
        return True

    def _buffer(self, symbol: str, st: _SymbolSync, ev: DepthUpdate, ts_recv: int) -> None:
        n = len(ev.b) + len(ev.a)
        if st.buffered_levels + n > self.max_buffer_levels:
            # Waiting too long for a snapshot: start over rather than grow without bound.
            self.stats.buffer_overflows[symbol] += 1
            log.warning("depth_buffer_overflow", venue=self.venue.value, symbol=symbol, events=len(st.buffer))
            st.buffer.clear()
            st.buffered_levels = 0
            st.first_u = None
            st.snapshot = None
            self._ask_snapshot(symbol, st)
        if st.first_u is None:
            st.first_u = ev.U
        st.buffer.append(ev)
        st.buffered_levels += n
        if st.snapshot is not None:
            self._try_sync(symbol, st, ts_recv)
        elif not st.requested:
            self._ask_snapshot(symbol, st)

    def _ask_snapshot(self, symbol: str, st: _SymbolSync) -> None:
        st.requested = True
        self._actions.append(NeedSnapshot(symbol))

    def on_snapshot(self, symbol: str, raw: str | bytes, ts_recv: int) -> None:
        st = self._sync.get(symbol)
        if st is None:
            log.warning("snapshot_for_unknown_symbol", venue=self.venue.value, symbol=symbol)
            return
        st.requested = False
        try:
            snap = parse_snapshot(raw)
        except MalformedMessage as e:
            self._malformed("snapshot", e, raw)
            self._ask_snapshot(symbol, st)
            return
        if st.synced:
            return  # an answer to a request overtaken by events; the book is in sync already
        st.snapshot = snap
        self._try_sync(symbol, st, ts_recv)

    def on_snapshot_failed(self, symbol: str, reason: str) -> None:
        st = self._sync.get(symbol)
        if st is None:
            return
        st.requested = False
        if not st.synced:
            self._ask_snapshot(symbol, st)  # the feed applies the backoff

    def _try_sync(self, symbol: str, st: _SymbolSync, ts_recv: int) -> None:
        """Steps 4-7 of the official procedure, run whenever a snapshot or a buffered diff arrives."""
        snap = st.snapshot
        buf = st.buffer
        if snap is None or not buf:
            return
        last = snap.lastUpdateId
        if st.first_u is not None and last < st.first_u:  # older than the first diff we hold: ask again
            st.snapshot = None
            self._ask_snapshot(symbol, st)
            return
        i = 0
        while i < len(buf) and self._already_in(buf[i], last):
            i += 1
        if i:
            del buf[:i]
            st.buffered_levels = sum(len(e.b) + len(e.a) for e in buf)
        if not buf:
            return  # every buffered diff is older than the snapshot: wait for the next one
        if not self._first_fits(buf[0], last):
            self.stats.gaps[symbol] += 1
            self._restart(symbol, st, [], f"no diff continues snapshot {last}", ts_recv)
            return
        book = self.books[symbol]
        ts_event = (snap.E or st.last_event_ms) * NS_PER_MS or ts_recv
        book.reset(snap.bids, snap.asks, last, ts_event)
        self.stats.level_updates += len(snap.bids) + len(snap.asks)
        self.last_update_ns[symbol] = ts_recv
        pending = buf[:]
        buf.clear()
        st.buffered_levels = 0
        st.first_u = None
        st.snapshot = None
        st.synced = True
        if book.last_healed:
            self._crossed(symbol, book, book.last_healed, ts_recv)
            if self.live:
                self._restart(symbol, st, pending, "crossed snapshot", ts_recv)
                return
        self._publish_top(symbol, book, ts_recv, snapshot=True)
        for k, ev in enumerate(pending):
            if k and not self._chained(ev, book.update_id):
                self.stats.gaps[symbol] += 1
                self._restart(symbol, st, pending[k:], f"gap after update {book.update_id}", ts_recv)
                return
            if not self._apply(symbol, st, book, ev, ts_recv):
                return
        self._set_state(symbol, BookState.LIVE, "in sync", ts_recv)

    def _restart(self, symbol: str, st: _SymbolSync, keep: list[DepthUpdate], reason: str, ts_recv: int) -> None:
        """Discard the book and start the procedure again from the snapshot request."""
        self.stats.resyncs[symbol] += 1
        self.books[symbol].clear()
        st.synced = False
        st.snapshot = None
        st.buffer = keep
        st.buffered_levels = sum(len(e.b) + len(e.a) for e in keep)
        st.first_u = keep[0].U if keep else None
        self._set_state(symbol, BookState.RESYNCING, reason, ts_recv)
        self._ask_snapshot(symbol, st)

    # -- partial depth: every message is the whole top-N picture ---------------------------------
    def _on_partial(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        if self.futures:
            self._partial(DepthUpdate.from_wire(ENV_DEPTH.decode(data).data), symbol, ts_recv)
        else:
            self._partial(ENV_SNAPSHOT.decode(data).data, symbol, ts_recv)

    def _partial(self, msg: DepthUpdate | DepthSnapshot, symbol: str, ts_recv: int) -> None:
        book = self.books[symbol]
        self.stats.book_messages[symbol] += 1
        if isinstance(msg, DepthUpdate):
            bids, asks, uid, ts_event = msg.b, msg.a, msg.u, msg.E * NS_PER_MS
        else:
            bids, asks, uid, ts_event = as_levels(msg.bids), as_levels(msg.asks), msg.lastUpdateId, ts_recv
        book.reset(bids, asks, uid, ts_event)
        self.stats.level_updates += len(bids) + len(asks)
        self.last_update_ns[symbol] = ts_recv
        if book.last_healed:
            self._crossed(symbol, book, book.last_healed, ts_recv)  # the next picture replaces it anyway
        self._sync[symbol].synced = True
        self._publish_top(symbol, book, ts_recv, snapshot=True)
        self._set_state(symbol, BookState.LIVE, "in sync", ts_recv)

    # -- trades and klines -----------------------------------------------------------------------
    def _on_trade(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        self.publish(to_trade(self.venue, symbol, ENV_TRADE.decode(data).data, ts_recv))

    def _on_kline(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        self._kline(ENV_KLINE.decode(data).data, symbol, ts_recv)

    def _kline(self, msg: WireKline, symbol: str, ts_recv: int) -> None:
        k = msg.k
        if not k.x:
            return
        ev = self._kline_closed(symbol, k.t, k.T - k.t + 1, (k.o, k.h, k.l, k.c, k.v), ts_recv, "ws")
        if ev is not None:
            self.publish(ev)

    def _on_mark_price(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        self._mark_price(ENV_MARK.decode(data).data, symbol, ts_recv)

    def _mark_price(self, msg: MarkPriceUpdate, symbol: str, ts_recv: int) -> None:
        if msg.s != symbol:
            raise MalformedMessage(f"mark price of {msg.s} on the stream of {symbol}")
        if self.funding is None:  # routed only with funding on
            return
        ev = self.funding.update(symbol, *funding_args(msg), ts_recv)
        if ev is not None:
            self.publish(ev)

    # -- connection loss -------------------------------------------------------------------------
    def on_disconnect(self, conn: str, ts_recv: int) -> None:
        """The books on ``conn`` (all of them for an unknown name) wait for a fresh snapshot."""
        for symbol in self._conn_books.get(conn, self.symbols):
            st = self._sync[symbol]
            self.books[symbol].clear()
            st.buffer = []
            st.buffered_levels = 0
            st.first_u = None
            st.snapshot = None
            if st.synced:
                self.stats.resyncs[symbol] += 1
            st.synced = False
            # A NeedSnapshot is queued by the first diff after the reconnect (as at start), unless one is
            # still out: its answer is then checked against the new stream like any other.
            self._set_state(symbol, BookState.RESYNCING, f"disconnected ({conn})", ts_recv)


class BinanceSpotAdapter(_BinanceAdapter):
    venue = Venue.BINANCE_SPOT
    futures = False
    depth_path = "/api/v3/depth"
    klines_path = "/api/v3/klines"

    def _chained(self, ev: DepthUpdate | DepthText, last: int) -> bool:
        return last + 1 == ev.U

    def _first_fits(self, ev: DepthUpdate, last: int) -> bool:
        return ev.U <= last + 1 <= ev.u

    def _already_in(self, ev: DepthUpdate, last: int) -> bool:
        return ev.u <= last


class BinanceUsdmAdapter(_BinanceAdapter):
    venue = Venue.BINANCE_USDM
    futures = True
    depth_path = "/fapi/v1/depth"
    klines_path = "/fapi/v1/klines"
    _LIMITS = (5, 10, 20, 50, 100, 500, 1000)  # the only depth limits /fapi/v1/depth accepts

    def _snapshot_limit(self) -> int:
        want = self.cfg.snapshot_limit
        return next((n for n in self._LIMITS if n >= want), self._LIMITS[-1])

    def _chained(self, ev: DepthUpdate | DepthText, last: int) -> bool:
        return ev.pu == last

    def _first_fits(self, ev: DepthUpdate, last: int) -> bool:
        return ev.U <= last <= ev.u

    def _already_in(self, ev: DepthUpdate, last: int) -> bool:
        return ev.u < last
