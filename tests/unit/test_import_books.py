"""Every public format, converted (``bot.importers.convert``) and then rebuilt through the offline feed
(``bot.export.OfflineFeed``, the bot's own adapters and sync procedures), checked against the venue's own
top of book and against an independent replay.

Samples: the real recordings of shared/data where a format has one (the cryptofeed Bybit session), and
otherwise files written here in the format's exact shape from real Binance and Bybit messages of those
recordings: cryptofeed v3 captures of Binance spot (combined stream) and USD-M (raw ``/ws/`` stream with
a SUBSCRIBE) with their REST depth snapshots as ``http`` records; Binance depth CSVs; tardis.dev
``incremental_book_L2`` and ``book_snapshot_5`` CSVs; Bybit archives at another depth than configured.

The venue's top of book: Binance ``@bookTicker`` messages (best bid/ask, price and size, after update
``u``) from the hftbacktest files, and Bybit linear ``tickers`` (``bid1Price``/``ask1Price``, deltas
merged) from the cryptofeed session. Bybit tickers are sampled at another instant (``cs``) than the book
(``seq``): a ticker is compared with the book after the last update at or before its ``cs``, where the
book's top is the same after the next update too (so nothing moved in between): prices must all agree,
sizes nearly all (a size can change and change back within one book interval).

The independent reference (orjson, ``Decimal``, the official procedures of PROTOCOLS.md written out
here) never touches bot code.
"""

from __future__ import annotations

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
from bot.events import BookUpdate, Event, Venue
from bot.export import BooksExport, OfflineFeed
from bot.importers import convert, iter_import
from bot.recording import iter_frames, read_manifest

pytestmark = pytest.mark.unit

SPOT = "hftbacktest/examples/spot/btcusdt_20240808.gz"
USDM = "hftbacktest/examples/usdm/btcusdt_20240808.gz"
ETH_USDM = "hftbacktest/73bfa17/examples/usdm/ethusdt_20240718.gz"
BYBIT_CF = "cryptofeed/v3/sample_data/BYBIT.jsonl.zst"
SECONDS = 25.0  # of each Binance session: a few hundred depth events and thousands of bookTickers
LINEAR = ("BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT")

Top = tuple[float, float, float, float]


@pytest.fixture(scope="module")
def shared() -> Path:
    env = os.environ.get("BOT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    if not (root / "SOURCES.md").is_file():
        pytest.skip(f"shared data not found at {root} (set BOT_SHARED_DATA)")
    return root


# -- reading the sources, independently of the importers ---------------------------------------------------


def _hft(path: Path, seconds: float = SECONDS) -> list[tuple[int, str]]:
    """``(local ns, raw)`` of an hftbacktest file, its first ``seconds``."""
    out: list[tuple[int, str]] = []
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as fh:
        for line in fh:
            ts, _, raw = line.rstrip("\n").partition(" ")
            if out and int(ts) - out[0][0] > seconds * 1e9:
                break
            out.append((int(ts), raw))
    return out


def _payload(raw: str) -> str:
    """The raw payload inside a combined-stream message, byte for byte (what ``/ws/<stream>`` sends)."""
    head = raw[: raw.index('"data":') + 7]
    assert raw.startswith('{"stream":"')
    assert raw.endswith("}")
    return raw[len(head) : -1]


def _book_tickers(lines: Iterable[tuple[int, str]]) -> dict[int, Top]:
    """``u`` -> the bookTicker's (bid, bid size, ask, ask size)."""
    out: dict[int, Top] = {}
    for _, raw in lines:
        if "@bookTicker" in raw[:40]:
            d = orjson.loads(raw)["data"]
            out[d["u"]] = (float(d["b"]), float(d["B"]), float(d["a"]), float(d["A"]))
    return out


@dataclass
class Ref:
    """The official procedure, written out: the REST snapshot, the diffs it keeps, and the book after each."""

    snapshot: dict[str, Any]
    snapshot_ts: int
    kept: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (local ns, payload)
    bids: dict[Decimal, str] = field(default_factory=dict)
    asks: dict[Decimal, str] = field(default_factory=dict)

    def apply(self, bids: Iterable[list[str]], asks: Iterable[list[str]]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for p, q in levels:
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = q

    def floats(self) -> tuple[dict[float, float], dict[float, float]]:
        return ({float(p): float(q) for p, q in self.bids.items()}, {float(p): float(q) for p, q in self.asks.items()})

    def top(self, n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bids = sorted(self.bids.items(), reverse=True)[:n]
        asks = sorted(self.asks.items())[:n]
        return [(str(p), q) for p, q in bids], [(str(p), q) for p, q in asks]


def _official(lines: list[tuple[int, str]], futures: bool, upto: int | None = None) -> Ref:
    """Snapshot + kept diffs by PROTOCOLS.md 2.4 (spot) / 3.4 (USD-M); the book after the first ``upto``."""
    ts, raw = next((t, r) for t, r in lines if r.startswith('{"lastUpdateId"'))
    ref = Ref(orjson.loads(raw), ts)
    last = ref.snapshot["lastUpdateId"]
    events = [(t, orjson.loads(r)["data"]) for t, r in lines if "@depth" in r[:40]]
    if futures:
        events = [(t, e) for t, e in events if e["u"] >= last]
        assert events[0][1]["U"] <= last <= events[0][1]["u"]
    else:
        events = [(t, e) for t, e in events if e["u"] > last]
        assert events[0][1]["U"] <= last + 1 <= events[0][1]["u"]
    for (_, a), (_, b) in itertools.pairwise(events):
        assert (b["pu"] == a["u"]) if futures else (b["U"] == a["u"] + 1)
    ref.kept = events
    ref.apply(ref.snapshot["bids"], ref.snapshot["asks"])
    for _, e in events[:upto]:
        ref.apply(e["b"], e["a"])
    return ref


def _bybit_source(shared: Path) -> list[dict[str, Any]]:
    with open(shared / BYBIT_CF, "rb") as fh:
        text = zstandard.ZstdDecompressor().stream_reader(fh).read().decode()
    return [orjson.loads(x) for x in text.splitlines()]


BybitBooks = list[tuple[float, dict[str, Any]]]  # (receive s, orderbook message)


def _bybit_linear(src: list[dict[str, Any]]) -> tuple[BybitBooks, dict[str, list[tuple[int, Top]]]]:
    """The linear connection's orderbook messages (receive s, message) and per symbol its tickers
    ``(cs, top)`` with deltas merged, for tickers that carry a top field."""
    conn = next(r["conn"] for r in src if r["t"] == "connect" and r["addr"].endswith("/linear"))
    books: BybitBooks = []
    tickers: dict[str, list[tuple[int, Top]]] = {}
    merged: dict[str, dict[str, Any]] = {}
    for r in src:
        if r["t"] != "recv" or r["conn"] != conn:
            continue
        m = orjson.loads(r["data"])
        topic = m.get("topic", "")
        if topic.startswith("orderbook."):
            books.append((r["ts"], m))
        elif topic.startswith("tickers."):
            d = m["data"]
            t = merged.setdefault(d["symbol"], {})
            if m["type"] == "snapshot":
                t.clear()
            t.update(d)
            keys = ("bid1Price", "bid1Size", "ask1Price", "ask1Size")
            if all(k in t for k in keys) and any(k in d for k in keys):
                top = (float(t["bid1Price"]), float(t["bid1Size"]), float(t["ask1Price"]), float(t["ask1Size"]))
                tickers.setdefault(d["symbol"], []).append((m["cs"], top))
    return books, tickers


# -- rebuilding through the bot -----------------------------------------------------------------------------


def _rebuild(recording: Path, books: dict[Venue, tuple[str, ...]], settings: BotSettings | None = None) -> tuple[
    OfflineFeed, dict[tuple[Venue, str], list[BookUpdate]]
]:  # fmt: skip
    updates: dict[tuple[Venue, str], list[BookUpdate]] = {}

    def publish(ev: Event) -> None:
        if isinstance(ev, BookUpdate):
            updates.setdefault((ev.venue, ev.symbol), []).append(ev)

    feed = OfflineFeed(settings or BotSettings(), books, publish)
    feed.run_frames(iter_frames(recording))
    return feed, updates


def _top(ev: BookUpdate) -> Top:
    return (ev.bid_px, ev.bid_sz, ev.ask_px, ev.ask_sz)


def _assert_book_tickers_match(updates: list[BookUpdate], tickers: dict[int, Top], ids: list[int] | None = None) -> int:
    """Every update whose update id (``ids``: the source's, by position) has a bookTicker equals it."""
    n = 0
    for i, ev in enumerate(updates):
        u = ev.update_id if ids is None else ids[i]
        if u in tickers:
            assert _top(ev) == tickers[u], (i, u)
            n += 1
    return n


def _assert_bybit_tickers_match(states: list[tuple[int, Top]], tickers: list[tuple[int, Top]]) -> None:
    """``states``: (seq, top) of the rebuilt book after each update, in order (see the module doc)."""
    seqs = [s for s, _ in states]
    compared = same = 0
    for cs, top in tickers:
        i = bisect.bisect_right(seqs, cs) - 1
        if i < 0 or i + 1 >= len(states) or states[i][1] != states[i + 1][1]:
            continue
        compared += 1
        book = states[i][1]
        assert (top[0], top[2]) == (book[0], book[2]), cs
        same += top == book
    assert compared >= 25
    assert same >= 0.85 * compared


def _write_cryptofeed(path: Path, records: list[dict[str, Any]]) -> Path:
    body = b"".join(orjson.dumps(r) + b"\n" for r in records)
    path.write_bytes(zstandard.ZstdCompressor().compress(body))
    return path


# -- cryptofeed ------------------------------------------------------------------------------------------------


def test_cryptofeed_binance_spot_capture_with_its_rest_snapshot_builds_the_book(shared: Path, tmp_path: Path) -> None:
    # Arrange: a cryptofeed v3 capture of the real spot session: combined stream, REST snapshot as "http"
    lines = _hft(shared / SPOT)
    streams = "btcusdt@depth@100ms/btcusdt@bookTicker/btcusdt@trade"
    recs: list[dict[str, Any]] = [
        {"t": "header", "format": 2, "exchange": "BINANCE", "config": {"l2_book": ["BTC-USDT"]}, "recorded": 1.0},
        {"t": "connect", "conn": "BINANCE.ws.1", "ts": lines[0][0] / 1e9 - 0.5,
         "addr": f"wss://stream.binance.com:9443/stream?streams={streams}"},
    ]  # fmt: skip
    for ts, raw in lines:
        if raw.startswith('{"lastUpdateId"'):
            url = "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000"
            recs.append({"t": "http", "conn": "BINANCE.http.0", "ts": ts / 1e9, "url": url, "data": raw})
        else:
            recs.append({"t": "recv", "conn": "BINANCE.ws.1", "ts": ts / 1e9, "data": raw})
    src = _write_cryptofeed(tmp_path / "BINANCE.jsonl.zst", recs)

    # Act
    summary = convert("auto", [src], tmp_path / "rec")
    feed, updates = _rebuild(tmp_path / "rec", {Venue.BINANCE_SPOT: ("BTCUSDT",)})

    # Assert: the snapshot is a snapshot record of BTCUSDT; the book matches every bookTicker on its u
    assert summary["by_venue_kind"] == {"binance_spot/snapshot": 1, "binance_spot/ws": len(lines) - 1}
    assert summary["skipped"] == {"cryptofeed/connect": 1, "cryptofeed/header": 1}
    assert read_manifest(tmp_path / "rec")["symbols"] == {"binance_spot": ["BTCUSDT"]}
    ref = _official(lines, futures=False)
    ups = updates[(Venue.BINANCE_SPOT, "BTCUSDT")]
    assert len(ups) == 1 + len(ref.kept)  # the snapshot, then every kept diff
    assert _assert_book_tickers_match(ups, _book_tickers(lines)) >= 20
    assert feed.book(Venue.BINANCE_SPOT, "BTCUSDT").to_dicts() == ref.floats()  # type: ignore[union-attr]
    assert feed.counters.snapshots_fed == 1
    assert feed.unroutable() == {"binance_spot/not_handled:btcusdt@bookTicker": len(_book_tickers(lines))}


def test_cryptofeed_binance_usdm_raw_ws_capture_builds_the_book(shared: Path, tmp_path: Path) -> None:
    # Arrange: /ws/<depth stream> on fstream, two more streams by SUBSCRIBE: raw payloads, no envelope
    lines = _hft(shared / USDM)
    sub = '{"method":"SUBSCRIBE","params":["btcusdt@bookTicker","btcusdt@trade"],"id":1}'
    t0 = lines[0][0] / 1e9
    ws, addr = "BINANCE_FUTURES.ws.1", "wss://fstream.binance.com/ws/btcusdt@depth@0ms"
    recs: list[dict[str, Any]] = [
        {"t": "header", "format": 2, "exchange": "BINANCE_FUTURES", "config": {}, "recorded": t0},
        {"t": "connect", "conn": ws, "ts": t0 - 0.2, "addr": addr},
        {"t": "send", "conn": ws, "ts": t0 - 0.1, "addr": addr, "data": sub},
        {"t": "recv", "conn": ws, "ts": t0 - 0.05, "data": '{"result":null,"id":1}'},
    ]
    for ts, raw in lines:
        if raw.startswith('{"lastUpdateId"'):
            url = "https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
            recs.append({"t": "http", "conn": "BINANCE_FUTURES.http.0", "ts": ts / 1e9, "url": url, "data": raw})
        else:
            recs.append({"t": "recv", "conn": ws, "ts": ts / 1e9, "data": _payload(raw)})
    src = _write_cryptofeed(tmp_path / "BINANCE_FUTURES.jsonl.zst", recs)

    # Act
    summary = convert(None, [src], tmp_path / "rec")
    feed, updates = _rebuild(tmp_path / "rec", {Venue.BINANCE_USDM: ("BTCUSDT",)})

    # Assert
    assert summary["by_venue_kind"] == {"binance_usdm/snapshot": 1, "binance_usdm/ws": len(lines)}
    ref = _official(lines, futures=True)
    ups = updates[(Venue.BINANCE_USDM, "BTCUSDT")]
    assert len(ups) == 1 + len(ref.kept)
    assert _assert_book_tickers_match(ups, _book_tickers(lines)) >= 20
    assert feed.book(Venue.BINANCE_USDM, "BTCUSDT").to_dicts() == ref.floats()  # type: ignore[union-attr]
    assert feed.unroutable() == {
        "binance_usdm/control:response": 1,
        "binance_usdm/not_handled:raw book_ticker BTCUSDT": len(_book_tickers(lines)),
    }


def test_cryptofeed_bybit_session_rebuilds_six_books_that_agree_with_the_linear_tickers(
    shared: Path, tmp_path: Path
) -> None:
    src = _bybit_source(shared)
    books, tickers = _bybit_linear(src)

    convert("cryptofeed", [shared / BYBIT_CF], tmp_path / "rec")
    feed, updates = _rebuild(tmp_path / "rec", {Venue.BYBIT_LINEAR: LINEAR, Venue.BYBIT_SPOT: ("BTCUSDT", "ETHUSDT")})

    seq = {(m["data"]["s"], m["data"]["u"]): m["data"]["seq"] for _, m in books}
    for s in LINEAR:
        ups = updates[(Venue.BYBIT_LINEAR, s)]
        assert len(ups) == sum(1 for _, m in books if m["data"]["s"] == s)  # every orderbook message applied
        _assert_bybit_tickers_match([(seq[(s, ev.update_id)], _top(ev)) for ev in ups], tickers[s])
    assert len(updates[(Venue.BYBIT_SPOT, "BTCUSDT")]) > 100
    assert len(updates[(Venue.BYBIT_SPOT, "ETHUSDT")]) > 100
    assert not any("orderbook" in k for k in feed.unroutable())


# -- bybit-archive at another depth than configured ------------------------------------------------------------


def test_bybit_archives_at_other_depths_than_configured_build_their_books(shared: Path, tmp_path: Path) -> None:
    # Arrange: linear BTCUSDT as Bybit's linear archive ships it (orderbook.500), spot BTCUSDT at 200 while
    # the config says 50; the lines are the session's own messages (the linear topic renamed to 500)
    src = _bybit_source(shared)
    books, tickers = _bybit_linear(src)
    linear = [r for _, m in books if m["topic"] == "orderbook.200.BTCUSDT" for r in [orjson.dumps(m).decode()]]
    linear = [x.replace('"orderbook.200.BTCUSDT"', '"orderbook.500.BTCUSDT"') for x in linear]
    spot_conn = next(r["conn"] for r in src if r["t"] == "connect" and r["addr"].endswith("/spot"))
    spot = [r["data"] for r in src if r["t"] == "recv" and r["conn"] == spot_conn]
    spot = [x for x in spot if '"orderbook.200.BTCUSDT"' in x]
    (tmp_path / "linear").mkdir()
    (tmp_path / "linear" / "2026-08-09_BTCUSDT_ob500.data").write_text("\n".join(linear) + "\n")
    (tmp_path / "spot.data").write_text("\n".join(spot) + "\n")
    settings = BotSettings()
    settings.venues[Venue.BYBIT_SPOT] = settings.venues[Venue.BYBIT_SPOT].model_copy(update={"depth": "50"})
    assert settings.venues[Venue.BYBIT_LINEAR].depth == "200"

    # Act
    convert(None, [tmp_path / "linear" / "2026-08-09_BTCUSDT_ob500.data"], tmp_path / "lin")
    convert("bybit-archive", [tmp_path / "spot.data"], tmp_path / "spot", Venue.BYBIT_SPOT)
    lin_feed, lin = _rebuild(tmp_path / "lin", {Venue.BYBIT_LINEAR: ("BTCUSDT",)}, settings)
    spot_feed, spt = _rebuild(tmp_path / "spot", {Venue.BYBIT_SPOT: ("BTCUSDT",)}, settings)

    # Assert: every message applied; the linear book agrees with the linear tickers
    ups = lin[(Venue.BYBIT_LINEAR, "BTCUSDT")]
    assert len(ups) == len(linear)
    seq = {m["data"]["u"]: m["data"]["seq"] for _, m in books if m["data"]["s"] == "BTCUSDT"}
    _assert_bybit_tickers_match([(seq[ev.update_id], _top(ev)) for ev in ups], tickers["BTCUSDT"])
    assert len(spt[(Venue.BYBIT_SPOT, "BTCUSDT")]) == len(spot)
    assert lin_feed.unroutable() == {}
    assert spot_feed.unroutable() == {}


# -- binance-csv ---------------------------------------------------------------------------------------------

CSV_HEADER = ["symbol", "timestamp", "first_update_id", "last_update_id", "side", "update_type", "price", "qty", "pu"]


def _binance_csv_rows(lines: list[tuple[int, str]], futures: bool) -> tuple[list[list[object]], list[list[object]]]:
    """(snapshot rows, update rows) of a session, as Binance writes its depth CSVs."""
    snap_raw = next(orjson.loads(r) for _, r in lines if r.startswith('{"lastUpdateId"'))
    sym = next(orjson.loads(r)["data"]["s"] for _, r in lines if "@depth" in r[:40])
    last = snap_raw["lastUpdateId"]
    t_snap = snap_raw.get("E") or orjson.loads(next(r for _, r in lines if "@depth" in r[:40]))["data"]["E"]
    snap: list[list[object]] = []
    for side, key in (("b", "bids"), ("a", "asks")):
        snap.extend([sym, t_snap, last, last, side, "snap", p, q, -1] for p, q in snap_raw[key])
    sets: list[list[object]] = []
    for _, raw in lines:
        if "@depth" in raw[:40]:
            d = orjson.loads(raw)["data"]
            pu = d["pu"] if futures else -1
            for side in ("b", "a"):
                sets.extend([sym, d["E"], d["U"], d["u"], side, "set", p, q, pu] for p, q in d[side])
    return snap, sets


def _write_csv(path: Path, rows: list[list[object]], header: list[str] = CSV_HEADER) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_binance_csv_usdm_snap_and_update_files_build_the_book(shared: Path, tmp_path: Path) -> None:
    lines = _hft(shared / ETH_USDM)
    snap, sets = _binance_csv_rows(lines, futures=True)
    files = [_write_csv(tmp_path / "ETHUSDT_T_DEPTH_depth_snap.csv", snap),
             _write_csv(tmp_path / "ETHUSDT_T_DEPTH_depth_update.csv", sets)]  # fmt: skip

    summary = convert("auto", files, tmp_path / "rec")
    feed, updates = _rebuild(tmp_path / "rec", {Venue.BINANCE_USDM: ("ETHUSDT",)})

    ref = _official(lines, futures=True)
    n_events = sum(1 for _, r in lines if "@depth" in r[:40])
    assert summary["by_venue_kind"] == {"binance_usdm/snapshot": 1, "binance_usdm/ws": n_events}
    assert summary["formats"] == {f.name: "binance-csv" for f in files}
    ups = updates[(Venue.BINANCE_USDM, "ETHUSDT")]
    assert len(ups) == 1 + len(ref.kept)
    assert _assert_book_tickers_match(ups, _book_tickers(lines)) >= 20
    assert feed.book(Venue.BINANCE_USDM, "ETHUSDT").to_dicts() == ref.floats()  # type: ignore[union-attr]
    adapter = feed.adapters[Venue.BINANCE_USDM]
    assert (adapter.stats.gaps["ETHUSDT"], adapter.stats.resyncs["ETHUSDT"]) == (0, 0)


def test_binance_csv_spot_file_with_pu_minus_one_is_spot_and_builds_the_book(shared: Path, tmp_path: Path) -> None:
    lines = _hft(shared / SPOT)
    snap, sets = _binance_csv_rows(lines, futures=False)
    f = _write_csv(tmp_path / "BTCUSDT-depth.csv", snap + sets)

    recs = list(iter_import([f]))
    summary = convert("binance-csv", [f], tmp_path / "rec")
    feed, updates = _rebuild(tmp_path / "rec", {Venue.BINANCE_SPOT: ("BTCUSDT",)})

    assert recs[0].kind == "snapshot"
    assert recs[0].key == "BTCUSDT"
    first_diff = next(orjson.loads(r)["data"] for _, r in lines if "@depth" in r[:40])
    assert recs[1].raw == (  # the venue's own shape: spot has no T and no pu
        f'{{"stream":"btcusdt@depth","data":{{"e":"depthUpdate","E":{first_diff["E"]},"s":"BTCUSDT",'
        f'"U":{first_diff["U"]},"u":{first_diff["u"]},"b":{orjson.dumps(first_diff["b"]).decode()},'
        f'"a":{orjson.dumps(first_diff["a"]).decode()}}}}}'
    )
    assert recs[1].ts_recv == first_diff["E"] * 1_000_000  # exchange time stands in for the receive time
    n_events = sum(1 for _, r in lines if "@depth" in r[:40])
    assert summary["by_venue_kind"] == {"binance_spot/snapshot": 1, "binance_spot/ws": n_events}
    ref = _official(lines, futures=False)
    ups = updates[(Venue.BINANCE_SPOT, "BTCUSDT")]
    assert _assert_book_tickers_match(ups, _book_tickers(lines)) >= 20
    assert feed.book(Venue.BINANCE_SPOT, "BTCUSDT").to_dicts() == ref.floats()  # type: ignore[union-attr]


# -- tardis ----------------------------------------------------------------------------------------------------

TARDIS_L2 = ["exchange", "symbol", "timestamp", "local_timestamp", "is_snapshot", "side", "price", "amount"]


def _tardis_l2_rows(
    exchange: str, symbol: str, snapshot: tuple[int, int, list[list[str]], list[list[str]]],
    updates: Iterable[tuple[int, int, list[list[str]], list[list[str]]]],
) -> Iterator[list[object]]:  # fmt: skip
    """incremental_book_L2 rows: (exchange us, local us, bids, asks) of the snapshot, then of each update."""
    ts, local, bids, asks = snapshot
    for side, levels in (("bid", bids), ("ask", asks)):
        yield from ([exchange, symbol, ts, local, "true", side, p, q] for p, q in levels)
    for ts, local, bids, asks in updates:
        for side, levels in (("bid", bids), ("ask", asks)):
            yield from ([exchange, symbol, ts, local, "false", side, p, q] for p, q in levels)


def _diffs(ref: Ref) -> list[tuple[int, int, list[list[str]], list[list[str]]]]:
    return [(e["E"] * 1000, t // 1000, e["b"], e["a"]) for t, e in ref.kept]


def test_tardis_binance_futures_incremental_book_builds_the_book(shared: Path, tmp_path: Path) -> None:
    # Arrange: the initial snapshot is the REST one, the updates every diff the official procedure keeps
    lines = _hft(shared / USDM)
    ref = _official(lines, futures=True)
    t0, e0 = ref.kept[0][0] // 1000, ref.kept[0][1]["E"] * 1000
    snap = (e0, t0, ref.snapshot["bids"], ref.snapshot["asks"])
    f = tmp_path / "binance-futures_incremental_book_L2_2024-08-08_BTCUSDT.csv.gz"
    with gzip.open(f, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TARDIS_L2)
        w.writerows(_tardis_l2_rows("binance-futures", "BTCUSDT", snap, _diffs(ref)))

    # Act
    summary = convert("auto", [f], tmp_path / "rec")
    feed, updates = _rebuild(tmp_path / "rec", {Venue.BINANCE_USDM: ("BTCUSDT",)})

    # Assert: one record per snapshot and per update, the receive times tardis's local_timestamp
    assert summary["by_venue_kind"] == {"binance_usdm/snapshot": 1, "binance_usdm/ws": len(ref.kept)}
    recs = list(iter_import([f]))
    assert [r.ts_recv for r in recs[1:]] == [t // 1000 * 1000 for t, _ in ref.kept]
    ups = updates[(Venue.BINANCE_USDM, "BTCUSDT")]
    assert len(ups) == 1 + len(ref.kept)
    assert ups[0].snapshot
    source_ids = [ref.snapshot["lastUpdateId"]] + [e["u"] for _, e in ref.kept]  # by position
    assert _assert_book_tickers_match(ups, _book_tickers(lines), source_ids) >= 20
    assert feed.book(Venue.BINANCE_USDM, "BTCUSDT").to_dicts() == ref.floats()  # type: ignore[union-attr]
    stats = feed.adapters[Venue.BINANCE_USDM].stats
    assert (stats.gaps["BTCUSDT"], stats.resyncs["BTCUSDT"]) == (0, 0)


def test_tardis_binance_spot_resnapshot_resets_the_book(shared: Path, tmp_path: Path) -> None:
    # Arrange: the spot session, with a level that only exists before a re-snapshot half way through (a
    # reconnect in tardis's source): after the re-snapshot the book must be the snapshot's, not a merge
    lines = _hft(shared / SPOT)
    ref = _official(lines, futures=False)
    half = len(ref.kept) // 2
    diffs = _diffs(ref)
    stale = diffs[half - 1]
    diffs[half - 1] = (stale[0], stale[1], [*stale[2], ["1.00000000", "5.00000000"]], stale[3])
    mid = _official(lines, futures=False, upto=half)  # the true book after update half-1 (without the stale bid)
    mid_bids, mid_asks = mid.top(10_000)
    resnap = (diffs[half][0], diffs[half][1], [list(x) for x in mid_bids], [list(x) for x in mid_asks])
    t0, e0 = ref.kept[0][0] // 1000, ref.kept[0][1]["E"] * 1000
    first = (e0, t0, ref.snapshot["bids"], ref.snapshot["asks"])
    rows = list(_tardis_l2_rows("binance", "BTCUSDT", first, diffs[:half]))
    rows += list(_tardis_l2_rows("binance", "BTCUSDT", resnap, diffs[half:]))
    f = _write_csv(tmp_path / "binance_incremental_book_L2_2024-08-08_BTCUSDT.csv", rows, TARDIS_L2)

    # Act
    convert("tardis", [f], tmp_path / "rec")
    feed, updates = _rebuild(tmp_path / "rec", {Venue.BINANCE_SPOT: ("BTCUSDT",)})

    # Assert: the re-snapshot is one gap and one resync; the stale bid is gone; tops equal the bookTickers
    stats = feed.adapters[Venue.BINANCE_SPOT].stats
    assert (stats.gaps["BTCUSDT"], stats.resyncs["BTCUSDT"]) == (1, 1)
    book = feed.book(Venue.BINANCE_SPOT, "BTCUSDT")
    assert book is not None
    assert 1.0 not in book.to_dicts()[0]
    assert book.to_dicts() == ref.floats()
    ups = updates[(Venue.BINANCE_SPOT, "BTCUSDT")]
    assert len(ups) == 2 + len(ref.kept)  # two snapshots, every update
    ids = [ref.snapshot["lastUpdateId"]] + [e["u"] for _, e in ref.kept[:half]]
    ids += [ref.kept[half - 1][1]["u"]] + [e["u"] for _, e in ref.kept[half:]]
    assert _assert_book_tickers_match(ups, _book_tickers(lines), ids) >= 20


def test_tardis_bybit_incremental_book_of_four_interleaved_symbols_agrees_with_the_tickers(
    shared: Path, tmp_path: Path
) -> None:
    # Arrange: the linear session's orderbook messages as tardis writes them, all four symbols in one file
    books, tickers = _bybit_linear(_bybit_source(shared))
    rows: list[list[object]] = []
    for recv_s, m in books:
        d = m["data"]
        snap = "true" if m["type"] == "snapshot" else "false"
        for side, key in (("bid", "b"), ("ask", "a")):
            rows.extend(["bybit", d["s"], m["ts"] * 1000, round(recv_s * 1e6), snap, side, p, q] for p, q in d[key])
    f = _write_csv(tmp_path / "bybit_incremental_book_L2_2026-08-09_LINEAR.csv", rows, TARDIS_L2)

    convert("tardis", [f], tmp_path / "rec")
    feed, updates = _rebuild(tmp_path / "rec", {Venue.BYBIT_LINEAR: LINEAR})

    for s in LINEAR:
        mine = [m for _, m in books if m["data"]["s"] == s]
        ups = updates[(Venue.BYBIT_LINEAR, s)]
        assert len(ups) == len(mine)
        states = [(m["data"]["seq"], _top(ev)) for m, ev in zip(mine, ups, strict=True)]
        _assert_bybit_tickers_match(states, tickers[s])
        assert feed.adapters[Venue.BYBIT_LINEAR].stats.gaps[s] == 0


def test_tardis_book_snapshot_5_rows_are_whole_books(shared: Path, tmp_path: Path) -> None:
    # Arrange: a book_snapshot_5 row after every kept USD-M diff, from the independent replay
    lines = _hft(shared / ETH_USDM)
    ref = _official(lines, futures=True, upto=0)
    header = ["exchange", "symbol", "timestamp", "local_timestamp"]
    header += [f"{s}[{i}].{f}" for i in range(5) for s in ("asks", "bids") for f in ("price", "amount")]
    rows: list[list[object]] = []
    tops: list[tuple[list[tuple[str, str]], list[tuple[str, str]]]] = []
    for t, e in ref.kept:
        ref.apply(e["b"], e["a"])
        bids, asks = ref.top(5)
        tops.append((bids, asks))
        cells: list[object] = []
        for i in range(5):
            cells += [*asks[i], *bids[i]]
        rows.append(["binance-futures", "ETHUSDT", e["E"] * 1000, t // 1000, *cells])
    f = _write_csv(tmp_path / "binance-futures_book_snapshot_5_2024-07-18_ETHUSDT.csv", rows, header)

    convert(None, [f], tmp_path / "rec")
    feed, updates = _rebuild(tmp_path / "rec", {Venue.BINANCE_USDM: ("ETHUSDT",)})

    ups = updates[(Venue.BINANCE_USDM, "ETHUSDT")]
    assert len(ups) == len(rows)
    assert all(ev.snapshot for ev in ups)
    assert _assert_book_tickers_match(ups, _book_tickers(lines), [e["u"] for _, e in ref.kept]) >= 20
    book = feed.book(Venue.BINANCE_USDM, "ETHUSDT")
    assert book is not None
    bids, asks = tops[-1]
    assert book.to_dicts() == ({float(p): float(q) for p, q in bids}, {float(p): float(q) for p, q in asks})


# -- unroutable records --------------------------------------------------------------------------------------


def test_unroutable_records_are_counted_by_reason_and_a_book_without_depth_is_warned(
    shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: the Bybit session replayed for three of its linear books and one it does not hold (XRPUSDT),
    # so DOGEUSDT is a symbol not configured and the spot venue one not replayed
    convert("cryptofeed", [shared / BYBIT_CF], tmp_path / "rec")
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
    exp = BooksExport(BotSettings(), {Venue.BYBIT_LINEAR: symbols}, 1000, 1, io.StringIO())

    # Act
    exp.run(iter_frames(tmp_path / "rec"))
    summary = exp.summary()
    rows = {(Venue.BYBIT_LINEAR, s): summary["books"][f"bybit_linear/{s}"]["rows"] for s in symbols}
    warnings = exp.feed.check_books(rows)

    # Assert: every reason counted, with the venue; nothing about the books that were built
    u = summary["unroutable"]
    n_doge_book = sum(1 for r in _bybit_source(shared) if r["t"] == "recv" and '"orderbook.200.DOGEUSDT"' in r["data"])
    assert u["bybit_linear/symbol_not_configured:orderbook.200.DOGEUSDT"] == n_doge_book
    assert u["bybit_linear/control:subscribe"] == 17
    assert u["bybit_linear/kind_not_replayed:info"] == 1
    assert u["bybit_spot/venue_not_replayed:ws"] == 681
    assert u["bybit_spot/venue_not_replayed:info"] == 1
    assert not any(s in k for k in u for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    assert summary["books"]["bybit_linear/XRPUSDT"]["depth_messages"] == 0
    assert summary["books"]["bybit_linear/BTCUSDT"]["depth_messages"] > 300
    # the book that got nothing is warned about, with its venue's largest unroutable counts
    assert [(w["event"], w["symbol"]) for w in warnings] == [("book_received_no_depth", "XRPUSDT")]
    assert warnings[0]["unroutable"]["bybit_linear/symbol_not_configured:orderbook.200.DOGEUSDT"] == n_doge_book
    assert "book_received_no_depth" in capsys.readouterr().out


def test_a_book_whose_depth_messages_built_no_row_is_warned(shared: Path, tmp_path: Path) -> None:
    # Arrange: the spot session without its REST snapshot: the diffs arrive, the book never syncs
    lines = [x for x in _hft(shared / SPOT, 5.0) if not x[1].startswith('{"lastUpdateId"')]
    f = tmp_path / "no_snapshot.gz"
    f.write_bytes(gzip.compress("".join(f"{t} {r}\n" for t, r in lines).encode()))
    convert("hftbacktest", [f], tmp_path / "rec", Venue.BINANCE_SPOT)
    exp = BooksExport(BotSettings(), {Venue.BINANCE_SPOT: ("BTCUSDT",)}, 1000, 1, io.StringIO())

    exp.run(iter_frames(tmp_path / "rec"))
    summary = exp.summary()
    rows = summary["books"]["binance_spot/BTCUSDT"]["rows"]
    (warning,) = exp.feed.check_books({(Venue.BINANCE_SPOT, "BTCUSDT"): rows})

    assert summary["books"]["binance_spot/BTCUSDT"]["rows"] == 0
    assert (warning["event"], warning["rows"], warning["snapshot_pending"]) == ("book_has_no_rows", 0, True)
    assert warning["depth_messages"] == sum(1 for _, r in lines if "@depth" in r[:40])


# -- the Bybit adapter's depth: the data's offline, the config's live -------------------------------------------

XRP_500 = [
    '{"topic":"orderbook.500.XRPUSDT","type":"snapshot","ts":1733011200691,"data":{"s":"XRPUSDT",'
    '"b":[["1.9531","6203"],["1.9530","100"]],"a":[["1.9532","7154"]],"u":20254870,"seq":1},"cts":1733011200589}',
    '{"topic":"orderbook.500.XRPUSDT","type":"delta","ts":1733011200791,"data":{"s":"XRPUSDT",'
    '"b":[["1.9531","0"]],"a":[],"u":20254871,"seq":2},"cts":1733011200700}',
]
XRP_1 = (
    '{"topic":"orderbook.1.XRPUSDT","type":"snapshot","ts":1733011200800,"data":{"s":"XRPUSDT",'
    '"b":[["1.9000","1"]],"a":[["1.9900","1"]],"u":5,"seq":3},"cts":1733011200790}'
)


@pytest.mark.parametrize("live", [False, True])
def test_bybit_adapter_offline_follows_the_datas_depth_and_never_mixes_a_second_one(live: bool) -> None:
    from bot.venues.bybit import BybitLinearAdapter

    settings = BotSettings()
    cfg = settings.venues[Venue.BYBIT_LINEAR].model_copy(update={"symbols": ("XRPUSDT",), "depth": "200"})
    adapter = BybitLinearAdapter(cfg, settings.book, lambda ev: None, live=live)

    for i, raw in enumerate([*XRP_500, XRP_1]):
        adapter.on_ws(raw, i)

    book = adapter.books["XRPUSDT"]
    if live:  # live, the book is the configured depth's: the archive's depth 500 is not it
        assert adapter.stats.skipped == {"other_depth:orderbook.500.XRPUSDT": 2, "other_depth:orderbook.1.XRPUSDT": 1}
        assert adapter.stats.book_messages["XRPUSDT"] == 0
    else:  # offline, the first topic fixes the depth; the level-1 snapshot of the same symbol is kept out
        assert adapter.book_topic("XRPUSDT") == "orderbook.500.XRPUSDT"
        assert adapter.stats.skipped == {"other_depth:orderbook.1.XRPUSDT": 1}
        assert adapter.stats.book_messages["XRPUSDT"] == 2
        assert book.to_dicts() == ({1.953: 100.0}, {1.9532: 7154.0})
        assert book.update_id == 20254871
