"""bot.execution.venues: keys from the environment only, endpoints per venue, nothing left pointing at a venue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.config import LiveConfig
from bot.events import Venue
from bot.execution.venues import build_exchange, credentials, missing_credentials

pytestmark = pytest.mark.unit


def _urls(d: Any) -> list[str]:
    if isinstance(d, dict):
        return [u for v in d.values() for u in _urls(v)]
    return [d] if isinstance(d, str) and "://" in d else []


def test_a_venue_pair_wins_over_the_exchange_pair_and_half_a_pair_is_none() -> None:
    env = {"BOT_BINANCE_API_KEY": "k", "BOT_BINANCE_API_SECRET": "s", "BOT_BINANCE_USDM_API_KEY": "uk",
           "BOT_BINANCE_USDM_API_SECRET": "us", "BOT_BYBIT_API_KEY": "only-a-key"}  # fmt: skip
    assert credentials(Venue.BINANCE_SPOT, env) == ("k", "s")
    assert credentials(Venue.BINANCE_USDM, env) == ("uk", "us")
    assert credentials(Venue.BYBIT_LINEAR, env) is None


def test_missing_keys_name_the_variables_to_set() -> None:
    msg = missing_credentials([Venue.BYBIT_SPOT, Venue.BINANCE_SPOT], {"BOT_BINANCE_API_KEY": "k",
                                                                       "BOT_BINANCE_API_SECRET": "s"})  # fmt: skip
    assert msg is not None
    assert "BOT_BYBIT_SPOT_API_KEY" in msg
    assert "BOT_BYBIT_API_SECRET" in msg
    assert "binance" not in msg


@pytest.mark.parametrize("venue", list(Venue))
def test_under_the_sim_every_root_points_at_it(venue: Venue) -> None:
    ex = build_exchange(venue, "k", "s", LiveConfig(), root="http://127.0.0.1:9")
    urls = _urls(ex.urls["api"])
    assert urls
    assert all(u.startswith(("http://127.0.0.1:9", "ws://127.0.0.1:9")) for u in urls), urls
    assert not _urls(ex.urls.get("test", {}))


@pytest.mark.parametrize("venue", [v for v in Venue if v is not Venue.BINANCE_USDM])
def test_the_default_endpoint_is_the_testnet(venue: Venue) -> None:
    ex = build_exchange(venue, "k", "s", LiveConfig())
    urls = " ".join(_urls(ex.urls["api"]))
    assert "testnet" in urls
    assert ex.options["recvWindow"] == 5000


def test_usdm_defaults_to_demo_trading_and_refuses_the_retired_testnet() -> None:
    ex = build_exchange(Venue.BINANCE_USDM, "k", "s", LiveConfig())
    assert "demo-fapi" in " ".join(_urls(ex.urls["api"]))
    with pytest.raises(ValueError, match="demo"):
        LiveConfig.model_validate({"venues": {"binance_usdm": {"endpoint": "testnet"}}})


def test_mainnet_is_the_venue_itself() -> None:
    cfg = LiveConfig.model_validate({"venues": {"bybit_linear": {"endpoint": "mainnet"}}})
    ex = build_exchange(Venue.BYBIT_LINEAR, "k", "s", cfg)
    assert "testnet" not in " ".join(_urls(ex.urls["api"]))
    assert cfg.venues[Venue.BINANCE_SPOT].endpoint == "testnet"  # a partial table keeps the others' defaults


def test_live_keeps_its_own_database_and_a_sim_session_starts_afresh(tmp_path: Path) -> None:
    from bot.config import load_settings
    from bot.live_session import live_settings
    from bot.state_lock import live_db

    assert live_db(tmp_path / "state.sqlite") == tmp_path / "live.sqlite"
    assert live_db(tmp_path / "mine.sqlite", sim=True) == tmp_path / "mine.sqlite"
    cfg = tmp_path / "config.toml"
    cfg.write_text("")
    s = load_settings(cfg)
    old = tmp_path / "out" / "live-sim.sqlite"
    old.parent.mkdir()
    old.write_text("last run")
    live = live_settings(s, sim=True)
    assert live.state.db == old
    assert live.signal_log.db == old  # it shared paper's file, so it follows
    assert not old.exists()
    assert (tmp_path / "out" / "live-sim.prev.sqlite").read_text() == "last run"
    assert live_settings(s, sim=False).state.db == tmp_path / "out" / "live.sqlite"
