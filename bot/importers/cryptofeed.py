"""``cryptofeed``: a cryptofeed v3 raw capture, JSON lines (usually zstd), one record each::

    {"t":"header","format":2,"exchange":"BYBIT",...}
    {"t":"http","conn":"BYBIT.http.1","ts":1786310817.601629,"url":"https://.../v5/market/instruments-info?...","data":"..."}
    {"t":"connect","conn":"BYBIT.ws.2","ts":1786310818.2235148,"addr":"wss://stream.bybit.com/v5/public/linear"}
    {"t":"send","conn":"BYBIT.ws.2","ts":...,"addr":"...","data":"{\\"op\\":\\"subscribe\\",...}"}
    {"t":"recv","conn":"BYBIT.ws.2","ts":...,"data":"<the frame as received>"}

``ts`` is the local receive time in seconds. ``recv`` frames become ``ws`` records of the venue of their
connection, keyed by the connection id. The venue follows from the URL (``url_venue``): Bybit
``/v5/public/linear`` and ``/spot``; Binance spot and USD-M by host (``stream``/``data-stream`` against
``fstream`` hosts, for raw ``/ws/<stream>``, combined ``/stream?streams=`` and the routed
``/public``/``/market`` paths alike). ``http`` bodies are kept as well: a Binance depth snapshot
(``/api/v3/depth``, ``/fapi/v1/depth``) becomes a ``snapshot`` record of the symbol in the URL's query,
so a Binance book builds from the capture alone; klines (``/api/v3/klines``, ``/fapi/v1/klines``,
``/v5/market/kline``) become ``klines`` records keyed ``SYMBOL:interval``; any other body of a known
venue an ``info`` record keyed by its path and query (Bybit books need none: their snapshot arrives on
the stream).

Not imported, and counted by reason (``skipped``): ``header``/``connect``/``send`` records (not market
data), frames and bodies of venues this bot does not replay (another exchange, Binance COIN-M, Bybit
inverse), records of another ``t``, and ``data`` that is not text. Raw text is carried over byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from bot.errors import RecordingError
from bot.events import Venue
from bot.importers._text import Skipped, check_raw, count, open_text
from bot.recording import Record

_BYBIT_CATEGORIES = {"linear": Venue.BYBIT_LINEAR, "spot": Venue.BYBIT_SPOT}
_BYBIT_PUBLIC = {"/v5/public/linear": Venue.BYBIT_LINEAR, "/v5/public/spot": Venue.BYBIT_SPOT}
_BINANCE_DOMAINS = ("binance.com", "binance.vision", "binancefuture.com")
_CONTROL = frozenset({"header", "connect", "send"})


def url_venue(url: str) -> Venue | None:
    """The venue a websocket or REST URL belongs to, or None for one this bot does not replay."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    path = parts.path
    if "bybit" in host:
        if path.startswith("/v5/market/"):
            return _BYBIT_CATEGORIES.get(parse_qs(parts.query).get("category", [""])[0])
        return _BYBIT_PUBLIC.get(path.rstrip("/"))
    if not any(host == d or host.endswith("." + d) for d in _BINANCE_DOMAINS):
        return None
    if path.startswith("/fapi/"):
        return Venue.BINANCE_USDM
    if path.startswith(("/dapi/", "/eapi/")):  # COIN-M futures, options
        return None
    if path.startswith(("/api/", "/sapi/")):
        return Venue.BINANCE_SPOT
    label = host.split(".", 1)[0]  # fstream, demo-fstream, dstream, stream, data-stream, ws-api, ws-fapi
    if "fstream" in label or "fapi" in label:
        return Venue.BINANCE_USDM
    if "dstream" in label or "dapi" in label:
        return None
    if "stream" in label or label in ("ws-api", "testnet"):
        return Venue.BINANCE_SPOT
    return None


def rest_record(ts: int, venue: Venue, url: str, body: str) -> Record:
    """A REST body as the native kind it is: a Binance depth snapshot, klines, or another body (``info``)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    symbol = query.get("symbol", [""])[0].upper()
    path = parts.path
    if symbol and venue in (Venue.BINANCE_SPOT, Venue.BINANCE_USDM) and path in ("/api/v3/depth", "/fapi/v1/depth"):
        return Record(ts, venue, "snapshot", symbol, body)
    interval = query.get("interval", [""])[0]
    if symbol and interval and path in ("/api/v3/klines", "/fapi/v1/klines", "/v5/market/kline"):
        return Record(ts, venue, "klines", f"{symbol}:{_interval_name(venue, interval)}", body)
    return Record(ts, venue, "info", path + ("?" + parts.query if parts.query else ""), body)


_BYBIT_INTERVALS = {"1": "1m", "3": "3m", "5": "5m", "15": "15m", "30": "30m", "60": "1h", "240": "4h", "D": "1d"}


def _interval_name(venue: Venue, code: str) -> str:
    """Our interval name (``1m``): Binance spells it so already, Bybit in minutes (``1``, ``60``, ``D``)."""
    if venue in (Venue.BYBIT_LINEAR, Venue.BYBIT_SPOT):
        return _BYBIT_INTERVALS.get(code, code)
    return code


def import_cryptofeed(paths: Sequence[Path], *, skipped: Skipped | None = None) -> Iterator[Record]:
    """Records from cryptofeed v3 JSONL captures: websocket frames and REST bodies of known venues."""
    for path in paths:
        yield from _cryptofeed_file(Path(path), skipped)


def _cryptofeed_file(path: Path, skipped: Skipped | None) -> Iterator[Record]:
    conn_venue: dict[str, Venue | None] = {}
    conn_addr: dict[str, str] = {}
    for n, line in enumerate(open_text(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            r = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise RecordingError(f"{where}: not a cryptofeed v3 record: {e}") from e
        if not isinstance(r, dict) or not isinstance(r.get("t"), str):
            raise RecordingError(f"{where}: not a cryptofeed v3 record: no \"t\"")
        kind = r["t"]
        if kind in _CONTROL:
            if kind == "connect":
                conn = _field(r, "conn", where)
                conn_addr[conn] = str(r.get("addr") or r.get("url") or "")
                conn_venue[conn] = url_venue(conn_addr[conn])
            count(skipped, f"cryptofeed/{kind}")
            continue
        if kind not in ("recv", "http"):
            count(skipped, f"cryptofeed/unknown_record:{kind}")
            continue
        ts = _ts(r, where)
        data = r.get("data")
        if not isinstance(data, str):
            count(skipped, f"cryptofeed/{kind}_not_text")
            continue
        if kind == "recv":
            conn = _field(r, "conn", where)
            addr = conn_addr.get(conn) or str(r.get("addr") or "")
            venue = conn_venue.get(conn) or url_venue(addr)
            if venue is None:
                count(skipped, f"cryptofeed/unknown_venue:{_short(addr) or 'connection ' + conn}")
                continue
            yield Record(ts, venue, "ws", conn, check_raw(data, where))
        else:
            url = _field(r, "url", where)
            venue = url_venue(url)
            if venue is None:
                count(skipped, f"cryptofeed/unknown_venue:{_short(url)}")
                continue
            yield rest_record(ts, venue, url, check_raw(data, where))


def _field(r: dict[str, Any], name: str, where: str) -> str:
    v = r.get(name)
    if not isinstance(v, str):
        raise RecordingError(f"{where}: a {r['t']} record without a \"{name}\" string")
    return v


def _ts(r: dict[str, Any], where: str) -> int:
    v = r.get("ts")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise RecordingError(f"{where}: a {r['t']} record without a numeric \"ts\" (seconds)")
    return round(float(v) * 1e9)


def _short(url: str) -> str:
    """Host and path of a URL: the reason a venue was not recognised, without its query."""
    p = urlsplit(url)
    return f"{p.hostname or ''}{p.path}"
