"""What a model can read from the live rings: the window source, the streams a spec reads, and why it waits.

Why a module of its own: this is the loop-thread side of a model worker that knows the rings (bot/ring.py,
bot/klines.py) and ``models.inputs``'s window rules, and nothing of threads, batching or signals (those are
bot/workers.py). It answers three questions for a checkpoint's input spec:

* ``RingWindowSource``: the newest windows (copies) for ``models.inputs.build_input``, and their data time;
* ``streams`` / ``check_capacity``: which streams a spec reads for an instrument, and whether this
  configuration can ever hold enough of them (refused at load time, not waited for forever);
* ``explain_wait``: when ``build_input`` gives None, which input exactly it is waiting for, in words
  ("waiting for 83 bars of 1h binance_spot/BTCUSDT, have 24"), for the run's status.

``explain_wait`` re-checks ``models.inputs``'s rules (enough rows, evenly spaced, books on the same grid
times, assets on a common bar, finite features) on the same windows; it runs only on ticks whose input is
missing and whose streams changed, never per row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.bus import EventBus
from bot.events import KlineClosed, Venue
from bot.grid_set import RingSet
from bot.heads import duration_label
from bot.klines import KlineStore
from bot.ring import Ring
from models import inputs as model_inputs
from models.checkpoint import CheckpointError

NS_PER_MS = 1_000_000
Stream = tuple[str, str, str, Any]  # ("lob", venue, symbol, "fine"|"coarse") or ("klines", venue, symbol, interval_s)


class RingWindowSource:
    """``models.inputs.WindowSource`` over the live rings and kline store.

    Returns COPIES of the newest rows (the rings are overwritten in place by later appends, and the copy
    outlives the tick: it is read on the model thread). Remembers, per stream, the newest local data time
    of the window it last returned since ``reset()``; ``newest_ns`` is the newest of those: the signal's
    data time. (Per stream, so that a crossasset read of an asset that is ahead, re-read up to the common
    bar, counts the bar it used, not the newer one.) Call ``attach`` so bars' receive times are known
    (otherwise a bar's data time is its close time).
    """

    def __init__(self, rings: RingSet, klines: KlineStore) -> None:
        self.rings = rings
        self.klines_store = klines
        self._keys = set(rings.keys())
        self._kline_recv: dict[tuple[str, str, int], tuple[int, int]] = {}  # -> (open_time_ms, ts_recv)
        self._noted: dict[Stream, int] = {}
        # (build key, venue, symbol) -> (the streams' stamps, the input built from them, _noted after it)
        self._built: dict[tuple[Any, str, str], tuple[tuple[Any, ...], Any, dict[Stream, int]]] = {}

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(KlineClosed, self.on_kline)

    def on_kline(self, k: KlineClosed) -> None:
        key = (k.venue.value, k.symbol, k.interval_s)
        seen = self._kline_recv.get(key)
        if seen is None or k.open_time_ms >= seen[0]:
            self._kline_recv[key] = (k.open_time_ms, k.ts_recv)

    def reset(self) -> None:
        self._noted.clear()

    def build(self, key: Any, stamp: tuple[Any, ...], venue: str, symbol: str, make: Callable[[], Any]) -> Any:
        """``make()`` (an input build reading this source, after ``reset``), or the input it gave last for the
        same ``key``, ``venue`` and ``symbol`` when the streams it reads still have the same ``stamp``: the
        very object, and the data times it noted. Workers of checkpoints with one input spec and builder
        (tabl and mhtabl trained on one export) share one build per tick; what is shared is read-only."""
        k = (key, venue, symbol)
        got = self._built.get(k)
        if got is not None and got[0] == stamp:
            self._noted = dict(got[2])
            return got[1]
        self.reset()
        x = make()
        self._built[k] = (stamp, x, dict(self._noted))
        return x

    @property
    def newest_ns(self) -> int:
        return max(self._noted.values(), default=0)

    def stamp(self, stream: Stream) -> tuple[Any, ...]:
        """A cheap fingerprint of one stream (``("lob", venue, symbol, grid)`` or ``("klines", venue, symbol,
        interval_s)``): it changes whenever a window read from the stream could. Lets a worker skip building
        an input that would be the one it built last tick (a kline model between bars, a coarse grid
        between rows) without reading or copying anything."""
        kind, venue, symbol, which = stream
        if kind == "lob":
            ring = self.lob_ring(venue, symbol, which)
            if ring is None:
                return ()
            return (ring.appended, ring.latest_time() if len(ring) else 0)
        kring = self.klines_store.ring(Venue(venue), symbol, which)
        if kring is None:
            return ()
        # appended: new bars, backfill merges (clear + extend); receive time: a bar replaced by a newer copy
        return (kring.appended, kring.latest_time() if len(kring) else 0, self._kline_recv.get((venue, symbol, which)))

    def lob_ring(self, venue: str, symbol: str, grid: str) -> Ring | None:
        key = (Venue(venue), symbol)
        if key not in self._keys:
            return None
        if grid == "fine":
            return self.rings.fine(*key).ring
        if grid == "coarse":
            return self.rings.coarse(*key).ring
        raise ValueError(f"unknown LOB grid {grid!r}; expected 'fine' or 'coarse'")

    def lob(self, venue: str, symbol: str, grid: str, n: int) -> tuple[NDArray[np.int64], NDArray[Any]] | None:
        ring = self.lob_ring(venue, symbol, grid)
        if ring is None or n < 1 or len(ring) < n:
            return None
        times = np.array(ring.times(n))
        rows = np.array(ring.window(n))
        self._noted[("lob", venue, symbol, grid)] = int(times[-1])
        return times, rows

    def klines(
        self, venue: str, symbol: str, interval_s: int, n: int, end_ms: int | None = None
    ) -> tuple[NDArray[np.int64], NDArray[Any]] | None:
        ring = self.klines_store.ring(Venue(venue), symbol, interval_s)
        if ring is None or n < 1 or len(ring) < n:
            return None
        if end_ms is None:
            opens = np.array(ring.times(n))
            bars = np.array(ring.window(n))
        else:  # the last n bars opened at or before end_ms
            all_opens = ring.times()
            stop = int(np.searchsorted(all_opens, end_ms, side="right"))
            if stop < n:
                return None
            opens = np.array(all_opens[stop - n : stop])
            bars = np.array(ring.window()[stop - n : stop])
        newest = int(opens[-1])
        recv = self._kline_recv.get((venue, symbol, interval_s))
        data_ns = recv[1] if recv is not None and recv[0] == newest else (newest + interval_s * 1000) * NS_PER_MS
        self._noted[("klines", venue, symbol, interval_s)] = data_ns
        return opens, bars


# -- what a spec reads ------------------------------------------------------------------------------


def streams(spec: Mapping[str, Any], venue: Venue, symbol: str) -> tuple[Stream, ...]:
    """The streams ``build_input`` reads to predict (venue, symbol) (``RingWindowSource.stamp`` keys)."""
    out: list[Stream] = []
    for need in model_inputs.required_history(dict(spec)):
        v = Venue(need["venue"] or venue).value  # ValueError for a venue this bot does not know
        s = need["symbol"] or symbol
        which = need["grid"] if need["stream"] == "lob" else need["interval_s"]
        out.append((need["stream"], v, s, which))
    return tuple(out)


def check_capacity(path: Path, spec: Mapping[str, Any], rings: RingSet, klines: KlineStore) -> None:
    """Refuse a model this configuration can never feed, or would feed other rows than it was trained on.

    A book model must read a ring of its own grid (``fine`` or ``coarse``) with the interval it was trained
    on, at least its levels (fewer levels than the ring holds are the ring's first levels: the very values an
    export with that many levels holds) and rows enough for its window, on the rings' time base (local
    receive time, ``models.inputs.TIME_BASE``: a spec without it was trained on the exchange-time grid of
    the export before, 1.2-1.5 s off on the shared recordings). A kline model needs bars enough. The worker
    raises the CheckpointError; a ``WorkerSet`` skips that checkpoint with a warning naming it.
    """
    cfg = rings.cfg
    try:
        needs = model_inputs.required_history(dict(spec))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: input spec unusable: {e!r}") from e
    for need in needs:
        if need["stream"] == "lob":
            grid = need["grid"]
            if grid not in ("fine", "coarse"):
                raise CheckpointError(f"{path}: reads a {grid!r} book grid; the rings have 'fine' and 'coarse'")
            base = spec.get("time_base")
            if base != model_inputs.TIME_BASE:
                was = repr(base) if base is not None else (
                    "exchange time (no time_base: trained before the grids moved to receive time)")
                raise CheckpointError(
                    f"{path}: trained on book grids stamped by {was}; the rings are stamped by local receive "
                    "time, so its windows would be shifted by the venues' clock offsets: retrain it on a new "
                    "`python -m bot books` export"
                )
            interval, levels, capacity = (
                (cfg.fine_interval_ms, cfg.fine_levels, cfg.fine_capacity) if grid == "fine"
                else (cfg.lob_interval_ms, cfg.lob_levels, cfg.lob_capacity)
            )
            if need["interval_ms"] != interval or spec["levels"] > levels or need["n"] > capacity:
                raise CheckpointError(
                    f"{path}: needs a {grid} grid of {need['interval_ms']} ms x {spec['levels']} levels x "
                    f"{need['n']} rows; this configuration has {interval} ms x {levels} levels x {capacity} rows"
                )
        elif need["n"] > klines.capacity:
            raise CheckpointError(
                f"{path}: needs {need['n']} bars of {need['interval_s']} s; ring.kline_capacity is {klines.capacity}"
            )


# -- why an input is missing ------------------------------------------------------------------------


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _utc_s(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%H:%M:%S")


def _run(times: NDArray[np.int64], step: int, end: int | None = None) -> int:
    """Length of the evenly spaced run of ``times`` ending at index ``end`` (default: the newest)."""
    t = np.asarray(times, dtype=np.int64)
    stop = len(t) if end is None else end + 1
    if stop <= 0:
        return 0
    breaks = np.flatnonzero(np.diff(t[:stop]) != step)
    return int(stop - (breaks[-1] + 1)) if len(breaks) else stop


def _have(run: int, total: int, times: NDArray[np.int64], stamp: Callable[[int], str]) -> str:
    """ "have 12" or "have 1 since a gap after 2025-06-29 16:38 UTC" (the row before the run)."""
    if run >= total:
        return f"have {run}"
    return f"have {run} since a gap after {stamp(int(times[-run - 1]))}"


def explain_wait(spec: Mapping[str, Any], source: RingWindowSource, venue: Venue, symbol: str) -> str:
    """Which input ``build_input(spec, source, venue=venue, symbol=symbol)`` lacks, as one line.

    Call it when ``build_input`` gave None. Names the first stream with too few rows (counting only the
    evenly spaced run at its newest end: rows before a gap do not help), then books that are not on the
    same grid times, assets without a common newest bar, then what the features refused.
    """
    try:
        reads = streams(spec, venue, symbol)
    except (KeyError, ValueError, TypeError) as e:
        return f"input spec unusable: {e}"
    needs = model_inputs.required_history(dict(spec))
    lob_newest: dict[str, int] = {}
    kline_windows: dict[str, tuple[NDArray[np.int64], int]] = {}
    for (kind, v, s, which), need in zip(reads, needs, strict=True):
        n = int(need["n"])
        if kind == "lob":
            ring = source.lob_ring(v, s, which)
            step = int(need["interval_ms"]) * NS_PER_MS
            what = f"{n} rows of the {duration_label(need['interval_ms'] / 1000)} {which} book grid of {v}/{s}"
            if ring is None:
                return f"{v}/{s} is not configured: no {which} grid to read {n} rows from"
            times = np.asarray(ring.times())
            run = _run(times, step) if len(times) else 0
            if run < n:
                return f"waiting for {what}, " + _have(run, len(times), times, _utc_s)
            lob_newest[f"{v}/{s}"] = int(times[-1])
        else:
            kring = source.klines_store.ring(Venue(v), s, which)
            step = int(which) * 1000
            what = f"{n} bars of {duration_label(which)} {v}/{s}"
            if kring is None or len(kring) == 0:
                return f"waiting for {what}, have 0"
            times = np.asarray(kring.times())
            kline_windows[f"{v}/{s}"] = (times, step)
            if spec["family"] != "crossasset":  # crossasset: counted at the common bar below
                run = _run(times, step)
                if run < n:
                    return f"waiting for {what}, " + _have(run, len(times), times, _utc)
    if len(set(lob_newest.values())) > 1:
        parts = ", ".join(f"{k} {_utc_s(t)}" for k, t in lob_newest.items())
        return f"waiting for the books on the same grid times (newest rows: {parts})"
    if spec["family"] == "crossasset" and kline_windows:
        common = min(int(t[-1]) for t, _ in kline_windows.values())
        n = int(needs[0]["n"])
        label = duration_label(spec["interval_s"])
        for name, (times, step) in kline_windows.items():
            i = int(np.searchsorted(times, common))
            if i >= len(times) or int(times[i]) != common:
                return f"waiting for the {label} bar of {_utc(common)} of {name} (the other assets' newest)"
            run = _run(times, step, i)
            if run < n:
                have = f"have {run}" if run == i + 1 else f"have {run} since a gap after {_utc(int(times[i - run]))}"
                return f"waiting for {n} bars of {label} {name} up to {_utc(common)}, {have}"
    if spec["family"] in ("tabl", "lobforecast"):
        return f"the newest book row of {venue.value}/{symbol} (or another book read) has no two-sided top of book"
    return "kline features not finite (a bar with zero volume or a non-positive price in the window?)"
