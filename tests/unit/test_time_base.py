"""One time base and one grid builder: the rows a model trains on are the rows it is served.

The embedded demo recording (all four markets, shipped in the repository) goes through both paths:

* the export, ``python -m bot books``' code (``bot.export.BooksExport``: the training CSV), read back as a
  dataset (``models.datasets.load_books_csv``);
* a replay: ``OfflineFeed.run_frames(items, clock)`` into the bot's own ``RingSet`` (default ``[ring]``
  settings), the rings ticked on the records' receive time, as the replay engine ticks them, and at chosen
  grid times the model input a worker ticking then would build from them (``RingWindowSource``).

Both must give the same fine-grid rows (times and values) for every book, and the same model inputs
(``models.inputs.build_input``) for the shipped TABL and forecaster checkpoints, bit for bit. The rows are
stamped by local receive time: a book's first row is the first grid time at or after the receive time of
the record that made it valid (the recorders' clocks trail the venues' by 1.2-1.5 s, so an exchange-time
grid would start a step later).

The fixtures are meant to be reused (the replay engine and ``run --paper --sim`` go next to them).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bot.bus import EventBus  # noqa: E402
from bot.config import BotSettings  # noqa: E402
from bot.events import Venue  # noqa: E402
from bot.export import BooksExport, OfflineFeed  # noqa: E402
from bot.grid_set import RingSet  # noqa: E402
from bot.klines import KlineStore  # noqa: E402
from bot.model_inputs import RingWindowSource  # noqa: E402
from bot.recording import iter_frames, iter_rows, read_manifest  # noqa: E402
from bot.sim.cli import DEMO_DIR  # noqa: E402
from bot.workers import SHIPPED_DIR  # noqa: E402
from models.checkpoint import load_checkpoint  # noqa: E402
from models.datasets import LobData, load_books_csv  # noqa: E402
from models.inputs import TIME_BASE, ArrayWindowSource, build_input  # noqa: E402

pytestmark = pytest.mark.unit

RECORDING = DEMO_DIR / "recording"
NS_PER_MS = 1_000_000
SPOT = (Venue.BINANCE_SPOT, "BTCUSDT")
USDM = (Venue.BINANCE_USDM, "BTCUSDT")
TABL = SHIPPED_DIR / "tabl_binance-spot-btcusdt_h10.pt"
FORECASTER = SHIPPED_DIR / "lobforecast_binance-usdm-btcusdt_h5-10-15-20.pt"
# Where inputs are compared: rows of the Binance spot book (one a second), the forecaster's on both books
PROBE_ROWS = (9, 29, 60, 97, 150, 201, 233, 280, 330, 350)


def demo_symbols() -> dict[Venue, tuple[str, ...]]:
    return {Venue(v): tuple(s) for v, s in read_manifest(RECORDING)["symbols"].items()}


def spec_of(path: Path) -> dict[str, Any]:
    _, meta = load_checkpoint(path, map_location="cpu")
    spec: dict[str, Any] = meta.extra["inputs"]
    return spec


@dataclass
class Exported:
    csv: Path
    data: LobData
    valid_from_ms: dict[tuple[Venue, str], int | None]


@dataclass
class Replayed:
    rings: RingSet
    inputs: dict[tuple[str, int], Any] = field(default_factory=dict)  # (checkpoint, grid time) -> input or None


@pytest.fixture(scope="module")
def settings() -> BotSettings:
    return BotSettings()  # defaults, no config file: the bot's own [ring] and [book] settings


@pytest.fixture(scope="module")
def exported(settings: BotSettings, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The demo as ``python -m bot books`` writes it on the bot's fine grid (1 s x 10 levels)."""
    out = tmp_path_factory.mktemp("export") / "fine.csv"
    with open(out, "w", newline="", encoding="utf-8") as fh:
        exp = BooksExport(settings, demo_symbols(), settings.ring.fine_interval_ms, settings.ring.fine_levels, fh)
        exp.run(iter_frames(RECORDING))
    books = exp.summary()["books"]
    valid = {key: books[f"{key[0].value}/{key[1]}"]["valid_from_ms"] for key in exp.grids.sinks}
    return Exported(out, load_books_csv([out]), valid)


class ProbingClock:
    """A replay's clock (``bot.venues.base.ReplayClock``): ``rings.on_time`` on the receive time before every
    record it has work for, as ``OfflineFeed.run_frames`` drives it; and at each probe time (a grid time t)
    ``probe(t)`` right after the rings were ticked just past t (``t + 1``), before any record received after t
    is handed in: what a worker ticking then reads."""

    def __init__(self, rings: RingSet, probes: list[int], probe: Callable[[int], None]) -> None:
        self.rings = rings
        self._probes = sorted(probes)
        self._probe = probe

    @property
    def due(self) -> int:
        nxt = self._probes[0] if self._probes else 2**63 - 1
        return min(self.rings.due, nxt)

    def on_time(self, ts_ns: int) -> None:
        while self._probes and ts_ns > self._probes[0]:
            t = self._probes.pop(0)
            self.rings.on_time(t + 1)  # the rows of every grid time <= t
            self._probe(t)
        self.rings.on_time(ts_ns)


@pytest.fixture(scope="module")
def replayed(settings: BotSettings, exported: Exported) -> Replayed:
    """The demo replayed into the bot's rings, with the shipped book models' inputs built at the probes."""
    symbols = demo_symbols()
    bus = EventBus()
    feed = OfflineFeed(settings, symbols, bus.publish)
    rings = RingSet.from_settings(settings.model_copy(update={"venues": {
        v: settings.venues[v].model_copy(update={"symbols": syms, "enabled": True}) for v, syms in symbols.items()}}),
        feed.book)  # fmt: skip
    assert sorted(rings.keys()) == sorted((v, s) for v, syms in symbols.items() for s in syms)
    rings.attach(bus)
    source = RingWindowSource(rings, KlineStore(settings.ring.kline_capacity))
    specs = {"tabl": spec_of(TABL), "lobforecast": spec_of(FORECASTER)}
    out = Replayed(rings)

    def probe(t: int) -> None:
        for name, spec in specs.items():
            out.inputs[(name, t)] = build_input(spec, source, venue=SPOT[0].value if name == "tabl" else USDM[0].value,
                                                symbol="BTCUSDT")

    times = exported.data.books[(SPOT[0].value, SPOT[1])][0]
    feed.run_frames(iter_frames(RECORDING), clock=ProbingClock(rings, [int(times[i]) for i in PROBE_ROWS], probe))
    return out


def test_the_export_and_a_replay_write_the_same_fine_grid_rows_for_every_book(
    exported: Exported, replayed: Replayed, settings: BotSettings
) -> None:
    books = exported.data.books
    assert len(books) == 9  # every book the demo carries
    rows = 0
    keys = replayed.rings.keys()  # a list (GridSet.keys), every (venue, symbol) of the demo
    for key in keys:
        grid = replayed.rings.fine(*key)
        want_t, want_rows = books[(key[0].value, key[1])]
        assert len(grid) < settings.ring.fine_capacity  # the ring still holds every row it was given
        np.testing.assert_array_equal(grid.times(), want_t, err_msg=f"{key}: grid times")
        np.testing.assert_array_equal(grid.window(), want_rows, err_msg=f"{key}: rows")  # NaN == NaN here
        rows += len(grid)
    assert rows > 1000
    # the CSV holds nothing else (the header, then one line per row)
    with open(exported.csv, newline="") as fh:
        assert sum(1 for _ in csv.reader(fh)) == 1 + rows


def test_rows_are_stamped_by_receive_time_from_the_record_that_made_each_book_valid(exported: Exported) -> None:
    """The Binance spot book becomes valid with its REST snapshot: its first row is the first grid time at or
    after that record's receive time (23:54:14.2 -> 23:54:15), a second before the venue's own clock says
    (the diffs applied with the snapshot carry E = 23:54:15.4: an exchange-time grid would start at 23:54:16)."""
    snapshot_ns = next(r[0] for r in iter_rows(RECORDING) if r[1] == "binance_spot" and r[2] == "snapshot")
    times, _ = exported.data.books[(SPOT[0].value, SPOT[1])]
    assert exported.valid_from_ms[SPOT] == snapshot_ns // NS_PER_MS
    assert times[0] == -(-snapshot_ns // 10**9) * 10**9 == 1723161255 * 10**9
    # every venue on one clock: the spot and USD-M books (different venues, different exchange clocks) have
    # rows at the same grid times wherever both have rows (the USD-M session lies within the spot one)
    usdm_t, _ = exported.data.books[(USDM[0].value, USDM[1])]
    assert len(usdm_t) == 249
    assert np.isin(usdm_t, times).all()


@pytest.mark.parametrize("name", ["tabl", "lobforecast"])
def test_the_model_inputs_from_the_training_csv_and_from_the_rings_are_the_same_bits(
    name: str, exported: Exported, replayed: Replayed
) -> None:
    spec = spec_of(TABL if name == "tabl" else FORECASTER)
    assert spec["time_base"] == TIME_BASE  # trained on this grid: its worker serves it
    venue = SPOT[0].value if name == "tabl" else USDM[0].value
    lob = {(v, s, spec["grid"]): arrays for (v, s), arrays in exported.data.books.items()}
    train_src = ArrayWindowSource(lob=lob)
    built = 0
    probes = [t for (n, t) in replayed.inputs if n == name]
    assert len(probes) == len(PROBE_ROWS)
    for t in probes:
        served = replayed.inputs[(name, t)]
        trained = build_input(spec, train_src.at(t), venue=venue, symbol="BTCUSDT")
        if trained is None:
            assert served is None, t
            continue
        assert isinstance(served, torch.Tensor)
        assert isinstance(trained, torch.Tensor)
        assert served.dtype == trained.dtype
        assert served.shape == trained.shape
        assert torch.equal(served, trained), t
        built += 1
    assert built == (len(PROBE_ROWS) if name == "tabl" else 5)  # the forecaster: while both books have 30 rows
