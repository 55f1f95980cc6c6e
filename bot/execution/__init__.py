"""Execution: where risk-checked orders go. ``paper`` fills against the local books; ``live`` (next) sends
them through ccxt. Both implement ``bot.execution.base.Execution``."""
