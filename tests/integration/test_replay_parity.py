"""Parity: one recording through ``run --paper --sim`` and through the replay engine, the same signals and fills.

The first ``EXCERPT_S`` seconds of the embedded demo's Binance spot BTCUSDT session (its REST snapshot
included) are written as a native recording and played twice:

* **live**: ``bot.app.run_bot(sim=True)``: the loopback exchange paces the records onto real sockets at
  speed 1, the collector reads them, the grid timer samples the rings on the wall clock, the model workers
  infer on their own threads, the paper matcher fills on the live books;
* **replay**: ``replay.engine.Replay`` on the same recording: the recorded receive time is the clock,
  grid ticks between records, models inline.

**The clock mapping.** The sim plays a record received at ``r`` at the wall time ``W0 + (r - R0) / speed``
(``bot.sim.loop.VenueRunner``: ``R0`` is the first websocket record's receive time, ``W0`` the wall time
the pass starts, ``runner.start_wall_ns``). The LOB grid is 1 s of receive time, so the run uses speed 1
and ``[sim] align_ms = 1000``: ``W0`` is then congruent to ``R0`` modulo 1 s, the offset ``W0 - R0`` is a
whole number of seconds and the live grid time ``g + offset`` holds what the replay's grid time ``g``
holds. A live record arrives ``d`` later than its mapped time (the socket and the event loop: about a
millisecond in process) and the live timer samples ``late`` after its grid time, so a row differs only
where a book record lies in ``[g - max d, g + max late]`` around its boundary ``g`` (it falls on the
other side of the boundary live). Both are measured here (every live ``BookUpdate`` is matched to its
record by update id, every timer tick is logged), so the bound needs no guess about the machine's speed:
rows whose live book (the last update applied when the timer fired) is the replay's book must be
identical, and a row whose book differs must have such a boundary record. In this excerpt the depth
diffs (every 100 ms) lie at least 36 ms after and 44 ms before every whole second (no record within the
5 ms ``NEAR_NS``), so unless a live delay reaches ~36 ms no row differs.

**Signals.** The TABL and multi-head TABL signals (model, symbol, grid time, probabilities): the live run
joins the recording when its collector connects (the sim plays from its own start), so the replay trades
from the live run's first signal on (``from_ns``: earlier records still build its book and rows); from
there to the last row both runs have, the two sets of grid times must be equal, and on every tick whose
ten input rows are identical in both rings the probabilities must agree to float32 rounding
(``PROB_TOL``: the live forward pass runs on the worker's thread). Ticks whose window holds a row that
differs are counted, not compared (a boundary record can move a row's contents, never whether it exists:
a worker publishes at every tick once its window is full).

**Orders and fills** (``bot.execution.paper``: a decision at t arrives at t + ``latency_ms`` and meets
the book as of the first market event at or after that; live, the trading timer's 20 ms tick is such an
event too, and a live decision itself comes a model's inference time after its grid time). Per strategy
the same orders (side, quantity) in the same order, up to one grid step before the recording's end (live
goes on after it on a frozen book, the replay stops at its last record) and before the first signal on a
row that differs, if any (from there the strategies may part ways). A quantity comes from the mid
the strategy saw at its decision: equal where both decided on the same book (the same last update id),
else within one lot. Each order is checked against the latency model in its own run's clock: its first
fill is at or after decision + ``latency_ms`` with no book update or trade in between (it met the first
one), at the best opposite price of the book then (the last update before the fill; unless our own
earlier takes there may have used that level up). Where the two runs' arrival books are the same update
the fills must be equal; where they differ (a depth diff came between the replay's arrival and the live
one's, which is later by the live decision lag and up to a timer step) each is still its own book's
price, and the test reports how many there are.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from numpy.typing import NDArray

from bot.app import run_bot
from bot.book import warm_up
from bot.bus import EventBus
from bot.config import BotSettings, load_settings
from bot.events import BookUpdate, Signal, Trade, Venue
from bot.grid_set import RingSet
from bot.orders import Fill, OrderStatus, OrderUpdate
from bot.recording import Record, iter_records
from bot.recording_writer import RecordingWriter
from bot.ring import LobGrid
from bot.sim.cli import DEMO_DIR
from bot.sim.loop import VenueRunner
from bot.sim.replay import Timeline, VenueReplay
from bot.sim.server import LoopbackExchange
from models.checkpoint import load_checkpoint
from replay import engine
from replay.sources import open_sources

pytestmark = pytest.mark.integration

# imported before the live run: its workers import torch after the sim has started playing
torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
SPOT = (Venue.BINANCE_SPOT, "BTCUSDT")
EXCERPT_S = 40.0
GRID_NS = 1_000_000_000
MODELS = ("tabl_binance-spot-btcusdt_h10", "mhtabl_binance-spot-btcusdt_h10")
PROB_TOL = 1e-6  # float32 rounding of one forward pass on another thread (probabilities are ~0.3)
NEAR_NS = 5_000_000  # reported: book records this close to a grid boundary

# Both shipped TABL checkpoints, thresholds low enough that each enters several times in 30 s of signals.
# hold_s = 5.5: a time exit half-way between two grid ticks. With the horizon's 10 s (a whole number of
# grid steps) a signal at the tick where the hold runs out would meet the exit in the replay (decision at
# the grid time itself) and just miss it live (a model's inference later), an order of events, not a model,
# difference.
CONFIG = """
[venues.binance_spot]
symbols = ["BTCUSDT"]
depth = "depth@100ms"
snapshot_limit = 1000
klines = []

[models]
dir = "{models}"

[sim]
data = "{data}"
speed = 1.0
loop = false
align_ms = 1000

[[strategies]]
name = "tabl_parity"
kind = "threshold"
model = "tabl_binance-spot-btcusdt_h10"
venue = "binance_spot"
symbols = ["BTCUSDT"]
threshold = 0.36
notional = 100
hold_s = 5.5

[[strategies]]
name = "mhtabl_parity"
kind = "threshold"
model = "mhtabl_binance-spot-btcusdt_h10"
venue = "binance_spot"
symbols = ["BTCUSDT"]
threshold = 0.38
notional = 100
hold_s = 5.5
"""


# -- what a run published -------------------------------------------------------------------------------


@dataclass
class Order:
    strategy: str
    side: str
    qty: Decimal
    decided_ns: int
    decision_u: int  # the last book update before the decision (the mid the strategy sized it from)
    fills: list[tuple[Decimal, Decimal]] = field(default_factory=list)
    arrival_u: int = -1  # the last book update before its first fill (the book it met)
    filled_ns: int = -1  # its first fill's time
    fills_before: int = -1  # how many fills of the run came before its first (Trace.fill_log)
    status: OrderStatus = OrderStatus.NEW


class Trace:
    """Every event the comparison reads, from a handler subscribed before any other (so a book update is
    seen before whatever it triggers), and the rings' ticks with the last book update applied then."""

    def __init__(self, bus: EventBus) -> None:
        self.last_u = -1
        self.books: list[tuple[int, int]] = []  # (ts_recv, update_id)
        self.top: dict[int, tuple[float, float, float, float]] = {}  # update_id -> bid, bid size, ask, ask size
        self.signals: list[Signal] = []
        self.orders: dict[str, Order] = {}
        self.ticks: list[tuple[int, int]] = []  # (tick time, last update id then)
        self.market: list[int] = []  # receive times of the events the paper matcher is driven by
        self.fill_log: list[tuple[str, float, Decimal]] = []  # every fill: side, price, qty
        bus.subscribe(BookUpdate, self._book)
        bus.subscribe(Trade, lambda t: self.market.append(t.ts_recv))
        bus.subscribe(Signal, self.signals.append)
        bus.subscribe(OrderUpdate, self._order)
        bus.subscribe(Fill, self._fill)

    def _book(self, b: BookUpdate) -> None:
        self.last_u = b.update_id
        self.books.append((b.ts_recv, b.update_id))
        self.market.append(b.ts_recv)
        self.top[b.update_id] = (b.bid_px, b.bid_sz, b.ask_px, b.ask_sz)

    def _order(self, o: OrderUpdate) -> None:
        if o.status is OrderStatus.NEW:
            self.orders[o.client_order_id] = Order(o.strategy, o.side.value, o.qty, o.ts_recv, self.last_u)
        else:
            self.orders[o.client_order_id].status = o.status

    def _fill(self, f: Fill) -> None:
        order = self.orders[f.client_order_id]
        if not order.fills:
            order.arrival_u = self.last_u
            order.filled_ns = f.ts_recv
            order.fills_before = len(self.fill_log)
        order.fills.append((f.qty, f.price))
        self.fill_log.append((f.side.value, float(f.price), f.qty))

    def taken_before(self, o: Order, px: float) -> Decimal:
        """What this run's earlier fills took at ``px`` on ``o``'s side: at most what the matcher still holds
        as taken there (it forgets a level's takes once the book shows the level at another size)."""
        return sum((q for side, p, q in self.fill_log[: o.fills_before] if side == o.side and p == px), Decimal(0))

    def ticked(self, on_time: Callable[[int], None]) -> Callable[[int], None]:
        def tick(ts_ns: int) -> None:
            self.ticks.append((ts_ns, self.last_u))
            on_time(ts_ns)

        return tick

    def row_books(self, times: NDArray[np.int64], shift: int) -> dict[int, int]:
        """Grid time (recorded) -> the last update applied when the tick that wrote its row ran."""
        tick_ts = np.array([t for t, _ in self.ticks], dtype=np.int64)
        out = {}
        for g in times.tolist():
            i = int(np.searchsorted(tick_ts, g + shift, side="right"))  # the first tick after the grid time
            out[g] = self.ticks[i][1]
        return out

    def by_strategy(self) -> dict[str, list[Order]]:
        out: dict[str, list[Order]] = {}
        for o in self.orders.values():  # in the order they were decided
            out.setdefault(o.strategy, []).append(o)
        return out


@dataclass
class Run:
    trace: Trace
    times: NDArray[np.int64]  # the fine grid's row times, in recorded time
    rows: NDArray[np.float64]
    offset: int = 0  # wall - recorded (live)
    extra: dict[str, Any] = field(default_factory=dict)


def _grid(g: LobGrid, offset: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    assert len(g) < g.ring.capacity  # every row is still there
    return np.array(g.times()) - offset, np.array(g.window())


# -- set-up ---------------------------------------------------------------------------------------------


def _excerpt(out: Path) -> list[Record]:
    """The demo's Binance spot session's first EXCERPT_S seconds as a native recording (snapshot included)."""
    recs: list[Record] = []
    for r in iter_records(DEMO_DIR / "recording", venues=[SPOT[0].value]):
        if recs and r.ts_recv - recs[0].ts_recv > EXCERPT_S * 1e9:
            break
        recs.append(r)
    assert any(r.kind == "snapshot" for r in recs)
    with RecordingWriter(out, meta={"built_by": "tests/integration/test_replay_parity.py"}) as w:
        w.write_many(recs)
    return recs


def _settings(tmp: Path) -> BotSettings:
    models = tmp / "models"
    models.mkdir()
    for name in MODELS:  # only the two book models: nothing else loads or infers
        (models / f"{name}.pt").symlink_to(ROOT / "models" / "checkpoints" / f"{name}.pt")
    cfg = tmp / "config.toml"
    cfg.write_text(CONFIG.format(models=models, data=tmp / "rec"))
    return load_settings(cfg)


async def _live(settings: BotSettings, monkeypatch: pytest.MonkeyPatch) -> Run:
    bus = EventBus()
    trace = Trace(bus)
    got: dict[str, Any] = {}
    real_start = LoopbackExchange.start
    real_rings = RingSet.from_settings

    async def start(self: LoopbackExchange) -> None:
        got["sim"] = self
        await real_start(self)

    def rings_of(s: BotSettings, get_book: Any) -> RingSet:
        rings = got["rings"] = real_rings(s, get_book)
        monkeypatch.setattr(rings, "on_time", trace.ticked(rings.on_time))  # the grid timer's ticks
        return rings

    monkeypatch.setattr(LoopbackExchange, "start", start)
    monkeypatch.setattr(RingSet, "from_settings", staticmethod(rings_of))
    status = await run_bot(settings, sim=True, duration=EXCERPT_S + 1.5, status_every=3600, bus=bus)
    runner = got["sim"].runners[SPOT[0]]
    offset = runner.start_wall_ns - runner.replay.tl.t0_ns
    assert offset % GRID_NS == 0, "the sim did not start on the recording's phase"
    times, rows = _grid(got["rings"].fine(*SPOT), offset)
    return Run(trace, times, rows, offset, {"status": status})


def _replay(settings: BotSettings, tmp: Path, from_ns: int, monkeypatch: pytest.MonkeyPatch) -> Run:
    bus = EventBus()
    trace = Trace(bus)
    monkeypatch.setattr(engine, "EventBus", lambda: bus)  # the replay's bus, with the trace first on it
    warm_up()
    rp = engine.Replay(settings, engine.ReplayRequest(open_sources([str(tmp / "rec")]), tmp / "replay",
                                                      from_ns=from_ns))  # fmt: skip
    monkeypatch.setattr(rp.rings, "on_time", trace.ticked(rp.rings.on_time))
    try:
        summary = rp.run()
    finally:
        if not rp.events._fh.closed:
            rp.events.close()
    times, rows = _grid(rp.rings.fine(*SPOT), 0)
    return Run(trace, times, rows, 0, {"summary": summary})


# -- the test -------------------------------------------------------------------------------------------


async def test_run_paper_sim_and_the_replay_give_the_same_signals_and_fills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recs = _excerpt(tmp_path / "rec")
    settings = _settings(tmp_path)
    _, meta = load_checkpoint(ROOT / "models" / "checkpoints" / f"{MODELS[0]}.pt", map_location="cpu")
    window = int(meta.extra["inputs"]["window"])

    live = await _live(settings, monkeypatch)
    off = live.offset
    live_signals = [s for s in live.trace.signals if s.model in MODELS]
    assert live_signals, "the live run published no signal"
    from_ns = min(s.ts_event for s in live_signals) - off
    rep = _replay(settings, tmp_path, from_ns, monkeypatch)
    assert rep.extra["summary"]["bus_handler_errors"] == 0

    # -- the clock: every live book update matched to its record ------------------------------------------
    depth = {}  # update id -> recorded receive time of the diff
    for r in recs:
        if r.kind == "ws" and "@depth" in r.raw[:40]:
            depth[int(orjson.loads(r.raw)["data"]["u"])] = r.ts_recv
    delays = [ts - off - depth[u] for ts, u in live.trace.books if u in depth]
    assert delays, "no live book update matched a recorded diff"
    late = [ts - (ts // GRID_NS) * GRID_NS for ts, _ in live.trace.ticks]
    max_d, max_late = max(delays), max(late)
    timing = (f"live delay after the mapped receive time: median {np.median(delays) / 1e6:.2f} ms, max "
              f"{max_d / 1e6:.2f} ms; timer lateness median {np.median(late) / 1e6:.2f} ms, "
              f"max {max_late / 1e6:.2f} ms")
    last_rec = recs[-1].ts_recv

    # -- rows: identical wherever the live timer saw the replay's book ------------------------------------
    common = sorted(set(live.times.tolist()) & set(rep.times.tolist()))
    assert len(common) > EXCERPT_S / 2, (len(live.times), len(rep.times))
    li = {t: i for i, t in enumerate(live.times.tolist())}
    ri = {t: i for i, t in enumerate(rep.times.tolist())}
    live_u, rep_u = live.trace.row_books(live.times, off), rep.trace.row_books(rep.times, 0)
    boundary = [g for g in common if live_u[g] != rep_u[g]]
    for g in common:
        same = np.array_equal(live.rows[li[g]], rep.rows[ri[g]], equal_nan=True)
        assert same or g in boundary, f"row {g} differs on the same book ({live_u[g]})"
    for g in boundary:  # the diffs one row has and the other lacks: on the other side of the boundary live
        lo_u, hi_u = sorted((live_u[g], rep_u[g]))
        crossed = [t for u, t in depth.items() if lo_u < u <= hi_u]
        assert crossed, f"row {g}: live book {live_u[g]}, replay book {rep_u[g]}"
        assert all(g - max_d <= t <= g + max_late for t in crossed), (g, crossed, timing)
    near = {(t // GRID_NS) * GRID_NS for t in depth.values() if t % GRID_NS <= NEAR_NS}
    near |= {(t // GRID_NS + 1) * GRID_NS for t in depth.values() if GRID_NS - t % GRID_NS <= NEAR_NS}
    differing = [g for g in common if not np.array_equal(live.rows[li[g]], rep.rows[ri[g]], equal_nan=True)]

    # -- signals ------------------------------------------------------------------------------------------
    span = (from_ns, min(common[-1], last_rec))
    lsig = {(s.model, s.symbol, s.ts_event - off): s for s in live_signals if span[0] <= s.ts_event - off <= span[1]}
    rsig = {(s.model, s.symbol, s.ts_event): s for s in rep.trace.signals if span[0] <= s.ts_event <= span[1]}
    assert rsig, "the replay published no signal"
    assert {m for m, _, _ in rsig} == set(MODELS)
    assert sorted(lsig) == sorted(rsig), (sorted(set(lsig) ^ set(rsig)), timing)
    bad_rows = set(differing)
    compared = 0
    skipped: list[int] = []
    for key, rs in rsig.items():
        ls = lsig[key]
        assert (ls.classes, ls.horizon, ls.venue) == (rs.classes, rs.horizon, rs.venue)
        g = key[2]
        if any(g - k * GRID_NS in bad_rows for k in range(window)):
            skipped.append(g)
            continue
        compared += 1
        np.testing.assert_allclose(ls.probabilities, rs.probabilities, rtol=0, atol=PROB_TOL, err_msg=str(key))
    assert compared > 0

    # -- orders and fills ---------------------------------------------------------------------------------
    step = engine.static_instruments(SPOT[0], [SPOT[1]])[0].step_size
    latency_ns = round(settings.paper.venues[SPOT[0]].latency_ms * 1e6)
    # up to a grid step before the recording's end, and before the first signal on a differing row (the
    # strategies may then legitimately part ways)
    cut = min([last_rec - GRID_NS, *(g - 1 for g in skipped)])
    live_orders, rep_orders = live.trace.by_strategy(), rep.trace.by_strategy()
    n_orders = same_book = other_book = other_same_price = 0
    for strategy in sorted(set(live_orders) | set(rep_orders)):
        want = [o for o in rep_orders.get(strategy, []) if o.decided_ns <= cut]
        got = live_orders.get(strategy, [])[: len(want)]
        assert [o.side for o in got] == [o.side for o in want], (strategy, timing)
        for lo_, ro in zip(got, want, strict=True):
            n_orders += 1
            if lo_.decision_u == ro.decision_u:
                assert lo_.qty == ro.qty, (strategy, lo_, ro)
            else:
                assert abs(lo_.qty - ro.qty) <= step, (strategy, lo_, ro)
            taken = []
            for run, o in ((live, lo_), (rep, ro)):  # each at its own book's price, as the latency model says
                assert o.status is OrderStatus.FILLED, o
                assert o.fills, o
                due = o.decided_ns + latency_ns  # in the run's own clock (live: the wall clock)
                assert o.filled_ns >= due, o
                k = bisect.bisect_left(run.trace.market, due)  # no book update or trade met it earlier
                assert k == len(run.trace.market) or run.trace.market[k] >= o.filled_ns, (o, run.trace.market[k])
                bid, bid_sz, ask, ask_sz = run.trace.top[o.arrival_u]
                best, size = (ask, ask_sz) if o.side == "buy" else (bid, bid_sz)
                first = float(o.fills[0][1])
                taken.append(run.trace.taken_before(o, best))
                if Decimal(repr(size)) >= o.qty + taken[-1]:  # the best level has room for all of it
                    assert first == best, (o, best)
                else:  # our own earlier takes there may have used it up: the best or a worse level
                    assert first == best or (first > best if o.side == "buy" else first < best), (o, best)
            if lo_.arrival_u == ro.arrival_u and lo_.qty == ro.qty and taken[0] == taken[1]:
                same_book += 1
                assert lo_.fills == ro.fills, (strategy, lo_, ro)
            else:
                other_book += 1
                other_same_price += lo_.fills == ro.fills
    fills = sum(len(o.fills) for o in rep.trace.orders.values())
    assert n_orders > 0
    assert fills > 0
    assert sum(len(o.fills) for o in live.trace.orders.values()) > 0
    print(f"\nparity: {len(common)} common rows, {len(boundary)} on a different book, {len(differing)} differing, "
          f"{len(near)} grid boundaries with a book record within {NEAR_NS / 1e6:g} ms; signals {len(rsig)} "
          f"({compared} compared, {len(skipped)} on a differing row); orders {n_orders} ({same_book} met the same "
          f"book, {other_book} another, {other_same_price} of them at the same prices); {timing}")


def test_sim_align_starts_playback_on_the_recordings_phase() -> None:
    """``align_ns``: the pass starts at the first wall time congruent to the first receive time; 0: at once."""
    tl = Timeline(Venue.BINANCE_SPOT, t0_ns=1_723_161_253_937_085_768)

    async def nothing() -> None:
        return None

    aligned = VenueRunner(VenueReplay(tl), 1.0, False, lambda i, p: None, nothing, align_ns=GRID_NS)
    plain = VenueRunner(VenueReplay(tl), 1.0, False, lambda i, p: None, nothing)
    a, p = aligned._start(), plain._start()
    assert aligned.start_wall_ns % GRID_NS == tl.t0_ns % GRID_NS
    assert 0 <= a - p < 1.0 + 1e-3  # at most one step later
    assert plain.align_ns == 0
    assert p <= time.monotonic()
