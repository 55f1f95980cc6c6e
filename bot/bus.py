"""Typed event bus.

Inside the core, ``publish`` dispatches synchronously and in order to the handlers subscribed to the
event's exact type (then to ``Event`` catch-alls). At the async edges, ``BoundedQueue`` sits between the
core and slow consumers (recorder, model workers, UI) with an explicit overflow policy and a counter,
never an unbounded queue or a fire-and-forget task.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

import structlog

from bot.events import Event

E = TypeVar("E", bound=Event)
T = TypeVar("T")
log = structlog.get_logger(__name__)


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[Callable[[Event], None]]] = defaultdict(list)
        self._resolved: dict[type[Event], tuple[Callable[[Event], None], ...]] = {}
        self.published = 0
        self.handler_errors = 0

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        """Call ``handler`` for every published event of ``event_type`` (subclasses included)."""
        self._handlers[event_type].append(handler)  # type: ignore[arg-type]
        self._resolved.clear()

    def unsubscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        """Stop calling ``handler`` for ``event_type`` (unknown handlers are ignored)."""
        handlers = self._handlers.get(event_type, [])
        if handler in handlers:
            handlers.remove(handler)
            self._resolved.clear()

    def publish(self, event: Event) -> None:
        self.published += 1
        cls = type(event)
        handlers = self._resolved.get(cls)
        if handlers is None:
            handlers = tuple(h for base in cls.__mro__ for h in self._handlers.get(base, ()))
            self._resolved[cls] = handlers
        for h in handlers:
            try:
                h(event)
            except Exception:
                # One broken consumer must not starve the others of market data; it is counted and logged.
                self.handler_errors += 1
                log.exception("bus_handler_failed", event_type=cls.__name__, handler=getattr(h, "__qualname__", h))


class BoundedQueue(Generic[T]):
    """An asyncio queue with a fixed capacity and an explicit overflow policy.

    ``drop_oldest`` keeps the newest items (market data for a slow UI); ``drop_newest`` refuses new
    ones. Either way ``dropped`` counts what was lost.
    """

    def __init__(self, maxsize: int, policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest") -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self.policy = policy
        self.dropped = 0
        self._items: deque[T] = deque()
        self._ready = asyncio.Event()

    def put_nowait(self, item: T) -> bool:
        """Enqueue without waiting; returns False when the item (or the oldest one) was dropped."""
        ok = True
        if len(self._items) >= self.maxsize:
            self.dropped += 1
            ok = False
            if self.policy == "drop_newest":
                return False
            self._items.popleft()
        self._items.append(item)
        self._ready.set()
        return ok

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)
