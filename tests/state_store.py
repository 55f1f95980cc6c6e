"""A running ``StateStore`` for tests (unit and integration): open, attach to a bus, run the writer; on leaving,
wait until it has written everything, then stop and close it. One place, so the unit tests and the CLI tests
drive the store the same way the bot does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from bot.bus import EventBus
from bot.config import StateConfig
from bot.state import StateStore
from bot.state_rows import PersistedState


def _ignore(exc: Exception) -> None:
    """The default failure callback: the test looks at the database, not at the failures."""


@contextlib.asynccontextmanager
async def running_store(db: Path, on_failure: Callable[[Exception], None] = _ignore, *, idle_s: float = 10,
                        **cfg: Any) -> AsyncIterator[tuple[StateStore, EventBus]]:
    """A store on ``db`` (``cfg``: more ``StateConfig`` fields) writing what its bus carries; everything
    published inside the block is written (within ``idle_s``) before it closes."""
    store = StateStore(StateConfig(db=db, **cfg), on_failure)
    await store.open()
    bus = EventBus()
    store.attach(bus)
    task = asyncio.create_task(store.run())
    try:
        yield store, bus
        await asyncio.wait_for(store.wait_idle(), idle_s)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()


async def reopen(db: Path) -> PersistedState:
    """What a restart would restore from ``db`` (the store opened and closed again)."""
    store = StateStore(StateConfig(db=db), _ignore)
    try:
        return await store.open()
    finally:
        await store.close()
