"""models.datasets on real data: loaders, time splits with purging, statistics from the training span only,
and labels checked by hand against the source files' own numbers."""

from __future__ import annotations

import csv
import math
import os
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import torch

from bot.config import BotSettings
from bot.demo import RECORDING
from bot.events import Venue
from bot.export import export_books
from bot.importers import import_hftbacktest, slice_records
from bot.klines import load_kline_csv
from bot.recording_writer import RecordingWriter
from models.datasets import (
    PURGED,
    STD_REL_FLOOR,
    TEST,
    TRAIN,
    VAL,
    DatasetError,
    KlineData,
    LobData,
    build_samples,
    classify,
    collect,
    load_books_csv,
    load_data,
    load_klines,
    split_by_time,
)
from models.inputs import ArrayWindowSource, build_input, input_names
from models.train import MODEL_CLASSES, Job, TrainConfig, fit, make_spec, model_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SPOT = ("hftbacktest/examples/spot/btcusdt_20240808.gz", "hftbacktest/examples/spot/btcusdt_20240809.gz")
KLINES = "benicio1007_bot_trading/f802e27/data"
SMALL_FEATURES = {"return_lags": [1, 3], "vol_window": 5, "volume_window": 5, "ma_windows": [5, 10], "rsi_period": 5}


@pytest.fixture(scope="module")
def shared() -> Path:
    root = Path(os.environ.get("BOT_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not (root / "SOURCES.md").is_file():
        pytest.skip(f"shared data not found at {root} (set BOT_SHARED_DATA)")
    return root


@pytest.fixture(scope="module")
def spot_csv(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 200 s of the real Binance spot recording, through `python -m bot books`' code."""
    tmp = tmp_path_factory.mktemp("spot")
    with RecordingWriter(tmp / "rec") as w:
        for r in slice_records(import_hftbacktest([shared / f for f in SPOT]), 200):
            w.write(r)
    out = tmp / "spot.csv"
    export_books(tmp / "rec", out, levels=10, interval_ms=1000, settings=BotSettings(), symbols=["BTCUSDT"])
    return out


@pytest.fixture(scope="module")
def demo_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded demo recording (real Binance spot BTCUSDT, 2024-08-08 23:54 .. 00:00 UTC) as
    `python -m bot books bot/demo/recording --levels 10 --interval-ms 1000` writes it (that book only)."""
    out = tmp_path_factory.mktemp("demo") / "fine.csv"
    export_books(RECORDING, out, levels=10, interval_ms=1000, settings=BotSettings(), venues=["binance_spot"],
                 symbols=["BTCUSDT"])
    return out


@pytest.fixture(scope="module")
def kline_dir(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("k")
    for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        lines = (shared / KLINES / f"{s}_1m.csv").read_text().splitlines(keepends=True)
        (d / f"{s}_1m.csv").write_text("".join(lines[:601]))
    return d


def tabl_job(horizon: int = 5) -> Job:
    return Job(family="tabl", data=(), out=Path("x.pt"), target="binance_spot:BTCUSDT", horizon=(horizon,),
               input_args={"window": 10})


def multiscale_job(horizon: int = 4) -> Job:
    return Job(family="multiscale", data=(), out=Path("x.pt"), target="BTCUSDT", horizon=(horizon,),
               input_args={"scales": ["1m", "5m"], "windows": [12, 6], "return_horizons": [2, 4],
                           "features": SMALL_FEATURES})


# -- loaders -----------------------------------------------------------------------------------------


def test_books_csv_loads_every_row_with_its_exact_values_and_grid(spot_csv: Path) -> None:
    data = load_books_csv([spot_csv])
    with spot_csv.open() as fh:
        rows = list(csv.reader(fh))[1:]

    times, values = data.books[("binance_spot", "BTCUSDT")]

    assert data.interval_ms == 1000
    assert data.levels == 10
    assert len(times) == len(rows)
    assert times[0] == int(rows[0][0]) * 1_000_000
    assert values[0, 0] == float(rows[0][3])
    assert values[-1, -1] == float(rows[-1][-1])
    assert np.all(np.diff(times) == 1_000_000_000)


def test_resampled_5m_bars_equal_the_venues_own_5m_file(shared: Path) -> None:
    # Arrange: the real 1m file, and the real 5m file of the same venue (Binance aggregates them itself)
    data = load_klines([shared / KLINES / "BTCUSDT_1m.csv"], "binance_spot")
    venue_5m = load_kline_csv(shared / KLINES / "BTCUSDT_5m.csv", venue=Venue.BINANCE_SPOT)

    # Act
    opens, ohlcv = data.arrays("BTCUSDT", 300)

    # Assert: every 5m bar the 1m data covers, bit for bit
    assert len(opens) == 40000 // 5
    ref = venue_5m[: len(opens)]
    assert opens.tolist() == [k.open_time_ms for k in ref]
    assert ohlcv.tolist() == [[k.open, k.high, k.low, k.close, k.volume] for k in ref]


def test_loaders_refuse_bad_input_with_a_clear_message(tmp_path: Path, kline_dir: Path, spot_csv: Path) -> None:
    not_books = tmp_path / "x.csv"
    not_books.write_text("ts_ms,venue,symbol,foo\n1,binance_spot,BTCUSDT,2\n")

    with pytest.raises(DatasetError, match="not a `python -m bot books` CSV"):
        load_books_csv([not_books])
    with pytest.raises(DatasetError, match="pass --venue"):
        load_data([str(kline_dir)])
    with pytest.raises(DatasetError, match="mixes books CSVs and kline files"):
        load_data([str(spot_csv), f"binance_spot={kline_dir}"])
    with pytest.raises(DatasetError, match="not found"):
        load_data([str(tmp_path / "missing.csv")])
    assert isinstance(load_data([f"binance_spot={kline_dir}"]), KlineData)
    # VENUE=PATH wins over the fallback venue (evaluate passes the checkpoint's venue as the fallback)
    data = load_data([f"bybit_linear={kline_dir}"], venue="binance_spot")
    assert isinstance(data, KlineData)
    assert data.venue == "bybit_linear"


# -- splits and statistics ---------------------------------------------------------------------------


def test_splits_are_in_time_order_and_no_training_label_reads_the_validation_span(spot_csv: Path) -> None:
    data = load_books_csv([spot_csv])
    spec, target = make_spec(tabl_job(horizon=5), data)

    c = collect(spec, data, target=target)
    split = split_by_time(c, (0.6, 0.2, 0.2))

    t = c.times_ns
    assert t[split == TRAIN].max() < t[split == VAL].min() < t[split == VAL].max() < t[split == TEST].min()
    assert c.label_end_ns[split == TRAIN].max() <= t[split == VAL].min()
    assert c.label_end_ns[split == VAL].max() <= t[split == TEST].min()
    # exactly the 5 samples before each boundary are purged (5-step horizon on a gapless 1 s grid)
    assert (split == PURGED).sum() == 2 * 5


@pytest.mark.parametrize("family", ["tabl", "multiscale"])
def test_statistics_and_thresholds_come_from_the_training_span_only(
    family: str, spot_csv: Path, kline_dir: Path
) -> None:
    # Arrange
    if family == "tabl":
        data: LobData | KlineData = load_books_csv([spot_csv])
        job = tabl_job()
    else:
        data = load_klines([kline_dir], "binance_spot")
        job = multiscale_job()
    spec, target = make_spec(job, data)
    base = build_samples(spec, data, target=target)
    val_start = int(base.times_ns[base.split == VAL].min())

    # Act: wreck everything from the first validation sample on and rebuild from scratch
    if isinstance(data, LobData):
        books = {k: (t, np.where((t >= val_start)[:, None], r * 1.5, r)) for k, (t, r) in data.books.items()}
        wrecked: LobData | KlineData = LobData(data.interval_ms, data.levels, books, data.sources)
    else:
        import msgspec

        bars = {s: [b if b.ts_event < val_start else msgspec.structs.replace(
            b, open=b.open * 2, high=b.high * 2, low=b.low * 2, close=b.close * 2, volume=b.volume * 9)
            for b in series] for s, series in data.bars.items()}  # fmt: skip
        wrecked = KlineData(data.venue, data.base_interval_s, bars, data.sources)
    again = build_samples(spec, wrecked, target=target)

    # Assert
    assert again.spec["norm"] == base.spec["norm"]
    assert again.spec["labels"] == base.spec["labels"]
    train = base.split == TRAIN
    assert np.array_equal(again.split, base.split)
    xs = [(base.x, again.x)] if not isinstance(base.x, dict) else [(base.x[k], again.x[k]) for k in base.x]
    for a, b in xs:
        assert bool((a[train] == b[train]).all())


def test_normalised_training_features_have_zero_mean_and_unit_std(spot_csv: Path) -> None:
    data = load_books_csv([spot_csv])
    spec, target = make_spec(tabl_job(), data)

    s = build_samples(spec, data, target=target)

    x = s.x[s.split == TRAIN].double()  # (N, D, T)
    assert isinstance(x, type(s.x))
    flat = x.transpose(1, 2).reshape(-1, x.shape[1])
    # the spread is one tick all through this training span: its scale is floored at a tenth of its mean (bps),
    # so it is centred but not stretched to unit std; every other feature varies and gets mean 0, std 1
    spread = input_names(s.spec).index("spread")
    assert s.spec["norm"]["std"][spread] == pytest.approx(STD_REL_FLOOR * s.spec["norm"]["mean"][spread], rel=1e-12)
    assert 0 < flat[:, spread].std(unbiased=False) < 0.01
    varying = (flat.std(dim=0) > 0) & (torch.arange(flat.shape[1]) != spread)
    assert flat.mean(dim=0).abs().max() < 1e-4
    assert (flat.std(dim=0, unbiased=False)[varying] - 1).abs().max() < 1e-3


def test_a_spread_far_wider_than_the_one_tick_training_span_reaches_the_model_bounded_in_training_and_serving(
    demo_csv: Path,
) -> None:
    # Arrange: the demo's Binance spot book quotes a one-tick spread (0.01 USDT) in every row the training
    # windows read, and a 21-tick and a 180-tick spread (0.21 USDT at 23:58:53, 1.80 USDT at 23:59:24,
    # receive time) in the test span
    data = load_books_csv([demo_csv])
    spec, target = make_spec(Job(family="tabl", data=(), out=Path("x.pt"), target="binance_spot:BTCUSDT",
                                 horizon=(10,)), data)  # the defaults of `python -m bot train --family tabl`
    times, rows = data.books[("binance_spot", "BTCUSDT")]
    ticks = np.round((rows[:, 20] - rows[:, 0]) / 0.01).astype(int)  # ask_px_1 - bid_px_1

    # Act
    s = build_samples(spec, data, target=target)

    # Assert: the data is what the bug needs
    val_end = s.times_ns[s.split == VAL].max()
    assert set(ticks[times <= val_end]) == {1}  # training and validation spans
    assert sorted(ticks[ticks > 1]) == [21, 180]
    # the scale of the spread is a tenth of its mean (0.0016 bps), not its std (1.2e-6 bps: the 180 ticks
    # would be z = 245,000)
    norm = s.spec["norm"]
    spread = input_names(s.spec).index("spread")
    assert norm["mean"][spread] == pytest.approx(0.01 / 61_800 * 1e4, rel=1e-3)  # one tick at ~61,800 USDT
    assert norm["std"][spread] == pytest.approx(STD_REL_FLOOR * norm["mean"][spread], rel=1e-12)
    assert norm["clip"] == 10.0
    # every normalised value of every span lies within the bound; the wide spread sits on it
    x = s.x
    assert isinstance(x, torch.Tensor)
    assert float(x.abs().max()) <= 10.0
    test = s.split == TEST
    assert float(x[test][:, spread].max()) == 10.0
    # serving gives the same bits as training for the samples whose window holds a wide book
    wide = np.flatnonzero(test & (x[:, spread].amax(dim=-1) == 10.0).numpy())
    assert len(wide) == 20  # a 10-step window sees each of the two rows 10 times
    src = ArrayWindowSource(lob={("binance_spot", "BTCUSDT", "fine"): (times, rows)})
    for i in wide:
        served = build_input(s.spec, src.at(int(s.times_ns[i])), venue="binance_spot", symbol="BTCUSDT")
        assert isinstance(served, torch.Tensor)
        assert torch.equal(served, x[i : i + 1])
    # and the symptom is gone: a briefly trained TABL's cross-entropy on the span with the wide books (the
    # test span here, in the validation role) is near ln 3, not ~1,300
    torch.manual_seed(0)
    job = Job(family="tabl", data=(), out=Path("x.pt"))
    model = MODEL_CLASSES["tabl"](model_config(job, s.spec))
    result = fit("tabl", model, s.part(TRAIN), s.part(TEST), TrainConfig(epochs=2, device="cpu"))
    assert all(row["val_loss"] < 2.0 for row in result.history)


# -- labels, by hand ---------------------------------------------------------------------------------


def test_tabl_label_is_the_thresholded_mid_return_computed_from_the_csv_text(spot_csv: Path) -> None:
    # Arrange
    data = load_books_csv([spot_csv])
    spec, target = make_spec(tabl_job(horizon=5), data)
    s = build_samples(spec, data, target=target)
    with spot_csv.open() as fh:
        rows = {int(r[0]): r for r in list(csv.reader(fh))[1:]}

    # Act / Assert: for a handful of samples, recompute from the venue's decimal strings
    th = s.spec["labels"]["thresholds"][0]
    for i in (0, 17, len(s) // 2, len(s) - 1):
        t_ms = int(s.times_ns[i] // 1_000_000)
        now, later = rows[t_ms], rows[t_ms + 5000]
        mid_now = (Decimal(now[3]) + Decimal(now[23])) / 2  # bid_px_1, ask_px_1
        mid_later = (Decimal(later[3]) + Decimal(later[23])) / 2
        r = float(mid_later / mid_now - 1)
        expected = 2 if r > th else 0 if r < -th else 1
        assert s.y["ret"][i, 0].item() == pytest.approx(r, abs=1e-15)
        assert s.y["direction"][i, 0].item() == expected


def test_kline_label_is_the_log_close_return_h_bars_later_from_the_file(kline_dir: Path) -> None:
    data = load_klines([kline_dir], "binance_spot")
    spec, target = make_spec(multiscale_job(horizon=4), data)
    s = build_samples(spec, data, target=target)
    with (kline_dir / "BTCUSDT_1m.csv").open() as fh:
        closes = [float(r["close"]) for r in csv.DictReader(fh)]

    i = 0  # the first sample: its newest 1m bar is the one that closed at the sample time
    bar = int((s.times_ns[i] // 1_000_000 - 60_000 - 1672531200000) // 60_000)  # index from 2023-01-01 00:00
    # needs the 5m window (6 bars + 9 warm-up = 75 minutes) to be full: the first sample closes at 01:15
    assert bar == 74
    exact = pytest.approx  # numpy's and libm's log may differ in the last bit
    assert s.y["ret"][i].tolist() == exact([math.log(closes[bar + 2] / closes[bar]),
                                            math.log(closes[bar + 4] / closes[bar])], rel=1e-14)
    assert s.y["ret_dir"][i].item() == exact(math.log(closes[bar + 4] / closes[bar]), rel=1e-14)
    assert s.past["ret"][i, 0] == exact(math.log(closes[bar] / closes[bar - 2]), rel=1e-14)


def test_classify_uses_strict_thresholds_and_marks_unknown_returns() -> None:
    r = np.array([-0.002, -0.001, 0.0, 0.001, 0.002, np.nan])

    assert classify(r, 0.001).tolist() == [0, 1, 1, 1, 2, -1]
    assert classify(r, 0.0).tolist() == [0, 0, 1, 2, 2, -1]
