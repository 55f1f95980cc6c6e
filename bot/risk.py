"""The risk gate: every order intent passes ``RiskGate.check`` before it reaches execution.

Synchronous, clock-driven, no I/O: time is the ns timestamps handed in (``now_ns``, the events'
``ts_recv``), never the wall clock, so a replay makes the very same decisions as live trading.

Pre-trade checks, in order (the first that fails is the denial's ``reason``)::

    halted               HALTED: nothing but cancels (cancels never come here)
    strategy_stopped     a model the strategy reads is unhealthy (latency or input age over bound)
    no_instrument_rules  no ``InstrumentInfo`` for (venue, symbol) yet
    book_not_live        the book is not LIVE (``BookHealth``)       no_mid: no usable mid yet
    stale_signal         ``now_ns - intent.signal_ts > max_signal_age_s`` (None: no signal, allowed)
    bad_qty / no_price   qty <= 0; a limit order without a price
    min_qty / max_qty    after rounding qty DOWN to the step
    min_notional         qty x price (limit: the rounded price; market: the mid)
    price_band           a limit price further than ``price_band_pct`` from the mid
    reduce_only          REDUCING (or ``intent.reduce_only``) and the order does not reduce the account's
                         position toward zero without crossing it (open orders on that side included)
    max_order_notional, max_position_notional (per venue and symbol, after the order, open orders on that
    side included, valued at the mid), max_gross_exposure (after the order): an order that does not
    increase |position| (resp. gross exposure) always passes those two
    insufficient_funds   spot only: a sell beyond the base asset held (less open sells: no spot short), a
                         buy beyond the free cash (less open buys; a market buy priced at the band's edge)
    rate_limit           ``max_orders_per_minute`` accepted orders per venue in the last 60 s (event clock)

Rounding never increases risk: qty down to the step, a limit buy's price down to the tick, a sell's up.

Trading state = the worse of a *latched* state and the *live alarms*:

* latched (stays until ``resume``): drawdown kill switches (daily from the UTC day's first equity, and
  from peak equity: HALTED), venue rejections (``max_rejects`` within ``reject_window_s``: HALTED; post-only
  orders refused for crossing are expected and not counted), and the
  operator (``halt``/``reduce``). ``resume`` clears the latched state and rebases the drawdown references
  at the last equity seen (the operator has accepted that loss), but live alarms still apply.
* live alarms (REDUCING while they last, NOT latched: the state goes back by itself when they clear):
  a book RESYNCING longer than ``max_resync_s`` (clears when it is LIVE again), ``crossed_burst``
  crossed-book heals on one book within ``crossed_window_s`` (clears as the window slides past them),
  ``|clock skew| > max_clock_skew_ms`` on a venue (clears with the next skew measurement within bound).

Model health is per strategy, not a trading state: a signal whose inference latency or input age exceeds
its bound stops every strategy registered as reading that model (``StrategyHealth(enabled=False)``); a
healthy signal from it re-enables them. A strategy registered with no models reads any model, so any
unhealthy model stops it.

Every denial is published as ``OrderDenied`` and returned; every change of the effective state is a
``RiskStateChanged``, and so is every change of the latched state alone (``previous == state`` then, e.g.
an operator reduce while an alarm already reduces), so the latch can be persisted from the events; both
are counted (``stats()``), neither is logged per order.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Protocol, TypedDict

import structlog

from bot.config import RiskConfig
from bot.events import BookCrossed, BookHealth, BookState, BookUpdate, Event, Side, Signal, Venue
from bot.orders import (
    ZERO,
    ClockSkew,
    Instrument,
    InstrumentInfo,
    OrderDenied,
    OrderIntent,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    RiskStateChanged,
    StrategyHealth,
    TradingState,
)

log = structlog.get_logger(__name__)

Key = tuple[Venue, str]
NS = 1_000_000_000
NS_PER_DAY = 86_400 * NS
RATE_WINDOW_NS = 60 * NS
HUNDRED = Decimal(100)
_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}
_LOG_FIRST = 3  # denials of one reason logged before only every _LOG_EVERY-th is
_LOG_EVERY = 1000


class ExposureView(Protocol):
    """What the gate reads of the account (``bot.ledger.Ledger``)."""

    def position(self, venue: Venue, symbol: str) -> Decimal: ...  # signed base qty, whole account
    def mark(self, venue: Venue, symbol: str) -> Decimal | None: ...
    def equity(self, venue: Venue | None = None) -> Decimal: ...
    def gross_exposure(self) -> Decimal: ...
    def cash(self, venue: Venue) -> Decimal: ...  # the account's quote balance


# Rejections that are a venue working as it should, not a sign of trouble: a post-only order that would
# have crossed on arrival (a limit strategy at the touch sees one in five). They do not count toward
# ``max_rejects``.
EXPECTED_REJECTIONS = frozenset({"post_only_would_cross"})


class RiskStats(TypedDict):
    state: str
    latched: str
    alarms: dict[str, str]  # alarm code -> what
    accepted: int
    denied: int
    denied_by_reason: dict[str, int]
    stopped_strategies: list[str]
    state_changes: int


class _Denied(Exception):
    """Internal: one rule refused the intent (never leaves ``check``)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def _worse(a: TradingState, b: TradingState) -> TradingState:
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


def floor_to(x: Decimal, step: Decimal) -> Decimal:
    """The largest multiple of ``step`` <= ``x`` (step > 0), in ``step``'s exponent."""
    return (x / step).to_integral_value(rounding=ROUND_FLOOR) * step


def ceil_to(x: Decimal, step: Decimal) -> Decimal:
    """The smallest multiple of ``step`` >= ``x`` (step > 0), in ``step``'s exponent."""
    return (x / step).to_integral_value(rounding=ROUND_CEILING) * step


class RiskGate:
    def __init__(
        self,
        cfg: RiskConfig,
        exposure: ExposureView,
        publish: Callable[[Event], None],
        state: TradingState = TradingState.ACTIVE,
    ) -> None:
        self.cfg = cfg
        self._exposure = exposure
        self._publish = publish
        self._latched = state
        self._latched_reason = "restored" if state is not TradingState.ACTIVE else ""
        self._alarms: dict[str, str] = {}  # live alarms (each means REDUCING): code -> detail
        self._effective = self._compute()
        # market data
        self._instruments: dict[Key, Instrument] = {}
        self._mids: dict[Key, float] = {}
        self._health: dict[Key, BookState] = {}
        self._resyncing_since: dict[Key, int] = {}
        self._crossed: dict[Key, deque[int]] = {}
        self._skew_bad: dict[Venue, float] = {}
        # orders
        self._rate: dict[Venue, deque[int]] = {}
        # client order id -> (venue, symbol), side, remaining qty, price (limit; market: the mid at the check)
        self._open: dict[str, tuple[Key, Side, Decimal, Decimal]] = {}
        self._rejects: deque[tuple[int, str]] = deque()
        self._rejected_ids: set[str] = set()
        # equity
        self._day: int | None = None
        self._day_open = ZERO
        self._peak = ZERO
        self._last_equity: Decimal | None = None
        # strategies and models
        self._strategies: dict[str, tuple[str, ...]] = {}
        self._bad_models: dict[str, tuple[str, str]] = {}  # model -> (reason, detail)
        self._disabled: set[str] = set()
        # counters
        self._accepted = 0
        self._denied: Counter[str] = Counter()
        self._state_changes = 0
        self._band = Decimal(repr(cfg.price_band_pct))
        self._max_daily_dd = Decimal(repr(cfg.max_daily_drawdown_pct))
        self._max_dd = Decimal(repr(cfg.max_drawdown_pct))
        log.info("risk_gate_started", state=self._effective.value, cfg=cfg.model_dump(mode="json"))

    # -- state ----------------------------------------------------------------------------------------------

    @property
    def state(self) -> TradingState:
        """The effective state: the worse of the latched (operator, kill switch) state and the live alarms."""
        return self._effective

    @property
    def latched(self) -> TradingState:
        return self._latched

    @property
    def alarms(self) -> dict[str, str]:
        return dict(self._alarms)

    def _compute(self) -> TradingState:
        return _worse(self._latched, TradingState.REDUCING if self._alarms else TradingState.ACTIVE)

    def _settle(self, reason: str, detail: str, ts_ns: int, latch_moved: bool = False) -> None:
        """Publish ``RiskStateChanged`` if the effective state moved, or the latched one did (then
        ``previous == state`` can be: e.g. an operator reduce under a live alarm; a state database
        persists the latch from these events)."""
        new = self._compute()
        if new is self._effective and not latch_moved:
            return
        previous, self._effective = self._effective, new
        self._state_changes += 1
        log.warning("risk_state_changed", previous=previous.value, state=new.value, reason=reason, detail=detail)
        self._publish(
            RiskStateChanged(ts_event=ts_ns, ts_recv=ts_ns, previous=previous, state=new, reason=reason, detail=detail)
        )

    def _latch(self, state: TradingState, reason: str, detail: str, ts_ns: int) -> None:
        """Latch ``state`` unless something at least as bad is latched already."""
        if _SEVERITY[self._latched] >= _SEVERITY[state]:
            return
        self._latched, self._latched_reason = state, reason
        self._settle(reason, detail, ts_ns, latch_moved=True)

    def _alarm(self, code: str, on: bool, detail: str, ts_ns: int) -> None:
        if on == (code in self._alarms):
            if on:
                self._alarms[code] = detail
            return
        if on:
            self._alarms[code] = detail
            log.warning("risk_alarm_raised", alarm=code, detail=detail)
            self._settle(code, detail, ts_ns)
        else:
            del self._alarms[code]
            log.info("risk_alarm_cleared", alarm=code)
            self._settle(code, f"cleared: {detail}", ts_ns)

    # -- operator -------------------------------------------------------------------------------------------

    def halt(self, reason: str, ts_ns: int) -> None:
        self._operator(TradingState.HALTED, reason, f"halt: {reason}", ts_ns)

    def reduce(self, reason: str, ts_ns: int) -> None:
        """Latch REDUCING (also from a latched HALTED: the operator lets positions be closed)."""
        self._operator(TradingState.REDUCING, reason, f"reduce: {reason}", ts_ns)

    def _operator(self, state: TradingState, reason: str, detail: str, ts_ns: int) -> None:
        moved = state is not self._latched
        self._latched, self._latched_reason = state, reason
        self._settle("operator", detail, ts_ns, latch_moved=moved)

    def resume(self, ts_ns: int) -> None:
        """Clear every latched state; live alarms still apply. Drawdown references restart at the last
        equity and the reject window is emptied, so the same loss or rejects do not trip again at once."""
        moved = self._latched is not TradingState.ACTIVE
        self._latched, self._latched_reason = TradingState.ACTIVE, ""
        if self._last_equity is not None:
            self._peak = self._day_open = self._last_equity
        self._rejects.clear()
        self._rejected_ids.clear()
        still = f"; alarms still on: {', '.join(sorted(self._alarms))}" if self._alarms else ""
        self._settle("operator", f"resume{still}", ts_ns, latch_moved=moved)

    # -- strategies and model health -----------------------------------------------------------------------

    def register_strategy(self, name: str, models: Sequence[str]) -> None:
        """``models``: the checkpoint names whose signals the strategy reads (empty: any model)."""
        self._strategies[name] = tuple(models)
        if self._reads_bad_model(name) is not None:
            self._disabled.add(name)

    def strategy_enabled(self, name: str) -> bool:
        return name not in self._disabled

    def _reads_bad_model(self, name: str) -> str | None:
        models = self._strategies.get(name)
        if models is None:
            return None
        for m in models or self._bad_models:
            if m in self._bad_models:
                return m
        return None

    def on_signal(self, s: Signal) -> None:
        latency_ms = (s.inference_end_ns - s.inference_start_ns) / 1e6
        age_s = (s.ts_recv - s.ts_event) / 1e9
        if latency_ms > self.cfg.max_model_latency_ms:
            bad: tuple[str, str] | None = (
                "model_latency",
                f"{s.model}: inference took {latency_ms:.1f} ms > {self.cfg.max_model_latency_ms:g} ms",
            )
        elif age_s > self.cfg.max_model_input_age_s:
            bad = ("model_input_age", f"{s.model}: input {age_s:.1f} s old > {self.cfg.max_model_input_age_s:g} s")
        else:
            bad = None
        if bad is not None:
            first = s.model not in self._bad_models
            self._bad_models[s.model] = bad
            if first:
                log.warning("model_unhealthy", model=s.model, reason=bad[0], detail=bad[1])
        elif s.model in self._bad_models:
            del self._bad_models[s.model]
            log.info("model_healthy", model=s.model)
        else:
            return
        self._refresh_strategies(s.ts_recv)

    def _refresh_strategies(self, ts_ns: int) -> None:
        for name in self._strategies:
            model = self._reads_bad_model(name)
            if model is not None and name not in self._disabled:
                self._disabled.add(name)
                reason, detail = self._bad_models[model]
                self._health_event(name, False, reason, detail, ts_ns)
            elif model is None and name in self._disabled:
                self._disabled.discard(name)
                self._health_event(name, True, "model_healthy", "every model it reads is healthy again", ts_ns)

    def _health_event(self, name: str, enabled: bool, reason: str, detail: str, ts_ns: int) -> None:
        log.warning("strategy_health", strategy=name, enabled=enabled, reason=reason, detail=detail)
        self._publish(
            StrategyHealth(ts_event=ts_ns, ts_recv=ts_ns, strategy=name, enabled=enabled, reason=reason, detail=detail)
        )

    # -- market data and alarms -----------------------------------------------------------------------------

    def on_instrument(self, ev: InstrumentInfo) -> None:
        i = ev.instrument
        self._instruments[(i.venue, i.symbol)] = i

    def on_book(self, ev: BookUpdate) -> None:
        self.on_top(ev.venue, ev.symbol, ev.bid_px, ev.ask_px)

    def on_top(self, venue: Venue, symbol: str, bid: float, ask: float) -> None:
        """The book's top of book now (``on_book`` of an update carrying it; the last of a batch)."""
        key = (venue, symbol)
        if math.isfinite(bid) and math.isfinite(ask) and 0 < bid <= ask:
            self._mids[key] = (bid + ask) / 2
        else:  # an empty side or a crossed top: no price we could trust
            self._mids.pop(key, None)

    def on_health(self, ev: BookHealth) -> None:
        key = (ev.venue, ev.symbol)
        self._health[key] = ev.state
        if ev.state is BookState.RESYNCING:
            self._resyncing_since.setdefault(key, ev.ts_recv)
        else:
            self._resyncing_since.pop(key, None)
        self._check_resync(ev.ts_recv)

    def on_crossed(self, ev: BookCrossed) -> None:
        key = (ev.venue, ev.symbol)
        self._crossed.setdefault(key, deque()).append(ev.ts_recv)
        self._check_crossed(ev.ts_recv)

    def on_skew(self, ev: ClockSkew) -> None:
        if abs(ev.offset_ms) > self.cfg.max_clock_skew_ms:
            self._skew_bad[ev.venue] = ev.offset_ms
        else:
            self._skew_bad.pop(ev.venue, None)
        what = ", ".join(f"{v.value} {o:+.0f} ms" for v, o in sorted(self._skew_bad.items()))
        self._alarm("clock_skew", bool(self._skew_bad), what or "within bound", ev.ts_recv)

    def on_time(self, ts_ns: int) -> None:
        self._check_resync(ts_ns)
        self._check_crossed(ts_ns)

    def _check_resync(self, ts_ns: int) -> None:
        limit = int(self.cfg.max_resync_s * NS)
        long = sorted(f"{v.value}:{s}" for (v, s), t in self._resyncing_since.items() if ts_ns - t > limit)
        what = f"resyncing > {self.cfg.max_resync_s:g} s: {', '.join(long)}" if long else "every book in sync"
        self._alarm("book_resyncing", bool(long), what, ts_ns)

    def _check_crossed(self, ts_ns: int) -> None:
        horizon = ts_ns - int(self.cfg.crossed_window_s * NS)
        burst = []
        for (venue, symbol), times in list(self._crossed.items()):
            while times and times[0] <= horizon:
                times.popleft()
            if not times:
                del self._crossed[(venue, symbol)]
            elif len(times) >= self.cfg.crossed_burst:
                burst.append(f"{venue.value}:{symbol} {len(times)}")
        what = f"crossed-book heals within {self.cfg.crossed_window_s:g} s: {', '.join(sorted(burst))}"
        self._alarm("crossed_burst", bool(burst), what if burst else "no burst", ts_ns)

    # -- account --------------------------------------------------------------------------------------------

    def on_order(self, o: OrderUpdate) -> None:
        if o.status.is_open:  # also an order this gate did not pass itself: one restored after a restart
            known = self._open.get(o.client_order_id)
            price = o.price if o.price is not None else (known[3] if known else ZERO)
            self._open[o.client_order_id] = ((o.venue, o.symbol), o.side, max(o.qty - o.filled_qty, ZERO), price)
        else:
            self._open.pop(o.client_order_id, None)
        if (o.status is not OrderStatus.REJECTED or o.client_order_id in self._rejected_ids
                or o.reason in EXPECTED_REJECTIONS):
            return
        ts = o.ts_recv
        self._rejects.append((ts, o.client_order_id))
        self._rejected_ids.add(o.client_order_id)
        horizon = ts - int(self.cfg.reject_window_s * NS)
        while self._rejects and self._rejects[0][0] <= horizon:
            self._rejected_ids.discard(self._rejects.popleft()[1])
        if len(self._rejects) >= self.cfg.max_rejects:
            detail = f"{len(self._rejects)} venue rejections within {self.cfg.reject_window_s:g} s (last: {o.reason})"
            self._latch(TradingState.HALTED, "rejects", detail, ts)

    def restore_equity(self, peak: Decimal | None, day_start: Decimal | None, day_start_ns: int | None) -> None:
        """After a restart: the drawdown references as the state database kept them (peak equity, the
        UTC day's first equity and that day), so a restart does not forget a loss already taken."""
        if peak is not None:
            self._peak = peak
        if day_start is not None and day_start_ns is not None:
            self._day, self._day_open = day_start_ns // NS_PER_DAY, day_start

    def on_equity(self, equity: Decimal, ts_ns: int) -> None:
        """Drawdown kill switches: from the UTC day's first equity and from the peak (HALTED, latched)."""
        self._last_equity = equity
        day = ts_ns // NS_PER_DAY
        if day != self._day:
            self._day, self._day_open = day, equity
        if equity > self._peak or self._peak <= ZERO:
            self._peak = equity
        if self._day_open > ZERO:
            daily = (self._day_open - equity) / self._day_open * HUNDRED
            if daily > self._max_daily_dd:
                detail = f"equity {equity} is {daily:.2f} % below the day's opening {self._day_open}"
                self._latch(TradingState.HALTED, "daily_drawdown", detail, ts_ns)
        if self._peak > ZERO:
            dd = (self._peak - equity) / self._peak * HUNDRED
            if dd > self._max_dd:
                detail = f"equity {equity} is {dd:.2f} % below the peak {self._peak}"
                self._latch(TradingState.HALTED, "drawdown", detail, ts_ns)

    # -- the check ------------------------------------------------------------------------------------------

    def check(self, intent: OrderIntent, client_order_id: str, now_ns: int) -> OrderRequest | OrderDenied:
        try:
            request = self._check(intent, client_order_id, now_ns)
        except _Denied as d:
            return self._deny(intent, d.reason, d.detail, now_ns)
        self._accepted += 1
        self._rate.setdefault(intent.venue, deque()).append(now_ns)
        price = request.price if request.price is not None else Decimal(repr(self._mids[(intent.venue, intent.symbol)]))
        self._open[client_order_id] = ((intent.venue, intent.symbol), request.side, request.qty, price)
        return request

    def _check_spot_funds(self, intent: OrderIntent, qty: Decimal, px: Decimal, pos: Decimal, pending: Decimal) -> None:
        """A spot account cannot go short, nor spend cash it does not have: a sell needs the base asset
        (less what open sells already offer), a buy the quote (less what open buys on any symbol of the
        venue already commit, at their limit prices or the mid they were checked at)."""
        if intent.side is Side.SELL:
            free = pos - pending
            if qty > free:
                held = f"the spot account holds {pos} ({pending} already offered)"
                raise _Denied("insufficient_funds", f"sell {qty} {intent.symbol} but {held}")
            return
        buys = (q * p for (v, _), s, q, p in self._open.values() if v == intent.venue and s is Side.BUY)
        committed = sum(buys, ZERO)
        free_cash = self._exposure.cash(intent.venue) - committed
        cost = qty * px * (1 + self._band / HUNDRED) if intent.order_type is OrderType.MARKET else qty * px
        if cost > free_cash:
            raise _Denied("insufficient_funds",
                          f"buy {qty} {intent.symbol} costs about {cost:.2f} but {free_cash:.2f} cash is free "
                          f"({committed:.2f} committed to open buys)")

    def _check(self, intent: OrderIntent, client_order_id: str, now_ns: int) -> OrderRequest:
        cfg = self.cfg
        key = (intent.venue, intent.symbol)
        state = self._effective
        if state is TradingState.HALTED:
            raise _Denied("halted", f"trading is halted ({self._why_halted()})")
        if intent.strategy in self._disabled:
            model = self._reads_bad_model(intent.strategy)
            raise _Denied("strategy_stopped", self._bad_models[model][1] if model else "stopped by model health")
        inst = self._instruments.get(key)
        if inst is None:
            raise _Denied("no_instrument_rules", f"no trading rules known for {intent.venue.value} {intent.symbol}")
        health = self._health.get(key)
        if health is not BookState.LIVE:
            raise _Denied("book_not_live", f"book is {health.value if health else 'not yet seen'}")
        mid_f = self._mids.get(key)
        if mid_f is None:
            raise _Denied("no_mid", "no mid price for the book")
        mid = Decimal(repr(mid_f))
        if intent.signal_ts is not None and now_ns - intent.signal_ts > cfg.max_signal_age_s * NS:
            age = (now_ns - intent.signal_ts) / NS
            raise _Denied("stale_signal", f"signal is {age:.1f} s old > {cfg.max_signal_age_s:g} s")
        if not (intent.qty.is_finite() and intent.qty > ZERO):
            raise _Denied("bad_qty", f"qty must be > 0, not {intent.qty}")
        # rounding that never increases risk
        qty = floor_to(intent.qty, inst.step_size)
        price: Decimal | None = None
        if intent.order_type is OrderType.LIMIT:
            if intent.price is None or not (intent.price.is_finite() and intent.price > ZERO):
                raise _Denied("no_price", f"a limit order needs a price > 0, not {intent.price}")
            rnd = floor_to if intent.side is Side.BUY else ceil_to
            price = rnd(intent.price, inst.tick_size)
            if not price > ZERO:
                raise _Denied("no_price", f"price {intent.price} rounds to {price} (tick {inst.tick_size})")
        if qty < inst.min_qty or qty <= ZERO:
            raise _Denied("min_qty", f"qty {intent.qty} rounds down to {qty} < min qty {inst.min_qty}")
        if inst.max_qty is not None and qty > inst.max_qty:
            raise _Denied("max_qty", f"qty {qty} > max qty {inst.max_qty}")
        px = price if price is not None else mid
        notional = qty * px
        if notional < inst.min_notional:
            raise _Denied("min_notional", f"notional {notional} < min notional {inst.min_notional}")
        if price is not None and abs(price - mid) / mid * HUNDRED > self._band:
            off = abs(price - mid) / mid * HUNDRED
            raise _Denied("price_band", f"price {price} is {off:.3f} % from mid {mid} > {cfg.price_band_pct:g} %")
        # exposure: the position as it would be if every open order on this side filled, and this one
        pos = self._exposure.position(intent.venue, intent.symbol)
        sign = 1 if intent.side is Side.BUY else -1
        pending = sum((q for k, s, q, _ in self._open.values() if k == key and s is intent.side), ZERO)
        before = pos + sign * pending
        after = before + sign * qty
        reducing = abs(after) <= abs(before) and (after == ZERO or (after > ZERO) == (before > ZERO))
        reduce_only = intent.reduce_only or state is TradingState.REDUCING
        if reduce_only and not reducing:
            why = "state is REDUCING" if state is TradingState.REDUCING else "the intent is reduce-only"
            raise _Denied(
                "reduce_only",
                f"{why}: {intent.side.value} {qty} with position {pos} (open {pending}) does not reduce it toward 0",
            )
        if notional > cfg.max_order_notional:
            raise _Denied("max_order_notional", f"notional {notional} > {cfg.max_order_notional}")
        if abs(after) > abs(before) and abs(after) * mid > cfg.max_position_notional:
            raise _Denied(
                "max_position_notional",
                f"position would be {after} ({abs(after) * mid} at mid {mid}) > {cfg.max_position_notional}",
            )
        mark = self._exposure.mark(intent.venue, intent.symbol) or mid
        gross = self._exposure.gross_exposure()
        gross_after = gross - abs(pos) * mark + abs(after) * mid
        if gross_after > gross and gross_after > cfg.max_gross_exposure:
            raise _Denied("max_gross_exposure", f"gross exposure would be {gross_after} > {cfg.max_gross_exposure}")
        if intent.venue.market == "spot":
            self._check_spot_funds(intent, qty, px, pos, pending)
        window = self._rate.get(intent.venue)
        if window is not None:
            while window and window[0] <= now_ns - RATE_WINDOW_NS:
                window.popleft()
            if len(window) >= cfg.max_orders_per_minute:
                raise _Denied("rate_limit", f"{len(window)} orders on {intent.venue.value} in the last 60 s")
        return OrderRequest(
            client_order_id=client_order_id, strategy=intent.strategy, venue=intent.venue, symbol=intent.symbol,
            side=intent.side, qty=qty, order_type=intent.order_type, price=price, tif=intent.tif,
            reduce_only=reduce_only, ts_decision=now_ns,
        )  # fmt: skip

    def _why_halted(self) -> str:
        return self._latched_reason or "halted"

    def _deny(self, intent: OrderIntent, reason: str, detail: str, now_ns: int) -> OrderDenied:
        self._denied[reason] += 1
        n = self._denied[reason]
        if n <= _LOG_FIRST or n % _LOG_EVERY == 0:
            log.info("order_denied", reason=reason, detail=detail, strategy=intent.strategy,
                     venue=intent.venue.value, symbol=intent.symbol, count=n)  # fmt: skip
        denied = OrderDenied(
            ts_event=now_ns, ts_recv=now_ns, strategy=intent.strategy, venue=intent.venue, symbol=intent.symbol,
            side=intent.side, qty=intent.qty, reason=reason, detail=detail,
        )  # fmt: skip
        self._publish(denied)
        return denied

    def stats(self) -> RiskStats:
        return RiskStats(
            state=self._effective.value,
            latched=self._latched.value,
            alarms=dict(self._alarms),
            accepted=self._accepted,
            denied=sum(self._denied.values()),
            denied_by_reason=dict(self._denied),
            stopped_strategies=sorted(self._disabled),
            state_changes=self._state_changes,
        )


__all__ = ["ExposureView", "RiskGate", "RiskStats", "ceil_to", "floor_to"]
