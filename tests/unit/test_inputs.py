"""models.inputs: the model input at serve time equals the training sample bit for bit, and sees no future.

Data: the real Binance recordings (replayed through ``bot.export`` into a books CSV, as ``python -m bot
books`` does) and the real Binance 1m klines. The "serve" side is built like the live bot: book rows
appended one by one into ``bot.ring.Ring``s, 1m bars fed one by one into ``KlineStore`` and ``Resampler``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import torch

from bot.config import BotSettings
from bot.events import Venue
from bot.export import export_books
from bot.importers import import_hftbacktest, slice_records
from bot.klines import KlineStore, Resampler
from bot.recording_writer import RecordingWriter
from bot.ring import Ring
from models.datasets import KlineData, LobData, build_samples, collect, finalize, load_books_csv, load_klines
from models.inputs import (
    ArrayWindowSource,
    build_input,
    decode_output,
    input_names,
    raw_input,
    required_history,
)
from models.train import MODEL_CLASSES, Job, make_spec, model_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SPOT = ("hftbacktest/examples/spot/btcusdt_20240808.gz", "hftbacktest/examples/spot/btcusdt_20240809.gz")
USDM = ("hftbacktest/examples/usdm/btcusdt_20240808.gz",)
KLINES = "benicio1007_bot_trading/f802e27/data"
SMALL_FEATURES = {"return_lags": [1, 3], "vol_window": 5, "volume_window": 5, "ma_windows": [5, 10], "rsi_period": 5}


@pytest.fixture(scope="module")
def shared() -> Path:
    root = Path(os.environ.get("BOT_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not (root / "SOURCES.md").is_file():
        pytest.skip(f"shared data not found at {root} (set BOT_SHARED_DATA)")
    return root


def export_slice(shared: Path, tmp: Path, files: tuple[str, ...], seconds: float, name: str, levels: int = 10) -> Path:
    """The first ``seconds`` of a real recording through `python -m bot books`' code: a books CSV."""
    rec = tmp / f"rec_{name}_{levels}"
    with RecordingWriter(rec) as w:
        for r in slice_records(import_hftbacktest([shared / f for f in files]), seconds):
            w.write(r)
    out = tmp / f"{name}_{levels}.csv"
    export_books(rec, out, levels=levels, interval_ms=1000, settings=BotSettings(), symbols=["BTCUSDT"])
    return out


def kline_slice(shared: Path, tmp: Path, symbols: tuple[str, ...], rows: int) -> Path:
    """The first ``rows`` bars of the real 1m files, copied line for line."""
    d = tmp / f"klines_{rows}"
    d.mkdir(exist_ok=True)
    for s in symbols:
        lines = (shared / KLINES / f"{s}_1m.csv").read_text().splitlines(keepends=True)
        (d / f"{s}_1m.csv").write_text("".join(lines[: rows + 1]))
    return d


@pytest.fixture(scope="module")
def spot_books(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> LobData:
    return load_books_csv([export_slice(shared, tmp_path_factory.mktemp("spot"), SPOT, 150, "spot")])


@pytest.fixture(scope="module")
def two_venue_books(shared: Path, spot_books: LobData, tmp_path_factory: pytest.TempPathFactory) -> LobData:
    tmp = tmp_path_factory.mktemp("two")
    return load_books_csv([export_slice(shared, tmp, SPOT, 100, "spot"), export_slice(shared, tmp, USDM, 100, "usdm")])


@pytest.fixture(scope="module")
def klines(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> KlineData:
    return load_klines([kline_slice(shared, tmp_path_factory.mktemp("k"), ("BTCUSDT", "ETHUSDT", "SOLUSDT"), 700)],
                       "binance_spot")


def small_job(family: str, **input_args: Any) -> Job:
    defaults: dict[str, dict[str, Any]] = {
        "tabl": {"window": 10},
        "mhtabl": {"window": 10},
        "multiscale": {"scales": ["1m", "5m", "15m"], "windows": [16, 8, 4], "return_horizons": [2, 5],
                       "features": SMALL_FEATURES},
        "crossasset": {"window": 12, "features": SMALL_FEATURES},
        "lobforecast": {"grid": "fine", "window": 8},
    }
    horizon = {"tabl": (5,), "mhtabl": (2, 5), "multiscale": (5,), "crossasset": (3,), "lobforecast": (2, 4)}[family]
    return Job(family=family, data=(), out=Path("unused.pt"), horizon=horizon,
               input_args={**defaults[family], **input_args})


# -- a live-like source: rings and a kline store fed one row / one bar at a time -----------------------


class LiveLikeSource:
    """What a worker sees: ``Ring``s of book rows and a ``KlineStore`` filled by the ``Resampler``."""

    def __init__(self, books: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] | None = None,
                 base_bars: dict[str, list[Any]] | None = None, targets_s: tuple[int, ...] = ()) -> None:
        self._books = books or {}
        self._rings = {k: Ring(64, rows.shape[1]) for k, (_, rows) in self._books.items()}
        self._fed = dict.fromkeys(self._books, 0)
        self._bars = base_bars or {}
        self._bar_pos = dict.fromkeys(self._bars, 0)
        self.store = KlineStore(capacity=1000)
        self.resampler = Resampler([t for t in targets_s if t > 60]) if targets_s else None

    def advance(self, now_ns: int) -> None:
        for key, (times, rows) in self._books.items():
            i = self._fed[key]
            while i < len(times) and times[i] <= now_ns:
                self._rings[key].append(rows[i], int(times[i]))
                i += 1
            self._fed[key] = i
        for symbol, bars in self._bars.items():
            i = self._bar_pos[symbol]
            while i < len(bars) and bars[i].ts_event <= now_ns:  # a bar arrives when it closes
                self.store.add(bars[i])
                for out in self.resampler.on_kline(bars[i]) if self.resampler else []:
                    self.store.add(out)
                i += 1
            self._bar_pos[symbol] = i

    def lob(self, venue: str, symbol: str, grid: str, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        ring = self._rings.get((venue, symbol, grid))
        if ring is None or len(ring) < n:
            return None
        return ring.times(n), ring.window(n)

    def klines(self, venue: str, symbol: str, interval_s: int, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        times = self.store.times(Venue(venue), symbol, interval_s, n)
        if len(times) < n:
            return None
        return times, self.store.window(Venue(venue), symbol, interval_s, n)


def _equal(a: torch.Tensor | dict[str, torch.Tensor], b: torch.Tensor | dict[str, torch.Tensor]) -> bool:
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(b, torch.Tensor)
    return a.dtype == b.dtype and torch.equal(a, b)


def _sample(x: torch.Tensor | dict[str, torch.Tensor], i: int) -> torch.Tensor | dict[str, torch.Tensor]:
    return {k: v[i : i + 1] for k, v in x.items()} if isinstance(x, dict) else x[i : i + 1]


# -- train == serve --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["tabl", "mhtabl", "lobforecast"])
def test_book_model_input_from_live_rings_equals_the_training_sample_bit_for_bit(
    family: str, spot_books: LobData, two_venue_books: LobData
) -> None:
    # Arrange
    data = two_venue_books if family == "lobforecast" else spot_books
    target = "binance_usdm:BTCUSDT" if family == "lobforecast" else "binance_spot:BTCUSDT"
    spec, _ = make_spec(small_job(family) if family != "lobforecast" else
                        Job(**{**small_job(family).__dict__, "target": target}), data)
    samples = build_samples(spec, data, target=target)
    live = LiveLikeSource({(v, s, spec["grid"]): arrays for (v, s), arrays in data.books.items()})
    venue, symbol = target.split(":")

    # Act / Assert: walk forward in time like the bot, compare every sample on the way
    assert len(samples) > 20
    for i, t in enumerate(samples.times_ns):
        live.advance(int(t))
        x = build_input(samples.spec, live, venue=venue, symbol=symbol)
        assert x is not None
        assert _equal(x, _sample(samples.x, i)), f"sample {i} at {t} differs"


@pytest.mark.parametrize("family", ["multiscale", "crossasset"])
def test_kline_model_input_from_store_and_resampler_equals_the_training_sample_bit_for_bit(
    family: str, klines: KlineData
) -> None:
    # Arrange
    spec, _ = make_spec(small_job(family), klines)
    target = "BTCUSDT" if family == "multiscale" else None
    samples = build_samples(spec, klines, target=target, stride=7)
    symbols = ["BTCUSDT"] if family == "multiscale" else spec["assets"]
    targets_s = tuple(spec["intervals_s"]) if family == "multiscale" else (spec["interval_s"],)
    live = LiveLikeSource(base_bars={s: klines.bars[s] for s in symbols}, targets_s=targets_s)

    # Act / Assert
    assert len(samples) > 40
    for i, t in enumerate(samples.times_ns):
        live.advance(int(t))
        x = build_input(samples.spec, live, venue="binance_spot", symbol="BTCUSDT")
        assert x is not None
        assert _equal(x, _sample(samples.x, i)), f"sample {i} at {t} differs"


# -- no look-ahead ---------------------------------------------------------------------------------


def _perturb_books_after(data: LobData, t_ns: int) -> LobData:
    books = {}
    for key, (times, rows) in data.books.items():
        rows = rows.copy()
        later = times > t_ns
        rows[later] *= 1.0 + 0.01 * np.arange(1, later.sum() + 1)[:, None]  # every later value changes
        books[key] = (times, rows)
    return LobData(interval_ms=data.interval_ms, levels=data.levels, books=books, sources=data.sources)


def _perturb_klines_after(data: KlineData, t_ns: int) -> KlineData:
    bars = {}
    for s, series in data.bars.items():
        bars[s] = [b if b.ts_event <= t_ns else msgspec.structs.replace(
            b, open=b.open * 1.03, high=b.high * 1.05, low=b.low * 1.01, close=b.close * 1.04, volume=b.volume * 3 + 1)
            for b in series]  # fmt: skip
    return KlineData(venue=data.venue, base_interval_s=data.base_interval_s, bars=bars, sources=data.sources)


def _predict(family: str, spec: dict[str, Any], x: Any) -> Any:
    torch.manual_seed(0)
    model = MODEL_CLASSES[spec["family"]](model_config(small_job(family), spec)).eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("family", ["tabl", "lobforecast", "multiscale", "crossasset"])
def test_changing_every_value_after_t_leaves_features_labels_and_predictions_up_to_t_unchanged(
    family: str, spot_books: LobData, two_venue_books: LobData, klines: KlineData
) -> None:
    # Arrange: statistics frozen from the unperturbed data (as in serving)
    if family in ("tabl", "lobforecast"):
        data: LobData | KlineData = two_venue_books if family == "lobforecast" else spot_books
        target = "binance_usdm:BTCUSDT" if family == "lobforecast" else "binance_spot:BTCUSDT"
        job = Job(**{**small_job(family).__dict__, "target": target})
    else:
        data, target, job = klines, ("BTCUSDT" if family == "multiscale" else None), small_job(family)
    spec, _ = make_spec(job, data)
    base = build_samples(spec, data, target=target, stride=3)
    t = int(base.times_ns[len(base) // 2])
    perturbed = _perturb_books_after(data, t) if isinstance(data, LobData) else _perturb_klines_after(data, t)

    # Act
    after = finalize(base.spec, collect(base.spec, perturbed, target=target, stride=3))

    # Assert
    assert np.array_equal(after.times_ns, base.times_ns)
    upto = np.flatnonzero(base.times_ns <= t)
    later = np.flatnonzero(base.times_ns > t)
    for i in upto:
        assert _equal(_sample(after.x, i), _sample(base.x, i)), f"feature at sample {i} (<= t) changed"
    labelled = np.flatnonzero(base.label_end_ns <= t)
    for k in base.y:
        assert torch.equal(after.y[k][labelled], base.y[k][labelled]), f"label {k} ending <= t changed"
    p0, p1 = _predict(family, base.spec, base.x), _predict(family, base.spec, after.x)
    outs0, outs1 = (p0, p1) if isinstance(p0, dict) else ({"out": p0}, {"out": p1})
    for k in outs0:
        assert torch.equal(outs1[k][upto], outs0[k][upto]), f"prediction {k} at or before t changed"
    # the perturbation does reach the later samples (the test has teeth)
    changed = [i for i in later if not _equal(_sample(after.x, i), _sample(base.x, i))]
    assert len(changed) == len(later)


# -- strict windows, visibility, levels ------------------------------------------------------------


def test_a_missing_grid_row_inside_the_window_gives_none_not_a_stitched_window(spot_books: LobData) -> None:
    # Arrange
    spec, _ = make_spec(small_job("tabl"), spot_books)
    spec = build_samples(spec, spot_books).spec
    times, rows = spot_books.books[("binance_spot", "BTCUSDT")]
    keep = np.ones(len(times), dtype=bool)
    keep[40] = False  # the book was invalid for one grid step
    src = ArrayWindowSource(lob={("binance_spot", "BTCUSDT", "fine"): (times[keep], rows[keep])})

    # Act / Assert
    for i in range(41, 50):  # windows of 10 ending at 41..49 straddle the hole
        assert build_input(spec, src.at(int(times[i])), venue="binance_spot", symbol="BTCUSDT") is None
    assert build_input(spec, src.at(int(times[50])), venue="binance_spot", symbol="BTCUSDT") is not None
    assert build_input(spec, src.at(int(times[39])), venue="binance_spot", symbol="BTCUSDT") is not None


def test_a_bar_becomes_visible_exactly_when_it_closes(klines: KlineData) -> None:
    opens, bars = klines.arrays("BTCUSDT", 300)
    src = ArrayWindowSource(klines={("binance_spot", "BTCUSDT", 300): (opens, bars)})
    close_ns = int(opens[5] + 300_000) * 1_000_000

    got_before = src.at(close_ns - 1).klines("binance_spot", "BTCUSDT", 300, 1)
    got_at = src.at(close_ns).klines("binance_spot", "BTCUSDT", 300, 1)

    assert got_before is not None
    assert got_at is not None
    assert int(got_before[0][-1]) == int(opens[4])
    assert int(got_at[0][-1]) == int(opens[5])
    assert got_at[1][-1].tolist() == bars[5].tolist()


def test_a_five_level_spec_reads_the_same_values_from_a_ten_level_export_as_from_a_five_level_one(
    shared: Path, tmp_path: Path
) -> None:
    # Arrange: the same recording exported twice, 10 and 5 levels
    ten = load_books_csv([export_slice(shared, tmp_path, SPOT, 40, "spot", levels=10)])
    five = load_books_csv([export_slice(shared, tmp_path, SPOT, 40, "spot", levels=5)])
    spec, _ = make_spec(small_job("tabl", levels=5), ten)
    key = ("binance_spot", "BTCUSDT")
    t = int(ten.books[key][0][20])

    # Act
    a = raw_input(spec, ArrayWindowSource(lob={(*key, "fine"): ten.books[key]}, now_ns=t), venue=key[0], symbol=key[1])
    b = raw_input(spec, ArrayWindowSource(lob={(*key, "fine"): five.books[key]}, now_ns=t), venue=key[0], symbol=key[1])

    # Assert
    assert isinstance(a, np.ndarray)
    assert isinstance(b, np.ndarray)
    assert a.shape == (10, 4 * 5 + 3)
    assert np.array_equal(a, b)


def test_tabl_relative_prices_are_bps_from_the_newest_mid_of_the_real_book(spot_books: LobData) -> None:
    spec, _ = make_spec(small_job("tabl"), spot_books)
    times, rows = spot_books.books[("binance_spot", "BTCUSDT")]
    src = ArrayWindowSource(lob={("binance_spot", "BTCUSDT", "fine"): (times, rows)}, now_ns=int(times[9]))

    raw = raw_input(spec, src, venue="binance_spot", symbol="BTCUSDT")

    assert isinstance(raw, np.ndarray)
    mid = 0.5 * (rows[9, 0] + rows[9, 20])
    assert raw[-1, 0] == (rows[9, 0] / mid - 1.0) * 1e4  # newest best bid, in bps below the mid
    assert raw[-1, 0] < 0 < raw[-1, 20]  # best bid below, best ask above
    assert raw[-1, 1] == np.log1p(rows[9, 1])  # size as log1p
    assert raw[-1, 40] == 0.0  # the newest mid is the reference
    assert raw[-1, 41] == pytest.approx((rows[9, 20] - rows[9, 0]) / mid * 1e4)  # spread in bps
    assert raw[-1, 42] == pytest.approx((rows[9, 1] - rows[9, 21]) / (rows[9, 1] + rows[9, 21]))


def test_clipping_bound_comes_from_the_spec_and_a_spec_written_before_it_keeps_the_unclipped_transform(
    spot_books: LobData,
) -> None:
    # Arrange: a real 10-step window whose newest row quotes a 1000-tick spread and lacks its 10th bid level
    spec, _ = make_spec(small_job("tabl"), spot_books)
    spec = build_samples(spec, spot_books).spec
    times, rows = spot_books.books[("binance_spot", "BTCUSDT")]
    window = rows[:10].copy()
    window[-1, 20] += 10.0  # ask_px_1 + 10 USDT
    window[-1, 18:20] = np.nan  # bid_px_10, bid_sz_10
    src = ArrayWindowSource(lob={("binance_spot", "BTCUSDT", "fine"): (times[:10], window)})
    before = {**spec, "norm": {k: v for k, v in spec["norm"].items() if k != "clip"}}  # an older checkpoint's spec

    # Act
    x = build_input(spec, src, venue="binance_spot", symbol="BTCUSDT")
    x_before = build_input(before, src, venue="binance_spot", symbol="BTCUSDT")

    # Assert
    raw = raw_input(spec, src, venue="binance_spot", symbol="BTCUSDT")
    assert isinstance(x, torch.Tensor)
    assert isinstance(x_before, torch.Tensor)
    assert isinstance(raw, np.ndarray)
    spread = input_names(spec).index("spread")
    z = ((raw[-1, spread] - spec["norm"]["mean"][spread]) / spec["norm"]["std"][spread]).astype(np.float32)
    assert spec["norm"]["clip"] == 10.0
    assert z > 1000
    assert x[0, spread, -1].item() == 10.0
    assert x_before[0, spread, -1].item() == z  # exactly the transform it was trained with
    inside = x_before.abs() <= 10.0
    assert torch.equal(x[inside], x_before[inside])  # the bound changes nothing else
    assert x[0, 18, -1].item() == x_before[0, 18, -1].item() == 0.0  # a missing level: the training mean, as before
    assert x[0, 19, -1].item() == x_before[0, 19, -1].item() == 0.0


def test_required_history_and_decode_output_describe_what_a_worker_needs_and_gets(klines: KlineData) -> None:
    spec, _ = make_spec(small_job("multiscale"), klines)
    samples = build_samples(spec, klines, target="BTCUSDT", stride=7)

    need = required_history(samples.spec)
    out = _predict("multiscale", samples.spec, _sample(samples.x, 0))
    decoded = decode_output(samples.spec, out)

    # window + the features' warm-up (9 bars: ma_10)
    assert [(r["interval_s"], r["n"]) for r in need] == [(60, 16 + 9), (300, 8 + 9), (900, 4 + 9)]
    assert decoded["probs"].shape == (3,)
    assert decoded["probs"].sum() == pytest.approx(1.0, abs=1e-6)
    assert decoded["returns"].shape == (2,)
    assert decoded["return_horizons"] == [2, 5]
