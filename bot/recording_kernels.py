"""The compiled line scanner of ``bot.recording.iter_frames`` (numba): a block of recording lines into
receive times and field offsets, no Python object per line.

``scan`` takes one decompressed block (whole lines, the newlines found by numpy) and checks, per line,
the shape a writer writes: ``digits TAB venue TAB kind TAB key TAB raw``, the timestamp digits only, no
leading zero, at most ``2**63 - 1`` (an int64, the same value ``parse_line`` reads),
the kind one of the four kinds. Any line not of that shape (a blank line, a foreign or damaged one, an
awkward timestamp such as ``+5`` or ``007``) makes the whole block fail: the reader then takes the
block through the general text path, which reads or names every line exactly as before. The raw text is
everything after the fourth tab, as ``parse_line`` keeps it.

A run is a stretch of lines with the same venue and kind; ``scan`` marks where each starts, so the reader
hands each venue's websocket frames to its adapter in order without looking at a line in Python.
"""

from __future__ import annotations

import numpy as np
from numba import njit

KIND_WS, KIND_SNAPSHOT, KIND_KLINES, KIND_INFO = 0, 1, 2, 3
KIND_NAMES = ("ws", "snapshot", "klines", "info")

_MAX_TENTH = (2**63 - 1) // 10
_jit = njit(cache=True)


_SNAPSHOT = np.frombuffer(b"snapshot", np.uint8)
_KLINES = np.frombuffer(b"klines", np.uint8)
_INFO = np.frombuffer(b"info", np.uint8)


@_jit
def _is(buf: np.ndarray, s: int, e: int, word: np.ndarray) -> bool:
    if e - s != word.shape[0]:
        return False
    for j in range(word.shape[0]):  # noqa: SIM110 - numba compiles loops, not generators
        if buf[s + j] != word[j]:
            return False
    return True


@_jit
def _kind(buf: np.ndarray, s: int, e: int) -> int:
    """The kind code of ``buf[s:e]``, or -1 for a word that is no kind."""
    if e - s == 2 and buf[s] == 119 and buf[s + 1] == 115:  # ws
        return KIND_WS
    if _is(buf, s, e, _SNAPSHOT):
        return KIND_SNAPSHOT
    if _is(buf, s, e, _KLINES):
        return KIND_KLINES
    if _is(buf, s, e, _INFO):
        return KIND_INFO
    return -1


@_jit
def _tab(buf: np.ndarray, i: int, e: int) -> int:
    """The first tab at or after ``i`` before ``e``, or -1."""
    while i < e:
        if buf[i] == 9:
            return i
        i += 1
    return -1


@_jit
def scan(buf: np.ndarray, nl: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Per line ``i`` (ending at ``nl[i]``): receive time, ``off[:, i] = (venue, kind, key, raw)`` start offsets
    (each field ends one byte before the next starts; the raw text ends at ``nl[i]``), its kind code, and
    whether it starts a run (venue or kind differs from the line before). The last value is False, and
    the rest meaningless, when a line is not of the written shape."""
    n = nl.shape[0]
    ts = np.empty(n, np.int64)
    off = np.empty((4, n), np.int64)
    kind = np.empty(n, np.int8)
    new = np.empty(n, np.bool_)
    start = 0
    for i in range(n):
        e = nl[i]
        t = _tab(buf, start, e)
        digits = t - start
        if t < 0 or digits < 1 or digits > 19 or (digits > 1 and buf[start] == 48):
            return ts, off, kind, new, False
        v = 0
        for j in range(start, t):
            c = buf[j]
            if c < 48 or c > 57 or v > _MAX_TENTH or (v == _MAX_TENTH and c > 55):  # past 2**63 - 1: "7"
                return ts, off, kind, new, False
            v = v * 10 + (c - 48)
        ts[i] = v
        at = t + 1
        for f in range(3):
            off[f, i] = at
            t = _tab(buf, at, e)
            if t < 0:
                return ts, off, kind, new, False
            at = t + 1
        off[3, i] = at
        k = _kind(buf, off[1, i], off[2, i] - 1)
        if k < 0:
            return ts, off, kind, new, False
        kind[i] = k
        fresh = i == 0 or k != kind[i - 1]
        if not fresh:  # same kind: is it the same venue?
            a, b = off[0, i - 1], off[0, i]
            m = off[1, i] - b
            if off[1, i - 1] - a != m:
                fresh = True
            else:
                for j in range(m):
                    if buf[a + j] != buf[b + j]:
                        fresh = True
                        break
        new[i] = fresh
        start = e + 1
    return ts, off, kind, new, True


@_jit
def route(
    buf: np.ndarray, raw: np.ndarray, end: np.ndarray, skip: int, heads: np.ndarray, bounds: np.ndarray
) -> np.ndarray:
    """For each frame ``buf[raw[i]:end[i]]``, the index of the head in ``heads`` it starts with, or -1.

    A head is the frame's text up to and including the first ``"`` at or after byte ``skip`` (Binance:
    ``{"stream":"btcusdt@trade"``, skip 11): the same as looking up that prefix in a dict of the heads.
    Head ``h`` is ``heads[bounds[h]:bounds[h + 1]]``.
    """
    n = raw.shape[0]
    out = np.full(n, -1, np.int64)
    for i in range(n):
        s = raw[i]
        q = s + skip
        e = end[i]
        while q < e and buf[q] != 34:
            q += 1
        if q >= e:
            continue
        m = q + 1 - s
        for h in range(bounds.shape[0] - 1):
            a = bounds[h]
            if bounds[h + 1] - a != m:
                continue
            j = 0
            while j < m and buf[s + j] == heads[a + j]:
                j += 1
            if j == m:
                out[i] = h
                break
    return out
