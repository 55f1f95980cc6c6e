"""Trading, assembled: state database, ledger, risk gate, execution (paper or live), strategies, engine.

    open_state(stack, settings)                                   # in run_bot, first: fails fast
    start_trading(stack, settings, bus, clock, books, workers, state=..., live=False, sim_roots=...)
      StateStore.open() ─► PersistedState (fills, open orders, latched trading state, next order id)
      Ledger ◄─ persisted fills           RiskGate(state=persisted)
      paper: PaperExecution(books)        live: bot.live_session.open_live ─► LiveExecution (ccxt)
      Engine(strategies, gate, execution, ledger).restore(...) ─► attach(bus)
      live: reconcile with the venue (open orders, fills), then its positions checked (HALTED if off)
    tasks (run_tasks, inside the app's TaskGroup):
      the state writer; a timer driving engine.on_time(now) (latency, exits, snapshots); the operator's
      halt/reduce/resume from the state database every 0.5 s; live: requests, private streams, resync.

This is the async edge of the order path: everything it wires is synchronous. A failed write to the state
database halts trading (``RiskGate.halt("state_db_write_failed")``) instead of trading without a ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ccxt.async_support as ccxt
import structlog

from bot.bus import EventBus
from bot.clock import Clock
from bot.config import BotSettings
from bot.engine import Engine
from bot.errors import ConfigError
from bot.events import BookHealth, BookState, Venue
from bot.execution.base import Execution
from bot.execution.paper import BookView, PaperExecution
from bot.ledger import Ledger
from bot.live_session import LiveSession, check_mode, open_live, order_prefix
from bot.orders import Fill, TradingState
from bot.risk import RiskGate
from bot.state import StateStore
from bot.state_rows import PersistedState
from strategies import MODEL_FAMILIES, build_strategies
from strategies.config import StrategyConfig

if TYPE_CHECKING:
    from bot.worker_set import WorkerSet

log = structlog.get_logger(__name__)

NS_PER_MS = 1_000_000
TIMER_S = 0.02  # the paper latency is in the event clock; this is how finely live time reaches it
CONTROL_POLL_S = 0.5


class BookHealthView:
    """Which books are LIVE, from ``BookHealth`` events (a book never reported is not LIVE)."""

    def __init__(self) -> None:
        self._state: dict[tuple[Venue, str], BookState] = {}

    def on_health(self, ev: BookHealth) -> None:
        self._state[(ev.venue, ev.symbol)] = ev.state

    def live(self, venue: Venue, symbol: str) -> bool:
        return self._state.get((venue, symbol)) is BookState.LIVE


@dataclass
class Trading:
    engine: Engine
    ledger: Ledger
    gate: RiskGate
    execution: Execution
    store: StateStore
    health: BookHealthView
    clock: Clock
    stop_wait_s: float = 1.0  # how long a stop waits for the cancels to be confirmed
    live: LiveSession | None = None

    @property
    def mode(self) -> str:
        return "paper" if self.live is None else "live"

    async def run_tasks(self, tg: asyncio.TaskGroup) -> list[asyncio.Task[None]]:
        """Start the writer, the timer and the control poll (live: and live execution) in ``tg``; returns
        them (cancel to stop)."""
        tasks = [
            tg.create_task(self.store.run()),
            tg.create_task(self._timer()),
            tg.create_task(self._control()),
        ]
        if self.live is not None:
            tasks.append(tg.create_task(self.live.execution.run()))
        return tasks

    async def _timer(self) -> None:
        while True:
            await asyncio.sleep(TIMER_S)
            self.engine.on_time(self.clock.now_ns())

    async def _control(self) -> None:
        while True:
            await asyncio.sleep(CONTROL_POLL_S)
            for action in await self.store.poll_control():
                self.apply(action.action)

    def apply(self, action: str) -> None:
        now = self.clock.now_ns()
        if action == "halt":
            self.engine.halt("operator", now)
        elif action == "reduce":
            self.engine.halt("operator", now, reduce=True)
        elif action == "resume":
            self.engine.resume(now)
        else:
            log.warning("control_action_unknown", action=action)

    def status(self) -> dict[str, Any]:
        positions = [
            {"venue": p.venue.value, "symbol": p.symbol, "qty": str(p.qty), "avg_price": str(p.avg_price),
             "mark": None if p.mark is None else str(p.mark), "unrealized_pnl": str(p.unrealized_pnl),
             "realized_pnl": str(p.realized_pnl)}
            for p in self.ledger.positions()
        ]
        accounts = {}
        for venue in self.engine.accounts:
            snap = self.ledger.snapshot(venue, self.clock.now_ns())
            accounts[venue.value] = {"cash": str(snap.cash), "equity": str(snap.equity), "fees": str(snap.fees)}
        out = {
            "mode": self.mode,
            **self.engine.summary(),
            "equity": str(self.ledger.equity()),
            "accounts": accounts,
            "positions": positions,
            "risk": dict(self.gate.stats()),
            "state_db": self.store.stats(),
        }
        if self.live is not None:
            out["live"] = self.live.execution.summary()
        return out

    async def stop(self, cancel_open: bool = True) -> None:
        """Cancel open orders and wait until they are closed (paper: the cancel latency, the timer still
        runs; live: the venue's answers), at most ``stop_wait_s``; then a last snapshot."""
        open_now = self.engine.cancel_all(self.clock.now_ns(), reason="stop") if cancel_open else 0
        if open_now:
            wait_s = self.stop_wait_s
            if self.live is not None:  # the cancels go out at the venue's order rate
                wait_s += open_now / self.live.execution.orders_per_s
            for _ in range(int(wait_s / TIMER_S) + 1):  # the timer task moves paper orders on
                if not self.engine.open_orders():
                    break
                await asyncio.sleep(TIMER_S)
            left = self.engine.open_orders()
            if left:
                log.error("orders_left_open_at_stop", count=len(left),
                          orders=[o.client_order_id for o in left][:20])  # fmt: skip
        now = self.clock.now_ns()
        self.engine.on_time(now)
        self.engine.snapshot(now)


def strategy_problems(
    configs: Sequence[StrategyConfig], workers: WorkerSet, *, models_enabled: bool = True, sim: bool = False
) -> list[str]:
    """What stops an enabled strategy from ever getting a signal it can use: its model not loaded (no
    such checkpoint, a damaged one, models disabled), of a family its kind does not read, not predicting
    the strategy's venue and symbols, or with fewer horizons than ``horizon_index`` asks for."""
    by_name = {w.name: w for w in workers.workers}
    problems = []
    for c in configs:
        if not c.enabled:
            continue
        who = f"strategy {c.name!r} (kind {c.kind}, model {c.model!r})"
        w = by_name.get(c.model)
        if w is None:
            failed = next((why for f, why in workers.failed.items() if Path(f).stem == c.model), None)
            if not models_enabled:
                problems.append(f"{who}: models are disabled ([models] enabled = false)")
            elif failed is not None:
                problems.append(f"{who}: its checkpoint did not load: {failed}")
            else:
                where = workers.directory if workers.directory is not None else "the models directory"
                have = sorted(by_name) or ["none"]
                problems.append(f"{who}: no such checkpoint in {where} (loaded: {', '.join(have)})")
            continue
        families = MODEL_FAMILIES.get(c.kind, ())
        if w.family not in families:
            problems.append(f"{who}: a {c.kind} strategy reads {'/'.join(families)} models, not {w.family}")
            continue
        served = {(t.venue, sym) for t in w.targets for sym in t.symbols}
        missing = [sym for sym in c.symbols if (c.venue, sym) not in served]
        if missing:
            serves = sorted(f"{v.value}/{sym}" for v, sym in served) or ["nothing"]
            hint = " (models.serve_on adds venues for a family"
            hint += "; under --sim only what the recording holds is configured)" if sim else ")"
            problems.append(f"{who}: the model does not predict {c.venue.value} {missing}; it serves "
                            f"{', '.join(serves)}{hint}")
        index = getattr(c, "horizon_index", None)
        horizons = [h for h in w.head.horizon.split(",") if h]
        if index is not None and index >= len(horizons):
            problems.append(f"{who}: horizon_index = {index}, but the model has {len(horizons)} horizon(s) "
                            f"({', '.join(horizons)}; the index counts from 0)")
    return problems


def paper_execution(
    settings: BotSettings, bus: EventBus, books: Callable[[Venue, str], BookView | None], health: BookHealthView
) -> tuple[PaperExecution, Ledger, list[Venue]]:
    """The paper matcher on ``books`` and a ledger holding ``[paper]``'s balances for every enabled venue."""
    enabled = settings.enabled_venues()
    accounts = [v for v in settings.paper.venues if v in enabled]
    ledger = Ledger({v: settings.paper.venues[v].balances for v in accounts})
    return PaperExecution(settings.paper, books, bus.publish, live=health.live), ledger, accounts


def order_path(
    settings: BotSettings,
    bus: EventBus,
    execution: Execution,
    ledger: Ledger,
    accounts: Sequence[Venue],
    *,
    persisted: PersistedState | None = None,
    order_prefix: str = "b",
    snapshot_every_s: float | None = None,
) -> tuple[RiskGate, Engine]:
    """The risk gate, the strategies and the engine over ``execution`` and ``ledger`` (not attached yet):
    what ``run`` and ``replay`` share. ``persisted``: the state database's word (latched state, equity
    marks, next order id); None for a fresh start (a replay)."""
    state = persisted.trading_state if persisted is not None else TradingState.ACTIVE
    gate = RiskGate(settings.risk, ledger, bus.publish, state=state)
    if persisted is not None:
        gate.restore_equity(persisted.peak_equity, persisted.day_start_equity, persisted.day_start_ns)
    every_s = snapshot_every_s if snapshot_every_s is not None else settings.state.snapshot_every_s
    engine = Engine(
        build_strategies(settings.strategies), gate, execution, ledger, accounts=accounts,
        snapshot_every_ns=int(every_s * 1e9), next_seq=persisted.next_order_seq if persisted else 1,
        order_prefix=order_prefix,
    )
    return gate, engine


def _no_engine_yet(exc: Exception) -> None:
    log.error("state_db_write_failed", error=str(exc) or type(exc).__name__, action="nothing to halt yet")


async def open_state(stack: contextlib.AsyncExitStack, settings: BotSettings) -> tuple[StateStore, PersistedState]:
    """Open (and lock) the state database: first thing at start-up, so that a bad path or a database in
    use fails before the venues and the models are loaded. Closed with ``stack``."""
    store = StateStore(settings.state, on_failure=_no_engine_yet)
    persisted = await store.open()
    stack.push_async_callback(store.close)
    return store, persisted


async def start_trading(
    stack: contextlib.AsyncExitStack,
    settings: BotSettings,
    bus: EventBus,
    clock: Clock,
    books: Callable[[Venue, str], BookView | None],
    workers: WorkerSet | None = None,
    *,
    sim: bool = False,
    state: tuple[StateStore, PersistedState] | None = None,
    live: bool = False,
    sim_roots: dict[Venue, str] | None = None,
) -> Trading:
    """Rebuild what the state database holds (``state`` from ``open_state``, else opened here) and wire
    the order path onto ``bus``: paper, or ``live`` through ccxt (``sim_roots``: the loopback exchange's
    http root per venue, under ``--sim``).

    ``workers``: the loaded models; ConfigError (every problem in one message) when an enabled strategy
    could never get a usable signal from them (``strategy_problems``).
    """
    if workers is not None:
        problems = strategy_problems(settings.strategies, workers, models_enabled=settings.models.enabled, sim=sim)
        if problems:
            raise ConfigError("; ".join(problems))
    engine_ref: list[Engine] = []

    def on_store_failure(exc: Exception) -> None:
        log.error("state_db_write_failed", error=str(exc) or type(exc).__name__, action="trading halted")
        if engine_ref:
            engine_ref[0].halt("state_db_write_failed", clock.now_ns())

    store, persisted = state if state is not None else await open_state(stack, settings)
    store.on_failure = on_store_failure
    await check_mode(store, ("live-sim" if sim else "live") if live else "paper")
    health = BookHealthView()
    bus.subscribe(BookHealth, health.on_health)
    session: LiveSession | None = None
    execution: Execution
    if live:
        session = await open_live(stack, settings, store, bus, clock, sim_roots=sim_roots)
        accounts = list(session.exchanges)
        ledger = Ledger({v: {"USDT": session.start_cash[v]} for v in accounts})
        execution = session.execution
        stop_wait_s = settings.live.request_timeout_s
    else:
        execution, ledger, accounts = paper_execution(settings, bus, books, health)
        cancel_ms = max((settings.paper.venues[v].cancel_latency_ms for v in accounts), default=0.0)
        stop_wait_s = cancel_ms / 1e3 + 3 * TIMER_S + 1.0
    gate, engine = order_path(settings, bus, execution, ledger, accounts, persisted=persisted,
                              order_prefix=await order_prefix(store) if live else "b")
    engine_ref.append(engine)
    now = clock.now_ns()
    engine.restore(persisted.fills, persisted.orders, now)
    for snap in persisted.equity.values():  # the last marks, until the books say otherwise
        for p in snap.positions:
            if p.mark is not None and p.qty != 0:
                ledger.on_mark(p.venue, p.symbol, p.mark)
    store.attach(bus)
    engine.attach(bus)
    if session is not None:
        await _reconcile(session, engine, persisted, bus, clock)
    log.info(
        "live_trading_ready" if live else "paper_trading_ready", strategies=[s.name for s in engine.strategies],
        accounts=[v.value for v in accounts], restored_fills=len(persisted.fills),
        restored_open_orders=len(persisted.orders), trading_state=gate.state.value, state_db=str(settings.state.db),
    )
    return Trading(engine=engine, ledger=ledger, gate=gate, execution=execution, store=store, health=health,
                   clock=clock, stop_wait_s=stop_wait_s, live=session)


async def _reconcile(session: LiveSession, engine: Engine, persisted: PersistedState, bus: EventBus,
                     clock: Clock) -> None:  # fmt: skip
    """Before the first intent: the venue's word on the orders and fills we persisted (published on the
    bus, so the ledger and the database take them), then its positions against all our fills. A position
    off is not traded on: HALTED (latched) until the operator has looked (``python -m bot resume``)."""
    fills: list[Fill] = list(persisted.fills)
    bus.subscribe(Fill, fills.append)
    try:
        await session.execution.reconcile(persisted.orders, persisted.fills, engine.order_prefix)
        problems = await session.check_positions(fills)
    except ccxt.BaseError as e:
        raise ConfigError(f"live reconciliation failed talking to the venue: {type(e).__name__}") from None
    finally:
        bus.unsubscribe(Fill, fills.append)
    if problems:
        log.error("live_positions_differ", problems=problems)
        engine.halt("reconcile_mismatch", clock.now_ns())
    log.info("live_reconciled", orders=len(persisted.orders), fills=len(fills), positions_ok=not problems)
