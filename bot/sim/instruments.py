"""Instrument metadata the loopback exchange serves: Binance ``exchangeInfo``, Bybit ``instruments-info``.

Bybit answers from the recorded ``info`` bodies when the recording has them (the cryptofeed capture
holds the real linear and spot responses); otherwise from ``BYBIT_STATIC``, entries copied verbatim from
those recorded responses (2026-08). Binance answers from ``BINANCE_STATIC``: the venue's filters for the
usual symbols as the venue set them in 2024 (spot: PRICE_FILTER tickSize, LOT_SIZE stepSize/minQty,
NOTIONAL minNotional; USD-M: MIN_NOTIONAL notional); the maximum quantities and price bands are
indicative only. The shape follows the real JSON closely enough for ccxt's parser.
A recorded symbol missing from the tables gets filters derived from the recorded prices and sizes (tick
= 10^-decimals), and its entry says so with ``"simDerived": true``. The recorded price strings were
checked to sit on these ticks (test_sim.py).
"""

from __future__ import annotations

from typing import Any

from bot.events import Venue

# symbol: (base, tick, step, min_qty, max_qty, market_max_qty, min_notional)
_BN_SPOT: dict[str, tuple[str, str, str, str, str, str, str]] = {
    "BTCUSDT": ("BTC", "0.01000000", "0.00001000", "0.00001000", "9000.00000000", "83.56000000", "5.00000000"),
    "ETHUSDT": ("ETH", "0.01000000", "0.00010000", "0.00010000", "9000.00000000", "1912.06000000", "5.00000000"),
    "SOLUSDT": ("SOL", "0.01000000", "0.00100000", "0.00100000", "9000000.00000000", "21823.65000000",
                "5.00000000"),
    "DOGEUSDT": ("DOGE", "0.00001000", "1.00000000", "1.00000000", "9000000000.00000000", "26389574.00000000",
                 "1.00000000"),
    "BNBUSDT": ("BNB", "0.01000000", "0.00100000", "0.00100000", "9000.00000000", "1565.10000000", "5.00000000"),
    "XRPUSDT": ("XRP", "0.00010000", "0.10000000", "0.10000000", "9222449.00000000", "1434470.10000000",
                "5.00000000"),
}  # fmt: skip
# symbol: (base, tick, min_price, max_price, step, min_qty, max_qty, market_max_qty, notional, pp, qp)
_BN_USDM: dict[str, tuple[str, str, str, str, str, str, str, str, str, int, int]] = {
    "BTCUSDT": ("BTC", "0.10", "556.80", "4529764", "0.001", "0.001", "1000", "120", "100", 2, 3),
    "ETHUSDT": ("ETH", "0.01", "39.86", "306177", "0.001", "0.001", "10000", "2000", "20", 2, 3),
    "SOLUSDT": ("SOL", "0.0100", "0.4200", "6857", "1", "1", "1000000", "5000", "5", 4, 0),
    "DOGEUSDT": ("DOGE", "0.000010", "0.002440", "30", "1", "1", "50000000", "30000000", "5", 6, 0),
    "BNBUSDT": ("BNB", "0.010", "6.600", "100000", "0.01", "0.01", "100000", "2000", "5", 3, 2),
    "XRPUSDT": ("XRP", "0.0001", "0.0143", "100000", "0.1", "0.1", "10000000", "2000000", "5", 4, 1),
}  # fmt: skip


def _spot_symbol(sym: str, tick: str, step: str, min_qty: str, max_qty: str, mkt_max: str, notional: str,
                 base: str, quote: str, derived: bool) -> dict[str, Any]:  # fmt: skip
    entry: dict[str, Any] = {
        "symbol": sym, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
        "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                       "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000", "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": min_qty, "maxQty": max_qty, "stepSize": step},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": mkt_max, "stepSize": "0.00000000"},
            {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
             "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
            {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
             "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
            {"filterType": "NOTIONAL", "minNotional": notional, "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }  # fmt: skip
    if derived:
        entry["simDerived"] = True
    return entry


def _usdm_symbol(sym: str, base: str, quote: str, tick: str, min_price: str, max_price: str, step: str,
                 min_qty: str, max_qty: str, mkt_max: str, notional: str, pp: int, qp: int,
                 derived: bool) -> dict[str, Any]:  # fmt: skip
    entry: dict[str, Any] = {
        "symbol": sym, "pair": sym, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000, "status": "TRADING", "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000", "baseAsset": base, "quoteAsset": quote, "marginAsset": quote,
        "pricePrecision": pp, "quantityPrecision": qp, "baseAssetPrecision": 8, "quotePrecision": 8,
        "underlyingType": "COIN", "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
        "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": min_price, "maxPrice": max_price, "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": min_qty, "maxQty": max_qty, "stepSize": step},
            {"filterType": "MARKET_LOT_SIZE", "minQty": min_qty, "maxQty": mkt_max, "stepSize": step},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": notional},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
             "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                       "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }  # fmt: skip
    if derived:
        entry["simDerived"] = True
    return entry


def split_symbol(sym: str) -> tuple[str, str]:
    for quote in ("USDT", "USDC", "FDUSD", "BUSD", "BTC", "ETH", "EUR"):
        if sym.endswith(quote) and len(sym) > len(quote):
            return sym[: -len(quote)], quote
    return sym[:-4], sym[-4:]


def _tick(decimals: int, pad: int | None = None) -> str:
    if decimals <= 0:
        return "1" if pad is None else f"{1:.{pad}f}"
    text = f"{10.0 ** -decimals:.{decimals}f}"
    return text if pad is None else f"{float(text):.{pad}f}"


def binance_symbol_entry(venue: Venue, sym: str, price_dec: int, qty_dec: int) -> dict[str, Any]:
    """The exchangeInfo entry of ``sym``: the static table, else derived from recorded decimals."""
    base, quote = split_symbol(sym)
    if venue is Venue.BINANCE_SPOT:
        if sym in _BN_SPOT:
            b, tick, step, mn, mx, mkt, notional = _BN_SPOT[sym]
            return _spot_symbol(sym, tick, step, mn, mx, mkt, notional, b, quote, False)
        tick, step = _tick(price_dec, 8), _tick(qty_dec, 8)
        return _spot_symbol(sym, tick, step, step, "9000000.00000000", "9000000.00000000", "5.00000000",
                            base, quote, True)  # fmt: skip
    if sym in _BN_USDM:
        b, tick, mnp, mxp, step, mn, mx, mkt, notional, pp, qp = _BN_USDM[sym]
        return _usdm_symbol(sym, b, quote, tick, mnp, mxp, step, mn, mx, mkt, notional, pp, qp, False)
    tick, step = _tick(price_dec), _tick(qty_dec)
    return _usdm_symbol(sym, base, quote, tick, tick, "1000000", step, step, "1000000", "1000000", "5",
                        price_dec, qty_dec, True)  # fmt: skip


def binance_exchange_info(venue: Venue, entries: list[dict[str, Any]], server_ms: int) -> dict[str, Any]:
    if venue is Venue.BINANCE_SPOT:
        limits = [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ]
        return {"timezone": "UTC", "serverTime": server_ms, "rateLimits": limits, "exchangeFilters": [],
                "symbols": entries}  # fmt: skip
    limits = [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
    ]
    assets = sorted({e["marginAsset"] for e in entries})
    return {
        "timezone": "UTC", "serverTime": server_ms, "futuresType": "U_MARGINED", "rateLimits": limits,
        "exchangeFilters": [],
        "assets": [{"asset": a, "marginAvailable": True, "autoAssetExchange": "-10000"} for a in assets],
        "symbols": entries,
    }  # fmt: skip


# Bybit: verbatim entries from the recorded instruments-info responses (cryptofeed BYBIT.jsonl.zst).
_BYBIT_LINEAR = {
    "BTCUSDT": ("BTC", "2", "0.10", "0.10", "1999999.80", "1500.000", "0.001", "0.001", "150.000", "100.00",
                "1584230400000", 5),
    "ETHUSDT": ("ETH", "2", "0.01", "0.01", "199999.98", "10000.00", "0.01", "0.01", "2000.00", "100.00",
                "1615766400000", 6),
    "SOLUSDT": ("SOL", "3", "0.010", "0.010", "199999.980", "96000.0", "0.1", "0.1", "12000.0", "100.00",
                "1634256000000", 38),
    "DOGEUSDT": ("DOGE", "5", "0.00001", "0.00001", "199.99998", "43678900", "1", "1", "5991100", "75.00",
                 "1622630640000", 33),
}  # fmt: skip
_BYBIT_SPOT = {
    "BTCUSDT": (9, "BTC", "0.000001", "0.0000001", "0.000001", "230", "8000000", "120", "1150", "0.1"),
    "ETHUSDT": (10, "ETH", "0.00001", "0.0000001", "0.00001", "8118", "7000000", "2706", "40590", "0.01"),
    "SOLUSDT": (42, "SOL", "0.0001", "0.000001", "0.0001", "26000", "5000000", "13000", "130000", "0.01"),
    "DOGEUSDT": (18, "DOGE", "0.1", "0.000001", "0.1", "14000000", "4000000", "6800000", "70000000", "0.00001"),
}  # fmt: skip


def bybit_static_entry(venue: Venue, sym: str, price_dec: int, qty_dec: int) -> dict[str, Any]:
    base, quote = split_symbol(sym)
    if venue is Venue.BYBIT_LINEAR:
        b, scale, minp, tick, maxp, maxq, minq, step, mktq, lev, launch, sid = _BYBIT_LINEAR.get(
            sym, (base, str(price_dec), _tick(price_dec), _tick(price_dec), "1999999", "1000000",
                  _tick(qty_dec), _tick(qty_dec), "100000", "50.00", "1600000000000", 0),
        )  # fmt: skip
        return {
            "symbol": sym, "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": b,
            "quoteCoin": quote, "launchTime": launch, "deliveryTime": "0", "deliveryFeeRate": "",
            "priceScale": scale,
            "leverageFilter": {"minLeverage": "1", "maxLeverage": lev, "leverageStep": "0.01"},
            "priceFilter": {"minPrice": minp, "maxPrice": maxp, "tickSize": tick},
            "lotSizeFilter": {"maxOrderQty": maxq, "minOrderQty": minq, "qtyStep": step,
                              "postOnlyMaxOrderQty": maxq, "maxMktOrderQty": mktq, "minNotionalValue": "5"},
            "unifiedMarginTrade": True, "fundingInterval": 480, "settleCoin": quote, "copyTrading": "both",
            "upperFundingRate": "0.005", "lowerFundingRate": "-0.005", "isPreListing": False,
            "preListingInfo": None, "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
            "displayName": "", "symbolType": "", "forbidUplWithdrawal": False, "symbolId": sid,
        }  # fmt: skip
    sid, b, bprec, qprec, minq, maxq, maxamt, mktq, post, tick = _BYBIT_SPOT.get(
        sym, (0, base, _tick(qty_dec), "0.000001", _tick(qty_dec), "1000000", "1000000", "1000000", "1000000",
              _tick(price_dec)),
    )  # fmt: skip
    return {
        "symbolId": sid, "symbol": sym, "baseCoin": b, "quoteCoin": quote, "innovation": "0",
        "status": "Trading", "marginTrading": "utaOnly", "stTag": "0",
        "lotSizeFilter": {"basePrecision": bprec, "quotePrecision": qprec, "minOrderQty": minq,
                          "maxOrderQty": maxq, "minOrderAmt": "5", "maxOrderAmt": maxamt, "maxLimitOrderQty": maxq,
                          "maxMarketOrderQty": mktq, "postOnlyMaxLimitOrderSize": post},
        "priceFilter": {"tickSize": tick},
        "riskParameters": {"priceLimitRatioX": "0.005", "priceLimitRatioY": "0.01"},
        "symbolType": "", "xstockMultiplier": "1",
    }  # fmt: skip
