"""Strategy configuration through ``bot.config.load_settings``: good tables build, bad ones are refused with
a message naming the key, and the shipped config.toml validates and fits the shipped checkpoints."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.config import RiskConfig, load_settings
from bot.errors import ConfigError
from bot.events import Venue
from bot.trading import strategy_problems
from strategies import build_strategies
from strategies.config import ForecasterConfig, MultiHorizonConfig, PortfolioConfig, ThresholdConfig
from strategies.multihorizon import MultiHorizonStrategy
from strategies.portfolio import PortfolioStrategy
from strategies.threshold import ThresholdStrategy

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]

THRESHOLD = """
[[strategies]]
name = "t1"
kind = "threshold"
model = "tabl_binance-spot-btcusdt_h10"
venue = "binance_spot"
symbols = ["btcusdt"]
threshold = 0.4
notional = 100
"""

GOOD = THRESHOLD + """
[[strategies]]
name = "m1"
kind = "multihorizon"
model = "multiscale_btcusdt_h60"
venue = "binance_usdm"
symbols = ["BTCUSDT"]
threshold = 0.45
min_agreement = 0.66
sizing = "kelly"
capital = 2000
kelly_fraction = 0.25
max_notional = 300
allow_short = true

[[strategies]]
name = "p1"
kind = "portfolio"
model = "crossasset_btcusdt-ethusdt-solusdt_h15"
venue = "bybit_linear"
symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
weights = "returns"
capital = 1500
max_position = 600
rebalance_bars = 15
drift_band = 0.15

[[strategies]]
name = "f1"
kind = "forecaster"
model = "lobforecast_binance-usdm-btcusdt_h5-10-15-20"
venue = "binance_usdm"
symbols = ["BTCUSDT"]
taker_fee_bps = 5.0
enabled = false
notional = 500
"""


def load(tmp_path: Path, text: str) -> object:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return load_settings(p)


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    return str(e.value)


def test_good_config_builds_the_enabled_strategies(tmp_path: Path) -> None:
    settings = load(tmp_path, GOOD)
    cfgs = settings.strategies  # type: ignore[attr-defined]
    assert [type(c) for c in cfgs] == [ThresholdConfig, MultiHorizonConfig, PortfolioConfig, ForecasterConfig]
    t = cfgs[0]
    assert (t.venue, t.symbols, t.threshold, t.notional) == (Venue.BINANCE_SPOT, ("BTCUSDT",), 0.4, Decimal(100))
    assert cfgs[1].capital == Decimal(2000)
    assert cfgs[1].kelly_fraction == 0.25
    built = build_strategies(cfgs)
    assert [type(s) for s in built] == [ThresholdStrategy, MultiHorizonStrategy, PortfolioStrategy]  # f1 disabled
    assert [s.name for s in built] == ["t1", "m1", "p1"]


def test_no_strategies_is_fine(tmp_path: Path) -> None:
    assert load(tmp_path, "[log]\nlevel = \"info\"\n").strategies == ()  # type: ignore[attr-defined]


def test_unknown_key_is_refused_naming_it(tmp_path: Path) -> None:
    msg = refused(tmp_path, THRESHOLD + "treshold = 0.5\n")
    assert "strategies.0.threshold.treshold: unknown key (typo?)" in msg


def test_bad_kind_is_refused_listing_the_kinds(tmp_path: Path) -> None:
    msg = refused(tmp_path, THRESHOLD.replace('kind = "threshold"', 'kind = "momentum"'))
    assert "strategies.0:" in msg
    assert "'momentum'" in msg
    for kind in ("threshold", "multihorizon", "portfolio", "forecaster"):
        assert kind in msg


@pytest.mark.parametrize(("value", "why"), [("1.5", "less than 1"), ("0", "greater than 0"), ("1", "less than 1"),
                                            ('"high"', "valid number")])
def test_bad_threshold_is_refused(tmp_path: Path, value: str, why: str) -> None:
    msg = refused(tmp_path, THRESHOLD.replace("threshold = 0.4", f"threshold = {value}"))
    assert "strategies.0.threshold.threshold:" in msg
    assert why in msg


def test_missing_required_field_and_bad_notional_are_named(tmp_path: Path) -> None:
    text = THRESHOLD.replace("notional = 100\n", "notional = -5\n")
    text = text.replace('model = "tabl_binance-spot-btcusdt_h10"\n', "")
    msg = refused(tmp_path, text)
    assert "strategies.0.threshold.notional: Input should be greater than 0" in msg
    assert "strategies.0.threshold.model: Field required" in msg


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    msg = refused(tmp_path, THRESHOLD + THRESHOLD)
    assert "strategies: strategy names must be unique" in msg
    assert "['t1']" in msg


def test_short_on_spot_is_refused(tmp_path: Path) -> None:
    msg = refused(tmp_path, THRESHOLD + "allow_short = true\n")
    assert "strategies.0.threshold: allow_short = true on spot venue binance_spot" in msg


def test_kind_specific_rules(tmp_path: Path) -> None:
    tables = ["[[strategies]]" + t for t in GOOD.split("[[strategies]]")[1:]]
    kelly = tables[1].replace("capital = 2000\n", "")
    assert "strategies.0.multihorizon: sizing = \"kelly\" needs capital" in refused(tmp_path, kelly)
    one = tables[2].replace('symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]', 'symbols = ["BTCUSDT"]')
    assert "strategies.0.portfolio.symbols: Tuple should have at least 2 items" in refused(tmp_path, one)
    fc = tables[3].replace("taker_fee_bps = 5.0\n", "")
    assert "strategies.0.forecaster.taker_fee_bps: Field required" in refused(tmp_path, fc)
    assert "strategies.0.threshold.venue:" in refused(tmp_path, THRESHOLD.replace("binance_spot", "kraken"))
    twice = THRESHOLD.replace('symbols = ["btcusdt"]', 'symbols = ["btcusdt", "BTCUSDT"]')
    assert "strategies.0.threshold.symbols: symbols listed twice" in refused(tmp_path, twice)


def test_the_shipped_config_validates_and_fits_the_checkpoints_and_risk_limits() -> None:
    settings = load_settings(ROOT / "config.toml")
    strategies = build_strategies(settings.strategies)
    kinds = {s.kind for s in strategies}
    assert kinds == {"threshold", "multihorizon", "portfolio", "forecaster"}
    risk = RiskConfig()
    for cfg in settings.strategies:
        ckpt = ROOT / "models" / "checkpoints" / f"{cfg.model}.pt"
        assert ckpt.is_file(), f"{cfg.name}: no checkpoint {ckpt.name}"
        assert cfg.venue in settings.enabled_venues(), cfg.name
        for sym in cfg.symbols:
            assert sym in settings.venues[cfg.venue].symbols, (cfg.name, sym)
        per_order = [v for v in (getattr(cfg, "notional", None), getattr(cfg, "max_notional", None),
                                 getattr(cfg, "max_position", None)) if v is not None]
        assert per_order, cfg.name
        assert all(Decimal(5) <= v <= risk.max_order_notional for v in per_order), cfg.name


def test_a_strategy_on_a_disabled_venue_or_an_unstreamed_symbol_is_refused(tmp_path: Path) -> None:
    off = '[venues.binance_spot]\nenabled = false\n' + THRESHOLD
    assert "strategy 't1' trades on binance_spot, which is not enabled" in refused(tmp_path, off)
    eth = '[venues.binance_spot]\nsymbols = ["ETHUSDT"]\n' + THRESHOLD
    msg = refused(tmp_path, eth)
    assert "strategy 't1' trades ['BTCUSDT'] on binance_spot, whose symbols are ['ETHUSDT']" in msg
    # a disabled strategy is not held to it
    assert load(tmp_path, off + "enabled = false\n").strategies[0].enabled is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(("balances", "why"), [
    ('{ USDT = -100 }', "starting balances must be finite and >= 0: {'USDT': '-100'}"),
    ('{ USDT = 100, FOO = 1 }', "only a USDT starting balance is supported (the ledger holds USDT), not ['FOO']"),
    ('{ USDT = "nan" }', "balances.USDT: Input should be a finite number"),
])  # fmt: skip
def test_paper_balances_are_usdt_and_not_negative(tmp_path: Path, balances: str, why: str) -> None:
    msg = refused(tmp_path, f"[paper.venues.binance_spot]\nbalances = {balances}\n")
    assert "paper.venues" in msg
    assert why in msg


# -- strategies against the loaded models (bot.trading.strategy_problems) ----------------------------------


def _worker(name: str, family: str, targets: list[tuple[Venue, tuple[str, ...]]], horizon: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, family=family, head=SimpleNamespace(horizon=horizon),
                           targets=[SimpleNamespace(venue=v, symbol=s[0], symbols=s) for v, s in targets])  # fmt: skip


def _workers(*ws: SimpleNamespace, failed: dict[str, str] | None = None) -> Any:
    return SimpleNamespace(workers=list(ws), failed=failed or {}, directory=Path("/ck"))


TABL = _worker("tabl_binance-spot-btcusdt_h10", "tabl", [(Venue.BINANCE_SPOT, ("BTCUSDT",))], "10s")


def test_a_strategy_fitting_its_loaded_model_has_no_problem(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, THRESHOLD))
    assert strategy_problems(settings.strategies, _workers(TABL)) == []


def test_each_way_a_strategy_cannot_use_its_model_is_named(tmp_path: Path) -> None:
    cfgs = load_settings(_write(tmp_path, THRESHOLD)).strategies
    who = "strategy 't1' (kind threshold, model 'tabl_binance-spot-btcusdt_h10')"
    other = _worker("multiscale_btcusdt_h60", "multiscale", [(Venue.BINANCE_SPOT, ("BTCUSDT",))], "1h")
    assert strategy_problems(cfgs, _workers(other)) == [
        f"{who}: no such checkpoint in /ck (loaded: multiscale_btcusdt_h60)"]
    assert strategy_problems(cfgs, _workers(), models_enabled=False) == [
        f"{who}: models are disabled ([models] enabled = false)"]
    damaged = _workers(failed={"tabl_binance-spot-btcusdt_h10.pt": "/ck/tabl.pt is not a readable checkpoint"})
    assert strategy_problems(cfgs, damaged) == [
        f"{who}: its checkpoint did not load: /ck/tabl.pt is not a readable checkpoint"]
    wrong_family = _worker(TABL.name, "lobforecast", TABL_TARGETS, "5s,10s")
    assert strategy_problems(cfgs, _workers(wrong_family)) == [
        f"{who}: a threshold strategy reads tabl models, not lobforecast"]
    elsewhere = _worker(TABL.name, "tabl", [(Venue.BYBIT_SPOT, ("BTCUSDT",))], "10s")
    assert strategy_problems(cfgs, _workers(elsewhere), sim=True) == [
        f"{who}: the model does not predict binance_spot ['BTCUSDT']; it serves bybit_spot/BTCUSDT "
        "(models.serve_on adds venues for a family; under --sim only what the recording holds is configured)"]
    far = load_settings(_write(tmp_path, THRESHOLD + "horizon_index = 1\n")).strategies
    assert strategy_problems(far, _workers(TABL)) == [
        f"{who}: horizon_index = 1, but the model has 1 horizon(s) (10s; the index counts from 0)"]
    off = load_settings(_write(tmp_path, THRESHOLD + "enabled = false\n")).strategies
    assert strategy_problems(off, _workers()) == []  # a disabled strategy needs nothing


TABL_TARGETS = [(Venue.BINANCE_SPOT, ("BTCUSDT",))]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p
