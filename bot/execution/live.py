"""Live execution through ccxt async: a second implementation of ``bot.execution.base.Execution``.

First version (issue 10): REST only. ``submit``/``cancel`` enqueue onto a bounded queue and return at once;
``run()`` (a task the caller's TaskGroup owns) sends each request through the ccxt exchange object and feeds
what the venue answers into one order state machine (``apply_venue_order``), which publishes ``OrderUpdate``
and ``Fill`` events. A private stream (ccxt.pro ``watch_orders``/``watch_my_trades`` was the intended choice:
one normalised order shape for both venues, the same dicts REST returns, so the same ``apply_venue_order``)
would call that method too; it is not written yet, nor are the config section and the app wiring.

A request that fails with ``ccxt.NetworkError`` (``RequestTimeout`` included) is never sent again: the order
is looked up by its client id; if the venue does not know it, it is REJECTED with reason ``unknown_after_timeout``.
Exception texts are never logged (ccxt's can carry request URLs and headers): only the exception class.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt
import msgspec
import structlog

from bot.execution.base import Publish
from bot.orders import ZERO, Fill, Liquidity, OrderRequest, OrderStatus, OrderUpdate

log = structlog.get_logger(__name__)

_STATUS = {
    "open": OrderStatus.ACCEPTED,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED,
    "rejected": OrderStatus.REJECTED,
    "expired": OrderStatus.EXPIRED,
}


class TokenBucket:
    """``rate`` requests per second, bursts up to ``rate``; ``now`` is injectable for tests."""

    def __init__(self, rate: float, now: Any = time.monotonic) -> None:
        self.rate, self._now = rate, now
        self.tokens, self.last = rate, now()

    def delay(self) -> float:
        """Take a token; the seconds to wait before using it (0 when one was available)."""
        t = self._now()
        self.tokens = min(self.rate, self.tokens + (t - self.last) * self.rate)
        self.last = t
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class LiveExecution:
    def __init__(
        self,
        exchange: Any,
        publish: Publish,
        *,
        max_orders_per_s: float = 5.0,
        queue_size: int = 1000,
        clock_ns: Any = time.time_ns,
    ) -> None:
        self._ex, self._publish, self._clock = exchange, publish, clock_ns
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(queue_size)
        self._orders: dict[str, OrderUpdate] = {}
        self._symbols: dict[str, str] = {}
        self._bucket = TokenBucket(max_orders_per_s)
        self._trade_ids: set[str] = set()
        self.dropped = 0

    def submit(self, request: OrderRequest) -> None:
        ts = request.ts_decision
        upd = request.update(OrderStatus.NEW, ts)
        self._orders[request.client_order_id] = upd
        self._publish(upd)
        try:
            self._queue.put_nowait(("submit", request))
        except asyncio.QueueFull:
            self.dropped += 1
            self._set(upd, OrderStatus.REJECTED, reason="queue_full")

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        o = self._orders.get(client_order_id)
        if o is not None and o.status.is_open:
            try:
                self._queue.put_nowait(("cancel", client_order_id))
            except asyncio.QueueFull:
                self.dropped += 1

    def on_time(self, ts_ns: int) -> None:
        return None

    def open_orders(self) -> list[OrderUpdate]:
        return [o for o in self._orders.values() if o.status.is_open]

    def _set(self, o: OrderUpdate, status: OrderStatus, **kw: Any) -> None:
        ts = self._clock()
        new = msgspec.structs.replace(o, ts_event=ts, ts_recv=ts, status=status, **kw)
        if new != o:
            self._orders[o.client_order_id] = new
            self._publish(new)

    def apply_venue_order(self, cid: str, vo: dict[str, Any]) -> None:
        """The state machine: one ccxt order dict (REST answer or stream) moves our order forward."""
        o = self._orders.get(cid)
        if o is None or not o.status.is_open:
            return
        filled = Decimal(str(vo.get("filled") or 0))
        status = _STATUS.get(str(vo.get("status")), OrderStatus.ACCEPTED)
        if status is OrderStatus.ACCEPTED and filled > ZERO:
            status = OrderStatus.PARTIALLY_FILLED
        avg = vo.get("average")
        self._set(
            o,
            status,
            filled_qty=filled,
            avg_price=Decimal(str(avg)) if avg else o.avg_price,
            venue_order_id=str(vo.get("id") or o.venue_order_id),
        )

    def apply_venue_trade(self, tr: dict[str, Any]) -> None:
        """One ccxt trade dict (``fetch_my_trades`` or a stream) becomes a ``Fill``, once per trade id."""
        tid = str(tr.get("id") or "")
        if not tid or tid in self._trade_ids:
            return
        oid = str(tr.get("order") or "")
        o = next((x for x in self._orders.values() if x.venue_order_id == oid), None)
        if o is None:
            return
        self._trade_ids.add(tid)
        fee = tr.get("fee") or {}
        ts = int(tr.get("timestamp") or 0) * 1_000_000
        liq = Liquidity.MAKER if tr.get("takerOrMaker") == "maker" else Liquidity.TAKER
        self._publish(
            Fill(
                ts_event=ts,
                ts_recv=self._clock(),
                client_order_id=o.client_order_id,
                strategy=o.strategy,
                venue=o.venue,
                symbol=o.symbol,
                side=o.side,
                qty=Decimal(str(tr["amount"])),
                price=Decimal(str(tr["price"])),
                fee=Decimal(str(fee.get("cost") or 0)),
                fee_asset=str(fee.get("currency") or ""),
                liquidity=liq,
                trade_id=tid,
            )
        )

    async def _wait_rate(self) -> None:
        d = self._bucket.delay()
        if d > 0:
            await asyncio.sleep(d)

    async def _find(self, cid: str, symbol: str) -> dict[str, Any] | None:
        try:
            vo: dict[str, Any] = await self._ex.fetch_order(None, symbol, {"clientOrderId": cid})
            return vo
        except ccxt.OrderNotFound:
            return None

    async def _send(self, req: OrderRequest) -> None:
        cid = req.client_order_id
        self._symbols[cid] = req.symbol
        await self._wait_rate()
        params = {"clientOrderId": cid}
        if req.reduce_only:
            params["reduceOnly"] = True  # type: ignore[assignment]
        try:
            vo = await self._ex.create_order(
                req.symbol,
                req.order_type.value,
                req.side.value,
                float(req.qty),
                float(req.price) if req.price is not None else None,
                params,
            )
        except ccxt.NetworkError as e:
            log.warning("order_request_uncertain", client_order_id=cid, error=type(e).__name__)
            found = await self._find(cid, req.symbol)
            if found is None:
                self._set(self._orders[cid], OrderStatus.REJECTED, reason="unknown_after_timeout")
                return
            vo = found
        except ccxt.ExchangeError as e:
            self._set(self._orders[cid], OrderStatus.REJECTED, reason=type(e).__name__)
            return
        self.apply_venue_order(cid, vo)

    async def _cancel(self, cid: str) -> None:
        o = self._orders[cid]
        await self._wait_rate()
        try:
            vo = await self._ex.cancel_order(o.venue_order_id or None, o.symbol, {"clientOrderId": cid})
        except ccxt.NetworkError as e:
            log.warning("cancel_request_uncertain", client_order_id=cid, error=type(e).__name__)
            vo = await self._find(cid, o.symbol)
        except ccxt.OrderNotFound:
            vo = await self._find(cid, o.symbol)
        if vo is not None:
            self.apply_venue_order(cid, vo if vo.get("status") else {**vo, "status": "canceled"})

    async def reconcile(self, orders: list[OrderUpdate], fills: list[Fill], symbols: list[str]) -> None:
        """Before trading on a restart: the persisted open ``orders`` and ``fills`` (``PersistedState``)
        against the venue. Each open order is looked up by its client id (gone: REJECTED
        ``unknown_at_venue``; otherwise the venue's status is applied); the venue's trades on ``symbols``
        become the fills we do not have yet (deduplicated by trade id). Positions are not compared yet."""
        self._trade_ids.update(f.trade_id for f in fills)
        for o in orders:
            self._orders[o.client_order_id] = o
        for o in orders:
            await self._wait_rate()
            vo = await self._find(o.client_order_id, o.symbol)
            if vo is None:
                self._set(o, OrderStatus.REJECTED, reason="unknown_at_venue")
                continue
            if vo.get("id") and not o.venue_order_id:
                self._orders[o.client_order_id] = msgspec.structs.replace(o, venue_order_id=str(vo["id"]))
            trades = await self._ex.fetch_my_trades(o.symbol)
            for tr in trades:
                if str(tr.get("order") or "") == str(vo.get("id") or ""):
                    self.apply_venue_trade(tr)
            self.apply_venue_order(o.client_order_id, vo)

    async def run_once(self) -> None:
        kind, item = await self._queue.get()
        if kind == "submit":
            await self._send(item)
        else:
            await self._cancel(item)

    async def run(self) -> None:
        while True:
            await self.run_once()

    async def stop(self, cancel_open: bool = True) -> None:
        """Cancel every open order first (``cancel_on_stop``), then drain nothing more."""
        if cancel_open:
            for o in self.open_orders():
                await self._cancel(o.client_order_id)
