"""The native recording format (bot.recording): lossless round trip, rotation, manifest, refusals, damage."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard

from bot.errors import RecordingError
from bot.recording import (
    MANIFEST,
    Frames,
    Record,
    Row,
    format_line,
    iter_frames,
    iter_lines,
    iter_records,
    iter_rows,
    parse_line,
    part_files,
    read_manifest,
)
from bot.recording_writer import RecordingWriter

pytestmark = pytest.mark.unit

# Real frames (cut short) from the shared recordings, plus the awkward cases a lossless format must carry.
SAMPLES = [
    Record(
        1723161253937085768,
        "binance_spot",
        "ws",
        "-",
        '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255208,"s":"BTCUSDT",'
        '"U":50093239189,"u":50093239202,"b":[["61737.63000000","0.00000000"]],"a":[]}}',
    ),
    Record(
        1723161254206652067,
        "binance_spot",
        "snapshot",
        "BTCUSDT",
        '{"lastUpdateId":50093239218,"bids":[["61837.63000000","3.78826000"]],"asks":[["61837.64000000","1.54698000"]]}',
    ),
    Record(
        1786310818129000000,
        "bybit_linear",
        "ws",
        "conn-1",
        '{"topic":"orderbook.200.BTCUSDT","type":"snapshot","ts":1786310818129,"data":{"s":"BTCUSDT",'
        '"b":[["65114.20","6.054"]],"a":[["65114.30","10.486"]],"u":15076952,"seq":753843911359},"cts":1786310818027}',
    ),
    Record(1786310818200000000, "bybit_linear", "info", "/v5/market/instruments-info?category=linear", '{"retCode":0}'),
    Record(1786310818300000000, "bybit_spot", "klines", "BTCUSDT:60", '{"result":{"list":[]}}'),
    Record(5, "binance_usdm", "ws", "-", '{"text":"ünïcödé €, spaces  and a \\\\t escaped tab"}'),
    Record(6, "binance_usdm", "ws", "-", ""),  # an empty frame is still a frame
]


def _write(out: Path, recs: list[Record], **kw: object) -> RecordingWriter:
    w = RecordingWriter(out, **kw)  # type: ignore[arg-type]
    for r in recs:
        w.write(r)
    w.close()
    return w


def _many(n: int) -> list[Record]:
    return [Record(1_000 + i, "bybit_spot", "ws", "c", f'{{"i":{i},"pad":"{"x" * (i % 50)}"}}') for i in range(n)]


def frame_rows(path: Path, *, venues: list[str] | None = None) -> Iterator[Row]:
    """``iter_frames`` flattened into rows: the offline feed's reader, to compare with ``iter_rows``."""
    for item in iter_frames(path, venues=venues):
        if type(item) is Frames:
            d = item.data
            for t, k, r, e in zip(
                item.ts.tolist(), item.key.tolist(), item.raw.tolist(), item.end.tolist(), strict=True
            ):
                yield t, item.venue, "ws", d[k : r - 1].decode(), d[r:e].decode()
        else:
            yield from zip(*item, strict=True)


Reader = Callable[..., Iterator[Row]]


@pytest.fixture(params=[iter_rows, frame_rows], ids=["iter_rows", "iter_frames"])
def reader(request: pytest.FixtureRequest) -> Reader:
    """Both block readers: every record and every error of one must be the other's."""
    return request.param  # type: ignore[no-any-return]


def test_round_trip_returns_every_record_unchanged_and_in_order(tmp_path: Path) -> None:
    # Arrange / Act
    _write(tmp_path / "rec", SAMPLES)

    # Assert
    assert list(iter_records(tmp_path / "rec")) == SAMPLES


def test_format_and_parse_line_are_inverse_and_keep_tabs_out_of_the_raw_text() -> None:
    for rec in SAMPLES:
        line = format_line(rec)
        assert line.endswith("\n")
        assert line.count("\t") == 4
        assert parse_line(line) == rec


def test_raw_text_with_a_tab_newline_or_carriage_return_is_refused_and_not_counted(tmp_path: Path) -> None:
    w = RecordingWriter(tmp_path / "rec")
    w.write(SAMPLES[0])
    for bad in ('{"a":"x\ty"}', '{"a":1}\n{"b":2}', '{"a":"x\ry"}'):
        with pytest.raises(RecordingError, match="tab or newline"):
            w.write(Record(1, "binance_spot", "ws", "-", bad))
    w.write(SAMPLES[1])
    w.close()

    assert w.records == 2
    assert list(iter_records(tmp_path / "rec")) == SAMPLES[:2]
    assert read_manifest(tmp_path / "rec")["records"] == 2


def test_rotation_by_record_count_keeps_every_record_and_the_manifest_lists_each_part(tmp_path: Path) -> None:
    recs = _many(10)

    _write(tmp_path / "rec", recs, rotate_records=3)

    names = [p.name for p in part_files(tmp_path / "rec")]
    assert names == [f"part-{i:06d}.tsv.zst" for i in range(1, 5)]
    assert list(iter_records(tmp_path / "rec")) == recs
    man = read_manifest(tmp_path / "rec")
    assert man["complete"] is True
    assert man["records"] == 10
    assert man["files"] == [
        {"name": "part-000001.tsv.zst", "records": 3, "first_ts_recv": 1000, "last_ts_recv": 1002},
        {"name": "part-000002.tsv.zst", "records": 3, "first_ts_recv": 1003, "last_ts_recv": 1005},
        {"name": "part-000003.tsv.zst", "records": 3, "first_ts_recv": 1006, "last_ts_recv": 1008},
        {"name": "part-000004.tsv.zst", "records": 1, "first_ts_recv": 1009, "last_ts_recv": 1009},
    ]


def test_rotation_by_size_keeps_every_record(tmp_path: Path) -> None:
    recs = _many(500)

    _write(tmp_path / "rec", recs, rotate_bytes=4096)

    parts = part_files(tmp_path / "rec")
    man = read_manifest(tmp_path / "rec")
    assert len(parts) > 3
    assert list(iter_records(tmp_path / "rec")) == recs
    assert sum(f["records"] for f in man["files"]) == 500  # type: ignore[union-attr,index]
    # Each part is a self-contained zstd stream: it can be read on its own.
    assert sum(1 for p in parts for _ in iter_lines(p)) == 500


def test_manifest_counts_venues_snapshot_symbols_and_metadata(tmp_path: Path) -> None:
    w = RecordingWriter(tmp_path / "rec", meta={"imported_from": "unit-test"})
    assert read_manifest(tmp_path / "rec")["complete"] is False
    w.write_many(SAMPLES)
    w.note_symbols("bybit_linear", ["ETHUSDT", "BTCUSDT"])
    w.close()
    w.close()  # idempotent

    man = read_manifest(tmp_path / "rec")
    assert man["format"] == "bot-recording/2"
    assert man["complete"] is True
    assert man["records"] == len(SAMPLES)
    assert man["venues"] == ["binance_spot", "binance_usdm", "bybit_linear", "bybit_spot"]
    assert man["symbols"] == {"binance_spot": ["BTCUSDT"], "bybit_linear": ["BTCUSDT", "ETHUSDT"]}
    assert man["imported_from"] == "unit-test"
    assert not (tmp_path / "rec" / (MANIFEST + ".tmp")).exists()


def test_venue_filter_yields_only_the_chosen_venues_in_order(tmp_path: Path) -> None:
    _write(tmp_path / "rec", SAMPLES)

    got = list(iter_records(tmp_path / "rec", venues=["bybit_linear", "binance_usdm"]))

    assert got == [r for r in SAMPLES if r.venue in ("bybit_linear", "binance_usdm")]


def test_a_single_part_file_can_be_read_without_its_directory(tmp_path: Path) -> None:
    _write(tmp_path / "rec", SAMPLES)

    assert list(iter_records(tmp_path / "rec" / "part-000001.tsv.zst")) == SAMPLES


def test_flushed_records_are_readable_while_the_writer_is_still_open(tmp_path: Path) -> None:
    w = RecordingWriter(tmp_path / "rec")
    w.write_many(SAMPLES[:3])
    w.flush()

    assert [parse_line(x) for x in iter_lines(tmp_path / "rec" / "part-000001.tsv.zst")] == SAMPLES[:3]
    # The open part is not in the manifest yet, so reading the directory does not demand a count for it.
    assert list(iter_records(tmp_path / "rec")) == SAMPLES[:3]
    w.close()


def test_writer_refuses_a_directory_that_already_holds_a_recording(tmp_path: Path) -> None:
    _write(tmp_path / "rec", SAMPLES[:1])

    with pytest.raises(RecordingError, match="already holds a recording"):
        RecordingWriter(tmp_path / "rec")


def test_write_after_close_is_an_error(tmp_path: Path) -> None:
    w = _write(tmp_path / "rec", SAMPLES[:1])

    with pytest.raises(RecordingError, match="after close"):
        w.write(SAMPLES[1])


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("not a record\n", "not a native recording line"),
        ("1\tbinance_spot\tws\t-\n", "not a native recording line"),
        ("1\tbinance_spot\ttelepathy\t-\t{}\n", "not a native recording line"),
        ("12x\tbinance_spot\tws\t-\t{}\n", "bad timestamp"),
    ],
)
def test_parse_line_names_the_problem(line: str, match: str) -> None:
    with pytest.raises(RecordingError, match=match):
        parse_line(line, "part-000001.tsv.zst:7")


def test_directory_without_manifest_is_not_a_recording(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"no manifest\.json"):
        list(iter_records(tmp_path))


def test_manifest_that_is_not_json_or_of_another_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text("{oops")
    with pytest.raises(RecordingError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(RecordingError, match="unknown recording format"):
        read_manifest(tmp_path)


def test_garbage_bytes_in_a_part_raise_recording_error(tmp_path: Path, reader: Reader) -> None:
    _write(tmp_path / "rec", SAMPLES)
    (tmp_path / "rec" / "part-000001.tsv.zst").write_bytes(b"this is not zstd at all" * 8)

    with pytest.raises(RecordingError, match="corrupt zstd data"):
        list(reader(tmp_path / "rec"))


def test_a_truncated_part_raises_recording_error_instead_of_losing_records_silently(
    tmp_path: Path, reader: Reader
) -> None:
    _write(tmp_path / "rec", _many(20), rotate_records=10)
    part = tmp_path / "rec" / "part-000001.tsv.zst"
    part.write_bytes(part.read_bytes()[:-6])

    with pytest.raises(RecordingError, match="manifest says 10"):
        list(reader(tmp_path / "rec"))


def test_a_part_listed_in_the_manifest_but_missing_is_an_error(tmp_path: Path, reader: Reader) -> None:
    _write(tmp_path / "rec", _many(20), rotate_records=10)
    (tmp_path / "rec" / "part-000002.tsv.zst").unlink()

    with pytest.raises(RecordingError, match=r"part-000002\.tsv\.zst listed in the manifest is missing"):
        list(reader(tmp_path / "rec"))


def test_a_part_that_decompresses_to_non_utf8_or_foreign_lines_raises_recording_error(
    tmp_path: Path, reader: Reader
) -> None:
    _write(tmp_path / "rec", SAMPLES[:1])
    part = tmp_path / "rec" / "part-000001.tsv.zst"
    part.write_bytes(zstandard.ZstdCompressor().compress(b"\xff\xfe\x00 binary\n"))
    with pytest.raises(RecordingError, match="not UTF-8"):
        list(reader(tmp_path / "rec"))

    part.write_bytes(zstandard.ZstdCompressor().compress(b"1\tbinance_spot\tws\t-\t{}\nhello world\n"))
    with pytest.raises(RecordingError, match=r"part-000001\.tsv\.zst:2: not a native recording line"):
        list(reader(tmp_path / "rec"))


# -- the block reader (iter_rows): the same records and errors as a line-by-line reader ---------------
def _raw_part(tmp_path: Path, text: str, records: int | None = None) -> Path:
    """A recording directory whose only part holds ``text`` as written (lines a writer would refuse too)."""
    rec = tmp_path / "rec"
    _write(rec, [])
    man = read_manifest(rec)
    man["files"] = [] if records is None else [{"name": "part-000001.tsv.zst", "records": records}]
    (rec / MANIFEST).write_text(json.dumps(man))
    (rec / "part-000001.tsv.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    return rec


def test_iter_rows_yields_plain_tuples_equal_to_the_records_across_many_blocks(tmp_path: Path, reader: Reader) -> None:
    # ~40 bytes a line: 20_000 lines span a dozen 64 KiB blocks, cut at arbitrary places.
    recs = [r._replace(venue=("bybit_spot", "binance_usdm")[i % 2]) for i, r in enumerate(_many(20_000))]
    _write(tmp_path / "rec", recs)

    rows = list(reader(tmp_path / "rec"))
    usdm = list(reader(tmp_path / "rec", venues=["binance_usdm"]))

    assert rows == recs
    assert type(rows[0]) is tuple
    assert usdm == [r for r in recs if r.venue == "binance_usdm"]
    assert list(reader(tmp_path / "rec")) == recs


def test_blank_lines_are_skipped_and_a_last_line_without_newline_is_read(tmp_path: Path, reader: Reader) -> None:
    text = '1\tbinance_spot\tws\t-\t{}\n\n   \n2\tbinance_spot\tws\t-\t{"a":1}\n3\tbybit_spot\tinfo\t/p\tx'
    rec = _raw_part(tmp_path, text, records=3)

    assert list(reader(rec)) == [
        (1, "binance_spot", "ws", "-", "{}"),
        (2, "binance_spot", "ws", "-", '{"a":1}'),
        (3, "bybit_spot", "info", "/p", "x"),
    ]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("9\tbinance_spot\tws\t{}", "not a native recording line"),  # three tabs: no key
        ("9\tbinance_spot\tws\t-\t{\t}", None),  # five tabs: the fifth is part of the raw text, as before
        ("9x\tbinance_spot\tws\t-\t{}", "bad timestamp"),
        ("9\tbinance_spot\twebsocket\t-\t{}", "not a native recording line"),
    ],
)
def test_a_bad_line_deep_in_a_part_is_named_after_every_good_line_before_it(
    tmp_path: Path, bad: str, match: str | None, reader: Reader
) -> None:
    good = [f'{1000 + i}\tbinance_spot\tws\t-\t{{"i":{i}}}' for i in range(5000)]
    rec = _raw_part(tmp_path, "\n".join([*good[:3000], "", bad, *good[3000:]]) + "\n")
    got: list[object] = []

    if match is None:
        got.extend(reader(rec))
        assert got[3000] == (9, "binance_spot", "ws", "-", "{\t}")
        assert len(got) == 5001
        return
    with pytest.raises(RecordingError, match=rf"part-000001\.tsv\.zst:3002: {match}"):
        got.extend(reader(rec))
    assert len(got) == 3000  # every record before the bad line, in order
    assert got[-1] == (3999, "binance_spot", "ws", "-", '{"i":2999}')


@pytest.mark.parametrize(
    "ts",
    [
        "007",  # leading zeros: int() reads 7, a JSON reader would refuse
        "+5",
        " 5 ",
        "5\r",
        "1_000",
        "١٢",  # non-ASCII digits: int() reads 12
        "-3",
        "18446744073709551616",  # past 64 bits: still an exact int, never a float
        "1e5",
        "1.0",
        "true",
        '"5"',
        "[5]",
        "1,2",
        "",
        "9" * 4301,  # past int()'s digit limit
    ],
)
def test_awkward_timestamps_deep_in_a_part_read_exactly_as_parse_line_reads_them(
    tmp_path: Path, ts: str, reader: Reader
) -> None:
    # The block reader converts a block's timestamp column in one go; whatever it accepts must be what
    # int() gives, and whatever int() refuses must stop the reader at that line, naming it.
    good = [f'{1723161253937085768 + i}\tbinance_spot\tws\t-\t{{"i":{i}}}' for i in range(4000)]
    bad = f"{ts}\tbinance_spot\tws\t-\t{{}}"
    rec = _raw_part(tmp_path, "\n".join([*good[:2500], bad, *good[2500:]]) + "\n")
    try:
        want: Record | str = parse_line(bad, "part-000001.tsv.zst:2501")
    except RecordingError as e:
        want = str(e)
    if isinstance(want, str):
        with pytest.raises(RecordingError) as got:
            list(reader(rec))
        assert str(got.value) == want
        return
    rows = list(reader(rec))
    assert len(rows) == 4001
    assert rows[2500] == tuple(want)
    assert type(rows[2500][0]) is int
    assert rows[2499] == (1723161253937085768 + 2499, "binance_spot", "ws", "-", '{"i":2499}')


def test_multibyte_characters_cut_by_block_boundaries_decode_unchanged(tmp_path: Path, reader: Reader) -> None:
    # Odd-length lines of 2- and 3-byte characters: the 64 KiB reads end inside characters and lines.
    recs = [Record(i, "binance_usdm", "ws", "-", f'{{"t":"{"€ü" * (i % 37)}{"x" * (i % 3)}"}}') for i in range(6000)]
    _write(tmp_path / "rec", recs)

    assert list(reader(tmp_path / "rec")) == recs


def test_iter_frames_gives_every_record_of_interleaved_venues_and_kinds_as_iter_rows_does(tmp_path: Path) -> None:
    # SAMPLES holds snapshots, REST bodies, a non-ASCII frame and an empty one between websocket frames
    # of four venues: runs of one venue and kind, and a block that takes the text path.
    recs = [r._replace(ts_recv=r.ts_recv + i) for i in range(300) for r in SAMPLES]
    _write(tmp_path / "rec", recs, rotate_records=700)

    for venues in (None, ["binance_spot"], ["bybit_linear", "binance_usdm"], ["nowhere"]):
        want = [r for r in recs if venues is None or r.venue in venues]
        assert list(frame_rows(tmp_path / "rec", venues=venues)) == want, venues
    ascii_only = [r for r in recs if r.raw.isascii()]
    _write(tmp_path / "ascii", ascii_only)
    items = list(iter_frames(tmp_path / "ascii"))
    assert all(type(i) is Frames for i in items if "ws" in i[2:3])  # the scanned path: frames stay bytes
    assert sum(len(i.ts) for i in items if type(i) is Frames) == sum(r.kind == "ws" for r in ascii_only)
