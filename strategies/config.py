"""Strategy configuration: one frozen pydantic model per kind, a discriminated union on ``kind``.

``config.toml`` lists strategies as ``[[strategies]]`` tables; ``bot.config.BotSettings.strategies`` holds
them (and refuses duplicate names). Every model refuses unknown keys, so a typo fails at start-up with the
key named, like the rest of the configuration. This module imports only ``bot.events`` (and nothing of
``bot.config``, which imports it).

Common fields: ``name`` (unique), ``kind``, ``enabled``, ``model`` (the checkpoint file stem whose signals
the strategy reads, e.g. ``"tabl_binance-spot-btcusdt_h10"``), ``venue``, ``symbols``. Sizing is in the
quote asset (USDT): ``notional`` per position for the single-instrument kinds, ``capital`` and
``max_position`` for the portfolio.

How orders go (common to every kind, ``strategies.limit``): ``order_type = "market"`` (the default: every
target is a market order) or ``"limit"``: a buy rests at the last best bid x (1 - ``limit_offset_bps`` /
1e4), a sell at the last best ask x (1 + offset), post-only (``post_only``, default) or GTC. A limit order
still open ``limit_timeout_s`` after it was placed (event clock; ``None``: never) is cancelled and the
strategy targets again at its next decision. Exits go the same way as entries, except a time exit, which
goes at market while ``exit_market`` (default) so a position is never stuck::

    [[strategies]]
    name = "tabl-maker"
    kind = "threshold"
    model = "tabl_binance-spot-btcusdt_h10"
    venue = "binance_spot"
    symbols = ["BTCUSDT"]
    threshold = 0.45
    notional = 100
    hold_s = 60
    order_type = "limit"      # rest at the touch instead of taking
    limit_offset_bps = 0.5    # 0.5 bps behind the best price
    post_only = true          # refused by the venue rather than taking
    limit_timeout_s = 20      # cancelled after 20 s unfilled; the next signal targets again
    exit_market = true        # the time exit takes, so the position is never stuck
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.events import Venue

Probability = Annotated[float, Field(gt=0, lt=1)]
Fraction = Annotated[float, Field(gt=0, le=1)]
Notional = Annotated[Decimal, Field(gt=0)]


class _Strategy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    enabled: bool = True
    model: str = Field(min_length=1)  # checkpoint file stem
    venue: Venue
    symbols: tuple[str, ...] = Field(min_length=1)
    allow_short: bool = False  # never on a spot venue (there is nothing to borrow)
    # how orders go (strategies.limit); the defaults are market orders, as before these existed
    order_type: Literal["market", "limit"] = "market"
    limit_offset_bps: float = Field(default=0.0, ge=0, le=1000)  # behind the touch: buy below bid, sell above ask
    post_only: bool = True  # limit orders as TimeInForce.POST_ONLY (else GTC)
    limit_timeout_s: float | None = Field(default=30.0, gt=0)  # an open limit order this old is cancelled
    exit_market: bool = True  # time exits at market whatever order_type says

    @field_validator("symbols")
    @classmethod
    def _canonical(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if not s.isalnum()]
        if bad:
            raise ValueError(f"symbols must be like BTCUSDT (no separators): {bad}")
        up = tuple(s.upper() for s in v)
        if len(set(up)) != len(up):
            raise ValueError(f"symbols listed twice: {list(v)}")
        return up

    @model_validator(mode="after")
    def _no_short_on_spot(self) -> _Strategy:
        if self.allow_short and self.venue.market == "spot":
            raise ValueError(f"allow_short = true on spot venue {self.venue.value}: a spot account cannot short")
        return self


class ThresholdConfig(_Strategy):
    """TABL / multi-head TABL: long on "up", short on "down" above ``threshold``; exit on the opposite signal
    or after the horizon (``hold_s``, default the model's horizon)."""

    kind: Literal["threshold"]
    threshold: Probability
    horizon_index: int = Field(default=0, ge=0)  # which of the model's horizons
    hold_s: float | None = Field(default=None, gt=0)
    notional: Notional


class MultiHorizonConfig(_Strategy):
    """Multi-scale model: direction probability above ``threshold`` and at least ``min_agreement`` of the
    predicted returns with the same sign. ``sizing``: ``fixed`` (``notional``), ``confidence`` (``notional``
    times the probability edge over the opposite class) or ``kelly`` (``kelly_fraction`` of the Kelly
    fraction of ``capital``); every mode capped by ``max_notional``."""

    kind: Literal["multihorizon"]
    threshold: Probability
    min_agreement: Fraction = 1.0
    sizing: Literal["fixed", "confidence", "kelly"] = "fixed"
    notional: Notional | None = None  # fixed / confidence
    kelly_fraction: Fraction = 0.5
    capital: Notional | None = None  # kelly's bankroll
    max_notional: Notional | None = None
    hold_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _sizing_inputs(self) -> MultiHorizonConfig:
        if self.sizing == "kelly" and self.capital is None:
            raise ValueError("sizing = \"kelly\" needs capital (the bankroll the Kelly fraction is of)")
        if self.sizing != "kelly" and self.notional is None:
            raise ValueError(f"sizing = \"{self.sizing}\" needs notional")
        return self


class PortfolioConfig(_Strategy):
    """Cross-asset model: target weights from the portfolio head (``weights = "head"``) or from predicted
    returns over realised volatility (``"returns"``), times ``capital``, each capped at ``max_position``;
    rebalanced every ``rebalance_bars`` bars (or signals) or when a weight drifts past ``drift_band``."""

    kind: Literal["portfolio"]
    symbols: tuple[str, ...] = Field(min_length=2)
    weights: Literal["head", "returns"] = "head"
    capital: Notional
    max_position: Notional  # per asset, quote asset
    rebalance_on: Literal["bars", "signals"] = "bars"
    rebalance_bars: int = Field(default=15, ge=1)
    bar_interval_s: int = Field(default=60, gt=0)  # the model's resolution: which KlineClosed count
    drift_band: Fraction = 0.1
    vol_window: int = Field(default=20, ge=2)  # bars of realised volatility (weights = "returns")


class ForecasterConfig(_Strategy):
    """Multi-venue LOB forecaster: trade when the predicted mid move at ``horizon_index`` beats the costs
    (current spread + ``taker_fee_bps`` both ways + ``margin_bps``); exit after the horizon or on reversal."""

    kind: Literal["forecaster"]
    horizon_index: int = Field(default=0, ge=0)
    taker_fee_bps: float = Field(ge=0, le=100)  # no default: state the venue's real fee
    margin_bps: float = Field(default=1.0, ge=0)
    hold_s: float | None = Field(default=None, gt=0)
    notional: Notional


StrategyConfig = Annotated[
    ThresholdConfig | MultiHorizonConfig | PortfolioConfig | ForecasterConfig,
    Field(discriminator="kind"),
]

KINDS = ("threshold", "multihorizon", "portfolio", "forecaster")


def duplicate_names(configs: tuple[_Strategy, ...]) -> list[str]:
    """Names used by more than one strategy (positions and orders are owned by name)."""
    seen: set[str] = set()
    dup: list[str] = []
    for c in configs:
        if c.name in seen and c.name not in dup:
            dup.append(c.name)
        seen.add(c.name)
    return dup


__all__ = [
    "KINDS",
    "ForecasterConfig",
    "MultiHorizonConfig",
    "PortfolioConfig",
    "StrategyConfig",
    "ThresholdConfig",
    "duplicate_names",
]
