"""Bybit's view of the sim's account (``bot.sim.account.SimAccount``): what the venue answers about it.

Shared by the signed REST (``bot.sim.private_bybit``) and the private stream (``bot.sim.private_bybit_ws``):
the order, execution, position and UNIFIED wallet shapes in the venue's field order (after captured v5
frames), and the facts the sim's orders do not keep (the ``orderLinkId`` and ``qty`` as sent, a spot
market order's ``marketUnit``, who cancelled; each fill's time, remainder and closed size), noted by a
listener on the account that runs before any stream's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot.events import Side, Venue
from bot.orders import ZERO, Fill, Liquidity, OrderStatus, OrderType, TimeInForce
from bot.sim.account import FEES, SimAccount, SimOrder, split_symbol

UID = 100_000_001
CATEGORY = {"spot": Venue.BYBIT_SPOT, "linear": Venue.BYBIT_LINEAR}
CAT_OF = {v: c for c, v in CATEGORY.items()}
_STABLE = ("USDT", "USDC")
_STATUS = {
    OrderStatus.NEW: ("New", "EC_NoError"),
    OrderStatus.ACCEPTED: ("New", "EC_NoError"),
    OrderStatus.PARTIALLY_FILLED: ("PartiallyFilled", "EC_NoError"),
    OrderStatus.FILLED: ("Filled", "EC_NoError"),
    OrderStatus.CANCELLED: ("Cancelled", "EC_NoError"),
    OrderStatus.EXPIRED: ("Cancelled", "EC_CancelForNoFullFill"),
    OrderStatus.REJECTED: ("Rejected", "EC_NoImmediateQtyToFill"),
}
_TIF = {TimeInForce.GTC: "GTC", TimeInForce.IOC: "IOC", TimeInForce.POST_ONLY: "PostOnly"}


def num(d: Decimal | float | int | None) -> str:
    """A decimal as the venue writes it: plain digits, no exponent, no trailing zeros."""
    if d is None:
        return "0"
    v = d if isinstance(d, Decimal) else Decimal(repr(d))
    return format(v.normalize(), "f") if v else "0"


@dataclass
class Meta:
    """What the client sent that the sim's order does not keep."""

    link_id: str  # orderLinkId as sent ("" when none)
    qty: str  # qty as sent (a quote amount for a spot market order by quoteCoin)
    market_unit: str = ""
    reduce_only: bool = False
    cancel_type: str = "UNKNOWN"


@dataclass
class Exec:
    time_ms: int
    leaves: Decimal
    seq: int
    closed: Decimal
    mark: Decimal | None



class BybitLedger:
    """The Bybit venues of the sim account, as the venue shows them."""

    def __init__(self, account: SimAccount, clocks: dict[Venue, Callable[[], int]]) -> None:
        self.account = account
        self.clocks = clocks
        self.meta: dict[tuple[Venue, str], Meta] = {}  # (venue, sim client id) -> what the client sent
        self.execs: dict[int, Exec] = {}  # trade id -> when and how it filled
        self._seq = itertools.count(1_000_000_001)
        self.leverage: dict[str, str] = {}  # linear symbol -> leverage set (shown only: no margin is kept)
        account.listeners.append(self._note)

    def now(self, venue: Venue = Venue.BYBIT_LINEAR) -> int:
        return self.clocks[venue]()

    def meta_of(self, o: SimOrder) -> Meta:
        return self.meta.get((o.venue, o.client_id)) or Meta(o.client_id, num(o.qty))

    def mark(self, venue: Venue, symbol: str) -> Decimal | None:
        rp = self.account.replays.get(venue)
        ref = rp.reference(symbol, 1) if rp is not None else None
        return Decimal(repr((ref.bids[0][0] + ref.asks[0][0]) / 2)) if ref and ref.bids and ref.asks else None

    def _note(self, o: SimOrder, fill: Fill | None, tid: int | None) -> None:
        """Listener (first on the account): the change's time, and each fill's time, remainder and close."""
        if o.venue not in CAT_OF:
            return
        o.update_ms = self.now(o.venue)
        if fill is None or tid is None:
            return
        closed, mark = ZERO, None
        if o.venue is Venue.BYBIT_LINEAR:
            pos = self.account.positions.get((o.venue, o.symbol))
            signed = fill.qty if fill.side is Side.BUY else -fill.qty
            before = (pos.qty if pos is not None else ZERO) - signed
            closed = min(fill.qty, abs(before)) if before and (before > 0) != (signed > 0) else ZERO
            mark = self.mark(o.venue, o.symbol)
        self.execs[tid] = Exec(o.update_ms, o.qty - o.filled, next(self._seq), closed, mark)

    # -- shapes (the REST lists and the private stream) -----------------------------------------------------
    def order_shape(self, o: SimOrder) -> dict[str, Any]:
        m, spot = self.meta_of(o), o.venue is Venue.BYBIT_SPOT
        market = o.order_type is OrderType.MARKET
        left = o.qty - o.filled if o.status.is_open else ZERO
        status, reason = _STATUS[o.status]
        if o.status is OrderStatus.REJECTED and o.tif is TimeInForce.POST_ONLY:
            status, reason = "Cancelled", "EC_PostOnlyWillTakeLiquidity"
        if spot and status == "Cancelled" and o.filled:
            status = "PartiallyFilledCanceled"
        tif = "IOC" if market else _TIF[o.tif]
        d: dict[str, Any] = {
            "category": CAT_OF[o.venue], "symbol": o.symbol, "orderId": str(o.order_id), "orderLinkId": m.link_id,
            "blockTradeId": "", "side": "Buy" if o.side is Side.BUY else "Sell", "positionIdx": 0,
            "orderStatus": status, "cancelType": m.cancel_type, "rejectReason": reason, "timeInForce": tif,
            "isLeverage": "0" if spot else "", "price": num(o.price), "qty": m.qty,
            "avgPrice": num(o.avg_price) if o.filled else ("" if spot else "0"), "leavesQty": num(left),
            "leavesValue": num(left * (o.price or ZERO)), "cumExecQty": num(o.filled),
            "cumExecValue": num(o.cum_quote), "cumExecFee": num(sum((f.fee for f in o.fills), ZERO)),
            "orderType": "Market" if market else "Limit", "stopOrderType": "" if spot else "UNKNOWN", "orderIv": "",
            "triggerPrice": "0", "takeProfit": "0", "stopLoss": "0", "triggerBy": "", "tpTriggerBy": "",
            "slTriggerBy": "", "triggerDirection": 0, "placeType": "", "lastPriceOnCreated": "",
            "closeOnTrigger": False, "reduceOnly": m.reduce_only, "smpGroup": 0, "smpType": "None", "smpOrderId": "",
            "createdTime": str(o.time_ms), "updatedTime": str(o.update_ms),
        }  # fmt: skip
        if spot:
            d.update(marketUnit=m.market_unit, feeCurrency=o.fills[0].fee_asset if o.fills else "")
        else:
            d.update(tpslMode="UNKNOWN", tpLimitPrice="", slLimitPrice="")
        return d

    def exec_shape(self, o: SimOrder, f: Fill, tid: int) -> dict[str, Any]:
        m, spot = self.meta_of(o), o.venue is Venue.BYBIT_SPOT
        e = self.execs.get(tid) or Exec(o.update_ms, ZERO, 0, ZERO, None)
        maker = f.liquidity is Liquidity.MAKER
        return {
            "category": CAT_OF[o.venue], "symbol": o.symbol, "closedSize": "" if spot else num(e.closed),
            "execFee": num(f.fee), "execId": str(tid), "execPrice": num(f.price), "execQty": num(f.qty),
            "execType": "Trade", "execValue": num(f.qty * f.price), "feeRate": num(FEES[o.venue][0 if maker else 1]),
            "tradeIv": "", "markIv": "", "blockTradeId": "", "markPrice": "" if e.mark is None else num(e.mark),
            "indexPrice": "", "underlyingPrice": "", "leavesQty": num(e.leaves), "orderId": str(o.order_id),
            "orderLinkId": m.link_id, "orderPrice": num(o.price), "orderQty": m.qty,
            "orderType": "Market" if o.order_type is OrderType.MARKET else "Limit",
            "stopOrderType": "" if spot else "UNKNOWN", "side": "Buy" if f.side is Side.BUY else "Sell",
            "execTime": str(e.time_ms), "isLeverage": "0" if spot else "", "isMaker": maker, "seq": e.seq,
            "marketUnit": m.market_unit, "feeCoin": f.fee_asset, "createType": "" if spot else "CreateByUser",
        }  # fmt: skip

    def position_shape(self, symbol: str) -> dict[str, Any]:
        venue, now = Venue.BYBIT_LINEAR, str(self.now())
        pos = self.account.positions.get((venue, symbol))
        qty, entry = (pos.qty, pos.entry) if pos is not None else (ZERO, ZERO)
        mark = self.mark(venue, symbol) or entry
        return {
            "positionIdx": 0, "riskId": 1, "riskLimitValue": "2000000", "symbol": symbol,
            "side": "Buy" if qty > 0 else "Sell" if qty < 0 else "", "size": num(abs(qty)), "avgPrice": num(entry),
            "positionValue": num(abs(qty) * entry), "tradeMode": 0, "positionStatus": "Normal", "autoAddMargin": 0,
            "adlRankIndex": 1 if qty else 0, "leverage": self.leverage.get(symbol, "10"), "positionBalance": "0",
            "markPrice": num(mark),
            "liqPrice": "", "bustPrice": "", "positionMM": "0", "positionIM": "0", "tpslMode": "Full",
            "takeProfit": "0", "stopLoss": "0", "trailingStop": "0", "unrealisedPnl": num(qty * (mark - entry)),
            "curRealisedPnl": "0", "cumRealisedPnl": "0", "seq": -1, "isReduceOnly": False,
            "mmrSysUpdatedTime": "", "leverageSysUpdatedTime": "", "sessionAvgPrice": "", "createdTime": now,
            "updatedTime": now,
        }  # fmt: skip

    def wallet_entry(self, only: set[str] | None = None) -> dict[str, Any]:
        """The UNIFIED wallet: both ledgers summed per coin, spot holds as ``locked``, linear upl in equity."""
        coins: dict[str, list[Decimal]] = {}  # coin -> [wallet, locked, upl]
        for venue in CAT_OF:
            for asset, q in self.account.balances[venue].items():
                c = coins.setdefault(asset, [ZERO, ZERO, ZERO])
                c[0] += q
                c[1] += self.account.free_locked(venue, asset)[1]
        for (venue, sym), pos in self.account.positions.items():
            if venue is Venue.BYBIT_LINEAR and pos.qty:
                mark = self.mark(venue, sym) or pos.entry
                coins.setdefault(split_symbol(sym)[1], [ZERO, ZERO, ZERO])[2] += pos.qty * (mark - pos.entry)
        out, total_eq, total_wallet, upl_usd = [], ZERO, ZERO, ZERO
        for coin, (wallet, locked, upl) in sorted(coins.items()):
            if (only and coin not in only) or not (wallet or locked or upl):
                continue
            px = Decimal(1) if coin in _STABLE else (self.mark(Venue.BYBIT_SPOT, f"{coin}USDT") or ZERO)
            total_eq += (wallet + upl) * px
            total_wallet += wallet * px
            upl_usd += upl * px
            out.append({"coin": coin, "equity": num(wallet + upl), "usdValue": num((wallet + upl) * px),
                        "walletBalance": num(wallet), "availableToWithdraw": "", "availableToBorrow": "",
                        "borrowAmount": "0", "accruedInterest": "0", "totalOrderIM": "0", "totalPositionIM": "0",
                        "totalPositionMM": "0", "unrealisedPnl": num(upl), "cumRealisedPnl": "0", "bonus": "0",
                        "collateralSwitch": True, "marginCollateral": True, "locked": num(locked),
                        "spotHedgingQty": "0"})  # fmt: skip
        eq = num(total_eq)
        return {"totalEquity": eq, "accountIMRate": "0", "totalMarginBalance": eq, "totalInitialMargin": "0",
                "accountType": "UNIFIED", "totalAvailableBalance": eq, "accountMMRate": "0",
                "totalPerpUPL": num(upl_usd), "totalWalletBalance": num(total_wallet), "accountLTV": "0",
                "totalMaintenanceMargin": "0", "coin": out}  # fmt: skip
