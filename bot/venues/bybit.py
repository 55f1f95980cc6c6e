"""Bybit v5 public streams, spot and linear: wire structs, parsers, and the two adapters.

Venue spellings stay in this file: topics (``orderbook.200.BTCUSDT``), ``S: "Buy"``, ``confirm``,
interval codes ``1``/``60``/``D``. Outside it there are only canonical symbols and domain events.

Every frame is a JSON object. Data frames carry ``topic``; control frames carry ``op`` (subscribe acks,
pongs). The key order differs between the spot and linear connections (``"topic","ts","type"`` against
``"topic","type","ts"``; spot klines even start with ``"type"``), so frames are parsed by key only: the
hot path merely *looks* for the topic near the front to pick the typed decoder, and the decoder itself
matches keys. Prices are decimal strings, not zero-padded on spot (``"65140"``), decoded straight to
floats; an orderbook frame's levels are kept as JSON text for the book (``bot.venues.levels``). A frame
that does not decode is counted and dropped (a delta with malformed levels too, the book untouched).

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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import numpy as np
import structlog

from bot.book import NO_LEVELS, OrderBook, as_levels
from bot.bus import EventBus
from bot.config import INTERVALS_S, BookConfig, VenueConfig
from bot.errors import MalformedMessage
from bot.events import BookState, BookUpdate, KlineClosed, Side, Trade, Venue
from bot.orders import FundingRate
from bot.venues import bybit_kernels as bk
from bot.venues import json_kernels as jk
from bot.venues._shared import DECODE_ERRORS, NS_PER_MS, BookAdapter
from bot.venues.base import NO_CLOCK, ConnectionSpec, Publish, ReplayClock, Resubscribe
from bot.venues.funding import FundingFilter, float_decimal
from bot.venues.levels import Price, Size, WireLevels, parse_pair

if TYPE_CHECKING:
    from bot.recording import Frames

log = structlog.get_logger(__name__)

# Our interval names -> Bybit's kline interval codes (minutes, or D/W/M).
INTERVAL_CODES = {"1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "4h": "240", "1d": "D"}
MAX_ARGS_PER_SUBSCRIBE = 10


# ------------------------------------------------------------------------------------------------
# Wire types
# ------------------------------------------------------------------------------------------------
class OrderBookData(msgspec.Struct):
    s: str
    b: WireLevels
    a: WireLevels
    u: int
    seq: int = 0


class OrderBookMsg(msgspec.Struct):
    """``orderbook.{depth}.{symbol}``: ``type`` is ``snapshot`` or ``delta``; ``ts`` ms. Linear delta::

        {"topic":"orderbook.200.SOLUSDT","type":"delta","ts":1786310819154,"data":{"s":"SOLUSDT",
         "b":[["77.290","5408.7"]],"a":[["77.310","211.6"]],"u":13783325,"seq":272903624865},"cts":1786310819145}

    Spot delta (other key order, prices not zero-padded, size "0" deletes)::

        {"topic":"orderbook.200.BTCUSDT","ts":1786310816816,"type":"delta","data":{"s":"BTCUSDT","b":[],
         "a":[["65140.5","0.472215"],["65145.7","0.03"],["65150.2","0.000231"],["65239","0"]],"u":62505426,
         "seq":112488545879},"cts":1786310816779}
    """

    topic: str
    type: str
    ts: int
    data: OrderBookData
    cts: int = 0


class RawBookData(msgspec.Struct):
    s: str
    b: msgspec.Raw
    a: msgspec.Raw
    u: int


class RawBookMsg(msgspec.Struct):
    """``OrderBookMsg`` with the levels left as raw JSON, for ``bot.venues.levels`` (the hot path)."""

    topic: str
    type: str
    ts: int
    data: RawBookData


class BookMsg(NamedTuple):
    """An orderbook message; its levels as (n, 2) float arrays (price, size), or still the JSON text."""

    topic: str
    type: str
    ts: int
    s: str
    u: int
    b: np.ndarray
    a: np.ndarray
    raw: tuple[bytes, bytes] | None = None  # (bids, asks) JSON text, not read yet; then b and a are empty

    @classmethod
    def from_raw(cls, m: RawBookMsg) -> BookMsg:
        d = m.data
        return cls(m.topic, m.type, m.ts, d.s, d.u, NO_LEVELS, NO_LEVELS, (bytes(d.b), bytes(d.a)))

    @classmethod
    def from_wire(cls, m: OrderBookMsg) -> BookMsg:
        d = m.data
        return cls(m.topic, m.type, m.ts, d.s, d.u, as_levels(d.b), as_levels(d.a))

    def levels(self) -> tuple[np.ndarray, np.ndarray]:
        """Both sides as arrays (msgspec's error for malformed levels)."""
        return (self.b, self.a) if self.raw is None else parse_pair(*self.raw)

class TradeItem(msgspec.Struct):
    T: int  # trade time, ms
    s: str
    S: str  # taker side: Buy | Sell
    v: Size
    p: Price
    i: str  # trade id: a UUID on linear, a numeric string on spot
    L: str | None = None  # tick direction; linear only
    BT: bool = False  # block trade
    seq: int = 0


class TradeMsg(msgspec.Struct):
    """``publicTrade.{symbol}``: a list of trades. Linear::

        {"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1786310819681,"data":[{"T":1786310819680,
         "s":"BTCUSDT","S":"Sell","v":"0.004","p":"65114.20","L":"MinusTick",
         "i":"a9188a0a-82bc-50de-be60-03eedbe3cdd7","BT":false,"RPI":false,"seq":753843954913}]}

    Spot (no ``L``)::

        {"topic":"publicTrade.ETHUSDT","ts":1786310821917,"type":"snapshot","data":[{"i":"2280000001739247417",
         "T":1786310821917,"p":"1923.28","v":"0.04537","S":"Sell","seq":178477362706,"s":"ETHUSDT","BT":false,
         "RPI":false}]}
    """

    topic: str
    ts: int
    data: list[TradeItem]
    type: str = "snapshot"


class KlineItem(msgspec.Struct):
    start: int  # ms
    end: int  # ms, start + interval - 1
    interval: str
    open: Price
    close: Price
    high: Price
    low: Price
    volume: Size
    confirm: bool  # the candle is closed
    turnover: Size = 0.0
    timestamp: int = 0


class KlineMsg(msgspec.Struct):
    """``kline.{interval}.{symbol}``. At the minute boundary one message carries the closed candle
    (``confirm: true``) and the new one::

        {"topic":"kline.1.ETHUSDT","data":[{"start":1786310760000,"end":1786310819999,"interval":"1",
         "open":"1922.43","close":"1922.48","high":"1922.48","low":"1922.42","volume":"15.7",
         "turnover":"30182.0724","confirm":true,"timestamp":1786310820123},{"start":1786310820000,
         "end":1786310879999,"interval":"1","open":"1922.48","close":"1922.48","high":"1922.48",
         "low":"1922.48","volume":"0","turnover":"0","confirm":false,"timestamp":1786310820123}],
         "ts":1786310820123,"type":"snapshot"}
    """

    topic: str
    ts: int
    data: list[KlineItem]
    type: str = "snapshot"


class TickerData(msgspec.Struct):
    symbol: str
    lastPrice: float | None = None
    bid1Price: float | None = None
    bid1Size: float | None = None
    ask1Price: float | None = None
    ask1Size: float | None = None
    markPrice: float | None = None
    indexPrice: float | None = None
    fundingRate: str | None = None  # linear only; kept as text for an exact Decimal
    nextFundingTime: int | None = None  # ms, sent as a string


class TickerMsg(msgspec.Struct):
    """``tickers.{symbol}``: a snapshot, then (linear) deltas carrying only the fields that changed::

        {"topic":"tickers.ETHUSDT","type":"delta","data":{"symbol":"ETHUSDT","bid1Price":"1922.49",
         "bid1Size":"153.59"},"cs":430879421964,"ts":1786310819274}

    A linear snapshot carries the funding fields (cut)::

        {"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT",...,"markPrice":"65117.44",
         ...,"fundingIntervalHour":"8","fundingCap":"0.005",...,"nextFundingTime":"1786320000000",
         "fundingRate":"0.0001",...},"cs":753843900397,"ts":1786310817583}

    and a delta only when the rate changes: ``{"topic":"tickers.ETHUSDT","type":"delta","data":{
    "symbol":"ETHUSDT",...,"fundingRate":"0.00004709",...},...}`` (no ``nextFundingTime``).

    Spot sends snapshots only, each with a subset of fields (``lastPrice``, ``usdIndexPrice``, ...).
    """

    topic: str
    type: str
    data: TickerData
    ts: int = 0
    cs: int = 0


class OpMsg(msgspec.Struct):
    """Control frames. Subscribe acks, linear then spot (no ``req_id``)::

        {"success":true,"ret_msg":"","conn_id":"d8bu1olkndm7crnfs1e0-j6akw","req_id":"","op":"subscribe"}
        {"success":true,"ret_msg":"subscribe","conn_id":"d9avt8shteepr00gfc1g-4zd1x","op":"subscribe"}

    A refusal: ``{"success":false,"ret_msg":"Invalid topic: invalid.topic.BTCUSDT","conn_id":"...",
    "op":"subscribe"}``. Pongs come in two forms: ``{"success":true,"ret_msg":"pong","conn_id":"...",
    "req_id":"","op":"pong"}`` (or ``"op":"ping"`` on some spot servers) and
    ``{"args":["1777226678908"],"conn_id":"yzr7jz02gws1vh60mk5m-hxqdp","op":"pong"}``.
    """

    op: str
    success: bool | None = None
    ret_msg: str = ""
    conn_id: str = ""
    req_id: str | None = None
    args: list[str] | None = None

    @property
    def is_pong(self) -> bool:
        return self.op == "pong" or self.ret_msg == "pong"


class RestKlineRow(msgspec.Struct, array_like=True):
    """``[startTime, open, high, low, close, volume, turnover]``, all strings."""

    start: int
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Size


class RestKlineResult(msgspec.Struct):
    rows: list[RestKlineRow] = msgspec.field(name="list")


class RestKlines(msgspec.Struct):
    """``GET /v5/market/kline`` (rows newest first)::

    {"retCode":0,"retMsg":"OK","result":{"symbol":"BTCUSDT","category":"linear","list":[["1694649600000",
     "26210","26527.2","26125.8","26268.2","11185.573","293656450.7204"],...]},"retExtInfo":{},"time":...}
    """

    retCode: int
    retMsg: str = ""
    result: RestKlineResult | None = None


class FundingView(NamedTuple):
    """The funding fields of a linear ticker, deltas merged in (None / nan where never sent)."""

    rate: str | None
    next_funding_ms: int | None
    mark_px: float


def merge_funding(prev: FundingView | None, msg: TickerMsg) -> FundingView:
    """``merge_ticker`` for the funding fields: a snapshot replaces, a delta keeps what it does not carry."""
    d = msg.data
    if prev is None or msg.type == "snapshot":
        prev = FundingView(None, None, _NAN)
    return FundingView(
        prev.rate if d.fundingRate is None else d.fundingRate,
        prev.next_funding_ms if d.nextFundingTime is None else d.nextFundingTime,
        prev.mark_px if d.markPrice is None else d.markPrice,
    )


class Ticker(NamedTuple):
    """The latest ticker of a symbol, deltas merged in; nan where never sent."""

    symbol: str
    last_px: float
    bid_px: float
    bid_sz: float
    ask_px: float
    ask_sz: float
    mark_px: float
    index_px: float
    ts_event: int


class _Topic(msgspec.Struct):
    topic: str


_BOOK = msgspec.json.Decoder(RawBookMsg)
_TOPIC = msgspec.json.Decoder(_Topic)
_TRADES = msgspec.json.Decoder(TradeMsg, strict=False)
_KLINES = msgspec.json.Decoder(KlineMsg, strict=False)
_TICKER = msgspec.json.Decoder(TickerMsg, strict=False)
_OP = msgspec.json.Decoder(OpMsg, strict=False)
_ANY = msgspec.json.Decoder(dict[str, Any])
_REST_KLINES = msgspec.json.Decoder(RestKlines, strict=False)
_NAN = float("nan")
FEW_FRAMES = 32  # on_ws_frames: up to this many frames, on_ws per frame is quicker than routing them as arrays
_BUY, _SELL, _LIVE = Side.BUY, Side.SELL, BookState.LIVE  # enum members read once (per trade, per delta)

Wire = OrderBookMsg | TradeMsg | KlineMsg | TickerMsg | OpMsg
_TOPIC_TYPES: dict[str, type] = {
    "orderbook": OrderBookMsg,
    "publicTrade": TradeMsg,
    "kline": KlineMsg,
    "tickers": TickerMsg,
}


def parse_frame(raw: str | bytes) -> Wire | None:
    """Decode any Bybit public frame by key; None for a topic we do not know. Raises ``MalformedMessage``."""
    try:
        obj = _ANY.decode(raw)
        topic = obj.get("topic")
        if isinstance(topic, str):
            typ = _TOPIC_TYPES.get(topic.partition(".")[0])
            return None if typ is None else msgspec.convert(obj, typ, strict=False)
        if "op" in obj:
            return msgspec.convert(obj, OpMsg, strict=False)
        raise MalformedMessage("neither a topic nor an op")
    except DECODE_ERRORS as e:
        raise MalformedMessage(f"not a Bybit frame: {e}") from e


def merge_ticker(prev: Ticker | None, msg: TickerMsg) -> Ticker:
    """Fold a ticker snapshot or delta into the last known ticker (a delta only carries changes)."""
    d = msg.data
    if prev is None or msg.type == "snapshot":  # a snapshot replaces; fields it lacks become nan
        prev = Ticker(d.symbol, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, 0)
    return Ticker(
        d.symbol,
        prev.last_px if d.lastPrice is None else d.lastPrice,
        prev.bid_px if d.bid1Price is None else d.bid1Price,
        prev.bid_sz if d.bid1Size is None else d.bid1Size,
        prev.ask_px if d.ask1Price is None else d.ask1Price,
        prev.ask_sz if d.ask1Size is None else d.ask1Size,
        prev.mark_px if d.markPrice is None else d.markPrice,
        prev.index_px if d.indexPrice is None else d.indexPrice,
        msg.ts * NS_PER_MS or prev.ts_event,
    )


def to_trades(venue: Venue, symbol: str, msg: TradeMsg, ts_recv: int) -> list[Trade]:
    return [
        Trade(
            ts_event=t.T * NS_PER_MS, ts_recv=ts_recv, venue=venue, symbol=symbol, price=t.p, size=t.v,
            taker_side=_BUY if t.S == "Buy" else _SELL, trade_id=t.i,
        )
        for t in msg.data
    ]


# ------------------------------------------------------------------------------------------------
# Adapters
# ------------------------------------------------------------------------------------------------
Handler = Callable[[str | bytes, str, int], None]


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
        self.tickers: dict[str, Ticker] = {}
        # Funding (linear, cfg.funding): tickers subscribed, FundingRate published when the rate changes.
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
            self._routes[f"tickers.{s}"] = (self._on_ticker, s)
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
            body = _REST_KLINES.decode(raw)
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
                    self._skip(f"unknown_topic:{_TOPIC.decode(raw).topic}")
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
        batches (``bot.ring.GridSet``); otherwise one ``on_ws`` per frame. The frames are routed in one pass
        (``bybit_kernels.route_topics``: the lookup of ``on_ws``); ``bybit_kernels.apply_deltas`` then applies
        the deltas of the books whose updates may go as a batch (in sync, LIVE, ``EventBus.batches``) and
        stops at any frame it does not take (see that module), which goes to its handler here as ``on_ws``
        would hand it, and before any frame at which the clock is due, which ticks first. At each stop, first
        the run's books and counters are brought up to date and its ``BookUpdate`` events published as one
        ``BookUpdates`` batch, then the frames it passed over are handled in order: trades, klines and
        tickers whose events nobody receives (they touch no book, so their order against the deltas is
        nobody's business). Books, counters, events received, ticks and grids are what one ``on_ws`` per
        frame gives (``tests/replay/test_offline_loops.py``). A run of up to ``FEW_FRAMES`` frames goes frame
        by frame (a replay merging venues by receive time slices that finely; the arrays would cost more).
        """
        bus = self._bus
        if (bus is None or len(frames.ts) <= FEW_FRAMES or len(self.symbols) > jk.MAX_BOOKS
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
        nb = len(self.symbols)
        books = np.zeros((nb, jk.B_COLS), np.int64)
        tops = np.zeros((nb, 4))
        later = np.empty(n, np.int64)
        rows = np.empty((n, 4), np.int64)
        row_tops = np.empty((n, 4))
        healed = np.zeros(4, np.int64)
        healed_f = np.zeros(6)
        stats = self.stats
        i = 0
        while True:
            if table.key != (self._routes_version, bus.version):  # a handler changed the routes or the bus
                table = self._frame_table(bus)
                rid = bk.route_topics(buf, raw, end, table.names, table.bounds)
                rid_l = rid.tolist()
            states = self._loop_books(bus, books, self.synced.__getitem__)
            i_end, why, n_later, n_rows, levels = bk.apply_deltas(
                buf, raw, end, ts, rid, i, tick_first, clock.due, table.routes, table.names, table.bounds,
                self._symbol_bytes, self._symbol_bounds, states, books, tops, later, rows, row_tops, healed, healed_f,
            )  # fmt: skip
            if n_rows:
                self._loop_took(bus, books, tops, rows[:n_rows], row_tops[:n_rows], levels)
            handlers = table.handlers
            for j in later[:n_later].tolist():  # routed, so as _handle does with a route
                frame = data[raws[j] : ends[j]]
                handler, symbol = handlers[rid_l[j]]
                try:
                    handler(frame, symbol, times[j])
                except (*DECODE_ERRORS, MalformedMessage) as e:
                    self._malformed("ws", e, frame)
            stats.messages += i_end - i
            if why == jk.END:
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
        (``_on_book``); trades, klines and tickers are ``LATER`` when their events reach nobody."""
        key = (self._routes_version, bus.version)
        if self._table is not None and self._table.key == key:
            return self._table
        later: dict[Handler, bool] = {
            self._on_trades: not bus.wants(Trade),
            self._on_klines: not bus.wants(KlineClosed),
            self._on_ticker: self.funding is None or not bus.wants(FundingRate),
        }
        names = list(self._routes_b)
        handlers = list(self._routes_b.values())
        kinds = []
        for handler, symbol in handlers:
            if handler == self._on_book:
                kinds.append((jk.BOOK, self.symbols.index(symbol)))
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
        elif isinstance(msg, TickerMsg):
            self._ticker(msg, symbol, ts_recv)
        else:
            self.ignored += 1
            self._skip(f"not_handled:{msg.topic}")

    def _symbol_of(self, msg: Wire) -> str | None:
        if isinstance(msg, OpMsg):
            return None
        s = msg.topic.rpartition(".")[2]
        return s if s in self.synced else None

    # -- order book ------------------------------------------------------------------------------
    def _on_book(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        self._book(BookMsg.from_raw(_BOOK.decode(data)), symbol, ts_recv)

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
        for t in to_trades(self.venue, symbol, _TRADES.decode(data), ts_recv):
            self.publish(t)

    def _on_klines(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        self._klines(_KLINES.decode(data), symbol, ts_recv)

    def _klines(self, msg: KlineMsg, symbol: str, ts_recv: int) -> None:
        for k in msg.data:
            if k.confirm:
                ev = self._kline_closed(
                    symbol, k.start, k.end - k.start + 1, (k.open, k.high, k.low, k.close, k.volume), ts_recv, "ws"
                )
                if ev is not None:
                    self.publish(ev)

    def _on_ticker(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        self._ticker(_TICKER.decode(data), symbol, ts_recv)

    def _ticker(self, msg: TickerMsg, symbol: str, ts_recv: int) -> None:
        self.tickers[symbol] = merge_ticker(self.tickers.get(symbol), msg)
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
