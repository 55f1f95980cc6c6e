"""Fixtures for integration tests against the loopback exchange (``bot.sim``).

Recordings are built once per test session from the shared real data (``$BOT_SHARED_DATA`` or
``<repo>/../shared/data``; every fixture below skips cleanly when it is absent) into a session tmp dir,
in the native format (``bot.recording``), with ``bot.importers``:

``shared_data``            Path of the shared data folder (skips when absent).
``sim_recording``          one native recording holding all four venues, whole sessions:
                           binance_spot BTCUSDT (hftbacktest 2024-08-08/09, ~10 min 50 s, 1 REST snapshot),
                           binance_usdm BTCUSDT (hftbacktest 2024-08-08, ~5 min 45 s, 1 REST snapshot),
                           bybit_spot BTCUSDT/ETHUSDT and bybit_linear BTC/ETH/SOL/DOGE (cryptofeed, ~44 s,
                           with the recorded instruments-info bodies).
``sim_recording_short``    the same, cut to the first ``SHORT_S`` (20) seconds of each venue: for tests
                           that play a recording to its end (loop restart, end-state book equality).
``sim_klines_dir``         a klines folder for ``LoopbackExchange(klines_dir=...)``: ``binance_spot/`` and
                           ``binance_usdm/`` link the Binance spot CSVs (2023), ``bybit_linear/`` and
                           ``bybit_spot/`` the Bybit linear CSVs (2025; 1m from one commit, 5m..240m
                           from the other).
``make_sim``               an async context factory: ``async with make_sim(speed=10, loop=False) as sim:``
                           replays ``sim_recording_short`` at speed 10 with ``sim_klines_dir`` by default;
                           ``data="full"`` replays ``sim_recording`` (built only when asked for), any other
                           ``data=Path`` that recording; every other ``LoopbackExchange`` keyword passes.

Build a recording of your own with ``build_recording(out_dir, shared_data, venues=..., seconds=...)``.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.events import Venue
from bot.importers import records_for, slice_records
from bot.recording import Record
from bot.recording_writer import RecordingWriter
from bot.sim import LoopbackExchange

SHORT_S = 20.0

# venue -> (importer format, files relative to the shared data folder)
SOURCES: dict[Venue, tuple[str, tuple[str, ...]]] = {
    Venue.BINANCE_SPOT: (
        "hftbacktest",
        ("hftbacktest/examples/spot/btcusdt_20240808.gz", "hftbacktest/examples/spot/btcusdt_20240809.gz"),
    ),
    Venue.BINANCE_USDM: ("hftbacktest", ("hftbacktest/examples/usdm/btcusdt_20240808.gz",)),
}
BYBIT_FILE = "cryptofeed/v3/sample_data/BYBIT.jsonl.zst"


def find_shared_data() -> Path | None:
    env = os.environ.get("BOT_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "data")
    for c in candidates:
        if (c / "SOURCES.md").is_file():
            return c
    return None


def _venue_records(shared: Path, venue: Venue) -> Iterator[Record]:
    if venue in (Venue.BYBIT_SPOT, Venue.BYBIT_LINEAR):
        return (r for r in records_for("cryptofeed", [shared / BYBIT_FILE], None) if r.venue == venue.value)
    fmt, files = SOURCES[venue]
    return records_for(fmt, [shared / f for f in files], venue)


def build_recording(
    out: Path, shared: Path, venues: Iterable[Venue] = tuple(Venue), seconds: float | None = None
) -> Path:
    """A native recording of ``venues`` from the shared data, optionally only the first ``seconds``."""
    streams = []
    for v in venues:
        recs: Iterable[Record] = _venue_records(shared, v)
        if seconds is not None:
            recs = slice_records(recs, seconds)
        streams.append(recs)
    with RecordingWriter(out, meta={"built_by": "tests/integration/conftest.py"}) as w:
        w.write_many(heapq.merge(*streams, key=lambda r: r.ts_recv))
    return out


def build_klines_dir(out: Path, shared: Path) -> Path:
    bn = shared / "benicio1007_bot_trading/f802e27/data"
    by = [shared / "cobra0506_crypto_backtester/33c8800/data", shared / "cobra0506_crypto_backtester/14bef5f/data"]
    for venue, srcs in (
        (Venue.BINANCE_SPOT, [bn]),
        (Venue.BINANCE_USDM, [bn]),
        (Venue.BYBIT_LINEAR, by),
        (Venue.BYBIT_SPOT, by),
    ):
        d = out / venue.value
        d.mkdir(parents=True, exist_ok=True)
        for src in srcs:
            for f in sorted(src.glob("*.csv")):
                if not (d / f.name).exists():
                    (d / f.name).symlink_to(f)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    found = find_shared_data()
    if found is None:
        pytest.skip("shared data not found (set BOT_SHARED_DATA or provide <repo>/../shared/data)")
    return found


@pytest.fixture(scope="session")
def sim_recording(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_recording(tmp_path_factory.mktemp("sim") / "all", shared_data)


@pytest.fixture(scope="session")
def sim_recording_short(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_recording(tmp_path_factory.mktemp("sim") / "short", shared_data, seconds=SHORT_S)


@pytest.fixture(scope="session")
def sim_klines_dir(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_klines_dir(tmp_path_factory.mktemp("klines"), shared_data)


SimFactory = Callable[..., AbstractAsyncContextManager[LoopbackExchange]]


@pytest.fixture
def make_sim(request: pytest.FixtureRequest, sim_recording_short: Path, sim_klines_dir: Path) -> SimFactory:
    @asynccontextmanager
    async def factory(**kw: Any) -> AsyncIterator[LoopbackExchange]:
        data = kw.pop("data", None)
        if data is None:
            data = sim_recording_short
        elif data == "full":
            data = request.getfixturevalue("sim_recording")
        kw.setdefault("klines_dir", sim_klines_dir)
        kw.setdefault("speed", 10.0)
        async with LoopbackExchange(data, **kw) as sim:
            yield sim

    return factory
