"""``python -m bot books`` over the real recordings, checked against an independent reference.

The reference in this file rebuilds each book straight from the source files (orjson + dicts, the
official sync procedures of shared/PROTOCOLS.md, no bot code) and keeps the venue's decimal strings, so
every exported cell can be compared with ``Decimal`` equality, not just as a float. Grid times are local
receive times (the recorders' own clocks, as the files carry them), the time base of the export, the
live rings and a replay (``bot.ring``).

The golden file is regenerated only on request: ``BOT_REGEN_GOLDEN=1 pytest tests/replay/test_books_export.py``.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import gzip
import io
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from bot.config import BotSettings
from bot.export import export_books, register
from bot.importers import convert, import_hftbacktest, slice_records
from bot.recording import Record, iter_rows
from bot.recording_writer import RecordingWriter

pytestmark = pytest.mark.replay

SPOT_FILES = ("hftbacktest/examples/spot/btcusdt_20240808.gz", "hftbacktest/examples/spot/btcusdt_20240809.gz")
USDM_FILES = ("hftbacktest/examples/usdm/btcusdt_20240808.gz",)
BYBIT_FILE = "cryptofeed/v3/sample_data/BYBIT.jsonl.zst"
GOLDEN = Path(__file__).parent / "golden" / "books_binance_spot_btcusdt_first30s_1000ms_5levels.csv"
FINE_MS = 10  # a grid finer than the depth streams (100 ms spot, ~50 ms USD-M): most updates own a row
LEVELS = 5
MS = 1_000_000
STALE_NS = 10 * 1_000_000_000  # [book] stale_after_s by default: rows stop this long after a book's last update


@pytest.fixture(scope="module")
def shared() -> Path:
    env = os.environ.get("BOT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    if not (root / "SOURCES.md").is_file():
        pytest.skip(f"shared data not found at {root} (set BOT_SHARED_DATA)")
    return root


@pytest.fixture(scope="module")
def settings() -> BotSettings:
    return BotSettings()  # defaults, no config file: the test does not depend on the user's config.toml


# -- the independent reference ------------------------------------------------------------------------

Cell = tuple[str, str]  # (price, size) as the venue wrote them


@dataclass
class RefBook:
    """One book as a list of states: after each applied update (its receive time, ns), the top levels as strings.

    Levels live in a dict price -> (price, size) strings plus a sorted list of prices per side (floats
    only order the levels; what is compared is the venue's text).
    """

    levels: int
    sides: tuple[dict[float, Cell], dict[float, Cell]] = field(default_factory=lambda: ({}, {}))
    prices: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))  # ascending
    times: list[int] = field(default_factory=list)
    states: list[tuple[list[Cell], list[Cell]]] = field(default_factory=list)
    update_ids: list[int] = field(default_factory=list)

    def reset(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.sides = ({}, {})
        self.prices = ([], [])
        self.apply(bids, asks)

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        for side, prices, levels in zip(self.sides, self.prices, (bids, asks), strict=True):
            for p, q in levels:
                key = float(p)
                if Decimal(q):
                    if key not in side:
                        bisect.insort(prices, key)
                    side[key] = (p, q)
                elif side.pop(key, None) is not None:
                    del prices[bisect.bisect_left(prices, key)]

    def record(self, ts_ns: int, update_id: int) -> None:
        (bids, asks), (bid_px, ask_px) = self.sides, self.prices
        top_b = [bids[p] for p in reversed(bid_px[-self.levels :])]
        top_a = [asks[p] for p in ask_px[: self.levels]]
        assert not (top_b and top_a) or Decimal(top_b[0][0]) < Decimal(top_a[0][0]), "reference book crossed"
        assert not self.times or ts_ns >= self.times[-1], "receive times step back"
        self.times.append(ts_ns)
        self.states.append((top_b, top_a))
        self.update_ids.append(update_id)


@dataclass
class BookTicker:
    u: int
    ts_ms: int | None  # USD-M has E; spot has none
    top: tuple[str, str, str, str]  # b, B, a, A


def _hft_lines(shared: Path, files: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """(local receive ns, raw text) of every line."""
    for f in files:
        with gzip.open(shared / f, "rt", encoding="utf-8") as fh:
            for line in fh:
                ts, _, raw = line.rstrip("\n").partition(" ")
                yield int(ts), raw


def binance_reference(
    lines: Iterable[tuple[int, str]], futures: bool, levels: int, stop_after_u: int | None = None
) -> tuple[RefBook, list[BookTicker]]:
    """The official procedure (PROTOCOLS.md 2.4 spot, 3.4 USD-M); the data has no gaps, so any break fails.

    ``stop_after_u``: return as soon as the update with that ``u`` is applied (the whole book is then
    in ``sides``)."""
    book = RefBook(levels)
    buffered: list[dict[str, object]] = []
    snapshot: dict[str, object] | None = None
    last = -1
    tickers: list[BookTicker] = []
    for ts_recv, raw in lines:
        if raw.startswith('{"lastUpdateId"'):
            snapshot = orjson.loads(raw)
            events: list[dict[str, object]] = []
        else:
            msg = orjson.loads(raw)
            d = msg["data"]
            if "@bookTicker" in msg["stream"]:
                tickers.append(BookTicker(d["u"], d.get("E"), (d["b"], d["B"], d["a"], d["A"])))
                continue
            if "@depth" not in msg["stream"]:
                continue
            if last < 0 and snapshot is None:
                buffered.append(d)
                continue
            events = [d]
        if last < 0 and snapshot is not None:  # syncing: the snapshot plus what is buffered
            buffered += events
            big_l = int(snapshot["lastUpdateId"])  # type: ignore[call-overload]
            keep = [e for e in buffered if (e["u"] >= big_l if futures else e["u"] > big_l)]  # type: ignore[operator]
            if not keep:
                buffered = []
                continue
            first = keep[0]
            assert first["U"] <= (big_l if futures else big_l + 1) <= first["u"]  # type: ignore[operator]
            book.reset(snapshot["bids"], snapshot["asks"])  # type: ignore[arg-type]
            for e in keep:
                book.apply(e["b"], e["a"])  # type: ignore[arg-type]
            last = int(keep[-1]["u"])  # type: ignore[call-overload]
            book.record(ts_recv, last)  # valid from the record that completed the sync
            continue
        for e in events:
            assert (e["pu"] == last) if futures else (e["U"] == last + 1), "break in the depth stream"
            book.apply(e["b"], e["a"])  # type: ignore[arg-type]
            last = int(e["u"])  # type: ignore[call-overload]
            book.record(ts_recv, last)
            if last == stop_after_u:
                return book, tickers
    assert stop_after_u is None, f"no update {stop_after_u}"
    return book, tickers


def bybit_reference(shared: Path, levels: int) -> dict[tuple[str, str], RefBook]:
    """Bybit v5: a snapshot resets the book, deltas apply (u + 1 each; the session has no break)."""
    books: dict[tuple[str, str], RefBook] = {}
    conn_venue: dict[str, str] = {}
    with open(shared / BYBIT_FILE, "rb") as fh:
        text = zstandard.ZstdDecompressor().stream_reader(fh).read().decode()
    for line in text.splitlines():
        r = orjson.loads(line)
        if r["t"] == "connect":
            conn_venue[r["conn"]] = "bybit_linear" if r["addr"].endswith("/linear") else "bybit_spot"
        if r["t"] != "recv" or '"topic":"orderbook.' not in r["data"]:
            continue
        m = orjson.loads(r["data"])
        d = m["data"]
        key = (conn_venue[r["conn"]], d["s"])
        if m["type"] == "snapshot":
            book = books[key] = RefBook(levels)
            book.reset(d["b"], d["a"])
        else:
            book = books[key]
            assert d["u"] == book.update_ids[-1] + 1, "break in the Bybit stream"
            book.apply(d["b"], d["a"])
        book.record(round(float(r["ts"]) * 1e9), int(d["u"]))  # cryptofeed's receive time, in seconds
    return books


# -- helpers ----------------------------------------------------------------------------------------------


def read_rows(path: Path) -> tuple[list[str], dict[tuple[str, str], list[list[str]]]]:
    with open(path, newline="") as fh:
        rd = csv.reader(fh)
        header = next(rd)
        by_book: dict[tuple[str, str], list[list[str]]] = {}
        for row in rd:
            by_book.setdefault((row[1], row[2]), []).append(row)
    return header, by_book


def grid_times(ref: RefBook, interval_ms: int, end_ns: int) -> list[int]:
    """The grid times (ns) that must have a row: from the first at or after the book became valid to the
    last before the recording's last receive time ``end_ns``, except those more than ``STALE_NS`` after the
    book's last update before them (the data has no gap)."""
    iv = interval_ms * MS
    out = []
    g = -(-ref.times[0] // iv) * iv
    k = 0
    while g < end_ns:
        while k + 1 < len(ref.times) and ref.times[k + 1] <= g:
            k += 1
        if g - ref.times[k] <= STALE_NS:
            out.append(g)
        g += iv
    return out


def assert_rows_equal_reference(
    rows: list[list[str]], ref: RefBook, interval_ms: int, levels: int, end_ns: int
) -> None:
    """Every row equals the reference state at its grid time, cell for cell; no grid point is missing.

    Cells are compared as text with ``repr(float(venue string))``, and each distinct venue string is
    checked once to read back as the same decimal number, so equality is exact and cheap.
    """
    times = [int(r[0]) * MS for r in rows]
    assert times == grid_times(ref, interval_ms, end_ns)
    expected: dict[int, list[str]] = {}  # reference state index -> the cells it must produce
    seen: set[str] = set()
    for t, row in zip(times, rows, strict=True):
        k = bisect.bisect_right(ref.times, t) - 1
        assert k >= 0, f"row before the first reference state: {row[0]}"
        want = expected.get(k)
        if want is None:
            want = []
            for side in ref.states[k]:
                for i in range(levels):
                    want += [repr(float(x)) for x in side[i]] if i < len(side) else ["", ""]
                    seen.update(side[i] if i < len(side) else ())
            expected[k] = want
        assert row[3:] == want, (row[0], row[3:], want)
    for text in seen:
        assert Decimal(repr(float(text))) == Decimal(text), text


def ticker_checks(rows: list[list[str]], ref: RefBook, tickers: list[BookTicker], interval_ms: int) -> int:
    """(a) Right after a bookTicker whose ``u`` is a depth event's last ``u``, the first grid row that still
    holds that event's state has level 1 equal to the bookTicker. Returns how many were checked."""
    row_at = {int(r[0]) * MS: r for r in rows}
    index = {u: k for k, u in enumerate(ref.update_ids)}
    iv = interval_ms * MS
    checked = 0
    for t in tickers:
        k = index.get(t.u)
        if k is None:
            continue
        g = -(-ref.times[k] // iv) * iv
        if k + 1 < len(ref.times) and g >= ref.times[k + 1]:
            continue  # the next depth event came before the next grid point
        row = row_at.get(g)
        if row is None:
            continue  # past the end of the session
        b, bq, a, aq = t.top
        ask = 3 + 2 * LEVELS
        got = [Decimal(x) for x in (row[3], row[4], row[ask], row[ask + 1])]
        assert got == [Decimal(b), Decimal(bq), Decimal(a), Decimal(aq)], (g, row, t)
        checked += 1
    return checked


def last_receive_time(recording: Path) -> int:
    """The recording's last receive time: the grids are ticked up to it, rows end before it."""
    return max(row[0] for row in iter_rows(recording))


@dataclass
class Session:
    """One Binance session: its native recording, the reference replay and the fine-grid export."""

    recording: Path
    ref: RefBook
    tickers: list[BookTicker]
    csv: Path
    rows: list[list[str]]
    summary: dict[str, Any]
    end_ns: int  # the recording's last receive time


def _session(
    shared: Path, files: tuple[str, ...], futures: bool, venue: str, tmp: Path, settings: BotSettings
) -> Session:
    rec = tmp / "rec"
    convert("hftbacktest", [shared / f for f in files], rec)
    ref, tickers = binance_reference(_hft_lines(shared, files), futures=futures, levels=LEVELS)
    out = tmp / "fine.csv"
    summary = export_books(rec, out, levels=LEVELS, interval_ms=FINE_MS, settings=settings, symbols=["BTCUSDT"])
    _, by_book = read_rows(out)
    rows = by_book.pop((venue, "BTCUSDT"))
    assert by_book == {}
    return Session(rec, ref, tickers, out, rows, summary, last_receive_time(rec))


@pytest.fixture(scope="module")
def spot(shared: Path, settings: BotSettings, tmp_path_factory: pytest.TempPathFactory) -> Session:
    return _session(shared, SPOT_FILES, False, "binance_spot", tmp_path_factory.mktemp("spot"), settings)


@pytest.fixture(scope="module")
def usdm(shared: Path, settings: BotSettings, tmp_path_factory: pytest.TempPathFactory) -> Session:
    return _session(shared, USDM_FILES, True, "binance_usdm", tmp_path_factory.mktemp("usdm"), settings)


# -- Binance ------------------------------------------------------------------------------------------------


def test_binance_spot_btc_rows_equal_an_independent_replay_at_every_grid_point(spot: Session) -> None:
    with open(spot.csv) as fh:
        header = next(csv.reader(fh))
    assert header[:5] == ["ts_ms", "venue", "symbol", "bid_px_1", "bid_sz_1"]
    assert header[-2:] == [f"ask_px_{LEVELS}", f"ask_sz_{LEVELS}"]
    assert_rows_equal_reference(spot.rows, spot.ref, FINE_MS, LEVELS, spot.end_ns)
    book = spot.summary["books"]["binance_spot/BTCUSDT"]
    assert book["rows"] == len(spot.rows)
    assert book["valid_from_ms"] == spot.ref.times[0] // MS == 1723161254206  # the REST snapshot's receive time
    assert (book["gaps"], book["resyncs"]) == (0, 0)
    assert spot.summary["snapshots_fed"] == 1
    # A real row, by hand: the first whole second of the session (receive time).
    first_second = next(r for r in spot.rows if r[0] == "1723161255000")
    assert first_second[3:7] == ["61824.0", "0.2566", "61822.04", "9e-05"]
    assert first_second[13:15] == ["61824.01", "5.5308"]


def test_binance_spot_level_1_equals_each_book_ticker_that_carries_the_last_applied_depth_u(spot: Session) -> None:
    # A spot bookTicker (real time) often arrives before the 100 ms depth event that ends at its u.
    assert ticker_checks(spot.rows, spot.ref, spot.tickers, FINE_MS) >= 500


def test_binance_usdm_btc_rows_equal_an_independent_replay_at_every_grid_point(usdm: Session) -> None:
    assert_rows_equal_reference(usdm.rows, usdm.ref, FINE_MS, LEVELS, usdm.end_ns)
    book = usdm.summary["books"]["binance_usdm/BTCUSDT"]
    assert book["valid_from_ms"] == usdm.ref.times[0] // MS
    assert (book["gaps"], book["resyncs"], book["rows"]) == (0, 0, len(usdm.rows))


def test_binance_usdm_level_1_equals_each_book_ticker_that_carries_the_last_applied_depth_u(usdm: Session) -> None:
    # 126 bookTickers carry the u of a depth event; those with a grid point before the next depth event count.
    assert ticker_checks(usdm.rows, usdm.ref, usdm.tickers, FINE_MS) >= 60


@pytest.mark.parametrize("name", ["spot", "usdm"])
def test_rows_are_strictly_increasing_grid_aligned_and_start_at_the_valid_point(
    name: str, request: pytest.FixtureRequest
) -> None:
    s: Session = request.getfixturevalue(name)
    times = [int(r[0]) * MS for r in s.rows]

    assert all(b > a for a, b in itertools.pairwise(times))
    assert all(t % (FINE_MS * MS) == 0 for t in times)
    assert s.ref.times[0] <= times[0] < s.ref.times[0] + FINE_MS * MS
    assert s.end_ns - FINE_MS * MS <= times[-1] < s.end_ns  # the grids are ticked up to the last record


def test_export_is_deterministic_byte_for_byte(spot: Session, settings: BotSettings, tmp_path: Path) -> None:
    export_books(spot.recording, tmp_path / "again.csv", levels=LEVELS, interval_ms=FINE_MS, settings=settings,
                 symbols=["BTCUSDT"])  # fmt: skip

    assert (tmp_path / "again.csv").read_bytes() == spot.csv.read_bytes()
    assert spot.csv.stat().st_size > 1_000_000


def test_golden_first_30_seconds_of_binance_spot_btc_at_1s_and_5_levels(
    shared: Path, settings: BotSettings, tmp_path: Path
) -> None:
    # Arrange: the first 30 s (receive time) of the 0808 file as a native recording.
    rec = tmp_path / "rec"
    with RecordingWriter(rec) as w:
        w.write_many(slice_records(import_hftbacktest([shared / SPOT_FILES[0]]), 30.0))

    # Act
    export_books(rec, tmp_path / "b.csv", levels=5, interval_ms=1000, settings=settings, symbols=["BTCUSDT"])

    # Assert
    got = (tmp_path / "b.csv").read_bytes()
    if os.environ.get("BOT_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_bytes(got)
    assert GOLDEN.is_file(), f"missing {GOLDEN}; create it with BOT_REGEN_GOLDEN=1"
    assert got == GOLDEN.read_bytes()
    # header + one row per second of receive time from the snapshot (23:54:14.206) to the last record
    # (23:54:43.9): 23:54:15 .. 23:54:43
    assert got.count(b"\n") == 1 + 29


def test_a_gap_invalidates_the_book_until_a_later_snapshot_resyncs_it(
    shared: Path, settings: BotSettings, tmp_path: Path
) -> None:
    """Drop one depth event (a gap), then record a snapshot (made by the reference from the true book) a
    few events later: no rows while the book is invalid, exact rows again after the resync; a snapshot
    recorded while the book is LIVE and nobody asked is skipped."""
    # Arrange: the first 60 s of the spot session, as records.
    recs = list(slice_records(import_hftbacktest([shared / SPOT_FILES[0]]), 60.0))
    depth = [i for i, r in enumerate(recs) if "@depth" in r.raw[:40]]
    k = 200  # the depth event to lose
    payload = [orjson.loads(recs[i].raw)["data"] for i in depth]
    u_snap = payload[k + 5]["u"]
    true_book, _ = binance_reference(((r.ts_recv, r.raw) for r in recs), futures=False, levels=LEVELS,
                                     stop_after_u=u_snap)
    bids, asks = true_book.sides
    snap = orjson.dumps(
        {
            "lastUpdateId": u_snap,
            "bids": [list(bids[p]) for p in sorted(bids, reverse=True)],
            "asks": [list(asks[p]) for p in sorted(asks)],
        }
    ).decode()
    original_snapshot = next(r for r in recs if r.kind == "snapshot")
    edited: list[Record] = []
    for i, r in enumerate(recs):
        if i == depth[k]:
            continue  # the lost event
        edited.append(r)
        if i == depth[k + 10]:
            edited.append(Record(r.ts_recv, r.venue, "snapshot", "BTCUSDT", snap))
        if i == depth[k + 100]:  # long after the resync: a stale, unsolicited copy of the first snapshot
            edited.append(original_snapshot._replace(ts_recv=r.ts_recv))
    with RecordingWriter(tmp_path / "rec") as w:
        w.write_many(edited)
    full, _ = binance_reference(((r.ts_recv, r.raw) for r in recs), futures=False, levels=LEVELS)

    # Act
    summary = export_books(
        tmp_path / "rec", tmp_path / "b.csv", levels=LEVELS, interval_ms=FINE_MS, settings=settings,
        symbols=["BTCUSDT"],
    )  # fmt: skip

    # Assert
    book = summary["books"]["binance_spot/BTCUSDT"]
    assert (book["gaps"], book["resyncs"], book["live_at_end"]) == (1, 1, True)
    assert (summary["snapshots_fed"], summary["snapshots_skipped"]) == (2, 1)
    _, by_book = read_rows(tmp_path / "b.csv")
    rows = by_book[("binance_spot", "BTCUSDT")]
    times = [int(r[0]) * MS for r in rows]
    last_good = recs[depth[k - 1]].ts_recv  # the last update applied before the gap was seen
    seen = recs[depth[k + 1]].ts_recv  # the update that showed the gap: rows up to it were written, then retracted
    valid_again = recs[depth[k + 10]].ts_recv  # the snapshot record, recorded right after this diff
    assert seen - last_good > FINE_MS * MS  # some grid points lie between: their rows are taken back
    assert not [t for t in times if last_good < t < valid_again]
    assert max(t for t in times if t <= last_good) > last_good - FINE_MS * MS
    assert min(t for t in times if t >= valid_again) < valid_again + FINE_MS * MS
    for t, row in zip(times, rows, strict=True):  # every row that exists is the true book at its time
        bids_at, asks_at = full.states[bisect.bisect_right(full.times, t) - 1]
        want = [repr(float(x)) for side in (bids_at, asks_at) for lvl in side[:LEVELS] for x in lvl]
        assert row[3:] == want, row[0]


# -- Bybit -------------------------------------------------------------------------------------------------

BYBIT_BOOKS = [
    ("bybit_linear", "BTCUSDT"),
    ("bybit_linear", "DOGEUSDT"),
    ("bybit_linear", "ETHUSDT"),
    ("bybit_linear", "SOLUSDT"),
    ("bybit_spot", "BTCUSDT"),
    ("bybit_spot", "ETHUSDT"),
]


def test_bybit_six_books_from_the_cryptofeed_session_equal_an_independent_replay(
    shared: Path, settings: BotSettings, tmp_path: Path
) -> None:
    # Arrange
    convert("cryptofeed", [shared / BYBIT_FILE], tmp_path / "rec")
    refs = bybit_reference(shared, LEVELS)
    assert sorted(refs) == BYBIT_BOOKS

    # Act
    summary = export_books(
        tmp_path / "rec", tmp_path / "b.csv", levels=LEVELS, interval_ms=FINE_MS, settings=settings,
        symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"],
    )  # fmt: skip

    # Assert
    _, by_book = read_rows(tmp_path / "b.csv")
    assert sorted(by_book) == BYBIT_BOOKS  # spot SOL and DOGE are not in the session: no rows
    end = last_receive_time(tmp_path / "rec")
    for key in BYBIT_BOOKS:
        assert_rows_equal_reference(by_book[key], refs[key], FINE_MS, LEVELS, end)
        assert summary["books"][f"{key[0]}/{key[1]}"]["valid_from_ms"] == refs[key].times[0] // MS
    assert summary["books"]["bybit_spot/SOLUSDT"]["rows"] == 0
    assert summary["resubscribes_unsatisfied"] == 0


# -- the command ------------------------------------------------------------------------------------------


def _books_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_books_command_writes_the_csv_and_a_json_summary_to_stderr(
    shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "rec"
    with RecordingWriter(rec) as w:
        w.write_many(slice_records(import_hftbacktest([shared / USDM_FILES[0]]), 20.0))

    code = _books_command(["books", str(rec), "--levels", "2", "--interval-ms", "500", "--out", str(tmp_path / "o.csv"),
                           "--symbols", "BTCUSDT"])  # fmt: skip

    assert code == 0
    summary = orjson.loads(capsys.readouterr().err)
    rows = (tmp_path / "o.csv").read_text().splitlines()
    assert rows[0] == "ts_ms,venue,symbol,bid_px_1,bid_sz_1,bid_px_2,bid_sz_2,ask_px_1,ask_sz_1,ask_px_2,ask_sz_2"
    assert summary["books"]["binance_usdm/BTCUSDT"]["rows"] == len(rows) - 1 > 30
    assert summary["messages"] == {"binance_usdm": summary["records"] - 1}
    assert not (tmp_path / "o.csv.tmp").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--levels", "0"], "--levels must be between"),
        (["--interval-ms", "0"], "--interval-ms must be >= 1"),
        (["--venues", "kraken_spot"], "unknown venue"),
    ],
)
def test_books_command_refuses_bad_arguments_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    with RecordingWriter(tmp_path / "rec"):
        pass
    argv = ["books", str(tmp_path / "rec"), "--levels", "5", "--interval-ms", "1000", "--out", str(tmp_path / "o.csv")]
    for i in range(0, len(extra), 2):
        if extra[i] in argv:
            argv[argv.index(extra[i]) + 1] = extra[i + 1]
        else:
            argv += extra[i : i + 2]

    code = _books_command(argv)

    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "o.csv").exists()


def test_books_command_on_a_missing_recording_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = _books_command(["books", str(tmp_path / "nope"), "--levels", "5", "--interval-ms", "1000",
                           "--out", str(tmp_path / "o.csv")])  # fmt: skip

    assert code == 2
    assert "not a native recording directory" in capsys.readouterr().err


def test_books_command_on_a_damaged_recording_fails_cleanly_and_leaves_no_partial_csv(
    shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "rec"
    with RecordingWriter(rec) as w:
        w.write_many(slice_records(import_hftbacktest([shared / SPOT_FILES[0]]), 20.0))
    part = rec / "part-000001.tsv.zst"
    part.write_bytes(part.read_bytes()[:-100])

    out = str(tmp_path / "o.csv")
    code = _books_command(["books", str(rec), "--levels", "5", "--interval-ms", "1000", "--out", out,
                           "--symbols", "BTCUSDT"])  # fmt: skip

    assert code == 2
    assert "truncated or damaged" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()
    assert not (tmp_path / "o.csv.tmp").exists()


def test_csv_cells_are_shortest_round_trip_floats() -> None:
    # The property the export relies on: repr(float(s)) reads back as the same double and, for venue
    # strings of <= 15 significant digits, as the same decimal number.
    for s in ("61837.63000000", "0.00009000", "65114.20", "1.9531", "3424.98", "0.000231", "100.0"):
        assert Decimal(repr(float(s))) == Decimal(s)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([repr(9e-05), ""])
    assert out.getvalue() == "9e-05,\n"


def _bybit_frame(kind: str, ts: int, u: int, bids: list[list[str]], asks: list[list[str]]) -> str:
    data = {"s": "BTCUSDT", "b": bids, "a": asks, "u": u, "seq": u}
    msg = {"topic": "orderbook.200.BTCUSDT", "type": kind, "ts": ts, "data": data, "cts": ts - 5}
    return orjson.dumps(msg).decode()


def test_a_quiet_spell_repeats_the_state_on_every_receive_time_grid_point_until_stale_after_s(
    settings: BotSettings, tmp_path: Path
) -> None:
    # Arrange: a one-level Bybit book received 7 ns after its exchange time, 3 s of silence on a 1 ms grid,
    # two changes, then 16.5 s with nothing but a pong (which moves the clock).
    t0 = 1786310818129
    frames = [
        (t0, _bybit_frame("snapshot", t0, 100, [["65114.20", "6.054"]], [["65114.30", "10.486"]])),
        (t0 + 3000, _bybit_frame("delta", t0 + 3000, 101, [["65114.20", "1.5"]], [])),
        (t0 + 3500, _bybit_frame("delta", t0 + 3500, 102, [], [["65114.30", "0"], ["65115.00", "0.25"]])),
        (t0 + 20_000, '{"success":true,"ret_msg":"pong","conn_id":"c1","op":"ping"}'),
    ]
    with RecordingWriter(tmp_path / "rec") as w:
        for ts, raw in frames:
            w.write(Record(ts * 1_000_000 + 7, "bybit_linear", "ws", "c1", raw))

    # Act
    summary = export_books(
        tmp_path / "rec", tmp_path / "b.csv", levels=2, interval_ms=1, settings=settings, symbols=["BTCUSDT"]
    )

    # Assert: rows from the first grid point after the snapshot was received (t0 + 1 ms, not t0) to
    # stale_after_s (10 s) after the last update, none after: 13,500 rows, more than GRID_CAPACITY
    lines = (tmp_path / "b.csv").read_text().splitlines()
    assert summary["books"]["bybit_linear/BTCUSDT"]["rows"] == len(lines) - 1 == 13_500
    assert [int(x.split(",", 1)[0]) for x in lines[1:]] == list(range(t0 + 1, t0 + 13_501))
    first = "bybit_linear,BTCUSDT,65114.2,6.054,,,65114.3,10.486,,"
    second = "bybit_linear,BTCUSDT,65114.2,1.5,,,65114.3,10.486,,"
    third = "bybit_linear,BTCUSDT,65114.2,1.5,,,65115.0,0.25,,"
    assert lines[1:3001] == [f"{t},{first}" for t in range(t0 + 1, t0 + 3001)]
    assert lines[3001:3501] == [f"{t},{second}" for t in range(t0 + 3001, t0 + 3501)]
    assert lines[3501:] == [f"{t},{third}" for t in range(t0 + 3501, t0 + 13_501)]


# -- the embedded demo (no shared data needed) -----------------------------------------------------------


def test_embedded_demo_recording_rebuilds_every_book_it_carries(settings: BotSettings, tmp_path: Path) -> None:
    from bot.demo import KLINES, RECORDING

    summary = export_books(
        RECORDING, tmp_path / "demo.csv", levels=5, interval_ms=1000, settings=settings,
        symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"],
    )  # fmt: skip

    live = {k: b["rows"] for k, b in summary["books"].items() if b["valid_from_ms"] is not None}
    assert sorted(live) == [
        "binance_spot/BTCUSDT", "binance_usdm/BTCUSDT", "binance_usdm/ETHUSDT", "bybit_linear/BTCUSDT",
        "bybit_linear/DOGEUSDT", "bybit_linear/ETHUSDT", "bybit_linear/SOLUSDT", "bybit_spot/BTCUSDT",
        "bybit_spot/ETHUSDT",
    ]  # fmt: skip
    # One a second of receive time from the snapshot (23:54:14.2) to stale_after_s (10 s) after the
    # session's last update (23:59:59): the recording goes on with other sessions, so the clock does too.
    assert live["binance_spot/BTCUSDT"] == 355  # 23:54:15 .. 00:00:09
    assert live["binance_usdm/BTCUSDT"] == 249  # 23:54:16 .. 23:58:24
    assert all(n >= 40 for n in live.values())
    assert all(b["gaps"] == 0 for b in summary["books"].values())
    for sub in ("binance_spot", "bybit_linear"):
        for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
            lines = (KLINES / sub / f"{sym}_1m.csv").read_text().splitlines()
            assert lines[0] == "timestamp,open,high,low,close,volume"
            assert len(lines) == 1501
