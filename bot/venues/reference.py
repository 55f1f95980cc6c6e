"""Reference data from the venues' REST APIs: instrument rules and server time. Pure parsers and URLs.

Venue spellings stay here; the rest of the bot sees ``bot.orders.Instrument`` and ns timestamps.
Prices and quantities are read from the exact decimal strings. Bodies that do not have the documented
shape raise ``MalformedMessage``; a Bybit body with a non-zero ``retCode`` raises ``VenueRejected``
(``RateLimited`` for 10006/10018, the rate-limit codes; ``VenueUnavailable`` for 10000/10016, timeout and
internal error: Bybit answers those with HTTP 200).

Binance spot ``GET /api/v3/exchangeInfo?symbols=[...]`` (USD-M ``GET /fapi/v1/exchangeInfo``: every
symbol, no filter parameter), one entry::

    {"symbol":"BTCUSDT","status":"TRADING","baseAsset":"BTC","quoteAsset":"USDT",...,"filters":[
      {"filterType":"PRICE_FILTER","minPrice":"0.01000000","maxPrice":"1000000.00000000","tickSize":"0.01000000"},
      {"filterType":"LOT_SIZE","minQty":"0.00001000","maxQty":"9000.00000000","stepSize":"0.00001000"},
      {"filterType":"NOTIONAL","minNotional":"5.00000000","applyMinToMarket":true,...}, ...]}

  spot's minimum notional is ``NOTIONAL.minNotional`` (older listings: ``MIN_NOTIONAL.minNotional``);
  USD-M's is ``{"filterType":"MIN_NOTIONAL","notional":"100"}``.

Bybit ``GET /v5/market/instruments-info?category=spot|linear`` (linear is paginated by
``nextPageCursor``; spot is not), ``result.list`` entries::

    spot:   {"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT","status":"Trading",
             "lotSizeFilter":{"basePrecision":"0.000001","minOrderQty":"0.000001","maxOrderQty":"230",
                              "minOrderAmt":"5",...},"priceFilter":{"tickSize":"0.1"},...}
    linear: {"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT","status":"Trading",
             "priceFilter":{"minPrice":"0.10","maxPrice":"1999999.80","tickSize":"0.10"},
             "lotSizeFilter":{"maxOrderQty":"1500.000","minOrderQty":"0.001","qtyStep":"0.001",
                              "minNotionalValue":"5",...},...}

  spot's quantity step is ``basePrecision`` (spot has no ``qtyStep``), its minimum notional ``minOrderAmt``.

Server time: Binance ``GET /api/v3/time`` and ``/fapi/v1/time`` -> ``{"serverTime":1723161253123}`` (ms);
Bybit ``GET /v5/market/time`` -> ``{"retCode":0,...,"result":{"timeSecond":"1688639403",
"timeNano":"1688639403423213947"},...}`` (``timeNano`` preferred, ``timeSecond`` if it is missing).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Collection
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from bot.errors import MalformedMessage, RateLimited, VenueRejected, VenueUnavailable
from bot.events import Venue
from bot.orders import Instrument

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
BYBIT_PAGE_LIMIT = 1000  # the most instruments-info returns per page
_BYBIT_CATEGORY = {Venue.BYBIT_SPOT: "spot", Venue.BYBIT_LINEAR: "linear"}
_BYBIT_RATE_LIMITED = (10006, 10018)  # "Too many visits", "exceeded the IP rate limit"
_BYBIT_UNAVAILABLE = (10000, 10016)  # "Server Timeout", "Internal server error": retryable


# -- URLs -----------------------------------------------------------------------------------------------------


def instruments_url(venue: Venue, rest_url: str, symbols: Collection[str] = (), cursor: str = "") -> str:
    """The instrument-rules request for ``symbols`` (Binance spot asks for them by name; USD-M and Bybit
    return every symbol of the market and the caller filters; ``cursor``: Bybit's next page)."""
    base = rest_url.rstrip("/")
    if venue is Venue.BINANCE_SPOT:
        if not symbols:
            return f"{base}/api/v3/exchangeInfo"
        names = orjson.dumps(sorted(symbols)).decode()
        return f"{base}/api/v3/exchangeInfo?symbols={urllib.parse.quote(names, safe='')}"
    if venue is Venue.BINANCE_USDM:
        return f"{base}/fapi/v1/exchangeInfo"
    url = f"{base}/v5/market/instruments-info?category={_BYBIT_CATEGORY[venue]}"
    if venue is Venue.BYBIT_LINEAR:
        url += f"&limit={BYBIT_PAGE_LIMIT}"
    if cursor:
        url += f"&cursor={urllib.parse.quote(cursor, safe='')}"
    return url


def time_url(venue: Venue, rest_url: str) -> str:
    base = rest_url.rstrip("/")
    if venue is Venue.BINANCE_SPOT:
        return f"{base}/api/v3/time"
    if venue is Venue.BINANCE_USDM:
        return f"{base}/fapi/v1/time"
    return f"{base}/v5/market/time"


# -- instrument rules -----------------------------------------------------------------------------------------


def parse_instruments(
    venue: Venue, raw: str | bytes, symbols: Collection[str] | None = None
) -> tuple[list[Instrument], str]:
    """The rules of ``symbols`` (None: every symbol in the body) and Bybit's next-page cursor ("" if none).

    Symbols asked for but absent are simply missing from the list (a Bybit page may not hold them).
    """
    body = _json(raw, "instruments")
    if venue.exchange == "binance":
        return parse_binance_exchange_info(venue, body, symbols), ""
    return parse_bybit_instruments(venue, body, symbols)


def parse_binance_exchange_info(venue: Venue, body: Any, symbols: Collection[str] | None = None) -> list[Instrument]:
    entries = _field(body, "symbols", "exchangeInfo")
    if not isinstance(entries, list):
        raise MalformedMessage("exchangeInfo: 'symbols' is not a list")
    out = []
    for e in entries:
        sym = _field(e, "symbol", "exchangeInfo entry")
        if symbols is not None and sym not in symbols:
            continue
        filters = {f.get("filterType"): f for f in _field(e, "filters", sym) if isinstance(f, dict)}
        price = _filter(filters, "PRICE_FILTER", sym)
        lot = _filter(filters, "LOT_SIZE", sym)
        if venue is Venue.BINANCE_USDM:
            min_notional = _dec(_filter(filters, "MIN_NOTIONAL", sym), "notional", sym)
        elif "NOTIONAL" in filters:
            min_notional = _dec(filters["NOTIONAL"], "minNotional", sym)
        else:
            min_notional = _dec(_filter(filters, "MIN_NOTIONAL", sym), "minNotional", sym)
        out.append(
            _instrument(
                venue, sym, _field(e, "baseAsset", sym), _field(e, "quoteAsset", sym),
                tick=_dec(price, "tickSize", sym), step=_dec(lot, "stepSize", sym), min_qty=_dec(lot, "minQty", sym),
                min_notional=min_notional, max_qty=_dec(lot, "maxQty", sym),
            )
        )  # fmt: skip
    return out


def parse_bybit_instruments(
    venue: Venue, body: Any, symbols: Collection[str] | None = None
) -> tuple[list[Instrument], str]:
    result = _bybit_result(body, "instruments-info")
    entries = _field(result, "list", "instruments-info")
    if not isinstance(entries, list):
        raise MalformedMessage("instruments-info: 'list' is not a list")
    spot = venue is Venue.BYBIT_SPOT
    out = []
    for e in entries:
        sym = _field(e, "symbol", "instruments-info entry")
        if symbols is not None and sym not in symbols:
            continue
        lot = _field(e, "lotSizeFilter", sym)
        price = _field(e, "priceFilter", sym)
        out.append(
            _instrument(
                venue, sym, _field(e, "baseCoin", sym), _field(e, "quoteCoin", sym),
                tick=_dec(price, "tickSize", sym), step=_dec(lot, "basePrecision" if spot else "qtyStep", sym),
                min_qty=_dec(lot, "minOrderQty", sym),
                min_notional=_dec(lot, "minOrderAmt" if spot else "minNotionalValue", sym),
                max_qty=_dec(lot, "maxOrderQty", sym),
            )
        )  # fmt: skip
    cursor = result.get("nextPageCursor") or ""
    return out, cursor if isinstance(cursor, str) else ""


def _instrument(
    venue: Venue, sym: Any, base: Any, quote: Any, *, tick: Decimal, step: Decimal, min_qty: Decimal,
    min_notional: Decimal, max_qty: Decimal,
) -> Instrument:  # fmt: skip
    if not (isinstance(sym, str) and isinstance(base, str) and isinstance(quote, str)):
        raise MalformedMessage(f"{venue.value}: symbol, base and quote must be strings: {sym!r} {base!r} {quote!r}")
    if not (tick > 0 and step > 0):
        raise MalformedMessage(f"{venue.value} {sym}: tick {tick} and step {step} must be > 0")
    return Instrument(
        venue=venue, symbol=sym, base=base, quote=quote, tick_size=tick, step_size=step, min_qty=min_qty,
        min_notional=min_notional, max_qty=max_qty if max_qty > 0 else None,
    )  # fmt: skip


# -- server time ----------------------------------------------------------------------------------------------


def parse_server_time(venue: Venue, raw: str | bytes) -> int:
    """The venue's server time in ns since the epoch."""
    body = _json(raw, "time")
    if venue.exchange == "binance":
        ms = _field(body, "serverTime", "time")
        if not isinstance(ms, int) or isinstance(ms, bool):
            raise MalformedMessage(f"time: serverTime is not an integer: {ms!r}")
        return ms * NS_PER_MS
    result = _bybit_result(body, "time")
    nano, sec = result.get("timeNano"), result.get("timeSecond")
    try:
        if nano is not None:
            return int(str(nano))
        if sec is not None:
            return int(str(sec)) * NS_PER_S
    except ValueError:
        raise MalformedMessage(f"time: not an integer: timeNano={nano!r} timeSecond={sec!r}") from None
    raise MalformedMessage("time: neither timeNano nor timeSecond in the result")


# -- helpers --------------------------------------------------------------------------------------------------


def _json(raw: str | bytes, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise MalformedMessage(f"{what}: body is not JSON: {e}") from None


def _field(obj: Any, name: str, where: Any) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise MalformedMessage(f"{where}: missing {name!r}")
    return obj[name]


def _filter(filters: dict[Any, Any], name: str, sym: str) -> dict[str, Any]:
    f = filters.get(name)
    if f is None:
        raise MalformedMessage(f"{sym}: no {name} filter")
    return f  # type: ignore[no-any-return]


def _dec(obj: Any, name: str, where: Any) -> Decimal:
    v = _field(obj, name, where)
    try:
        d = Decimal(v) if isinstance(v, str) else None
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite() or d < 0:
        raise MalformedMessage(f"{where}: {name} is not a decimal string >= 0: {v!r}")
    return d


def _bybit_result(body: Any, what: str) -> dict[str, Any]:
    code = _field(body, "retCode", what)
    if code != 0:
        msg = f"{what}: retCode {code}: {body.get('retMsg', '')}"
        if code in _BYBIT_RATE_LIMITED:
            raise RateLimited(msg, retry_after=1.0, status=429)
        if code in _BYBIT_UNAVAILABLE:
            raise VenueUnavailable(msg)
        raise VenueRejected(msg)
    result = _field(body, "result", what)
    if not isinstance(result, dict):
        raise MalformedMessage(f"{what}: result is not an object")
    return result


__all__ = [
    "instruments_url",
    "parse_binance_exchange_info",
    "parse_bybit_instruments",
    "parse_instruments",
    "parse_server_time",
    "time_url",
]
