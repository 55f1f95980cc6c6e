"""Binance Spot and USD-M futures wire formats and their pure parsing: the msgspec structs of every frame
and REST body the adapters read, their decoders, ``parse_frame``, ``depth_text``. Nothing here keeps state;
the adapters (``bot.venues.binance``) route frames and act on what these decode.

Frames arrive as a combined-stream envelope ``{"stream": ..., "data": ...}`` (what the adapters' ``connections``
ask for) or as raw payloads (``/ws/<stream>``). Each stream has a typed decoder (msgspec, lax mode: decimal
strings become floats in C). A diff-depth frame is decoded up to its levels only (``depth_text``); the levels'
JSON goes to the book as text (``bot.venues.levels``). ``parse_frame`` decodes anything else (raw payloads,
unknown streams, key orders other than Binance's) by key and stream name, never by position, and raises
``MalformedMessage`` for a frame that does not decode.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec
import numpy as np

from bot.book import as_levels
from bot.errors import MalformedMessage
from bot.events import Side, Trade, Venue
from bot.venues._shared import DECODE_ERRORS, NS_PER_MS
from bot.venues.binance_funding import MarkPriceUpdate
from bot.venues.levels import Price, Size, WireLevels, parse_pair

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
ENV_DEPTH = msgspec.json.Decoder(Envelope[WireDepth], strict=False)
_ENV_HEAD = msgspec.json.Decoder(Envelope[DepthHead])
_HEAD = msgspec.json.Decoder(DepthHead)
ENV_SNAPSHOT = msgspec.json.Decoder(Envelope[DepthSnapshot], strict=False)
ENV_TRADE = msgspec.json.Decoder(Envelope[WireTrade], strict=False)
ENV_KLINE = msgspec.json.Decoder(Envelope[WireKline], strict=False)
_ENV_TICKER = msgspec.json.Decoder(Envelope[BookTicker], strict=False)
ENV_MARK = msgspec.json.Decoder(Envelope[MarkPriceUpdate], strict=False)
_ENV_ANY = msgspec.json.Decoder(Envelope[msgspec.Raw])
_ANY = msgspec.json.Decoder(dict[str, Any])
REST_KLINES = msgspec.json.Decoder(list[RestKline], strict=False)
PARTIAL_DEPTH_RE = re.compile(r"depth\d+(@|$)")

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
        return Kind.PARTIAL if PARTIAL_DEPTH_RE.match(rest) else Kind.DEPTH
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


def stream_name(f: Frame) -> str:
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


def to_trade(venue: Venue, symbol: str, t: WireTrade, ts_recv: int) -> Trade:
    """``m`` (buyer is maker) means the taker sold."""
    return Trade(
        ts_event=t.T * NS_PER_MS, ts_recv=ts_recv, venue=venue, symbol=symbol, price=t.p, size=t.q,
        taker_side=_SELL if t.m else _BUY, trade_id=str(t.t),
    )


def as_update(ev: DepthUpdate | DepthText) -> DepthUpdate:
    """A diff as a ``DepthUpdate``: one whose levels are still text (``DepthText``) parsed, any other as it is."""
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
