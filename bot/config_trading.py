"""Config sections of the order path: ``[paper]`` (the paper matcher's venue accounts), ``[live]`` (ccxt
execution and its endpoints), ``[risk]`` (the risk gate's limits), ``[reference]`` (instrument rules and
server time), ``[state]`` (the state database) and ``[replay]`` (what a kline file cannot say).

Built on ``bot.config_sections`` (``Section``, ``merge_per_venue``); ``bot.config`` puts them into
``BotSettings`` and re-exports every name (import them from there).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from bot.config_sections import Section, merge_per_venue
from bot.events import Venue


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
