"""The compiled loop of the Bybit adapters' offline path (``_BybitAdapter.on_ws_frames``, numba): a block of
recorded frames routed by topic in one pass, and the orderbook deltas among them applied straight into the
books, no Python object per frame or per level.

The layout readers and the diff bookkeeping are ``bot.venues.json_kernels``'. ``route_topics`` is the
adapter's topic lookup (``on_ws``: ``"topic":"`` within the first 48 bytes, the name
up to the next quote) for every frame of a block at once.

``apply_deltas`` walks the frames from a given one and applies each orderbook delta it can take to its
book's kernel state (``bot.book_kernels.apply``), until it meets a frame that Python must handle first. It
takes a delta only in exactly the layout Bybit sends, linear and spot::

    {"topic":"orderbook.200.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCUSDT","b":L,"a":L,"u":2,"seq":3},"cts":4}
    {"topic":"orderbook.200.BTCUSDT","ts":1,"type":"delta","data":{"s":"BTCUSDT","b":L,"a":L,"u":2,"seq":3},"cts":4}

no whitespace, every number an unsigned JSON integer of at most 18 digits, the symbol that of the topic's
book, ``L`` levels that ``bot.book_kernels.read_levels`` reads (the venue's exact shape). Such a frame is
valid JSON that ``msgspec`` decodes to the same fields, so the book ends up as the Python path
(``_on_book``) leaves it. Anything else (a snapshot, another layout, a frame that does not decode, levels
in another shape) is a stop: the adapter hands that frame to its Python handler, exactly as ``on_ws``
would, and calls again from the next one. So are a gap (``u`` not the book's ``update_id + 1``), a book
not marked takeable (not in sync, not LIVE, its ``BookUpdate`` not batchable right now), a message that
could outgrow the book's hash (``OrderBook`` would grow it first), and a receive time past the clock's
``due`` (the replay clock ticks first). A delta whose levels crossed the book is applied (and healed, as
``apply`` heals) and then stops the loop: the adapter does the rest of what a crossed book takes.

Frames of the routes marked ``LATER`` (topics whose handling touches no book and publishes nothing anyone
receives) are passed over and listed; the adapter handles them, in order, at the next stop.

Linear ``tickers`` frames (routes ``TICKER_LATER``/``TICKER_NOW``, funding on) are looked at for their keys
only (``ticker_keys``). One that may change the funding pair (a snapshot, ``fundingRate``,
``nextFundingTime``, or any backslash, which could hide a key) is listed (``LATER``) or stops the loop
(``NOW``: someone receives ``FundingRate``). Any other (a delta of prices and sizes, ~9 in 10) cannot change
the pair, so it can publish nothing: it is counted per symbol, and the last one carrying ``markPrice`` kept
(``pend[k]``: count, frame). Before the next listed or stopping ticker of that symbol, those are listed as
one entry ``-(f + 1)`` with ``flushes[f]`` = (symbol, frame, count); the adapter merges that frame and
counts the rest as the filter would (``_BybitAdapter._repeats``), so the view and the filter's counters end
up as one handler call per frame leaves them. The adapter settles what is still pending at the end.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.venues.json_kernels import (
    B_COLS,
    B_OK,
    B_ROOM,
    B_SEEN,
    B_UID,
    BOOK,
    END,
    HEALED,
    HEALED_NOW,
    LATER,
    MAX_BOOKS,
    NOT_READ,
    PYTHON,
    TICK,
    levels_end,
    lit,
    reset_out,
    same,
    take,
    uint,
)

_KEY = np.frombuffer(b'"topic":"', np.uint8)
_HEAD = np.frombuffer(b'{"topic":"', np.uint8)
_TYPE_TS = np.frombuffer(b'","type":"delta","ts":', np.uint8)  # linear
_DATA = np.frombuffer(b',"data":{"s":"', np.uint8)
_TS = np.frombuffer(b'","ts":', np.uint8)  # spot
_TYPE_DATA = np.frombuffer(b',"type":"delta","data":{"s":"', np.uint8)
_B = np.frombuffer(b'","b":', np.uint8)
_A = np.frombuffer(b',"a":', np.uint8)
_U = np.frombuffer(b',"u":', np.uint8)
_SEQ = np.frombuffer(b',"seq":', np.uint8)
_CTS = np.frombuffer(b'},"cts":', np.uint8)
_FUNDING_RATE = np.frombuffer(b'"fundingRate"', np.uint8)
_NEXT_FUNDING = np.frombuffer(b'"nextFundingTime"', np.uint8)
_SNAPSHOT = np.frombuffer(b'"snapshot"', np.uint8)
_MARK = np.frombuffer(b'"markPrice"', np.uint8)
TICKER_LATER, TICKER_NOW = 4, 5  # route kinds of linear tickers with funding (see the module docstring)
COUNT = 6  # route kind of frames only counted (tickers without funding): counted[route] += 1, nothing listed
T_PAIR, T_MARK = 1, 2  # ticker_keys: may change the funding pair; carries a mark price

_jit = njit(cache=True)


@_jit
def _delta(
    buf: np.ndarray, s: int, e: int, names: np.ndarray, n0: int, n1: int, syms: np.ndarray, s0: int, s1: int
) -> tuple[int, int, int, int, int, int]:
    """(exchange time ms, update id, bids start, bids end, asks start, asks end) of the orderbook delta
    ``buf[s:e]`` of topic ``names[n0:n1]`` and symbol ``syms[s0:s1]``, in exactly one of the two layouts of
    the module docstring; the time is -1 for any other frame."""
    no = (-1, 0, 0, 0, 0, 0)
    p = same(buf, lit(buf, s, e, _HEAD), e, names, n0, n1)
    q = lit(buf, p, e, _TYPE_TS)
    if q >= 0:
        ts_ms, p = uint(buf, q, e)
        p = lit(buf, p, e, _DATA)
    else:
        ts_ms, p = uint(buf, lit(buf, p, e, _TS), e)
        p = lit(buf, p, e, _TYPE_DATA)
    b0 = lit(buf, same(buf, p, e, syms, s0, s1), e, _B)
    b1 = levels_end(buf, b0, e)
    a0 = lit(buf, b1, e, _A)
    a1 = levels_end(buf, a0, e)
    u, p = uint(buf, lit(buf, a1, e, _U), e)
    _, p = uint(buf, lit(buf, p, e, _SEQ), e)
    _, p = uint(buf, lit(buf, p, e, _CTS), e)
    if p < 0 or p != e - 1 or buf[p] != 125:  # }
        return no
    return ts_ms, u, b0, b1, a0, a1


@_jit
def route_topics(
    buf: np.ndarray, raw: np.ndarray, end: np.ndarray, names: np.ndarray, bounds: np.ndarray
) -> np.ndarray:
    """For each frame ``buf[raw[i]:end[i]]``, the index of its topic in ``names`` (name ``h`` is
    ``names[bounds[h]:bounds[h + 1]]``), or -1: what ``on_ws`` looks up, ``raw[j + 9 : raw.find(b'"', j + 9)]``
    for the first ``"topic":"`` found at ``j`` within the frame's first 48 bytes (no closing quote: the name
    runs to the frame's last byte, which it leaves out, as that slice does)."""
    n = raw.shape[0]
    out = np.full(n, -1, np.int64)
    klen = _KEY.shape[0]
    for i in range(n):
        s = raw[i]
        e = end[i]
        lim = min(e, s + 48) - klen  # the key must lie within the first 48 bytes
        j = s
        while j <= lim and lit(buf, j, e, _KEY) < 0:
            j += 1
        if j > lim:
            continue
        a = j + klen
        q = a
        while q < e and buf[q] != 34:
            q += 1
        if q >= e:
            q = e - 1
        m = q - a
        if m <= 0:
            continue  # an empty name is no topic
        for h in range(bounds.shape[0] - 1):
            if bounds[h + 1] - bounds[h] == m and same(buf, a, e, names, bounds[h], bounds[h + 1]) >= 0:
                out[i] = h
                break
    return out


@_jit
def ticker_keys(buf: np.ndarray, s: int, e: int) -> int:
    """``T_PAIR`` and/or ``T_MARK`` for the ticker frame ``buf[s:e]`` (a quoted word anywhere counts: a
    false find only costs a decode)."""
    out = 0
    for p in range(s, e):
        c = buf[p]
        if c == 92:  # a backslash: an escaped key could be any key
            return T_PAIR
        if c != 34:
            continue
        c = buf[p + 1] if p + 1 < e else 0
        if c == 102 and lit(buf, p, e, _FUNDING_RATE) >= 0:  # f
            return T_PAIR
        if c == 110 and lit(buf, p, e, _NEXT_FUNDING) >= 0:  # n
            return T_PAIR
        if c == 115 and lit(buf, p, e, _SNAPSHOT) >= 0:  # s
            return T_PAIR
        if c == 109 and lit(buf, p, e, _MARK) >= 0:  # m
            out = T_MARK
    return out


@_jit
def apply_deltas(
    buf: np.ndarray,
    raw: np.ndarray,
    end: np.ndarray,
    ts: np.ndarray,
    rid: np.ndarray,
    start: int,
    tick_first: bool,
    due: int,
    routes: np.ndarray,
    names: np.ndarray,
    bounds: np.ndarray,
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
    pend: np.ndarray,
    flushes: np.ndarray,
    counted: np.ndarray,
) -> tuple[int, int, int, int, int]:
    """Apply the deltas the loop can take, from frame ``start`` (see the module docstring).

    ``routes[r]``: (kind, book index) of route ``r``; ``sts[k]``: book ``k``'s kernel state (``MAX_BOOKS``
    arrays, the ones past the books any array); ``books[k]``
    its ``B_*`` columns: ``B_UID``, ``B_OK`` (deltas may be taken) and ``B_ROOM`` in; ``B_UID`` and the
    rest out: per book, the deltas taken and the largest and last receive time among them, the last one's
    exchange time (ns); ``tops[k]`` the top of book after it. ``tick_first``: the clock may be due at
    ``start`` (False right after it ticked there). Per delta taken, ``rows`` gets (book, exchange time ns,
    receive time, update id) and ``row_tops`` its top of book; ``later`` the frames passed over.

    Returns (frame, why, frames in ``later``, rows, levels applied): ``TICK``, ``PYTHON``: that frame is the
    next to handle, nothing of it done; ``HEALED``: that frame's delta is applied, not in ``rows``, and
    ``healed`` holds (levels, update id, exchange time ms, levels removed), ``healed_f`` the rest of
    ``apply``'s result (the crossed best bid and ask, the top of book after it); ``END``: every frame
    is done (the frame is the count). ``pend`` (symbols x 2) and ``flushes`` (frames x 3): the tickers put
    off (module docstring); ``pend`` lives across calls. ``counted[r]``: frames of the ``COUNT`` route ``r``
    passed over (the adapter counts them as its handler would; lives across calls too).
    """
    n = raw.shape[0]
    reset_out(books)
    nf = 0
    nl = 0
    nr = 0
    levels = 0
    i = start
    while i < n:
        t = ts[i]
        if t > due and (tick_first or i > start):
            return i, TICK, nl, nr, levels
        r = rid[i]
        if r < 0:
            return i, PYTHON, nl, nr, levels
        kind = routes[r, 0]
        if kind == LATER:
            later[nl] = i
            nl += 1
            i += 1
            continue
        if kind == COUNT:
            counted[r] += 1
            i += 1
            continue
        k = routes[r, 1]
        if kind == TICKER_LATER or kind == TICKER_NOW:  # noqa: SIM109 - numba compiles this form
            keys = ticker_keys(buf, raw[i], end[i])
            if keys != T_PAIR:  # cannot change the pair: put off
                pend[k, 0] += 1
                if keys == T_MARK:
                    pend[k, 1] = i
                i += 1
                continue
            if pend[k, 0]:
                flushes[nf, 0] = k
                flushes[nf, 1] = pend[k, 1]
                flushes[nf, 2] = pend[k, 0]
                later[nl] = -(nf + 1)
                nl += 1
                nf += 1
                pend[k, 0] = 0
                pend[k, 1] = -1
            if kind == TICKER_NOW:
                return i, PYTHON, nl, nr, levels
            later[nl] = i
            nl += 1
            i += 1
            continue
        if kind != BOOK or books[k, B_OK] == 0:
            return i, PYTHON, nl, nr, levels
        ts_ms, u, b0, b1, a0, a1 = _delta(
            buf, raw[i], end[i], names, bounds[r], bounds[r + 1], syms, sym_bounds[k], sym_bounds[k + 1]
        )
        if ts_ms < 0 or u != books[k, B_UID] + 1 or (b1 - b0 + a1 - a0) // 10 + 1 > books[k, B_ROOM]:
            return i, PYTHON, nl, nr, levels
        did, m = take(buf, b0, b1, a0, a1, sts[k], k, u, ts_ms, t, books, tops, rows, row_tops, nr, healed, healed_f)
        if did == NOT_READ:
            return i, PYTHON, nl, nr, levels
        if did == HEALED_NOW:  # the adapter settles it
            return i, HEALED, nl, nr, levels
        books[k, B_SEEN] += 1
        levels += m
        nr += 1
        i += 1
    return n, END, nl, nr, levels


def warm_up() -> None:
    """Compile (or load) both kernels for the argument types the adapters pass, on a made-up block."""
    frame = b'{"topic":"orderbook.1.X","ts":1,"type":"delta","data":{"s":"X","b":[],"a":[],"u":2,"seq":1},"cts":1}'
    buf = np.frombuffer(frame, np.uint8)
    raw = np.zeros(1, np.int64)
    end = np.full(1, len(frame), np.int64)
    names = np.frombuffer(b"orderbook.1.X", np.uint8)
    bounds = np.array([0, len(names)], np.int64)
    rid = route_topics(buf, raw, end, names, bounds)
    st = np.zeros((2, 64))
    books = np.zeros((1, B_COLS), np.int64)
    books[0, B_UID] = 1
    books[0, B_ROOM] = 0  # no room: the frame stops the loop before anything is applied
    books[0, B_OK] = 1
    apply_deltas(
        buf, raw, end, raw, rid, 0, True, 0, np.zeros((1, 2), np.int64), names, bounds,
        np.frombuffer(b"X", np.uint8), np.array([0, 1], np.int64), (st,) * MAX_BOOKS, books, np.zeros((1, 4)),
        np.empty(1, np.int64), np.empty((1, 4), np.int64), np.empty((1, 4)), np.zeros(4, np.int64), np.zeros(6),
        np.zeros((1, 2), np.int64), np.zeros((1, 3), np.int64), np.zeros(1, np.int64),
    )  # fmt: skip
    ticker_keys(buf, 0, len(frame))
