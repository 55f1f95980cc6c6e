"""Model workers: one per checkpoint, each building inputs on the loop and running its model on its own thread.

    grid timer (loop) ─► WorkerSet.on_tick(ts) ─► ModelWorker.on_tick(ts)                         [loop thread]
        for each target instrument whose book is LIVE: models.inputs.build_input(spec, RingWindowSource)
        (copies of the newest rows); inputs unchanged since the last tick or older than max_input_age_s
        are dropped (every drop counted by reason; a missing input also says which, ``stats()["waiting"]``)
        ─► one job into a one-slot handoff; if the previous job is still queued or running the tick is
        skipped and counted, never queued
    ModelWorker.run() (a task) ─► run_in_executor(its own single thread):                         [model thread]
        collate the samples into batches (by input shape), model under torch.inference_mode() on CUDA
        when available else CPU, decode to plain floats (bot.heads)
    ─► back on the loop: one Signal per (venue, symbol) ─► bus.publish                            [loop thread]

This module is one checkpoint's scheduling: the tick/handoff/thread machinery and its counters (ModelWorker).
Loading a checkpoint directory into workers, the fan-out of ticks and the stats across workers are
bot/worker_set.py (WorkerSet, load_workers; not re-exported here, that module imports this one). What a
model reads from the rings (and why it waits) is bot/model_inputs.py; what each family's output means is
bot/heads.py. Their public names, and bot/checkpoints.py's, are re-exported here.

Why this shape. Reading the rings is cheap numpy work that must see a consistent ring (they are written
on the loop), so it happens on the loop and hands over copies. The forward pass is the slow part, so it
runs on one thread per model: torch releases the GIL inside its kernels, the loop keeps dispatching market
data, and a model's batches stay in order. The bus is synchronous and single-threaded by design, so a
worker thread never publishes: the task that awaited the executor publishes, on the loop.

Data time. ``Signal.ts_event`` and the input age use the local receive clock: the grid time of the newest
LOB row (rows are stamped with receive time, see bot/ring.py), or the receive time of the newest closed bar
(``KlineClosed.ts_recv``; its close time if it came without an event, e.g. a backfill). The venue clock is
not used: in replay and sim it is another day, and a venue's clock skew is not staleness.

Which instruments a worker serves: ``serve="trained"`` (default) the instrument(s) in the checkpoint's input
spec (tabl/multiscale: its venue and symbol; crossasset: its assets on its venue; lobforecast: its target);
``serve="all"`` additionally every configured (venue, symbol) for the per-instrument families (tabl,
multiscale; their inputs are relative prices and returns, so they travel, but the normalisation statistics
are the trained instrument's) and every configured venue holding all assets for crossasset. ``serve_on``
(``models.serve_on``: family or checkpoint name -> venues) adds the trained symbol(s) on the venues named;
the default serves crossasset on bybit_linear as well, the one venue of the embedded demo that trades BTC,
ETH and SOL (see ModelsConfig). Instruments that are not configured are left out with a warning.

The checkpoint directory and loading one file: bot/checkpoints.py; the wiring into the app: bot/worker_set.py.
A replay (replay/engine.py) calls ``workers.tick_inline(ts)`` instead of ``on_tick``: the same tick, the job
run at once.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
import torch

from bot.bus import BoundedQueue, EventBus
from bot.checkpoints import (
    SHIPPED_DIR,
    LoadedCheckpoint,
    checkpoint_dir,
    load_checkpoint_file,
    pick_device,
)
from bot.clock import Clock
from bot.events import BookHealth, BookState, Signal, Venue
from bot.grid_set import RingSet
from bot.heads import (
    HEADS,
    Head,
    SignalFields,
    Target,
    batch_signature,
    collate,
    duration_label,
    split_output,
    to_device,
)
from bot.klines import KlineStore
from bot.model_inputs import RingWindowSource, check_capacity, explain_wait, streams
from models import inputs as model_inputs
from models.checkpoint import CheckpointError

__all__ = [  # the public names of the four modules, importable from here as before the split
    "HEADS", "SHIPPED_DIR", "Head", "LoadedCheckpoint", "ModelWorker", "RingWindowSource", "SignalFields", "Target",
    "checkpoint_dir", "collate", "duration_label", "explain_wait", "load_checkpoint_file", "pick_device",
    "split_output", "to_device",
]  # fmt: skip

log = structlog.get_logger(__name__)

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
REASONS = ("unchanged", "no_input", "input_error", "not_live", "stale")

Serve = Literal["trained", "all"]
InputBuilder = Callable[..., Any]  # models.inputs.build_input's signature
Key = tuple[Venue, str]


# -- one worker per checkpoint -------------------------------------------------------------------------

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
        serve_on: Mapping[str, Sequence[Venue]] | None = None,
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
            extra_venues = [*(serve_on or {}).get(self.family, ()), *(serve_on or {}).get(self.name, ())]
            for venue in extra_venues:
                more = self.head.venue_targets(Venue(venue))
                if not more:
                    log.warning("model_serve_on_ignored", model=self.name, venue=str(venue),
                                reason=f"a {self.family} model predicts only its trained target")
                targets += more
            if serve == "all":
                targets += self.head.all_targets(rings.keys())
            targets = _unique(targets)
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{self.path}: input spec unusable for {self.family}: {e!r}") from e
        check_capacity(self.path, self.spec, rings, klines)
        configured = set(rings.keys())
        self.targets = [t for t in targets if all(k in configured for k in self.head.book_keys(t))]
        left_out = [f"{t.venue.value}/{s}" for t in targets if t not in self.targets for s in t.symbols
                    if (t.venue, s) not in configured]
        self._no_target = ""
        if left_out:
            log.warning("model_instruments_not_configured", model=self.name, left_out=left_out)
            if not self.targets:
                self._no_target = (f"nothing to serve: {', '.join(left_out)} not configured "
                                   "(models.serve_on adds venues for a family)")
        self.rings = rings
        self.bus = bus
        self.clock = clock
        self.max_age_ns = int(max_input_age_s * NS_PER_S)
        if source is None:  # a WorkerSet shares one attached source among its workers
            source = RingWindowSource(rings, klines)
            source.attach(bus)
        self.source = source
        self._build = input_builder or model_inputs.build_input
        # one key for every worker whose inputs are the same function of the same windows (RingWindowSource.build)
        self._build_key = (self._build, json.dumps(self.spec, sort_keys=True, default=repr))
        self._health: dict[Key, BookState] = {}
        try:
            self._streams = {t: streams(self.spec, t.venue, t.symbol) for t in self.targets}
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{self.path}: input spec unusable for {self.family}: {e!r}") from e
        # stamp at the last build, its outcome ("" when it built), what the target then waited for
        self._last_seen: dict[Target, tuple[tuple[Any, ...], str, str | None]] = {}
        self._last_data: dict[Target, int] = {}
        self._last_error: dict[Target, str] = {}
        self._waiting: dict[Target, str] = {}  # what a target's next signal waits for, in words
        self._predict: Callable[[Target, int], Sequence[SignalFields]] | None = None
        self._busy = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._handoff: BoundedQueue[_Job] = BoundedQueue(1, "drop_newest")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{self.name}")
        self._stats = WorkerStats()
        bus.subscribe(BookHealth, self._on_health)
        log.info("model_worker_ready", model=self.name, family=self.family, version=self.version,
                 device=str(self.device), horizon=self.head.horizon,
                 targets=[_label(t) for t in self.targets])

    # -- loop side ------------------------------------------------------------------------------------
    def _on_health(self, ev: BookHealth) -> None:
        self._health[(ev.venue, ev.symbol)] = ev.state

    def _skip(self, reason: str, n: int = 1) -> None:
        self._stats.not_published[reason] += n

    def _not_live(self, target: Target) -> str:
        down = [(s, self._health.get((target.venue, s))) for s in target.symbols
                if self._health.get((target.venue, s)) is not BookState.LIVE]
        return "waiting for " + ", ".join(
            f"the {target.venue.value}/{s} book to be LIVE (it is {st.value if st else 'not reported yet'})"
            for s, st in down)

    def on_tick(self, ts_ns: int) -> None:
        """Grid tick (loop thread, after the rings were written up to ``ts_ns``). Never blocks.

        Every signal the worker could publish at this tick gets exactly one outcome: published, or counted
        under one reason, checked in this order: ``not_live`` (its book is not LIVE), ``input_error`` (the
        spec cannot be served), ``no_input`` (not enough history, or a gap in a window), ``unchanged`` (the
        newest input row is the one already used: a coarse grid or a kline between rows), ``stale`` (the
        newest input row is older than max_input_age_s at ``ts_ns``). Every outcome but a published or
        unchanged one also says, in ``waiting()``, what the target waits for.
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
                self._waiting[target] = self._not_live(target)
                continue
            sample, reason, wait = self._sample(target, live, ts_ns)
            if sample is not None:
                samples.append(sample)
            else:
                self._skip(reason, len(live))
            if wait is None and len(live) < len(target.symbols):
                wait = self._not_live(target)
            if wait is None:
                self._waiting.pop(target, None)
            else:
                self._waiting[target] = wait
        if samples:
            self._busy = True
            self._idle.clear()
            self._handoff.put_nowait(_Job(ts_ns, tuple(samples)))

    def _sample(self, target: Target, live: tuple[str, ...], ts_ns: int) -> tuple[_Sample | None, str, str | None]:
        """(the sample to run, or None with the reason it is not published, and what it waits for)."""
        stamp: tuple[Any, ...] = ()
        try:
            stamp = tuple(self.source.stamp(s) for s in self._streams[target])
            seen = self._last_seen.get(target)
            if seen is not None and seen[0] == stamp:  # nothing new: the build would repeat the last one
                return None, seen[1] or "unchanged", seen[2]
            venue = target.venue.value
            x = self.source.build(self._build_key, stamp, venue, target.symbol,
                                  lambda: self._build(self.spec, self.source, venue=venue, symbol=target.symbol))
        except Exception as e:  # a spec this code cannot serve: counted, logged once per message
            wait = f"input error: {e}"
            self._last_seen[target] = (stamp, "input_error", wait)
            if self._last_error.get(target) != str(e):
                self._last_error[target] = str(e)
                log.error("model_input_failed", model=self.name, venue=target.venue.value,
                          symbol=target.symbol, error=repr(e))
            return None, "input_error", wait
        if x is None:
            wait = explain_wait(self.spec, self.source, target.venue, target.symbol)
            self._last_seen[target] = (stamp, "no_input", wait)
            return None, "no_input", wait
        data_ns = self.source.newest_ns
        if self._last_data.get(target) == data_ns:
            self._last_seen[target] = (stamp, "", None)
            return None, "unchanged", None
        self._last_data[target] = data_ns
        age_ns = ts_ns - data_ns
        if age_ns > self.max_age_ns:
            wait = (f"waiting for a newer input: the newest was {age_ns / NS_PER_S:.1f} s old "
                    f"(max_input_age_s {self.max_age_ns / NS_PER_S:g})")
            self._last_seen[target] = (stamp, "", wait)
            return None, "stale", wait
        self._last_seen[target] = (stamp, "", None)
        return _Sample(target, live, x, data_ns, self.head.prepare(self.source, target)), "", None

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
                    result: _Result | Exception = await loop.run_in_executor(self._executor, self._infer, job)
                except Exception as e:  # a broken model must not take the bot down: counted, logged
                    result = e
                self._done(job, result)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def tick_inline(self, ts_ns: int) -> None:
        """The replay's tick: ``on_tick``, then its job at once on the caller's thread (no tick is skipped
        for a busy model, so a replay is deterministic; the replay clock stands still meanwhile)."""
        self.on_tick(ts_ns)
        if self._busy:
            job = self._handoff.get_nowait()
            try:
                result: _Result | Exception = self._infer(job)
            except Exception as e:
                result = e
            self._done(job, result)

    def _done(self, job: _Job, result: _Result | Exception) -> None:
        if isinstance(result, Exception):  # a broken model must not take the bot down: counted, logged
            self._stats.inference_errors += 1
            log.error("model_inference_failed", model=self.name, error=repr(result),
                      errors=self._stats.inference_errors)
        else:
            self._publish(job, result)
        self._busy = False
        self._idle.set()

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
    def stand_in(self, predict: Callable[[Target, int], Sequence[SignalFields]]) -> None:
        """Publish ``predict(target, tick_ns)`` in place of the model's output: the same ticks, inputs and
        gating, no forward pass (a replay's no-model baseline)."""
        self._predict = predict

    def _infer(self, job: _Job) -> _Result:
        start = self.clock.now_ns()
        if self._predict is not None:
            return _Result(start, start, tuple(tuple(self._predict(s.target, job.tick_ns)) for s in job.samples))
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for i, s in enumerate(job.samples):
            groups[batch_signature(s.x)].append(i)  # start-up windows may be shorter: same shapes batch together
        fields: list[tuple[SignalFields, ...]] = [() for _ in job.samples]
        with torch.inference_mode():
            for idx in groups.values():
                x = to_device(collate([job.samples[i].x for i in idx]), self.device)
                out = self.head.forward(self.model, x)
                for j, i in enumerate(idx):
                    s = job.samples[i]
                    fields[i] = tuple(self.head.decode(split_output(out, j, len(idx)), s.target, s.prepared))
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
            "waiting": self.waiting(),
        }

    def waiting(self) -> dict[str, str]:
        """What each target's next signal waits for (targets with nothing missing are left out)."""
        if self._no_target:
            return {"-": self._no_target}
        return {_label(t): msg for t, msg in self._waiting.items()}

    def status_line(self) -> str:
        """One line for a terminal: what it published, and the first thing it waits for."""
        st = self._stats
        line = f"{self.name} ({self.family}): published {st.published}"
        waits = self.waiting()
        if waits:
            (where, why), *more = waits.items()
            line += f"; {why}" if where == "-" else f"; {where}: {why}"
            if more:
                line += f" (+{len(more)} more)"
        return line

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _unique(targets: Iterable[Target]) -> list[Target]:
    return list(dict.fromkeys(targets))


def _label(t: Target) -> str:
    return f"{t.venue.value}/{'+'.join(t.symbols)}"
