"""Configuration: defaults are the real venues, overrides by file and env, typos fail clearly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

from bot.bus import EventBus
from bot.config import load_settings
from bot.errors import ConfigError
from bot.events import Signal, Venue
from bot.signal_log import SignalLog
from bot.signals_cli import main as signals_main
from bot.state import StateStore

pytestmark = pytest.mark.unit


def test_defaults_point_at_the_real_venues_when_no_config_file_is_given(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.venues[Venue.BINANCE_SPOT].ws_url == "wss://stream.binance.com:9443"
    assert s.venues[Venue.BINANCE_USDM].rest_url == "https://fapi.binance.com"
    assert s.venues[Venue.BYBIT_LINEAR].ws_url == "wss://stream.bybit.com/v5/public/linear"
    assert s.venues[Venue.BYBIT_SPOT].rest_url == "https://api.bybit.com"


def test_partial_venue_table_overrides_only_the_keys_it_names(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[venues.binance_spot]\nsymbols = ["ethusdt"]\n[book]\nstale_after_s = 3\n')
    s = load_settings(cfg)
    assert s.venues[Venue.BINANCE_SPOT].symbols == ("ETHUSDT",)
    assert s.venues[Venue.BINANCE_SPOT].ws_url == "wss://stream.binance.com:9443"
    assert s.book.stale_after_s == 3.0


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[book]\nstale_after_s = 3\n")
    monkeypatch.setenv("BOT_BOOK__STALE_AFTER_S", "7.5")
    monkeypatch.setenv("BOT_VENUES__BYBIT_SPOT__ENABLED", "false")
    s = load_settings(cfg)
    assert s.book.stale_after_s == 7.5
    assert s.venues[Venue.BYBIT_SPOT].enabled is False
    assert Venue.BYBIT_SPOT not in s.enabled_venues()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[book]\nstale_after_z = 3\n", "book.stale_after_z: unknown key"),
        ("[venues.kraken]\nenabled = true\n", "unknown venue 'kraken'"),
        ("[venues.bybit_spot]\nsymbolz = []\n", "unknown key"),
        ("[klines]\nresolutions = ['7m']\n", "unknown resolution"),
        ("[venues.binance_spot]\nsymbols = ['BTC/USDT']\n", "no separators"),
        ("[book\n", "cannot read configuration"),
    ],
)
def test_bad_config_is_a_clear_config_error_naming_the_key(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert needle in str(err.value)
    assert "Traceback" not in str(err.value)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_settings_are_frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    with pytest.raises(Exception, match="frozen"):
        s.book.stale_after_s = 1  # type: ignore[misc]


def test_api_keys_are_refused_in_the_config_file(tmp_path: Path) -> None:
    # keys come only from the environment (bot.execution.venues.credentials), never from a file
    cfg = tmp_path / "config.toml"
    cfg.write_text('[venues.bybit_linear]\napi_key = "abc"\n')
    with pytest.raises(ConfigError, match="api_key"):
        load_settings(cfg)


def test_repository_config_toml_is_valid() -> None:
    s = load_settings(Path(__file__).resolve().parents[2] / "config.toml")
    assert s.venues[Venue.BINANCE_USDM].symbols == ("BTCUSDT", "ETHUSDT")


# -- per-venue depth and snapshot limit ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('[venues.binance_spot]\ndepth = "banana"\n',
         ["binance_spot.depth 'banana'", "depth@100ms", "depth@1000ms"]),
        ('[venues.binance_spot]\ndepth = "-5"\n', ["binance_spot.depth '-5'"]),
        ('[venues.bybit_spot]\ndepth = "-5"\n', ["bybit_spot.depth '-5'", "use one of 1, 50, 200, 1000)"]),
        ('[venues.bybit_spot]\ndepth = "500"\n', ["bybit_spot.depth '500'"]),  # linear only
        ('[venues.binance_usdm]\ndepth = "depth@1000ms"\n', ["binance_usdm.depth 'depth@1000ms'"]),  # spot only
        ('[venues.binance_usdm]\ndepth = "depth@250ms"\n', ["binance_usdm.depth 'depth@250ms'"]),  # is "depth"
        ("[venues.binance_usdm]\nsnapshot_limit = 5000\n",
         ["binance_usdm.snapshot_limit 5000", "use 5, 10, 20, 50, 100, 500, 1000)"]),
        ("[venues.binance_usdm]\nsnapshot_limit = 999\n", ["binance_usdm.snapshot_limit 999"]),
        ("[venues.bybit_linear]\nsnapshot_limit = 200\n", ["bybit_linear.snapshot_limit is not used"]),
    ],
)
def test_a_depth_or_snapshot_limit_the_venue_does_not_serve_names_venue_value_and_choices(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    for needle in needles:
        assert needle in str(err.value)
    assert "Value error" not in str(err.value)


def test_every_bad_venue_is_reported_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[venues.bybit_spot]\ndepth = "7"\n[venues.binance_spot]\ndepth = "depth@7ms"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert "bybit_spot.depth '7'" in str(err.value)
    assert "binance_spot.depth 'depth@7ms'" in str(err.value)


def test_a_bad_depth_from_the_environment_is_refused_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_VENUES__BYBIT_LINEAR__DEPTH", "banana")
    with pytest.raises(ConfigError, match=r"bybit_linear\.depth 'banana'"):
        load_settings()


@pytest.mark.parametrize(
    ("venue", "depth"),
    [
        (Venue.BYBIT_SPOT, "1"), (Venue.BYBIT_SPOT, "1000"), (Venue.BYBIT_LINEAR, "500"),
        (Venue.BYBIT_LINEAR, "50"), (Venue.BINANCE_SPOT, "depth"), (Venue.BINANCE_SPOT, "depth@1000ms"),
        (Venue.BINANCE_SPOT, "depth5@100ms"), (Venue.BINANCE_USDM, "depth@0ms"), (Venue.BINANCE_USDM, "depth@500ms"),
        (Venue.BINANCE_USDM, "depth20"),
    ],
)  # fmt: skip
def test_the_depths_the_venues_serve_are_accepted(tmp_path: Path, venue: Venue, depth: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[venues.{venue.value}]\ndepth = "{depth}"\n')
    assert load_settings(cfg).venues[venue].depth == depth


def test_an_unquoted_bybit_depth_is_read_as_its_text(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[venues.bybit_linear]\ndepth = 50\n[venues.binance_spot]\nsnapshot_limit = 4321\n")
    s = load_settings(cfg)
    assert s.venues[Venue.BYBIT_LINEAR].depth == "50"
    assert s.venues[Venue.BINANCE_SPOT].snapshot_limit == 4321  # spot takes any limit up to 5000


# -- relative paths ----------------------------------------------------------------------------------------


def _path_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "config.toml"
    cfg.write_text(
        '[signal_log]\njsonl_dir = "logs/jsonl"\n[sim]\ndata = "../data/rec"\n'
        '[state]\ndb = "state/bot.sqlite"\n[models]\ndir = "ckpt"\n'
    )
    return cfg


def test_relative_paths_in_the_config_file_resolve_from_its_folder_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _path_config(tmp_path / "etc" / "bot")
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    seen = []
    for cwd in (tmp_path, elsewhere, cfg.parent):
        monkeypatch.chdir(cwd)
        s = load_settings(cfg)
        seen.append((s.signal_log.jsonl_dir, s.sim.data, s.state.db, s.models.dir, s.signal_log.db))
    folder = (tmp_path / "etc" / "bot").resolve()
    assert seen[0] == (
        folder / "logs/jsonl",
        folder / "../data/rec",
        folder / "state/bot.sqlite",
        folder / "ckpt",
        folder / "out/state.sqlite",  # a default, with a config file in use: from its folder too
    )
    assert seen[1] == seen[0]
    assert seen[2] == seen[0]


def test_relative_paths_given_by_a_relative_config_path_resolve_from_that_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _path_config(tmp_path / "conf")
    monkeypatch.chdir(tmp_path)
    s = load_settings(Path("conf/config.toml"))
    assert s.state.db == tmp_path.resolve() / "conf" / "state/bot.sqlite"


def test_absolute_and_home_paths_in_the_config_file_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[signal_log]\ndb = "{tmp_path / "abs.sqlite"}"\njsonl_dir = "~/signals"\n')
    s = load_settings(cfg)
    assert s.signal_log.db == tmp_path / "abs.sqlite"
    assert s.signal_log.jsonl_dir == tmp_path / "home" / "signals"


def test_without_a_config_file_relative_paths_resolve_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    here = tmp_path.resolve()
    assert s.signal_log.db == here / "out" / "state.sqlite"
    assert s.signal_log.jsonl_dir == here / "out" / "signals"
    assert s.state.db == here / "out" / "state.sqlite"
    assert s.sim.data is None
    assert s.models.dir == Path("models/checkpoints")  # its default is left as it is (shipped checkpoints)


def test_a_relative_path_from_the_environment_resolves_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _path_config(tmp_path / "conf")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)
    monkeypatch.setenv("BOT_STATE__DB", "mine.sqlite")
    s = load_settings(cfg)
    assert s.state.db == run_dir.resolve() / "mine.sqlite"
    assert s.signal_log.jsonl_dir == (tmp_path / "conf").resolve() / "logs/jsonl"  # the file's, still


def test_the_signal_log_shares_the_state_database_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.signal_log.db == s.state.db
    assert s.signal_log.jsonl_dir.name == "signals"


def test_a_bad_path_value_is_still_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[state]\ndb = 5\n")
    with pytest.raises(ConfigError, match=r"state\.db"):
        load_settings(cfg)


async def test_the_bot_and_the_signals_command_use_one_state_database_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: a config file in etc/; the bot runs from a/, the state store has made its tables
    etc, run_dir, other = tmp_path / "etc", tmp_path / "a", tmp_path / "b"
    for d in (etc, run_dir, other):
        d.mkdir()
    cfg = etc / "config.toml"
    cfg.write_text('[log]\nlevel = "warning"\n')
    monkeypatch.chdir(run_dir)
    settings = load_settings(cfg)
    db = etc.resolve() / "out" / "state.sqlite"
    assert settings.signal_log.db == settings.state.db == db
    failures: list[Exception] = []
    store = StateStore(settings.state, on_failure=failures.append)
    await store.open()  # the state tables, and the state store's connection stays open beside the signal log's
    with sqlite3.connect(db) as conn:
        state_tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    signal = Signal(
        ts_event=1_763_769_600_000_000_000, ts_recv=1_763_769_600_005_000_000, model="tabl-btc", family="tabl",
        version="0123456789ab", code_version="abc1234", venue=Venue.BYBIT_LINEAR, symbol="BTCUSDT",
        horizon="10s", classes=("down", "stationary", "up"), probabilities=(0.125, 0.25, 0.625), confidence=0.625,
        attention="t-0 0.50", inference_start_ns=1_763_769_600_002_000_000, inference_end_ns=1_763_769_600_004_000_000,
    )  # fmt: skip
    bus = EventBus()
    slog = SignalLog.from_config(settings.signal_log)
    slog.attach(bus)
    writer = asyncio.create_task(slog.run())
    bus.publish(signal)
    await slog.wait_idle()
    writer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writer
    await store.close()
    assert failures == []
    capsys.readouterr()  # the signal log's own log lines

    # Act: the signals command from another folder, with the same config
    monkeypatch.chdir(other)
    code = signals_main(["--config", str(cfg), "--json"])

    # Assert: the signal comes back; the signal log added its one table beside the state tables, in WAL mode
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["model"], r["symbol"], r["ts_recv"]) for r in rows] == [("tabl-btc", "BTCUSDT", signal.ts_recv)]
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert "orders" in state_tables
    assert tables == state_tables | {"signals"}
    assert [p.name for p in (etc / "out" / "signals").iterdir()] == ["signals-2025-11-22.jsonl"]
    assert not (run_dir / "out").exists()
    assert not (other / "out").exists()


async def test_the_signals_command_on_a_state_database_without_signals_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    store = StateStore(load_settings().state, on_failure=lambda e: None)
    await store.open()
    await store.close()
    assert signals_main([]) == 2
    err = capsys.readouterr().err
    assert "state.sqlite is not a signal database yet: no signal has been logged there" in err
    assert len(err.strip().splitlines()) == 1
