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
