"""``bybit-archive``: Bybit's public order-book archive, one raw websocket message per line, in a ``.zip``
(as published: ``2024-12-01_BTCUSDT_ob500.data.zip``), ``.gz``, ``.zst`` or plain file::

    {"topic":"orderbook.500.XRPUSDT","type":"snapshot","ts":1733011200691,"data":{"s":"XRPUSDT",...,"u":20254870,"seq":...},"cts":...}

Files come at the depth of their topic: ``orderbook.500`` for linear, ``orderbook.200`` for spot (also
``50`` and ``1``). The depth is the data's, never the config's: the lines are carried over as they are and
the Bybit adapter, offline, follows the topic it finds (``bot.venues.bybit``). There is no receive time:
the message's ``ts`` (ms) stands in for it.

The venue is ``--venue``; without it, a ``linear`` or ``spot`` folder in the file's path (the archive's
own layout, ``orderbook/linear/BTCUSDT/...``), else depth 500 (linear only) tells; otherwise the file is
refused, asking for ``--venue``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from bot.errors import RecordingError
from bot.events import Venue
from bot.importers._text import check_raw, open_text
from bot.recording import Record

BYBIT = (Venue.BYBIT_LINEAR, Venue.BYBIT_SPOT)


def import_bybit_archive(paths: Sequence[Path], venue: Venue | None = None) -> Iterator[Record]:
    """Records from Bybit order-book archive files; ``ts`` stands in for the missing receive time."""
    if venue is not None and venue not in BYBIT:
        raise RecordingError(f"bybit-archive needs --venue bybit_linear or bybit_spot, not {venue}")
    for path in paths:
        yield from _archive_file(Path(path), venue)


def _archive_file(path: Path, venue: Venue | None) -> Iterator[Record]:
    venue = venue or _venue_from_path(path)
    for n, line in enumerate(open_text(path), 1):
        raw = line.strip()
        if not raw:
            continue
        where = f"{path}:{n}"
        try:
            msg = orjson.loads(raw)
            ts_ms = int(msg["ts"])
            topic = msg["topic"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise RecordingError(f"{where}: not a Bybit archive message: {raw[:80]!r}") from e
        if not isinstance(topic, str) or not topic.startswith("orderbook."):
            raise RecordingError(f"{where}: not an orderbook message (topic {str(topic)[:40]!r})")
        if venue is None:
            venue = _venue_from_topic(topic, where)
        yield Record(ts_ms * 1_000_000, venue, "ws", "archive", check_raw(raw, where))


def _venue_from_path(path: Path) -> Venue | None:
    parts = {p.lower() for p in path.resolve().parts[:-1]}
    if "linear" in parts and "spot" not in parts:
        return Venue.BYBIT_LINEAR
    if "spot" in parts and "linear" not in parts:
        return Venue.BYBIT_SPOT
    return None


def _venue_from_topic(topic: str, where: str) -> Venue:
    if topic.split(".")[1:2] == ["500"]:  # linear only (PROTOCOLS.md 1.4)
        return Venue.BYBIT_LINEAR
    raise RecordingError(f"{where}: {topic} may be spot or linear; pass --venue bybit_linear or bybit_spot")
