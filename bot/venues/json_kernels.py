"""What the venues' compiled replay loops share (``bot.venues.bybit_kernels``, ``bot.venues.binance_kernels``):
readers of the exact bytes a venue sends, and applying one diff to a book's kernel state with the
bookkeeping the adapter settles afterwards (numba).

Those loops walk a block of recorded frames and apply the diffs they can take straight into the books
(``bot.book_kernels.apply``), until a frame that Python must handle first; see each loop's module. Here:

* ``lit``, ``same``, ``uint``, ``levels_end``: the layout readers. A reader returns the position after
  what it read, or -1, and takes -1 as its start to return -1 again, so a layout is a chain of calls
  checked once at the end. ``uint`` reads an unsigned JSON integer of at most 18 digits (the value msgspec
  gives it); ``levels_end`` finds where a levels array ends if ``bot.book_kernels.read_levels`` is to
  accept it.
* ``take``: read a diff's two levels arrays (the venue's exact shape, or nothing is applied) and apply
  them, recording what the adapter needs per book (``B_*`` columns) and per diff (a row of the run's
  ``BookUpdate`` batch), or the whole result when the book healed a crossed state.
* ``scratch``: the arrays a loop writes those into, made once per block of frames.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from bot.book_kernels import apply, read_levels

MAX_BOOKS = 8  # the books' states go in as a tuple of exactly this many arrays (one compiled signature)
BOOK, LATER, NOW = 0, 1, 2  # route kinds: a book's diffs; handled at the next stop; handled in order
QUIET = 3  # frames whose handler only publishes an event nobody receives: counted (if they would decode)
END, TICK, PYTHON, HEALED = 0, 1, 2, 3  # why a loop returned
# Per-book int64 columns (one row per book): in, then out.
B_UID, B_OK, B_ROOM = 0, 1, 2  # update id (in and out), diffs may be taken (0/1), levels a diff may add
B_COUNT, B_MAX_RECV, B_LAST_RECV, B_LAST_EVENT = 3, 4, 5, 6  # diffs applied, their latest/last receive
#   time, the last one's exchange time (ns)
B_SEEN, B_STALE, B_LAST_E = 7, 8, 9  # diffs read (applied or dropped as stale), dropped, the last one's E (ms)
B_COLS = 10
TAKEN, NOT_READ, HEALED_NOW = 0, 1, 2  # what take did
NS_PER_MS = 1_000_000

_TRUE = np.frombuffer(b"true", np.uint8)
_FALSE = np.frombuffer(b"false", np.uint8)

_jit = njit(cache=True)


class Scratch(NamedTuple):
    """What a compiled loop writes (see ``take``), for ``nb`` books and a block of ``n`` frames."""

    books: np.ndarray  # (nb, B_COLS) int64: per book, the ``B_*`` columns
    tops: np.ndarray  # (nb, 4): per book, its top after the last diff applied
    later: np.ndarray  # (n,) int64: the frames passed over, handled at the next stop
    rows: np.ndarray  # (n, 4) int64: per diff applied, its ``BookUpdate`` row
    row_tops: np.ndarray  # (n, 4): per diff applied, the top after it
    healed: np.ndarray  # (4,) int64: a diff that healed a crossed book
    healed_f: np.ndarray  # (6,): the rest of that diff's result


def scratch(nb: int, n: int) -> Scratch:
    return Scratch(
        np.zeros((nb, B_COLS), np.int64), np.zeros((nb, 4)), np.empty(n, np.int64), np.empty((n, 4), np.int64),
        np.empty((n, 4)), np.zeros(4, np.int64), np.zeros(6),
    )  # fmt: skip


@_jit
def lit(buf: np.ndarray, p: int, e: int, word: np.ndarray) -> int:
    """The position after ``word`` if ``buf[p:e]`` starts with it, else -1 (also for ``p`` -1)."""
    m: int = word.shape[0]
    if p < 0 or e - p < m:
        return -1
    for j in range(m):
        if buf[p + j] != word[j]:
            return -1
    return p + m


@_jit
def same(buf: np.ndarray, p: int, e: int, text: np.ndarray, a: int, b: int) -> int:
    """``lit`` of ``text[a:b]``."""
    m = b - a
    if p < 0 or e - p < m:
        return -1
    for j in range(m):
        if buf[p + j] != text[a + j]:
            return -1
    return p + m


@_jit
def uint(buf: np.ndarray, p: int, e: int) -> tuple[int, int]:
    """(value, position after it) of the unsigned JSON integer at ``p`` (at most 18 digits, no leading zero),
    or (0, -1)."""
    if p < 0:
        return 0, -1
    v = 0
    i = p
    while i < e and i - p < 19 and 48 <= buf[i] <= 57:
        v = v * 10 + int(buf[i] - 48)
        i += 1
    digits = i - p
    if digits == 0 or digits > 18 or (digits > 1 and buf[p] == 48):
        return 0, -1
    return v, i


@_jit
def decimal(buf: np.ndarray, p: int, e: int, positive: bool) -> int:
    """The position after the quoted decimal at ``p`` (``"61837.63000000"``: JSON's number grammar, no sign or
    exponent, at most 14 digits before the point and 30 in all), or -1; ``positive``: not zero either. Such
    a string is one msgspec's lax mode reads as a float within ``bot.venues.levels``' ``Price``/``Size``
    bounds."""
    if p < 0 or p >= e or buf[p] != 34:
        return -1
    i = p + 1
    whole = 0
    frac = -1  # -1: no point yet
    nonzero = False
    while i < e and i - p <= 31:
        c = buf[i]
        if 48 <= c <= 57:
            nonzero = nonzero or c != 48
            if frac < 0:
                if whole == 1 and buf[i - 1] == 48:  # a leading zero
                    return -1
                whole += 1
            else:
                frac += 1
        elif c == 46 and frac < 0 and whole > 0:
            frac = 0
        else:
            break
        i += 1
    if i >= e or buf[i] != 34 or whole == 0 or whole > 14 or frac == 0 or (positive and not nonzero):
        return -1
    return i + 1


@_jit
def boolean(buf: np.ndarray, p: int, e: int) -> int:
    """The position after ``true`` or ``false`` at ``p``, or -1."""
    q = lit(buf, p, e, _TRUE)
    return q if q >= 0 else lit(buf, p, e, _FALSE)


@_jit
def plain_string(buf: np.ndarray, p: int, e: int) -> int:
    """The position after a quoted string of letters, digits and ``_`` at ``p`` (no escapes), or -1."""
    if p < 0 or p >= e or buf[p] != 34:
        return -1
    i = p + 1
    while i < e and (48 <= buf[i] <= 57 or 65 <= buf[i] <= 90 or 97 <= buf[i] <= 122 or buf[i] == 95):
        i += 1
    if i >= e or buf[i] != 34:
        return -1
    return i + 1


@_jit
def levels_end(buf: np.ndarray, p: int, e: int) -> int:
    """Where a levels array starting at ``p`` ends, if ``read_levels`` is to accept it: after ``[]``, or after
    the first ``]]`` (in the venue's shape no level holds one); -1 if there is neither."""
    if p < 0 or e - p < 2 or buf[p] != 91:
        return -1
    if buf[p + 1] == 93:
        return p + 2
    q = p + 1
    while q + 1 < e:
        if buf[q] == 93 and buf[q + 1] == 93:
            return q + 2
        q += 1
    return -1


@_jit
def take(
    buf: np.ndarray, b0: int, b1: int, a0: int, a1: int, st: np.ndarray, k: int, u: int, event_ms: int, t: int,
    books: np.ndarray, tops: np.ndarray, rows: np.ndarray, row_tops: np.ndarray, nr: int, healed: np.ndarray,
    healed_f: np.ndarray,
) -> tuple[int, int]:  # fmt: skip
    """Apply the diff with bids ``buf[b0:b1]`` and asks ``buf[a0:a1]`` (update ``u``, exchange time
    ``event_ms``, received at ``t``) to book ``k``'s state ``st``. Returns (what it did, levels applied):

    * ``NOT_READ``: a side is not in the venue's exact shape; nothing applied.
    * ``TAKEN``: applied; row ``nr`` of ``rows`` is (book, exchange time ns, receive time, update id) and
      of ``row_tops`` the top of book after it; book ``k``'s columns and ``tops[k]`` are updated.
    * ``HEALED_NOW``: applied, and the book was crossed and healed (or refused a price no reader here
      produces); not in ``rows``: ``healed`` holds (levels, update id, exchange time ms, levels removed),
      ``healed_f`` the rest of ``apply``'s result. Only ``B_UID`` is updated.
    """
    bids, ok_b = read_levels(buf[b0:b1])
    asks, ok_a = read_levels(buf[a0:a1])
    if not (ok_b and ok_a):
        return NOT_READ, 0
    res = apply(st, bids, asks)
    books[k, B_UID] = u
    m = bids.shape[0] + asks.shape[0]
    if res[0] != 0:
        healed[0] = m
        healed[1] = u
        healed[2] = event_ms
        healed[3] = res[0]
        healed_f[0] = res[1]
        healed_f[1] = res[2]
        healed_f[2] = res[3]
        healed_f[3] = res[4]
        healed_f[4] = res[5]
        healed_f[5] = res[6]
        return HEALED_NOW, m
    rows[nr, 0] = k
    rows[nr, 1] = event_ms * NS_PER_MS
    rows[nr, 2] = t
    rows[nr, 3] = u
    row_tops[nr, 0] = tops[k, 0] = res[3]
    row_tops[nr, 1] = tops[k, 1] = res[4]
    row_tops[nr, 2] = tops[k, 2] = res[5]
    row_tops[nr, 3] = tops[k, 3] = res[6]
    books[k, B_COUNT] += 1
    if t > books[k, B_MAX_RECV]:
        books[k, B_MAX_RECV] = t
    books[k, B_LAST_RECV] = t
    books[k, B_LAST_EVENT] = event_ms * NS_PER_MS
    return TAKEN, m


@_jit
def reset_out(books: np.ndarray) -> None:
    """Clear the out columns before a loop runs."""
    books[:, B_COUNT] = 0
    books[:, B_MAX_RECV] = -1
    books[:, B_SEEN] = 0
    books[:, B_STALE] = 0
