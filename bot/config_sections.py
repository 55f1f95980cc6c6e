"""Config sections of the data path, and the base every config section shares.

``Section`` (frozen, unknown keys refused) and ``merge_per_venue`` (partial per-venue tables over defaults);
the market-data sections: ``[venues.X]`` (``VenueConfig``, what each venue serves: ``DEPTHS``,
``SNAPSHOT_LIMITS``, ``venue_config_problems``; the real endpoints: ``default_venues``), ``[book]``,
``[reconnect]``, ``[ring]``, ``[klines]``; the loopback exchange ``[sim]``; ``[models]``, ``[signal_log]`` and
``[log]``. The order path's sections are in ``bot.config_trading``; ``bot.config`` puts them together in
``BotSettings``, loads them and re-exports every name (import them from there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bot.events import Venue

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


def default_venues() -> dict[Venue, VenueConfig]:
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


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json_logs: bool | None = None  # None: JSON when stderr is not a TTY


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


def bybit_has_no_snapshot_limit(venue: str, keys: set[str]) -> None:
    if venue.startswith("bybit") and "snapshot_limit" in keys:
        raise ValueError(
            f"{venue}.snapshot_limit is not used: Bybit sends the book's snapshot on the stream (its size is "
            "depth); remove it"
        )
