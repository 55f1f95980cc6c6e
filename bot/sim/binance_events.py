"""Binance user-data events of the loopback exchange, from one ``SimAccount`` order change.

Spot: ``executionReport`` and ``outboundAccountPosition``; USD-M: ``ORDER_TRADE_UPDATE`` and
``ACCOUNT_UPDATE`` (reason ``ORDER``, after fills only: the venue pushes no account update for orders that
rest or are cancelled). The payloads carry the venue's fields, checked against the venues' pages (the spot
``user-data-stream.md`` of binance/binance-spot-api-docs, the USD-M "Event: Order Update" and "Event:
Balance and Position Update" pages):

* ``executionReport``: e E s c S o f q p P F g C x X r i l z L n N T t I w m M O Z Y Q W V; ``C`` is the
  original client order id on a cancel (``c`` the cancel's own id), else ``""``; ``W`` only for orders
  that work on the book; ``N`` is null and ``t`` -1 when the event is not a fill.
* ``outboundAccountPosition``: e E u B[a f l], the base and quote asset of the order's symbol.
* ``ORDER_TRADE_UPDATE``: e E T o{s c S o f q p ap sp x X i l z L N n T t b a m R wt ot ps cp rp pP si
  ss V pm gtd}; ``N``/``n`` only on fills ("will not push if no commission"), ``b``/``a`` the notional of
  the symbol's open buy / sell orders.
* ``ACCOUNT_UPDATE``: e E T a{m B[a wb cw bc] P[s pa ep bep cr up mt iw ps]}.

Execution types: an order reaching the book is ``NEW`` (the matcher's pre-arrival state is not pushed),
a fill ``TRADE``, a cancel ``CANCELED``, an IOC / market remainder ``EXPIRED``. A refused order (post-only
that would take) is answered by REST alone on spot; on USD-M it is pushed ``NEW`` then ``EXPIRED``, as the
venue treats a GTX order that would take. Unverified, kept as the REST side has them: ``V``
(``EXPIRE_MAKER``), ``pm`` (``NONE``).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from bot.events import Side
from bot.orders import ZERO, OrderStatus, OrderType, TimeInForce
from bot.sim.account import SimOrder, split_symbol
from bot.sim.private_binance import BinancePrivate, SimTrade, num, type_tif

_SPOT_X = {OrderStatus.CANCELLED: "CANCELED", OrderStatus.EXPIRED: "EXPIRED"}
_X_STATUS = {
    OrderStatus.ACCEPTED: "NEW",
    OrderStatus.PARTIALLY_FILLED: "PARTIALLY_FILLED",
    OrderStatus.FILLED: "FILLED",
    OrderStatus.CANCELLED: "CANCELED",
    OrderStatus.EXPIRED: "EXPIRED",
    OrderStatus.REJECTED: "EXPIRED",
}


def _f8(d: Decimal) -> str:
    return f"{d:.8f}"


def execution_types(o: SimOrder, trade: SimTrade | None, spot: bool) -> list[tuple[str, str]]:
    """(execution type, order status) of the events one order change makes (none for the matcher's
    pre-arrival NEW)."""
    if trade is not None:
        return [("TRADE", _X_STATUS[o.status])]
    if o.status is OrderStatus.ACCEPTED:
        return [("NEW", "NEW")]
    if o.status in _SPOT_X:
        return [(_SPOT_X[o.status], _X_STATUS[o.status])]
    if o.status is OrderStatus.REJECTED and not spot:
        return [("NEW", "NEW"), ("EXPIRED", "EXPIRED")]
    return []


def _on_book(o: SimOrder) -> bool:
    return o.order_type is OrderType.LIMIT and o.tif is not TimeInForce.IOC


def execution_report(
    p: BinancePrivate, o: SimOrder, x: str, status: str, trade: SimTrade | None, now: int, exec_id: int
) -> dict[str, Any]:
    typ, tif = type_tif(o, True)
    cancel = x == "CANCELED"
    f = trade.fill if trade is not None else None
    ev: dict[str, Any] = {
        "e": "executionReport", "E": now, "s": o.symbol,
        "c": hashlib.md5(f"cancel/{o.order_id}".encode()).hexdigest()[:22] if cancel else o.client_id,
        "S": "BUY" if o.side is Side.BUY else "SELL", "o": typ, "f": tif, "q": _f8(o.qty),
        "p": _f8(o.price or ZERO), "P": _f8(ZERO), "F": _f8(ZERO), "g": -1, "C": o.client_id if cancel else "",
        "x": x, "X": status, "r": "NONE", "i": o.order_id,
        "l": _f8(f.qty if f else ZERO), "z": _f8(o.filled), "L": _f8(f.price if f else ZERO),
        "n": _f8(f.fee) if f else "0", "N": f.fee_asset if f else None,
        "T": trade.time_ms if trade is not None else now, "t": trade.trade_id if trade is not None else -1,
        "I": exec_id, "w": o.status.is_open and _on_book(o),
        "m": trade.maker if trade is not None else False, "M": False, "O": o.time_ms, "Z": _f8(o.cum_quote),
        "Y": _f8(f.qty * f.price if f else ZERO), "Q": _f8(ZERO),
    }  # fmt: skip
    if _on_book(o):
        ev["W"] = o.time_ms
    ev["V"] = "EXPIRE_MAKER"
    return ev


def account_position(p: BinancePrivate, o: SimOrder, now: int) -> dict[str, Any]:
    rows = []
    for asset in split_symbol(o.symbol):
        free, locked = p.account.free_locked(p.venue, asset)
        rows.append({"a": asset, "f": _f8(free), "l": _f8(locked)})
    return {"e": "outboundAccountPosition", "E": now, "u": now, "B": rows}


def _open_notional(p: BinancePrivate, symbol: str, side: Side) -> Decimal:
    return sum(((x.qty - x.filled) * (x.price or ZERO) for x in p.account.open_orders(p.venue, symbol)
                if x.side is side), ZERO)  # fmt: skip


def order_trade_update(
    p: BinancePrivate, o: SimOrder, x: str, status: str, trade: SimTrade | None, now: int
) -> dict[str, Any]:
    typ, tif = type_tif(o, False)
    f = trade.fill if trade is not None else None
    body: dict[str, Any] = {
        "s": o.symbol, "c": o.client_id, "S": "BUY" if o.side is Side.BUY else "SELL", "o": typ, "f": tif,
        "q": num(o.qty), "p": num(o.price or ZERO), "ap": num(o.avg_price or ZERO), "sp": "0", "x": x,
        "X": status, "i": o.order_id, "l": num(f.qty if f else ZERO), "z": num(o.filled),
        "L": num(f.price if f else ZERO),
    }  # fmt: skip
    if f is not None:
        body["N"], body["n"] = f.fee_asset, num(f.fee)
    body.update({
        "T": trade.time_ms if trade is not None else now, "t": trade.trade_id if trade is not None else 0,
        "b": num(_open_notional(p, o.symbol, Side.BUY)), "a": num(_open_notional(p, o.symbol, Side.SELL)),
        "m": trade.maker if trade is not None else False, "R": False, "wt": "CONTRACT_PRICE", "ot": typ,
        "ps": "BOTH", "cp": False, "rp": num(trade.realized if trade is not None else ZERO), "pP": False,
        "si": 0, "ss": 0, "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0,
    })  # fmt: skip
    return {"e": "ORDER_TRADE_UPDATE", "E": now, "T": body["T"], "o": body}


def account_update(p: BinancePrivate, o: SimOrder, now: int, when: int) -> dict[str, Any]:
    quote = split_symbol(o.symbol)[1]
    wallet = p.account.balances[p.venue].get(quote, ZERO)
    pos = p.account.positions.get((p.venue, o.symbol))
    qty, entry, realized = (pos.qty, pos.entry, pos.realized) if pos is not None else (ZERO, ZERO, ZERO)
    ref = p.account.replays[p.venue].reference(o.symbol, 1)
    mark = Decimal(repr((ref.bids[0][0] + ref.asks[0][0]) / 2)) if ref and ref.bids and ref.asks else entry
    position = {"s": o.symbol, "pa": num(qty), "ep": num(entry), "bep": num(entry), "cr": num(realized),
                "up": num(qty * (mark - entry) if qty else ZERO), "mt": "cross", "iw": "0", "ps": "BOTH"}  # fmt: skip
    return {"e": "ACCOUNT_UPDATE", "E": now, "T": when,
            "a": {"m": "ORDER", "B": [{"a": quote, "wb": num(wallet), "cw": num(wallet), "bc": "0"}],
                  "P": [position]}}  # fmt: skip
