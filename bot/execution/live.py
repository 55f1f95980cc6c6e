"""Live execution through ccxt: the second implementation of ``bot.execution.base.Execution``.

``submit``/``cancel`` put the request on the venue's bounded queue and return at once; ``run()`` (a task
the app's TaskGroup owns) sends each one through the venue's ccxt.pro object (``bot.execution.venues``),
at most ``max_orders_per_s`` per venue, one worker per venue, and watches the venue's private streams.
One state machine takes what the venue says from any source (REST answers, the streams, the resync):

    NEW (ours, at submit) -> ACCEPTED -> PARTIALLY_FILLED -> FILLED | CANCELLED | REJECTED | EXPIRED

Why ccxt.pro's ``watch_orders``/``watch_my_trades`` and not our own private-stream clients: unlike the
books, an order stream has no sequence numbers for us to check (nothing to gain from raw frames), and
ccxt gives the same normalised order and trade dicts as its REST calls, so the stream and REST feed one
state machine. What ccxt cannot give is gap detection, so we do not trust the stream alone: whenever a
watch call fails (disconnect, auth), and every ``resync_every_s`` anyway, the open orders and their fills
(by order id) are read by REST; fills are deduplicated by the venue's trade id. Unconfirmed cancels are
sent again then; orders whose sending is not answered yet are left alone.

Rules kept here:
- A request that fails with ``ccxt.OperationFailed`` (``NetworkError``, ``RequestTimeout``, and what ccxt
  raises for a venue's "internal error, outcome unknown", Binance -1001 in a 503) is never sent again: the
  order is looked up by its client id; when the venue does not know it, it is REJECTED
  ``unknown_after_timeout``. So is any other exchange error but a clear refusal (``_REFUSED``). The
  client id makes any retry by ccxt itself idempotent at the venue.
- ``Fill`` events come before the order state that counts them: a venue order reported filled for more
  than the fills seen is held at PARTIALLY_FILLED until the trades arrive (stream or REST), so the
  ledger never sees an order closed without its fills.
- Exception texts are never logged (ccxt's can carry URLs and request headers): only their class.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt
import msgspec
import structlog

from bot.events import Venue
from bot.execution.base import Publish
from bot.execution.venues import VenueApi
from bot.orders import ZERO, Fill, Liquidity, OrderRequest, OrderStatus, OrderUpdate, TimeInForce

log = structlog.get_logger(__name__)

_STATUS = {
    "open": OrderStatus.ACCEPTED,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED,
    "rejected": OrderStatus.REJECTED,
    "expired": OrderStatus.EXPIRED,
}
_TERMINAL_WITH_FILLS = (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED)
STREAM_BACKOFF_S = (0.5, 30.0)
TRADES_LOOKBACK_MS = 10 * 60_000
# refusals after which nothing was placed; any other exchange error leaves the order to be looked up
_REFUSED = (ccxt.InvalidOrder, ccxt.InsufficientFunds, ccxt.BadRequest, ccxt.AuthenticationError,
            ccxt.PermissionDenied, ccxt.BadSymbol, ccxt.AccountSuspended)


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


def _dec(x: Any) -> Decimal:
    return Decimal(str(x)) if x not in (None, "") else ZERO


class LiveExecution:
    def __init__(
        self,
        exchanges: Mapping[Venue, Any],
        publish: Publish,
        *,
        max_orders_per_s: float = 5.0,
        queue_size: int = 1000,
        clock_ns: Any = time.time_ns,
        resync_every_s: float = 30.0,
        time_sync_every_s: float = 300.0,
        fill_wait_s: float = 2.0,
    ) -> None:
        self._apis = {v: VenueApi(v, ex) for v, ex in exchanges.items()}
        self._publish, self._clock = publish, clock_ns
        # one request queue and worker per venue: a slow or rate-limited venue never delays another's cancels
        self._queues: dict[Venue, asyncio.Queue[tuple[str, Any]]] = {v: asyncio.Queue(queue_size) for v in exchanges}
        self._orders: dict[str, OrderUpdate] = {}
        self._venue_view: dict[str, dict[str, Any]] = {}  # the venue's last word on each of our orders
        self._seen: dict[str, Decimal] = {}  # fill qty published per order
        self._first_ns: dict[str, int] = {}  # each order's first event (fills are looked for after it)
        # Binance numbers orders and trades per symbol: every id is keyed (venue, symbol, id)
        self._by_venue_id: dict[tuple[Venue, str, str], str] = {}
        self._unmatched: dict[tuple[Venue, str, str], list[dict[str, Any]]] = {}  # trades before their order's id
        self._buckets = {v: TokenBucket(max_orders_per_s) for v in exchanges}
        self.orders_per_s = max_orders_per_s
        self._trade_ids: set[tuple[Venue, str, str]] = set()
        self._native: dict[Venue, dict[str, str]] = {v: {} for v in exchanges}  # ccxt symbol -> ours
        self._symbols: dict[Venue, dict[str, str]] = {v: {} for v in exchanges}  # native -> ccxt symbol
        self._resync_every_s, self._time_sync_every_s, self._fill_wait_s = (
            resync_every_s, time_sync_every_s, fill_wait_s)  # fmt: skip
        self._chasing: set[str] = set()
        self._inflight: set[str] = set()  # submitted, the venue's answer not in yet: no resync judges them
        self._cancel_wanted: set[str] = set()  # cancels asked for and not yet confirmed (re-sent on a timer)
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats: Counter[str] = Counter()
        self.time_offset_ms: dict[Venue, int] = {}

    # -- set-up ---------------------------------------------------------------------------------------------
    async def prepare(self, symbols: Mapping[Venue, Sequence[str]]) -> None:
        """Load each venue's markets (which also takes the server-time offset) and map our symbols
        (``BTCUSDT``) to ccxt's; a symbol the venue does not list is a ConfigError."""
        from bot.errors import ConfigError

        for venue, api in self._apis.items():
            if hasattr(api.ex, "load_time_difference"):  # ccxt signs its currency list before it would take it
                await api.ex.load_time_difference()
            await api.ex.load_markets()
            self._note_offset(venue)
            by_id = {m["id"]: m["symbol"] for m in api.ex.markets.values()}
            missing = [s for s in symbols.get(venue, ()) if s not in by_id]
            if missing:
                raise ConfigError(f"{venue.value} does not list {missing} for trading")
            self._symbols[venue] = {s: by_id[s] for s in symbols.get(venue, ())}
            self._native[venue] = {by_id[s]: s for s in symbols.get(venue, ())}

    def ccxt_symbol(self, venue: Venue, native: str) -> str:
        return self._symbols.get(venue, {}).get(native, native)

    def _note_offset(self, venue: Venue) -> None:
        off = self._apis[venue].ex.options.get("timeDifference")
        if isinstance(off, int | float):
            self.time_offset_ms[venue] = int(off)

    # -- the Execution interface ---------------------------------------------------------------------------
    def submit(self, request: OrderRequest) -> None:
        upd = request.update(OrderStatus.NEW, request.ts_decision)
        self._orders[request.client_order_id] = upd
        self._first_ns[request.client_order_id] = upd.ts_event
        self._inflight.add(request.client_order_id)
        self._publish(upd)
        try:
            self._queues[request.venue].put_nowait(("submit", request))
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            self._set(upd, OrderStatus.REJECTED, reason="queue_full")

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        o = self._orders.get(client_order_id)
        if o is not None and o.status.is_open:
            self._cancel_wanted.add(client_order_id)  # re-sent by the housekeeping until the venue confirms
            try:
                self._queues[o.venue].put_nowait(("cancel", client_order_id))
            except asyncio.QueueFull:
                self.stats["dropped"] += 1

    def on_time(self, ts_ns: int) -> None:
        return None

    def open_orders(self) -> list[OrderUpdate]:
        return [o for o in self._orders.values() if o.status.is_open]

    def restore(self, orders: Sequence[OrderUpdate], ts_ns: int) -> None:
        """The engine's restart hand-back: orders ``reconcile`` has not seen yet are known again."""
        for o in orders:
            self._orders.setdefault(o.client_order_id, o)
            self._first_ns.setdefault(o.client_order_id, o.ts_event)
            if o.venue_order_id:
                self._by_venue_id[(o.venue, o.symbol, o.venue_order_id)] = o.client_order_id

    # -- the state machine ---------------------------------------------------------------------------------
    def _set(self, o: OrderUpdate, status: OrderStatus, **kw: Any) -> None:
        ts = self._clock()
        new = msgspec.structs.replace(o, ts_event=ts, ts_recv=ts, status=status, **kw)
        if (new.status, new.filled_qty, new.avg_price, new.venue_order_id, new.reason) != (
            o.status, o.filled_qty, o.avg_price, o.venue_order_id, o.reason):  # fmt: skip
            self._orders[o.client_order_id] = new
            self._publish(new)

    def apply_venue_order(self, cid: str, vo: dict[str, Any]) -> None:
        """One ccxt order dict (REST answer, stream or resync) about our order ``cid``."""
        o = self._orders.get(cid)
        if o is None or not o.status.is_open:
            return
        vid = str(vo.get("id") or o.venue_order_id or "")
        if vid:  # the order's venue id goes out with its next state, not as an update of its own
            self._by_venue_id[(o.venue, o.symbol, vid)] = cid
        view = self._venue_view.setdefault(cid, {})
        stale = _dec(vo.get("filled")) < _dec(view.get("filled")) or (
            not _STATUS.get(str(view.get("status")), OrderStatus.ACCEPTED).is_open and vo.get("status") == "open")
        if not stale:  # an older answer never moves the venue's view back
            view.update(vo)
            if str((vo.get("info") or {}).get("orderStatus")) == "PartiallyFilledCanceled":  # ccxt says closed
                view["status"] = "canceled"
        for tr in vo.get("trades") or []:  # Binance answers a new order with its fills
            self.apply_venue_trade(o.venue, {**tr, "order": tr.get("order") or vid})
        for tr in self._unmatched.pop((o.venue, o.symbol, vid), []):
            self.apply_venue_trade(o.venue, tr)
        self._advance(cid)

    def _advance(self, cid: str) -> None:
        o, view = self._orders.get(cid), self._venue_view.get(cid)
        if o is None or view is None or not o.status.is_open:
            return
        filled = _dec(view.get("filled"))
        status = _STATUS.get(str(view.get("status")), OrderStatus.ACCEPTED)
        if status is OrderStatus.ACCEPTED and filled > 0:
            status = OrderStatus.PARTIALLY_FILLED
        seen = self._seen.get(cid, ZERO)
        avg = view.get("average")
        if filled > seen:  # its fills are on their way: count only those seen, keep it open until then
            self.stats["fills_awaited"] += 1
            status = OrderStatus.PARTIALLY_FILLED if seen > 0 else OrderStatus.ACCEPTED
            filled, avg = seen, o.avg_price
            if _STATUS.get(str(view.get("status"))) in _TERMINAL_WITH_FILLS:
                self._chase(o)
        vid = str(view.get("id") or o.venue_order_id or "")
        self._set(o, status, filled_qty=filled, avg_price=_dec(avg) if avg else o.avg_price, venue_order_id=vid,
                  reason=str((view.get("info") or {}).get("rejectReason") or "") if status is OrderStatus.REJECTED
                  else o.reason)  # fmt: skip

    def apply_venue_trade(self, venue: Venue, tr: dict[str, Any]) -> None:
        """One ccxt trade dict (stream, REST, or inside an order answer) becomes a ``Fill``, once per trade
        id; a trade of an order whose venue id we do not know yet waits for it."""
        tid, oid = str(tr.get("id") or ""), str(tr.get("order") or "")
        sym = self._native.get(venue, {}).get(str(tr.get("symbol")), str(tr.get("symbol")))
        if not tid or (venue, sym, tid) in self._trade_ids:
            return
        cid = self._by_venue_id.get((venue, sym, oid))
        o = self._orders.get(cid) if cid is not None else None
        if o is None:
            if oid:  # bounded: the oldest waiting trades give way (REST brings them back if they were ours)
                if len(self._unmatched) >= 1000:
                    self._unmatched.pop(next(iter(self._unmatched)))
                self._unmatched.setdefault((venue, sym, oid), []).append(tr)
            return
        self._trade_ids.add((venue, sym, tid))
        fee = tr.get("fee") or {}
        qty = _dec(tr.get("amount"))
        self._seen[o.client_order_id] = self._seen.get(o.client_order_id, ZERO) + qty
        self._publish(
            Fill(
                ts_event=int(tr.get("timestamp") or 0) * 1_000_000 or self._clock(),
                ts_recv=self._clock(),
                client_order_id=o.client_order_id,
                strategy=o.strategy,
                venue=o.venue,
                symbol=o.symbol,
                side=o.side,
                qty=qty,
                price=_dec(tr.get("price")),
                fee=_dec(fee.get("cost")),
                fee_asset=str(fee.get("currency") or ""),
                liquidity=Liquidity.MAKER if tr.get("takerOrMaker") == "maker" else Liquidity.TAKER,
                trade_id=tid,
            )
        )
        self._advance(o.client_order_id)

    def _chase(self, o: OrderUpdate) -> None:
        """An order the venue closed with fills we have not seen: read its trades by REST shortly."""
        key = o.client_order_id
        if key in self._chasing:
            return
        self._chasing.add(key)

        async def chase() -> None:
            try:
                await asyncio.sleep(self._fill_wait_s)
                if self._orders[o.client_order_id].status.is_open:
                    await self._fetch_trades(o.venue, [o])
                    view = self._venue_view.get(o.client_order_id, {})
                    if self._orders[o.client_order_id].status.is_open and _dec(view.get("filled")) > self._seen.get(
                        o.client_order_id, ZERO
                    ):
                        self.stats["fills_missing"] += 1
                        log.error("fills_missing", client_order_id=o.client_order_id, venue=o.venue.value)
            except Exception as e:  # a failed fetch is logged (class only), never fatal
                log.warning("fills_fetch_failed", venue=o.venue.value, error=type(e).__name__)
            finally:
                self._chasing.discard(key)

        self._spawn(chase())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests ------------------------------------------------------------------------------------------
    async def _signed(self, venue: Venue, call: Any, *args: Any) -> Any:
        """``call(*args)``; refused for its timestamp (``InvalidNonce``: the venue acted on nothing), the
        server-time offset is measured again and the request sent once more."""
        try:
            return await call(*args)
        except ccxt.InvalidNonce:
            self.stats["clock_resyncs"] += 1
            ex = self._apis[venue].ex
            if not hasattr(ex, "load_time_difference"):
                raise
            await ex.load_time_difference()
            self._note_offset(venue)
            log.warning("venue_clock_resynced", venue=venue.value, offset_ms=self.time_offset_ms.get(venue))
            return await call(*args)

    async def _wait_rate(self, venue: Venue) -> None:
        d = self._buckets[venue].delay()
        if d > 0:
            await asyncio.sleep(d)

    async def _send(self, req: OrderRequest) -> None:
        cid, api = req.client_order_id, self._apis[req.venue]
        await self._wait_rate(req.venue)
        params: dict[str, Any] = {"clientOrderId": cid}
        if req.reduce_only and req.venue.market != "spot":  # spot has no such flag (Binance: -1104)
            params["reduceOnly"] = True
        if req.tif is TimeInForce.POST_ONLY:
            params["postOnly"] = True
        elif req.tif is TimeInForce.IOC:
            params["timeInForce"] = "IOC"
        self.stats["orders_sent"] += 1
        try:
            await self._send_once(req, api, params)
        finally:
            self._inflight.discard(cid)

    async def _send_once(self, req: OrderRequest, api: VenueApi, params: dict[str, Any]) -> None:
        cid = req.client_order_id
        try:
            price = float(req.price) if req.price is not None else None
            vo = await self._signed(req.venue, api.ex.create_order, self.ccxt_symbol(req.venue, req.symbol),
                                    req.order_type.value, req.side.value, float(req.qty), price, params)
        except ccxt.OperationFailed as e:  # NetworkError, or the venue's "unknown outcome" (-1001 in a 503)
            self.stats["uncertain"] += 1
            log.warning("order_request_uncertain", client_order_id=cid, error=type(e).__name__)
            found = await self._find(req.venue, cid, req.symbol)
            if found is None:
                self._set(self._orders[cid], OrderStatus.REJECTED, reason="unknown_after_timeout")
                return
            vo = found
        except _REFUSED as e:  # the venue looked at it and said no: nothing was placed
            self.stats["rejected"] += 1
            self._set(self._orders[cid], OrderStatus.REJECTED, reason=type(e).__name__)
            return
        except ccxt.ExchangeError as e:  # a system error, "try again": it may or may not be placed
            self.stats["uncertain"] += 1
            log.warning("order_request_uncertain", client_order_id=cid, error=type(e).__name__)
            await asyncio.sleep(1.0)  # let a venue still processing it finish before asking
            found = await self._find(req.venue, cid, req.symbol)
            if found is None:
                self._set(self._orders[cid], OrderStatus.REJECTED, reason=f"unknown_after_{type(e).__name__}")
                return
            vo = found
        self.apply_venue_order(cid, vo)

    async def _find(self, venue: Venue, cid: str, symbol: str) -> dict[str, Any] | None:
        """The venue's view of ``cid`` (None: it does not know it); a network error while asking is retried
        (asking twice is harmless, unlike sending twice)."""
        for attempt in range(5):
            try:
                found: dict[str, Any] | None = await self._signed(
                    venue, self._apis[venue].find, cid, self.ccxt_symbol(venue, symbol))
                return found
            except ccxt.NetworkError as e:
                log.warning("order_lookup_retry", client_order_id=cid, error=type(e).__name__, attempt=attempt)
                await asyncio.sleep(0.5 * 2**attempt)
        raise ccxt.NetworkError("order lookup kept failing")

    async def _cancel(self, cid: str) -> None:
        o = self._orders[cid]
        api = self._apis[o.venue]
        await self._wait_rate(o.venue)
        self.stats["cancels_sent"] += 1
        vo: dict[str, Any] | None
        try:
            symbol = self.ccxt_symbol(o.venue, o.symbol)
            vo = await self._signed(o.venue, api.ex.cancel_order, o.venue_order_id or None, symbol,
                                    api.id_params(cid))
        except (ccxt.NetworkError, ccxt.OrderNotFound, ccxt.InvalidOrder) as e:
            log.warning("cancel_uncertain", client_order_id=cid, error=type(e).__name__)
            vo = await self._find(o.venue, cid, o.symbol)
        if vo is None:
            self._set(o, OrderStatus.REJECTED, reason="unknown_at_venue")
            return
        if not vo.get("status") or vo.get("status") == "open":  # an ack only: ask for the final word
            vo = await self._find(o.venue, cid, o.symbol) or {**vo, "status": "canceled"}
        self.apply_venue_order(cid, vo)

    # -- reconciliation ------------------------------------------------------------------------------------
    async def reconcile(self, orders: Sequence[OrderUpdate], fills: Sequence[Fill], own_prefix: str = "") -> None:
        """Before trading on a restart: every persisted open order is looked up by its client id (gone:
        REJECTED ``unknown_at_venue``, else the venue's state applied) and the fills the venue has for them
        that we do not (deduplicated by trade id) are published; orders open at the venue with our
        ``own_prefix`` that we never recorded are cancelled."""
        self._trade_ids.update((f.venue, f.symbol, f.trade_id) for f in fills)
        for f in fills:
            self._seen[f.client_order_id] = self._seen.get(f.client_order_id, ZERO) + f.qty
        self.restore(orders, self._clock())
        for venue in self._apis:
            mine = [o for o in orders if o.venue is venue and o.status.is_open]
            await self._resync_orders(venue, mine)
        if own_prefix:
            await self._sweep(own_prefix)

    async def _sweep(self, prefix: str) -> None:
        """Orders open at the venue under our client-id prefix that the database never recorded (a crash
        between sending and writing NEW): cancelled, since no strategy owns them."""
        for venue, api in self._apis.items():
            for symbol in self._symbols.get(venue, {}).values():
                for vo in await self._signed(venue, api.ex.fetch_open_orders, symbol):
                    cid = str(vo.get("clientOrderId") or "")
                    if cid.startswith(prefix) and cid not in self._orders:
                        self.stats["orphans_cancelled"] += 1
                        log.warning("orphan_order_cancelled", venue=venue.value, client_order_id=cid)
                        await self._signed(venue, api.ex.cancel_order, vo.get("id"), symbol, {})

    async def _resync_orders(self, venue: Venue, orders: Sequence[OrderUpdate]) -> None:
        views = []
        for o in orders:
            vo = await self._find(venue, o.client_order_id, o.symbol)
            if vo is None:
                self._set(self._orders[o.client_order_id], OrderStatus.REJECTED, reason="unknown_at_venue")
            else:
                views.append((o, vo))
        for o, vo in views:
            self.apply_venue_order(o.client_order_id, vo)
        await self._fetch_trades(venue, [o for o, _ in views])

    async def _fetch_trades(self, venue: Venue, orders: Sequence[OrderUpdate]) -> None:
        api = self._apis[venue]
        for o in orders:  # per order (no page limit can cut them off), from a while before its first event
            o = self._orders.get(o.client_order_id, o)
            first = self._first_ns.get(o.client_order_id, o.ts_event)
            since = max(first // 1_000_000 - TRADES_LOOKBACK_MS, 0) or None
            params = {"orderId": o.venue_order_id} if o.venue_order_id else {}
            if params:
                since = None  # the venues take an order id or a time range, not both (Binance -1128)
            trades = await self._signed(venue, api.ex.fetch_my_trades, self.ccxt_symbol(venue, o.symbol), since,
                                        None, params)  # fmt: skip
            for tr in trades:
                self.apply_venue_trade(venue, tr)

    async def resync(self, venue: Venue) -> None:
        """REST's view of our open orders on ``venue`` and their fills (after a stream gap, and on a timer);
        orders whose sending is not answered yet are left to ``_send``."""
        self.stats["resyncs"] += 1
        mine = [o for o in self.open_orders() if o.venue is venue and o.client_order_id not in self._inflight]
        await self._resync_orders(venue, mine)
        for cid in [c for c in self._cancel_wanted if c in self._orders]:
            o = self._orders[cid]
            if not o.status.is_open:
                self._cancel_wanted.discard(cid)
            elif o.venue is venue and cid not in self._inflight:
                self.stats["cancels_resent"] += 1
                self.cancel(cid, self._clock())

    # -- tasks ---------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """The request queue, and per venue its private streams, the REST resync and the time sync."""
        async with asyncio.TaskGroup() as tg:
            for venue, api in self._apis.items():
                tg.create_task(self._requests(venue))
                if hasattr(api.ex, "watch_orders"):
                    tg.create_task(self._watch(venue, "orders"))
                    tg.create_task(self._watch(venue, "trades"))
                tg.create_task(self._housekeeping(venue))

    async def _requests(self, venue: Venue) -> None:
        while True:
            await self.run_once(venue)

    async def run_once(self, venue: Venue | None = None) -> None:
        """Send the next request of ``venue`` (default: the only venue), waiting for one."""
        queue = self._queues[venue if venue is not None else next(iter(self._queues))]
        kind, item = await queue.get()
        try:
            if kind == "submit":
                await self._send(item)
            else:
                await self._cancel(item)
        except Exception as e:  # the lookup failed too (or ccxt broke): left for the resync
            self.stats["request_errors"] += 1
            log.error("order_request_failed", kind=kind, error=type(e).__name__)

    async def _watch(self, venue: Venue, what: str) -> None:
        ex = self._apis[venue].ex
        delay = STREAM_BACKOFF_S[0]
        while True:
            try:
                if what == "orders":
                    for vo in await ex.watch_orders():
                        cid = str(vo.get("clientOrderId") or "")
                        if cid in self._orders:
                            self.apply_venue_order(cid, vo)
                else:
                    for tr in await ex.watch_my_trades():
                        self.apply_venue_trade(venue, tr)
                delay = STREAM_BACKOFF_S[0]
            except Exception as e:  # a stream error must never end the bot's TaskGroup
                self.stats[f"stream_errors_{what}"] += 1
                log.warning("private_stream_error", venue=venue.value, stream=what, error=type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, STREAM_BACKOFF_S[1])
                with contextlib.suppress(Exception):
                    await self.resync(venue)  # whatever the gap hid

    async def _housekeeping(self, venue: Venue) -> None:
        ex = self._apis[venue].ex
        next_time = time.monotonic() + self._time_sync_every_s
        while True:
            await asyncio.sleep(self._resync_every_s)
            try:
                await self.resync(venue)
                if time.monotonic() >= next_time and hasattr(ex, "load_time_difference"):
                    await ex.load_time_difference()
                    self._note_offset(venue)
                    next_time = time.monotonic() + self._time_sync_every_s
            except Exception as e:  # logged (class only); the next round tries again
                log.warning("resync_failed", venue=venue.value, error=type(e).__name__)

    def summary(self) -> dict[str, Any]:
        return {"open_orders": len(self.open_orders()), "queued": sum(q.qsize() for q in self._queues.values()),
                "time_offset_ms": {v.value: ms for v, ms in self.time_offset_ms.items()}, **self.stats}  # fmt: skip
