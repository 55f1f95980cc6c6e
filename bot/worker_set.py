"""Every checkpoint in a directory: one ModelWorker (bot/workers.py) per loadable file, the ticks fanned out
to them, their stats gathered.

    WorkerSet.from_dir(dir, ...) ─► one ModelWorker per *.pt, *.pth, *.ckpt, sorted by name; the workers
        share one RingWindowSource (one input build per tick for workers of the same spec)
    WorkerSet.on_tick(ts) / tick_inline(ts) ─► every worker's, in order
    WorkerSet.run() ─► every worker's inference loop in one TaskGroup
    WorkerSet.stats() / status_lines() ─► every worker's, then the checkpoints skipped

The checkpoint directory and loading one file: bot/checkpoints.py. A file that is not a loadable
checkpoint is skipped with one warning line naming it and what is wrong.

Wiring (bot/app.py)::

    workers = await load_workers(settings, rings, klines, bus, clock)   # before the TaskGroup; may be empty
    ... in the TaskGroup: tg.create_task(workers.run())
    ... in grid_timer, right after rings.on_time(now): workers.on_tick(now)
    ... in the status: workers.stats() (JSON), workers.status_lines() (one line per worker, for a terminal)

A replay (replay/engine.py) calls ``workers.tick_inline(ts)`` instead: the same tick, the job run at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
import torch

from bot.bus import EventBus
from bot.checkpoints import CHECKPOINT_SUFFIXES, LoadedCheckpoint, checkpoint_dir, load_checkpoint_file
from bot.clock import Clock
from bot.config import BotSettings
from bot.events import Venue
from bot.grid_set import RingSet
from bot.klines import KlineStore
from bot.model_inputs import RingWindowSource
from bot.workers import ModelWorker, Serve
from models.checkpoint import CheckpointError

__all__ = ["WorkerSet", "load_workers"]

log = structlog.get_logger(__name__)


class WorkerSet:
    """The workers of every loadable checkpoint in a directory; bad checkpoints are logged and skipped."""

    def __init__(self, workers: Sequence[ModelWorker], failed: Mapping[str, str] | None = None,
                 source: RingWindowSource | None = None, directory: Path | None = None) -> None:
        self.workers = list(workers)
        self.failed = dict(failed or {})  # file name -> why it was skipped
        self.source = source
        self.directory = directory  # where the checkpoints were looked for (None: not from a directory)

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
        serve_on: Mapping[str, Sequence[Venue]] | None = None,
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
                                           device=device, serve=serve, serve_on=serve_on, source=source,
                                           loaded=pre))
            except Exception as e:  # CheckpointError, or whatever a corrupt file raises: skip that worker
                msg = str(e) if isinstance(e, CheckpointError) else f"{path}: cannot load: {type(e).__name__}: {e}"
                failed[path.name] = msg.splitlines()[0] if msg.strip() else f"{path}: cannot load"
                log.warning("model_checkpoint_skipped", path=str(path), error=failed[path.name])
        return cls(workers, failed, source, Path(models_dir))

    def on_tick(self, ts_ns: int) -> None:
        for w in self.workers:
            w.on_tick(ts_ns)

    def tick_inline(self, ts_ns: int) -> None:
        for w in self.workers:
            w.tick_inline(ts_ns)

    async def run(self) -> None:
        """Every worker's inference loop, until cancelled (returns at once when there are none)."""
        if not self.workers:
            return
        async with asyncio.TaskGroup() as tg:
            for w in self.workers:
                tg.create_task(w.run(), name=f"model-{w.name}")

    def stats(self) -> dict[str, Any]:
        return {"workers": [w.stats() for w in self.workers], "failed": dict(self.failed)}

    def status_lines(self) -> list[str]:
        """One line per worker (what it published, what it waits for), then one per skipped checkpoint."""
        return [w.status_line() for w in self.workers] + [f"skipped: {why}" for why in self.failed.values()]

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
    """The app's entry point: a WorkerSet for ``models_dir`` (default ``settings.models.dir``; its own default
    is the shipped checkpoints, ``SHIPPED_DIR``, see ``checkpoint_dir()``).

    Checkpoints are read and deserialised on a thread (torch.load of a large model takes a while); the
    workers are then built here, on the loop. ``settings.models.enabled = false`` gives an empty set.
    Start ``workers.run()`` in the TaskGroup and call ``workers.on_tick(now)`` after ``rings.on_time(now)``.
    """
    cfg = settings.models
    if not cfg.enabled:
        return WorkerSet([])
    torch.set_num_threads(cfg.torch_threads)
    directory = Path(models_dir) if models_dir is not None else checkpoint_dir(cfg.dir)
    files = WorkerSet.checkpoint_files(directory)

    def load_all() -> dict[Path, LoadedCheckpoint | CheckpointError]:
        out: dict[Path, LoadedCheckpoint | CheckpointError] = {}
        for p in files:
            try:
                out[p] = load_checkpoint_file(p, cfg.device)
            except CheckpointError as e:
                out[p] = e
            except Exception as e:  # whatever a corrupt file raises: that worker is skipped, not the bot
                out[p] = CheckpointError(f"{p}: cannot load: {type(e).__name__}: {e}")
        return out

    loaded = await asyncio.to_thread(load_all)
    workers = WorkerSet.from_dir(directory, rings, klines, bus, clock, max_input_age_s=cfg.max_input_age_s,
                                 device=cfg.device, serve=cfg.serve, serve_on=cfg.serve_on, loaded=loaded)
    log.info("model_workers_loaded", models_dir=str(directory), workers=len(workers), failed=len(workers.failed),
             threads=cfg.torch_threads)
    return workers
