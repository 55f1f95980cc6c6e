"""Depth levels off the wire: ``[["61824.00000000","0.32726000"],...]`` into a float array of shape (n, 2).

Both venues send a message's price levels as a JSON array of two decimal strings each. They are most of
a depth frame's bytes and nearly all of the work of decoding one: through msgspec (its lax mode turns
the strings into floats in C) a level still becomes a tuple and two Python floats, about 0.5 us, only
to be unpacked again by the book. So the adapters keep the levels as JSON text, and a compiled loop
(``bot.book_kernels.read_levels``) reads them: straight into the book on the hot path
(``OrderBook.apply_json``), into arrays here (diffs buffered while a book syncs, snapshots, tests).

That loop reads only the exact shape the venues send: no whitespace, every number a quoted string of
digits with at most one ``.`` and at most 15 digits, JSON's number grammar otherwise. Such a number is
``digits / 10**decimals`` with both terms exact in a float64, so one division gives the correctly rounded
value: the float ``float("61824.00000000")`` gives, bit for bit. Anything else (whitespace, exponents,
signs, long numbers, leading zeros, a zero price, broken JSON) goes to msgspec with the wire types and
bounds below, which returns the same levels or raises the error the frame deserves.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import numpy as np
from numba import njit

from bot.book_kernels import read_levels

# Wire-level numbers for msgspec (lax mode, ``strict=False``, turns decimal strings into floats in C). The
# bounds reject "nan", "inf", zero prices and negative sizes at decode time, so they never reach a book.
Price = Annotated[float, msgspec.Meta(gt=0, lt=1e15)]
Size = Annotated[float, msgspec.Meta(ge=0, lt=1e15)]
WireLevels = list[tuple[Price, Size]]

_LEVELS = msgspec.json.Decoder(WireLevels, strict=False)
_NONE = np.empty((0, 2))


@njit(cache=True)
def _read_pair(bids: np.ndarray, asks: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    b, ok_b = read_levels(bids)
    a, ok_a = read_levels(asks)
    return b, a, ok_b and ok_a


def parse_levels(raw: msgspec.Raw | bytes | str) -> np.ndarray:
    """One side's levels as an (n, 2) float array; ``msgspec.ValidationError``/``DecodeError`` if malformed."""
    buf = raw.encode() if isinstance(raw, str) else raw
    levels, ok = read_levels(np.frombuffer(buf, np.uint8))
    if ok:
        return levels
    return _slow(buf)


def parse_pair(bids: msgspec.Raw | bytes, asks: msgspec.Raw | bytes) -> tuple[np.ndarray, np.ndarray]:
    """``parse_levels`` of both sides of a depth message, in one compiled call on the fast path."""
    b, a, ok = _read_pair(np.frombuffer(bids, np.uint8), np.frombuffer(asks, np.uint8))
    if ok:
        return b, a
    return _slow(bids), _slow(asks)


def _slow(raw: msgspec.Raw | bytes) -> np.ndarray:
    """msgspec with the wire types: the same floats as the fast path, or the error the frame deserves."""
    levels = _LEVELS.decode(raw)
    return np.array(levels, dtype=np.float64).reshape(-1, 2) if levels else _NONE
