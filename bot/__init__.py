"""Event-driven crypto trading bot: collectors, local books, rings, bus, models, paper/live execution."""

__version__ = "0.1.0"
