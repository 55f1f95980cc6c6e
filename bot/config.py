"""Configuration: ``config.toml``, then ``BOT_...`` environment variables (``BOT_BOOK__STALE_AFTER_S=5``).

Every model is frozen and rejects unknown keys, so a typo fails at start-up with a message naming it.
Real venue endpoints are the defaults; ``--sim`` replaces them with the loopback exchange's.
Secrets (API keys) are read only from the environment, as ``SecretStr``, and are never logged.
Each venue's ``depth`` and ``snapshot_limit`` are checked against what that venue serves.

Relative paths (every ``Path`` field: ``signal_log.db``, ``state.db``, ``sim.data``, ...) follow one rule,
so that ``python -m bot --config /x/config.toml ...`` reads and writes the same files from any folder:

* written in the config file, or left at their default while a config file is in use: from the config
  file's folder (``~`` is expanded);
* with no config file, and in ``BOT_*`` variables or ``load_settings(**overrides)``: from the working
  directory, like any path typed in a shell.

``load_settings`` hands out absolute paths. The one exception is ``models.dir`` left at its default,
which is used as it is (it names the package's shipped checkpoints).
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.errors import ConfigError
from bot.events import Venue
from strategies.config import StrategyConfig, duplicate_names

DEFAULT_CONFIG = Path("config.toml")
INTERVALS_S = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "4h": 14400, "1d": 86400}


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VenueConfig(Section):
    enabled: bool = True
    ws_url: str
    rest_url: str
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    # Binance: depth stream suffix ("depth@100ms"); Bybit: orderbook depth ("200"). Per venue: DEPTHS.
    depth: str = "200"
    snapshot_limit: int = Field(default=1000, ge=5, le=5000)  # Binance REST depth; per venue: SNAPSHOT_LIMITS
    trades: bool = True
    klines: tuple[str, ...] = ("1m",)
    # Binance USD-M routes streams by family since 2026; the path for each family is configurable.
    ws_path: str = ""
    ws_kline_path: str = ""
    # Perpetuals (bybit_linear, binance_usdm): subscribe to the funding rate (Bybit tickers, Binance
    # markPrice@1s) and publish FundingRate for the paper ledger. Spot has no funding: ignored there.
    funding: bool = True

    @field_validator("depth", mode="before")
    @classmethod
    def _depth_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v  # depth = 200 (unquoted) too

    @field_validator("symbols")
    @classmethod
    def _upper(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if not s.isalnum()]
        if bad:
            raise ValueError(f"symbols must be like BTCUSDT (no separators): {bad}")
        return tuple(s.upper() for s in v)

    @field_validator("klines")
    @classmethod
    def _intervals(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [i for i in v if i not in INTERVALS_S]
        if bad:
            raise ValueError(f"unknown kline interval(s) {bad}; use one of {sorted(INTERVALS_S)}")
        return v


def _binance_partial(levels: tuple[int, ...], speeds: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"depth{n}{sp}" for n in levels for sp in speeds)


# What each venue serves (shared/PROTOCOLS.md 1.4, 2.2-2.5, 3.2-3.5): Bybit's orderbook.{depth}.{symbol}
# depths per category (linear 500 as in Bybit's archive); Binance's diff streams (<symbol>@depth..., USD-M
# also the undocumented @depth@0ms of real recordings) and partial ones (@depth5/10/20[@speed]).
DEPTHS: dict[Venue, tuple[str, ...]] = {
    Venue.BYBIT_SPOT: ("1", "50", "200", "1000"),
    Venue.BYBIT_LINEAR: ("1", "50", "200", "500", "1000"),
    Venue.BINANCE_SPOT: ("depth", "depth@100ms", "depth@1000ms", *_binance_partial((5, 10, 20), ("", "@100ms"))),
    Venue.BINANCE_USDM: (
        "depth", "depth@0ms", "depth@100ms", "depth@500ms",  # "depth" is the 250 ms one (no @250ms name)
        *_binance_partial((5, 10, 20), ("", "@100ms", "@500ms")),
    ),
}  # fmt: skip
# REST depth-snapshot limits: Binance spot takes any limit up to 5000, USD-M only these; Bybit books are
# snapshotted on the stream, so ``snapshot_limit`` means nothing there and setting it is refused.
SNAPSHOT_LIMITS: dict[Venue, range | tuple[int, ...]] = {
    Venue.BINANCE_SPOT: range(5, 5001),
    Venue.BINANCE_USDM: (5, 10, 20, 50, 100, 500, 1000),
}


def venue_config_problems(venue: Venue, cfg: VenueConfig) -> list[str]:
    """What ``venue`` would not serve as configured in ``cfg`` (its depth, its snapshot limit), in words."""
    problems = []
    depths = DEPTHS[venue]
    name = venue.value
    if cfg.depth not in depths:
        problems.append(f"{name}.depth {cfg.depth!r} is not a depth {name} serves (use one of {', '.join(depths)})")
    limits = SNAPSHOT_LIMITS.get(venue)
    if limits is not None and cfg.snapshot_limit not in limits:
        allowed = ", ".join(map(str, limits)) if isinstance(limits, tuple) else f"{limits[0]} to {limits[-1]}"
        problems.append(f"{name}.snapshot_limit {cfg.snapshot_limit} is not a limit {name} serves (use {allowed})")
    return problems


def _default_venues() -> dict[Venue, VenueConfig]:
    return {
        Venue.BYBIT_SPOT: VenueConfig(
            ws_url="wss://stream.bybit.com/v5/public/spot", rest_url="https://api.bybit.com", depth="200"
        ),
        Venue.BYBIT_LINEAR: VenueConfig(
            ws_url="wss://stream.bybit.com/v5/public/linear", rest_url="https://api.bybit.com", depth="200"
        ),
        Venue.BINANCE_SPOT: VenueConfig(
            ws_url="wss://stream.binance.com:9443",
            rest_url="https://api.binance.com",
            depth="depth@100ms",
            ws_path="/stream",
            ws_kline_path="/stream",
        ),
        Venue.BINANCE_USDM: VenueConfig(
            ws_url="wss://fstream.binance.com",
            rest_url="https://fapi.binance.com",
            depth="depth@100ms",
            ws_path="/stream",  # depth, bookTicker, trade: the /public tier, still served unrouted
            ws_kline_path="/market/stream",  # klines: the /market tier, no longer served unrouted
        ),
    }


class BookConfig(Section):
    stale_after_s: float = Field(default=10.0, gt=0)
    resync_backoff_initial_s: float = Field(default=0.5, gt=0)
    resync_backoff_max_s: float = Field(default=30.0, gt=0)
    max_levels: int = Field(default=5000, ge=10)


class ReconnectConfig(Section):
    initial_s: float = Field(default=0.5, gt=0)
    max_s: float = Field(default=30.0, gt=0)
    jitter: float = Field(default=0.25, ge=0, le=1)
    watchdog_s: float = Field(default=30.0, gt=0)  # no frame for this long on an open socket: reconnect
    max_connection_age_s: float = Field(default=23.5 * 3600, gt=0)  # Binance cuts at 24 h
    bybit_ping_s: float = Field(default=20.0, gt=0)
    rest_timeout_s: float = Field(default=10.0, gt=0)


class RingConfig(Section):
    lob_interval_ms: int = Field(default=5000, ge=10)  # multi-venue forecaster grid
    lob_levels: int = Field(default=5, ge=1, le=100)
    lob_capacity: int = Field(default=720, ge=2)  # 1 h of 5 s steps
    fine_interval_ms: int = Field(default=1000, ge=10)  # TABL grid
    fine_levels: int = Field(default=10, ge=1, le=100)
    fine_capacity: int = Field(default=600, ge=2)
    kline_capacity: int = Field(default=1000, ge=2)


class KlineConfig(Section):
    resolutions: tuple[str, ...] = ("1m", "5m", "15m", "1h")
    backfill: int = Field(default=500, ge=0, le=1000)

    @field_validator("resolutions")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [i for i in v if i not in INTERVALS_S]
        if bad:
            raise ValueError(f"unknown resolution(s) {bad}; use one of {sorted(INTERVALS_S)}")
        return v


class SimConfig(Section):
    host: str = "127.0.0.1"
    speed: float = Field(default=1.0, gt=0)
    data: Path | None = None  # native recording dir; None: embedded demo
    seed: int = 0
    faults: str = ""  # e.g. "drop=0.01,dup=0.01" (see bot.sim.faults)
    loop: bool = True
    # > 0: playback starts at a wall time congruent to the recording's first receive time modulo align_ms
    # (bot.sim.loop.VenueRunner._start). With [ring] fine_interval_ms (1000) at speed 1 a run's grid then
    # cuts the recording where a replay's does (tests/integration/test_replay_parity.py). 0: at once.
    align_ms: int = Field(default=0, ge=0)
    # the private side's one account (bot.sim.account); the command line / BOT_SIM_API_* override these
    api_key: SecretStr = SecretStr("sim-key")
    api_secret: SecretStr = SecretStr("sim-secret")
    balances: dict[Venue, dict[str, Decimal]] = Field(
        default_factory=lambda: {v: {"USDT": Decimal(10_000)} for v in Venue}
    )

    @field_validator("balances")
    @classmethod
    def _not_negative(cls, v: dict[Venue, dict[str, Decimal]]) -> dict[Venue, dict[str, Decimal]]:
        bad = sorted(f"{venue.value}.{a}" for venue, b in v.items() for a, q in b.items() if q < 0)
        if bad:
            raise ValueError(f"starting balances must be >= 0: {bad}")
        return v


class ModelsConfig(Section):
    """Model workers (``bot.workers``, loaded by ``bot.worker_set``): one per checkpoint file in ``dir``."""

    enabled: bool = True
    dir: Path = Path("models/checkpoints")
    device: str = "auto"  # "auto": CUDA when available, else CPU; or "cpu", "cuda", "cuda:1"
    torch_threads: int = Field(default=1, ge=1, le=64)  # intra-op threads: inference must not starve the loop
    max_input_age_s: float = Field(default=10.0, gt=0)  # older inputs: the signal is not published (counted)
    # "trained": each model predicts the instrument(s) it was trained on; "all": per-instrument models
    # (tabl, multiscale) also predict every configured symbol, batched in one forward pass
    serve: Literal["trained", "all"] = "trained"
    # Model family ("tabl" also covers mhtabl) or checkpoint file stem -> venues where it also predicts its
    # trained symbol(s) (not lobforecast: its venues are its input). Default: the cross-asset model (trained
    # on Binance spot, evaluated on Bybit linear 2025 too, models/checkpoints/README.md) also serves Bybit
    # linear, the one venue of config.toml and the embedded demo that trades all of BTC, ETH and SOL.
    serve_on: dict[str, tuple[Venue, ...]] = {"crossasset": (Venue.BYBIT_LINEAR,)}


class SignalLogConfig(Section):
    """Every published Signal goes to SQLite and JSONL (``bot.signal_log``)."""

    enabled: bool = True
    db: Path = Path("out/state.sqlite")  # the state database (StateConfig.db): one file, its own table
    jsonl_dir: Path = Path("out/signals")
    rotate_mb: float = Field(default=64.0, gt=0)  # a JSONL file is also rotated daily (UTC)
    queue_size: int = Field(default=10_000, ge=1)  # full: the oldest waiting signal is dropped, counted, warned


def merge_per_venue(
    v: Any, defaults: Mapping[Venue, Section], table: str, check: Callable[[str, set[str]], None] | None = None
) -> Any:
    """Tables keyed by venue (``[venues.X]``, ``[paper.venues.X]``): each given table overrides only the keys
    it names over that venue's defaults; unknown venues and non-tables are refused. ``check(venue, keys)``
    may refuse keys a venue does not use."""
    if not isinstance(v, dict):
        return v
    merged: dict[str, Any] = {k.value: d.model_dump() for k, d in defaults.items()}
    for name, section in v.items():
        key = str(name.value if isinstance(name, Venue) else name)
        if key not in merged:
            raise ValueError(f"unknown venue {key!r}; known: {sorted(merged)}")
        if isinstance(section, BaseModel):
            given = set(section.model_fields_set)
            section = section.model_dump()
        elif isinstance(section, dict):
            given = set(section)
        else:
            raise ValueError(f"[{table}.{key}] must be a table")
        if check is not None:
            check(key, given)
        merged[key] = {**merged[key], **section}
    return merged


def _bybit_has_no_snapshot_limit(venue: str, keys: set[str]) -> None:
    if venue.startswith("bybit") and "snapshot_limit" in keys:
        raise ValueError(
            f"{venue}.snapshot_limit is not used: Bybit sends the book's snapshot on the stream (its size is "
            "depth); remove it"
        )


class PaperVenueConfig(Section):
    """One venue account of the paper matcher (``bot.execution.paper``)."""

    latency_ms: float = Field(default=50.0, ge=0)  # decision -> arrival at the book (event clock)
    cancel_latency_ms: float = Field(default=50.0, ge=0)
    maker_fee: Decimal = Field(default=Decimal("0.001"), ge=-0.001, le=0.01)  # fraction of notional
    taker_fee: Decimal = Field(default=Decimal("0.001"), ge=0, le=0.01)
    balances: dict[str, Decimal] = Field(default_factory=lambda: {"USDT": Decimal(10_000)})

    @field_validator("balances")
    @classmethod
    def _usdt_and_not_negative(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        # the paper ledger (bot.ledger) keeps USDT accounts: other assets are positions, built by fills
        other = sorted(a for a in v if a != "USDT")
        if other:
            raise ValueError(f"only a USDT starting balance is supported (the ledger holds USDT), not {other}")
        bad = {a: str(x) for a, x in v.items() if not (x.is_finite() and x >= 0)}
        if bad:
            raise ValueError(f"starting balances must be finite and >= 0: {bad}")
        return v


def _default_paper_venues() -> dict[Venue, PaperVenueConfig]:
    # The venues' base-tier fees (2026): Binance spot 0.1 %/0.1 %, USD-M 0.02 %/0.05 %; Bybit spot
    # 0.1 %/0.1 %, linear 0.02 %/0.055 %.
    fees = {
        Venue.BINANCE_SPOT: ("0.001", "0.001"),
        Venue.BINANCE_USDM: ("0.0002", "0.0005"),
        Venue.BYBIT_SPOT: ("0.001", "0.001"),
        Venue.BYBIT_LINEAR: ("0.0002", "0.00055"),
    }
    return {v: PaperVenueConfig(maker_fee=Decimal(m), taker_fee=Decimal(t)) for v, (m, t) in fees.items()}


class PaperConfig(Section):
    """Paper execution: per venue account latency, fees and starting balances."""

    venues: dict[Venue, PaperVenueConfig] = Field(default_factory=_default_paper_venues)

    @field_validator("venues", mode="before")
    @classmethod
    def _merge(cls, v: Any) -> Any:
        """A partial ``[paper.venues.X]`` table overrides only the keys it names; unknown venues are refused."""
        return merge_per_venue(v, _default_paper_venues(), "paper.venues")


class LiveVenueConfig(Section):
    # where orders go: the venue's testnet (Binance spot testnet / Bybit testnet), its demo-trading
    # environment, or the real venue. Market data always comes from [venues] (the real books).
    endpoint: Literal["testnet", "demo", "mainnet"] = "testnet"
    # or every ccxt REST and websocket root at this http root instead (a loopback exchange started with
    # `python -m bot sim`, a proxy); endpoint is then not used. `run --live --sim` sets it itself.
    url: str | None = Field(default=None, pattern=r"^https?://[^/?#]+$")


class LiveConfig(Section):
    """Live execution through ccxt (``bot.execution.live``). Keys come only from the environment:
    ``BOT_<VENUE>_API_KEY`` / ``BOT_<VENUE>_API_SECRET`` (e.g. ``BOT_BINANCE_USDM_API_KEY``), else the
    exchange's ``BOT_BINANCE_API_KEY`` / ``BOT_BYBIT_API_KEY`` pair."""

    cancel_on_stop: bool = True  # stopping (SIGINT/SIGTERM, --duration) cancels open orders first
    max_orders_per_s: float = Field(default=5.0, gt=0, le=100)  # per venue: new orders and cancels
    request_timeout_s: float = Field(default=10.0, gt=0, le=120)
    recv_window_ms: int = Field(default=5000, ge=1000, le=60_000)  # signed requests' validity window
    time_sync_every_s: float = Field(default=300.0, gt=0)  # the server-time offset is measured again
    resync_every_s: float = Field(default=30.0, gt=0)  # open orders and fills checked by REST as well
    venues: dict[Venue, LiveVenueConfig] = Field(default_factory=lambda: _default_live_venues())

    @field_validator("venues", mode="before")
    @classmethod
    def _merge(cls, v: Any) -> Any:
        return merge_per_venue(v, _default_live_venues(), "live.venues")

    @field_validator("venues")
    @classmethod
    def _no_futures_testnet(cls, v: dict[Venue, LiveVenueConfig]) -> dict[Venue, LiveVenueConfig]:
        usdm = v.get(Venue.BINANCE_USDM)
        if usdm is not None and usdm.endpoint == "testnet" and usdm.url is None:
            raise ValueError('binance_usdm has no testnet any more (Binance retired it; ccxt refuses to sign for '
                             'it): use endpoint = "demo" (the default) or "mainnet"')  # fmt: skip
        return v


def _default_live_venues() -> dict[Venue, LiveVenueConfig]:
    # the testnets by default; Binance USD-M's testnet is retired, its demo trading replaces it
    return {v: LiveVenueConfig(endpoint="demo" if v is Venue.BINANCE_USDM else "testnet") for v in Venue}


class RiskConfig(Section):
    """The risk gate (``bot.risk``). Notional limits are in the quote asset (USDT)."""

    max_order_notional: Decimal = Field(default=Decimal(2_000), gt=0)
    max_position_notional: Decimal = Field(default=Decimal(5_000), gt=0)  # per (venue, symbol)
    max_gross_exposure: Decimal = Field(default=Decimal(20_000), gt=0)  # sum of |position| x mark, all venues
    max_orders_per_minute: int = Field(default=60, ge=1)  # per venue
    price_band_pct: float = Field(default=1.0, gt=0)  # a limit price this far from the mid is refused
    max_signal_age_s: float = Field(default=10.0, gt=0)
    max_daily_drawdown_pct: float = Field(default=5.0, gt=0)  # from the day's opening equity (UTC): HALTED
    max_drawdown_pct: float = Field(default=10.0, gt=0)  # from peak equity: HALTED
    max_rejects: int = Field(default=5, ge=1)  # venue rejections within reject_window_s: HALTED
    reject_window_s: float = Field(default=60.0, gt=0)
    max_resync_s: float = Field(default=30.0, gt=0)  # a book resyncing longer than this: REDUCING
    crossed_burst: int = Field(default=5, ge=1)  # crossed-book heals within crossed_window_s: REDUCING
    crossed_window_s: float = Field(default=60.0, gt=0)
    max_clock_skew_ms: float = Field(default=1000.0, gt=0)  # |venue server time - local|: REDUCING
    max_model_latency_ms: float = Field(default=1000.0, gt=0)  # a model slower than this stops its strategies
    max_model_input_age_s: float = Field(default=15.0, gt=0)  # inputs older than this stop its strategies


class ReferenceConfig(Section):
    """Reference data (``bot.reference``): the venues' instrument rules and server time."""

    refresh_s: float = Field(default=3600.0, gt=0)  # instrument rules are fetched again this often
    skew_every_s: float = Field(default=30.0, gt=0)  # server time is measured this often (per venue host)
    skew_samples: int = Field(default=3, ge=1, le=10)  # round trips per measurement; the shortest one counts
    # False: no ClockSkew at all (the loopback exchange answers its replay clock, another day: ``--sim``)
    measure_skew: bool = True


class StateConfig(Section):
    """The state database: orders, fills, positions, equity, denials, risk states (``bot.state``)."""

    db: Path = Path("out/state.sqlite")
    snapshot_every_s: float = Field(default=5.0, gt=0)  # equity snapshots
    queue_size: int = Field(default=100_000, ge=1)


class ReplayConfig(Section):
    """``python -m bot replay``: what a kline file cannot say. A replay from kline files alone has no order
    book; the paper matcher then fills against one level per side at each bar's close, ``bar_spread_bps``
    wide in all and ``bar_depth_notional`` (quote asset) deep."""

    bar_spread_bps: float = Field(default=2.0, ge=0, le=1000)
    bar_depth_notional: Decimal = Field(default=Decimal(1_000_000), gt=0)


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json_logs: bool | None = None  # None: JSON when stderr is not a TTY


class BotSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BOT_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        toml_file=None,
    )

    venues: dict[Venue, VenueConfig] = Field(default_factory=_default_venues)
    book: BookConfig = BookConfig()
    reconnect: ReconnectConfig = ReconnectConfig()
    ring: RingConfig = RingConfig()
    klines: KlineConfig = KlineConfig()
    sim: SimConfig = SimConfig()
    log: LogConfig = LogConfig()
    models: ModelsConfig = ModelsConfig()
    signal_log: SignalLogConfig = SignalLogConfig()
    paper: PaperConfig = PaperConfig()
    live: LiveConfig = LiveConfig()
    risk: RiskConfig = RiskConfig()
    reference: ReferenceConfig = ReferenceConfig()
    state: StateConfig = StateConfig()
    replay: ReplayConfig = ReplayConfig()
    strategies: tuple[StrategyConfig, ...] = ()  # [[strategies]] tables (strategies/config.py)

    @field_validator("strategies")
    @classmethod
    def _unique_strategy_names(cls, v: tuple[StrategyConfig, ...]) -> tuple[StrategyConfig, ...]:
        dup = duplicate_names(v)
        if dup:
            raise ValueError(f"strategy names must be unique (orders and positions are owned by name): {dup}")
        return v

    @model_validator(mode="after")
    def _strategies_trade_configured_books(self) -> BotSettings:
        """An enabled strategy on a disabled venue, or on a symbol the venue does not stream, would never
        see a book: refused here, with every such strategy named."""
        problems = []
        for c in self.strategies:
            venue = self.venues.get(c.venue)
            if not c.enabled:
                continue
            if venue is None or not venue.enabled:
                problems.append(f"strategy {c.name!r} trades on {c.venue.value}, which is not enabled "
                                f"([venues.{c.venue.value}] enabled = false)")
                continue
            missing = [sym for sym in c.symbols if sym not in venue.symbols]
            if missing:
                problems.append(f"strategy {c.name!r} trades {missing} on {c.venue.value}, whose symbols are "
                                f"{list(venue.symbols)} ([venues.{c.venue.value}] symbols)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("venues", mode="before")
    @classmethod
    def _merge_venue_defaults(cls, v: Any) -> Any:
        """A partial ``[venues.X]`` table overrides only the keys it names; unknown venues are refused."""
        return merge_per_venue(v, _default_venues(), "venues", check=_bybit_has_no_snapshot_limit)

    @field_validator("venues")
    @classmethod
    def _venues_serve_it(cls, v: dict[Venue, VenueConfig]) -> dict[Venue, VenueConfig]:
        """A depth or snapshot limit the venue does not serve would subscribe to nothing, silently."""
        problems = [p for venue, cfg in v.items() for p in venue_config_problems(venue, cfg)]
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_PATH.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(_ConfigFileSource(settings_cls, path))
        return tuple(sources)

    def enabled_venues(self) -> dict[Venue, VenueConfig]:
        return {v: c for v, c in self.venues.items() if c.enabled}


_CONFIG_PATH: dict[str, Path | None] = {"path": None}


# -- relative paths (the rule is in the module docstring) ------------------------------------------------

_KEEP_DEFAULT = {("models", "dir")}  # used as it is when left at its default (the shipped checkpoints)


def _path_typed(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Path)


def _anchor(value: Any, annotation: Any, base: Path) -> Any:
    """``value`` (raw config-file data for a field of type ``annotation``) with every relative path in it
    made absolute against ``base``; anything that is not a path (or not of the expected shape) is left
    for validation to judge."""
    if _path_typed(annotation):
        if isinstance(value, str) and value:
            p = Path(value).expanduser()
            return str(p if p.is_absolute() else base / p)
        return value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not isinstance(value, dict):
            return value
        fields = annotation.model_fields
        return {k: _anchor(v, fields[k].annotation, base) if k in fields else v for k, v in value.items()}
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        for member in args:
            if (isinstance(value, str) and _path_typed(member)) or (
                isinstance(value, dict | list) and member is not type(None) and not _path_typed(member)
            ):
                return _anchor(value, member, base)
        return value
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {k: _anchor(v, args[1], base) for k, v in value.items()}
    if origin in (list, tuple, set, frozenset) and isinstance(value, list) and args:
        return [_anchor(v, args[0], base) for v in value]
    return value


class _ConfigFileSource(TomlConfigSettingsSource):
    """The config file, its relative paths already resolved against the file's folder."""

    def __init__(self, settings_cls: type[BaseSettings], toml_file: Path) -> None:
        self._model = settings_cls
        self._base = Path(toml_file).resolve().parent
        super().__init__(settings_cls, toml_file=toml_file)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data: dict[str, Any] = super()._read_file(file_path)
        anchored: dict[str, Any] = _anchor(data, self._model, self._base)
        return anchored


def _absolute(model: BaseModel, defaults_base: Path, given_base: Path, loc: tuple[str, ...] = ()) -> Any:
    """``model`` with every relative ``Path`` in it absolute: a default one against ``defaults_base``,
    one given (environment, overrides) against ``given_base``; sections and containers are walked."""
    changes: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        here = (*loc, name)
        if isinstance(value, Path):
            if value.is_absolute() or (here in _KEEP_DEFAULT and name not in model.model_fields_set):
                continue
            value = value.expanduser()
            base = given_base if name in model.model_fields_set else defaults_base
            changes[name] = value if value.is_absolute() else base / value
        else:
            new = _absolute_in(value, defaults_base, given_base, here)
            if new is not value:
                changes[name] = new
    return model.model_copy(update=changes) if changes else model


def _absolute_in(value: Any, defaults_base: Path, given_base: Path, loc: tuple[str, ...]) -> Any:
    if isinstance(value, BaseModel):
        return _absolute(value, defaults_base, given_base, loc)
    if isinstance(value, dict):
        items = {k: _absolute_in(v, defaults_base, given_base, (*loc, str(k))) for k, v in value.items()}
        return items if any(items[k] is not value[k] for k in value) else value
    if isinstance(value, tuple | list) and not isinstance(value, str):
        seq = [_absolute_in(v, defaults_base, given_base, loc) for v in value]
        return type(value)(seq) if any(a is not b for a, b in zip(seq, value, strict=True)) else value
    return value


def load_settings(path: Path | None = None, **overrides: Any) -> BotSettings:
    """Read ``path`` (default: ``$BOT_CONFIG`` or ./config.toml if present) and the environment.

    Relative paths come back absolute (the rule is in the module docstring). Raises ``ConfigError`` with
    every problem listed, never a pydantic traceback.
    """
    if path is None:
        env = os.environ.get("BOT_CONFIG")
        path = Path(env) if env else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file not found: {path}")
    _CONFIG_PATH["path"] = Path(path) if path is not None else None
    cwd = Path.cwd()
    try:
        settings = BotSettings(**overrides)
        anchored: BotSettings = _absolute(settings, Path(path).resolve().parent if path is not None else cwd, cwd)
        return anchored
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (typo?)"
            elif err["type"] == "value_error":
                msg = msg.removeprefix("Value error, ")
            lines.append(f"  {loc}: {msg}")
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"invalid configuration{where} or BOT_* environment:\n" + "\n".join(lines)) from None
    except Exception as e:  # TOML syntax errors and the like
        raise ConfigError(f"cannot read configuration {path}: {e}") from None
    finally:
        _CONFIG_PATH["path"] = None
