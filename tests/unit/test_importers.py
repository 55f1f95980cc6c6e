"""bot.importers over the real shared recordings: exact counts, raw bytes carried over unchanged, venue
inference, snapshot symbols, and clear errors on garbage input.

The expected counts are the line counts of /work/shared/data/SOURCES.md.
"""

from __future__ import annotations

import argparse
import gzip
import os
import zipfile
from collections import Counter
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import zstandard

from bot.errors import RecordingError
from bot.events import Venue
from bot.importers import (
    convert,
    detect_format,
    import_bybit_archive,
    import_cryptofeed,
    import_hftbacktest,
    iter_import,
    open_text,
    records_for,
    register,
    url_venue,
)
from bot.recording import Record, iter_records, read_manifest

pytestmark = pytest.mark.unit

SPOT_0808 = "hftbacktest/examples/spot/btcusdt_20240808.gz"
SPOT_0809 = "hftbacktest/examples/spot/btcusdt_20240809.gz"
USDM_0808 = "hftbacktest/examples/usdm/btcusdt_20240808.gz"
ETH_0718 = "hftbacktest/73bfa17/examples/usdm/ethusdt_20240718.gz"
ETH_0719 = "hftbacktest/73bfa17/examples/usdm/ethusdt_20240719.gz"
BYBIT_CF = "cryptofeed/v3/sample_data/BYBIT.jsonl.zst"

# Real lines (first bookTicker of each file), used to build small synthetic files.
USDM_BOOK_TICKER = (
    '{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":5123107839020,"s":"BTCUSDT","b":"61800.20",'
    '"B":"2.507","a":"61800.30","A":"2.510","T":1723161256313,"E":1723161256313}}'
)
SPOT_BOOK_TICKER = (
    '{"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT","b":"61837.63000000",'
    '"B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}'
)
SPOT_SNAPSHOT = (
    '{"lastUpdateId":50093239218,"bids":[["61837.63000000","3.78826000"]],"asks":[["61837.64000000","1.54698000"]]}'
)
BYBIT_ARCHIVE_LINES = [
    '{"topic":"orderbook.500.XRPUSDT","type":"snapshot","ts":1733011200691,"data":{"s":"XRPUSDT",'
    '"b":[["1.9531","6203"],["1.9530","100"]],"a":[["1.9532","7154"]],"u":20254870,"seq":1},"cts":1733011200589}',
    '{"topic":"orderbook.500.XRPUSDT","type":"delta","ts":1733011200791,"data":{"s":"XRPUSDT",'
    '"b":[["1.9531","0"]],"a":[],"u":20254871,"seq":2},"cts":1733011200700}',
    '{"topic":"orderbook.500.XRPUSDT","type":"delta","ts":1733011200891,"data":{"s":"XRPUSDT",'
    '"b":[],"a":[["1.9533","12.5"]],"u":20254872,"seq":3},"cts":1733011200801}',
]


@pytest.fixture(scope="module")
def shared() -> Path:
    env = os.environ.get("BOT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    if not (root / "SOURCES.md").is_file():
        pytest.skip(f"shared data not found at {root} (set BOT_SHARED_DATA)")
    return root


def _source_lines(path: Path) -> list[tuple[int, str]]:
    """(local ns, raw) of an hftbacktest file, read independently of the importer."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as fh:
        for line in fh:
            ts, _, raw = line.rstrip("\n").partition(" ")
            out.append((int(ts), raw))
    return out


def _stream_kind(rec: Record) -> str:
    if rec.kind == "snapshot":
        return "snapshot"
    return str(orjson.loads(rec.raw)["stream"]).split("@", 1)[1]


# -- hftbacktest (Binance raw captures) -----------------------------------------------------------


def test_hftbacktest_spot_file_keeps_every_line_byte_for_byte_and_infers_binance_spot(shared: Path) -> None:
    # Act
    recs = list(import_hftbacktest([shared / SPOT_0808]))

    # Assert: 41249 lines, each one record with the same receive time and the same raw text, in order.
    assert len(recs) == 41249
    assert [(r.ts_recv, r.raw) for r in recs] == _source_lines(shared / SPOT_0808)
    assert {r.venue for r in recs} == {Venue.BINANCE_SPOT}
    assert Counter(_stream_kind(r) for r in recs) == {
        "depth@100ms": 3451,
        "bookTicker": 28040,
        "trade": 9757,
        "snapshot": 1,
    }
    (snap,) = [r for r in recs if r.kind == "snapshot"]
    assert snap.key == "BTCUSDT"
    assert snap.ts_recv == 1723161254206652067
    assert snap.raw.startswith('{"lastUpdateId":50093239218,"bids":[["61837.63000000","3.78826000"]')
    assert {r.key for r in recs if r.kind == "ws"} == {"-"}


def test_hftbacktest_files_chain_in_the_order_given(shared: Path) -> None:
    recs = list(import_hftbacktest([shared / SPOT_0808, shared / SPOT_0809]))

    assert len(recs) == 41249 + 58325
    assert Counter(_stream_kind(r) for r in recs) == {
        "depth@100ms": 3451 + 3044,
        "bookTicker": 28040 + 45134,
        "trade": 9757 + 10147,
        "snapshot": 1,
    }
    assert recs[41248].ts_recv == 1723161599999231384  # last line of 0808
    assert recs[41249].ts_recv == 1723161600001658384  # first line of 0809


def test_hftbacktest_usdm_file_infers_binance_usdm_from_its_snapshot_and_depth(shared: Path) -> None:
    recs = list(import_hftbacktest([shared / USDM_0808]))

    assert len(recs) == 93954
    assert [(r.ts_recv, r.raw) for r in recs] == _source_lines(shared / USDM_0808)
    assert {r.venue for r in recs} == {Venue.BINANCE_USDM}
    assert Counter(_stream_kind(r) for r in recs) == {
        "depth@0ms": 6551,
        "bookTicker": 66089,
        "trade": 21313,
        "snapshot": 1,
    }
    (snap,) = [r for r in recs if r.kind == "snapshot"]
    assert snap.key == "BTCUSDT"
    assert snap.raw.startswith('{"lastUpdateId":5123107852948,"E":1723161256501,"T":1723161256493,')


def test_hftbacktest_eth_usdm_session_has_its_snapshot_keyed_ethusdt(shared: Path) -> None:
    recs = list(import_hftbacktest([shared / ETH_0718, shared / ETH_0719]))

    assert len(recs) == 14003 + 55910
    assert {r.venue for r in recs} == {Venue.BINANCE_USDM}
    assert Counter(_stream_kind(r) for r in recs) == {
        "depth@0ms": 3273 + 5656,
        "bookTicker": 9089 + 38239,
        "trade": 1640 + 12015,
        "snapshot": 1,
    }
    (snap,) = [r for r in recs if r.kind == "snapshot"]
    assert (snap.key, snap.raw[:31]) == ("ETHUSDT", '{"lastUpdateId":4984028386786,"')


def test_hftbacktest_explicit_venue_wins_over_inference(shared: Path) -> None:
    recs = list(import_hftbacktest([shared / SPOT_0808], Venue.BINANCE_USDM))

    assert {r.venue for r in recs} == {Venue.BINANCE_USDM}


def test_hftbacktest_snapshot_before_any_stream_message_gets_the_files_symbol(tmp_path: Path) -> None:
    f = tmp_path / "x.gz"
    with gzip.open(f, "wt") as fh:
        fh.write(f"10 {SPOT_SNAPSHOT}\n20 {SPOT_BOOK_TICKER}\n")

    recs = list(import_hftbacktest([f]))

    assert recs == [
        Record(10, Venue.BINANCE_SPOT, "snapshot", "BTCUSDT", SPOT_SNAPSHOT),
        Record(20, Venue.BINANCE_SPOT, "ws", "-", SPOT_BOOK_TICKER),
    ]


def test_hftbacktest_usdm_file_starting_with_a_book_ticker_is_still_usdm(tmp_path: Path) -> None:
    f = tmp_path / "x.gz"
    with gzip.open(f, "wt") as fh:
        fh.write(f"1 {USDM_BOOK_TICKER}\n")

    (rec,) = import_hftbacktest([f])

    assert rec.venue == Venue.BINANCE_USDM


# -- cryptofeed (Bybit v5 session) ----------------------------------------------------------------


def test_cryptofeed_bybit_session_keeps_every_ws_frame_and_rest_body_with_its_venue(shared: Path) -> None:
    # Arrange: the source records, read independently of the importer.
    with open(shared / BYBIT_CF, "rb") as fh:
        text = zstandard.ZstdDecompressor().stream_reader(fh).read().decode()
    src = [orjson.loads(x) for x in text.splitlines()]
    assert len(src) == 3256
    recv = [r for r in src if r["t"] == "recv"]
    http = [r for r in src if r["t"] == "http"]

    # Act
    recs = list(import_cryptofeed([shared / BYBIT_CF]))

    # Assert: 3227 frames + 2 REST bodies; header, connect and send records are not market data.
    assert len(recs) == 3229
    assert Counter((r.venue, r.kind) for r in recs) == {
        (Venue.BYBIT_LINEAR, "ws"): 2546,
        (Venue.BYBIT_SPOT, "ws"): 681,
        (Venue.BYBIT_LINEAR, "info"): 1,
        (Venue.BYBIT_SPOT, "info"): 1,
    }
    ws = [r for r in recs if r.kind == "ws"]
    assert [r.raw for r in ws] == [r["data"] for r in recv]
    assert [r.key for r in ws] == [r["conn"] for r in recv]
    for rec, r in zip(ws, recv, strict=True):
        assert abs(rec.ts_recv - int(Decimal(repr(r["ts"])) * 10**9)) < 1_000
    info = [r for r in recs if r.kind == "info"]
    assert [r.raw for r in info] == [r["data"] for r in http]
    assert [r.key for r in info] == [
        "/v5/market/instruments-info?&category=linear&status=Trading&limit=1000",
        "/v5/market/instruments-info?&category=spot&status=Trading&limit=1000",
    ]
    # Every orderbook topic of the six books is there, on the connection of its category.
    books = Counter((r.venue, str(orjson.loads(r.raw).get("topic", ""))) for r in ws if '"topic":"orderbook.' in r.raw)
    assert sorted(books) == [
        (Venue.BYBIT_LINEAR, "orderbook.200.BTCUSDT"),
        (Venue.BYBIT_LINEAR, "orderbook.200.DOGEUSDT"),
        (Venue.BYBIT_LINEAR, "orderbook.200.ETHUSDT"),
        (Venue.BYBIT_LINEAR, "orderbook.200.SOLUSDT"),
        (Venue.BYBIT_SPOT, "orderbook.200.BTCUSDT"),
        (Venue.BYBIT_SPOT, "orderbook.200.ETHUSDT"),
    ]


def test_cryptofeed_record_that_is_not_json_is_refused_with_its_line_number(tmp_path: Path) -> None:
    f = tmp_path / "BYBIT.jsonl"
    f.write_text('{"t":"header","format":2}\nthis is no json\n')

    with pytest.raises(RecordingError, match=r"BYBIT\.jsonl:2: not a cryptofeed v3 record"):
        list(import_cryptofeed([f]))


def test_cryptofeed_frames_of_unknown_venues_are_skipped(tmp_path: Path) -> None:
    f = tmp_path / "X.jsonl"
    f.write_text(
        '{"t":"connect","conn":"c1","ts":1.0,"addr":"wss://ws.example.com/feed"}\n'
        '{"t":"recv","conn":"c1","ts":2.0,"data":"{\\"a\\":1}"}\n'
        '{"t":"connect","conn":"c2","ts":3.0,"addr":"wss://stream.bybit.com/v5/public/spot"}\n'
        '{"t":"recv","conn":"c2","ts":4.5,"data":"{\\"b\\":2}"}\n'
    )

    assert list(import_cryptofeed([f])) == [Record(4_500_000_000, Venue.BYBIT_SPOT, "ws", "c2", '{"b":2}')]


# -- bybit-archive --------------------------------------------------------------------------------


def _archive_zip(path: Path, lines: list[str], name: str = "XRPUSDT_ob500.data") -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, "\n".join(lines) + "\n")
    return path


def test_bybit_archive_zip_gives_one_ws_record_per_line_stamped_with_the_message_ts(tmp_path: Path) -> None:
    f = _archive_zip(tmp_path / "XRPUSDT_ob500.data.zip", BYBIT_ARCHIVE_LINES)

    recs = list(import_bybit_archive([f], Venue.BYBIT_LINEAR))

    assert recs == [
        Record(1733011200691_000000, Venue.BYBIT_LINEAR, "ws", "archive", BYBIT_ARCHIVE_LINES[0]),
        Record(1733011200791_000000, Venue.BYBIT_LINEAR, "ws", "archive", BYBIT_ARCHIVE_LINES[1]),
        Record(1733011200891_000000, Venue.BYBIT_LINEAR, "ws", "archive", BYBIT_ARCHIVE_LINES[2]),
    ]


def test_bybit_archive_reads_the_same_from_gz_zst_plain_and_crlf_files(tmp_path: Path) -> None:
    body = "\n".join(BYBIT_ARCHIVE_LINES) + "\n"
    (tmp_path / "a.gz").write_bytes(gzip.compress(body.encode()))
    (tmp_path / "a.zst").write_bytes(zstandard.ZstdCompressor().compress(body.encode()))
    (tmp_path / "a.data").write_text(body)
    (tmp_path / "crlf.data").write_bytes(body.replace("\n", "\r\n").encode())
    want = list(import_bybit_archive([_archive_zip(tmp_path / "a.zip", BYBIT_ARCHIVE_LINES)], Venue.BYBIT_SPOT))

    for name in ("a.gz", "a.zst", "a.data", "crlf.data"):
        assert list(import_bybit_archive([tmp_path / name], Venue.BYBIT_SPOT)) == want, name


def test_bybit_archive_converts_into_a_native_recording(tmp_path: Path) -> None:
    f = _archive_zip(tmp_path / "XRPUSDT_ob500.data.zip", BYBIT_ARCHIVE_LINES)

    summary = convert("bybit-archive", [f], tmp_path / "out", Venue.BYBIT_LINEAR)

    assert summary["records"] == 3
    assert summary["by_venue_kind"] == {"bybit_linear/ws": 3}
    assert [r.raw for r in iter_records(tmp_path / "out")] == BYBIT_ARCHIVE_LINES
    man = read_manifest(tmp_path / "out")
    assert (man["imported_from"], man["sources"]) == ("bybit-archive", ["XRPUSDT_ob500.data.zip"])


def test_bybit_archive_venue_is_given_or_told_by_path_or_depth_500_else_refused(tmp_path: Path) -> None:
    ob500 = _archive_zip(tmp_path / "a.zip", BYBIT_ARCHIVE_LINES)
    ob200_lines = [x.replace("orderbook.500.", "orderbook.200.") for x in BYBIT_ARCHIVE_LINES]
    ob200 = _archive_zip(tmp_path / "b.zip", ob200_lines)
    (tmp_path / "spot").mkdir()
    in_spot_folder = _archive_zip(tmp_path / "spot" / "c.zip", ob200_lines)

    # depth 500 exists on linear only; a "spot" folder (the archive's own layout) tells; 200 alone does not
    assert {r.venue for r in records_for("bybit-archive", [ob500], None)} == {Venue.BYBIT_LINEAR}
    assert {r.venue for r in records_for("bybit-archive", [in_spot_folder], None)} == {Venue.BYBIT_SPOT}
    assert {r.venue for r in records_for("bybit-archive", [ob200], Venue.BYBIT_LINEAR)} == {Venue.BYBIT_LINEAR}
    with pytest.raises(RecordingError, match=r"b\.zip:1: orderbook\.200\.XRPUSDT may be spot or linear; pass --venue"):
        list(records_for("bybit-archive", [ob200], None))
    with pytest.raises(RecordingError, match="needs --venue bybit_linear or bybit_spot"):
        list(records_for("bybit-archive", [ob500], Venue.BINANCE_SPOT))


def test_bybit_archive_line_without_ts_is_refused_with_its_line_number(tmp_path: Path) -> None:
    f = _archive_zip(tmp_path / "a.zip", [BYBIT_ARCHIVE_LINES[0], '{"topic":"orderbook.500.XRPUSDT"}'])

    with pytest.raises(RecordingError, match=r"a\.zip:2: not a Bybit archive message"):
        list(import_bybit_archive([f], Venue.BYBIT_LINEAR))


def test_empty_zip_archive_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "empty.zip"
    with zipfile.ZipFile(f, "w"):
        pass

    with pytest.raises(RecordingError, match="empty zip archive"):
        list(open_text(f))


# -- garbage input ---------------------------------------------------------------------------------


def test_hftbacktest_garbage_lines_are_refused_with_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "junk.gz"
    f.write_bytes(gzip.compress(f"1 {SPOT_BOOK_TICKER}\nhello world\n".encode()))

    with pytest.raises(RecordingError, match=r"junk\.gz:2: not '<local_ns> <raw>'"):
        list(import_hftbacktest([f]))


def test_hftbacktest_line_that_is_no_combined_stream_message_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "x.gz"
    f.write_bytes(gzip.compress(b'1 {"e":"depthUpdate"}\n'))

    with pytest.raises(RecordingError, match=r"x\.gz:1: not a combined-stream message"):
        list(import_hftbacktest([f]))


def test_hftbacktest_snapshot_without_any_stream_message_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "x.gz"
    f.write_bytes(gzip.compress(f"1 {SPOT_SNAPSHOT}\n".encode()))

    with pytest.raises(RecordingError, match="a snapshot but no stream message"):
        list(import_hftbacktest([f]))


def test_hftbacktest_snapshot_in_a_file_of_several_symbols_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "x.gz"
    eth = SPOT_BOOK_TICKER.replace("btcusdt", "ethusdt")
    f.write_bytes(gzip.compress(f"1 {SPOT_SNAPSHOT}\n2 {SPOT_BOOK_TICKER}\n3 {eth}\n".encode()))

    with pytest.raises(RecordingError, match="several symbols and a snapshot"):
        list(import_hftbacktest([f]))


def test_hftbacktest_with_a_bybit_venue_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="Binance captures"):
        list(records_for("hftbacktest", [tmp_path / "x.gz"], Venue.BYBIT_LINEAR))


def test_file_that_is_not_gzip_despite_its_name_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "fake.gz"
    f.write_text("plain text, not gzip\n")

    with pytest.raises(RecordingError, match=r"fake\.gz: cannot read"):
        list(import_hftbacktest([f]))


def test_missing_input_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"nope\.gz: no such file"):
        list(import_hftbacktest([tmp_path / "nope.gz"]))


def test_binary_garbage_is_refused_not_decoded(tmp_path: Path) -> None:
    f = tmp_path / "bin.data"
    f.write_bytes(bytes(range(256)) * 4)

    with pytest.raises(RecordingError, match=r"bin\.data: cannot read"):
        list(import_bybit_archive([f], Venue.BYBIT_LINEAR))


def test_unknown_format_is_refused() -> None:
    with pytest.raises(RecordingError, match="unknown format 'kaiko'"):
        records_for("kaiko", [], None)


def _run_import_command(argv: list[str]) -> int:
    """The ``import`` sub-command as ``python -m bot`` wires it (its own ``register``), run in-process."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_import_command_reports_bad_input_in_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "junk.gz"
    f.write_bytes(gzip.compress(b"garbage\n"))

    code = _run_import_command(["import", "--format", "hftbacktest", "--out", str(tmp_path / "out"), str(f)])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ")
    assert "junk.gz:1" in err
    assert "Traceback" not in err


def test_import_command_writes_a_recording_and_prints_its_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = _archive_zip(tmp_path / "a.zip", BYBIT_ARCHIVE_LINES)

    code = _run_import_command(
        ["import", "--format", "bybit-archive", "--venue", "bybit_spot", "--out", str(tmp_path / "o"), str(f)]
    )

    assert code == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert summary["records"] == 3
    assert len(list(iter_records(tmp_path / "o"))) == 3


# -- format detection, streaming -------------------------------------------------------------------------------

BINANCE_CSV = (
    "symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty,pu\n"
    "BTCUSDT,1723161256501,5123107852948,5123107852948,b,snap,61800.20,2.909,-1\n"
    "BTCUSDT,1723161256501,5123107852948,5123107852948,a,snap,61800.30,1.072,-1\n"
    "BTCUSDT,1723161256502,5123107852940,5123107852950,b,set,61800.20,2.5,5123107852900\n"
    "BTCUSDT,1723161256502,5123107852940,5123107852950,a,set,61800.40,0.010,5123107852900\n"
)
TARDIS_L2 = (
    "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
    "bybit,BTCUSDT,1786310818129000,1786310819720003,true,bid,65114.20,6.054\n"
    "bybit,BTCUSDT,1786310818129000,1786310819720003,true,ask,65114.30,10.486\n"
    "bybit,BTCUSDT,1786310818130000,1786310819721646,false,bid,65095.30,0.005\n"
    "bybit,BTCUSDT,1786310818130000,1786310819721646,false,ask,65116.60,0\n"
)


def test_detect_format_tells_every_format_from_its_first_line(shared: Path, tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text(BINANCE_CSV)
    (tmp_path / "t.csv").write_text(TARDIS_L2)
    snap = tmp_path / "s.csv"
    snap.write_text("exchange,symbol,timestamp,local_timestamp,asks[0].price,asks[0].amount,bids[0].price,bids[0].amount")
    archive = _archive_zip(tmp_path / "a.zip", BYBIT_ARCHIVE_LINES)

    assert detect_format(shared / SPOT_0808) == "hftbacktest"
    assert detect_format(shared / BYBIT_CF) == "cryptofeed"
    assert detect_format(archive) == "bybit-archive"
    assert detect_format(tmp_path / "d.csv") == "binance-csv"
    assert detect_format(tmp_path / "t.csv") == "tardis"
    assert detect_format(snap) == "tardis"


def test_detect_format_names_the_file_it_cannot_tell_and_uses_the_name_of_an_empty_one(tmp_path: Path) -> None:
    (tmp_path / "klines.csv").write_text("timestamp,open,high,low,close,volume\n")
    (tmp_path / "binance-futures_incremental_book_L2_2024-08-08_BTCUSDT.csv").write_text("")
    (tmp_path / "empty.txt").write_text("")

    with pytest.raises(RecordingError, match=r"klines\.csv: cannot tell the format from its first line"):
        detect_format(tmp_path / "klines.csv")
    assert detect_format(tmp_path / "binance-futures_incremental_book_L2_2024-08-08_BTCUSDT.csv") == "tardis"
    with pytest.raises(RecordingError, match=r"empty\.txt: cannot tell the format from an empty file's name"):
        detect_format(tmp_path / "empty.txt")
    with pytest.raises(RecordingError, match=r"nope\.gz: no such file"):
        detect_format(tmp_path / "nope.gz")


def test_iter_import_detects_each_file_and_chains_them_in_the_order_given(shared: Path, tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(TARDIS_L2)
    archive = _archive_zip(tmp_path / "a.zip", BYBIT_ARCHIVE_LINES)

    recs = list(iter_import([archive, tmp_path / "t.csv"]))

    assert [r.raw for r in recs[:3]] == BYBIT_ARCHIVE_LINES
    assert [(r.venue, r.kind, r.ts_recv) for r in recs[3:]] == [
        (Venue.BYBIT_LINEAR, "ws", 1786310819720003000),
        (Venue.BYBIT_LINEAR, "ws", 1786310819721646000),
    ]
    assert recs[3].raw == (
        '{"topic":"orderbook.500.BTCUSDT","type":"snapshot","ts":1786310818129,"data":{"s":"BTCUSDT",'
        '"b":[["65114.20","6.054"]],"a":[["65114.30","10.486"]],"u":1,"seq":1},"cts":1786310818129}'
    )
    assert recs[4].raw == (
        '{"topic":"orderbook.500.BTCUSDT","type":"delta","ts":1786310818130,"data":{"s":"BTCUSDT",'
        '"b":[["65095.30","0.005"]],"a":[["65116.60","0"]],"u":2,"seq":2},"cts":1786310818130}'
    )


def test_iter_import_streams_it_yields_records_before_a_bad_line_further_on_is_read(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text(TARDIS_L2 + "bybit,BTCUSDT,oops,1,false,bid,1,1\n")

    recs = iter_import([f], "tardis")
    first = next(recs)

    assert first.venue == Venue.BYBIT_LINEAR
    with pytest.raises(RecordingError, match=r"t\.csv:6: timestamp 'oops' is not an integer"):
        list(recs)


def test_iter_import_refuses_an_unknown_format_at_the_call() -> None:
    with pytest.raises(RecordingError, match="unknown format 'kaiko'"):
        iter_import([Path("x")], "kaiko")


# -- cryptofeed: REST bodies, Binance hosts, what is skipped ---------------------------------------------------


@pytest.mark.parametrize(
    ("url", "venue"),
    [
        ("wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms", Venue.BINANCE_SPOT),
        ("wss://stream.binance.com:9443/ws/btcusdt@depth", Venue.BINANCE_SPOT),
        ("wss://data-stream.binance.vision/ws/btcusdt@trade", Venue.BINANCE_SPOT),
        ("wss://stream.testnet.binance.vision/ws", Venue.BINANCE_SPOT),
        ("wss://fstream.binance.com/stream?streams=btcusdt@depth@0ms", Venue.BINANCE_USDM),
        ("wss://fstream.binance.com/ws/btcusdt@depth", Venue.BINANCE_USDM),
        ("wss://fstream.binance.com/public/ws", Venue.BINANCE_USDM),
        ("wss://fstream.binancefuture.com/ws", Venue.BINANCE_USDM),
        ("https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000", Venue.BINANCE_SPOT),
        ("https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=1000", Venue.BINANCE_USDM),
        ("https://testnet.binancefuture.com/fapi/v1/depth?symbol=BTCUSDT", Venue.BINANCE_USDM),
        ("wss://dstream.binance.com/ws/btcusd_perp@depth", None),  # COIN-M
        ("https://dapi.binance.com/dapi/v1/depth?symbol=BTCUSD_PERP", None),
        ("wss://stream.bybit.com/v5/public/linear", Venue.BYBIT_LINEAR),
        ("wss://stream.bybit.com/v5/public/spot", Venue.BYBIT_SPOT),
        ("wss://stream.bybit.com/v5/public/inverse", None),
        ("https://api.bybit.com/v5/market/instruments-info?&category=spot&limit=1000", Venue.BYBIT_SPOT),
        ("wss://ws.okx.com:8443/ws/v5/public", None),
    ],
)
def test_url_venue(url: str, venue: Venue | None) -> None:
    assert url_venue(url) == venue


def test_cryptofeed_rest_bodies_become_snapshot_klines_or_info_records_and_skips_are_counted(tmp_path: Path) -> None:
    def rec(**kw: object) -> str:
        return orjson.dumps(kw).decode()

    body = '{"lastUpdateId":1,"bids":[],"asks":[]}'
    f = tmp_path / "X.jsonl"
    f.write_text("\n".join([
        rec(t="header", format=2, exchange="BINANCE"),
        rec(t="http", conn="h", ts=1.0, url="https://api.binance.com/api/v3/depth?symbol=btcusdt&limit=5", data=body),
        rec(t="http", conn="h", ts=2.0, url="https://fapi.binance.com/fapi/v1/depth?symbol=ETHUSDT&limit=5", data=body),
        rec(t="http", conn="h", ts=3, url="https://api.binance.com/api/v3/klines?interval=1m&symbol=BTCUSDT", data=""),
        rec(t="http", conn="h", ts=4.0, url="https://api.binance.com/api/v3/exchangeInfo", data="{}"),
        rec(t="http", conn="h", ts=5.0, url="https://dapi.binance.com/dapi/v1/depth?symbol=BTCUSD_PERP", data=body),
        rec(t="connect", conn="c", ts=6.0, addr="wss://dstream.binance.com/ws/btcusd_perp@depth"),
        rec(t="recv", conn="c", ts=7.0, data="{}"),
        rec(t="disconnect", conn="c", ts=8.0),
    ]) + "\n")  # fmt: skip
    skipped: dict[str, int] = {}

    recs = list(iter_import([f], skipped=skipped))

    assert [(r.ts_recv, r.venue, r.kind, r.key) for r in recs] == [
        (1_000_000_000, Venue.BINANCE_SPOT, "snapshot", "BTCUSDT"),
        (2_000_000_000, Venue.BINANCE_USDM, "snapshot", "ETHUSDT"),
        (3_000_000_000, Venue.BINANCE_SPOT, "klines", "BTCUSDT:1m"),
        (4_000_000_000, Venue.BINANCE_SPOT, "info", "/api/v3/exchangeInfo"),
    ]
    assert skipped == {
        "cryptofeed/connect": 1,
        "cryptofeed/header": 1,
        "cryptofeed/unknown_record:disconnect": 1,
        "cryptofeed/unknown_venue:dapi.binance.com/dapi/v1/depth": 1,
        "cryptofeed/unknown_venue:dstream.binance.com/ws/btcusd_perp@depth": 1,
    }


def test_cryptofeed_with_a_venue_keeps_that_venue_and_counts_the_rest(shared: Path) -> None:
    skipped: dict[str, int] = {}

    recs = list(iter_import([shared / BYBIT_CF], "cryptofeed", Venue.BYBIT_SPOT, skipped=skipped))

    assert Counter((r.venue, r.kind) for r in recs) == {(Venue.BYBIT_SPOT, "ws"): 681, (Venue.BYBIT_SPOT, "info"): 1}
    assert skipped["not --venue bybit_spot: bybit_linear/ws"] == 2546


def test_cryptofeed_record_without_its_fields_is_refused_naming_the_line(tmp_path: Path) -> None:
    f = tmp_path / "X.jsonl"
    f.write_text('{"t":"header"}\n{"t":"recv","ts":1.0,"data":"{}"}\n')
    g = tmp_path / "Y.jsonl"
    g.write_text('{"t":"http","conn":"h","ts":"soon","url":"https://api.bybit.com/v5/market/time","data":"{}"}\n')

    with pytest.raises(RecordingError, match=r"X\.jsonl:2: a recv record without a \"conn\" string"):
        list(import_cryptofeed([f]))
    with pytest.raises(RecordingError, match=r"Y\.jsonl:1: a http record without a numeric \"ts\""):
        list(import_cryptofeed([g]))


# -- binance-csv and tardis: bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt", "error"),
    [
        (BINANCE_CSV.replace("price,", "px,", 1), "binance-csv", r"x\.csv:1: no column price"),
        (BINANCE_CSV + "BTCUSDT,1,2,3,b,set,abc,1,0\n", "binance-csv", r"x\.csv:6: price 'abc' is not a non-neg"),
        (BINANCE_CSV + "BTCUSDT,1,2,3,x,set,1,1,0\n", "binance-csv", r"x\.csv:6: side 'x' is neither 'b' nor 'a'"),
        (BINANCE_CSV + "BTCUSDT,1,2,3,b,del,1,1,0\n", "binance-csv", r"x\.csv:6: update_type 'del'"),
        (BINANCE_CSV + "BTCUSDT,1,2\n", "binance-csv", r"x\.csv:6: 3 fields, the header has 9"),
        (TARDIS_L2.replace("is_snapshot,", ""), "tardis", r"x\.csv:1: a tardis file of columns"),
        (TARDIS_L2.replace("amount\n", "size\n", 1), "tardis", r"x\.csv:1: no column amount"),
        (TARDIS_L2 + "bybit,BTCUSDT,1,2,maybe,bid,1,1\n", "tardis", r"x\.csv:6: is_snapshot 'maybe'"),
        (TARDIS_L2 + "bybit,BTCUSDT,1,2,false,buy,1,1\n", "tardis", r"x\.csv:6: side 'buy' is neither bid nor ask"),
        (TARDIS_L2 + "bybit,BTCUSDT,1\n", "tardis", r"x\.csv:6: 3 fields, the header has 8"),
    ],
)
def test_csv_formats_refuse_bad_input_naming_file_and_line(tmp_path: Path, text: str, fmt: str, error: str) -> None:
    f = tmp_path / "x.csv"
    f.write_text(text)

    with pytest.raises(RecordingError, match=error):
        list(iter_import([f], fmt))


def test_binance_csv_a_usdm_diff_without_pu_is_refused_and_snapshot_rows_alone_need_a_venue(tmp_path: Path) -> None:
    no_pu = tmp_path / "no_pu.csv"
    no_pu.write_text("\n".join(x.rsplit(",", 1)[0] for x in BINANCE_CSV.splitlines()) + "\n")
    snaps = tmp_path / "snap.csv"
    snaps.write_text("".join(BINANCE_CSV.splitlines(keepends=True)[:3]))

    assert [r.venue for r in iter_import([no_pu], "binance-csv")] == [Venue.BINANCE_SPOT] * 2  # no pu: spot
    with pytest.raises(RecordingError, match=r"no_pu\.csv:4: a USD-M diff needs its pu"):
        list(iter_import([no_pu], "binance-csv", Venue.BINANCE_USDM))
    with pytest.raises(RecordingError, match=r"snap\.csv: snapshot rows only; cannot tell Binance spot from USD-M"):
        list(iter_import([snaps], "binance-csv"))
    (snap,) = iter_import([snaps], "binance-csv", Venue.BINANCE_USDM)
    assert snap == Record(
        1723161256501_000000, Venue.BINANCE_USDM, "snapshot", "BTCUSDT",
        '{"lastUpdateId":5123107852948,"E":1723161256501,"T":1723161256501,"bids":[["61800.20","2.909"]],'
        '"asks":[["61800.30","1.072"]]}',
    )  # fmt: skip


def test_tardis_rows_of_markets_not_replayed_are_counted_not_imported(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text(
        TARDIS_L2
        + "okex,BTC-USDT,1,2,true,bid,1,1\n"
        + "bybit,BTCUSD,1,2,true,bid,1,1\n"
        + "bybit,ETHUSDT,1,2,false,bid,1,1\n"  # an update before ETHUSDT's first snapshot
    )
    skipped: dict[str, int] = {}

    recs = list(iter_import([f], skipped=skipped))

    assert len(recs) == 2
    assert skipped == {
        "tardis/unsupported_exchange:okex": 1,
        "tardis/unsupported_market:bybit BTCUSD": 1,
        "tardis/update_before_snapshot:bybit_linear ETHUSDT": 1,
    }
    with pytest.raises(RecordingError, match=r"t\.csv:2: tardis exchange 'bybit' is bybit_linear, not --venue"):
        list(iter_import([f], "tardis", Venue.BYBIT_SPOT))


def test_convert_refuses_an_import_that_imports_nothing_and_leaves_no_directory(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\nokex,BTC-USDT,1,2,true,bid,1,1\n")

    with pytest.raises(RecordingError, match=r"nothing to import from t\.csv .*unsupported_exchange:okex"):
        convert("auto", [f], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_command_defaults_to_auto_and_names_the_bad_line_of_a_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "t.csv"
    good.write_text(TARDIS_L2)
    bad = tmp_path / "bad.csv"
    bad.write_text(BINANCE_CSV + "BTCUSDT,1,2,3,b,set,1e,1,0\n")
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello\n")

    ok = _run_import_command(["import", "--out", str(tmp_path / "o"), str(good)])
    out = orjson.loads(capsys.readouterr().out)
    code_bad = _run_import_command(["import", "--out", str(tmp_path / "o2"), str(bad)])
    err_bad = capsys.readouterr().err
    code_unknown = _run_import_command(["import", "--out", str(tmp_path / "o3"), str(unknown)])
    err_unknown = capsys.readouterr().err

    assert (ok, out["records"], out["formats"]) == (0, 2, {"t.csv": "tardis"})
    assert code_bad == 2
    assert err_bad.startswith("error: ")
    assert "bad.csv:6: price '1e' is not a non-negative number" in err_bad
    assert err_bad.count("\n") == 1
    assert "Traceback" not in err_bad
    assert code_unknown == 2
    assert "notes.txt: cannot tell the format" in err_unknown
    assert err_unknown.count("\n") == 1
