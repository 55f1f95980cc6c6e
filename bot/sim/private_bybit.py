"""Bybit v5 signed REST of the loopback exchange: categories ``spot`` and ``linear`` of one unified account.

Signed requests carry ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP`` (ms), ``X-BAPI-RECV-WINDOW`` (default 5000)
and ``X-BAPI-SIGN`` = hex HMAC-SHA256 of timestamp + key + recvWindow + payload, the payload being the
raw query string of a GET and the exact JSON body of a POST. The timestamp must satisfy
``server - recvWindow <= timestamp < server + 1000`` on the sim's clock (``VenueRunner.now_ms``).
Every answer is HTTP 200 with ``retCode``/``retMsg`` as the venue sends them. Refusals: 10003 key,
10004 signature (``error sign! origin_string[...]``), 10002 timestamp, 10001 parameters (a missing or
unknown ``category``; ``Not supported symbols`` for a symbol the recording does not trade), 170121
unknown spot symbol on create, 170131 / 110007 insufficient balance (spot / linear), 170213 / 110001 no
such order (spot / linear), 170141 / 110072 a reused ``orderLinkId`` (spot / linear), 110043 leverage
not modified, 110025 position mode not modified. Verified: 10001-10004 on the venue's v5 error page
(bybit-exchange.github.io/docs/v5/error, through the search tool); 110001, 110007, 110025, 110043,
110072, 170121, 170131, 170141 and 170213, and ``Not supported symbols``, in ccxt 4.5.90's own error
table (its comments quote the venue's answers); the 10002 and 10004 texts are as the venue words them
in client reports, not checked against the docs.

Orders go to ``bot.sim.account.SimAccount``. The sim keeps spot and linear as two ledgers; the UNIFIED
wallet shows their sum per coin (``locked`` = spot orders' holds), with no margin figures: the sim
enforces none (initial / maintenance margins are 0; leverage is only shown, 10 unless set). Spot fees
are charged in the quote coin, as the sim books them (``feeCoin`` says so). A spot market order's
``qty`` counts the quote coin for a buy and the base coin for a sell unless ``marketUnit`` says
otherwise; a quote amount is turned into base at the book, down to the recorded size decimals.
One-way position mode only. ``inverse`` and ``option`` positions and fee rates are empty lists. Lists
are not paginated (``nextPageCursor`` is empty; ``limit`` caps them, newest first). Served besides the
orders: ``/v5/account/{wallet-balance,info,fee-rate}``, ``/v5/user/query-api`` (a UTA key),
``/v5/asset/coin/query-info`` (no chains: the sim moves no coins), ``/v5/position/{list,set-leverage,
switch-mode}``. ``/v5/private`` is ``bot.sim.private_bybit_ws``; the shapes are ``bot.sim.bybit_ledger``'s.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from bot.events import Side, Venue
from bot.orders import ZERO, OrderType, TimeInForce
from bot.sim.account import FEES, SimOrder, split_symbol
from bot.sim.bybit_ledger import CAT_OF, CATEGORY, UID, BybitLedger, Meta, num

JSON = "application/json"
_NONE = ("inverse", "option")  # categories the sim serves empty, as its public side does
# (spot, linear) refusals
_UNKNOWN_ORDER = ((170213, "Order does not exist."), (110001, "order not exists or too late to cancel"))
_NO_MONEY = ((170131, "Insufficient balance."), (110007, "Insufficient available balance"))
_DUPLICATE = ((170141, "Duplicate clientOrderId."), (110072, "OrderLinkedID is duplicate"))


class Refused(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _dec(params: dict[str, Any], name: str) -> Decimal | None:
    v = params.get(name)
    if v is None or v == "":
        return None
    try:
        return Decimal(str(v))
    except InvalidOperation:
        raise Refused(10001, f"params error: {name} invalid") from None


def _coins(symbol: str, base: str, settle: str) -> bool:
    """``symbol`` passes the ``baseCoin`` / ``settleCoin`` filters (an empty one passes everything)."""
    b, q = split_symbol(symbol)
    return (not base or b == base) and (not settle or q == settle)


class BybitPrivate:
    """The signed endpoints of the Bybit host (both categories)."""

    def __init__(self, ledger: BybitLedger, api_key: str, api_secret: str) -> None:
        self.ledger = ledger
        self.account = ledger.account
        self.key = api_key
        self.secret = api_secret.encode()

    def routes(self) -> list[web.RouteDef]:
        h = self._wrap
        gets = {"order/realtime": self.realtime, "order/history": self.history, "execution/list": self.executions,
                "account/wallet-balance": self.wallet_balance, "position/list": self.position_list,
                "account/info": self.account_info, "user/query-api": self.api_info,
                "asset/coin/query-info": self.coin_info, "account/fee-rate": self.fee_rate}  # fmt: skip
        posts = {"order/create": self.create, "order/cancel": self.cancel, "order/cancel-all": self.cancel_all,
                 "position/set-leverage": self.set_leverage, "position/switch-mode": self.switch_mode}  # fmt: skip
        return [web.get(f"/v5/{p}", h(f)) for p, f in gets.items()] + [
            web.post(f"/v5/{p}", h(f)) for p, f in posts.items()
        ]

    # -- plumbing ------------------------------------------------------------------------------------------
    def _wrap(self, fn: Callable[[dict[str, Any]], Any]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                body = {"retCode": 0, "retMsg": "OK", "result": fn(await self._authenticate(request))}
            except Refused as r:
                body = {"retCode": r.code, "retMsg": r.msg, "result": {}}
            body.update(retExtInfo={}, time=self.ledger.now())
            return web.Response(body=orjson.dumps(body), content_type=JSON)

        return handler

    async def _authenticate(self, request: web.Request) -> dict[str, Any]:
        key = request.headers.get("X-BAPI-API-KEY", "")
        if not key or not hmac.compare_digest(key, self.key):
            raise Refused(10003, "API key is invalid.")
        ts, window = request.headers.get("X-BAPI-TIMESTAMP", ""), request.headers.get("X-BAPI-RECV-WINDOW", "5000")
        now = self.ledger.now()
        try:
            fresh = now - int(window) <= int(ts) < now + 1000
        except ValueError:
            fresh = False
        if not fresh:
            raise Refused(10002, "invalid request, please check your server timestamp or recv_window param. "
                                 f"req_timestamp[{ts}],server_timestamp[{now}],recv_window[{window}]")  # fmt: skip
        get = request.method == "GET"
        payload = request.rel_url.raw_query_string if get else await request.text()
        origin = f"{ts}{key}{window}{payload}"
        want = hmac.new(self.secret, origin.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-BAPI-SIGN", "").lower(), want):
            raise Refused(10004, f"error sign! origin_string[{origin}]")
        if get:
            return dict(parse_qsl(payload, keep_blank_values=True))
        try:
            params = orjson.loads(payload or "{}")
        except orjson.JSONDecodeError:
            raise Refused(10001, "params error: request body is not valid json") from None
        if not isinstance(params, dict):
            raise Refused(10001, "params error: request body is not valid json")
        return params

    def _venue(self, p: dict[str, Any]) -> Venue:
        venue = CATEGORY.get(str(p.get("category", "")))
        if venue is None:
            raise Refused(10001, "Illegal category")
        return venue

    def _symbol(self, venue: Venue, p: dict[str, Any], required: bool = False, code: int = 10001) -> str | None:
        sym = str(p.get("symbol") or "")
        rp = self.account.replays.get(venue)
        if not sym:
            if required:
                raise Refused(10001, "params error: symbol is required")
            for s in rp.tl.symbols if rp is not None else []:
                self.account.sync(venue, s)
            return None
        if rp is None or sym not in rp.tl.symbols:
            raise Refused(code, "Invalid symbol." if code == 170121 else "Not supported symbols")
        self.account.sync(venue, sym)
        return sym

    def _find(self, venue: Venue, p: dict[str, Any]) -> SimOrder | None:
        oid, link = str(p.get("orderId") or ""), str(p.get("orderLinkId") or "")
        if oid:
            return self.account.find(venue, int(oid), None) if oid.isdigit() else None
        return self.account.find(venue, None, link) if link else None


    # -- orders --------------------------------------------------------------------------------------------
    def create(self, p: dict[str, Any]) -> dict[str, Any]:
        venue = self._venue(p)
        spot = venue is Venue.BYBIT_SPOT
        sym = self._symbol(venue, p, required=True, code=170121 if spot else 10001)
        assert sym is not None
        side_s, type_s = p.get("side"), p.get("orderType")
        if side_s not in ("Buy", "Sell") or type_s not in ("Market", "Limit"):
            raise Refused(10001, "params error: side or orderType invalid")
        qty, price = _dec(p, "qty"), _dec(p, "price")
        market = type_s == "Market"
        if qty is None or qty <= 0 or (not market and (price is None or price <= 0)):
            raise Refused(10001, "params error: qty or price invalid")
        if str(p.get("positionIdx", 0)) not in ("0", ""):
            raise Refused(10001, "position idx not match position mode")
        tif = {"GTC": TimeInForce.GTC, "IOC": TimeInForce.IOC, "FOK": TimeInForce.IOC,
               "PostOnly": TimeInForce.POST_ONLY}.get(str(p.get("timeInForce") or "GTC"))  # fmt: skip
        if tif is None:
            raise Refused(10001, "params error: timeInForce invalid")
        side = Side.BUY if side_s == "Buy" else Side.SELL
        ref = self.account.replays[venue].reference(sym, 200)
        levels = [] if ref is None else ref.asks if side is Side.BUY else ref.bids
        unit = ""
        if spot and market:
            unit = str(p.get("marketUnit") or "") or ("quoteCoin" if side is Side.BUY else "baseCoin")
        base_qty = qty
        if unit == "quoteCoin":  # spend (or receive) this much quote at the book
            base_qty, left = ZERO, qty
            for px_f, sz_f in levels:
                px, sz = Decimal(repr(px_f)), Decimal(repr(sz_f))
                take = min(sz, left / px)
                base_qty, left = base_qty + take, left - take * px
                if left <= 0:
                    break
            step = Decimal(1).scaleb(-self.account.replays[venue].tl.qty_dec.get(sym, 6))
            base_qty = base_qty.quantize(step, rounding=ROUND_DOWN)
            if base_qty <= 0:
                raise Refused(170136, "Order quantity lower than the minimum.")
        link = str(p.get("orderLinkId") or "")
        if link and self.account.find(venue, None, link) is not None:
            raise Refused(*_DUPLICATE[0 if spot else 1])
        touch = price if price is not None else Decimal(repr(levels[0][0])) if levels else ZERO
        if not self.account.can_afford(venue, sym, side, base_qty, touch):
            raise Refused(*_NO_MONEY[0 if spot else 1])
        cid = link or self.account.new_client_id()
        self.ledger.meta[(venue, cid)] = Meta(link, str(p["qty"]), unit, bool(p.get("reduceOnly")))
        o = self.account.place(venue, sym, side, OrderType.MARKET if market else OrderType.LIMIT,
                               TimeInForce.IOC if market else tif, base_qty, None if market else price, cid,
                               self.ledger.now(venue))  # fmt: skip
        return {"orderId": str(o.order_id), "orderLinkId": link}

    def cancel(self, p: dict[str, Any]) -> dict[str, Any]:
        venue = self._venue(p)
        sym = self._symbol(venue, p, required=True)
        o = self._find(venue, p)
        if o is None or o.symbol != sym or not o.status.is_open:
            raise Refused(*_UNKNOWN_ORDER[0 if venue is Venue.BYBIT_SPOT else 1])
        self.ledger.meta.setdefault((o.venue, o.client_id), self.ledger.meta_of(o)).cancel_type = "CancelByUser"
        self.account.cancel(o)
        return {"orderId": str(o.order_id), "orderLinkId": self.ledger.meta_of(o).link_id}

    def cancel_all(self, p: dict[str, Any]) -> dict[str, Any]:
        venue = self._venue(p)
        sym = self._symbol(venue, p)
        base, settle = str(p.get("baseCoin") or ""), str(p.get("settleCoin") or "")
        if venue is Venue.BYBIT_LINEAR and not (sym or base or settle):
            raise Refused(10001, "Missing some parameters that must be filled in, symbol or settleCoin or baseCoin")
        done = []
        for o in self.account.open_orders(venue, sym):
            if _coins(o.symbol, base, settle):
                self.ledger.meta.setdefault((o.venue, o.client_id), self.ledger.meta_of(o)).cancel_type = "CancelByUser"
                self.account.cancel(o)
                done.append({"orderId": str(o.order_id), "orderLinkId": self.ledger.meta_of(o).link_id})
        return {"list": done, "success": "1"}

    def _orders(self, p: dict[str, Any], open_: bool) -> dict[str, Any]:
        venue = self._venue(p)
        sym = self._symbol(venue, p)
        base, settle = str(p.get("baseCoin") or ""), str(p.get("settleCoin") or "")
        cat = CAT_OF[venue]
        if p.get("orderId") or p.get("orderLinkId"):  # one order, whatever its state (recent ones)
            o = self._find(venue, p)
            found = [o] if o is not None and (sym is None or o.symbol == sym) else []
            return {"list": [self.ledger.order_shape(x) for x in found], "nextPageCursor": "", "category": cat}
        if open_ and venue is Venue.BYBIT_LINEAR and not (sym or base or settle):
            raise Refused(10001, "Missing some parameters that must be filled in, symbol or settleCoin or baseCoin")
        status = str(p.get("orderStatus") or "")
        rows = [self.ledger.order_shape(o) for o in self.account.orders.values()
                if o.venue is venue and o.status.is_open == open_ and (sym is None or o.symbol == sym)
                and _coins(o.symbol, base, settle)]  # fmt: skip
        rows = [r for r in reversed(rows) if not status or r["orderStatus"] == status]
        return {"list": rows[: self._limit(p, 20, 50)], "nextPageCursor": "", "category": cat}

    @staticmethod
    def _limit(p: dict[str, Any], default: int, most: int) -> int:
        try:
            return max(1, min(most, int(p.get("limit") or default)))
        except ValueError:
            raise Refused(10001, "params error: limit invalid") from None

    def realtime(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._orders(p, True)

    def history(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._orders(p, False)

    def executions(self, p: dict[str, Any]) -> dict[str, Any]:
        venue = self._venue(p)
        sym = self._symbol(venue, p)
        by_order = bool(p.get("orderId") or p.get("orderLinkId"))
        one = self._find(venue, p) if by_order else None
        try:
            start, end = int(p.get("startTime") or 0), int(p.get("endTime") or 0) or None
        except ValueError:
            raise Refused(10001, "params error: startTime or endTime invalid") from None
        rows = []
        if p.get("execType", "Trade") == "Trade" and (one is not None or not by_order):
            for o in [one] if one is not None else self.account.orders.values():
                if o.venue is venue and (sym is None or o.symbol == sym):
                    rows += [self.ledger.exec_shape(o, f, t) for f, t in zip(o.fills, o.trade_ids, strict=True)]
        rows = [r for r in rows if int(r["execTime"]) >= start and (end is None or int(r["execTime"]) <= end)]
        rows.sort(key=lambda r: (int(r["execTime"]), r["seq"]), reverse=True)
        return {"nextPageCursor": "", "category": CAT_OF[venue], "list": rows[: self._limit(p, 50, 100)]}

    # -- account -------------------------------------------------------------------------------------------
    def wallet_balance(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("accountType") != "UNIFIED":
            raise Refused(10001, "accountType only support UNIFIED.")
        only = {c for c in str(p.get("coin") or "").split(",") if c}
        return {"list": [self.ledger.wallet_entry(only or None)]}

    def position_list(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("category") in _NONE:
            return {"list": [], "nextPageCursor": "", "category": p["category"]}
        if p.get("category") != "linear":
            raise Refused(10001, "Illegal category")
        sym = self._symbol(Venue.BYBIT_LINEAR, p)
        base, settle = str(p.get("baseCoin") or ""), str(p.get("settleCoin") or "")
        if not (sym or base or settle):
            raise Refused(10001, "Missing some parameters that must be filled in, symbol or settleCoin or baseCoin")
        rp = self.account.replays[Venue.BYBIT_LINEAR]
        syms = [s for s in ([sym] if sym else rp.tl.symbols) if _coins(s, base, settle)]
        rows = [self.ledger.position_shape(s) for s in syms]
        rows = [r for r in rows if sym or r["size"] != "0"]
        return {"list": rows, "nextPageCursor": "", "category": "linear"}

    def account_info(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"marginMode": "REGULAR_MARGIN", "updatedTime": str(self.ledger.now()), "unifiedMarginStatus": 6,
                "dcpStatus": "OFF", "timeWindow": 10, "smpGroup": 0, "isMasterTrader": False,
                "spotHedgingStatus": "OFF"}  # fmt: skip

    def api_info(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"id": "1", "note": "loopback exchange", "apiKey": self.key, "readOnly": 0, "secret": "",
                "permissions": {"ContractTrade": ["Order", "Position"], "Spot": ["SpotTrade"], "Wallet": [],
                                "Options": [], "Derivatives": [], "CopyTrading": [], "BlockTrade": [],
                                "Exchange": [], "NFT": [], "Affiliate": [], "Earn": []},
                "ips": ["*"], "type": 1, "deadlineDay": -1, "expiredAt": "", "createdAt": "", "unified": 0,
                "uta": 1, "userID": UID, "inviterID": 0, "vipLevel": "No VIP", "mktMakerLevel": "0",
                "affiliateID": 0, "rsaPublicKey": "", "isMaster": True, "parentUid": "0",
                "kycLevel": "LEVEL_DEFAULT", "kycRegion": ""}  # fmt: skip

    def coin_info(self, p: dict[str, Any]) -> dict[str, Any]:
        """The coins of the recorded symbols and of the balances; no chains (the sim moves no coins)."""
        coins = {a for v in CAT_OF for a in self.account.balances[v]}
        for v in CAT_OF:
            rp = self.account.replays.get(v)
            coins.update(c for s in (rp.tl.symbols if rp is not None else []) for c in split_symbol(s))
        want = str(p.get("coin") or "")
        return {"rows": [{"name": c, "coin": c, "remainAmount": "0", "chains": []}
                         for c in sorted(coins) if not want or c == want]}  # fmt: skip

    def set_leverage(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("category") != "linear":
            raise Refused(10001, "Illegal category")
        sym = self._symbol(Venue.BYBIT_LINEAR, p, required=True)
        assert sym is not None
        lev = _dec(p, "buyLeverage")
        if lev is None or lev != _dec(p, "sellLeverage") or not 1 <= lev <= 100:
            raise Refused(10001, "params error: buyLeverage or sellLeverage invalid")
        if num(lev) == self.ledger.leverage.get(sym, "10"):
            raise Refused(110043, "Set leverage not modified")
        self.ledger.leverage[sym] = num(lev)
        return {}

    def switch_mode(self, p: dict[str, Any]) -> dict[str, Any]:
        """One-way mode only (the sim keeps one position per symbol)."""
        if str(p.get("mode")) == "0":
            raise Refused(110025, "Position mode is not modified")
        raise Refused(10001, "params error: the loopback exchange trades in one-way mode (mode 0) only")

    def fee_rate(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("category") in _NONE:
            return {"list": []}
        venue = self._venue({"category": "linear", **p})  # the venue's default category here
        sym = self._symbol(venue, p)
        maker, taker = FEES[venue]
        rp = self.account.replays[venue]
        return {"list": [{"symbol": s, "takerFeeRate": num(taker), "makerFeeRate": num(maker)}
                         for s in ([sym] if sym else rp.tl.symbols)]}  # fmt: skip

