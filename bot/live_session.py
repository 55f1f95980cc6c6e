"""Live trading's set-up around ``bot.execution.live``: keys, exchanges, starting balances, the position check.

    open_live(stack, settings, store, bus, sim_roots)  -> LiveSession (exchanges built and loaded, closed
                                                          with ``stack``; the starting view of the account)
    LiveSession.check_positions(fills)                  after the reconciliation: the venue's positions
                                                          against the bot's own fills (mismatches, in words)

The first live start on a state database records the account as it was (USDT, and per traded symbol
the position or spot base balance) in ``meta``; a restart reads that back, so the ledger is that start
plus the bot's own fills, and the venue must hold exactly that start plus those fills. A state database
used for paper trading is refused for live (and the reverse): one database, one kind of money.
"""

from __future__ import annotations

import contextlib
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt
import structlog

from bot.bus import EventBus
from bot.clock import Clock
from bot.config import BotSettings
from bot.errors import ConfigError
from bot.events import Side, Venue
from bot.execution.live import LiveExecution
from bot.execution.venues import build_exchange, credentials, missing_credentials
from bot.orders import ZERO, Fill
from bot.state import StateStore
from bot.state_lock import live_db

log = structlog.get_logger(__name__)

QUOTE = "USDT"


def live_settings(settings: BotSettings, sim: bool) -> BotSettings:
    """Live trading keeps its own state database (``bot.state_lock.live_db``: ``live.sqlite`` beside paper's
    default ``state.sqlite``), and the signal log follows when it shared the file.
    Under ``--sim`` it is ``live-sim.sqlite``, started afresh each run: the sim's account lives only as
    long as the sim, so the last run's database is kept as ``live-sim.prev.sqlite`` and not reconciled.
    (A database named in the config is used as it is.)"""
    db = settings.state.db
    target = live_db(db, sim)
    if sim and target.name == "live-sim.sqlite" and target.exists():
        prev = target.with_name(target.stem + ".prev.sqlite")
        for suffix in ("", "-wal", "-shm"):
            old = Path(str(target) + suffix)
            if old.exists():
                old.replace(Path(str(prev) + suffix))
        log.info("live_sim_state_set_aside", db=str(target), kept_as=str(prev))
    update: dict[str, Any] = {"state": settings.state.model_copy(update={"db": target})}
    if settings.signal_log.db == db:
        update["signal_log"] = settings.signal_log.model_copy(update={"db": target})
    return settings.model_copy(update=update)


async def order_prefix(store: StateStore) -> str:
    """Live client order ids start with this database's own random letters (kept in ``meta``): a new or
    deleted database never reuses an id the account already has (Bybit refuses a reused orderLinkId, and
    on Binance a lookup by a reused id would find the old order)."""
    have = (await store.meta("order_prefix")).get("order_prefix")
    if have is None:
        have = "b" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(6))
        await store.set_meta({"order_prefix": have})
    return have


async def check_mode(store: StateStore, mode: str) -> None:
    """One database, one kind of money: refuse a paper database for live and the reverse."""
    have = (await store.meta("mode")).get("mode")
    if have is None:
        await store.set_meta({"mode": mode})
    elif have != mode:
        raise ConfigError(f"state database {store.path} holds a {have} session; give {mode} trading its own "
                          f"([state] db, or BOT_STATE__DB=out/{mode}.sqlite)")  # fmt: skip


def _base(symbol: str) -> str:
    return symbol[: -len(QUOTE)] if symbol.endswith(QUOTE) else symbol


@dataclass
class LiveSession:
    execution: LiveExecution
    exchanges: dict[Venue, Any]
    symbols: dict[Venue, tuple[str, ...]]
    start_cash: dict[Venue, Decimal] = field(default_factory=dict)
    start_position: dict[tuple[Venue, str], Decimal] = field(default_factory=dict)

    async def venue_positions(self) -> dict[tuple[Venue, str], Decimal]:
        """Per traded symbol: the perpetual's signed position, or the spot base asset's total balance."""
        out: dict[tuple[Venue, str], Decimal] = {}
        for venue, ex in self.exchanges.items():
            if venue.market == "spot":
                total = (await ex.fetch_balance()).get("total") or {}
                for sym in self.symbols[venue]:
                    out[(venue, sym)] = Decimal(str(total.get(_base(sym)) or 0))
                continue
            ccxt_syms = [self.execution.ccxt_symbol(venue, s) for s in self.symbols[venue]]
            held = {p.get("symbol"): p for p in await ex.fetch_positions(None)}  # Bybit: one symbol or all
            for sym, cs in zip(self.symbols[venue], ccxt_syms, strict=True):
                p = held.get(cs) or {}
                qty = Decimal(str(p.get("contracts") or 0)) * Decimal(str(p.get("contractSize") or 1))
                out[(venue, sym)] = -qty if p.get("side") == "short" else qty
        return out

    def expected(self, fills: Sequence[Fill]) -> dict[tuple[Venue, str], Decimal]:
        """The start plus the bot's fills (a spot fee taken in the base asset comes off the balance)."""
        out = dict(self.start_position)
        for f in fills:
            key = (f.venue, f.symbol)
            if key not in out:
                continue
            out[key] += f.qty if f.side is Side.BUY else -f.qty
            if f.venue.market == "spot" and f.fee_asset == _base(f.symbol):
                out[key] -= f.fee
        return out

    async def check_positions(self, fills: Sequence[Fill]) -> list[str]:
        have = await self.venue_positions()
        want = self.expected(fills)
        return [f"{v.value} {sym}: the venue holds {have.get((v, sym), ZERO)}, the bot's fills make it {q}"
                for (v, sym), q in sorted(want.items()) if have.get((v, sym), ZERO) != q]  # fmt: skip


async def open_live(
    stack: contextlib.AsyncExitStack,
    settings: BotSettings,
    store: StateStore,
    bus: EventBus,
    clock: Clock,
    *,
    sim_roots: dict[Venue, str] | None = None,
) -> LiveSession:
    """Keys (``BOT_*_API_KEY``/``SECRET``; under ``--sim`` the loopback exchange's), one ccxt.pro object per
    venue a strategy trades on, markets loaded, and the account's starting view."""
    traded: dict[Venue, set[str]] = {}
    for c in settings.strategies:
        if c.enabled:
            traded.setdefault(c.venue, set()).update(c.symbols)
    if not traded:
        raise ConfigError("live trading needs at least one enabled [[strategies]] table: nothing would trade")
    venues = sorted(traded, key=lambda v: v.value)
    cfg = settings.live
    roots = {v: cfg.venues[v].url for v in venues if cfg.venues[v].url} if sim_roots is None else sim_roots
    if sim_roots is None:
        problem = missing_credentials(venues)
        if problem:
            raise ConfigError(problem)
    exchanges: dict[Venue, Any] = {}

    async def close_all() -> None:
        for ex in exchanges.values():
            with contextlib.suppress(Exception):
                await ex.close()

    stack.push_async_callback(close_all)
    for v in venues:
        if sim_roots is not None:
            key, secret = settings.sim.api_key.get_secret_value(), settings.sim.api_secret.get_secret_value()
        else:
            found = credentials(v)
            assert found is not None
            key, secret = found
        exchanges[v] = build_exchange(v, key, secret, cfg, root=roots.get(v))
    symbols = {v: tuple(sorted(traded[v])) for v in venues}
    live = LiveExecution(exchanges, bus.publish, max_orders_per_s=cfg.max_orders_per_s, clock_ns=clock.now_ns,
                         resync_every_s=cfg.resync_every_s, time_sync_every_s=cfg.time_sync_every_s)  # fmt: skip
    try:
        await live.prepare(symbols)
        session = LiveSession(live, exchanges, symbols)
        await _starting_view(session, store)
    except ccxt.AuthenticationError as e:
        raise ConfigError(f"the venue refused the API key ({type(e).__name__}): check the BOT_*_API_KEY/SECRET "
                          "pair and the [live.venues] endpoint it belongs to") from None  # fmt: skip
    except ccxt.BaseError as e:
        raise ConfigError(f"live set-up failed talking to the venue: {type(e).__name__}") from None
    endpoints = {v.value: roots.get(v) or cfg.venues[v].endpoint for v in venues}
    log.info("live_ready", venues=endpoints, symbols={v.value: list(s) for v, s in symbols.items()},
             time_offset_ms={v.value: ms for v, ms in live.time_offset_ms.items()})  # fmt: skip
    return session


async def _starting_view(session: LiveSession, store: StateStore) -> None:
    """The account at the first live start on this database (then stored), or as stored."""
    stored = await store.meta("live_start:")
    if not stored:
        now = await session.venue_positions()
        rows = {}
        bybit_counted = False
        for venue, ex in session.exchanges.items():
            total = (await ex.fetch_balance()).get("total") or {}
            cash = Decimal(str(total.get(QUOTE) or 0))
            if venue.value.startswith("bybit"):  # one unified wallet behind both markets: counted once
                cash, bybit_counted = (ZERO, True) if bybit_counted else (cash, True)
            rows[f"live_start:{venue.value}:cash"] = str(cash)
        for (venue, sym), qty in now.items():
            rows[f"live_start:{venue.value}:{sym}"] = str(qty)
        await store.set_meta(rows)
        stored = rows
        log.info("live_start_recorded", **{k.removeprefix("live_start:"): v for k, v in rows.items()})
    for key, value in stored.items():
        _, venue_s, what = key.split(":", 2)
        venue = Venue(venue_s)
        if what == "cash":
            session.start_cash[venue] = Decimal(value)
        else:
            session.start_position[(venue, what)] = Decimal(value)
    for venue in session.exchanges:
        for sym in session.symbols[venue]:  # a symbol traded for the first time since: it starts now
            if (venue, sym) not in session.start_position:
                raise ConfigError(f"{venue.value} {sym} was not traded when this live database started; "
                                  "give a new set of symbols its own [state] db")  # fmt: skip
