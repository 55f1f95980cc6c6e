"""``python -m bot sim``: serve a recording on 127.0.0.1 as Bybit and Binance until SIGINT/SIGTERM.

    python -m bot sim --data DIR --speed 20 --faults drop=0.01 --print-urls

``--print-urls`` prints one JSON line per market (flushed), for pointing any client at the sim::

    {"venue": "binance_spot", "ws": "ws://127.0.0.1:41527", "rest": "http://127.0.0.1:41527",
     "ws_combined": "ws://127.0.0.1:41527/stream", "ws_raw": "ws://127.0.0.1:41527/ws",
     "symbols": ["BTCUSDT"], "ccxt": {"exchange": "binance", "api": {"public": "http://.../api/v3"}}}

Without ``--data`` the embedded demo recording (``bot/demo/recording``) is served, with the demo klines
(``bot/demo/klines``) for REST klines unless ``--klines-dir`` says otherwise; those are spliced onto the
live session (``bot.sim.klines``) unless ``--no-splice-klines``. Settings not given on the
command line come from the ``[sim]`` section of the config (``bot.config.SimConfig``). A missing or
unreadable recording, a bad fault spec or a bad speed exit 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.config import load_settings
from bot.errors import BotError, ConfigError
from bot.events import Venue
from bot.logs import setup_logging
from bot.sim.faults import FaultSpec
from bot.sim.replay import recording_dirs
from bot.sim.server import LoopbackExchange

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sim", help="serve a recording as a loopback Bybit/Binance exchange on 127.0.0.1")
    add_arguments(p)
    p.set_defaults(func=handle)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None, help="native recording dir (default: the embedded demo)")
    p.add_argument("--speed", type=float, default=None, help="replay speed factor (default 1)")
    p.add_argument("--seed", type=int, default=None, help="fault dice seed (default 0)")
    p.add_argument("--faults", default=None, help='fault spec, e.g. "drop=0.01,stall=0.002:3,rest429=0.2,restart=1"')
    p.add_argument("--print-urls", action="store_true", help="print one JSON line per market, then serve")
    p.add_argument(
        "--no-loop",
        action="store_true",
        help="stop replaying at the end (default: loop seamlessly, ids and times continuing; "
        "the restart=P fault restarts the venue instead)",
    )
    p.add_argument("--klines-dir", type=Path, default=None, help="CSV klines for the REST klines endpoints")
    p.add_argument(
        "--splice-klines",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve the CSV klines moved and scaled so they end where the live session begins, then the "
        "live bars (default: on for the embedded demo klines only; see bot/demo/PROVENANCE.md)",
    )
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--api-key", default=None, help="the private side's API key (or BOT_SIM_API_KEY; default: [sim])")
    p.add_argument("--api-secret", default=None, help="its secret (or BOT_SIM_API_SECRET; default: [sim])")


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def handle(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as e:
        return _error(str(e))
    cfg = settings.sim
    data = args.data or cfg.data
    klines = args.klines_dir
    if data is None:
        data = DEMO_DIR / "recording"
        if klines is None and (DEMO_DIR / "klines").is_dir():
            klines = DEMO_DIR / "klines"
        if not data.is_dir():
            return _error(f"no --data given and the embedded demo recording is missing ({data})")
    speed = cfg.speed if args.speed is None else args.speed
    if not speed > 0:
        return _error(f"--speed must be > 0, not {speed}")
    if klines is not None and not Path(klines).is_dir():
        return _error(f"--klines-dir {klines}: no such directory")
    try:
        faults = FaultSpec.parse(cfg.faults if args.faults is None else args.faults)
        recording_dirs(data)
    except BotError as e:
        return _error(str(e))
    setup_logging(settings.log.level, settings.log.json_logs)
    sim = LoopbackExchange(
        data,
        speed=speed,
        seed=cfg.seed if args.seed is None else args.seed,
        faults=faults,
        loop=cfg.loop and not args.no_loop,
        host=args.host or cfg.host,
        klines_dir=klines,
        splice_klines=args.splice_klines,
        api_key=args.api_key or os.environ.get("BOT_SIM_API_KEY") or cfg.api_key.get_secret_value(),
        api_secret=args.api_secret or os.environ.get("BOT_SIM_API_SECRET") or cfg.api_secret.get_secret_value(),
        balances=dict(cfg.balances),
    )
    try:
        return asyncio.run(_serve(sim, print_urls=args.print_urls))
    except BotError as e:
        return _error(str(e))
    except OSError as e:  # the address is taken, and the like
        return _error(f"cannot serve: {e}")


def url_lines(sim: LoopbackExchange) -> list[dict[str, Any]]:
    lines = []
    for venue, urls in sim.urls.items():
        tl = sim.timelines.get(venue)
        line: dict[str, Any] = {"venue": venue.value, "ws": urls.ws_url, "rest": urls.rest_url,
                                "symbols": tl.symbols if tl is not None else []}  # fmt: skip
        if venue is Venue.BINANCE_SPOT:
            line.update(ws_combined=f"{urls.ws_url}/stream", ws_raw=f"{urls.ws_url}/ws",
                        ccxt={"exchange": "binance", "api": {"public": f"{urls.rest_url}/api/v3"}})  # fmt: skip
        elif venue is Venue.BINANCE_USDM:
            api = {"fapiPublic": f"{urls.rest_url}/fapi/v1"}
            line.update(ws_combined=f"{urls.ws_url}/stream", ws_raw=f"{urls.ws_url}/ws",
                        ccxt={"exchange": "binanceusdm", "api": api})  # fmt: skip
        else:
            line.update(ccxt={"exchange": "bybit", "api": {"public": urls.rest_url}})
        lines.append(line)
    return lines


async def _serve(sim: LoopbackExchange, *, print_urls: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with sim:
            if print_urls:
                for line in url_lines(sim):
                    print(json.dumps(line), flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.sim.cli", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--config", type=Path, default=None, help="config file")
    return handle(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
