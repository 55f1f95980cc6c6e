"""The native recording format: lossless raw venue traffic, one record per line.

A recording is a directory::

    DIR/manifest.json            format, venues, symbols, files with record counts, complete flag
    DIR/part-000001.tsv.zst      groups of zstd frames of lines, rotated by size
    DIR/part-000002.tsv.zst ...

Each line is ``ts_recv_ns <TAB> venue <TAB> kind <TAB> key <TAB> raw`` where ``raw`` is the text exactly
as received (venue JSON never contains a raw tab or newline; if one ever did, the record is refused, not
mangled). ``kind`` is one of:

* ``ws``        a websocket text frame; ``key`` is the connection (``-`` when unknown)
* ``snapshot``  a REST depth snapshot body; ``key`` is the canonical symbol
* ``klines``    a REST klines body; ``key`` is ``SYMBOL:interval`` (``BTCUSDT:1m``)
* ``info``      another REST body (instruments, exchangeInfo); ``key`` is the path

Records are written in receive order; readers yield them in that order. A part holds them in groups of
per-stream frames (``bot.recording_groups``), so a reader of some venues never decompresses the others';
parts of ``bot-recording/1`` (one zstd stream of lines) are read as before.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, compress, pairwise
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import msgspec
import numpy as np
import zstandard
from numpy.typing import NDArray

from bot.errors import RecordingError
from bot.recording_groups import Group, is_grouped, iter_groups

FORMAT = "bot-recording/2"
FORMATS = frozenset({"bot-recording/1", FORMAT})  # /1: a part is one zstd stream of lines
MANIFEST = "manifest.json"
KINDS = frozenset({"ws", "snapshot", "klines", "info"})


class Record(NamedTuple):
    ts_recv: int  # local receive time, ns
    venue: str
    kind: str
    key: str
    raw: str


def format_line(rec: Record) -> str:
    if "\t" in rec.raw or "\n" in rec.raw or "\r" in rec.raw:
        raise RecordingError(f"raw text holds a tab or newline; not recordable losslessly: {rec.raw[:80]!r}")
    return f"{rec.ts_recv}\t{rec.venue}\t{rec.kind}\t{rec.key}\t{rec.raw}\n"


def parse_line(line: str, where: str = "") -> Record:
    parts = line.rstrip("\n").split("\t", 4)
    if len(parts) != 5 or parts[2] not in KINDS:
        raise RecordingError(f"{where}: not a native recording line: {line[:80]!r}")
    try:
        ts = int(parts[0])
    except ValueError as e:
        raise RecordingError(f"{where}: bad timestamp {parts[0][:30]!r}") from e
    return Record(ts, parts[1], parts[2], parts[3], parts[4])


def book_symbol(raw: str) -> str | None:
    """The canonical symbol of an order-book frame (Binance depth stream, Bybit orderbook topic), else None.

    Only the first bytes are looked at: this runs for every recorded frame.
    """
    if raw.startswith('{"stream":"'):
        at = raw.find("@", 11)
        return raw[11:at].upper() if at > 11 and raw.startswith("depth", at + 1) else None
    i = raw.find('"topic":"orderbook.', 0, 40)
    if i < 0:
        return None
    start = raw.find(".", i + 19) + 1
    end = raw.find('"', start)
    return raw[start:end] if 0 < start < end else None


def read_manifest(path: Path) -> dict[str, object]:
    p = Path(path)
    mf = p / MANIFEST if p.is_dir() else p
    try:
        doc = json.loads(mf.read_text())
    except FileNotFoundError as e:
        raise RecordingError(f"{p}: no {MANIFEST}; not a native recording directory") from e
    except json.JSONDecodeError as e:
        raise RecordingError(f"{mf}: manifest is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") not in FORMATS:
        raise RecordingError(f"{mf}: unknown recording format {doc.get('format')!r}")
    return doc


def part_files(path: Path) -> list[Path]:
    """The parts of a recording directory in order (or ``[path]`` for a single part file)."""
    p = Path(path)
    if p.is_dir():
        read_manifest(p)
    return _parts(p)


def _parts(p: Path) -> list[Path]:
    """``part_files`` without the manifest check (for readers that read the manifest already)."""
    if p.is_file():
        return [p]
    if not p.is_dir():
        read_manifest(p)  # raises: no recording there
    return sorted(p.glob("part-*.tsv.zst"))


def iter_lines(part: Path) -> Iterator[str]:
    """The lines of one part as text, in written order."""
    if is_grouped(part):
        for g in iter_groups(part):
            lines = [_decode(part, d).splitlines(keepends=True) if d is not None else [] for d in g.data]
            for s, a, b in _slices(g):
                yield from lines[s][a:b]
        return
    dctx = zstandard.ZstdDecompressor()
    with open(part, "rb") as fh, dctx.stream_reader(fh, read_across_frames=True) as reader:
        text = io.TextIOWrapper(reader, encoding="utf-8", newline="\n")
        try:
            yield from text
        except zstandard.ZstdError as e:
            raise RecordingError(f"{part}: corrupt zstd data: {e}") from e
        except UnicodeDecodeError as e:
            raise RecordingError(f"{part}: damaged part (not UTF-8 text): {e}") from e


def iter_records(path: Path, *, venues: Iterable[str] | None = None) -> Iterator[Record]:
    """Every record of a recording (directory or single part), in order; optionally only some venues."""
    yield from map(Record._make, iter_rows(path, venues=venues))


Row = tuple[int, str, str, str, str]  # a Record's fields as a plain tuple: (ts_recv, venue, kind, key, raw)

_BLOCK_BYTES = 1 << 16  # decompressed bytes per read: a block of lines stays in the CPU cache


class Block(NamedTuple):
    """Consecutive records as columns: the rows are ``zip(*block)``."""

    ts: list[int]
    venue: list[str]
    kind: list[str]
    key: list[str]
    raw: list[str]


def iter_rows(path: Path, *, venues: Iterable[str] | None = None) -> Iterator[Row]:
    """``iter_records`` as plain tuples, for loops that unpack every record (``bot books``, replay).

    Same records, same order, same errors; several times faster, because a record costs a few C-level
    steps instead of a line of Python (and a tuple instead of a ``Record``, whose constructor is a
    Python-level call). Made of ``iter_blocks``.
    """
    return chain.from_iterable(zip(*b, strict=True) for b in iter_blocks(path, venues=venues))


def iter_blocks(path: Path, *, venues: Iterable[str] | None = None) -> Iterator[Block]:
    """``iter_rows`` a block of lines at a time, as columns: for loops that need only some columns (the
    offline feed: receive time, connection, raw text), which can then zip just those (a tuple per record
    that ``zip`` reuses) instead of the five.

    Each block of ~64 KiB of lines is split into its five columns with one ``str.split`` (newlines
    turned into tabs first), after two checks on the block as a whole: every kind is a known kind and
    every timestamp an integer. A line with a tab too few or too many shifts every later field of its
    block, so the timestamp column would then hold venue names, keys or JSON and the kind column anything
    but kinds: those checks catch it. A block that fails a check is parsed line by line and yielded a
    record at a time, the good lines before the bad one, which raises naming it exactly as ``parse_line``
    does (a fifth tab, which a writer never writes, stays in the raw text as before). Blocks are never
    empty.
    """
    keep = frozenset(venues) if venues is not None else None
    return _blocks(Path(path), keep)


class _Counted:
    """Records and lines of one part read so far (blank lines count as lines, for error messages)."""

    __slots__ = ("lines", "records")

    def __init__(self) -> None:
        self.records = 0
        self.lines = 0


class Frames(NamedTuple):
    """Consecutive ``ws`` records of one venue with their text left in the decompressed bytes of the block:
    record ``i`` was received at ``ts[i]`` on connection ``data[key[i]:raw[i] - 1]`` and is the frame
    ``data[raw[i]:end[i]]`` (ASCII, so its bytes are its text). The arrays are int64."""

    venue: str
    data: bytes
    ts: NDArray[np.int64]
    key: NDArray[np.int64]
    raw: NDArray[np.int64]
    end: NDArray[np.int64]


_FRAME_BYTES = 1 << 18  # decompressed bytes per read for iter_frames: fewer, larger blocks, same zstd speed


def iter_frames(
    path: Path, *, venues: Iterable[str] | None = None, texts: Iterable[str] | None = None
) -> Iterator[Frames | Block]:
    """``iter_blocks`` for the offline feed: each venue's websocket frames as ``Frames`` (no Python object
    per record until an adapter asks for one), every other record in ``Block``s; same records, same
    order, same errors.

    A block of lines is scanned by ``bot.recording_kernels.scan`` (receive times, field offsets, runs of
    one venue and kind) when it is ASCII and every line has the written shape; otherwise (non-ASCII text,
    a blank, foreign or damaged line, an awkward timestamp) it is decoded and read as ``iter_blocks``
    reads it, so every error is raised and named as there.

    ``texts``: the kinds whose key and raw text the caller reads (None: every kind). Records of the other
    kinds may come with both empty (their receive times, venue and kind still true): in a grouped part
    they are then left compressed (the offline feed only counts the REST ``info`` bodies).
    """
    keep = frozenset(venues) if venues is not None else None
    return _frames(Path(path), keep, None if texts is None else frozenset(texts) | {"ws"})


def _frames(path: Path, keep: frozenset[str] | None, texts: frozenset[str] | None = None) -> Iterator[Frames | Block]:
    from bot import recording_kernels as rk  # numba: only readers that scan pay for its import

    expected = _closed_part_counts(path)  # the manifest read (and checked) once
    for part in _parts(path):
        seen = _Counted()
        if is_grouped(part):
            yield from _grouped_frames(part, keep, texts, seen)
            _check_count(part, seen, expected)
            continue
        for chunk in _byte_blocks(part, _FRAME_BYTES):
            data = bytes(chunk)
            ok = data.isascii()  # else not scanned: the text path decodes (and checks) it
            if ok:
                buf = np.frombuffer(data, np.uint8)
                nl = np.flatnonzero(buf == 10)
                ts, off, kind, new, ok = rk.scan(buf, nl)
            if not ok:
                yield from _text_blocks(_decode(part, data), part, keep, seen)
                continue
            n = len(nl)
            seen.records += n
            seen.lines += n
            runs = np.flatnonzero(new).tolist()
            runs.append(n)
            for a, b in pairwise(runs):
                venue = data[off[0, a] : off[1, a] - 1].decode()
                if keep is not None and venue not in keep:
                    continue
                if kind[a] == rk.KIND_WS:
                    yield Frames(venue, data, ts[a:b], off[2, a:b], off[3, a:b], nl[a:b])
                else:
                    yield _rest_block(venue, rk.KIND_NAMES[kind[a]], data, ts[a:b], off[2, a:b], off[3, a:b], nl[a:b])
        _check_count(part, seen, expected)


def _rest_block(
    venue: str, kind: str, data: bytes, ts: NDArray[np.int64], key_at: NDArray[np.int64], raw_at: NDArray[np.int64],
    end_at: NDArray[np.int64],
) -> Block:  # fmt: skip
    """Scanned records that are not websocket frames (REST bodies), as a ``Block`` of text."""
    k_at, r_at, e_at = key_at.tolist(), raw_at.tolist(), end_at.tolist()
    keys = [data[k : r - 1].decode() for k, r in zip(k_at, r_at, strict=True)]
    raws = [data[r:e].decode() for r, e in zip(r_at, e_at, strict=True)]
    m = len(k_at)
    return Block(ts.tolist(), [venue] * m, [kind] * m, keys, raws)


def _blocks(path: Path, keep: frozenset[str] | None) -> Iterator[Block]:
    expected = _closed_part_counts(path)  # the manifest read (and checked) once
    for part in _parts(path):
        seen = _Counted()
        if is_grouped(part):
            yield from _grouped_blocks(part, keep, seen)
        else:
            for chunk in _byte_blocks(part):
                yield from _text_blocks(_decode(part, chunk), part, keep, seen)
        _check_count(part, seen, expected)


# -- grouped parts (bot.recording_groups) -------------------------------------------------------------
Columns = tuple[list[int], list[str], list[str], list[str], list[str]]


def _want(keep: frozenset[str] | None, texts: frozenset[str] | None = None) -> Callable[[str, str], bool] | None:
    """Which streams to decompress: the kept venues' (every kind, or those in ``texts``)."""
    if keep is None and texts is None:
        return None
    return lambda venue, kind: (keep is None or venue in keep) and (texts is None or kind in texts)


def _slices(g: Group, keep: frozenset[str] | None = None) -> list[tuple[int, int, int]]:
    """The group's records in written order as (stream, first, end) slices of its streams: the kept venues'
    streams (read, or known by their times), a stream's runs that now touch each other joined."""
    out: list[tuple[int, int, int]] = []
    at = [0] * len(g.counts)
    for s, c in g.runs:
        a = at[s]
        at[s] = a + c
        if g.data[s] is None and (not g.times[s] or (keep is not None and g.venues[s] not in keep)):
            continue
        if out and out[-1][0] == s:
            out[-1] = (s, out[-1][1], a + c)
        else:
            out.append((s, a, a + c))
    return out


def _stream_columns(part: Path, g: Group, s: int, lines_before: int) -> Columns:
    """The five columns of stream ``s`` of a group (its lines checked as ``iter_blocks`` checks a block)."""
    data = g.data[s]
    assert data is not None
    text = _decode(part, data)
    cols = _columns(text)
    if cols is None:  # a damaged line: named (and raised) as the line-by-line reader names it
        before = lines_before + sum(g.counts[:s])
        rows = list(_parse_lines(text, part.name, before))
        cols = ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
                [r[4] for r in rows])  # fmt: skip
    n = g.counts[s]
    if len(cols[0]) != n or cols[1].count(g.venues[s]) != n or cols[2].count(g.kinds[s]) != n:
        raise RecordingError(f"{part}: damaged group: its {g.venues[s]}/{g.kinds[s]} frame holds other records")
    return cols


def _grouped_blocks(part: Path, keep: frozenset[str] | None, seen: _Counted) -> Iterator[Block]:
    for g in iter_groups(part, _want(keep)):
        cols: dict[int, Columns] = {}
        for s, a, b in _slices(g, keep):
            if s not in cols:
                cols[s] = _stream_columns(part, g, s, seen.lines)
            yield Block(*(col[a:b] for col in cols[s]))  # type: ignore[arg-type]
        seen.records += g.records
        seen.lines += g.records


def _grouped_frames(
    part: Path, keep: frozenset[str] | None, texts: frozenset[str] | None, seen: _Counted
) -> Iterator[Frames | Block]:
    """``_frames`` for a grouped part: each stream read scanned once, its records handed out in runs."""
    from bot import recording_kernels as rk

    for g in iter_groups(part, _want(keep, texts)):
        scans: dict[int, tuple[bytes, Any, Any, Any] | Columns] = {}
        for s, a, b in _slices(g, keep):
            c = b - a
            if g.data[s] is None:  # a kind whose texts the caller does not read: its times, from the header
                yield Block(g.times[s][a:b], [g.venues[s]] * c, [g.kinds[s]] * c, [""] * c, [""] * c)
                continue
            got = scans.get(s)
            if got is None:
                got = scans[s] = _scan_stream(part, g, s, seen.lines, rk)
            if len(got) == 5:  # not scanned: columns
                yield Block(*(col[a:b] for col in got))  # type: ignore[arg-type]
                continue
            data, ts, off, nl = got
            if g.kinds[s] == "ws":
                yield Frames(g.venues[s], data, ts[a:b], off[2, a:b], off[3, a:b], nl[a:b])
            else:
                yield _rest_block(g.venues[s], g.kinds[s], data, ts[a:b], off[2, a:b], off[3, a:b], nl[a:b])
        seen.records += g.records
        seen.lines += g.records


def _scan_stream(
    part: Path, g: Group, s: int, lines_before: int, rk: ModuleType
) -> tuple[bytes, Any, Any, Any] | Columns:
    """A stream as (data, receive times, field offsets, line ends) when it scans cleanly as one run of its
    venue and kind (``bot.recording_kernels.scan``), else as the text reader's columns."""
    data = g.data[s]
    assert data is not None
    if data.isascii():
        buf = np.frombuffer(data, np.uint8)
        nl = np.flatnonzero(buf == 10)
        ts, off, kind, new, ok = rk.scan(buf, nl)
        if (ok and len(nl) == g.counts[s] and rk.KIND_NAMES[kind[0]] == g.kinds[s] and not new[1:].any()
                and data[off[0, 0] : off[1, 0] - 1].decode() == g.venues[s]):  # fmt: skip
            return data, ts, off, nl
    return _stream_columns(part, g, s, lines_before)


def _text_blocks(text: str, part: Path, keep: frozenset[str] | None, seen: _Counted) -> Iterator[Block]:
    """The records of one block of text as ``Block``s of the kept venues (see ``iter_blocks``)."""
    cols = _columns(text)
    if cols is None:  # a damaged or foreign line somewhere in the block: line by line
        for ts, venue_, kind, key, raw in _parse_lines(text, part.name, seen.lines):
            seen.records += 1
            if keep is None or venue_ in keep:
                yield Block([ts], [venue_], [kind], [key], [raw])
        seen.lines += text.count("\n")
        return
    n = len(cols[0])
    seen.records += n
    seen.lines += n
    venue = cols[1]
    only = next(iter(keep)) if keep is not None and len(keep) == 1 else None
    if keep is None or (only is not None and venue.count(only) == n) or keep.issuperset(venue):
        yield Block(*cols)
    else:
        mask = list(map(keep.__contains__, venue))
        if any(mask):
            yield Block(*[list(compress(c, mask)) for c in cols])  # type: ignore[arg-type]


def _check_count(part: Path, seen: _Counted, expected: dict[str, int]) -> None:
    want = expected.get(part.name)
    if want is not None and seen.records != want:
        # A truncated zstd frame reads as a clean end of data: only the count can tell.
        raise RecordingError(f"{part}: {seen.records} records but the manifest says {want}; truncated or damaged")


def _byte_blocks(part: Path, size: int = _BLOCK_BYTES) -> Iterator[bytes | memoryview]:
    """The decompressed part in blocks of whole lines, each ending with a newline (one is added to a last
    line that lacks it: the text reader yields that line too).

    A block is a view of the decompressed chunk where it can be, so its bytes are copied once (by the
    decoder), not sliced and concatenated first. Reads of 64 KiB measured best for the text path: larger
    ones make zstd slower (its output leaves the CPU cache) and the rest no faster.
    """
    dctx = zstandard.ZstdDecompressor()
    with open(part, "rb") as fh, dctx.stream_reader(fh, read_across_frames=True) as reader:
        tail = b""
        while True:
            try:
                chunk = reader.read(size)
            except zstandard.ZstdError as e:
                raise RecordingError(f"{part}: corrupt zstd data: {e}") from e
            if not chunk:
                break
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                tail += chunk
                continue
            lines = memoryview(chunk)[:cut]
            yield b"".join((tail, lines)) if tail else lines
            tail = chunk[cut:]
        if tail:
            yield tail + b"\n"


def _decode(part: Path, block: bytes | memoryview) -> str:
    try:
        return str(block, "utf-8")
    except UnicodeDecodeError as e:
        raise RecordingError(f"{part}: damaged part (not UTF-8 text): {e}") from e


def _columns(text: str) -> tuple[list[int], list[str], list[str], list[str], list[str]] | None:
    """The five columns of a block of well-formed lines, or None if a line may not be one."""
    fields = text.replace("\n", "\t").split("\t")  # 5 fields a line, and a last empty one
    if len(fields) % 5 != 1:
        return None
    kinds = fields[2::5]
    if kinds.count("ws") != len(kinds) and not KINDS.issuperset(kinds):  # all "ws": no hashing needed
        return None
    ts = _timestamps(fields[0:-1:5])
    if ts is None:
        return None
    return ts, fields[1::5], kinds, fields[3::5], fields[4::5]


_INTS = msgspec.json.Decoder(list[int])


def _timestamps(col: list[str]) -> list[int] | None:
    """``[int(t) for t in col]``, or None if one is not an integer; about twice as fast as ``map(int, col)``.

    The column is read as one JSON array by msgspec (the per-call cost of ``int`` is most of its time).
    msgspec is strict where ``int`` is lenient (leading zeros, ``+``, ``_``, other whitespace, non-ASCII
    digits): it refuses those and ``int`` decides. Where it accepts, the value is the same: it refuses
    floats, booleans and strings, and honours the same digit limit. A comma inside a field would add an
    element (an empty field makes the array malformed), so the count must match too.
    """
    try:
        ts = _INTS.decode(f"[{','.join(col)}]")
        if len(ts) == len(col):
            return ts
    except msgspec.DecodeError:  # ValidationError included
        pass
    try:
        return list(map(int, col))
    except ValueError:
        return None


def _parse_lines(text: str, part_name: str, lines_before: int) -> Iterator[Row]:
    """The slow path: line by line, skipping blank lines, raising at the first bad one."""
    for n, line in enumerate(text.split("\n")[:-1], lines_before + 1):
        if not line.strip():
            continue
        yield parse_line(line, f"{part_name}:{n}")


def _closed_part_counts(path: Path) -> dict[str, int]:
    """Record counts of the parts the manifest lists (closed parts; an open one is not listed yet)."""
    if not path.is_dir():
        return {}
    files = read_manifest(path).get("files")
    counts: dict[str, int] = {}
    for f in files if isinstance(files, list) else []:
        if isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("records"), int):
            counts[f["name"]] = f["records"]
            if not (path / f["name"]).is_file():
                raise RecordingError(f"{path}: part {f['name']} listed in the manifest is missing")
    return counts
