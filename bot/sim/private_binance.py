"""Binance spot ``/api/v3`` and USD-M ``/fapi`` signed endpoints of the loopback exchange.

Signed requests carry ``X-MBX-APIKEY`` and ``signature`` = HMAC-SHA256 hex of the total parameters (the
query string followed by the form body, without ``signature``); ``timestamp`` must lie within
``recvWindow`` (default 5000 ms, at most 60000) of the sim's clock. Refusals as the venue answers them
(codes and messages checked against the venues' error-code pages, spot ``errors.md`` and USD-M
``error-code``): -2014 "API-key format invalid." / -2015 "Invalid API-key, IP, or permissions for action."
(HTTP 401), -1022 signature, -1021 timestamp, -1121 symbol, -2013 "Order does not exist." (query),
-2011 "Unknown order sent." (cancel), -1102 a mandatory parameter missing, -1100 illegal characters,
-1131 recvWindow; a new order the account cannot pay for is -2010 "Account has insufficient balance for
requested action." on spot and -2019 "Margin is insufficient." on USD-M, a client order id still open
-2010 "Duplicate order sent." on spot and -4116 "ClientOrderId is duplicated." on USD-M.

Fills: ``GET /api/v3/myTrades`` and ``GET /fapi/v1/userTrades`` in the venue's shapes (the trade ``id`` is
the ``SimAccount`` trade id that the user-data streams push as ``t``), with the venues' parameter rules:
``symbol`` mandatory, ``orderId`` (with ``fromId`` on spot), ``fromId`` (ids >= it, oldest first),
``startTime``/``endTime`` (at most 24 h apart on spot, 7 days on USD-M: -1127; USD-M refuses ``fromId``
with a time and spot any combination its docs do not list: -1128), ``limit`` default 500, at most 1000;
without ``fromId``/``startTime`` the most recent trades (USD-M: of the last 7 days), oldest first.

New orders roll the ``order_timeout`` / ``order_lost`` dice (``faults.py``): the answer held back, with
the order placed or not. Orders go to ``bot.sim.account.SimAccount`` (the paper matcher against the truth
books). Every fill of this venue is kept as a ``SimTrade`` (``trades``), stamped with the sim's clock when it happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from bot.events import Side, Venue
from bot.orders import Fill, Liquidity, OrderStatus, OrderType, TimeInForce
from bot.sim.account import SimAccount, SimOrder
from bot.sim.faults import OrderDice
from bot.sim.ws import SimStats

JSON = "application/json"
_MISSING = "Mandatory parameter '{}' was not sent, was empty/null, or malformed."
_SIG = re.compile(r"&?signature=[0-9a-fA-F]*")
_STATUS = {
    OrderStatus.NEW: "NEW",
    OrderStatus.ACCEPTED: "NEW",
    OrderStatus.PARTIALLY_FILLED: "PARTIALLY_FILLED",
    OrderStatus.FILLED: "FILLED",
    OrderStatus.CANCELLED: "CANCELED",
    OrderStatus.REJECTED: "REJECTED",
    OrderStatus.EXPIRED: "EXPIRED",
}


class Refused(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass(frozen=True)
class SimTrade:
    """One fill as the venue reports it (``myTrades`` / ``userTrades`` and the user-data streams)."""

    trade_id: int
    order: SimOrder
    fill: Fill
    time_ms: int
    realized: Decimal  # realised PnL of this fill (USD-M), zero on spot

    @property
    def maker(self) -> bool:
        return self.fill.liquidity is Liquidity.MAKER


def num(d: Decimal) -> str:
    """A decimal as USD-M writes it: plain digits, no exponent, no trailing zeros."""
    return format(d.normalize(), "f") if d else "0"


def _int(params: dict[str, str], name: str) -> int | None:
    v = params.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        msg = f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        raise Refused(400, -1100, msg) from None


def _dec(params: dict[str, str], name: str) -> Decimal | None:
    v = params.get(name)
    if v is None or v == "":
        return None
    try:
        return Decimal(v)
    except InvalidOperation:
        raise Refused(400, -1100, f"Illegal characters found in parameter '{name}'.") from None


def type_tif(o: SimOrder, spot: bool) -> tuple[str, str]:
    """The venue's order type and time in force of ``o`` (spot post-only is ``LIMIT_MAKER``, USD-M ``GTX``)."""
    if o.order_type is OrderType.MARKET:
        return "MARKET", "GTC"
    if o.tif is TimeInForce.POST_ONLY:
        return ("LIMIT_MAKER", "GTC") if spot else ("LIMIT", "GTX")
    return "LIMIT", "IOC" if o.tif is TimeInForce.IOC else "GTC"


class BinancePrivate:
    """The signed endpoints of one Binance venue (spot or USD-M)."""

    def __init__(
        self, venue: Venue, account: SimAccount, clock_ms: Callable[[], int], api_key: str, api_secret: str,
        dice: OrderDice | None = None, stats: SimStats | None = None,
    ) -> None:  # fmt: skip
        self.venue = venue
        self.dice, self.stats = dice, stats
        self.spot = venue is Venue.BINANCE_SPOT
        self.account = account
        self.clock_ms = clock_ms
        self.api_key = api_key
        self._secret = api_secret.encode()
        self.trades: list[SimTrade] = []
        self.trade_by_id: dict[int, SimTrade] = {}
        account.listeners.append(self._record)

    def sign(self, payload: str) -> str:
        """HMAC-SHA256 hex of ``payload`` with the account's secret."""
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

    def _record(self, order: SimOrder, fill: Fill | None, trade_id: int | None) -> None:
        if order.venue is self.venue and fill is not None and trade_id is not None:
            t = SimTrade(trade_id, order, fill, self.clock_ms(), self.account.trade_pnl.get(trade_id, Decimal(0)))
            self.trades.append(t)
            self.trade_by_id[trade_id] = t

    def routes(self) -> list[web.RouteDef]:
        h = self._wrap
        if self.spot:
            return [
                web.get("/api/v3/account", h(self.spot_account)),
                web.post("/api/v3/order", self._order_faults(h(self.new_order))),
                web.get("/api/v3/order", h(self.query_order)),
                web.delete("/api/v3/order", h(self.cancel_order)),
                web.get("/api/v3/openOrders", h(self.open_orders)),
                web.get("/api/v3/myTrades", h(self.my_trades)),
            ]
        out = [
            web.post("/fapi/v1/order", self._order_faults(h(self.new_order))),
            web.get("/fapi/v1/order", h(self.query_order)),
            web.delete("/fapi/v1/order", h(self.cancel_order)),
            web.get("/fapi/v1/openOrders", h(self.open_orders)),
            web.get("/fapi/v1/leverageBracket", h(self.leverage_brackets)),
            web.get("/fapi/v1/userTrades", h(self.my_trades)),
        ]
        for v in ("v2", "v3"):
            out += [
                web.get(f"/fapi/{v}/account", h(self.futures_account)),
                web.get(f"/fapi/{v}/balance", h(self.futures_balance)),
                web.get(f"/fapi/{v}/positionRisk", h(self.position_risk)),
            ]
        return out

    # -- plumbing ------------------------------------------------------------------------------------------
    def _wrap(
        self, fn: Callable[[dict[str, str]], Any]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                params = await self._authenticate(request)
                body = fn(params)
            except Refused as r:
                return web.Response(body=orjson.dumps({"code": r.code, "msg": r.msg}), status=r.status,
                                    content_type=JSON)  # fmt: skip
            return web.Response(body=orjson.dumps(body), content_type=JSON)

        return handler

    def _order_faults(
        self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """``order_timeout``: the request handled, its answer held; ``order_lost``: not handled, a 503 late."""

        async def faulty(request: web.Request) -> web.StreamResponse:
            fault = self.dice.roll() if self.dice is not None else None
            if fault is None:
                return await handler(request)
            kind, hold_s = fault
            if self.stats is not None:
                self.stats.faults[(self.venue, kind)] += 1
            if kind == "order_lost":
                await asyncio.sleep(hold_s)
                body = {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
                return web.Response(body=orjson.dumps(body), status=503, content_type=JSON)
            answer = await handler(request)
            await asyncio.sleep(hold_s)
            return answer

        return faulty

    async def _authenticate(self, request: web.Request) -> dict[str, str]:
        query = request.rel_url.raw_query_string
        body = (await request.text()) if request.can_read_body else ""
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            raise Refused(401, -2014, "API-key format invalid.")
        if not hmac.compare_digest(key, self.api_key):
            raise Refused(401, -2015, "Invalid API-key, IP, or permissions for action.")
        sig = params.pop("signature", "")
        total = _SIG.sub("", query).lstrip("&") + _SIG.sub("", body).lstrip("&")
        want = self.sign(total)
        if not sig or not hmac.compare_digest(sig.lower(), want):
            raise Refused(400, -1022, "Signature for this request is not valid.")
        try:
            ts = int(params.get("timestamp", ""))
            window = int(params.get("recvWindow", "5000"))
        except ValueError:
            raise Refused(400, -1102, _MISSING.format("timestamp")) from None
        if not 0 < window <= 60_000:
            raise Refused(400, -1131, "recvWindow must be less than 60000")
        now = self.clock_ms()
        if ts >= now + 1000 or now - ts > window:
            raise Refused(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return params

    def _symbol(self, params: dict[str, str], required: bool = True) -> str | None:
        sym = params.get("symbol", "")
        if not sym:
            if required:
                raise Refused(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            return None
        rp = self.account.replays.get(self.venue)
        if rp is None or sym not in rp.tl.symbols:
            raise Refused(400, -1121, "Invalid symbol.")
        self.account.sync(self.venue, sym)
        return sym

    def _order(self, params: dict[str, str]) -> SimOrder:
        sym = self._symbol(params)
        oid = params.get("orderId")
        cid = params.get("origClientOrderId")
        if not oid and not cid:
            raise Refused(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        try:
            o = self.account.find(self.venue, int(oid) if oid else None, cid)
        except ValueError:
            raise Refused(400, -1100, "Illegal characters found in parameter 'orderId'.") from None
        if o is None or o.symbol != sym:
            raise Refused(400, -2013, "Order does not exist.")
        return o

    def _shape(self, o: SimOrder) -> dict[str, Any]:
        d: dict[str, Any] = {
            "symbol": o.symbol,
            "orderId": o.order_id,
            "clientOrderId": o.client_id,
            "price": str(o.price or 0),
            "origQty": str(o.qty),
            "executedQty": str(o.filled),
            "status": _STATUS[o.status],
            "timeInForce": type_tif(o, self.spot)[1],
            "type": type_tif(o, self.spot)[0],
            "side": "BUY" if o.side is Side.BUY else "SELL",
            "time" if self.spot else "updateTime": o.update_ms,
        }
        if self.spot:
            d.update(orderListId=-1, cummulativeQuoteQty=str(o.cum_quote), stopPrice="0.00000000",
                     icebergQty="0.00000000", updateTime=o.update_ms, isWorking=True, workingTime=o.time_ms,
                     origQuoteOrderQty="0.00000000", selfTradePreventionMode="EXPIRE_MAKER")  # fmt: skip
        else:
            d.update(avgPrice=str(o.avg_price or 0), cumQuote=str(o.cum_quote), reduceOnly=False,
                     closePosition=False, positionSide="BOTH", stopPrice="0", workingType="CONTRACT_PRICE",
                     priceProtect=False, origType=d["type"], time=o.time_ms)  # fmt: skip
        return d

    # -- orders --------------------------------------------------------------------------------------------
    def new_order(self, params: dict[str, str]) -> dict[str, Any]:
        sym = self._symbol(params)
        assert sym is not None
        side_s, type_s = params.get("side", ""), params.get("type", "")
        if side_s not in ("BUY", "SELL") or type_s not in ("LIMIT", "MARKET", "LIMIT_MAKER"):
            raise Refused(400, -1102, _MISSING.format("side' or 'type"))
        side = Side.BUY if side_s == "BUY" else Side.SELL
        qty, price = _dec(params, "quantity"), _dec(params, "price")
        if qty is None or qty <= 0:
            raise Refused(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        market = type_s == "MARKET"
        if not market and (price is None or price <= 0):
            raise Refused(400, -1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
        tif_s = params.get("timeInForce", "GTC")
        tif = TimeInForce.POST_ONLY if type_s == "LIMIT_MAKER" or tif_s == "GTX" else \
            TimeInForce.IOC if tif_s in ("IOC", "FOK") else TimeInForce.GTC  # fmt: skip
        ref = self.account.replays[self.venue].reference(sym, 1)
        touch = price if price is not None else Decimal(repr((ref.asks if side is Side.BUY else ref.bids)[0][0])) \
            if ref is not None and (ref.asks if side is Side.BUY else ref.bids) else Decimal(0)  # fmt: skip
        if not self.account.can_afford(self.venue, sym, side, qty, touch):
            if self.spot:
                raise Refused(400, -2010, "Account has insufficient balance for requested action.")
            raise Refused(400, -2019, "Margin is insufficient.")
        cid = params.get("newClientOrderId") or self.account.new_client_id()
        same = self.account.find(self.venue, None, cid)
        if same is not None and same.status.is_open:
            if self.spot:
                raise Refused(400, -2010, "Duplicate order sent.")
            raise Refused(400, -4116, "ClientOrderId is duplicated.")
        o = self.account.place(self.venue, sym, side, OrderType.MARKET if market else OrderType.LIMIT, tif, qty,
                               None if market else price, cid, self.clock_ms())  # fmt: skip
        d = self._shape(o)
        if self.spot:
            d["transactTime"] = o.time_ms
            d["fills"] = [{"price": str(f.price), "qty": str(f.qty), "commission": str(f.fee),
                           "commissionAsset": f.fee_asset, "tradeId": tid}
                          for f, tid in zip(o.fills, o.trade_ids, strict=True)]  # fmt: skip
        return d

    def query_order(self, params: dict[str, str]) -> dict[str, Any]:
        return self._shape(self._order(params))

    def cancel_order(self, params: dict[str, str]) -> dict[str, Any]:
        try:
            o = self._order(params)
        except Refused as r:
            if r.code == -2013:
                raise Refused(400, -2011, "Unknown order sent.") from None
            raise
        if not o.status.is_open:
            raise Refused(400, -2011, "Unknown order sent.")
        self.account.cancel(o)
        o.update_ms = self.clock_ms()
        return self._shape(o)

    def open_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        sym = self._symbol(params, required=False)
        if sym is None:
            for s in self.account.replays[self.venue].tl.symbols:
                self.account.sync(self.venue, s)
        return [self._shape(o) for o in self.account.open_orders(self.venue, sym)]

    # -- fills ---------------------------------------------------------------------------------------------
    def my_trades(self, params: dict[str, str]) -> list[dict[str, Any]]:
        sym = self._symbol(params)
        oid, from_id = _int(params, "orderId"), _int(params, "fromId")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        limit = _int(params, "limit") or 500
        if not 1 <= limit <= 1000:
            raise Refused(400, -1130, "Data sent for parameter 'limit' is not valid.")
        timed = start is not None or end is not None
        if (from_id is not None and timed) or (self.spot and oid is not None and timed):
            raise Refused(400, -1128, "Combination of optional parameters invalid.")
        span = 24 * 3_600_000 if self.spot else 7 * 24 * 3_600_000
        if start is not None and end is not None:
            if end - start > span:
                raise Refused(400, -1127, f"More than {span // 3_600_000} hours between startTime and endTime.")
            if start > end:
                raise Refused(400, -1023, "Start time is greater than end time.")
        oldest_first = from_id is not None or start is not None
        if not self.spot and not timed and from_id is None:
            start = self.clock_ms() - span  # the last 7 days
        out = [t for t in self.trades if t.order.symbol == sym and (oid is None or t.order.order_id == oid)
               and (from_id is None or t.trade_id >= from_id) and (start is None or t.time_ms >= start)
               and (end is None or t.time_ms <= end)]  # fmt: skip
        out = out[:limit] if oldest_first else out[-limit:]
        return [self._trade_shape(t) for t in out]

    def _trade_shape(self, t: SimTrade) -> dict[str, Any]:
        f, buy = t.fill, t.fill.side is Side.BUY
        if self.spot:
            return {"symbol": t.order.symbol, "id": t.trade_id, "orderId": t.order.order_id, "orderListId": -1,
                    "price": f"{f.price:.8f}", "qty": f"{f.qty:.8f}", "quoteQty": f"{f.price * f.qty:.8f}",
                    "commission": f"{f.fee:.8f}", "commissionAsset": f.fee_asset, "time": t.time_ms,
                    "isBuyer": buy, "isMaker": t.maker, "isBestMatch": True}  # fmt: skip
        return {"buyer": buy, "commission": num(f.fee), "commissionAsset": f.fee_asset, "id": t.trade_id,
                "maker": t.maker, "orderId": t.order.order_id, "price": num(f.price), "qty": num(f.qty),
                "quoteQty": num(f.price * f.qty), "realizedPnl": num(t.realized), "side": "BUY" if buy else "SELL",
                "positionSide": "BOTH", "symbol": t.order.symbol, "time": t.time_ms}  # fmt: skip

    # -- account -------------------------------------------------------------------------------------------
    def spot_account(self, params: dict[str, str]) -> dict[str, Any]:
        balances = []
        for asset in sorted(self.account.balances[self.venue]):
            free, locked = self.account.free_locked(self.venue, asset)
            balances.append({"asset": asset, "free": str(free), "locked": str(locked)})
        return {
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": "0.00100000", "taker": "0.00100000", "buyer": "0.00000000",
                                "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": self.clock_ms(),
            "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"], "uid": 1,
        }  # fmt: skip

    def _positions(self) -> list[dict[str, Any]]:
        out = []
        for s in self.account.replays[self.venue].tl.symbols:
            pos = self.account.positions.get((self.venue, s))
            ref = self.account.replays[self.venue].reference(s, 1)
            mark = Decimal(repr((ref.bids[0][0] + ref.asks[0][0]) / 2)) if ref and ref.bids and ref.asks else Decimal(0)
            qty, entry = (pos.qty, pos.entry) if pos is not None else (Decimal(0), Decimal(0))
            out.append({"symbol": s, "positionSide": "BOTH", "positionAmt": str(qty), "entryPrice": str(entry),
                        "breakEvenPrice": str(entry), "markPrice": str(mark),
                        "unRealizedProfit": str(qty * (mark - entry) if qty else 0), "liquidationPrice": "0",
                        "leverage": "20", "isolatedMargin": "0", "notional": str(qty * mark),
                        "marginType": "cross", "isolatedWallet": "0", "updateTime": self.clock_ms(),
                        "isolated": False, "initialMargin": "0", "maintMargin": "0",
                        "positionInitialMargin": "0", "openOrderInitialMargin": "0"})  # fmt: skip
        return out

    def futures_balance(self, params: dict[str, str]) -> list[dict[str, Any]]:
        now = self.clock_ms()
        return [{"accountAlias": "SgsR", "asset": a, "balance": str(q), "crossWalletBalance": str(q),
                 "crossUnPnl": "0", "availableBalance": str(q), "maxWithdrawAmount": str(q),
                 "marginAvailable": True, "updateTime": now}
                for a, q in sorted(self.account.balances[self.venue].items())]  # fmt: skip

    def futures_account(self, params: dict[str, str]) -> dict[str, Any]:
        bal = self.account.balances[self.venue]
        total = str(bal.get("USDT", Decimal(0)))
        assets = [{"asset": a, "walletBalance": str(q), "unrealizedProfit": "0", "marginBalance": str(q),
                   "maintMargin": "0", "initialMargin": "0", "positionInitialMargin": "0",
                   "openOrderInitialMargin": "0", "crossWalletBalance": str(q), "crossUnPnl": "0",
                   "availableBalance": str(q), "maxWithdrawAmount": str(q), "marginAvailable": True,
                   "updateTime": self.clock_ms()} for a, q in sorted(bal.items())]  # fmt: skip
        return {"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True, "updateTime": 0,
                "multiAssetsMargin": False, "tradeGroupId": -1, "totalInitialMargin": "0",
                "totalMaintMargin": "0", "totalWalletBalance": total, "totalUnrealizedProfit": "0",
                "totalMarginBalance": total, "totalPositionInitialMargin": "0",
                "totalOpenOrderInitialMargin": "0", "totalCrossWalletBalance": total,
                "totalCrossUnPnl": "0", "availableBalance": total, "maxWithdrawAmount": total,
                "assets": assets, "positions": self._positions()}  # fmt: skip

    def leverage_brackets(self, params: dict[str, str]) -> list[dict[str, Any]]:
        sym = self._symbol(params, required=False)
        one = [{"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0,
                "maintMarginRatio": 0.004, "cum": 0.0}]  # fmt: skip
        syms = [sym] if sym else self.account.replays[self.venue].tl.symbols
        return [{"symbol": s, "brackets": one} for s in syms]

    def position_risk(self, params: dict[str, str]) -> list[dict[str, Any]]:
        sym = self._symbol(params, required=False)
        return [p for p in self._positions() if sym is None or p["symbol"] == sym]


