"""Strategies: pure synchronous classes (``strategies.base.Strategy``) built from their configuration.

    kind            class                   reads
    threshold       ThresholdStrategy       tabl / mhtabl class probabilities
    multihorizon    MultiHorizonStrategy    multiscale direction probabilities + multi-horizon returns
    portfolio       PortfolioStrategy       crossasset per-asset returns and portfolio weights
    forecaster      ForecasterStrategy      lobforecast predicted mid move and spread (bps)

Every kind sends its targets at market (the default) or as resting limit orders with a timeout
(``strategies.limit``; the config fields in ``strategies.config``).
"""

from __future__ import annotations

from collections.abc import Iterable

from strategies.base import Strategy
from strategies.config import (
    ForecasterConfig,
    MultiHorizonConfig,
    PortfolioConfig,
    StrategyConfig,
    ThresholdConfig,
)
from strategies.forecaster import ForecasterStrategy
from strategies.multihorizon import MultiHorizonStrategy
from strategies.portfolio import PortfolioStrategy
from strategies.threshold import ThresholdStrategy

STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    "threshold": ThresholdStrategy,
    "multihorizon": MultiHorizonStrategy,
    "portfolio": PortfolioStrategy,
    "forecaster": ForecasterStrategy,
}

# the model families whose signals each kind reads (mhtabl checkpoints are family "tabl")
MODEL_FAMILIES: dict[str, tuple[str, ...]] = {
    "threshold": ("tabl",),
    "multihorizon": ("multiscale",),
    "portfolio": ("crossasset",),
    "forecaster": ("lobforecast",),
}


def build_strategy(cfg: StrategyConfig) -> Strategy:
    if isinstance(cfg, ThresholdConfig):
        return ThresholdStrategy(cfg)
    if isinstance(cfg, MultiHorizonConfig):
        return MultiHorizonStrategy(cfg)
    if isinstance(cfg, PortfolioConfig):
        return PortfolioStrategy(cfg)
    if isinstance(cfg, ForecasterConfig):
        return ForecasterStrategy(cfg)
    raise TypeError(f"no strategy class for {type(cfg).__name__}")


def build_strategies(configs: Iterable[StrategyConfig]) -> list[Strategy]:
    """The enabled strategies of ``configs``, in order (names are unique: ``BotSettings`` checks)."""
    return [build_strategy(c) for c in configs if c.enabled]


__all__ = [
    "MODEL_FAMILIES",
    "STRATEGY_CLASSES",
    "ForecasterStrategy",
    "MultiHorizonStrategy",
    "PortfolioStrategy",
    "Strategy",
    "ThresholdStrategy",
    "build_strategies",
    "build_strategy",
]
