"""The ccxt side of live execution: one ccxt.pro exchange object per venue, its keys, its endpoint.

    credentials(venue)          keys from the environment only (never from a file, never logged)
    build_exchange(venue, ...)  ccxt.pro binance/bybit for that market, on the testnet, demo or mainnet
                                endpoint ([live.venues.X] endpoint), or every root pointed at one http
                                root (``url``: the loopback exchange); time offset taken at load, recvWindow
    VenueApi                    the few calls whose ccxt spelling differs per venue (client-id lookups)

ccxt.pro objects do both: REST (orders, balances, fills) and the private streams (``watch_orders``,
``watch_my_trades``), so one normalised order and trade shape comes from either source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro

from bot.config import LiveConfig
from bot.errors import ConfigError
from bot.events import Venue

BINANCE = (Venue.BINANCE_SPOT, Venue.BINANCE_USDM)
# ccxt's market type for each venue's orders and its fetchMarkets filter
_TYPES = {
    Venue.BINANCE_SPOT: ("spot", "spot"),
    Venue.BINANCE_USDM: ("future", "linear"),
    Venue.BYBIT_SPOT: ("spot", "spot"),
    Venue.BYBIT_LINEAR: ("swap", "linear"),
}


def env_names(venue: Venue) -> list[tuple[str, str]]:
    """The environment variable pairs that may hold ``venue``'s keys, first match wins."""
    out = []
    for prefix in (venue.value.upper(), venue.value.split("_")[0].upper()):
        out.append((f"BOT_{prefix}_API_KEY", f"BOT_{prefix}_API_SECRET"))
    return out


def credentials(venue: Venue, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    env = os.environ if environ is None else environ
    for key_name, secret_name in env_names(venue):
        key, secret = env.get(key_name, "").strip(), env.get(secret_name, "").strip()
        if key and secret:
            return key, secret
    return None


def missing_credentials(venues: list[Venue], environ: Mapping[str, str] | None = None) -> str | None:
    """One line naming what to set, when a venue has no keys; None when all have them."""
    missing = [v for v in venues if credentials(v, environ) is None]
    if not missing:
        return None
    names = "; ".join(f"{v.value}: {' + '.join(env_names(v)[0])} (or {' + '.join(env_names(v)[1])})"
                      for v in missing)  # fmt: skip
    return f"live trading needs API keys in the environment for {names}"


def point_at(ex: Any, rest_root: str, ws_root: str) -> None:
    """Every REST and websocket root ccxt knows, pointed at the loopback exchange (paths kept), so that
    nothing this object does can reach a venue."""

    def walk(d: dict[str, Any]) -> None:
        for k, url in d.items():
            if isinstance(url, dict):
                walk(url)
            elif isinstance(url, str) and "://" in url:
                path = url.split("://", 1)[1].partition("/")[2]
                root = ws_root if url.startswith("ws") else rest_root
                d[k] = f"{root}/{path}" if path else root

    walk(ex.urls["api"])
    ex.urls.pop("test", None)  # sandbox roots: unusable from here on
    ex.urls.pop("demo", None)
    ex.urls.pop("demotrading", None)


def build_exchange(
    venue: Venue, key: str, secret: str, cfg: LiveConfig, *, root: str | None = None
) -> Any:
    """ccxt.pro for ``venue`` (not loaded yet: ``await ex.load_markets()``). ``root``: an http root every
    REST and websocket root is pointed at (the loopback exchange's, for this venue); then the endpoint
    setting is not used."""
    default_type, market_type = _TYPES[venue]
    options: dict[str, Any] = {
        "defaultType": default_type,
        "fetchMarkets": {"types": [market_type]},
        "adjustForTimeDifference": True,  # the offset to the venue's clock, taken at load, then on a timer
        "recvWindow": cfg.recv_window_ms,
    }
    if venue is Venue.BYBIT_LINEAR:
        options["defaultSubType"] = "linear"
    if root is not None:
        options.update(fetchCurrencies=False, fetchMargins=False)  # the sim serves no sapi
    cls = ccxt_pro.binance if venue in BINANCE else ccxt_pro.bybit
    ex = cls({"apiKey": key, "secret": secret, "enableRateLimit": True,
              "timeout": int(cfg.request_timeout_s * 1000), "options": options})  # fmt: skip
    if root is not None:
        point_at(ex, root, "ws" + root.removeprefix("http"))
    elif cfg.venues[venue].endpoint == "testnet":
        ex.set_sandbox_mode(True)
    elif cfg.venues[venue].endpoint == "demo":
        try:
            ex.enable_demo_trading(True)
        except ccxt_async.NotSupported as e:
            raise ConfigError(f"{venue.value}: ccxt has no demo trading here ({type(e).__name__})") from None
    return ex


class VenueApi:
    """Client-id lookups and cancels as each venue's ccxt spelling wants them."""

    def __init__(self, venue: Venue, ex: Any) -> None:
        self.venue, self.ex = venue, ex
        self.bybit = venue not in BINANCE

    def id_params(self, cid: str) -> dict[str, Any]:
        return {"orderLinkId": cid} if self.bybit else {"clientOrderId": cid}

    async def find(self, cid: str, symbol: str) -> dict[str, Any] | None:
        """The venue's view of our order ``cid``, or None when the venue does not know it."""
        if not self.bybit:
            try:
                vo: dict[str, Any] = await self.ex.fetch_order(None, symbol, {"clientOrderId": cid})
                return vo
            except ccxt_async.OrderNotFound:
                return None
        market = self.ex.market(symbol)
        req = {"category": "spot" if market["spot"] else "linear", "symbol": market["id"], "orderLinkId": cid}
        for call in (self.ex.privateGetV5OrderRealtime, self.ex.privateGetV5OrderHistory):
            rows = ((await call(req)).get("result") or {}).get("list") or []
            if rows:
                parsed: dict[str, Any] = self.ex.parse_order(rows[0], market)
                return parsed
        return None
