"""The layout of a part of a ``bot-recording/2`` recording: groups of per-stream zstd frames, so a reader
decompresses only the streams it reads.

A part is a sequence of groups. A group holds the records written between two of the writer's flushes
(about a second of a recording, at most ``GROUP_BYTES`` of lines): first a zstd skippable frame (magic
``MAGIC``) whose payload is the group's header, then one ordinary zstd frame per stream, in the header's
order. A stream is the records of one venue and kind (``bybit_spot``'s websocket frames, ``bybit_linear``'s
REST ``info`` bodies, ...). The header, JSON::

    {"s": [[venue, kind, compressed bytes, records], ...], "r": [stream, count, stream, count, ...],
     "t": [[receive times of a stream's records, for every kind but ws], ...]}

``r`` is the order the records were written in, as runs: ``count`` records of stream ``stream``, then the
next run. A reader that wants some streams reads the header, seeks past the other frames, decompresses
its own and puts their lines back in the written order with the runs; it never touches the bytes of a
stream it does not read (a one-market replay of a two-market recording reads one market's frames).
``t`` lets a reader that needs only the receive times of the REST records (the offline feed counts the
instrument lists, which can be half a short session's bytes) leave them compressed too.

Any zstd tool still reads a part (it skips the skippable frames): every line comes out, each group's
lines by stream. A ``bot-recording/1`` part is one plain zstd stream of lines in written order; a part is
read as one or the other by its first four bytes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import msgspec
import zstandard

from bot.errors import RecordingError

MAGIC = 0x184D2A5B  # a skippable frame's magic (0x184D2A50..5F): zstd decoders pass over it
_HEAD = struct.Struct("<II")  # magic, payload size
GROUP_BYTES = 1 << 20  # lines a group holds at most (uncompressed): each stream's frame decompresses in one go


class _Header(msgspec.Struct, frozen=True):
    s: list[tuple[str, str, int, int]]  # per stream: venue, kind, compressed size, records
    r: list[int]  # runs: stream, count, ...
    t: list[list[int]] = []  # per stream: its receive times (REST kinds; [] for ws)


_HEADER = msgspec.json.Decoder(_Header)


class Group(NamedTuple):
    """One group as read: per stream its venue, kind, record count and decompressed lines (None: a stream
    the reader did not want, not decompressed); the runs as (stream, count) pairs in written order."""

    venues: list[str]
    kinds: list[str]
    counts: list[int]
    data: list[bytes | None]
    runs: list[tuple[int, int]]
    times: list[list[int]]  # per stream: its records' receive times where the header has them, else []

    @property
    def records(self) -> int:
        return sum(self.counts)


class GroupWriter:
    """Collects lines by stream and writes them to ``out`` as one group on ``write_to``."""

    def __init__(self, cctx: zstandard.ZstdCompressor) -> None:
        self._cctx = cctx
        self._index: dict[tuple[str, str], int] = {}
        self._lines: list[list[bytes]] = []
        self._times: list[list[int]] = []
        self._runs: list[int] = []
        self.bytes = 0

    def add(self, ts_recv: int, venue: str, kind: str, line: bytes) -> None:
        key = (venue, kind)
        s = self._index.get(key)
        if s is None:
            s = self._index[key] = len(self._lines)
            self._lines.append([])
            self._times.append([])
        self._lines[s].append(line)
        if kind != "ws":
            self._times[s].append(ts_recv)
        if self._runs and self._runs[-2] == s:
            self._runs[-1] += 1
        else:
            self._runs += (s, 1)
        self.bytes += len(line)

    def write_to(self, out: BinaryIO) -> None:
        """Write the group (nothing if it is empty) and start a new one."""
        if not self._runs:
            return
        frames = [self._cctx.compress(b"".join(lines)) for lines in self._lines]
        keys = zip(self._index, frames, self._lines, strict=True)
        streams = [[v, k, len(f), len(lines)] for (v, k), f, lines in keys]
        header = msgspec.json.encode({"s": streams, "r": self._runs, "t": self._times})
        out.write(b"".join([_HEAD.pack(MAGIC, len(header)), header, *frames]))
        self._index.clear()
        self._lines.clear()
        self._times.clear()
        self._runs = []
        self.bytes = 0


def is_grouped(part: Path) -> bool:
    """Whether ``part`` is laid out in groups (``bot-recording/2``) rather than as one zstd stream."""
    with open(part, "rb") as fh:
        head = fh.read(4)
    return len(head) == 4 and int.from_bytes(head, "little") == MAGIC


def iter_groups(part: Path, want: Callable[[str, str], bool] | None = None) -> Iterator[Group]:
    """The groups of a grouped part in order, each wanted stream (``want(venue, kind)``; None: every one)
    decompressed; the others are not read. A group cut short (a recorder that died while writing it) ends
    the part there, as a truncated zstd frame ends a plain part: only the manifest's record count can tell."""
    dctx = zstandard.ZstdDecompressor()
    with open(part, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        at = 0
        while at + _HEAD.size <= size:
            magic, n = _HEAD.unpack(fh.read(_HEAD.size))
            if magic != MAGIC:
                raise RecordingError(f"{part}: damaged part (no group header at byte {at})")
            if at + _HEAD.size + n > size:
                return
            try:
                head = _HEADER.decode(fh.read(n))
            except msgspec.DecodeError as e:
                raise RecordingError(f"{part}: damaged group header at byte {at}: {e}") from e
            at += _HEAD.size + n
            if at + sum(s[2] for s in head.s) > size:
                return
            data: list[bytes | None] = []
            for venue, kind, clen, _ in head.s:
                if want is None or want(venue, kind):
                    try:
                        data.append(dctx.decompress(fh.read(clen)))
                    except zstandard.ZstdError as e:
                        raise RecordingError(f"{part}: corrupt zstd data in the group at byte {at}: {e}") from e
                else:
                    fh.seek(clen, os.SEEK_CUR)
                    data.append(None)
                at += clen
            runs = list(zip(head.r[::2], head.r[1::2], strict=False))
            if not _consistent(head, runs):
                raise RecordingError(f"{part}: damaged group header at byte {at}: its runs do not add up")
            times = head.t if len(head.t) == len(head.s) else [[] for _ in head.s]
            yield Group([s[0] for s in head.s], [s[1] for s in head.s], [s[3] for s in head.s], data, runs, times)


def _consistent(head: _Header, runs: list[tuple[int, int]]) -> bool:
    """The runs name existing streams and give each exactly its record count."""
    left = [st[3] for st in head.s]
    if len(head.r) % 2 or any(t and len(t) != n for t, n in zip(head.t, left, strict=False)):
        return False
    for s, c in runs:
        if not 0 <= s < len(left) or c < 1:
            return False
        left[s] -= c
    return not any(left)
