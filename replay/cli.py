"""``python -m bot replay SOURCE... --report DIR``: a backtest through the path the bot trades on.

    python -m bot replay bot/demo/recording --report out/replay
    python -m bot replay binance_spot=../shared/data/benicio1007_bot_trading/f802e27/data --report out/bars
    python -m bot replay REC/ --from 2024-08-08T23:56:00Z --to 2024-08-08T23:58:00Z --speed 10x --report out/r
    python -m bot replay binance_spot=KLINES/ --walk-forward --train-days 7 --test-days 3 --report out/wf

SOURCE: a native recording directory, ``VENUE=`` kline files (a ``SYMBOL_1m.csv`` or a folder of them), or
a file in a public format (``replay.sources``). ``--speed max`` (default) runs as fast as it can, ``1x`` /
``10x`` / ``10`` paces replay time against the wall clock (the times in the output never change). DIR
gets ``events.jsonl`` (every event of the order path), ``run.json`` (what ran, counts), the no-model
baseline run in ``DIR/baseline/`` and the report (``report.json``, plots, ``report.html``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.config import load_settings
from bot.errors import ConfigError
from bot.logs import setup_logging

NS_PER_MS = 1_000_000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="backtest: replay recorded sessions or kline files through the trading path")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="a recording directory, VENUE=kline files or folder, or a file in a public format")
    p.add_argument("--report", type=Path, required=True, metavar="DIR", help="directory for the event log and report")
    p.add_argument("--speed", default="max", help="max (default), or a factor of real time: 1x, 10x, 0.5")
    p.add_argument("--from", dest="from_", default=None, metavar="T", help="start (ISO time, UTC unless it says)")
    p.add_argument("--to", default=None, metavar="T", help="end (ISO time, UTC unless it says)")
    p.add_argument("--models", type=Path, default=None, metavar="DIR", help="checkpoint directory ([models] dir)")
    p.add_argument("--no-baseline", action="store_true", help="skip the no-model baseline run")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress line on stderr (default: when stderr is a terminal)")
    p.add_argument("--walk-forward", action="store_true",
                   help="train on each span, replay the next with that checkpoint, roll on (kline models)")
    p.add_argument("--train-days", type=float, default=7.0, help="walk-forward: training span (days)")
    p.add_argument("--test-days", type=float, default=3.0, help="walk-forward: out-of-sample span (days)")
    p.add_argument("--family", default=None, help="walk-forward: the model family to train (default: the "
                   "families the enabled strategies read)")
    p.add_argument("--epochs", type=int, default=None, help="walk-forward: training epochs per fold")
    p.set_defaults(func=_cli)


def parse_speed(text: str) -> float | None:
    t = text.strip().lower()
    if t == "max":
        return None
    try:
        x = float(t[:-1] if t.endswith("x") else t)
    except ValueError:
        raise ConfigError(f"--speed {text!r}: want max, or a factor like 1x, 10x, 0.5") from None
    if not x > 0 or x != x or x == float("inf"):
        raise ConfigError(f"--speed {text!r}: the factor must be > 0")
    return x


def parse_time(text: str | None, what: str) -> int | None:
    """ISO 8601 (naive = UTC) or epoch milliseconds -> ns."""
    if text is None:
        return None
    t = text.strip()
    if t.isdigit():
        return int(t) * NS_PER_MS
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{what} {text!r}: want an ISO time like 2024-08-08T23:56:00Z or epoch ms") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000) * NS_PER_MS


def _cli(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    setup_logging(settings.log.level, settings.log.json_logs)
    from replay.engine import ReplayRequest, run_replay
    from replay.sources import open_sources

    speed = parse_speed(args.speed)
    from_ns, to_ns = parse_time(args.from_, "--from"), parse_time(args.to, "--to")
    if from_ns is not None and to_ns is not None and to_ns <= from_ns:
        raise ConfigError("--to must be after --from")
    out: Path = args.report
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--report {out}: exists and is not a directory")
    if args.models is not None and not args.models.is_dir():
        raise ConfigError(f"--models {args.models}: no such directory")
    sources = open_sources(args.sources)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    _clean(out)
    if args.walk_forward:
        from replay.walkforward import WalkForward, run_walk_forward

        wf = WalkForward(train_days=args.train_days, test_days=args.test_days, family=args.family,
                         epochs=args.epochs)  # fmt: skip
        summary = run_walk_forward(settings, sources, out, wf, speed=speed, progress=progress,
                                   baseline=not args.no_baseline)  # fmt: skip
    else:
        req = ReplayRequest(sources, out, speed=speed, from_ns=from_ns, to_ns=to_ns, progress=progress,
                            models_dir=args.models)  # fmt: skip
        summary = run_replay(settings, req)
        if not args.no_baseline:
            base = ReplayRequest(sources, out / "baseline", speed=None, from_ns=from_ns, to_ns=to_ns,
                                 progress=False, models_dir=args.models, run_name="baseline")  # fmt: skip
            run_replay(settings, base, baseline=True)
            _set_baseline(out, "baseline")
    report = _report(out)
    print(json.dumps({"replay": _short(summary), "report": report}, indent=1, default=str))
    return 0


def _clean(out: Path) -> None:
    """A report directory starts empty of what a replay writes (never anything else in it)."""
    for name in ("events.jsonl", "run.json", "report.json", "report.html"):
        (out / name).unlink(missing_ok=True)
    for name in ("baseline", "plots", "folds"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)


def _set_baseline(out: Path, name: str) -> None:
    p = out / "run.json"
    run = json.loads(p.read_text(encoding="utf-8"))
    run["baseline"] = name
    p.write_text(json.dumps(run, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _report(out: Path) -> Any:
    try:
        from replay.report import write_report
    except ImportError:  # the report module is not there (a partial install)
        return {"skipped": "replay.report not available"}
    return write_report(out).get("summary", {})


def _short(s: dict[str, Any]) -> dict[str, Any]:
    keep = ("mode", "records", "grid_ticks", "span_ns", "events", "bus_handler_errors")
    out = {k: s[k] for k in keep if k in s}
    t = s.get("trading") or {}
    out["trading"] = {k: t[k] for k in ("orders", "fills", "denied", "equity") if k in t}
    return out
