"""Model workers: ring-buffer windows in, ``Signal`` events out, inference off the event loop.

    grid timer (loop) ─► WorkerSet.on_tick(ts) ─► ModelWorker.on_tick(ts)                         [loop thread]
        for each target instrument whose book is LIVE: models.inputs.build_input(spec, RingWindowSource)
        (copies of the newest rows); inputs unchanged since the last tick or older than max_input_age_s
        are dropped (every drop counted by reason) ─► one job into a one-slot handoff; if the previous
        job is still queued or running the tick is skipped and counted, never queued
    ModelWorker.run() (a task) ─► run_in_executor(its own single thread):                         [model thread]
        collate the samples into batches (by input shape), model under torch.inference_mode() on CUDA
        when available else CPU, decode to plain floats (models.inputs.decode_output)
    ─► back on the loop: one Signal per (venue, symbol) ─► bus.publish                            [loop thread]

Why this shape. Reading the rings and building inputs is cheap numpy work and must see a consistent ring
(the rings are written on the loop), so it happens on the loop and hands over copies. The forward pass is
the slow part (milliseconds on a CPU, more for the forecaster), so it runs on one dedicated thread per
model: torch releases the GIL inside its kernels, the loop keeps dispatching market data, and one thread
per model keeps a model's batches in order. The bus is synchronous and single-threaded by design, so a
worker thread never publishes: the task that awaited the executor publishes, on the loop.

Data time. ``Signal.ts_event`` and the input age use the local receive clock: the grid time of the newest
LOB row (rows are stamped with receive time, see bot/ring.py), or the receive time of the newest closed bar
(``KlineClosed.ts_recv``, tracked here; its close time if it came without an event, e.g. a backfill). The
venue clock is not used: in replay and sim it is another day, and a venue's clock skew is not staleness.

Which instruments a worker serves: ``serve="trained"`` (default) the instrument(s) in the checkpoint's input
spec (tabl/multiscale: its venue and symbol; crossasset: its assets on its venue; lobforecast: its target);
``serve="all"`` additionally every configured (venue, symbol) for the per-instrument families (tabl,
multiscale; their inputs are relative prices and returns, so they travel, but the normalisation statistics
are the trained instrument's) and every configured venue holding all assets for crossasset. Instruments
that are not configured are left out with a warning.

Wiring (bot/app.py)::

    workers = await load_workers(settings, rings, klines, bus, clock)   # before the TaskGroup; may be empty
    signal_log = SignalLog.from_config(settings.signal_log)             # bot.signal_log; if .enabled
    signal_log.attach(bus)
    ... in the TaskGroup: tg.create_task(workers.run()); tg.create_task(signal_log.run())
    ... in grid_timer, right after rings.on_time(now): workers.on_tick(now)
    ... in the status: workers.stats(), signal_log.stats()
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog
import torch
from numpy.typing import NDArray

from bot.bus import BoundedQueue, EventBus
from bot.clock import Clock
from bot.config import BotSettings
from bot.events import BookHealth, BookState, KlineClosed, Signal, Venue
from bot.klines import KlineStore
from bot.ring import RingSet
from models import inputs as model_inputs
from models.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint

log = structlog.get_logger(__name__)

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
REASONS = ("unchanged", "no_input", "input_error", "not_live", "stale")

Serve = Literal["trained", "all"]
InputBuilder = Callable[..., Any]  # models.inputs.build_input's signature
Key = tuple[Venue, str]


# -- windows from the live rings ------------------------------------------------------------------------


class RingWindowSource:
    """``models.inputs.WindowSource`` over the live rings and kline store.

    Returns COPIES of the newest rows (the rings are overwritten in place by later appends, and the copy
    outlives the tick: it is read on the model thread). Remembers the newest local data time of every
    window it returned since ``reset()`` (``newest_ns``): that is the signal's data time. Call ``attach``
    so bars' receive times are known (otherwise a bar's data time is its close time).
    """

    def __init__(self, rings: RingSet, klines: KlineStore) -> None:
        self.rings = rings
        self.klines_store = klines
        self._keys = set(rings.keys())
        self._kline_recv: dict[tuple[str, str, int], tuple[int, int]] = {}  # -> (open_time_ms, ts_recv)
        self.newest_ns = 0

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(KlineClosed, self.on_kline)

    def on_kline(self, k: KlineClosed) -> None:
        key = (k.venue.value, k.symbol, k.interval_s)
        seen = self._kline_recv.get(key)
        if seen is None or k.open_time_ms >= seen[0]:
            self._kline_recv[key] = (k.open_time_ms, k.ts_recv)

    def reset(self) -> None:
        self.newest_ns = 0

    def stamp(self, stream: tuple[Any, ...]) -> tuple[Any, ...]:
        """A cheap fingerprint of one stream (``("lob", venue, symbol, grid)`` or ``("klines", venue, symbol,
        interval_s)``): it changes whenever a window read from the stream could. Lets a worker skip building
        an input that would be the one it built last tick (a kline model between bars, a coarse grid
        between rows) without reading or copying anything."""
        kind, venue, symbol, which = stream
        if kind == "lob":
            key = (Venue(venue), symbol)
            if key not in self._keys:
                return ()
            ring = (self.rings.fine(*key) if which == "fine" else self.rings.coarse(*key)).ring
            return (ring.appended, ring.latest_time() if len(ring) else 0)
        kring = self.klines_store.ring(Venue(venue), symbol, which)
        if kring is None:
            return ()
        # appended: new bars, backfill merges (clear + extend); receive time: a bar replaced by a newer copy
        return (kring.appended, kring.latest_time() if len(kring) else 0, self._kline_recv.get((venue, symbol, which)))

    def _note(self, ts_ns: int) -> None:
        if ts_ns > self.newest_ns:
            self.newest_ns = ts_ns

    def lob(self, venue: str, symbol: str, grid: str, n: int) -> tuple[NDArray[np.int64], NDArray[Any]] | None:
        key = (Venue(venue), symbol)
        if key not in self._keys or n < 1:
            return None
        if grid == "fine":
            g = self.rings.fine(*key)
        elif grid == "coarse":
            g = self.rings.coarse(*key)
        else:
            raise ValueError(f"unknown LOB grid {grid!r}; expected 'fine' or 'coarse'")
        if len(g) < n:
            return None
        times = np.array(g.times(n))
        rows = np.array(g.window(n))
        self._note(int(times[-1]))
        return times, rows

    def klines(self, venue: str, symbol: str, interval_s: int, n: int) -> tuple[NDArray[np.int64], NDArray[Any]] | None:
        ring = self.klines_store.ring(Venue(venue), symbol, interval_s)
        if ring is None or n < 1 or len(ring) < n:
            return None
        opens = np.array(ring.times(n))
        bars = np.array(ring.window(n))
        newest = int(opens[-1])
        recv = self._kline_recv.get((venue, symbol, interval_s))
        self._note(recv[1] if recv is not None and recv[0] == newest else (newest + interval_s * 1000) * NS_PER_MS)
        return opens, bars


# -- what each family's output means ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One ``build_input`` call per tick: the instrument passed to it and the signals its sample yields."""

    venue: Venue
    symbol: str
    symbols: tuple[str, ...]  # crossasset: every asset; otherwise (symbol,)


@dataclass(frozen=True)
class SignalFields:
    symbol: str
    classes: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()
    value_names: tuple[str, ...] = ()
    values: tuple[float, ...] = ()
    confidence: float | None = None
    attention: str = ""


def duration_label(seconds: float) -> str:
    """60 -> "1m", 5 -> "5s", 5400 -> "90m", 86400 -> "1d": the shortest exact unit."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _floats(a: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(a, dtype=np.float64).ravel())


def _top(weights: Sequence[float], labels: Sequence[str], k: int = 3) -> str:
    order = sorted(range(len(weights)), key=lambda i: -weights[i])[:k]
    return " ".join(f"{labels[i]} {weights[i]:.2f}" for i in order)


class Head:
    """Per-family glue: the targets, the forward call (with attention) and the decoding of one sample."""

    def __init__(self, spec: Mapping[str, Any], config: Any) -> None:
        self.spec = spec
        self.config = config
        self.horizon = ""

    def trained_targets(self) -> list[Target]:
        raise NotImplementedError

    def all_targets(self, keys: Sequence[Key]) -> list[Target]:
        return [Target(v, s, (s,)) for v, s in keys]

    def book_keys(self, target: Target) -> list[Key]:
        """The books that must be LIVE, one per signal symbol."""
        return [(target.venue, s) for s in target.symbols]

    def prepare(self, source: RingWindowSource, target: Target) -> Any:
        """Anything decoding needs from the windows, read on the loop right after the input (default none)."""
        return None

    def forward(self, model: torch.nn.Module, x: Any) -> Any:
        return model(x)

    def decode(self, out: Any, target: Target, prepared: Any) -> list[SignalFields]:
        raise NotImplementedError


class TablHead(Head):
    """Per-horizon class probabilities; attention: the top-3 time steps of the last TABL layer (t-0 newest)."""

    def __init__(self, spec: Mapping[str, Any], config: Any) -> None:
        super().__init__(spec, config)
        step_s = spec["interval_ms"] / 1000
        self.horizon = ",".join(duration_label(h * step_s) for h in spec["labels"]["horizons"])
        self.classes = tuple(spec["labels"].get("classes", model_inputs.CLASSES))

    def trained_targets(self) -> list[Target]:
        return [Target(Venue(self.spec["venue"]), self.spec["symbol"], (self.spec["symbol"],))]

    def forward(self, model: torch.nn.Module, x: Any) -> Any:
        return model(x, return_attention=True)  # (logits (B, H, C), attention (B, heads, H*C, T_last))

    def decode(self, out: Any, target: Target, prepared: Any) -> list[SignalFields]:
        d = model_inputs.decode_output(dict(self.spec), out)
        probs = np.asarray(d["probs"])  # (H, C)
        attn = out[1].float()[0].mean(dim=(0, 1)).cpu().numpy()  # (T_last,), oldest first
        steps = len(attn)
        return [SignalFields(
            symbol=target.symbol,
            classes=self.classes,
            probabilities=_floats(probs),
            confidence=float(probs[0].max()),
            attention=_top(list(attn[::-1]), [f"t-{i}" for i in range(steps)]),
        )]


class MultiScaleHead(Head):
    """Direction probabilities and returns per horizon; attention: the top-3 scale importances."""

    def __init__(self, spec: Mapping[str, Any], config: Any) -> None:
        super().__init__(spec, config)
        labels = spec["labels"]
        base_s = spec["intervals_s"][0]
        self.horizon = duration_label(labels["direction_horizon"] * base_s)
        self.value_names = tuple(f"ret_{duration_label(h * base_s)}" for h in labels["return_horizons"])

    def trained_targets(self) -> list[Target]:
        return [Target(Venue(self.spec["venue"]), self.spec["symbol"], (self.spec["symbol"],))]

    def forward(self, model: torch.nn.Module, x: Any) -> Any:
        return model(x, need_weights=False)

    def decode(self, out: Any, target: Target, prepared: Any) -> list[SignalFields]:
        d = model_inputs.decode_output(dict(self.spec), out)
        probs = np.asarray(d["probs"])
        return [SignalFields(
            symbol=target.symbol,
            classes=tuple(model_inputs.CLASSES),
            probabilities=_floats(probs),
            value_names=self.value_names,
            values=_floats(d["returns"]),
            confidence=float(probs.max()),
            attention=_top(_floats(d["scale_importance"]), list(self.spec["scales"])),
        )]


class CrossAssetHead(Head):
    """One sample per venue, one signal per asset; attention: the other assets it attended most."""

    def __init__(self, spec: Mapping[str, Any], config: Any) -> None:
        super().__init__(spec, config)
        self.assets = tuple(spec["assets"])
        self.horizon = duration_label(spec["labels"]["horizon"] * spec["interval_s"])

    def trained_targets(self) -> list[Target]:
        return [Target(Venue(self.spec["venue"]), self.assets[0], self.assets)]

    def all_targets(self, keys: Sequence[Key]) -> list[Target]:
        have = set(keys)
        venues = sorted({v for v, _ in keys if all((v, a) in have for a in self.assets)})
        return [Target(v, self.assets[0], self.assets) for v in venues]

    def forward(self, model: torch.nn.Module, x: Any) -> Any:
        return model(x, need_weights=True)

    def decode(self, out: Any, target: Target, prepared: Any) -> list[SignalFields]:
        d = model_inputs.decode_output(dict(self.spec), out)
        probs = np.asarray(d["probs"])  # (A, C)
        cross = out["cross_attention"].float()[0].mean(dim=0).cpu().numpy()  # (A, A): query asset x key asset
        res = []
        for a, asset in enumerate(self.assets):
            others = [j for j in range(len(self.assets)) if j != a] or [a]
            res.append(SignalFields(
                symbol=asset,
                classes=tuple(model_inputs.CLASSES),
                probabilities=_floats(probs[a]),
                value_names=(f"ret_{self.horizon}", "weight"),
                values=(float(d["returns"][a]), float(d["portfolio_weights"][a])),
                confidence=float(probs[a].max()),
                attention=_top([float(cross[a, j]) for j in others], [self.assets[j] for j in others], k=2),
            ))
        return res


class LobForecastHead(Head):
    """The target book's predicted mid move and spread per horizon, in bps of the mid now; no attention."""

    def __init__(self, spec: Mapping[str, Any], config: Any) -> None:
        super().__init__(spec, config)
        step_s = spec["interval_ms"] / 1000
        labels = [duration_label(h * step_s) for h in spec["labels"]["horizons"]]
        self.horizon = ",".join(labels)
        self.value_names = tuple(f"mid_bps_{h}" for h in labels) + tuple(f"spread_bps_{h}" for h in labels)
        self.levels = int(spec["levels"])

    def trained_targets(self) -> list[Target]:
        venue, pair = self.spec["target"]
        return [Target(Venue(venue), pair, (pair,))]

    def all_targets(self, keys: Sequence[Key]) -> list[Target]:
        return self.trained_targets()  # the target is part of the architecture

    def prepare(self, source: RingWindowSource, target: Target) -> Any:
        got = source.lob(target.venue.value, target.symbol, self.spec["grid"], 1)
        if got is None:
            return math.nan
        row = got[1][-1]
        return 0.5 * (float(row[0]) + float(row[2 * (len(row) // 4)]))  # (best bid + best ask) / 2

    def decode(self, out: Any, target: Target, prepared: Any) -> list[SignalFields]:
        mid_now = float(prepared)
        book = model_inputs.decode_book(dict(self.spec), out, mid_now)  # (H, 4L) prices and sizes
        bid1, ask1 = book[:, 0], book[:, 2 * self.levels]
        mid = 0.5 * (bid1 + ask1)
        mid_bps = (mid / mid_now - 1.0) * 1e4
        spread_bps = (ask1 - bid1) / mid * 1e4
        return [SignalFields(symbol=target.symbol, value_names=self.value_names,
                             values=_floats(mid_bps) + _floats(spread_bps))]


HEADS: dict[str, type[Head]] = {
    "tabl": TablHead,
    "multiscale": MultiScaleHead,
    "crossasset": CrossAssetHead,
    "lobforecast": LobForecastHead,
}


# -- batching ------------------------------------------------------------------------------------------


def _signature(x: Any) -> tuple[Any, ...]:
    if isinstance(x, Mapping):
        return tuple((k, tuple(v.shape)) for k, v in sorted(x.items()))
    return (tuple(x.shape),)


def collate(xs: Sequence[Any]) -> Any:
    """Samples of batch dim 1 (tensors, or dicts of tensors) -> one batch, concatenated on dim 0."""
    if isinstance(xs[0], Mapping):
        return {k: torch.cat([x[k] for x in xs]) for k in xs[0]}
    return torch.cat(list(xs))


def split_output(out: Any, i: int) -> Any:
    """Sample ``i`` of a batched output, keeping batch dim 1 (what decode_output expects)."""
    if isinstance(out, torch.Tensor):
        return out[i : i + 1]
    if isinstance(out, Mapping):
        return {k: split_output(v, i) for k, v in out.items()}
    if isinstance(out, tuple | list):
        return type(out)(split_output(v, i) for v in out)
    return out


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, Mapping):
        return {k: v.to(device) for k, v in x.items()}
    return x.to(device)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise CheckpointError(f"unknown torch device {device!r}: {e}") from e


# -- one worker per checkpoint -------------------------------------------------------------------------


@dataclass
class LoadedCheckpoint:
    """What loading a checkpoint file gives (safe to produce on any thread)."""

    path: Path
    model: torch.nn.Module
    meta: CheckpointMeta
    sha256: str
    device: torch.device


def load_checkpoint_file(path: str | Path, device: str = "auto") -> LoadedCheckpoint:
    """Load and hash one checkpoint; CheckpointError for anything that would not serve."""
    p = Path(path)
    dev = pick_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} requested but CUDA is not available")
    model, meta = load_checkpoint(p, map_location=dev)
    spec = meta.extra.get("inputs") if isinstance(meta.extra, dict) else None
    if not isinstance(spec, dict):
        raise CheckpointError(f"{p}: no input spec (extra['inputs']); cannot build its inputs")
    if spec.get("family") != meta.family:
        raise CheckpointError(f"{p}: input spec is for {spec.get('family')!r}, the model is {meta.family!r}")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    return LoadedCheckpoint(p, model, meta, digest, dev)


@dataclass
class WorkerStats:
    ticks: int = 0
    skipped_busy: int = 0  # ticks that found the previous batch still queued or running
    batches: int = 0
    samples: int = 0
    published: int = 0
    not_published: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    inference_errors: int = 0
    inference_ms_last: float = 0.0
    inference_ms_max: float = 0.0
    inference_ms_total: float = 0.0


@dataclass(frozen=True)
class _Sample:
    target: Target
    live: tuple[str, ...]  # the signal symbols whose book is LIVE
    x: Any
    data_ns: int
    prepared: Any


@dataclass(frozen=True)
class _Job:
    tick_ns: int
    samples: tuple[_Sample, ...]


@dataclass(frozen=True)
class _Result:
    start_ns: int
    end_ns: int
    fields: tuple[tuple[SignalFields, ...], ...]  # per sample


class ModelWorker:
    """One checkpoint: builds inputs at each tick (loop), runs the model on its own thread, publishes Signals.

    Raises CheckpointError (from the constructor) for a checkpoint it cannot serve.
    """

    def __init__(
        self,
        checkpoint_path: str | Path,
        rings: RingSet,
        klines: KlineStore,
        bus: EventBus,
        clock: Clock,
        *,
        max_input_age_s: float,
        device: str = "auto",
        serve: Serve = "trained",
        source: RingWindowSource | None = None,
        loaded: LoadedCheckpoint | None = None,
        input_builder: InputBuilder | None = None,
    ) -> None:
        if max_input_age_s <= 0:
            raise ValueError(f"max_input_age_s must be > 0, got {max_input_age_s}")
        ck = loaded if loaded is not None else load_checkpoint_file(checkpoint_path, device)
        self.path = ck.path
        self.name = ck.path.stem
        self.model = ck.model
        self.meta = ck.meta
        self.family = ck.meta.family
        self.version = ck.sha256[:12]
        self.code_version = str(ck.meta.extra.get("code_version", ""))
        self.device = ck.device
        self.spec: dict[str, Any] = ck.meta.extra["inputs"]
        head_cls = HEADS.get(self.family)
        if head_cls is None:
            raise CheckpointError(f"{self.path}: no signal decoding for family {self.family!r}; known: {sorted(HEADS)}")
        try:
            self.head = head_cls(self.spec, ck.meta.config)
            targets = self.head.trained_targets()
            if serve == "all":
                targets = _unique(targets + self.head.all_targets(rings.keys()))
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{self.path}: input spec unusable for {self.family}: {e!r}") from e
        _check_capacity(self.path, self.spec, rings, klines)
        configured = set(rings.keys())
        self.targets = [t for t in targets if all(k in configured for k in self.head.book_keys(t))]
        left_out = [f"{t.venue.value}/{s}" for t in targets if t not in self.targets for s in t.symbols]
        if left_out:
            log.warning("model_instruments_not_configured", model=self.name, left_out=left_out)
        self.rings = rings
        self.bus = bus
        self.clock = clock
        self.max_age_ns = int(max_input_age_s * NS_PER_S)
        if source is None:  # a WorkerSet shares one attached source among its workers
            source = RingWindowSource(rings, klines)
            source.attach(bus)
        self.source = source
        self._build = input_builder or model_inputs.build_input
        self._health: dict[Key, BookState] = {}
        try:
            self._streams = {t: _streams(self.spec, t) for t in self.targets}
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{self.path}: input spec unusable for {self.family}: {e!r}") from e
        self._last_seen: dict[Target, tuple[tuple[Any, ...], str]] = {}  # stamp at the last build, its outcome
        self._last_data: dict[Target, int] = {}
        self._last_error: dict[Target, str] = {}
        self._busy = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._handoff: BoundedQueue[_Job] = BoundedQueue(1, "drop_newest")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{self.name}")
        self._stats = WorkerStats()
        bus.subscribe(BookHealth, self._on_health)
        log.info("model_worker_ready", model=self.name, family=self.family, version=self.version,
                 device=str(self.device), horizon=self.head.horizon,
                 targets=[f"{t.venue.value}/{'+'.join(t.symbols)}" for t in self.targets])

    # -- loop side ------------------------------------------------------------------------------------
    def _on_health(self, ev: BookHealth) -> None:
        self._health[(ev.venue, ev.symbol)] = ev.state

    def _skip(self, reason: str, n: int = 1) -> None:
        self._stats.not_published[reason] += n

    def on_tick(self, ts_ns: int) -> None:
        """Grid tick (loop thread, after the rings were written up to ``ts_ns``). Never blocks.

        Every signal the worker could publish at this tick gets exactly one outcome: published, or counted
        under one reason, checked in this order: ``not_live`` (its book is not LIVE), ``input_error`` (the
        spec cannot be served), ``no_input`` (not enough history, or a gap in a window), ``unchanged`` (the
        newest input row is the one already used: a coarse grid or a kline between rows), ``stale`` (the
        newest input row is older than max_input_age_s at ``ts_ns``).
        """
        st = self._stats
        st.ticks += 1
        if self._busy:
            st.skipped_busy += 1
            return
        samples = []
        for target in self.targets:
            live = tuple(s for s in target.symbols if self._health.get((target.venue, s)) is BookState.LIVE)
            if len(live) < len(target.symbols):
                self._skip("not_live", len(target.symbols) - len(live))
            if not live:
                continue
            stamp: tuple[Any, ...] = ()
            try:
                stamp = tuple(self.source.stamp(s) for s in self._streams[target])
                seen = self._last_seen.get(target)
                if seen is not None and seen[0] == stamp:  # nothing new: the build would repeat the last one
                    self._skip(seen[1] or "unchanged", len(live))
                    continue
                self.source.reset()
                x = self._build(self.spec, self.source, venue=target.venue.value, symbol=target.symbol)
            except Exception as e:  # a spec this code cannot serve: counted, logged once per message
                self._skip("input_error", len(live))
                self._last_seen[target] = (stamp, "input_error")
                if self._last_error.get(target) != str(e):
                    self._last_error[target] = str(e)
                    log.error("model_input_failed", model=self.name, venue=target.venue.value,
                              symbol=target.symbol, error=repr(e))
                continue
            if x is None:
                self._skip("no_input", len(live))
                self._last_seen[target] = (stamp, "no_input")
                continue
            self._last_seen[target] = (stamp, "")
            data_ns = self.source.newest_ns
            if self._last_data.get(target) == data_ns:
                self._skip("unchanged", len(live))
                continue
            self._last_data[target] = data_ns
            if ts_ns - data_ns > self.max_age_ns:
                self._skip("stale", len(live))
                continue
            samples.append(_Sample(target, live, x, data_ns, self.head.prepare(self.source, target)))
        if samples:
            self._busy = True
            self._idle.clear()
            self._handoff.put_nowait(_Job(ts_ns, tuple(samples)))

    async def wait_idle(self) -> None:
        """Return once no job is queued or running (tests, and replay drivers that must not skip ticks)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Run jobs until cancelled: inference on the model thread, publishing here on the loop."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                job = await self._handoff.get()
                try:
                    result = await loop.run_in_executor(self._executor, self._infer, job)
                except Exception as e:  # a broken model must not take the bot down: counted, logged
                    self._stats.inference_errors += 1
                    log.error("model_inference_failed", model=self.name, error=repr(e),
                              errors=self._stats.inference_errors)
                else:
                    self._publish(job, result)
                finally:
                    self._busy = False
                    self._idle.set()
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _publish(self, job: _Job, result: _Result) -> None:
        st = self._stats
        ms = (result.end_ns - result.start_ns) / NS_PER_MS
        st.batches += 1
        st.samples += len(job.samples)
        st.inference_ms_last = ms
        st.inference_ms_max = max(st.inference_ms_max, ms)
        st.inference_ms_total += ms
        for sample, fields in zip(job.samples, result.fields, strict=True):
            for f in fields:
                if f.symbol not in sample.live:
                    continue
                self.bus.publish(Signal(
                    ts_event=sample.data_ns,
                    ts_recv=self.clock.now_ns(),
                    model=self.name,
                    family=self.family,
                    version=self.version,
                    code_version=self.code_version,
                    venue=sample.target.venue,
                    symbol=f.symbol,
                    horizon=self.head.horizon,
                    classes=f.classes,
                    probabilities=f.probabilities,
                    value_names=f.value_names,
                    values=f.values,
                    confidence=f.confidence,
                    attention=f.attention,
                    inference_start_ns=result.start_ns,
                    inference_end_ns=result.end_ns,
                ))
                st.published += 1

    # -- model thread ---------------------------------------------------------------------------------
    def _infer(self, job: _Job) -> _Result:
        start = self.clock.now_ns()
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for i, s in enumerate(job.samples):
            groups[_signature(s.x)].append(i)  # start-up windows may be shorter: same shapes batch together
        fields: list[tuple[SignalFields, ...]] = [() for _ in job.samples]
        with torch.inference_mode():
            for idx in groups.values():
                x = to_device(collate([job.samples[i].x for i in idx]), self.device)
                out = self.head.forward(self.model, x)
                for j, i in enumerate(idx):
                    s = job.samples[i]
                    fields[i] = tuple(self.head.decode(split_output(out, j), s.target, s.prepared))
        return _Result(start, self.clock.now_ns(), tuple(fields))

    # -- reporting ------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        st = self._stats
        return {
            "model": self.name,
            "family": self.family,
            "version": self.version,
            "device": str(self.device),
            "targets": len(self.targets),
            "busy": self._busy,
            "ticks": st.ticks,
            "skipped_busy": st.skipped_busy,
            "batches": st.batches,
            "samples": st.samples,
            "published": st.published,
            "not_published": dict(st.not_published),
            "inference_errors": st.inference_errors,
            "inference_ms_last": round(st.inference_ms_last, 3),
            "inference_ms_max": round(st.inference_ms_max, 3),
            "inference_ms_mean": round(st.inference_ms_total / st.batches, 3) if st.batches else 0.0,
        }

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _unique(targets: Iterable[Target]) -> list[Target]:
    return list(dict.fromkeys(targets))


def _streams(spec: Mapping[str, Any], target: Target) -> tuple[tuple[Any, ...], ...]:
    """The streams ``build_input`` reads for ``target`` (``RingWindowSource.stamp`` keys)."""
    out = []
    for need in model_inputs.required_history(dict(spec)):
        venue = Venue(need["venue"] or target.venue).value  # ValueError for a venue this bot does not know
        symbol = need["symbol"] or target.symbol
        which = need["grid"] if need["stream"] == "lob" else need["interval_s"]
        out.append((need["stream"], venue, symbol, which))
    return tuple(out)


def _check_capacity(path: Path, spec: Mapping[str, Any], rings: RingSet, klines: KlineStore) -> None:
    """Refuse a model this configuration can never feed (grid interval, levels or ring sizes too small)."""
    cfg = rings.cfg
    try:
        needs = model_inputs.required_history(dict(spec))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: input spec unusable: {e!r}") from e
    for need in needs:
        if need["stream"] == "lob":
            grid = need["grid"]
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


# -- every checkpoint in a directory -------------------------------------------------------------------


class WorkerSet:
    """The workers of every loadable checkpoint in a directory; bad checkpoints are logged and skipped."""

    def __init__(self, workers: Sequence[ModelWorker], failed: Mapping[str, str] | None = None,
                 source: RingWindowSource | None = None) -> None:
        self.workers = list(workers)
        self.failed = dict(failed or {})  # file name -> why it was skipped
        self.source = source

    @staticmethod
    def checkpoint_files(models_dir: str | Path) -> list[Path]:
        d = Path(models_dir)
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)

    @classmethod
    def from_dir(
        cls,
        models_dir: str | Path,
        rings: RingSet,
        klines: KlineStore,
        bus: EventBus,
        clock: Clock,
        *,
        max_input_age_s: float,
        device: str = "auto",
        serve: Serve = "trained",
        loaded: Mapping[Path, LoadedCheckpoint | CheckpointError] | None = None,
    ) -> WorkerSet:
        """One ModelWorker per checkpoint file (*.pt, *.pth, *.ckpt) in ``models_dir``, sorted by name.

        Call on the loop thread (workers subscribe to the bus). ``loaded`` carries checkpoints already loaded
        elsewhere (``load_workers`` loads them on a thread); the rest are loaded here.
        """
        source = RingWindowSource(rings, klines)
        source.attach(bus)
        files = cls.checkpoint_files(models_dir)
        if not files:
            log.warning("no_model_checkpoints", models_dir=str(models_dir))
        workers: list[ModelWorker] = []
        failed: dict[str, str] = {}
        for path in files:
            pre = (loaded or {}).get(path)
            try:
                if isinstance(pre, CheckpointError):
                    raise pre
                workers.append(ModelWorker(path, rings, klines, bus, clock, max_input_age_s=max_input_age_s,
                                           device=device, serve=serve, source=source, loaded=pre))
            except Exception as e:  # CheckpointError, or whatever a corrupt file raises: skip that worker
                msg = str(e) if isinstance(e, CheckpointError) else f"{path}: cannot load: {e!r}"
                failed[path.name] = msg
                log.error("model_checkpoint_skipped", path=str(path), error=msg)
        return cls(workers, failed, source)

    def on_tick(self, ts_ns: int) -> None:
        for w in self.workers:
            w.on_tick(ts_ns)

    async def run(self) -> None:
        """Every worker's inference loop, until cancelled (returns at once when there are none)."""
        if not self.workers:
            return
        async with asyncio.TaskGroup() as tg:
            for w in self.workers:
                tg.create_task(w.run(), name=f"model-{w.name}")

    def stats(self) -> dict[str, Any]:
        return {"workers": [w.stats() for w in self.workers], "failed": dict(self.failed)}

    def close(self) -> None:
        for w in self.workers:
            w.close()

    def __len__(self) -> int:
        return len(self.workers)


async def load_workers(
    settings: BotSettings,
    rings: RingSet,
    klines: KlineStore,
    bus: EventBus,
    clock: Clock,
    models_dir: str | Path | None = None,
) -> WorkerSet:
    """The app's entry point: a WorkerSet for ``models_dir`` (default ``settings.models.dir``).

    Checkpoints are read and deserialised on a thread (torch.load of a large model takes a while); the
    workers are then built here, on the loop. ``settings.models.enabled = false`` gives an empty set.
    Start ``workers.run()`` in the TaskGroup and call ``workers.on_tick(now)`` after ``rings.on_time(now)``.
    """
    cfg = settings.models
    if not cfg.enabled:
        return WorkerSet([])
    torch.set_num_threads(cfg.torch_threads)
    directory = Path(models_dir) if models_dir is not None else cfg.dir
    files = WorkerSet.checkpoint_files(directory)

    def load_all() -> dict[Path, LoadedCheckpoint | CheckpointError]:
        out: dict[Path, LoadedCheckpoint | CheckpointError] = {}
        for p in files:
            try:
                out[p] = load_checkpoint_file(p, cfg.device)
            except CheckpointError as e:
                out[p] = e
            except Exception as e:  # whatever a corrupt file raises: that worker is skipped, not the bot
                out[p] = CheckpointError(f"{p}: cannot load: {e!r}")
        return out

    loaded = await asyncio.to_thread(load_all)
    workers = WorkerSet.from_dir(directory, rings, klines, bus, clock, max_input_age_s=cfg.max_input_age_s,
                                 device=cfg.device, serve=cfg.serve, loaded=loaded)
    log.info("model_workers_loaded", models_dir=str(directory), workers=len(workers), failed=len(workers.failed),
             threads=cfg.torch_threads)
    return workers
