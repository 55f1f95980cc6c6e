"""The compiled loop of the Binance adapters' offline path (``_BinanceAdapter.on_ws_frames``, numba): the diff
depth frames of a routed block applied straight into the books, no Python object per frame or per level.

The adapter routes a block first (``bot.recording_kernels.route``) and keeps the frames it handles (not
the skipped streams). ``apply_diffs`` walks those from a given one and applies each diff it can take to its
book's kernel state (``bot.venues.json_kernels.take``), until it meets a frame that Python must handle
first. It takes a diff only in exactly the layout Binance sends on the combined stream, spot and USD-M::

    {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":2,"u":3,"b":L,"a":L}}
    {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1,"T":2,"s":"BTCUSDT","U":3,"u":4,"pu":2,"b":L,"a":L}}

no whitespace, every number an unsigned JSON integer of at most 18 digits, the symbol that of the stream's
book, ``L`` levels that ``bot.book_kernels.read_levels`` reads. Such a frame is one that ``depth_text``
splits and msgspec decodes to the same head, so the Python path (``_on_depth``, ``_depth``, ``_apply``)
would do with it what the loop does: a diff already in the book (``u`` at or below its update id) is
dropped as stale, a chained one (spot ``U`` = update id + 1, USD-M ``pu`` = update id) applied. Anything
else is a stop, handed to the frame's Python handler by the adapter: another layout, levels in another
shape, a gap, a book not marked takeable (not in sync, not LIVE, its ``BookUpdate`` not batchable now), a
diff that could outgrow the book's hash, and a tick due at the frame (the adapter ticks first). A diff
that crossed the book is applied (healed) and then stops the loop.

Frames of the routes marked ``LATER`` (klines, mark prices whose events nobody receives) are passed over
and listed; the adapter handles them, in order, at the next stop. Trades whose events nobody receives
(``QUIET``) are only counted when they are in Binance's exact layout (they would decode, and their
handler does nothing else), else listed with those.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.book_kernels import read_levels
from bot.venues.json_kernels import (
    B_COLS,
    B_LAST_E,
    B_OK,
    B_ROOM,
    B_SEEN,
    B_STALE,
    B_UID,
    BOOK,
    END,
    HEALED,
    HEALED_NOW,
    LATER,
    MAX_BOOKS,
    NOT_READ,
    PYTHON,
    QUIET,
    TICK,
    boolean,
    decimal,
    levels_end,
    lit,
    plain_string,
    reset_out,
    same,
    take,
    uint,
)

_DATA = np.frombuffer(b',"data":{"e":"depthUpdate","E":', np.uint8)
_T = np.frombuffer(b',"T":', np.uint8)
_S = np.frombuffer(b',"s":"', np.uint8)
_U1 = np.frombuffer(b'","U":', np.uint8)
_U = np.frombuffer(b',"u":', np.uint8)
_PU = np.frombuffer(b',"pu":', np.uint8)
_B = np.frombuffer(b',"b":', np.uint8)
_A = np.frombuffer(b',"a":', np.uint8)
_END = np.frombuffer(b"}}", np.uint8)
_TRADE = np.frombuffer(b',"data":{"e":"trade","E":', np.uint8)
_TID = np.frombuffer(b',"t":', np.uint8)
_P = np.frombuffer(b',"p":', np.uint8)
_Q = np.frombuffer(b',"q":', np.uint8)
_M = np.frombuffer(b',"m":', np.uint8)
_M2 = np.frombuffer(b',"M":', np.uint8)
_X = np.frombuffer(b',"X":', np.uint8)

_jit = njit(cache=True)


@_jit
def _diff(
    buf: np.ndarray, s: int, e: int, head: int, futures: bool, syms: np.ndarray, s0: int, s1: int
) -> tuple[int, int, int, int, int, int, int, int]:
    """(E, U, u, pu, bids start, bids end, asks start, asks end) of the diff frame ``buf[s:e]`` whose stream
    head (``{"stream":"..."``, already matched) is ``head`` bytes long and whose symbol is ``syms[s0:s1]``,
    in exactly the layout of the module docstring (``futures``: USD-M's); E is -1 for any other frame."""
    no = (-1, 0, 0, 0, 0, 0, 0, 0)
    ev, p = uint(buf, lit(buf, s + head, e, _DATA), e)
    if futures:
        _, p = uint(buf, lit(buf, p, e, _T), e)
    first, p = uint(buf, lit(buf, same(buf, lit(buf, p, e, _S), e, syms, s0, s1), e, _U1), e)
    u, p = uint(buf, lit(buf, p, e, _U), e)
    pu = -1
    if futures:
        pu, p = uint(buf, lit(buf, p, e, _PU), e)
    b0 = lit(buf, p, e, _B)
    b1 = levels_end(buf, b0, e)
    a0 = lit(buf, b1, e, _A)
    a1 = levels_end(buf, a0, e)
    if lit(buf, a1, e, _END) != e or p < 0:
        return no
    return ev, first, u, pu, b0, b1, a0, a1


@_jit
def _trade(buf: np.ndarray, s: int, e: int, head: int, futures: bool) -> bool:
    """Whether ``buf[s:e]`` is a trade frame in exactly the layout Binance sends, which ``_on_trade`` decodes
    for sure (the prices' and sizes' bounds included)::

        {"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":2,"p":"1.5","q":"0.1","T":3,"m":true,"M":true}}
        {"stream":"btcusdt@trade","data":{"e":"trade","E":1,"T":3,"s":"BTCUSDT","t":2,"p":"1.5","q":"0.1","X":"MARKET","m":true}}
    """
    _, p = uint(buf, lit(buf, s + head, e, _TRADE), e)
    if futures:
        _, p = uint(buf, lit(buf, p, e, _T), e)
    q = lit(buf, p, e, _S)  # ,"s":" : the symbol's opening quote is its last byte
    p = plain_string(buf, q - 1, e) if q >= 0 else -1
    _, p = uint(buf, lit(buf, p, e, _TID), e)
    p = decimal(buf, lit(buf, decimal(buf, lit(buf, p, e, _P), e, True), e, _Q), e, False)
    if futures:
        p = boolean(buf, lit(buf, plain_string(buf, lit(buf, p, e, _X), e), e, _M), e)
    else:
        _, p = uint(buf, lit(buf, p, e, _T), e)
        p = boolean(buf, lit(buf, boolean(buf, lit(buf, p, e, _M), e), e, _M2), e)
    return p >= 0 and lit(buf, p, e, _END) == e


@_jit
def _readable(buf: np.ndarray, b0: int, b1: int, a0: int, a1: int) -> bool:
    _, ok_b = read_levels(buf[b0:b1])
    _, ok_a = read_levels(buf[a0:a1])
    return ok_b and ok_a


@_jit
def apply_diffs(
    buf: np.ndarray,
    raw: np.ndarray,
    end: np.ndarray,
    todo: np.ndarray,
    ticks: np.ndarray,
    ts: np.ndarray,
    rid: np.ndarray,
    start: int,
    tick_first: bool,
    due: int,
    routes: np.ndarray,
    head_bounds: np.ndarray,
    futures: bool,
    syms: np.ndarray,
    sym_bounds: np.ndarray,
    sts: tuple[np.ndarray, ...],
    books: np.ndarray,
    tops: np.ndarray,
    later: np.ndarray,
    rows: np.ndarray,
    row_tops: np.ndarray,
    healed: np.ndarray,
    healed_f: np.ndarray,
) -> tuple[int, int, int, int, int, int]:
    """Apply the diffs the loop can take among the frames ``todo[start:]`` (see the module docstring).

    ``ticks[q]``: the latest receive time up to frame ``todo[q]`` (the skipped frames before it included),
    the time to tick at before it; ``rid``: each frame's route (head) index; ``routes[r]``: (kind, book
    index) of route ``r``, whose head is ``head_bounds[r + 1] - head_bounds[r]`` bytes long; ``sts``, the
    books' ``B_*`` columns (in: ``B_UID``, ``B_OK``, ``B_ROOM``; out: per book the diffs applied and read,
    dropped as stale, the last ones' times), ``tops``, ``rows``, ``row_tops``, ``healed`` as
    ``bybit_kernels.apply_deltas`` has them; ``later`` gets the positions in ``todo`` passed over.

    Frames of ``QUIET`` routes (trades nobody receives) in Binance's exact layout are done once counted: their
    handler would decode them and publish an event to no handler; in another layout they go to ``later``.

    Returns (position in ``todo``, why, entries in ``later``, rows, levels applied, quiet frames counted), as
    ``apply_deltas``:
    ``TICK``/``PYTHON``: that frame is the next to handle; ``HEALED``: its diff is applied (and not read
    into the book's columns); ``END``: every frame is done.
    """
    n = todo.shape[0]
    reset_out(books)
    nl = 0
    nr = 0
    levels = 0
    quiet = 0
    q = start
    while q < n:
        if ticks[q] > due and (tick_first or q > start):
            return q, TICK, nl, nr, levels, quiet
        i = todo[q]
        r = rid[i]
        if r < 0:
            return q, PYTHON, nl, nr, levels, quiet
        kind = routes[r, 0]
        if kind == QUIET and _trade(buf, raw[i], end[i], head_bounds[r + 1] - head_bounds[r], futures):
            quiet += 1  # it decodes, and the event its handler publishes reaches nobody: counted, done
            q += 1
            continue
        if kind in (LATER, QUIET):
            later[nl] = q
            nl += 1
            q += 1
            continue
        k = routes[r, 1]
        if kind != BOOK or books[k, B_OK] == 0:
            return q, PYTHON, nl, nr, levels, quiet
        ev, first, u, pu, b0, b1, a0, a1 = _diff(
            buf, raw[i], end[i], head_bounds[r + 1] - head_bounds[r], futures, syms, sym_bounds[k], sym_bounds[k + 1]
        )
        if ev < 0:
            return q, PYTHON, nl, nr, levels, quiet
        last = books[k, B_UID]
        if u <= last:  # already in the book: dropped as stale (the Python path reads no level of it either)
            if not _readable(buf, b0, b1, a0, a1):
                return q, PYTHON, nl, nr, levels, quiet
            books[k, B_SEEN] += 1
            books[k, B_STALE] += 1
            books[k, B_LAST_E] = ev
            q += 1
            continue
        chained = pu == last if futures else first == last + 1
        if not chained or (b1 - b0 + a1 - a0) // 10 + 1 > books[k, B_ROOM]:
            return q, PYTHON, nl, nr, levels, quiet
        did, m = take(buf, b0, b1, a0, a1, sts[k], k, u, ev, ts[i], books, tops, rows, row_tops, nr, healed, healed_f)
        if did == NOT_READ:
            return q, PYTHON, nl, nr, levels, quiet
        if did == HEALED_NOW:
            return q, HEALED, nl, nr, levels, quiet
        books[k, B_SEEN] += 1
        books[k, B_LAST_E] = ev
        levels += m
        nr += 1
        q += 1
    return n, END, nl, nr, levels, quiet


def warm_up() -> None:
    """Compile (or load) the loop for the argument types the adapters pass, on a made-up block."""
    frame = b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":2,"u":3,"b":[],"a":[]}}'
    buf = np.frombuffer(frame, np.uint8)
    one = np.zeros(1, np.int64)
    end = np.full(1, len(frame), np.int64)
    st = np.zeros((2, 64))
    books = np.zeros((1, B_COLS), np.int64)
    books[0, B_OK] = 1
    books[0, B_ROOM] = 0  # no room: the frame stops the loop before anything is applied
    apply_diffs(
        buf, one, end, one, one, one, one, 0, True, 0, np.zeros((1, 2), np.int64), np.array([0, 18], np.int64),
        False, np.frombuffer(b"X", np.uint8), np.array([0, 1], np.int64), (st,) * MAX_BOOKS, books, np.zeros((1, 4)),
        np.empty(1, np.int64), np.empty((1, 4), np.int64), np.empty((1, 4)), np.zeros(4, np.int64), np.zeros(6),
    )  # fmt: skip
