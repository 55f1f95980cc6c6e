"""Binance Spot and USD-M futures: wire structs, parsers, and the two adapters.

Venue spellings stay in this file: lower-case stream names (``btcusdt@depth@100ms``), one-letter keys,
``m`` for "buyer is maker". Outside it there are only canonical symbols (``BTCUSDT``) and domain events.

Frames arrive as a combined-stream envelope ``{"stream": ..., "data": ...}`` (what ``connections``
asks for) or as raw payloads (``/ws/<stream>``). The hot path reads the stream name at the front of the
frame, looks it up in a table built from the config and decodes the frame with the typed decoder of
that stream (msgspec, lax mode: decimal strings become floats in C). A diff-depth frame is decoded up
to its levels only (``depth_text``); the levels' JSON goes to the book as text (``bot.venues.levels``).
Anything else (raw payloads, unknown streams, key orders other than Binance's) takes ``parse_frame``,
which decides by key and stream name, never by position. A frame that does not decode is counted and
dropped; so is a diff whose levels are malformed, with the book left as it was.

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

import re
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import msgspec
import numpy as np
import structlog

from bot.book import OrderBook, as_levels
from bot.bus import EventBus
from bot.config import DEPTHS, INTERVALS_S, BookConfig, VenueConfig
from bot.errors import MalformedMessage
from bot.events import BookState, BookUpdate, KlineClosed, Side, Trade, Venue
from bot.orders import FundingRate
from bot.recording_kernels import route
from bot.venues import binance_kernels
from bot.venues import json_kernels as jk
from bot.venues._shared import DECODE_ERRORS, NS_PER_MS, BookAdapter
from bot.venues.base import NO_CLOCK, ConnectionSpec, NeedSnapshot, Publish, ReplayClock
from bot.venues.binance_funding import MARK_PRICE_STREAM, MarkPriceUpdate, funding_args
from bot.venues.funding import FundingFilter
from bot.venues.levels import Price, Size, WireLevels, parse_pair

if TYPE_CHECKING:
    from bot.recording import Frames

log = structlog.get_logger(__name__)

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------
# Wire types: Binance's own shapes and spellings. Fields we do not use are left out (msgspec skips them).
# ------------------------------------------------------------------------------------------------
class Envelope(msgspec.Struct, Generic[T]):
    """Combined-stream wrapper: ``{"stream": "<name>", "data": <payload>}``."""

    stream: str
    data: T


class WireDepth(msgspec.Struct):
    """Diff depth (``<sym>@depth``, ``@depth@100ms``; USD-M also ``@depth@0ms``) and USD-M partial depth.

    Spot (no ``T``, no ``pu``)::

        {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161258209,"s":"BTCUSDT",
         "U":50093241262,"u":50093241266,"b":[["61824.00000000","0.32726000"],["61799.50000000","0.06470000"]],
         "a":[["61840.18000000","0.04959000"],["61840.19000000","0.00000000"]]}}

    USD-M (``T`` transaction time, ``pu`` = previous event's ``u``)::

        {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161389724,"T":1723161389706,
         "s":"BTCUSDT","U":5123118435177,"u":5123118436391,"pu":5123118434683,"b":[["5000.00","2.301"]],
         "a":[["62438.40","23.249"],["62547.00","0.000"]]}}
    """

    E: int
    s: str
    U: int
    u: int
    b: WireLevels
    a: WireLevels
    T: int = 0
    pu: int = -1


class DepthHead(msgspec.Struct):
    """``WireDepth`` up to its levels: what the hot path decodes (the levels go to the book as text)."""

    E: int
    s: str
    U: int
    u: int
    T: int = 0
    pu: int = -1


class DepthText(NamedTuple):
    """A diff depth event with its levels still JSON text: the book reads them (``OrderBook.apply_json``)."""

    E: int
    s: str
    U: int
    u: int
    b: bytes
    a: bytes
    T: int
    pu: int


class DepthUpdate(msgspec.Struct):
    """A diff (or USD-M partial) depth event with its levels as (n, 2) float arrays (price, size)."""

    E: int
    s: str
    U: int
    u: int
    b: np.ndarray
    a: np.ndarray
    T: int = 0
    pu: int = -1

    @classmethod
    def from_text(cls, d: DepthText) -> DepthUpdate:
        b, a = parse_pair(d.b, d.a)
        return cls(d.E, d.s, d.U, d.u, b, a, d.T, d.pu)

    @classmethod
    def from_wire(cls, w: WireDepth) -> DepthUpdate:
        return cls(w.E, w.s, w.U, w.u, as_levels(w.b), as_levels(w.a), w.T, w.pu)


class DepthSnapshot(msgspec.Struct):
    """REST ``GET /api/v3/depth`` (spot) or ``/fapi/v1/depth`` (USD-M adds ``E``, ``T``); also the spot
    partial-depth stream payload (``<sym>@depth5``, no symbol, no time). Spot REST, cut to 2 levels::

        {"lastUpdateId":50093239218,"bids":[["61837.63000000","3.78826000"],["61837.62000000","0.61700000"]],
         "asks":[["61837.64000000","1.54698000"],["61837.65000000","0.00843000"]]}

    USD-M REST, cut to 1 level::

        {"lastUpdateId":5123107852948,"E":1723161256501,"T":1723161256493,"bids":[["61800.20","2.909"]],
         "asks":[["61800.30","1.072"]]}
    """

    lastUpdateId: int
    bids: WireLevels
    asks: WireLevels
    E: int = 0
    T: int = 0


class BookTicker(msgspec.Struct):
    """``<sym>@bookTicker``. Spot has no ``e``/``E``::

        {"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT","b":"61837.63000000",
         "B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}

    USD-M adds ``e``, ``E`` and ``T``::

        {"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":5123107839020,"s":"BTCUSDT",
         "b":"61800.20","B":"2.507","a":"61800.30","A":"2.510","T":1723161256313,"E":1723161256313}}
    """

    u: int
    s: str
    b: Size
    B: Size
    a: Size
    A: Size
    E: int = 0
    T: int = 0


class WireTrade(msgspec.Struct):
    """``<sym>@trade``. ``m``: the buyer is the maker, so the taker sold. Spot has ``M``::

        {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":3735683259,
         "p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}}

    USD-M has ``X`` (``MARKET``, ...) instead::

        {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT",
         "t":5266583935,"p":"61800.30","q":"0.006","X":"MARKET","m":false}}
    """

    E: int
    s: str
    t: int
    p: Price
    q: Size
    T: int
    m: bool
    M: bool | None = None
    X: str | None = None


class KlineBody(msgspec.Struct):
    t: int  # open time, ms
    T: int  # close time, ms (open + interval - 1)
    s: str
    i: str
    o: Price
    c: Price
    h: Price
    l: Price  # noqa: E741 (the venue's spelling)
    v: Size
    x: bool  # closed?


class WireKline(msgspec.Struct):
    """``<sym>@kline_<interval>``; ``k.x`` is true on the closing update only (2021 sample, USD-M)::

        {"stream":"sushiusdt@kline_1m","data":{"e":"kline","E":1626992760203,"s":"SUSHIUSDT","k":{
         "t":1626992700000,"T":1626992759999,"s":"SUSHIUSDT","i":"1m","f":126902874,"L":126902986,
         "o":"7.6080","c":"7.6170","h":"7.6180","l":"7.6070","v":"3005","n":113,"x":true,"q":"22875.8590",
         "V":"1900","Q":"14464.6960","B":"0"}}}
    """

    E: int
    s: str
    k: KlineBody


class ServerShutdown(msgspec.Struct):
    """Sent before the server goes away: ``{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":...}}``."""

    E: int
    e: str = "serverShutdown"


class Response(msgspec.Struct):
    """Answer to a SUBSCRIBE/UNSUBSCRIBE: ``{"result":null,"id":1}``, or ``{"error":{...},"id":1}``."""

    id: int | str | None = None
    result: Any = None
    error: Any = None


class RestKline(msgspec.Struct, array_like=True):
    """One row of ``GET /api/v3/klines`` / ``/fapi/v1/klines`` (oldest first; 12 fields, 7 used)::

    [1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",1499644799999,...]
    """

    t: int
    o: Price
    h: Price
    l: Price  # noqa: E741
    c: Price
    v: Size
    T: int


class Kind(StrEnum):
    DEPTH = "depth"  # diff depth
    PARTIAL = "partial"  # partial depth: a whole top-N picture
    BOOK_TICKER = "book_ticker"
    TRADE = "trade"
    KLINE = "kline"
    MARK_PRICE = "mark_price"  # USD-M funding rate (bot.venues.binance_funding)
    SHUTDOWN = "shutdown"
    RESPONSE = "response"
    UNKNOWN = "unknown"


class Frame(NamedTuple):
    """One decoded frame: what it is, the stream it came on ('' for raw payloads), the wire struct."""

    kind: Kind
    stream: str
    msg: Any


class BestQuote(NamedTuple):
    """A bookTicker in domain terms: the venue's own best bid/ask after update ``update_id``."""

    symbol: str
    update_id: int
    bid_px: float
    bid_sz: float
    ask_px: float
    ask_sz: float
    ts_event: int  # ns; 0 on spot (no event time)


_SNAPSHOT = msgspec.json.Decoder(DepthSnapshot, strict=False)
_ENV_DEPTH = msgspec.json.Decoder(Envelope[WireDepth], strict=False)
_ENV_HEAD = msgspec.json.Decoder(Envelope[DepthHead])
_HEAD = msgspec.json.Decoder(DepthHead)
_ENV_SNAPSHOT = msgspec.json.Decoder(Envelope[DepthSnapshot], strict=False)
_ENV_TRADE = msgspec.json.Decoder(Envelope[WireTrade], strict=False)
_ENV_KLINE = msgspec.json.Decoder(Envelope[WireKline], strict=False)
_ENV_TICKER = msgspec.json.Decoder(Envelope[BookTicker], strict=False)
_ENV_MARK = msgspec.json.Decoder(Envelope[MarkPriceUpdate], strict=False)
_ENV_ANY = msgspec.json.Decoder(Envelope[msgspec.Raw])
_ANY = msgspec.json.Decoder(dict[str, Any])
_REST_KLINES = msgspec.json.Decoder(list[RestKline], strict=False)
_PARTIAL_RE = re.compile(r"depth\d+(@|$)")
FEW_FRAMES = 32  # on_ws_frames: up to this many frames, on_ws per frame is quicker than routing them as arrays

_TYPES: dict[Kind, type] = {
    Kind.DEPTH: WireDepth,
    Kind.BOOK_TICKER: BookTicker,
    Kind.TRADE: WireTrade,
    Kind.KLINE: WireKline,
    Kind.MARK_PRICE: MarkPriceUpdate,
    Kind.SHUTDOWN: ServerShutdown,
    Kind.RESPONSE: Response,
}


def stream_kind(stream: str, futures: bool = False) -> Kind:
    """What a stream carries, from its name (``btcusdt@depth20@100ms`` is partial, ``@depth@100ms`` diff)."""
    if stream == "!serverShutdown":
        return Kind.SHUTDOWN
    _, _, rest = stream.partition("@")
    if rest == "trade":
        return Kind.TRADE
    if rest.startswith("depth"):
        return Kind.PARTIAL if _PARTIAL_RE.match(rest) else Kind.DEPTH
    if rest.startswith("kline_"):
        return Kind.KLINE
    if rest == "bookTicker":
        return Kind.BOOK_TICKER
    if rest in ("markPrice", "markPrice@1s"):
        return Kind.MARK_PRICE
    return Kind.UNKNOWN


def _payload_kind(obj: dict[str, Any]) -> Kind:
    """The kind of a raw (un-enveloped) payload, by its keys."""
    e = obj.get("e")
    if e == "depthUpdate":
        return Kind.DEPTH
    if e == "trade":
        return Kind.TRADE
    if e == "kline":
        return Kind.KLINE
    if e == "markPriceUpdate":
        return Kind.MARK_PRICE
    if e == "bookTicker" or (e is None and {"u", "s", "b", "B", "a", "A"} <= obj.keys()):
        return Kind.BOOK_TICKER
    if e == "serverShutdown":
        return Kind.SHUTDOWN
    if e is None and "lastUpdateId" in obj:
        return Kind.PARTIAL
    if e is None and "id" in obj and ("result" in obj or "error" in obj):
        return Kind.RESPONSE
    return Kind.UNKNOWN


def parse_frame(raw: str | bytes, futures: bool = False) -> Frame:
    """Decode any Binance websocket frame by key and stream name. Raises ``MalformedMessage``.

    Spot partial depth decodes to ``DepthSnapshot``; USD-M partial depth to ``DepthUpdate``.
    """
    try:
        obj = _ANY.decode(raw)
        stream = ""
        if "stream" in obj and "data" in obj:
            stream = obj["stream"]
            if not isinstance(stream, str):
                raise MalformedMessage("stream name is not a string")
            kind = stream_kind(stream)
            payload = obj["data"]
            if not isinstance(payload, dict):
                raise MalformedMessage("data is not an object")
            if kind is Kind.SHUTDOWN or payload.get("e") == "serverShutdown":
                kind = Kind.SHUTDOWN
        else:
            payload = obj
            kind = _payload_kind(obj)
        if kind is Kind.UNKNOWN:
            return Frame(kind, stream, payload)
        if kind is Kind.PARTIAL:
            typ: type = WireDepth if ("e" in payload or futures) else DepthSnapshot
        else:
            typ = _TYPES[kind]
        msg: Any = msgspec.convert(payload, typ, strict=False)
        return Frame(kind, stream, DepthUpdate.from_wire(msg) if typ is WireDepth else msg)
    except DECODE_ERRORS as e:
        raise MalformedMessage(f"not a Binance frame: {e}") from e


def parse_snapshot(raw: str | bytes) -> DepthSnapshot:
    """Decode a REST depth snapshot body. Raises ``MalformedMessage`` (error bodies included)."""
    try:
        return _SNAPSHOT.decode(raw)
    except DECODE_ERRORS as e:
        raise MalformedMessage(f"not a Binance depth snapshot: {e}") from e


def _name(f: Frame) -> str:
    """A frame's stream, or for a raw payload its kind (and event type, symbol), for skip reasons."""
    if f.stream:
        return f.stream
    obj = f.msg if isinstance(f.msg, dict) else {"s": getattr(f.msg, "s", None)}
    e, s = obj.get("e"), obj.get("s")
    return f"raw {f.kind.value}" + (f" e={e}" if isinstance(e, str) else "") + (f" {s}" if isinstance(s, str) else "")


def to_best_quote(t: BookTicker) -> BestQuote:
    return BestQuote(t.s, t.u, t.b, t.B, t.a, t.A, t.E * NS_PER_MS)


# Enum members read once: ``Side.SELL`` is a class attribute lookup through the enum machinery (~0.1 us),
# paid per trade and per depth message otherwise.
_SELL, _BUY = Side.SELL, Side.BUY
_STALE = BookState.STALE


def to_trade(venue: Venue, symbol: str, t: WireTrade, ts_recv: int) -> Trade:
    """``m`` (buyer is maker) means the taker sold."""
    return Trade(
        ts_event=t.T * NS_PER_MS, ts_recv=ts_recv, venue=venue, symbol=symbol, price=t.p, size=t.q,
        taker_side=_SELL if t.m else _BUY, trade_id=str(t.t),
    )


# ------------------------------------------------------------------------------------------------
# Adapters
# ------------------------------------------------------------------------------------------------
def _parsed(ev: DepthUpdate | DepthText) -> DepthUpdate:
    return DepthUpdate.from_text(ev) if type(ev) is DepthText else ev  # type: ignore[return-value]


def depth_text(frame: str | bytes, prefix: bytes = b"") -> DepthText | None:
    """A combined-stream diff frame split into its head (decoded) and its two levels arrays (kept as text).

    Binance writes the levels last (``...,"u":50093241266,"b":[...],"a":[...]}}``), so the head is the
    frame up to ``,"b":[`` closed with ``}}``: msgspec decodes that small document (the types and bounds
    of every head field checked as before) without walking the levels, which are most of the bytes.
    The levels' JSON is then read once, by the book. None if the frame is not laid out that way (another
    key order, say): the caller decodes it whole. Text frames are read as their UTF-8 bytes.

    ``prefix``, the envelope up to the payload (``{"stream":"btcusdt@depth@100ms","data":{``), saves the
    envelope's decoding when the frame starts with it: the payload's head alone is decoded then, the same
    fields by the same rules. The asks' key is found by its letter (levels hold none; anything else takes
    the plain search), a byte search far quicker than a pattern search over the bids.
    """
    b = frame.encode() if isinstance(frame, str) else frame
    i = b.find(b',"b":[')
    if i < 0 or not b.endswith(b"]}}"):
        return None
    j = b.find(b"a", i) - 3
    if b[j : j + 7] != b'],"a":[':
        j = b.find(b'],"a":[', i)
        if j < 0:
            return None
    if prefix and b.startswith(prefix):
        h = _HEAD.decode(b[len(prefix) - 1 : i] + b"}")
    else:
        h = _ENV_HEAD.decode(b[:i] + b"}}").data
    return DepthText(h.E, h.s, h.U, h.u, b[i + 5 : j + 1], b[j + 6 : -2], h.T, h.pu)


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


Handler = Callable[[str | bytes, str, int], None]


class _BinanceAdapter(BookAdapter):
    futures: bool
    depth_path: str
    klines_path: str
    max_buffer_levels = 250_000  # diff levels buffered while waiting for a snapshot (~3 min of BTC)

    def __init__(self, cfg: VenueConfig, book_cfg: BookConfig, publish: Publish, *, live: bool = True) -> None:
        super().__init__(cfg, book_cfg, publish, live=live)
        self._sync = {s: _SymbolSync() for s in self.symbols}
        self.partial = bool(_PARTIAL_RE.match(cfg.depth))
        self.shutdown_notices = 0
        self.funding = FundingFilter(self.venue) if cfg.funding and self.futures else None  # spot: no funding
        # The hot path's table: the head of a combined-stream frame up to the end of the stream name
        # ('{"stream":"btcusdt@trade"') -> (handler, symbol); the handler None means "skip, no decoding".
        routes: dict[str, tuple[Handler | None, str]] = {}
        # Offline, a recording's diff stream is the book's whatever its speed (a session recorded on
        # @depth@0ms replayed with @depth@100ms configured): _on_other applies any diff stream by its name,
        # so every diff stream the venue serves gets the hot path's route too (same handling, no detour).
        diffs = [d for d in DEPTHS[self.venue] if not _PARTIAL_RE.match(d)] if not (live or self.partial) else []
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
            rows = _REST_KLINES.decode(raw)
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

    def on_ws_frames(self, frames: Frames, clock: ReplayClock = NO_CLOCK) -> None:
        """``on_ws`` for recorded frames, routed in one compiled pass (``bot.recording_kernels.route``: the
        same head lookup as ``on_ws``), so the frames of streams skipped anyway (bookTicker: three quarters
        of a recorded session) are counted without a line of Python each. The frames left are handled in
        order, as bytes, each after ``clock.on_time`` at the latest receive time up to it: the book does not
        change over skipped frames, so that one tick writes the rows a tick at each of them would.

        A run of a few frames (a replay merging several venues by receive time slices them that finely) goes
        frame by frame instead (the base class's ``on_ws`` per frame: the same effect), where the arrays'
        set-up would cost more than it saves."""
        data = frames.data
        ts = frames.ts
        n = len(ts)
        if n <= FEW_FRAMES:
            super().on_ws_frames(frames, clock)
            return
        ids = route(np.frombuffer(data, np.uint8), frames.raw, frames.end, 11, self._heads, self._head_bounds)
        handled = self._handled[ids + 1]
        todo = np.flatnonzero(handled)
        if len(todo) < n:  # frames of skipped streams, counted by reason (their route's entry)
            per_route = np.bincount(ids[~handled], minlength=len(self._head_routes))
            for rid in np.flatnonzero(per_route).tolist():
                self._skip(self._head_routes[rid][1], int(per_route[rid]))
        if not self._started:  # the first frame of the session announces the books (as in on_ws)
            self._start(int(ts[0]))
        stats = self.stats
        handlers = self._head_routes
        done = 0  # frames counted so far
        bus = self._bus
        if len(todo) and bus is not None and self._loop_takes(bus):
            done = self._loop(frames, ids, todo, clock, bus)
        elif len(todo):
            # the latest receive time of each frame handled and the frames skipped right before it
            ticks = np.maximum.reduceat(ts[: todo[-1] + 1], np.concatenate(([0], todo[:-1] + 1))).tolist()
            cols = (todo.tolist(), ticks, ts[todo].tolist(), ids[todo].tolist(), frames.raw[todo].tolist(),
                    frames.end[todo].tolist())  # fmt: skip
            for i, tick, ts_recv, rid, r, e in zip(*cols, strict=True):
                stats.messages += i + 1 - done
                self.ignored += i - done
                done = i + 1
                if tick > clock.due:
                    clock.on_time(tick)
                raw = data[r:e]
                try:  # as in on_ws
                    if rid < 0:
                        self._on_other(parse_frame(raw, self.futures), ts_recv)
                    else:
                        handler, symbol = handlers[rid]
                        handler(raw, symbol, ts_recv)
                except (*DECODE_ERRORS, MalformedMessage) as err:
                    self._malformed("ws", err, raw)
        if done < n:  # skipped frames after the last one handled
            stats.messages += n - done
            self.ignored += n - done
            tick = int(ts[done:].max())
            if tick > clock.due:
                clock.on_time(tick)

    def _loop_takes(self, bus: EventBus) -> bool:
        """Whether ``on_ws_frames`` goes through the compiled loop (``bot.venues.binance_kernels``): diff
        depth configured, every ``BookUpdate`` handler takes batches (``bot.ring.GridSet``)."""
        return not self.partial and len(self.symbols) <= jk.MAX_BOOKS and bus.takes_batches(BookUpdate)

    def _loop(self, frames: Frames, ids: np.ndarray, todo: np.ndarray, clock: ReplayClock, bus: EventBus) -> int:
        """The frames handled of a block (``todo``, routed as ``ids``) with their diffs applied by the compiled
        loop, which stops at any frame it does not take (handed to its handler here, as in the loop of
        ``on_ws_frames``) and where the clock is due (ticked first). At each stop the run's books and
        counters are settled and its ``BookUpdate`` events published as one batch, then the trades, klines
        and mark prices it passed over (their events reach nobody, they touch no book) are handled in
        order. Returns the frames counted (``done``)."""
        data = frames.data
        buf = np.frombuffer(data, np.uint8)
        ts = frames.ts
        ticks = np.maximum.reduceat(ts[: todo[-1] + 1], np.concatenate(([0], todo[:-1] + 1)))
        todo_l, ticks_l, ts_l, ids_l = todo.tolist(), ticks.tolist(), ts.tolist(), ids.tolist()
        raws, ends = frames.raw.tolist(), frames.end.tolist()
        routes = self._loop_routes(bus)
        version = bus.version
        handlers = self._head_routes
        nb = len(self.symbols)
        n = len(todo)
        books = np.zeros((nb, jk.B_COLS), np.int64)
        tops = np.zeros((nb, 4))
        later = np.empty(n, np.int64)
        rows = np.empty((n, 4), np.int64)
        row_tops = np.empty((n, 4))
        healed = np.zeros(4, np.int64)
        healed_f = np.zeros(6)
        stats = self.stats
        in_sync = self._in_sync
        done = 0
        q = 0
        tick_first = True
        while True:
            if bus.version != version:  # a handler (un)subscribed: what reaches nobody may have changed
                routes, version = self._loop_routes(bus), bus.version
            states = self._loop_books(bus, books, in_sync)
            q_end, why, n_later, n_rows, levels, quiet = binance_kernels.apply_diffs(
                buf, frames.raw, frames.end, todo, ticks, ts, ids, q, tick_first, clock.due, routes,
                self._head_bounds, self.futures, self._symbol_bytes, self._symbol_bounds, states, books, tops, later,
                rows, row_tops, healed, healed_f,
            )  # fmt: skip
            if quiet:
                bus.unheard(Trade, quiet)
            if n_rows or books[:, jk.B_SEEN].any():
                self._loop_took(bus, books, tops, rows[:n_rows], row_tops[:n_rows], levels)
                for k in np.flatnonzero(books[:, jk.B_SEEN]).tolist():
                    self._sync[self.symbols[k]].last_event_ms = int(books[k, jk.B_LAST_E])
            for p in later[:n_later].tolist():
                i = todo_l[p]
                raw = data[raws[i] : ends[i]]
                handler, symbol = handlers[ids_l[i]]
                try:  # as in on_ws
                    handler(raw, symbol, ts_l[i])
                except (*DECODE_ERRORS, MalformedMessage) as err:
                    self._malformed("ws", err, raw)
            if q_end > q:  # the frames up to the last one the loop did, the skipped ones among them
                last = todo_l[q_end - 1] + 1
                stats.messages += last - done
                self.ignored += last - done - (q_end - q)
                done = last
            if why == jk.END:
                return done
            if why == jk.TICK:
                clock.on_time(ticks_l[q_end])
                q, tick_first = q_end, False
                continue
            i = todo_l[q_end]
            stats.messages += i + 1 - done
            self.ignored += i - done
            done = i + 1
            raw = data[raws[i] : ends[i]]
            rid = ids_l[i]
            if why == jk.HEALED:
                self._loop_healed(handlers[rid][1], healed.tolist(), healed_f.tolist(), ts_l[i])
            else:
                try:  # as in on_ws
                    if rid < 0:
                        self._on_other(parse_frame(raw, self.futures), ts_l[i])
                    else:
                        handler, symbol = handlers[rid]
                        handler(raw, symbol, ts_l[i])
                except (*DECODE_ERRORS, MalformedMessage) as err:
                    self._malformed("ws", err, raw)
            q, tick_first = q_end + 1, True

    def _in_sync(self, symbol: str) -> bool:
        return self._sync[symbol].synced

    def _loop_routes(self, bus: EventBus) -> np.ndarray:
        """Per head route, for the compiled loop: (kind, book index). Diffs are ``BOOK``; when their events reach
        nobody, trades are ``QUIET`` and klines and mark prices ``LATER``; the rest is handled in order."""
        kinds: dict[Handler, int] = {
            self._on_trade: jk.NOW if bus.wants(Trade) else jk.QUIET,
            self._on_kline: jk.NOW if bus.wants(KlineClosed) else jk.LATER,
            self._on_mark_price: jk.LATER if self.funding is None or not bus.wants(FundingRate) else jk.NOW,
        }
        out = np.zeros((len(self._head_routes), 2), np.int64)
        for r, (handler, symbol) in enumerate(self._head_routes):
            if handler is None:
                out[r, 0] = jk.NOW  # skipped before the loop sees it
            elif handler == self._on_depth:
                out[r] = (jk.BOOK, self.symbols.index(symbol))
            else:
                out[r, 0] = kinds.get(handler, jk.NOW)
        return out

    def _loop_healed(self, symbol: str, healed: list[int], healed_f: list[float], ts_recv: int) -> None:
        """A diff the loop applied that crossed the book (healed): the rest of what ``_depth`` does."""
        n, uid, event_ms, removed = healed
        cross_b, cross_a, bp, bs, ap, as_ = healed_f
        st = self._sync[symbol]
        st.last_event_ms = event_ms
        self.stats.book_messages[symbol] += 1
        book = self.books[symbol]
        book.applied(uid, event_ms * NS_PER_MS, (removed, cross_b, cross_a, bp, bs, ap, as_))
        self._applied(symbol, st, book, n, ts_recv)

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
            self._skip(("unknown_stream:" if f.kind is Kind.UNKNOWN else "symbol_not_configured:") + _name(f))
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
            self._skip(f"not_handled:{_name(f)}")

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
            ev = DepthUpdate.from_wire(_ENV_DEPTH.decode(data).data)
        if ev.s != symbol:
            raise MalformedMessage(f"depth event for {ev.s} on the stream of {symbol}")
        self._depth(ev, symbol, ts_recv)

    def _depth(self, ev: DepthUpdate | DepthText, symbol: str, ts_recv: int) -> None:
        """One diff: from the hot path with its levels still text (read when applied or kept), or parsed."""
        st = self._sync[symbol]
        st.last_event_ms = ev.E
        self.stats.book_messages[symbol] += 1
        if not st.synced:
            self._buffer(symbol, st, _parsed(ev), ts_recv)
            return
        book = self.books[symbol]
        if ev.u <= book.update_id:  # already in the book: a duplicate or a late copy
            self.stats.dropped_stale[symbol] = self.stats.dropped_stale.get(symbol, 0) + 1
            return
        if not self._chained(ev, book.update_id):
            keep = [_parsed(ev)]  # first: a frame with malformed levels raises here, before anything counts
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
            ev = _parsed(ev)
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
            self._partial(DepthUpdate.from_wire(_ENV_DEPTH.decode(data).data), symbol, ts_recv)
        else:
            self._partial(_ENV_SNAPSHOT.decode(data).data, symbol, ts_recv)

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
        self.publish(to_trade(self.venue, symbol, _ENV_TRADE.decode(data).data, ts_recv))

    def _on_kline(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        self._kline(_ENV_KLINE.decode(data).data, symbol, ts_recv)

    def _kline(self, msg: WireKline, symbol: str, ts_recv: int) -> None:
        k = msg.k
        if not k.x:
            return
        ev = self._kline_closed(symbol, k.t, k.T - k.t + 1, (k.o, k.h, k.l, k.c, k.v), ts_recv, "ws")
        if ev is not None:
            self.publish(ev)

    def _on_mark_price(self, data: str | bytes, symbol: str, ts_recv: int) -> None:
        self._mark_price(_ENV_MARK.decode(data).data, symbol, ts_recv)

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
