"""Depth levels off the wire: ``[["61824.00000000","0.32726000"],...]`` into a float array of shape (n, 2).

Both venues send a message's price levels as a JSON array of two decimal strings each. They are most of
a depth frame's bytes and nearly all of the work of decoding one: through msgspec (its lax mode turns
the strings into floats in C) a level still becomes a tuple and two Python floats, about 0.5 us, only
to be unpacked again by the book. Here the adapters decode the frame with the levels left raw
(``msgspec.Raw``), and a compiled loop reads the levels straight into the array the book
(``bot.book``) takes.

The fast path reads only the exact shape the venues send: no whitespace, every number a quoted string of
digits with at most one ``.`` and at most 15 digits. Such a number is ``digits / 10**decimals`` with both
terms exact in a float64, so one division gives the correctly rounded value: the same float
``float("61824.00000000")`` gives, bit for bit. Anything else (whitespace, exponents, signs, long
numbers, leading zeros, a zero price, broken JSON) goes to msgspec with the original types and bounds, which returns
the same levels or raises the same error as before (``parse_levels``).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import numpy as np
from numba import njit

# Wire-level numbers for msgspec (lax mode, ``strict=False``, turns decimal strings into floats in C). The
# bounds reject "nan", "inf", zero prices and negative sizes at decode time, so they never reach a book.
Price = Annotated[float, msgspec.Meta(gt=0, lt=1e15)]
Size = Annotated[float, msgspec.Meta(ge=0, lt=1e15)]
WireLevels = list[tuple[Price, Size]]

_LEVELS = msgspec.json.Decoder(WireLevels, strict=False)
_POW10 = np.array([10.0**i for i in range(16)])
_NONE = np.empty((0, 2))


@njit(cache=True)
def _read(buf: np.ndarray) -> tuple[np.ndarray, bool]:
    """The levels of ``buf`` (the raw JSON bytes), and whether it had the exact expected shape."""
    n = buf.shape[0]
    out = np.empty((n // 9 + 1, 2))  # a level takes at least 9 bytes: ["1","1"],
    if n < 2 or buf[0] != 91:  # [
        return out[:0], False
    if buf[1] == 93:  # ]
        return out[:0], n == 2
    i = 1
    m = 0
    while True:
        if buf[i] != 91:  # [
            return out[:0], False
        i += 1
        for col in range(2):
            if buf[i] != 34:  # "
                return out[:0], False
            i += 1
            start = i
            digits = 0
            decimals = -1  # -1: no '.' yet
            mant = 0
            while i < n:
                ch = buf[i]
                if 48 <= ch <= 57:
                    mant = mant * 10 + (ch - 48)
                    digits += 1
                    if decimals >= 0:
                        decimals += 1
                elif ch == 46 and decimals < 0:  # .
                    decimals = 0
                else:
                    break
                i += 1
            whole = digits - max(decimals, 0)  # JSON's number grammar: "5", "0.5"; not ".5", "05", "5."
            if i >= n - 1 or buf[i] != 34 or digits > 15 or decimals == 0 or whole == 0:
                return out[:0], False
            if whole > 1 and buf[start] == 48:
                return out[:0], False
            i += 1
            out[m, col] = mant / _POW10[decimals] if decimals > 0 else float(mant)
            if col == 0:
                if buf[i] != 44 or out[m, 0] == 0.0:  # , (and a price must be > 0)
                    return out[:0], False
                i += 1
        if buf[i] != 93:  # ]
            return out[:0], False
        i += 1
        m += 1
        if i >= n:
            return out[:0], False
        if buf[i] == 44:  # ,
            i += 1
            if i >= n:
                return out[:0], False
            continue
        return out[:m], buf[i] == 93 and i + 1 == n


@njit(cache=True)
def _read_pair(bids: np.ndarray, asks: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    b, ok_b = _read(bids)
    a, ok_a = _read(asks)
    return b, a, ok_b and ok_a


def parse_levels(raw: msgspec.Raw | bytes | str) -> np.ndarray:
    """One side's levels as an (n, 2) float array; ``msgspec.ValidationError``/``DecodeError`` if malformed."""
    buf = raw.encode() if isinstance(raw, str) else raw
    levels, ok = _read(np.frombuffer(buf, np.uint8))
    if ok:
        return levels
    return _slow(buf)


def parse_pair(bids: msgspec.Raw, asks: msgspec.Raw) -> tuple[np.ndarray, np.ndarray]:
    """``parse_levels`` of both sides of a depth message, in one compiled call on the fast path."""
    b, a, ok = _read_pair(np.frombuffer(bids, np.uint8), np.frombuffer(asks, np.uint8))
    if ok:
        return b, a
    return _slow(bids), _slow(asks)


def _slow(raw: msgspec.Raw | bytes) -> np.ndarray:
    """msgspec with the wire types: the same floats as the fast path, or the error the frame deserves."""
    levels = _LEVELS.decode(raw)
    return np.array(levels, dtype=np.float64).reshape(-1, 2) if levels else _NONE
