"""``RecordingWriter``: appends records to a native recording (``bot.recording``) in rotated parts of
groups (``bot.recording_groups``) and keeps its manifest true."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

import zstandard

from bot.errors import RecordingError
from bot.recording import FORMAT, MANIFEST, Record, book_symbol, format_line
from bot.recording_groups import GROUP_BYTES, GroupWriter


class RecordingWriter:
    """Appends records to rotated zstd parts and keeps ``manifest.json`` true after every rotation.

    ``close()`` writes the open group and marks the manifest complete; every record passed to
    ``write`` before ``close`` is on disk after it (count in == count on disk).
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        rotate_bytes: int = 64 << 20,
        rotate_records: int | None = None,
        level: int = 3,
        meta: dict[str, object] | None = None,
    ) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if (self.dir / MANIFEST).exists():
            raise RecordingError(f"{self.dir} already holds a recording; choose an empty --out directory")
        self._rotate_bytes = rotate_bytes
        self._rotate_records = rotate_records
        self._cctx = zstandard.ZstdCompressor(level=level)
        self._meta = dict(meta or {})
        self._files: list[dict[str, object]] = []
        self._venues: set[str] = set()
        self._symbols: dict[str, set[str]] = {}
        self._raw: io.BufferedWriter | None = None
        self._group = GroupWriter(self._cctx)
        self._part_records = 0
        self._part_bytes = 0
        self._part_first = 0
        self._part_last = 0
        self.records = 0
        self.closed = False
        self._write_manifest(complete=False)

    def write(self, rec: Record) -> None:
        if self.closed:
            raise RecordingError("write after close")
        data = format_line(rec).encode()
        if self._raw is None:
            self._open_part(rec.ts_recv)
        assert self._raw is not None
        self._group.add(rec.ts_recv, rec.venue, rec.kind, data)
        if self._group.bytes >= GROUP_BYTES:
            self._group.write_to(self._raw)
        self._part_records += 1
        self._part_bytes += len(data)
        self._part_last = rec.ts_recv
        self.records += 1
        self._venues.add(rec.venue)
        if rec.kind == "snapshot":
            self._symbols.setdefault(rec.venue, set()).add(rec.key)
        elif rec.kind == "ws" and (sym := book_symbol(rec.raw)) is not None:
            self._symbols.setdefault(rec.venue, set()).add(sym)
        if self._part_bytes >= self._rotate_bytes or (
            self._rotate_records is not None and self._part_records >= self._rotate_records
        ):
            self._close_part()

    def write_many(self, recs: Iterable[Record]) -> None:
        for rec in recs:
            self.write(rec)

    def note_symbols(self, venue: str, symbols: Iterable[str]) -> None:
        self._symbols.setdefault(venue, set()).update(symbols)

    def flush(self) -> None:
        """Push buffered data to the OS (the records so far as a complete group), so a crash loses little."""
        if self._raw is not None:
            self._group.write_to(self._raw)
            self._raw.flush()

    def close(self) -> None:
        if self.closed:
            return
        self._close_part()
        self.closed = True
        self._write_manifest(complete=True)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_part(self, ts: int) -> None:
        name = f"part-{len(self._files) + 1:06d}.tsv.zst"
        self._raw = open(self.dir / name, "wb")  # noqa: SIM115 - closed in _close_part
        self._part_records = 0
        self._part_bytes = 0
        self._part_first = ts
        self._part_last = ts
        self._files.append({"name": name, "records": 0, "first_ts_recv": ts, "last_ts_recv": ts})

    def _close_part(self) -> None:
        if self._raw is None:
            return
        self._group.write_to(self._raw)
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        self._files[-1].update(
            records=self._part_records, first_ts_recv=self._part_first, last_ts_recv=self._part_last
        )
        self._raw = None
        self._write_manifest(complete=False)

    def _write_manifest(self, *, complete: bool) -> None:
        doc = {
            "format": FORMAT,
            "complete": complete,
            "records": sum(int(str(f["records"])) for f in self._files),
            "venues": sorted(self._venues),
            "symbols": {v: sorted(s) for v, s in sorted(self._symbols.items())},
            "files": self._files,
            **self._meta,
        }
        tmp = self.dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, self.dir / MANIFEST)
