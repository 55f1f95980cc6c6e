"""The grouped part layout (bot.recording_groups, bot-recording/2): written order kept across venues, kinds,
groups and flushes; a reader of some venues (or only of the receive times of REST records) never decompresses
the other streams (shown by damaging them); bot-recording/1 parts still read; damage is named."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import zstandard

from bot.errors import RecordingError
from bot.recording import MANIFEST, Frames, Record, iter_frames, iter_lines, iter_records, part_files
from bot.recording_groups import Group, iter_groups
from bot.recording_writer import RecordingWriter

pytestmark = pytest.mark.unit

VENUES = ("bybit_linear", "bybit_spot", "binance_spot")


def _mixed(n: int, seed: int = 7) -> list[Record]:
    """Records of three venues and every kind, interleaved at random, as a recorder sees them."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        venue = rnd.choice(VENUES)
        kind = rnd.choices(("ws", "snapshot", "klines", "info"), (20, 1, 1, 1))[0]
        key = "-" if kind == "ws" else f"K{i % 5}"
        raw = json.dumps({"topic": f"t.{i}", "pad": "x" * rnd.randrange(10, 400)}, separators=(",", ":"))
        out.append(Record(1_000 + i * 3 + rnd.randrange(3), venue, kind, key, raw))
    return out


def _write(out: Path, recs: list[Record], *, flush_every: int = 0, **kw: object) -> None:
    with RecordingWriter(out, **kw) as w:  # type: ignore[arg-type]
        for i, rec in enumerate(recs, 1):
            w.write(rec)
            if flush_every and i % flush_every == 0:
                w.flush()


def _frames_records(path: Path, venues: list[str] | None = None, texts: tuple[str, ...] | None = None) -> list[Record]:
    out = []
    for item in iter_frames(path, venues=venues, texts=texts):
        if type(item) is Frames:
            d = item.data
            cols = (item.ts.tolist(), item.key.tolist(), item.raw.tolist(), item.end.tolist())
            for t, k, r, e in zip(*cols, strict=True):
                out.append(Record(t, item.venue, "ws", d[k : r - 1].decode(), d[r:e].decode()))
        else:
            out.extend(Record(*row) for row in zip(*item, strict=True))
    return out


def _groups(path: Path) -> list[Group]:
    return [g for p in part_files(path) for g in iter_groups(p)]


def test_every_reader_gives_the_written_order_across_venues_kinds_groups_and_flushes(tmp_path: Path) -> None:
    recs = _mixed(3000)
    _write(tmp_path / "rec", recs, flush_every=97, rotate_bytes=400_000)
    parts = part_files(tmp_path / "rec")
    assert len(parts) > 1  # rotated
    assert len(_groups(tmp_path / "rec")) > len(parts)  # several groups a part
    assert list(iter_records(tmp_path / "rec")) == recs
    assert _frames_records(tmp_path / "rec") == recs
    assert [line for p in parts for line in iter_lines(p)] == [
        f"{r.ts_recv}\t{r.venue}\t{r.kind}\t{r.key}\t{r.raw}\n" for r in recs
    ]
    for venues in (["bybit_spot"], ["bybit_linear", "binance_spot"]):
        want = [r for r in recs if r.venue in venues]
        assert list(iter_records(tmp_path / "rec", venues=venues)) == want
        assert _frames_records(tmp_path / "rec", venues) == want


def test_texts_leaves_other_kinds_compressed_with_their_times(tmp_path: Path) -> None:
    recs = _mixed(800)
    _write(tmp_path / "rec", recs)
    got = _frames_records(tmp_path / "rec", ["bybit_linear"], texts=("ws", "snapshot"))
    want = [r if r.kind in ("ws", "snapshot") else r._replace(key="", raw="")
            for r in recs if r.venue == "bybit_linear"]  # fmt: skip
    assert got == want


def _damage_stream(part: Path, venue: str, kind: str | None = None) -> None:
    """Overwrite the compressed bytes of ``venue``'s frames (of ``kind``) in every group with garbage."""
    data = bytearray(part.read_bytes())
    at = 0
    while at < len(data):
        n = int.from_bytes(data[at + 4 : at + 8], "little")
        head = json.loads(data[at + 8 : at + 8 + n])
        at += 8 + n
        for v, k, clen, _ in head["s"]:
            if v == venue and kind in (None, k):
                data[at : at + clen] = b"\xff" * clen
            at += clen
    part.write_bytes(bytes(data))


def test_a_reader_never_touches_the_streams_it_does_not_read(tmp_path: Path) -> None:
    recs = _mixed(1500)
    _write(tmp_path / "rec", recs, flush_every=200)
    (part,) = part_files(tmp_path / "rec")
    _damage_stream(part, "bybit_linear")
    _damage_stream(part, "bybit_spot", "info")
    spot = [r for r in recs if r.venue == "bybit_spot"]
    binance = [r for r in recs if r.venue == "binance_spot"]
    assert list(iter_records(tmp_path / "rec", venues=["binance_spot"])) == binance
    blanked = [r if r.kind in ("ws", "snapshot") else r._replace(key="", raw="") for r in spot]
    assert _frames_records(tmp_path / "rec", ["bybit_spot"], texts=("ws", "snapshot")) == blanked
    with pytest.raises(RecordingError, match="corrupt zstd data"):
        list(iter_records(tmp_path / "rec", venues=["bybit_spot"]))  # its info bodies are needed now
    with pytest.raises(RecordingError, match="corrupt zstd data"):
        list(iter_frames(tmp_path / "rec", venues=["bybit_linear"]))


def test_any_zstd_reader_still_gets_every_line(tmp_path: Path) -> None:
    recs = _mixed(500)
    _write(tmp_path / "rec", recs, flush_every=50)
    (part,) = part_files(tmp_path / "rec")
    with open(part, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True) as z:
        lines = z.read().decode().splitlines()
    assert sorted(lines) == sorted(f"{r.ts_recv}\t{r.venue}\t{r.kind}\t{r.key}\t{r.raw}" for r in recs)


def test_a_version_1_recording_still_reads(tmp_path: Path) -> None:
    recs = _mixed(300)
    rec = tmp_path / "v1"
    rec.mkdir()
    body = "".join(f"{r.ts_recv}\t{r.venue}\t{r.kind}\t{r.key}\t{r.raw}\n" for r in recs).encode()
    (rec / "part-000001.tsv.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    files = [{"name": "part-000001.tsv.zst", "records": len(recs), "first_ts_recv": 0, "last_ts_recv": 0}]
    manifest = {"format": "bot-recording/1", "complete": True, "records": len(recs), "files": files}
    (rec / MANIFEST).write_text(json.dumps(manifest))
    assert list(iter_records(rec)) == recs
    assert _frames_records(rec, ["bybit_spot"]) == [r for r in recs if r.venue == "bybit_spot"]


def test_a_cut_group_ends_an_open_part_and_fails_a_closed_one(tmp_path: Path) -> None:
    recs = _mixed(600)
    _write(tmp_path / "rec", recs, flush_every=100)
    (part,) = part_files(tmp_path / "rec")
    whole = part.read_bytes()
    part.write_bytes(whole[:-10])  # the last group cut short
    with pytest.raises(RecordingError, match="truncated or damaged"):
        list(iter_records(tmp_path / "rec"))
    manifest = json.loads((tmp_path / "rec" / MANIFEST).read_text())
    manifest["files"] = []  # as while the recorder still writes that part: no count to check
    (tmp_path / "rec" / MANIFEST).write_text(json.dumps(manifest))
    assert list(iter_records(tmp_path / "rec")) == recs[:500]


def test_a_damaged_group_header_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "rec", _mixed(50))
    (part,) = part_files(tmp_path / "rec")
    data = bytearray(part.read_bytes())
    data[8:12] = b"!!!!"  # the header's JSON
    part.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match="damaged group header"):
        list(iter_records(tmp_path / "rec"))
