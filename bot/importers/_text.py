"""Reading the public formats' files: compressed text, CSV with a header, and the checks every importer
shares (a number is a number, a line names its file and line number when it is refused)."""

from __future__ import annotations

import csv
import gzip
import io
import re
import zipfile
from collections.abc import Generator, Iterator, MutableMapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

import zstandard

from bot.errors import RecordingError

Skipped = MutableMapping[str, int]  # input records not imported, by reason (never silently)


def count(skipped: Skipped | None, reason: str, n: int = 1) -> None:
    if skipped is not None:
        skipped[reason] = skipped.get(reason, 0) + n


def open_text(path: Path) -> Generator[str, None, None]:
    """Lines of a plain, .gz, .zst or .zip (first member) text file."""
    p = Path(path)
    if not p.is_file():
        raise RecordingError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".gz":
            with gzip.open(p, "rt", encoding="utf-8", newline="\n") as fh:
                yield from fh
        elif suffix == ".zst":
            with open(p, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as zr:
                yield from io.TextIOWrapper(zr, encoding="utf-8", newline="\n")
        elif suffix == ".zip":
            with zipfile.ZipFile(p) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if not names:
                    raise RecordingError(f"{p}: empty zip archive")
                with zf.open(names[0]) as member:
                    yield from io.TextIOWrapper(member, encoding="utf-8", newline="\n")
        else:
            with open(p, encoding="utf-8", newline="\n") as fh:
                yield from fh
    except (OSError, EOFError, zipfile.BadZipFile, zstandard.ZstdError, UnicodeDecodeError) as e:
        raise RecordingError(f"{p}: cannot read: {e}") from e


def first_line(path: Path) -> str:
    """The first non-blank line of a file ('' for an empty one), for format sniffing."""
    lines = open_text(path)
    try:
        for line in lines:
            if line.strip():
                return line.strip("\r\n")
        return ""
    finally:
        lines.close()


def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of a CSV file, blank lines skipped; a line csv cannot read is refused."""
    reader = csv.reader(open_text(path))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise RecordingError(f"{path}:{reader.line_num}: not CSV: {e}") from e
        if row:
            yield reader.line_num, row


def columns(
    path: Path, header: list[str], required: Sequence[str], optional: Sequence[str] = (), what: str = ""
) -> dict[str, int]:
    """Column index by name; a required column that is missing is named (line 1 is the header)."""
    at = {name.strip(): i for i, name in enumerate(header)}
    missing = [c for c in required if c not in at]
    if missing:
        raise RecordingError(
            f"{path}:1: no column {', '.join(missing)} in the header (a {what} file has {','.join(required)})"
        )
    return {c: at[c] for c in (*required, *optional) if c in at}


_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def number(text: str, where: str, name: str) -> str:
    """A price or size as the venue text it becomes (a non-negative decimal), else refused."""
    if _NUMBER.fullmatch(text) is None:
        raise RecordingError(f"{where}: {name} {text[:40]!r} is not a non-negative number")
    return text


def integer(text: str, where: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RecordingError(f"{where}: {name} {text[:40]!r} is not an integer") from None


def decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:  # number() has checked it already; kept for callers that have not
        raise RecordingError(f"not a number: {text[:40]!r}") from None


def check_raw(raw: str, where: str) -> str:
    """Raw text that a native recording can hold (no tab, no line break), else refused here, by line."""
    if "\t" in raw or "\n" in raw or "\r" in raw:
        raise RecordingError(f"{where}: the message holds a tab or line break; not recordable losslessly")
    return raw
