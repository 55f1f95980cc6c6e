"""Model workers: windows from the rings at each tick, batched inference off the loop, Signals on the loop.

A tiny randomly initialised model of each family is saved with ``save_checkpoint`` (with an input spec in
``extra["inputs"]``, as the trainer writes it), then served by a ModelWorker over a RingSet and KlineStore fed
through the bus from fake books and synthetic bars. Expected outputs are computed independently per
instrument (one sample at a time, straight through ``build_input`` -> model -> ``decode_output``) and compared
with what the batched worker published.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bot.demo as bot_demo  # noqa: E402
from bot.bus import EventBus  # noqa: E402
from bot.config import BotSettings, ModelsConfig, RingConfig  # noqa: E402
from bot.events import BookHealth, BookState, BookUpdate, KlineClosed, Signal, Venue  # noqa: E402
from bot.export import OfflineFeed  # noqa: E402
from bot.grid_set import RingSet  # noqa: E402
from bot.klines import KlineStore, load_kline_csv, resample  # noqa: E402
from bot.recording import iter_rows  # noqa: E402
from bot.worker_set import WorkerSet, load_workers  # noqa: E402
from bot.workers import (  # noqa: E402
    SHIPPED_DIR,
    ModelWorker,
    RingWindowSource,
    checkpoint_dir,
    duration_label,
)
from models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from models.crossasset import CrossAssetConfig, CrossAssetModel  # noqa: E402
from models.features import KlineFeatureConfig, n_features, warmup_rows  # noqa: E402
from models.inputs import CLASSES, build_input, decode_book, decode_output  # noqa: E402
from models.lobforecast import LOBForecastConfig, LOBForecaster  # noqa: E402
from models.multiscale import MultiScaleConfig, MultiScaleModel  # noqa: E402
from models.tabl import TABL, TABLConfig  # noqa: E402

pytestmark = pytest.mark.unit

NS = 1_000_000_000
T0 = 1_700_000_100 * NS  # a multiple of 300 s: 1m and 5m bars line up on it
V = Venue.BYBIT_LINEAR
SYMS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
MIDS = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0, "SOLUSDT": 150.0}
RING = RingConfig(lob_interval_ms=5000, lob_levels=5, lob_capacity=64, fine_interval_ms=1000, fine_levels=10,
                  fine_capacity=64, kline_capacity=128)
FEATS = KlineFeatureConfig(return_lags=(1,), vol_window=2, volume_window=2, ma_windows=(2,), rsi_period=2)
FEATS_DICT = {"return_lags": [1], "vol_window": 2, "volume_window": 2, "ma_windows": [2], "rsi_period": 2}
NF = n_features(FEATS)  # 7
HISTORY = warmup_rows(FEATS)  # 2


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- a small market: fake books on a RingSet, bars in a KlineStore, all through one bus ---------------


class FakeBook:
    """Ten levels a side around ``mid``; sizes differ per symbol so instruments cannot be confused."""

    def __init__(self, mid: float, size: float) -> None:
        self.mid, self.size = mid, size
        self.bids: list[tuple[float, float]] = []
        self.asks: list[tuple[float, float]] = []
        self.move(0.0)

    def move(self, bps: float) -> None:
        self.mid *= 1 + bps * 1e-4
        tick = self.mid * 1e-5
        self.bids = [(self.mid - tick * (i + 1), self.size * (1 + i)) for i in range(10)]
        self.asks = [(self.mid + tick * (i + 1), self.size * (2 + i)) for i in range(10)]

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        return self.bids[:n], self.asks[:n]


class StepClock:
    """now_ns() advances 1 µs per read, from any thread: inference start < end < publish, deterministically."""

    def __init__(self, start: int) -> None:
        self._count = itertools.count()
        self.start = start

    def now_ns(self) -> int:
        return self.start + next(self._count) * 1000

    def monotonic_ns(self) -> int:
        return self.now_ns()


class Market:
    def __init__(self, symbols: tuple[str, ...] = SYMS) -> None:
        self.bus = EventBus()
        self.books = {(V, s): FakeBook(MIDS[s], size=1.0 + i) for i, s in enumerate(symbols)}
        self.rings = RingSet(RING, lambda v, s: self.books.get((v, s)), list(self.books))
        self.rings.attach(self.bus)
        self.klines = KlineStore(RING.kline_capacity)
        self.klines.attach(self.bus)
        self.clock = StepClock(T0 + 10**6 * NS)
        self.now = T0
        self.rng = np.random.default_rng(7)
        self.states: dict[str, BookState] = {}

    def health(self, symbol: str, state: BookState = BookState.LIVE) -> None:
        self.states[symbol] = state
        self.bus.publish(BookHealth(ts_event=self.now, ts_recv=self.now, venue=V, symbol=symbol, state=state,
                                    reason="test"))

    def all_live(self) -> None:
        for _, s in self.books:
            self.health(s)

    def advance(self, seconds: int = 1) -> int:
        """Move every book (a ``BookUpdate`` for each LIVE one, as an adapter publishes), then tick the grids
        just after the new grid time; returns the tick time."""
        self.now += seconds * NS
        for i, ((_, symbol), book) in enumerate(self.books.items()):
            book.move(float(self.rng.normal()) * (1 + i))
            if self.states.get(symbol) is BookState.LIVE:
                (bp, bs), (ap, as_) = book.bids[0], book.asks[0]
                self.bus.publish(BookUpdate(ts_event=self.now, ts_recv=self.now, venue=V, symbol=symbol,
                                            update_id=self.now, bid_px=bp, bid_sz=bs, ask_px=ap, ask_sz=as_))
        tick = self.now + 100_000
        self.rings.on_time(tick)
        return tick

    def bars(self, symbol: str, interval_s: int, n: int, last_close_ns: int, seed: int = 0) -> None:
        """``n`` closed bars ending at ``last_close_ns``, each published as received 200 ms after its close."""
        rng = np.random.default_rng(seed)
        px = MIDS[symbol]
        span = interval_s * NS
        for k in range(n):
            close_ns = last_close_ns - (n - 1 - k) * span
            o = px
            c = px * (1 + rng.normal() * 1e-3)
            px = c
            self.bus.publish(KlineClosed(
                ts_event=close_ns, ts_recv=close_ns + 200_000_000, venue=V, symbol=symbol, interval_s=interval_s,
                open_time_ms=(close_ns - span) // 1_000_000, open=o, high=max(o, c) * 1.0005,
                low=min(o, c) * 0.9995, close=c, volume=10.0 + k % 7,
            ))


# -- tiny checkpoints of every family -------------------------------------------------------------------


def _norm(width: int) -> dict[str, list[float]]:
    return {"mean": [0.1] * width, "std": [2.0] * width}


def tabl_spec(symbol: str = "BTCUSDT", levels: int = 2, window: int = 5, interval_ms: int = 1000,
              venue: str = V.value, grid: str = "fine", time_base: str | None = "recv") -> dict[str, Any]:
    extras = ["mid", "spread", "imbalance"]
    return {
        "version": 1, "family": "tabl", "kind": "lob", "venue": venue, "symbol": symbol, "grid": grid,
        **({} if time_base is None else {"time_base": time_base}), "interval_ms": interval_ms, "levels": levels,
        "window": window, "extras": extras,
        "price_mode": "relative", "size_mode": "log1p", "norm": _norm(4 * levels + len(extras)),
        "labels": {"horizons": [10, 30], "thresholds": [1e-4, 2e-4], "classes": list(CLASSES)},
    }


def save_tabl(path: Path, seed: int = 0, **spec_kw: Any) -> Path:
    spec = tabl_spec(**spec_kw)
    torch.manual_seed(seed)
    cfg = TABLConfig(n_features=4 * spec["levels"] + 3, window=spec["window"], hidden=((4, 3),), n_horizons=2,
                     dropout=0.0)
    return save_checkpoint(path, TABL(cfg), family="tabl", config=cfg,
                           extra={"inputs": spec, "code_version": "abc1234"})


def save_multiscale(path: Path) -> Path:
    spec = {
        "version": 1, "family": "multiscale", "kind": "klines", "venue": V.value, "symbol": "ETHUSDT",
        "scales": ["1m", "5m"], "intervals_s": [60, 300], "windows": [4, 3], "features": FEATS_DICT,
        "history": HISTORY, "norm": {"mean": [[0.0] * NF, [0.1] * NF], "std": [[1.0] * NF, [2.0] * NF]},
        "labels": {"return_horizons": [5, 60], "return_scale": [0.01, 0.02], "direction_horizon": 15,
                   "threshold": 1e-3},
    }
    torch.manual_seed(1)
    cfg = MultiScaleConfig(scales=("1m", "5m"), windows=(4, 3), n_features=NF, d_model=8, n_heads=2, n_layers=1,
                           horizons=(5, 60), dropout=0.0)
    return save_checkpoint(path, MultiScaleModel(cfg), family="multiscale", config=cfg, extra={"inputs": spec})


def save_crossasset(path: Path) -> Path:
    spec = {
        "version": 1, "family": "crossasset", "kind": "klines", "venue": V.value, "assets": list(SYMS),
        "interval_s": 60, "window": 4, "features": FEATS_DICT, "history": HISTORY,
        "norm": {"mean": [[0.0] * NF] * 3, "std": [[1.5] * NF] * 3},
        "labels": {"horizon": 15, "return_scale": [0.01, 0.02, 0.03], "thresholds": [1e-3] * 3},
    }
    torch.manual_seed(2)
    cfg = CrossAssetConfig(assets=SYMS, window=4, n_features=NF, d_model=8, n_heads=2, n_temporal_layers=1,
                           n_cross_layers=1, max_lag=2, dropout=0.0)
    return save_checkpoint(path, CrossAssetModel(cfg), family="crossasset", config=cfg, extra={"inputs": spec})


def save_lobforecast(path: Path) -> Path:
    spec = {
        "version": 1, "family": "lobforecast", "kind": "lob", "venues": [V.value], "pairs": ["BTCUSDT", "ETHUSDT"],
        "target": [V.value, "BTCUSDT"], "time_base": "recv", "grid": "coarse", "interval_ms": 5000, "levels": 2,
        "window": 3, "norm": _norm(2 * 8), "labels": {"horizons": [12, 24]},
    }
    torch.manual_seed(3)
    cfg = LOBForecastConfig(venues=(V.value,), pairs=("BTCUSDT", "ETHUSDT"), levels=2, window=3, horizons=(12, 24),
                            d_embed=4, d_model=8, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=16,
                            dropout=0.0)
    return save_checkpoint(path, LOBForecaster(cfg), family="lobforecast", config=cfg, extra={"inputs": spec})


def worker_for(market: Market, path: Path, **kw: Any) -> ModelWorker:
    kw.setdefault("max_input_age_s", 5.0)
    return ModelWorker(path, market.rings, market.klines, market.bus, market.clock, **kw)


@contextlib.asynccontextmanager
async def running(*workers: ModelWorker) -> Any:
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def tick(worker: ModelWorker, ts: int) -> None:
    worker.on_tick(ts)
    await asyncio.wait_for(worker.wait_idle(), 30)


def collect(bus: EventBus) -> list[Signal]:
    got: list[Signal] = []
    bus.subscribe(Signal, got.append)
    return got


def expected_tabl(path: Path, market: Market, symbol: str) -> np.ndarray:
    """One instrument alone through build_input -> model -> decode_output: (H, C) probabilities."""
    model, meta = load_checkpoint(path)
    spec = meta.extra["inputs"]
    x = build_input(spec, RingWindowSource(market.rings, market.klines), venue=V.value, symbol=symbol)
    assert x is not None
    with torch.inference_mode():
        return np.asarray(decode_output(spec, model(x))["probs"])


# -- RingWindowSource ---------------------------------------------------------------------------------------


def test_ring_window_source_returns_copies_of_the_newest_rows_with_their_grid_times() -> None:
    # Arrange
    m = Market(("BTCUSDT",))
    m.all_live()
    for _ in range(4):
        m.advance()
    src = RingWindowSource(m.rings, m.klines)
    # Act
    got = src.lob(V.value, "BTCUSDT", "fine", 3)
    # Assert
    assert got is not None
    times, rows = got
    assert times.tolist() == [T0 + 2 * NS, T0 + 3 * NS, T0 + 4 * NS]
    assert rows.shape == (3, 40)
    book = m.books[(V, "BTCUSDT")]
    assert rows[-1, 0] == book.bids[0][0]
    assert rows[-1, 1] == book.bids[0][1]
    assert rows[-1, 20] == book.asks[0][0]
    assert rows[-1, 21] == book.asks[0][1]
    assert src.newest_ns == T0 + 4 * NS
    before = rows.copy()
    for _ in range(70):  # wrap the ring: the copy must not change
        m.advance()
    assert np.array_equal(rows, before)
    assert src.lob(V.value, "BTCUSDT", "fine", 65) is None  # more than the ring holds
    assert src.lob(V.value, "ETHUSDT", "fine", 1) is None  # not configured


def test_ring_window_source_kline_data_time_is_the_newest_bars_receive_time() -> None:
    # Arrange
    m = Market(("BTCUSDT",))
    src = RingWindowSource(m.rings, m.klines)
    src.attach(m.bus)
    m.bars("BTCUSDT", 60, 5, last_close_ns=T0)
    # Act
    got = src.klines(V.value, "BTCUSDT", 60, 5)
    # Assert
    assert got is not None
    opens, bars = got
    assert opens.tolist() == [(T0 - (5 - k) * 60 * NS) // 1_000_000 for k in range(5)]
    assert bars.shape == (5, 5)
    assert src.newest_ns == T0 + 200_000_000  # received 200 ms after the close
    assert src.klines(V.value, "BTCUSDT", 60, 6) is None
    # A bar that arrived without an event (a backfill) is dated by its close time.
    plain = RingWindowSource(m.rings, m.klines)
    assert plain.klines(V.value, "BTCUSDT", 60, 2) is not None
    assert plain.newest_ns == T0


# -- the worker -----------------------------------------------------------------------------------------------


async def test_worker_publishes_exactly_one_signal_per_symbol_per_tick_batched_with_every_field_filled(
    tmp_path: Path,
) -> None:
    # Arrange
    m = Market()
    path = save_tabl(tmp_path / "tabl-btc.pt")
    w = worker_for(m, path, serve="all")
    got = collect(m.bus)
    m.all_live()
    for _ in range(5):  # window of 5 rows
        m.advance()
    # Act / Assert
    async with running(w):
        for k in range(3):
            ts = m.advance()
            await tick(w, ts)
            batch = got[3 * k :]
            assert sorted(s.symbol for s in batch) == sorted(SYMS)
            for s in batch:
                want = expected_tabl(path, m, s.symbol)
                assert s.probabilities == pytest.approx(want.ravel().tolist(), rel=1e-5, abs=1e-7)
                assert s.ts_event == m.now  # the newest grid row
    st = w.stats()
    assert st["published"] == 9
    assert st["batches"] == 3
    assert st["samples"] == 9
    assert st["skipped_busy"] == 0
    s = got[-1]
    assert s.model == "tabl-btc"
    assert s.family == "tabl"
    assert s.version == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert s.code_version == "abc1234"
    assert s.venue is V
    assert s.horizon == "10s,30s"
    assert s.classes == CLASSES
    assert len(s.probabilities) == 6
    assert sum(s.probabilities[:3]) == pytest.approx(1.0)
    assert sum(s.probabilities[3:]) == pytest.approx(1.0)
    assert s.confidence == pytest.approx(max(s.probabilities[:3]))
    assert s.attention.startswith("t-")
    assert len(s.attention.split()) == 6
    assert s.values == ()
    assert s.value_names == ()
    assert s.ts_event < s.inference_start_ns < s.inference_end_ns < s.ts_recv


async def test_signals_are_published_from_the_event_loop_thread_and_inference_runs_on_another(
    tmp_path: Path,
) -> None:
    # Arrange
    m = Market()
    w = worker_for(m, save_tabl(tmp_path / "t.pt"), serve="all")
    loop_thread = threading.get_ident()
    publish_threads: set[int] = set()
    forward_threads: set[int] = set()
    m.bus.subscribe(Signal, lambda s: publish_threads.add(threading.get_ident()))
    forward = w.model.forward

    def spy(*a: Any, **kw: Any) -> Any:
        forward_threads.add(threading.get_ident())
        return forward(*a, **kw)

    w.model.forward = spy  # type: ignore[method-assign]
    m.all_live()
    for _ in range(5):
        m.advance()
    # Act
    async with running(w):
        for _ in range(3):
            await tick(w, m.advance())
    # Assert
    assert w.stats()["published"] == 9
    assert publish_threads == {loop_thread}
    assert len(forward_threads) == 1
    assert loop_thread not in forward_threads


async def test_books_that_are_not_live_get_no_signal_and_are_counted(tmp_path: Path) -> None:
    # Arrange
    m = Market()
    w = worker_for(m, save_tabl(tmp_path / "t.pt"), serve="all")
    got = collect(m.bus)
    m.all_live()
    for _ in range(5):
        m.advance()
    m.health("ETHUSDT", BookState.RESYNCING)
    # Act
    async with running(w):
        await tick(w, m.advance())
        await tick(w, m.advance())
    # Assert
    assert sorted(s.symbol for s in got) == ["BTCUSDT", "BTCUSDT", "SOLUSDT", "SOLUSDT"]
    assert w.stats()["not_published"]["not_live"] == 2


async def test_a_book_never_reported_live_gets_no_signal(tmp_path: Path) -> None:
    m = Market(("BTCUSDT",))
    w = worker_for(m, save_tabl(tmp_path / "t.pt"))
    got = collect(m.bus)
    async with running(w):
        await tick(w, m.advance())
    assert got == []
    assert w.stats()["not_published"]["not_live"] == 1


async def test_stale_inputs_are_not_published_and_counted(tmp_path: Path) -> None:
    # Arrange: the grid row is written at its time, but the worker's tick comes 6 s later (max age 5 s)
    m = Market(("BTCUSDT",))
    w = worker_for(m, save_tabl(tmp_path / "t.pt"), max_input_age_s=5.0)
    got = collect(m.bus)
    m.all_live()
    for _ in range(5):
        m.advance()
    # Act
    async with running(w):
        await tick(w, m.advance() + 6 * NS)
        await tick(w, m.advance() + 4 * NS)  # 4 s old: still in time
    # Assert
    assert [s.ts_event for s in got] == [m.now]
    assert w.stats()["not_published"]["stale"] == 1
    assert w.stats()["published"] == 1


async def test_a_tick_without_new_rows_does_not_republish_the_same_input(tmp_path: Path) -> None:
    m = Market(("BTCUSDT",))
    w = worker_for(m, save_tabl(tmp_path / "t.pt"))
    got = collect(m.bus)
    m.all_live()
    for _ in range(5):
        m.advance()
    async with running(w):
        ts = m.advance()
        await tick(w, ts)
        await tick(w, ts + 500_000_000)  # half a grid step later: no new row
    assert len(got) == 1
    assert w.stats()["not_published"]["unchanged"] == 1


async def test_too_little_history_is_counted_as_no_input(tmp_path: Path) -> None:
    m = Market(("BTCUSDT",))
    w = worker_for(m, save_tabl(tmp_path / "t.pt", window=5))
    m.all_live()
    async with running(w):
        for _ in range(3):  # 3 rows < window 5
            await tick(w, m.advance())
    st = w.stats()
    assert st["published"] == 0
    assert st["not_published"]["no_input"] == 3
    assert st["batches"] == 0


async def test_a_slow_model_makes_ticks_skip_and_never_queue(tmp_path: Path) -> None:
    # Arrange: the forward pass blocks until released
    m = Market(("BTCUSDT",))
    w = worker_for(m, save_tabl(tmp_path / "t.pt"))
    got = collect(m.bus)
    release, entered = threading.Event(), threading.Event()
    forward = w.model.forward

    def slow(*a: Any, **kw: Any) -> Any:
        entered.set()
        assert release.wait(30)
        return forward(*a, **kw)

    w.model.forward = slow  # type: ignore[method-assign]
    m.all_live()
    for _ in range(5):
        m.advance()
    async with running(w):
        # Act: five ticks while the first batch is still running
        first = m.advance()
        w.on_tick(first)
        await asyncio.to_thread(entered.wait, 30)
        for _ in range(4):
            w.on_tick(m.advance())
        busy = w.stats()
        release.set()
        await asyncio.wait_for(w.wait_idle(), 30)
        after = w.stats()
        await tick(w, m.advance())  # the next tick runs on the newest rows
    # Assert
    assert busy["skipped_busy"] == 4
    assert busy["busy"] is True
    assert after["batches"] == 1
    assert after["published"] == 1
    assert not after["busy"]
    assert [s.ts_event for s in got] == [first - 100_000, m.now]
    assert w.stats()["ticks"] == 6


async def test_an_inference_error_is_counted_and_the_worker_carries_on(tmp_path: Path) -> None:
    m = Market(("BTCUSDT",))
    w = worker_for(m, save_tabl(tmp_path / "t.pt"))
    got = collect(m.bus)
    forward = w.model.forward
    calls = itertools.count()

    def flaky(*a: Any, **kw: Any) -> Any:
        if next(calls) == 0:
            raise RuntimeError("CUDA out of memory (simulated)")
        return forward(*a, **kw)

    w.model.forward = flaky  # type: ignore[method-assign]
    m.all_live()
    for _ in range(5):
        m.advance()
    async with running(w):
        await tick(w, m.advance())
        await tick(w, m.advance())
    assert w.stats()["inference_errors"] == 1
    assert len(got) == 1
    assert got[0].ts_event == m.now


# -- every family through a checkpoint file ---------------------------------------------------------------


async def test_multiscale_checkpoint_round_trip_publishes_direction_returns_and_scale_importance(
    tmp_path: Path,
) -> None:
    # Arrange
    m = Market()
    path = save_multiscale(tmp_path / "ms.pt")
    w = worker_for(m, path)
    got = collect(m.bus)
    m.bars("ETHUSDT", 60, 4 + HISTORY, last_close_ns=T0, seed=1)
    m.bars("ETHUSDT", 300, 3 + HISTORY, last_close_ns=T0, seed=2)
    m.all_live()
    # Act
    async with running(w):
        await tick(w, T0 + NS)
        await tick(w, T0 + 2 * NS)  # no new bar: unchanged
    # Assert
    assert len(got) == 1
    s = got[0]
    model, meta = load_checkpoint(path)
    x = build_input(meta.extra["inputs"], RingWindowSource(m.rings, m.klines), venue=V.value, symbol="ETHUSDT")
    with torch.inference_mode():
        want = decode_output(meta.extra["inputs"], model(x))
    assert (s.family, s.venue, s.symbol, s.horizon) == ("multiscale", V, "ETHUSDT", "15m")
    assert s.probabilities == pytest.approx(want["probs"].tolist(), rel=1e-5)
    assert s.value_names == ("ret_5m", "ret_1h")
    assert s.values == pytest.approx(want["returns"].tolist(), rel=1e-5)
    assert s.confidence == pytest.approx(float(want["probs"].max()))
    imp = want["scale_importance"]
    top = "1m" if imp[0] >= imp[1] else "5m"
    assert s.attention.startswith(top)
    assert s.ts_event == T0 + 200_000_000  # the newest bar's receive time
    assert w.stats()["not_published"]["unchanged"] == 1


async def test_a_kline_model_between_bars_does_not_rebuild_its_input_until_a_bar_arrives(tmp_path: Path) -> None:
    # Arrange: count the input builds
    m = Market()
    builds: list[str] = []

    def counting_build(spec: dict[str, Any], source: Any, *, venue: str, symbol: str) -> Any:
        builds.append(symbol)
        return build_input(spec, source, venue=venue, symbol=symbol)

    w = worker_for(m, save_multiscale(tmp_path / "ms.pt"), input_builder=counting_build)
    got = collect(m.bus)
    m.bars("ETHUSDT", 60, 4 + HISTORY, last_close_ns=T0, seed=1)
    m.bars("ETHUSDT", 300, 3 + HISTORY, last_close_ns=T0, seed=2)
    m.all_live()
    # Act
    async with running(w):
        for k in range(1, 4):
            await tick(w, T0 + k * NS)
        m.bars("ETHUSDT", 60, 1, last_close_ns=T0 + 60 * NS, seed=3)  # the next 1m bar closes
        await tick(w, T0 + 61 * NS)
        await tick(w, T0 + 62 * NS)
    # Assert
    assert builds == ["ETHUSDT", "ETHUSDT"]
    assert [s.ts_event for s in got] == [T0 + 200_000_000, T0 + 60 * NS + 200_000_000]
    assert w.stats()["not_published"]["unchanged"] == 3


async def test_crossasset_checkpoint_round_trip_publishes_one_signal_per_asset(tmp_path: Path) -> None:
    # Arrange
    m = Market()
    path = save_crossasset(tmp_path / "xa.pt")
    w = worker_for(m, path)
    got = collect(m.bus)
    for i, sym in enumerate(SYMS):
        m.bars(sym, 60, 4 + HISTORY, last_close_ns=T0, seed=10 + i)
    m.all_live()
    # Act
    async with running(w):
        await tick(w, T0 + NS)
    # Assert
    assert [s.symbol for s in got] == list(SYMS)
    model, meta = load_checkpoint(path)
    x = build_input(meta.extra["inputs"], RingWindowSource(m.rings, m.klines), venue=V.value, symbol="BTCUSDT")
    with torch.inference_mode():
        want = decode_output(meta.extra["inputs"], model(x))
    for a, s in enumerate(got):
        assert s.probabilities == pytest.approx(want["probs"][a].tolist(), rel=1e-5)
        assert s.value_names == ("ret_15m", "weight")
        assert s.values == pytest.approx([want["returns"][a], want["portfolio_weights"][a]], rel=1e-5)
        others = [o for o in SYMS if o != s.symbol]
        assert set(s.attention.split()[::2]) == set(others)  # the two other assets, weights summing to 1
        assert sum(float(v) for v in s.attention.split()[1::2]) == pytest.approx(1.0, abs=0.011)
    assert w.stats()["batches"] == 1
    assert w.stats()["samples"] == 1


async def test_lobforecast_checkpoint_round_trip_publishes_the_targets_mid_and_spread_forecast(
    tmp_path: Path,
) -> None:
    # Arrange
    m = Market()
    path = save_lobforecast(tmp_path / "fc.pt")
    w = worker_for(m, path, max_input_age_s=6.0)
    got = collect(m.bus)
    m.all_live()
    for _ in range(14):  # coarse rows at T0, T0+5 s, T0+10 s
        m.advance()
    # Act
    async with running(w):
        for _ in range(5):
            await tick(w, m.advance())  # one new coarse row in these five ticks
    # Assert
    assert len(got) == 1
    s = got[0]
    assert (s.family, s.symbol, s.horizon, s.confidence, s.attention) == ("lobforecast", "BTCUSDT", "1m,2m", None, "")
    assert s.value_names == ("mid_bps_1m", "mid_bps_2m", "spread_bps_1m", "spread_bps_2m")
    model, meta = load_checkpoint(path)
    src = RingWindowSource(m.rings, m.klines)
    x = build_input(meta.extra["inputs"], src, venue=V.value, symbol="BTCUSDT")
    newest = m.rings.coarse(V, "BTCUSDT").window(1)[-1]
    mid_now = (newest[0] + newest[10]) / 2
    with torch.inference_mode():
        book = decode_book(meta.extra["inputs"], model(x), mid_now)
    mid = (book[:, 0] + book[:, 4]) / 2
    assert s.values[:2] == pytest.approx(((mid / mid_now - 1) * 1e4).tolist(), rel=1e-4)
    assert s.values[2:] == pytest.approx(((book[:, 4] - book[:, 0]) / mid * 1e4).tolist(), rel=1e-4)
    assert s.ts_event == m.rings.coarse(V, "BTCUSDT").times(1)[-1]
    st = w.stats()
    assert st["published"] == 1
    assert st["not_published"]["unchanged"] == 4


async def test_tabl_checkpoint_serves_only_its_trained_instrument_by_default(tmp_path: Path) -> None:
    m = Market()
    w = worker_for(m, save_tabl(tmp_path / "t.pt", symbol="SOLUSDT"))
    got = collect(m.bus)
    m.all_live()
    for _ in range(5):
        m.advance()
    async with running(w):
        await tick(w, m.advance())
    assert [s.symbol for s in got] == ["SOLUSDT"]


# -- loading a directory --------------------------------------------------------------------------------------


def test_worker_set_loads_every_good_checkpoint_and_skips_bad_ones_with_a_clear_reason(tmp_path: Path) -> None:
    # Arrange
    m = Market()
    save_tabl(tmp_path / "a-tabl.pt")
    save_lobforecast(tmp_path / "b-forecast.pt")
    (tmp_path / "c-garbage.pt").write_bytes(b"not a checkpoint at all")
    torch.manual_seed(0)
    cfg = TABLConfig(n_features=11, window=5, hidden=((4, 3),), dropout=0.0)
    save_checkpoint(tmp_path / "d-nospec.pt", TABL(cfg), family="tabl", config=cfg, extra={})
    save_tabl(tmp_path / "e-halfsecond.pt", interval_ms=500)  # trained on a 500 ms grid; this one is 1 s
    save_tabl(tmp_path / "f-kraken.pt", venue="kraken_spot")
    (tmp_path / "notes.txt").write_text("ignored")
    # Act
    ws = WorkerSet.from_dir(tmp_path, m.rings, m.klines, m.bus, m.clock, max_input_age_s=5.0, device="cpu")
    # Assert
    assert [w.name for w in ws.workers] == ["a-tabl", "b-forecast"]
    assert sorted(ws.failed) == ["c-garbage.pt", "d-nospec.pt", "e-halfsecond.pt", "f-kraken.pt"]
    assert "'kraken_spot' is not a valid Venue" in ws.failed["f-kraken.pt"]
    assert "not a readable checkpoint" in ws.failed["c-garbage.pt"]
    assert "no input spec" in ws.failed["d-nospec.pt"]
    assert "500 ms" in ws.failed["e-halfsecond.pt"]
    assert "1000 ms" in ws.failed["e-halfsecond.pt"]
    assert [w["model"] for w in ws.stats()["workers"]] == ["a-tabl", "b-forecast"]
    ws.close()


def test_a_book_checkpoint_trained_on_other_grids_than_the_rings_is_skipped_with_the_reason(tmp_path: Path) -> None:
    """Training and serving must not silently disagree: a book model reads only a ring of its own grid's
    interval, with at least its levels (RING: fine 1 s x 10, coarse 5 s x 5), on receive time."""
    # Arrange
    m = Market()
    save_tabl(tmp_path / "ok-coarse-5-levels.pt", grid="coarse", interval_ms=5000, levels=5)
    save_tabl(tmp_path / "ok-fine-fewer-levels.pt", levels=3)  # the ring's first 3 levels: what it trained on
    save_tabl(tmp_path / "x-coarse-at-1s.pt", grid="coarse", interval_ms=1000, levels=2)
    save_tabl(tmp_path / "x-six-coarse-levels.pt", grid="coarse", interval_ms=5000, levels=6)
    save_tabl(tmp_path / "x-eleven-levels.pt", levels=11)
    save_tabl(tmp_path / "x-exchange-time.pt", time_base=None)  # a spec from before the receive-time grids
    save_tabl(tmp_path / "x-venue-time.pt", time_base="event")
    save_tabl(tmp_path / "x-medium-grid.pt", grid="medium")
    # Act
    ws = WorkerSet.from_dir(tmp_path, m.rings, m.klines, m.bus, m.clock, max_input_age_s=5.0, device="cpu")
    # Assert
    assert [w.name for w in ws.workers] == ["ok-coarse-5-levels", "ok-fine-fewer-levels"]
    why = ws.failed
    assert "needs a coarse grid of 1000 ms x 2 levels x 5 rows; this configuration has 5000 ms x 5 levels" in why[
        "x-coarse-at-1s.pt"]
    assert "needs a coarse grid of 5000 ms x 6 levels" in why["x-six-coarse-levels.pt"]
    assert "needs a fine grid of 1000 ms x 11 levels x 5 rows; this configuration has 1000 ms x 10 levels" in why[
        "x-eleven-levels.pt"]
    assert "trained on book grids stamped by exchange time (no time_base" in why["x-exchange-time.pt"]
    assert "stamped by 'event'; the rings are stamped by local receive time" in why["x-venue-time.pt"]
    assert "retrain it on a new `python -m bot books` export" in why["x-exchange-time.pt"]
    assert "reads a 'medium' book grid" in why["x-medium-grid.pt"]
    ws.close()


async def test_load_workers_reads_the_models_section_and_ticks_every_worker(tmp_path: Path) -> None:
    # Arrange
    m = Market()
    save_tabl(tmp_path / "t.pt")
    settings = BotSettings(models=ModelsConfig(dir=tmp_path, device="cpu", torch_threads=1, max_input_age_s=3.0))
    got = collect(m.bus)
    # Act
    ws = await load_workers(settings, m.rings, m.klines, m.bus, m.clock)
    m.all_live()
    for _ in range(5):
        m.advance()
    task = asyncio.create_task(ws.run())
    try:
        ws.on_tick(m.advance())
        await asyncio.wait_for(ws.workers[0].wait_idle(), 30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Assert
    assert len(ws) == 1
    assert ws.workers[0].max_age_ns == 3 * NS
    assert str(ws.workers[0].device) == "cpu"
    assert [s.symbol for s in got] == ["BTCUSDT"]


async def test_load_workers_with_an_empty_or_missing_directory_gives_an_empty_set(tmp_path: Path) -> None:
    m = Market()
    settings = BotSettings(models=ModelsConfig(dir=tmp_path / "nowhere"))
    ws = await load_workers(settings, m.rings, m.klines, m.bus, m.clock)
    assert len(ws) == 0
    assert ws.failed == {}
    await ws.run()  # returns at once
    ws.on_tick(T0)


@pytest.mark.parametrize(("seconds", "label"), [(5, "5s"), (60, "1m"), (90, "90s"), (3600, "1h"), (5400, "90m"),
                                                (86400, "1d"), (0.5, "0.5s")])
def test_duration_labels_use_the_largest_exact_unit(seconds: float, label: str) -> None:
    assert duration_label(seconds) == label


# -- what a target waits for, in the status --------------------------------------------------------------


async def test_the_status_says_what_each_target_waits_for_until_it_publishes(tmp_path: Path) -> None:
    # Arrange: a 5-step TABL on BTCUSDT whose book is not reported yet
    m = Market(("BTCUSDT",))
    w = worker_for(m, save_tabl(tmp_path / "t.pt", window=5))
    seen = []
    # Act
    async with running(w):
        await tick(w, m.advance())
        seen.append(w.waiting())
        m.all_live()
        for _ in range(3):
            await tick(w, m.advance())
        seen.append(w.waiting())
        for _ in range(3):
            await tick(w, m.advance())
        seen.append(w.waiting())
    # Assert
    assert seen[0] == {"bybit_linear/BTCUSDT": "waiting for the bybit_linear/BTCUSDT book to be LIVE "
                                               "(it is not reported yet)"}
    assert seen[1] == {"bybit_linear/BTCUSDT": "waiting for 5 rows of the 1s fine book grid of "
                                               "bybit_linear/BTCUSDT, have 4"}  # rows from the LIVE time on
    assert seen[2] == {}
    assert w.stats()["waiting"] == {}
    assert w.stats()["published"] == 3
    assert w.status_line() == "t (tabl): published 3"


async def test_a_stale_input_says_how_old_it_was(tmp_path: Path) -> None:
    m = Market(("BTCUSDT",))
    w = worker_for(m, save_tabl(tmp_path / "t.pt"), max_input_age_s=5.0)
    m.all_live()
    for _ in range(5):
        m.advance()
    async with running(w):
        await tick(w, m.advance() + 6 * NS)
    assert w.waiting() == {"bybit_linear/BTCUSDT": "waiting for a newer input: the newest was 6.0 s old "
                                                   "(max_input_age_s 5)"}


async def test_serve_on_adds_the_trained_symbol_on_another_venue(tmp_path: Path) -> None:
    # Arrange: a TABL trained on Binance spot BTCUSDT; the market trades Bybit linear only
    m = Market(("BTCUSDT",))
    path = save_tabl(tmp_path / "t.pt", venue=Venue.BINANCE_SPOT.value)
    plain = worker_for(m, path)
    moved = worker_for(m, path, serve_on={"tabl": (V,)})
    got = collect(m.bus)
    m.all_live()
    for _ in range(5):
        m.advance()
    # Act
    async with running(plain, moved):
        ts = m.advance()
        await tick(plain, ts)
        await tick(moved, ts)
    # Assert
    assert plain.targets == []
    assert plain.waiting() == {"-": "nothing to serve: binance_spot/BTCUSDT not configured "
                                    "(models.serve_on adds venues for a family)"}
    assert plain.status_line() == ("t (tabl): published 0; nothing to serve: binance_spot/BTCUSDT not configured "
                                   "(models.serve_on adds venues for a family)")
    assert [(t.venue, t.symbol) for t in moved.targets] == [(V, "BTCUSDT")]
    assert [(s.venue, s.symbol) for s in got] == [(V, "BTCUSDT")]


def test_serve_on_by_checkpoint_name_and_never_for_a_forecaster(tmp_path: Path) -> None:
    m = Market()
    ca = worker_for(m, save_crossasset(tmp_path / "ca.pt"), serve_on={"ca": (Venue.BINANCE_USDM,)})
    lob = worker_for(m, save_lobforecast(tmp_path / "lob.pt"), serve_on={"lobforecast": (Venue.BINANCE_USDM,)})
    assert [(t.venue, t.symbols) for t in ca.targets] == [(V, SYMS)]  # binance_usdm is not configured here
    assert ca.waiting() == {}
    assert [(t.venue, t.symbol) for t in lob.targets] == [(V, "BTCUSDT")]


# -- the checkpoint directory -------------------------------------------------------------------------------


def test_the_default_models_dir_is_the_packages_shipped_checkpoints(tmp_path: Path) -> None:
    assert checkpoint_dir(ModelsConfig().dir) == SHIPPED_DIR
    assert checkpoint_dir(None) == SHIPPED_DIR
    assert checkpoint_dir(tmp_path) == tmp_path
    assert Path(__file__).resolve().parents[2] / "models" / "checkpoints" == SHIPPED_DIR


async def test_load_workers_finds_the_shipped_checkpoints_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    m = Market()
    ws = await load_workers(BotSettings(models=ModelsConfig(device="cpu")), m.rings, m.klines, m.bus, m.clock)
    assert sorted(w.name for w in ws.workers) == sorted(p.stem for p in SHIPPED_DIR.glob("*.pt"))
    assert len(ws) == 5
    assert ws.failed == {}
    ws.close()


async def test_a_truncated_checkpoint_is_skipped_with_one_line_and_the_rest_load(tmp_path: Path) -> None:
    # Arrange: a good checkpoint and a truncated copy of it
    m = Market()
    good = save_tabl(tmp_path / "a.pt")
    data = good.read_bytes()
    (tmp_path / "b.pt").write_bytes(data[: len(data) // 2])
    settings = BotSettings(models=ModelsConfig(dir=tmp_path, device="cpu"))
    # Act
    ws = await load_workers(settings, m.rings, m.klines, m.bus, m.clock)
    # Assert
    assert [w.name for w in ws.workers] == ["a"]
    assert ws.failed == {"b.pt": f"{tmp_path / 'b.pt'} is not a readable checkpoint: truncated or damaged "
                                 f"({len(data) // 2} bytes): its end (the zip directory) is missing"}
    assert ws.status_lines()[-1] == f"skipped: {ws.failed['b.pt']}"
    ws.close()


# -- the shipped checkpoints on the embedded demo data ---------------------------------------------------

DEMO = Path(bot_demo.__file__).resolve().parent
# config.toml's instruments (what `python -m bot run --paper --sim` trades on the demo)
CONFIGURED = {
    Venue.BYBIT_SPOT: ("BTCUSDT", "ETHUSDT"),
    Venue.BYBIT_LINEAR: ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
    Venue.BINANCE_SPOT: ("BTCUSDT",),
    Venue.BINANCE_USDM: ("BTCUSDT", "ETHUSDT"),
}
KLINE_FOLDER = {Venue.BINANCE_SPOT: "binance_spot", Venue.BINANCE_USDM: "binance_spot",
                Venue.BYBIT_LINEAR: "bybit_linear", Venue.BYBIT_SPOT: "bybit_linear"}  # as the sim serves them


def demo_backfill(venue: Venue, symbol: str, ts_recv: int, limit: int = 500) -> list[KlineClosed]:
    """What the feed's REST backfill gets from the loopback exchange on the demo: the last ``limit`` closed
    bars of each resolution of config.toml ([klines] 1m, 5m, 15m, 1h), the coarser ones complete buckets of
    the demo's 1500 one-minute bars, all received at ``ts_recv`` (when the collector connects)."""
    base = load_kline_csv(DEMO / "klines" / KLINE_FOLDER[venue] / f"{symbol}_1m.csv", venue=venue)
    out: list[KlineClosed] = []
    for iv in (60, 300, 900, 3600):
        bars = base if iv == 60 else resample(base, iv)
        out += [msgspec.structs.replace(k, ts_recv=ts_recv) for k in bars[-limit:]]
    return out


class ReplayTime:
    def __init__(self) -> None:
        self.t = 0

    def now_ns(self) -> int:
        return self.t

    def monotonic_ns(self) -> int:
        return self.t


async def test_every_shipped_family_publishes_finite_signals_on_the_embedded_demo_data() -> None:
    """The demo recording through the real venue adapters (bot.export.OfflineFeed) into the rings, the demo
    klines as the backfill the sim serves (received when a venue's first record arrives, as the collector
    backfills on connecting), the shipped checkpoints with the default models section, a tick per second."""
    # Arrange
    settings = BotSettings()
    bus = EventBus()
    feed = OfflineFeed(settings, CONFIGURED, bus.publish)
    rings = RingSet(settings.ring, feed.book, [(v, s) for v, ss in CONFIGURED.items() for s in ss])
    rings.attach(bus)
    klines = KlineStore(settings.ring.kline_capacity)
    klines.attach(bus)
    clock = ReplayTime()
    workers = WorkerSet.from_dir(SHIPPED_DIR, rings, klines, bus, clock, max_input_age_s=10.0,
                                 serve_on=ModelsConfig().serve_on)
    got = collect(bus)
    connected: set[str] = set()
    # Act
    async with running(*workers.workers):
        for sec, group in itertools.groupby(iter_rows(DEMO / "recording"), key=lambda r: r[0] // NS):
            rows = list(group)
            for venue in sorted({r[1] for r in rows} - connected):
                connected.add(venue)
                for symbol in CONFIGURED.get(Venue(venue), ()):
                    for k in demo_backfill(Venue(venue), symbol, rows[0][0]):
                        bus.publish(k)
            feed.run(rows, clock=rings)
            clock.t = (sec + 1) * NS + 100_000
            rings.on_time(clock.t)
            workers.on_tick(clock.t)
            await asyncio.wait_for(asyncio.gather(*(w.wait_idle() for w in workers.workers)), 30)
    # Assert: every checkpoint published, every number finite
    by_model: dict[str, list[Signal]] = {}
    for s in got:
        by_model.setdefault(s.model, []).append(s)
    assert sorted(by_model) == sorted(w.name for w in workers.workers)
    assert len(workers.workers) == 5
    assert {s.family for s in got} == {"tabl", "multiscale", "crossasset", "lobforecast"}
    for s in got:
        assert all(np.isfinite(s.probabilities)), s
        assert all(np.isfinite(s.values)), s
        if s.probabilities:
            assert sum(s.probabilities) == pytest.approx(1.0, abs=1e-5)
    multiscale = by_model["multiscale_btcusdt_h60"]
    assert [(s.venue, s.symbol) for s in multiscale] == [(Venue.BINANCE_SPOT, "BTCUSDT")]  # one backfill window
    assert multiscale[0].value_names == ("ret_5m", "ret_1h", "ret_4h")
    cross = by_model["crossasset_btcusdt-ethusdt-solusdt_h15"]
    assert [(s.venue, s.symbol) for s in cross] == [(Venue.BYBIT_LINEAR, a) for a in ("BTCUSDT", "ETHUSDT", "SOLUSDT")]
    assert sum(s.values[1] for s in cross) == pytest.approx(1.0, abs=1e-5)  # long-only portfolio weights
    assert {s.ts_event for s in cross} == {cross[0].ts_event}  # one sample, the three assets at one bar
    forecasts = by_model["lobforecast_binance-usdm-btcusdt_h5-10-15-20"]
    assert {(s.venue, s.symbol) for s in forecasts} == {(Venue.BINANCE_USDM, "BTCUSDT")}
    assert len(forecasts) > 100
    # the live Bybit bar (another date than the demo's REST history) ends the cross-asset window, and says so
    stats = {w["model"]: w for w in workers.stats()["workers"]}
    assert stats["crossasset_btcusdt-ethusdt-solusdt_h15"]["waiting"] == {
        "bybit_linear/BTCUSDT+ETHUSDT+SOLUSDT": "waiting for 123 bars of 1m bybit_linear/BTCUSDT up to "
        "2026-08-09 21:26 UTC, have 1 since a gap after 2025-06-29 16:38 UTC"}
    workers.close()


def test_workers_with_one_input_spec_share_one_build_per_tick_and_publish_what_each_alone_would(
    tmp_path: Path,
) -> None:
    # Arrange: two TABL checkpoints of one input spec (tabl and mhtabl of one export), a third of another
    builds: list[str] = []

    def counting_build(spec: dict[str, Any], source: Any, *, venue: str, symbol: str) -> Any:
        builds.append(f"{spec['window']}/{symbol}")
        return build_input(spec, source, venue=venue, symbol=symbol)

    paths = [save_tabl(tmp_path / "a.pt", seed=0), save_tabl(tmp_path / "b.pt", seed=1),
             save_tabl(tmp_path / "c.pt", seed=2, window=4)]
    runs = []
    for together in (True, False):
        m = Market()
        got = collect(m.bus)
        source = RingWindowSource(m.rings, m.klines)
        source.attach(m.bus)
        ws = [worker_for(m, p, input_builder=counting_build, **({"source": source} if together else {}))
              for p in paths]
        m.all_live()
        for _ in range(6):
            m.advance()
        builds.clear()
        for _ in range(3):
            ts = m.advance()
            for w in ws:
                w.tick_inline(ts)
        runs.append(([(s.model, s.ts_event, s.probabilities, s.attention) for s in got], list(builds)))
    # Assert: the same signals; together, a and b built once per tick (c reads another window)
    (shared, shared_builds), (alone, alone_builds) = runs
    assert shared == alone
    assert len(shared) == 9
    assert shared_builds == ["5/BTCUSDT", "4/BTCUSDT"] * 3
    assert alone_builds == ["5/BTCUSDT", "5/BTCUSDT", "4/BTCUSDT"] * 3
