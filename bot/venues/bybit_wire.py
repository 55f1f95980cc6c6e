"""Bybit v5 public streams, spot and linear: wire formats and their pure parsing (the msgspec structs of
every frame and REST body the adapters read, their decoders, ``parse_frame``, ``merge_funding``,
``to_trades``). Nothing here keeps state; the adapters (``bot.venues.bybit``) route frames and act on
what these decode.

Every frame is a JSON object. Data frames carry ``topic``; control frames carry ``op`` (subscribe acks,
pongs). The key order differs between the spot and linear connections (``"topic","ts","type"`` against
``"topic","type","ts"``; spot klines even start with ``"type"``), so frames are parsed by key only: the
decoders match keys, never positions. Prices are decimal strings, not zero-padded on spot (``"65140"``),
decoded straight to floats; an orderbook frame's levels are kept as JSON text for the book
(``RawBookMsg``, ``bot.venues.levels``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
import numpy as np

from bot.book import NO_LEVELS, as_levels
from bot.errors import MalformedMessage
from bot.events import Side, Trade, Venue
from bot.venues._shared import DECODE_ERRORS, NS_PER_MS
from bot.venues.levels import Price, Size, WireLevels, parse_pair


# ------------------------------------------------------------------------------------------------
# Wire types: Bybit's own shapes and spellings. Fields we do not use are left out (msgspec skips them).
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


class FundingData(msgspec.Struct):
    """The funding fields of ``TickerData``, typed the same (all a linear ticker's funding filter reads)."""

    fundingRate: str | None = None  # kept as text for an exact Decimal
    nextFundingTime: int | None = None  # ms, sent as a string
    markPrice: float | None = None


class FundingMsg(msgspec.Struct):
    """``TickerMsg`` as the linear adapter decodes it on the hot path: only what ``merge_funding`` and the
    event's time read. The other fields (a snapshot carries some thirty) are skipped by msgspec, not
    converted; a frame that is not JSON or lacks ``type``/``data`` raises as ``TickerMsg`` would."""

    type: str
    data: FundingData
    ts: int = 0


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


def merge_funding(prev: FundingView | None, msg: FundingMsg | TickerMsg) -> FundingView:
    """Fold a ticker's funding fields into the last known ones: a snapshot replaces (what it lacks becomes
    None / nan), a delta (it carries only what changed) keeps what it does not carry."""
    d = msg.data
    if prev is None or msg.type == "snapshot":
        prev = FundingView(None, None, _NAN)
    return FundingView(
        prev.rate if d.fundingRate is None else d.fundingRate,
        prev.next_funding_ms if d.nextFundingTime is None else d.nextFundingTime,
        prev.mark_px if d.markPrice is None else d.markPrice,
    )


class _Topic(msgspec.Struct):
    topic: str


BOOK_DECODER = msgspec.json.Decoder(RawBookMsg)
TOPIC_DECODER = msgspec.json.Decoder(_Topic)
TRADES_DECODER = msgspec.json.Decoder(TradeMsg, strict=False)
KLINES_DECODER = msgspec.json.Decoder(KlineMsg, strict=False)
FUNDING_DECODER = msgspec.json.Decoder(FundingMsg, strict=False)
_OP = msgspec.json.Decoder(OpMsg, strict=False)
_ANY = msgspec.json.Decoder(dict[str, Any])
REST_KLINES = msgspec.json.Decoder(RestKlines, strict=False)
_NAN = float("nan")
_BUY, _SELL = Side.BUY, Side.SELL  # enum members read once (per trade)

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


def to_trades(venue: Venue, symbol: str, msg: TradeMsg, ts_recv: int) -> list[Trade]:
    return [
        Trade(
            ts_event=t.T * NS_PER_MS, ts_recv=ts_recv, venue=venue, symbol=symbol, price=t.p, size=t.v,
            taker_side=_BUY if t.S == "Buy" else _SELL, trade_id=t.i,
        )
        for t in msg.data
    ]
