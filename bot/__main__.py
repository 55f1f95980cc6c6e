"""``python -m bot <command>``: run, sim, record, import, books.

Every command returns an exit code; expected failures (bad config, bad input, unreachable venue) print one
clear line and exit 2 or 1, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from bot.errors import BotError, ConfigError, InvariantViolation

# Each module registers its own sub-command (``register(sub)``) with ``func=handler(args) -> int``.
COMMAND_MODULES = (
    "bot.app",
    "bot.sim.cli",
    "bot.record",
    "bot.importers",
    "bot.export",
    "bot.signals_cli",
    "bot.state_cli",
    "bot.train_cli",
    "replay.cli",
    "replay.report_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, default=None, help="config file (default: $BOT_CONFIG or ./config.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    # ``--config`` is accepted after the sub-command too (python -m bot run --config F).
    for p in sub.choices.values():
        if not any("--config" in a.option_strings for a in p._actions):
            p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except InvariantViolation as e:
        structlog.get_logger("bot").error("invariant_violation", error=str(e))
        return 3
    except BotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
