"""Ingest benchmark: how fast the bot turns recorded venue traffic into books and LOB grids.

    python bench/ingest.py [--shared DIR] [--repeat N] [--profile CASE]

For each case (a venue and its symbols from the real recordings in ``shared/data``) two pipelines run,
each on every message of the session:

* **ours**: the native recording (zstd) -> ``bot.recording.iter_frames`` (only the case's venues' frames of
  each group decompressed, the REST instrument lists left compressed as ``bot books`` leaves them (their
  receive times are in the group header), each frame scanned once by a compiled loop: receive times and
  field offsets, frames left in the decompressed bytes) -> the venue adapter
  (``make_adapter(..., live=False)``, ``on_ws_frames``: Binance routes a block's frames in one compiled
  pass and skips the streams it does not use, bookTicker, without touching them in Python; msgspec
  decodes each handled frame's head, the compiled reader takes the levels' JSON straight into
  ``bot.book.OrderBook``'s numba kernels; sync checks, health, events) -> ``EventBus`` -> ``RingSet``
  (``LobGrid`` sampling at the configured coarse and fine grids, ticked as a replay ticks them: before a
  record whenever a grid is due), driven by ``bot.export.OfflineFeed``. The numba kernels are loaded (or
  compiled, on a first run) before any timing.
* **baseline**: what one would write in an afternoon: the original file (gzip or zstd lines) ->
  ``orjson.loads`` per line -> a dict book per symbol with an incrementally kept best bid/ask (deleting
  the best rescans the side), with the same sync rule (drop diffs older than the snapshot) and no grid.

Both count level updates the same way (every level of an applied snapshot or diff; diffs dropped before
the sync are not counted), and the table shows both counts so a mismatch is visible. Speed is level
updates per second and "x real time" (the session's receive-time span / processing time). Processing
time is this process's CPU time (``time.process_time``), so other work on a shared machine does not
count against either side; each pipeline runs ``--repeat`` times (default 5), alternating with the
other, and the best time counts. Recordings are converted to the native format first
(not timed). The issue's target is ours/baseline >= 3x.

``--profile CASE`` runs ``ours`` once under cProfile for that case and prints where the time goes.

**Against the anchors' baseline A** (``--anchors DIR``, default ``../shared/anchors`` when it is there; see
``bench/anchors.py``): for the Binance cases the anchors' own baseline A (``common.baseline_replay``, imported
from DIR) runs on the same original files in this process too, interleaved with the other two, and the
table adds its median CPU time and ``ours/A`` = median A / median ours, the same measure of the same
work as the anchors' "ratio vs A" (they count A's depth messages, applied diffs plus snapshots, over the
same files, so a ratio of rates is a ratio of times), which ``run_all.sh`` there reports for nautilus_trader
and hftbacktest. ``binance_spot BTC`` and ``binance_usdm BTC`` are the anchors' two datasets; ETH is not
theirs (A runs on it all the same). Bybit has no baseline A (another format).

**Bybit as one venue** (``bybit both x6``): the one Bybit recording holds both markets (its linear and spot
connections), so beside a row per market, which reads the whole file for one market's books, a row replays
both markets in one pass, as a user replays that recording (ours: one ``OfflineFeed`` with both adapters;
the baseline: one pass with both markets' books). It is left out of the "all cases" total, whose per-market
rows hold the same work.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import gzip
import io
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import orjson
import structlog
import zstandard

from bot.book import warm_up
from bot.bus import EventBus
from bot.config import BotSettings
from bot.events import Venue
from bot.export import FEED_TEXTS, OfflineFeed
from bot.grid_set import RingSet
from bot.importers import convert
from bot.recording import iter_frames, iter_records

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/anchors.py, when imported from elsewhere
from anchors import anchors_dir, dataset_of, load_common, run_baseline_a

HFT = "hftbacktest/examples"
CRYPTOFEED = "cryptofeed/v3/sample_data/BYBIT.jsonl.zst"


@dataclass(frozen=True)
class Case:
    name: str
    venue: Venue
    symbols: tuple[str, ...]
    fmt: str  # hftbacktest | cryptofeed
    files: tuple[str, ...]
    also: tuple[tuple[Venue, tuple[str, ...]], ...] = ()  # more venues of the same files, in the same pass

    @property
    def books(self) -> dict[Venue, tuple[str, ...]]:
        return {self.venue: self.symbols, **dict(self.also)}


ETH_USDM = "hftbacktest/73bfa17/examples/usdm"
CASES = (
    Case("binance_spot BTC", Venue.BINANCE_SPOT, ("BTCUSDT",), "hftbacktest",
         (f"{HFT}/spot/btcusdt_20240808.gz", f"{HFT}/spot/btcusdt_20240809.gz")),
    Case("binance_usdm BTC", Venue.BINANCE_USDM, ("BTCUSDT",), "hftbacktest", (f"{HFT}/usdm/btcusdt_20240808.gz",)),
    Case("binance_usdm ETH", Venue.BINANCE_USDM, ("ETHUSDT",), "hftbacktest",
         (f"{ETH_USDM}/ethusdt_20240718.gz", f"{ETH_USDM}/ethusdt_20240719.gz")),
    Case("bybit_linear x4", Venue.BYBIT_LINEAR, ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"), "cryptofeed",
         (CRYPTOFEED,)),
    Case("bybit_spot x2", Venue.BYBIT_SPOT, ("BTCUSDT", "ETHUSDT"), "cryptofeed", (CRYPTOFEED,)),
    Case("bybit both x6", Venue.BYBIT_LINEAR, ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"), "cryptofeed",
         (CRYPTOFEED,), ((Venue.BYBIT_SPOT, ("BTCUSDT", "ETHUSDT")),)),
)  # fmt: skip


@dataclass
class Result:
    seconds: float
    level_updates: int
    messages: int


# -- ours ---------------------------------------------------------------------------------------------


def run_ours(case: Case, recording: Path, settings: BotSettings) -> Result:
    bus = EventBus()
    books = case.books
    feed = OfflineFeed(settings, books, bus.publish)
    rings = RingSet(settings.ring, feed.book, [(v, s) for v, syms in books.items() for s in syms])
    rings.attach(bus)
    t0 = time.process_time()
    frames = iter_frames(recording, venues=[v.value for v in books], texts=FEED_TEXTS)
    feed.run_frames(frames, clock=rings)  # ticked before every record
    dt = time.process_time() - t0
    stats = [feed.adapters[v].stats for v in books]
    return Result(dt, sum(s.level_updates for s in stats), sum(s.messages for s in stats))


# -- the naive baseline -------------------------------------------------------------------------------


class NaiveBook:
    """Two dicts and an incrementally kept best bid/ask; deleting the best rescans that side."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.best_bid = float("-inf")
        self.best_ask = float("inf")

    def reset(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.bids = {float(p): float(q) for p, q in bids}
        self.asks = {float(p): float(q) for p, q in asks}
        self.best_bid = max(self.bids, default=float("-inf"))
        self.best_ask = min(self.asks, default=float("inf"))

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        for ps, qs in bids:
            p, q = float(ps), float(qs)
            if q:
                self.bids[p] = q
                if p > self.best_bid:
                    self.best_bid = p
            elif self.bids.pop(p, None) is not None and p == self.best_bid:
                self.best_bid = max(self.bids, default=float("-inf"))
        for ps, qs in asks:
            p, q = float(ps), float(qs)
            if q:
                self.asks[p] = q
                if p < self.best_ask:
                    self.best_ask = p
            elif self.asks.pop(p, None) is not None and p == self.best_ask:
                self.best_ask = min(self.asks, default=float("inf"))


def _gzip_lines(path: Path) -> Iterator[bytes]:
    with gzip.open(path, "rb") as fh:
        yield from fh


def _zstd_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as zr:
        yield from io.BufferedReader(zr)


def baseline_binance(case: Case, shared: Path) -> Result:
    """hftbacktest lines: ``<ns> <json>``; diffs before the snapshot are buffered, then the old ones dropped."""
    futures = case.venue is Venue.BINANCE_USDM
    book = NaiveBook()
    pending: list[dict[str, object]] = []
    synced = False
    levels = messages = 0
    t0 = time.process_time()
    for path in case.files:
        for line in _gzip_lines(shared / path):
            msg = orjson.loads(line[line.index(b" ") + 1 :])
            messages += 1
            if "lastUpdateId" in msg:
                last = msg["lastUpdateId"]
                book.reset(msg["bids"], msg["asks"])
                levels += len(msg["bids"]) + len(msg["asks"])
                for d in pending:
                    if d["u"] >= last if futures else d["u"] > last:
                        book.apply(d["b"], d["a"])  # type: ignore[arg-type]
                        levels += len(d["b"]) + len(d["a"])  # type: ignore[arg-type]
                pending.clear()
                synced = True
                continue
            data = msg["data"]
            if data.get("e") != "depthUpdate":
                continue  # bookTicker, trade: parsed, not used
            if not synced:
                pending.append(data)
                continue
            book.apply(data["b"], data["a"])
            levels += len(data["b"]) + len(data["a"])
    return Result(time.process_time() - t0, levels, messages)


def baseline_bybit(case: Case, shared: Path) -> Result:
    """cryptofeed JSONL: the record, then its ``data`` string; orderbook snapshots reset, deltas apply."""
    suffixes = tuple(f"/v5/public/{'linear' if v is Venue.BYBIT_LINEAR else 'spot'}" for v in case.books)
    conns: dict[str, str] = {}  # connection -> its market
    books: dict[tuple[str, str], NaiveBook] = {}
    levels = messages = 0
    t0 = time.process_time()
    for line in _zstd_lines(shared / case.files[0]):
        r = orjson.loads(line)
        t = r["t"]
        if t == "connect" and r["addr"].endswith(suffixes):
            conns[r["conn"]] = r["addr"].rpartition("/")[2]
        if t != "recv" or r["conn"] not in conns:
            continue
        msg = orjson.loads(r["data"])
        messages += 1
        topic = msg.get("topic", "")
        if not topic.startswith("orderbook."):
            continue
        d = msg["data"]
        book = books.setdefault((conns[r["conn"]], d["s"]), NaiveBook())
        if msg["type"] == "snapshot":
            book.reset(d["b"], d["a"])
        else:
            book.apply(d["b"], d["a"])
        levels += len(d["b"]) + len(d["a"])
    return Result(time.process_time() - t0, levels, messages)


def bench_settings() -> BotSettings:
    """The defaults, with the depth streams these sessions were recorded with (USD-M ``@depth@0ms``):
    the configuration a collector of these sessions had, so frames take the adapter's routed path."""
    base = BotSettings()
    usdm = base.venues[Venue.BINANCE_USDM].model_copy(update={"depth": "depth@0ms"})
    return base.model_copy(update={"venues": {**base.venues, Venue.BINANCE_USDM: usdm}})


# -- the run ------------------------------------------------------------------------------------------


def interleaved(n: int, fns: list[Callable[[], Result]]) -> list[list[Result]]:
    """Run ``fns`` alternately ``n`` times each (so a busy machine slows them alike); every run of each."""
    out: list[list[Result]] = [[] for _ in fns]
    for _ in range(n):
        for fn, runs in zip(fns, out, strict=True):
            gc.collect()
            runs.append(fn())
    return out


def best(runs: list[Result]) -> Result:
    return min(runs, key=lambda r: r.seconds)


def median_s(runs: list[Result]) -> float:
    return statistics.median(r.seconds for r in runs)


def baseline_a(common: ModuleType, case: Case, shared: Path) -> Result:
    """The anchors' baseline A on the case's original files: its CPU time, levels and depth messages."""
    market = "usdm" if case.venue is Venue.BINANCE_USDM else "spot"
    a = run_baseline_a(common, [shared / f for f in case.files], market)
    return Result(a.cpu_s, a.level_updates, a.depth_messages)


def span_seconds(recording: Path, venues: Iterable[Venue]) -> float:
    first = last = 0
    for rec in iter_records(recording, venues=[v.value for v in venues]):
        first = first or rec.ts_recv
        last = rec.ts_recv
    return (last - first) / 1e9


def prepare(shared: Path, tmp: Path) -> dict[str, Path]:
    """Native recordings of every case (cryptofeed converted once for both Bybit venues)."""
    out: dict[str, Path] = {}
    done: dict[tuple[str, ...], Path] = {}
    for i, case in enumerate(CASES):
        if case.files not in done:
            done[case.files] = tmp / f"rec{i}"
            convert(
                case.fmt,
                [shared / f for f in case.files],
                done[case.files],
                case.venue if case.fmt == "hftbacktest" else None,
            )
        out[case.name] = done[case.files]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ingest benchmark: ours vs a naive orjson+dict baseline")
    p.add_argument(
        "--shared", type=Path, default=None, help="shared data dir (default: $BOT_SHARED_DATA or ../shared/data)"
    )
    p.add_argument("--repeat", type=int, default=5, help="runs per pipeline and case; the best counts (default 5)")
    p.add_argument(
        "--profile", default=None, metavar="CASE", help=f"cProfile ours on one case: {[c.name for c in CASES]}"
    )
    p.add_argument(
        "--anchors", type=Path, default=None, metavar="DIR",
        help="the performance anchors' folder, whose common.py baseline A runs beside ours on the Binance cases "
        "(default: ../shared/anchors when present; 'none': skip)",
    )  # fmt: skip
    args = p.parse_args(argv)
    env = os.environ.get("BOT_SHARED_DATA")
    shared = args.shared or (Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (shared / "SOURCES.md").is_file():
        print(f"error: shared data not found at {shared} (use --shared DIR)", file=sys.stderr)
        return 2
    common = None
    if str(args.anchors) != "none":
        found = anchors_dir(args.anchors)
        if found is None and args.anchors is not None:
            print(f"error: no common.py in {args.anchors} (--anchors DIR, or 'none')", file=sys.stderr)
            return 2
        common = load_common(found) if found is not None else None
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    warm_up()
    settings = bench_settings()
    with tempfile.TemporaryDirectory() as tmp:
        recs = prepare(shared, Path(tmp))
        if args.profile:
            case = next((c for c in CASES if c.name == args.profile), None)
            if case is None:
                print(f"error: unknown case {args.profile!r}", file=sys.stderr)
                return 2
            prof = cProfile.Profile()
            prof.runcall(run_ours, case, recs[case.name], settings)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return 0
        head = (f"{'case':<17} {'msgs':>7} {'level upd':>10} {'span s':>7} | {'ours s':>7} {'upd/s':>10} {'x rt':>6} | "
                f"{'base s':>7} {'upd/s':>10} {'x rt':>6} | {'ours/base':>9} | {'A s':>6} {'ours/A':>7}")  # fmt: skip
        print(head)
        print("-" * len(head))
        total_ours = total_base = 0.0
        for case in CASES:
            rec = recs[case.name]
            span = span_seconds(rec, case.books)
            base_fn = baseline_binance if case.fmt == "hftbacktest" else baseline_bybit
            fns: list[Callable[[], Result]] = [
                lambda c=case, r=rec: run_ours(c, r, settings),  # type: ignore[misc]
                lambda c=case, f=base_fn: f(c, shared),  # type: ignore[misc]
            ]
            with_a = common is not None and case.fmt == "hftbacktest"
            if common is not None and with_a:
                fns.append(lambda c=case, m=common: baseline_a(m, c, shared))  # type: ignore[misc]
            runs = interleaved(args.repeat, fns)
            ours, base = best(runs[0]), best(runs[1])
            if not case.also:  # the per-market rows hold the same work
                total_ours += ours.seconds
                total_base += base.seconds
            same = "" if ours.level_updates == base.level_updates else f"  (baseline counted {base.level_updates})"
            a_cols = f"{'-':>6} {'-':>7}"
            if with_a:
                a_s = median_s(runs[2])
                mark = "" if dataset_of(case.files) else "*"
                a_cols = f"{a_s:>6.3f} {a_s / median_s(runs[0]):>6.2f}x{mark}"
            print(f"{case.name:<17} {ours.messages:>7} {ours.level_updates:>10} {span:>7.1f} | "
                  f"{ours.seconds:>7.3f} {ours.level_updates / ours.seconds:>10,.0f} {span / ours.seconds:>6.0f} | "
                  f"{base.seconds:>7.3f} {base.level_updates / base.seconds:>10,.0f} {span / base.seconds:>6.0f} | "
                  f"{base.seconds / ours.seconds:>8.2f}x | {a_cols}{same}")  # fmt: skip
        ratio = total_base / total_ours
        print("-" * len(head))
        print(f"all cases (the two-market row aside): ours {total_ours:.3f} s, baseline {total_base:.3f} s, "
              f"ours/baseline {ratio:.2f}x (target >= 3x: {'met' if ratio >= 3 else 'NOT met'})")  # fmt: skip
        print("ours/base: best CPU times of the naive baseline / ours; ours/A: median CPU time of the anchors' "
              "baseline A / ours (their measure; * a dataset that is not the anchors').")
    return 0


if __name__ == "__main__":
    sys.exit(main())
