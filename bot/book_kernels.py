"""The compiled inner loops of ``bot.book.OrderBook`` and its JSON level reader (numba, no Python
objects per level).

Why compiled: every depth level a venue sends passes through here (BTC sessions: 300-450k levels in
5-10 minutes, up to ~60k per second in bursts). In Python each level costs a tuple unpack, a dict
operation and a few comparisons on boxed floats, about 0.25 us; here it is a hash probe on unboxed
floats. The data model is the one the Python book had, so the two are easy to compare:

* **keys**: bids are keyed by price, asks by *minus* price, so on both sides a larger key is a better
  level and one code path serves both. Prices are finite and > 0, so no key is ever 0.0, which marks
  an empty hash slot.
* **a hash map per side** (open addressing, linear probing, load <= 1/2, deletion by backward shift, so
  no tombstones): key -> size. One probe for almost every level, wherever it sits in a 5000-level book
  (on real BTC books about two thirds of the inserts and deletes land beyond the best 100 prices, so a
  sorted array would move hundreds of entries per update).
* **a short sorted list of the best keys** per side (``keep`` of them, up to ``2 * keep``) and a bound
  ``floor``: the list holds *exactly* the side's keys ``>= floor``. The best level is its last entry,
  ``top(n)`` is a slice, and a level below the bound costs nothing beyond its hash probe. When deletions
  empty the list it is rebuilt in one pass over the side; when insertions grow it past ``2 * keep``
  the worst half is cut off and the bound moves up.

State lives in one float64 array ``st`` owned by the ``OrderBook``, a row per side (0 bids, 1 asks), so
a call passes one array (numba's dispatch costs about 0.2 us a call plus 0.07 us per array argument, not
small next to the work for a typical 10-50 level message) and allocates nothing. A row is ``[header | hash keys | hash
sizes | sorted best keys]``; the header holds the side's integers (exact in a float64) under the ``H_*``
indices. The helpers work on one side's views (``h, hk, hv, c``), never on a side index: numba compiles
a function again for each constant it is called with, and compile time is what a first start waits for.
``OrderBook`` guarantees room: the hash holds at most half its slots after any message (it grows the
array before a call that could overfill it), and the sorted list has ``2 * keep + 1`` entries.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# header fields of a side's row (integers stored as floats)
H_SLOTS = 0  # hash slots (a power of two)
H_SHIFT = 1  # 64 - log2(slots): the hash uses the top bits of a 64-bit product
H_KEEP = 2  # the list's size after a cut (the largest top(n) asked for, at least 64)
H_N = 3  # levels in the side
H_CN = 4  # entries in the sorted list
H_FLOOR = 5  # the list holds exactly the keys >= this (-inf: the whole side)
H_MAX = 6  # max_levels: the far end beyond this many levels is dropped...
H_TRIM_AT = 7  # ...once the side holds more than this many (a batch at a time)
H_TRIMMED = 8  # levels dropped by trimming, cumulative
HEADER = 9

_POW10 = np.array([10.0**i for i in range(16)])
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: 2^64 / golden ratio
BAD_PRICE = -1  # apply/reset result when a level had a price that is not finite and > 0

# What apply and reset return: (levels removed by healing, or BAD_PRICE; best bid and best ask when found
# crossed, else nan; then bid price, bid size, ask price, ask size after it all, nan for an empty side).
Result = tuple[int, float, float, float, float, float, float]

_jit = njit(cache=True)  # no nogil: releasing the GIL costs more than these calls take


@_jit
def _home(k: float, shift: int) -> int:
    """The first slot to probe for key ``k``: its 64 bits, folded and mixed by one multiplication (the
    top bits of the product; a tenth of the cost of splitting the float with ``frexp``)."""
    bits = np.float64(k).view(np.uint64)
    return int(np.int64(((bits ^ (bits >> np.uint64(29))) * _GOLDEN) >> np.uint64(shift)))


@_jit
def _find(hk: np.ndarray, k: float, shift: int) -> int:
    """The slot holding ``k``, or the empty slot where it would go."""
    mask = hk.shape[0] - 1
    i = _home(k, shift)
    while True:
        x = hk[i]
        if x == k or x == 0.0:
            return i
        i = (i + 1) & mask


@_jit
def _delete_slot(hk: np.ndarray, hv: np.ndarray, i: int, shift: int) -> None:
    """Empty slot ``i`` and move later entries of its probe run back, so every key stays reachable."""
    mask = hk.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        x = hk[j]
        if x == 0.0:
            break
        h = _home(x, shift)
        # The entry at j may fill the hole at i unless its home lies cyclically in (i, j].
        if (i <= j and i < h <= j) or (i > j and (h > i or h <= j)):
            continue
        hk[i] = x
        hv[i] = hv[j]
        i = j
    hk[i] = 0.0


@_jit
def _bisect(c: np.ndarray, n: int, k: float) -> int:
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if c[mid] < k:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit
def _side_keys(hk: np.ndarray, n: int) -> np.ndarray:
    out = np.empty(n)
    m = 0
    for x in hk:
        if x != 0.0:
            out[m] = x
            m += 1
    return out


@_jit
def _best_keys(keys: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` largest of ``keys``, sorted ascending: one pass keeping a sorted buffer of the best so far.

    Plain loops rather than ``np.partition``/``np.sort``, which take numba several times longer to
    compile; on a side of 5000 levels in no particular order a few hundred keys ever enter the buffer.
    """
    m = min(m, keys.shape[0])
    buf = np.empty(m)
    n = 0
    for x in keys:
        if n == m:
            if x <= buf[0]:
                continue
            at = _bisect(buf, m, x) - 1  # drop the smallest: x goes just below its insertion point
            for t in range(at):
                buf[t] = buf[t + 1]
            buf[at] = x
        else:
            at = _bisect(buf, n, x)
            for t in range(n, at, -1):
                buf[t] = buf[t - 1]
            buf[at] = x
            n += 1
    return buf


@_jit
def _views(st: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Side ``s``'s header, hash keys, hash sizes and sorted list, as views of its row."""
    row = st[s]
    slots = int(row[H_SLOTS])
    return (
        row[:HEADER],
        row[HEADER : HEADER + slots],
        row[HEADER + slots : HEADER + 2 * slots],
        row[HEADER + 2 * slots :],
    )


@_jit
def _rebuild(h: np.ndarray, hk: np.ndarray, c: np.ndarray) -> None:
    """Refill a side's sorted list with its best ``keep`` keys (all of them if it has no more)."""
    n = int(h[H_N])
    keep = int(h[H_KEEP])
    best = _best_keys(_side_keys(hk, n), keep)
    c[: best.shape[0]] = best
    h[H_CN] = best.shape[0]
    h[H_FLOOR] = -np.inf if n <= keep else best[0]


@_jit
def _remove_keys(h: np.ndarray, hk: np.ndarray, hv: np.ndarray, c: np.ndarray, victims: np.ndarray) -> None:
    """Delete the listed keys (all present) from a side and rebuild its sorted list if it held any."""
    shift = int(h[H_SHIFT])
    touched = False
    for k in victims:
        _delete_slot(hk, hv, _find(hk, k, shift), shift)
        touched = touched or k >= h[H_FLOOR]
    h[H_N] -= victims.shape[0]
    if touched:
        _rebuild(h, hk, c)


@_jit
def _trim(h: np.ndarray, hk: np.ndarray, hv: np.ndarray, c: np.ndarray) -> None:
    """Drop the worst levels of a side down to ``max_levels``."""
    n = int(h[H_N])
    extra = n - int(h[H_MAX])
    if extra > 0:
        _remove_keys(h, hk, hv, c, -_best_keys(-_side_keys(hk, n), extra))
        h[H_TRIMMED] += extra


@_jit
def _remove_from(
    h: np.ndarray, hk: np.ndarray, hv: np.ndarray, c: np.ndarray, bound: float, spare: np.ndarray, sign: float
) -> int:
    """Delete every key ``>= bound`` of a side except the keys (``sign * price``) of the levels in ``spare``."""
    keys = _side_keys(hk, int(h[H_N]))
    victims = np.empty(keys.shape[0])
    m = 0
    for k in keys:
        if k >= bound:
            kept = False
            for j in range(spare.shape[0]):
                if sign * spare[j, 0] == k:
                    kept = True
                    break
            if not kept:
                victims[m] = k
                m += 1
    _remove_keys(h, hk, hv, c, victims[:m])
    return m


@_jit
def _best(st: np.ndarray, s: int) -> tuple[float, float]:
    """(best key, its size) of side ``s``; (nan, nan) if it is empty."""
    h, hk, hv, c = _views(st, s)
    cn = int(h[H_CN])
    if cn == 0:
        return np.nan, np.nan
    k = c[cn - 1]
    return k, hv[_find(hk, k, int(h[H_SHIFT]))]


@_jit
def _crossed_at(st: np.ndarray) -> tuple[float, float]:
    """(best bid, best ask) if the book is crossed, else (nan, nan)."""
    nb = int(st[0, H_CN])
    na = int(st[1, H_CN])
    if nb == 0 or na == 0:
        return np.nan, np.nan
    bid = st[0, HEADER + 2 * int(st[0, H_SLOTS]) + nb - 1]
    ask = -st[1, HEADER + 2 * int(st[1, H_SLOTS]) + na - 1]
    if bid >= ask:
        return bid, ask
    return np.nan, np.nan


@_jit
def _apply_side(h: np.ndarray, hk: np.ndarray, hv: np.ndarray, c: np.ndarray, levels: np.ndarray, sign: float) -> bool:
    """Set or delete each level of ``levels`` (price, size) on a side; False (and stop) at a bad price."""
    shift = int(h[H_SHIFT])
    keep = int(h[H_KEEP])
    n = int(h[H_N])
    cn = int(h[H_CN])
    floor = h[H_FLOOR]
    ok = True
    for j in range(levels.shape[0]):
        p = levels[j, 0]
        q = levels[j, 1]
        if not (0.0 < p < np.inf):  # nan fails too
            ok = False
            break
        k = sign * p
        i = _find(hk, k, shift)
        if q > 0.0:
            hv[i] = q
            if hk[i] == 0.0:
                hk[i] = k
                n += 1
                if k >= floor:
                    at = _bisect(c, cn, k)
                    for t in range(cn, at, -1):
                        c[t] = c[t - 1]
                    c[at] = k
                    cn += 1
                    if cn > 2 * keep:  # cut the worse half off; the bound moves up
                        drop = cn - keep
                        for t in range(keep):
                            c[t] = c[t + drop]
                        cn = keep
                        floor = c[0]
        elif hk[i] != 0.0:
            _delete_slot(hk, hv, i, shift)
            n -= 1
            if k >= floor:
                at = _bisect(c, cn, k)
                for t in range(at, cn - 1):
                    c[t] = c[t + 1]
                cn -= 1
    h[H_N] = n
    h[H_CN] = cn
    h[H_FLOOR] = floor
    if n > h[H_TRIM_AT]:
        _trim(h, hk, hv, c)
    if h[H_CN] == 0 and h[H_N] > 0:
        _rebuild(h, hk, c)
    return ok


@_jit
def _apply_both(st: np.ndarray, bids: np.ndarray, asks: np.ndarray) -> bool:
    for s in range(2):
        h, hk, hv, c = _views(st, s)
        if not _apply_side(h, hk, hv, c, bids if s == 0 else asks, 1.0 - 2.0 * s):
            return False
    return True


@_jit
def _heal(st: np.ndarray, bids: np.ndarray, asks: np.ndarray) -> int:
    """The book is crossed after ``bids`` then ``asks``: remove what the newest levels overrule.

    Fresh (non-zero) asks are the newest: they remove every bid at or above the lowest of them. Fresh
    bids remove the asks at or below the highest of them that this message did not set again. If that
    leaves the book crossed (it was crossed before the message), the asks win, as in a snapshot.
    """
    bid = _views(st, 0)
    ask = _views(st, 1)
    removed = 0
    lo = np.inf
    for j in range(asks.shape[0]):
        if asks[j, 1] > 0.0 and asks[j, 0] < lo:
            lo = asks[j, 0]
    if lo < np.inf:
        removed += _remove_from(*bid, lo, asks[:0], 1.0)
    hi = -np.inf
    for j in range(bids.shape[0]):
        if bids[j, 1] > 0.0 and bids[j, 0] > hi:
            hi = bids[j, 0]
    if hi > -np.inf:
        removed += _remove_from(*ask, -hi, asks, -1.0)
    _, still = _crossed_at(st)
    if still == still:
        removed += _remove_from(*bid, still, asks[:0], 1.0)
    return removed


@_jit
def _settle(st: np.ndarray, bids: np.ndarray, asks: np.ndarray) -> Result:
    removed = 0
    cross_b, cross_a = _crossed_at(st)
    if cross_b == cross_b:
        removed = _heal(st, bids, asks)
    bp, bs, ap, as_ = top_of_book(st)
    return removed, cross_b, cross_a, bp, bs, ap, as_


@_jit
def apply(st: np.ndarray, bids: np.ndarray, asks: np.ndarray) -> Result:
    """Apply one diff (bids, then asks), heal a crossed result.

    Returns (levels removed by healing, or ``BAD_PRICE``; best bid and best ask when found crossed, else
    nan; then bid price, bid size, ask price, ask size after it all, nan for an empty side). The common
    case (not crossed) is written out here, with each side's views taken once: it runs per message.
    """
    bh, bhk, bhv, bc = _views(st, 0)
    ah, ahk, ahv, ac = _views(st, 1)
    if not _apply_side(bh, bhk, bhv, bc, bids, 1.0) or not _apply_side(ah, ahk, ahv, ac, asks, -1.0):
        return BAD_PRICE, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan
    nb = int(bh[H_CN])
    na = int(ah[H_CN])
    if nb and na and bc[nb - 1] < -ac[na - 1]:
        bk = bc[nb - 1]
        ak = ac[na - 1]
        return 0, np.nan, np.nan, bk, bhv[_find(bhk, bk, int(bh[H_SHIFT]))], -ak, ahv[_find(ahk, ak, int(ah[H_SHIFT]))]
    return _settle(st, bids, asks)


@_jit
def reset(st: np.ndarray, bids: np.ndarray, asks: np.ndarray) -> Result:
    """Replace both sides with a snapshot (zero sizes skipped; a price listed twice: the last wins).

    A snapshot deeper than ``max_levels`` keeps its best ones; a crossed one is healed by its asks
    (they come last in the message). Returns what ``apply`` returns.
    """
    clear(st)
    if not _apply_both(st, bids, asks):
        return BAD_PRICE, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan
    for s in range(2):
        _trim(*_views(st, s))
    return _settle(st, bids[:0], asks)


@_jit
def top_of_book(st: np.ndarray) -> tuple[float, float, float, float]:
    """(bid price, bid size, ask price, ask size); nan for an empty side."""
    bk, bs = _best(st, 0)
    ak, as_ = _best(st, 1)
    return bk, bs, -ak, as_


@_jit
def clear(st: np.ndarray) -> None:
    for s in range(2):
        h, hk, _, _ = _views(st, s)
        hk[:] = 0.0
        h[H_N] = 0
        h[H_CN] = 0
        h[H_FLOOR] = -np.inf


@_jit
def top(st: np.ndarray, out: np.ndarray) -> tuple[int, int]:
    """Write the best ``out.shape[1]`` levels of each side into ``out[s]`` (price, size), best first.

    A floor of ``inf`` asks for a rebuild of that side's list first (a reader wants a longer one)."""
    n = out.shape[1]
    got = np.zeros(2, np.int64)
    for s in range(2):
        h, hk, hv, c = _views(st, s)
        if h[H_CN] < n and h[H_FLOOR] != -np.inf:  # deletions thinned the list: there is more below
            _rebuild(h, hk, c)
        cn = int(h[H_CN])
        m = min(n, cn)
        sign = 1.0 - 2.0 * s
        shift = int(h[H_SHIFT])
        for j in range(m):
            k = c[cn - 1 - j]
            out[s, j, 0] = sign * k
            out[s, j, 1] = hv[_find(hk, k, shift)]
        got[s] = m
    return got[0], got[1]


@_jit
def side_levels(st: np.ndarray, s: int) -> np.ndarray:
    """Every level of side ``s`` as (price, size) rows, in no particular order."""
    h, hk, hv, _ = _views(st, s)
    out = np.empty((int(h[H_N]), 2))
    sign = 1.0 - 2.0 * s
    m = 0
    for i in range(hk.shape[0]):
        if hk[i] != 0.0:
            out[m, 0] = sign * hk[i]
            out[m, 1] = hv[i]
            m += 1
    return out


@_jit
def rehash(old: np.ndarray, new: np.ndarray) -> None:
    """Move every level of ``old`` into ``new`` (headers set, hash keys zeroed), and the sorted lists."""
    for s in range(2):
        h, hk, hv, c = _views(old, s)
        nh, nhk, nhv, nc = _views(new, s)
        nh[H_N] = h[H_N]
        nh[H_TRIMMED] = h[H_TRIMMED]
        shift = int(nh[H_SHIFT])
        for i in range(hk.shape[0]):
            k = hk[i]
            if k != 0.0:
                j = _find(nhk, k, shift)
                nhk[j] = k
                nhv[j] = hv[i]
        cn = int(h[H_CN])
        if cn <= nc.shape[0]:
            nc[:cn] = c[:cn]
            nh[H_CN] = cn
            nh[H_FLOOR] = h[H_FLOOR]
        else:
            _rebuild(nh, nhk, nc)


@_jit
def read_levels(buf: np.ndarray) -> tuple[np.ndarray, bool]:
    """The levels of ``buf``, JSON text like ``[["61824.00000000","0.32726000"],...]``, as (price, size)
    rows, and whether the text had exactly the shape the venues send (see ``bot.venues.levels``: if not,
    msgspec decides). Each number is ``digits / 10**decimals`` with both exact in a float64, so one
    division gives the correctly rounded value, the float ``float()`` of the string gives."""
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


@_jit
def apply_json(st: np.ndarray, bids: bytes, asks: bytes) -> tuple[int, int, float, float, float, float, float, float]:
    """``apply`` with both sides still JSON text (``read_levels``): no level ever becomes a Python object.

    Returns (levels applied, or -1 if ``read_levels`` refused either side: then nothing was applied)
    followed by what ``apply`` returns.
    """
    b, ok_b = read_levels(np.frombuffer(bids, np.uint8))
    a, ok_a = read_levels(np.frombuffer(asks, np.uint8))
    if not (ok_b and ok_a):
        return -1, 0, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan
    r = apply(st, b, a)
    return b.shape[0] + a.shape[0], r[0], r[1], r[2], r[3], r[4], r[5], r[6]
