"""Binance's offline path: recorded frames (``on_ws_frames``) routed in one compiled pass, their diffs applied
by the compiled loop (``bot.venues.binance_kernels``), with the same effect as ``on_ws`` per frame.

A layer of the Binance adapters (``bot.venues.binance``: ``_BinanceAdapter`` inherits it), in a file of its
own for size. It reads the routing tables, sync states and handlers the adapter builds (declared below) and
imports nothing of ``binance.py`` at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from bot.book import OrderBook
from bot.bus import EventBus
from bot.errors import MalformedMessage
from bot.events import BookUpdate, KlineClosed, Trade
from bot.orders import FundingRate
from bot.recording_kernels import route
from bot.venues import binance_kernels
from bot.venues import json_kernels as jk
from bot.venues._shared import DECODE_ERRORS, NS_PER_MS, BookAdapter, Handler
from bot.venues.base import NO_CLOCK, ReplayClock
from bot.venues.binance_wire import Frame, parse_frame
from bot.venues.funding import FundingFilter

if TYPE_CHECKING:
    from bot.recording import Frames
    from bot.venues.binance import _SymbolSync


class BinanceOffline(BookAdapter):
    """``on_ws_frames`` and its compiled loop, for ``_BinanceAdapter``, which sets what is declared here."""

    futures: bool
    partial: bool  # partial depth configured (whole top-N pictures: no diffs for the loop)
    funding: FundingFilter | None
    _sync: dict[str, _SymbolSync]
    # the adapter's route table, packed for the compiled router (``_BinanceAdapter.__init__``)
    _heads: np.ndarray
    _head_bounds: np.ndarray
    _head_routes: list[tuple[Handler | None, str]]
    _handled: np.ndarray
    _symbol_bytes: np.ndarray
    _symbol_bounds: np.ndarray
    # the adapter's handlers
    _on_depth: Handler
    _on_trade: Handler
    _on_kline: Handler
    _on_mark_price: Handler
    _on_other: Callable[[Frame, int], None]
    _applied: Callable[[str, _SymbolSync, OrderBook, int, int], bool]

    def on_ws_frames(self, frames: Frames, clock: ReplayClock = NO_CLOCK) -> None:
        """``on_ws`` for recorded frames, routed in one compiled pass (``bot.recording_kernels.route``: the
        same head lookup as ``on_ws``), so the frames of streams skipped anyway (bookTicker: three quarters
        of a recorded session) are counted without a line of Python each. The frames left are handled in
        order, as bytes, each after ``clock.on_time`` at the latest receive time up to it: the book does not
        change over skipped frames, so that one tick writes the rows a tick at each of them would.

        A run of a few frames (a replay merging several venues by receive time slices them that finely) goes
        frame by frame instead (the base class's ``on_ws`` per frame: the same effect), where the arrays'
        set-up would cost more than it saves."""
        data = frames.data
        ts = frames.ts
        n = len(ts)
        if n <= self.few_frames:
            super().on_ws_frames(frames, clock)
            return
        ids = route(np.frombuffer(data, np.uint8), frames.raw, frames.end, 11, self._heads, self._head_bounds)
        handled = self._handled[ids + 1]
        todo = np.flatnonzero(handled)
        if len(todo) < n:  # frames of skipped streams, counted by reason (their route's entry)
            per_route = np.bincount(ids[~handled], minlength=len(self._head_routes))
            for rid in np.flatnonzero(per_route).tolist():
                self._skip(self._head_routes[rid][1], int(per_route[rid]))
        if not self._started:  # the first frame of the session announces the books (as in on_ws)
            self._start(int(ts[0]))
        stats = self.stats
        handlers = self._head_routes
        done = 0  # frames counted so far
        bus = self._bus
        if len(todo) and bus is not None and self._loop_takes(bus):
            done = self._loop(frames, ids, todo, clock, bus)
        elif len(todo):
            # the latest receive time of each frame handled and the frames skipped right before it
            ticks = np.maximum.reduceat(ts[: todo[-1] + 1], np.concatenate(([0], todo[:-1] + 1))).tolist()
            cols = (todo.tolist(), ticks, ts[todo].tolist(), ids[todo].tolist(), frames.raw[todo].tolist(),
                    frames.end[todo].tolist())  # fmt: skip
            for i, tick, ts_recv, rid, r, e in zip(*cols, strict=True):
                stats.messages += i + 1 - done
                self.ignored += i - done
                done = i + 1
                if tick > clock.due:
                    clock.on_time(tick)
                raw = data[r:e]
                try:  # as in on_ws
                    if rid < 0:
                        self._on_other(parse_frame(raw, self.futures), ts_recv)
                    else:
                        handler, symbol = handlers[rid]
                        handler(raw, symbol, ts_recv)
                except (*DECODE_ERRORS, MalformedMessage) as err:
                    self._malformed("ws", err, raw)
        if done < n:  # skipped frames after the last one handled
            stats.messages += n - done
            self.ignored += n - done
            tick = int(ts[done:].max())
            if tick > clock.due:
                clock.on_time(tick)

    def _loop_takes(self, bus: EventBus) -> bool:
        """Whether ``on_ws_frames`` goes through the compiled loop (``bot.venues.binance_kernels``): diff
        depth configured, every ``BookUpdate`` handler takes batches (``bot.grid_set.GridSet``)."""
        return not self.partial and len(self.symbols) <= jk.MAX_BOOKS and bus.takes_batches(BookUpdate)

    def _loop(self, frames: Frames, ids: np.ndarray, todo: np.ndarray, clock: ReplayClock, bus: EventBus) -> int:
        """The frames handled of a block (``todo``, routed as ``ids``) with their diffs applied by the compiled
        loop, which stops at any frame it does not take (handed to its handler here, as in the loop of
        ``on_ws_frames``) and where the clock is due (ticked first). At each stop the run's books and
        counters are settled and its ``BookUpdate`` events published as one batch, then the trades, klines
        and mark prices it passed over (their events reach nobody, they touch no book) are handled in
        order. Returns the frames counted (``done``)."""
        data = frames.data
        buf = np.frombuffer(data, np.uint8)
        ts = frames.ts
        ticks = np.maximum.reduceat(ts[: todo[-1] + 1], np.concatenate(([0], todo[:-1] + 1)))
        todo_l, ticks_l, ts_l, ids_l = todo.tolist(), ticks.tolist(), ts.tolist(), ids.tolist()
        raws, ends = frames.raw.tolist(), frames.end.tolist()
        routes = self._loop_routes(bus)
        version = bus.version
        handlers = self._head_routes
        books, tops, later, rows, row_tops, healed, healed_f = jk.scratch(len(self.symbols), len(todo))
        stats = self.stats
        in_sync = self._in_sync
        done = 0
        q = 0
        tick_first = True
        while True:
            if bus.version != version:  # a handler (un)subscribed: what reaches nobody may have changed
                routes, version = self._loop_routes(bus), bus.version
            states = self._loop_books(bus, books, in_sync)
            q_end, why, n_later, n_rows, levels, quiet = binance_kernels.apply_diffs(
                buf, frames.raw, frames.end, todo, ticks, ts, ids, q, tick_first, clock.due, routes,
                self._head_bounds, self.futures, self._symbol_bytes, self._symbol_bounds, states, books, tops, later,
                rows, row_tops, healed, healed_f,
            )  # fmt: skip
            if quiet:
                bus.unheard(Trade, quiet)
            if n_rows or books[:, jk.B_SEEN].any():
                self._loop_took(bus, books, tops, rows[:n_rows], row_tops[:n_rows], levels)
                for k in np.flatnonzero(books[:, jk.B_SEEN]).tolist():
                    self._sync[self.symbols[k]].last_event_ms = int(books[k, jk.B_LAST_E])
            for p in later[:n_later].tolist():
                i = todo_l[p]
                raw = data[raws[i] : ends[i]]
                handler, symbol = handlers[ids_l[i]]
                try:  # as in on_ws
                    handler(raw, symbol, ts_l[i])
                except (*DECODE_ERRORS, MalformedMessage) as err:
                    self._malformed("ws", err, raw)
            if q_end > q:  # the frames up to the last one the loop did, the skipped ones among them
                last = todo_l[q_end - 1] + 1
                stats.messages += last - done
                self.ignored += last - done - (q_end - q)
                done = last
            if why == jk.END:
                return done
            if why == jk.TICK:
                clock.on_time(ticks_l[q_end])
                q, tick_first = q_end, False
                continue
            i = todo_l[q_end]
            stats.messages += i + 1 - done
            self.ignored += i - done
            done = i + 1
            raw = data[raws[i] : ends[i]]
            rid = ids_l[i]
            if why == jk.HEALED:
                self._loop_healed(handlers[rid][1], healed.tolist(), healed_f.tolist(), ts_l[i])
            else:
                try:  # as in on_ws
                    if rid < 0:
                        self._on_other(parse_frame(raw, self.futures), ts_l[i])
                    else:
                        handler, symbol = handlers[rid]
                        handler(raw, symbol, ts_l[i])
                except (*DECODE_ERRORS, MalformedMessage) as err:
                    self._malformed("ws", err, raw)
            q, tick_first = q_end + 1, True

    def _in_sync(self, symbol: str) -> bool:
        return self._sync[symbol].synced

    def _loop_routes(self, bus: EventBus) -> np.ndarray:
        """Per head route, for the compiled loop: (kind, book index). Diffs are ``BOOK``; when their events reach
        nobody, trades are ``QUIET`` and klines and mark prices ``LATER``; the rest is handled in order."""
        kinds: dict[Handler, int] = {
            self._on_trade: jk.NOW if bus.wants(Trade) else jk.QUIET,
            self._on_kline: jk.NOW if bus.wants(KlineClosed) else jk.LATER,
            self._on_mark_price: jk.LATER if self.funding is None or not bus.wants(FundingRate) else jk.NOW,
        }
        out = np.zeros((len(self._head_routes), 2), np.int64)
        for r, (handler, symbol) in enumerate(self._head_routes):
            if handler is None:
                out[r, 0] = jk.NOW  # skipped before the loop sees it
            elif handler == self._on_depth:
                out[r] = (jk.BOOK, self.symbols.index(symbol))
            else:
                out[r, 0] = kinds.get(handler, jk.NOW)
        return out

    def _loop_healed(self, symbol: str, healed: list[int], healed_f: list[float], ts_recv: int) -> None:
        """A diff the loop applied that crossed the book (healed): the rest of what ``_depth`` does."""
        n, uid, event_ms, removed = healed
        cross_b, cross_a, bp, bs, ap, as_ = healed_f
        st = self._sync[symbol]
        st.last_event_ms = event_ms
        self.stats.book_messages[symbol] += 1
        book = self.books[symbol]
        book.applied(uid, event_ms * NS_PER_MS, (removed, cross_b, cross_a, bp, bs, ap, as_))
        self._applied(symbol, st, book, n, ts_recv)
