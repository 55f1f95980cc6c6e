"""structlog set-up: JSON lines when stderr is not a terminal, readable console otherwise.

Tracebacks never include local variables (a secret in a local would end up in the log).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import structlog


def setup_logging(level: str = "info", json_logs: bool | None = None) -> None:
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if json_logs:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)))
    else:
        renderer = structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
            if _has_rich()
            else structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def quiet_background_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler: an exception nobody retrieved from a library's own future (ccxt's
    websocket clients leave them when a connection fails; the caller already saw its own copy) is one
    warning line with its class only (its text can carry URLs and request headers), not a traceback.
    Anything else goes to asyncio's default handler."""
    exc = context.get("exception")
    module = type(exc).__module__ if exc is not None else ""
    if exc is not None and (module.startswith(("ccxt", "aiohttp")) or isinstance(exc, OSError)):
        structlog.get_logger(__name__).warning("background_error", error=type(exc).__name__,
                                               what=str(context.get("message", ""))[:80])  # fmt: skip
        return
    loop.default_exception_handler(context)
