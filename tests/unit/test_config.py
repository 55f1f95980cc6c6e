"""Configuration: defaults are the real venues, overrides by file and env, typos fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import ConfigError
from bot.events import Venue

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


def test_api_secrets_come_from_the_environment_and_never_print(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_VENUES__BYBIT_LINEAR__API_SECRET", "s3cr3t-value")
    s = load_settings()
    secret = s.venues[Venue.BYBIT_LINEAR].api_secret
    assert secret is not None
    assert secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(s)
    assert "s3cr3t-value" not in str(s.model_dump())


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
