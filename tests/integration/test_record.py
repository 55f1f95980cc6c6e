"""``python -m bot record``: count in == count on disk, across rotations, however the recording stops.

The subprocess tests run the real command against the loopback exchange (``--sim --sim-data``, a short
recording built from the shared data) and stop it with SIGINT or SIGTERM once a rotation has happened;
the summary it prints, the manifest and the records read back with ``iter_records`` must all agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bot.__main__ import main
from bot.config import BotSettings
from bot.errors import ConfigError, RecordingError
from bot.events import Venue
from bot.record import RecordSink, check_sim_data, parse_symbols, parse_venues, record, select, start_sim
from bot.recording import Record, iter_records, read_manifest
from bot.recording_writer import RecordingWriter
from tests.integration.conftest import build_recording

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim_data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_recording(tmp_path_factory.mktemp("record") / "rec", shared_data, seconds=20.0)


def read_back(out: Path) -> tuple[list[Record], dict[str, Any]]:
    return list(iter_records(out)), read_manifest(out)


def assert_count_in_equals_count_on_disk(summary: dict[str, Any], out: Path) -> list[Record]:
    recs, manifest = read_back(out)
    assert summary["error"] is None
    assert summary["refused"] == 0
    assert summary["records"] == summary["records_in"] == len(recs) == manifest["records"] > 0
    assert manifest["complete"] is True
    files = manifest["files"]
    assert isinstance(files, list)
    assert summary["files"] == [f["name"] for f in files] == sorted(p.name for p in out.glob("part-*.tsv.zst"))
    assert sum(f["records"] for f in files) == len(recs)
    assert summary["venues"] == dict(sorted(Counter(r.venue for r in recs).items()))
    assert summary["kinds"] == dict(sorted(Counter(r.kind for r in recs).items()))
    return recs


def start_recorder(out: Path, sim_data: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    env["BOT_LOG__LEVEL"] = "warning"
    cmd = [sys.executable, "-m", "bot", "record", "--out", str(out), "--sim", "--sim-data", str(sim_data)]
    return subprocess.Popen(
        [*cmd, "--speed", "5", "--rotate-mb", "0.05", *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rotation(proc: subprocess.Popen[str], out: Path, within_s: float = 30.0) -> None:
    """Until the manifest lists a closed part (a rotation happened) and more is being written."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"recorder exited early: {proc.communicate()}"
        try:
            files = read_manifest(out)["files"]
        except Exception:  # not there yet, or being replaced
            files = []
        if isinstance(files, list) and len(files) >= 2:
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no rotation within {within_s} s: {proc.communicate()}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_stops_the_recorder_cleanly_with_every_tapped_record_on_disk_across_rotations(
    sig: signal.Signals, sim_data: Path, tmp_path: Path
) -> None:
    # Arrange
    out = tmp_path / "rec"
    proc = start_recorder(out, sim_data)
    wait_for_rotation(proc, out)

    # Act
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)

    # Assert
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["stopped_by"] == sig.name
    recs = assert_count_in_equals_count_on_disk(summary, out)
    assert len(summary["files"]) >= 3  # at least two rotations before the stop, the last part closed on it
    assert set(summary["venues"]) == {v.value for v in Venue}
    assert summary["kinds"]["ws"] > 0
    assert summary["kinds"]["snapshot"] >= 2  # the Binance books' depth snapshots
    # raw text exactly as the venue sent it: a Binance depth snapshot body with decimal strings
    snap = next(r for r in recs if r.kind == "snapshot" and r.venue == "binance_spot")
    assert snap.key == "BTCUSDT"
    assert json.loads(snap.raw)["lastUpdateId"] > 0
    assert snap.raw.startswith('{"lastUpdateId":')
    assert [r.ts_recv for r in recs] == sorted(r.ts_recv for r in recs)  # receive order


async def test_duration_venue_and_symbol_filters_record_only_what_was_asked(sim_data: Path, tmp_path: Path) -> None:
    # Arrange
    out = tmp_path / "rec"
    settings = BotSettings(klines={"backfill": 5, "resolutions": ["1m"]})

    # Act: in this process (the signal handlers are installed and removed on this loop)
    summary = await record(
        settings,
        out,
        duration=2.0,
        rotate_bytes=1 << 20,
        sim=True,
        sim_data=sim_data,
        speed=5.0,
        venues={Venue.BYBIT_LINEAR, Venue.BINANCE_USDM},
        symbols=("BTCUSDT", "SOLUSDT"),
    )

    # Assert
    assert summary["stopped_by"] == "duration"
    recs = assert_count_in_equals_count_on_disk(summary, out)
    assert set(summary["venues"]) == {"bybit_linear", "binance_usdm"}
    manifest = read_manifest(out)
    # binance_usdm has no SOLUSDT in the recording: left out; bybit_linear has both
    assert manifest["symbols"] == {"binance_usdm": ["BTCUSDT"], "bybit_linear": ["BTCUSDT", "SOLUSDT"]}
    topics = {json.loads(r.raw).get("topic", "") for r in recs if r.venue == "bybit_linear" and r.kind == "ws"}
    assert "orderbook.200.SOLUSDT" in topics
    assert not any("ETHUSDT" in t or "DOGEUSDT" in t for t in topics)
    assert {r.key for r in recs if r.kind == "klines" and r.venue == "binance_usdm"} == {"BTCUSDT:1m"}


def test_unknown_venue_bad_symbol_and_an_existing_recording_exit_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["record", "--out", str(tmp_path / "a"), "--venues", "kraken_spot"]) == 2
    assert "unknown venue(s) ['kraken_spot']" in capsys.readouterr().err
    assert main(["record", "--out", str(tmp_path / "a"), "--symbols", "BTC/USDT"]) == 2
    assert "--symbols must be like BTCUSDT" in capsys.readouterr().err
    assert main(["record", "--out", str(tmp_path / "a"), "--rotate-mb", "0"]) == 2
    assert "--rotate-mb must be > 0" in capsys.readouterr().err
    with RecordingWriter(tmp_path / "old"):
        pass
    assert main(["record", "--out", str(tmp_path / "old"), "--duration", "1"]) == 2
    assert "already holds a recording" in capsys.readouterr().err


def _bad_sim_data(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "nonexistent"
    if kind == "file":
        (tmp_path / "a.txt").write_text("not a recording\n")
        return tmp_path / "a.txt"
    d = tmp_path / kind
    d.mkdir()
    if kind == "damaged":
        (d / "manifest.json").write_text("{not json")
    return d


BAD_SIM_DATA = {
    "missing": "does not exist",
    "file": "is not a directory",
    "empty": "not a native recording (no manifest.json) nor a folder of recordings",
    "damaged": "cannot be replayed: ",
}


@pytest.mark.parametrize("kind", list(BAD_SIM_DATA))
async def test_bad_sim_data_is_a_config_error_before_the_loopback_exchange_starts(tmp_path: Path, kind: str) -> None:
    data = _bad_sim_data(tmp_path, kind)
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(ConfigError) as err:
            await start_sim(stack, BotSettings(), data, None)
    msg = str(err.value)
    assert msg.startswith(f"--sim-data {data}")
    assert BAD_SIM_DATA[kind] in msg
    assert "\n" not in msg


async def test_bad_sim_data_from_the_config_file_names_the_config_key(tmp_path: Path) -> None:
    settings = BotSettings(sim={"data": tmp_path / "gone"})
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(ConfigError, match=r"^\[sim\] data .*gone does not exist$"):
            await start_sim(stack, settings, None, None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
def test_an_unreadable_sim_data_directory_is_a_config_error(tmp_path: Path) -> None:
    d = tmp_path / "locked"
    d.mkdir()
    (d / "manifest.json").write_text("{}")
    d.chmod(0)
    try:
        with pytest.raises(ConfigError, match="--sim-data"):
            check_sim_data(d, "--sim-data")
    finally:
        d.chmod(0o755)


@pytest.mark.parametrize("command", [["run", "--paper"], ["record", "--out", "REC"]])
@pytest.mark.parametrize("kind", ["missing", "damaged"])
def test_run_and_record_with_bad_sim_data_exit_2_with_one_line(tmp_path: Path, command: list[str], kind: str) -> None:
    data = _bad_sim_data(tmp_path, kind)
    argv = [a.replace("REC", str(tmp_path / "rec")) for a in command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(  # the real command line; cwd without a config.toml: defaults
        [sys.executable, "-m", "bot", *argv, "--sim", "--sim-data", str(data), "--duration", "5"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert err[-1].startswith(f"config error: --sim-data {data}")
    assert BAD_SIM_DATA[kind] in err[-1]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "rec").exists()


def test_venue_and_symbol_selection_enables_exactly_what_is_asked() -> None:
    settings = BotSettings()
    chosen = parse_venues(["bybit_spot,binance_usdm"])
    symbols = parse_symbols(["btcusdt", "ETHUSDT"])
    assert chosen == {Venue.BYBIT_SPOT, Venue.BINANCE_USDM}
    assert symbols == ("BTCUSDT", "ETHUSDT")
    sel = select(settings, chosen, symbols)
    assert {v: c.symbols for v, c in sel.enabled_venues().items()} == {
        Venue.BYBIT_SPOT: ("BTCUSDT", "ETHUSDT"),
        Venue.BINANCE_USDM: ("BTCUSDT", "ETHUSDT"),
    }
    with pytest.raises(ConfigError, match="nothing to record"):
        select(settings, chosen, ("XRPUSDT",), available={Venue.BYBIT_SPOT: ("BTCUSDT",)})


@pytest.mark.unit
async def test_the_sink_tap_only_appends_and_the_writer_thread_writes_everything_in_order(tmp_path: Path) -> None:
    # Arrange
    writer = RecordingWriter(tmp_path / "rec", rotate_records=1000)
    sink = RecordSink(writer)
    run = asyncio.create_task(sink.run())

    # Act: 5000 records tapped in bursts while the writer task runs, one refused (a raw tab)
    for i in range(5000):
        sink.tap(Record(1_000 + i, "bybit_spot" if i % 2 else "binance_spot", "ws", "c", f'{{"n":{i}}}'))
        if i % 700 == 0:
            await asyncio.sleep(0.02)
    sink.tap(Record(9_999, "bybit_spot", "ws", "c", "a\tb"))
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await sink.close()

    # Assert
    recs = list(iter_records(tmp_path / "rec"))
    assert sink.records_in == 5001
    assert sink.refused == 1
    assert writer.records == len(recs) == 5000
    assert [r.raw for r in recs[:3]] == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert [r.ts_recv for r in recs] == list(range(1_000, 6_000))
    assert sink.per_venue == Counter({"binance_spot": 2500, "bybit_spot": 2500})
    assert sink.files == [f"part-{i:06d}.tsv.zst" for i in range(1, 6)]


@pytest.mark.unit
async def test_a_writer_that_falls_behind_stops_the_sink_without_dropping_what_was_tapped(tmp_path: Path) -> None:
    # Arrange: a tiny bound, exceeded before the writer task gets to run
    writer = RecordingWriter(tmp_path / "rec")
    sink = RecordSink(writer, max_pending=10)
    for i in range(50):
        sink.tap(Record(i, "bybit_linear", "ws", "c", f'{{"n":{i}}}'))

    # Act
    with pytest.raises(RecordingError, match="fell 50 records behind"):
        await sink.run()
    await sink.close()

    # Assert: stopping is loud, and still lossless
    assert [r.raw for r in iter_records(tmp_path / "rec")] == [f'{{"n":{i}}}' for i in range(50)]
    assert read_manifest(tmp_path / "rec")["complete"] is True
