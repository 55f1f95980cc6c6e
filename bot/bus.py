"""Typed event bus.

Inside the core, ``publish`` dispatches synchronously and in order to the handlers subscribed to the
event's exact type (then to ``Event`` catch-alls). At the async edges, ``BoundedQueue`` sits between the
core and slow consumers (recorder, model workers, UI) with an explicit overflow policy and a counter,
never an unbounded queue or a fire-and-forget task.

**Batches.** A replay loop that applies a run of book updates in compiled code can hand them over as one
batch (``publish_batch``: ``BookUpdate`` runs as ``bot.events.BookUpdates``) instead of an event each, but
only to handlers that said they take batches (``subscribe(..., batch=, batch_ok=)``) and only while every
handler the events would reach says, for that book, that a batch handed over late is the same to it as
the events one by one when they happened (``batches``). "Late" means after the run, but before any other
event is published and before the replay clock ticks again: the publisher's side of the contract.
``wants`` tells a publisher whether an event would reach anyone at all.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Callable, Sized
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import structlog

from bot.events import Event, Venue

E = TypeVar("E", bound=Event)
T = TypeVar("T")
log = structlog.get_logger(__name__)

BatchOk = Callable[[Venue, str], bool]  # (venue, symbol) -> a batch for that book, handed over late, is fine now


class _BatchForm(NamedTuple):
    handle: Callable[[Any], None]  # takes the batch type of its event type (BookUpdate: BookUpdates)
    ok: BatchOk


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[Callable[[Event], None]]] = defaultdict(list)
        self._resolved: dict[type[Event], tuple[Callable[[Event], None], ...]] = {}
        self._batch_forms: dict[tuple[type[Event], Callable[[Event], None]], _BatchForm] = {}
        self._batch_resolved: dict[type[Event], tuple[_BatchForm, ...] | None] = {}
        self.published = 0  # events published (a batch counts its events)
        self.handler_errors = 0
        self.version = 0  # bumped by every (un)subscribe: what wants/batches answer may have changed

    def subscribe(
        self,
        event_type: type[E],
        handler: Callable[[E], None],
        *,
        batch: Callable[[Any], None] | None = None,
        batch_ok: BatchOk | None = None,
    ) -> None:
        """Call ``handler`` for every published event of ``event_type`` (subclasses included).

        ``batch`` and ``batch_ok``, for events about one book (see the module docstring): the handler's
        form for a batch of such events, and when that form may be used for a book.
        """
        if (batch is None) != (batch_ok is None):
            raise ValueError("batch and batch_ok go together")
        self._handlers[event_type].append(handler)  # type: ignore[arg-type]
        if batch is not None and batch_ok is not None:
            self._batch_forms[(event_type, handler)] = _BatchForm(batch, batch_ok)  # type: ignore[index]
        self._changed()

    def unsubscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        """Stop calling ``handler`` for ``event_type`` (unknown handlers are ignored)."""
        handlers = self._handlers.get(event_type, [])
        if handler in handlers:
            handlers.remove(handler)
            if handler not in handlers:
                self._batch_forms.pop((event_type, handler), None)
            self._changed()

    def _changed(self) -> None:
        self._resolved.clear()
        self._batch_resolved.clear()
        self.version += 1

    def _handlers_of(self, cls: type[Event]) -> tuple[Callable[[Event], None], ...]:
        handlers = self._resolved.get(cls)
        if handlers is None:
            handlers = tuple(h for base in cls.__mro__ for h in self._handlers.get(base, ()))
            self._resolved[cls] = handlers
        return handlers

    def _batch_forms_of(self, cls: type[Event]) -> tuple[_BatchForm, ...] | None:
        """The batch forms of every handler ``cls`` reaches, in dispatch order; None if one has none."""
        if cls in self._batch_resolved:
            return self._batch_resolved[cls]
        forms: list[_BatchForm] = []
        missing = False
        for base in cls.__mro__:
            for h in self._handlers.get(base, ()):
                form = self._batch_forms.get((base, h))
                if form is None:
                    missing = True
                else:
                    forms.append(form)
        out = None if missing else tuple(forms)
        self._batch_resolved[cls] = out
        return out

    def wants(self, event_type: type[Event]) -> bool:
        """Whether a published ``event_type`` reaches any handler (catch-alls included)."""
        return bool(self._handlers_of(event_type))

    def takes_batches(self, event_type: type[Event]) -> bool:
        """Whether every handler a published ``event_type`` reaches has a batch form (True when none)."""
        return self._batch_forms_of(event_type) is not None

    def batches(self, event_type: type[Event], venue: Venue, symbol: str) -> bool:
        """Whether a run of ``event_type`` about the book (``venue``, ``symbol``) may be published now as one
        batch (``publish_batch``): every handler it reaches takes batches and its ``batch_ok`` says so
        (True when it reaches none)."""
        forms = self._batch_forms_of(event_type)
        if forms is None:
            return False
        if len(forms) == 1:  # the common case (one LOB grid set): no generator
            return forms[0].ok(venue, symbol)
        return all(f.ok(venue, symbol) for f in forms)

    def publish_batch(self, event_type: type[Event], batch: Sized) -> None:
        """Hand a batch of ``event_type`` events to every handler's batch form, in subscription order (the
        publisher asked ``batches`` for each book in it first). A handler that raises is counted and
        logged, as in ``publish``."""
        self.published += len(batch)
        forms = self._batch_forms_of(event_type)
        if forms is None:
            raise ValueError(f"a handler of {event_type.__name__} takes no batches")
        for f in forms:
            try:
                f.handle(batch)
            except Exception:
                self.handler_errors += 1
                name = getattr(f.handle, "__qualname__", f.handle)
                log.exception("bus_handler_failed", event_type=event_type.__name__, handler=name)

    def unheard(self, event_type: type[Event], n: int) -> None:
        """Count ``n`` events of ``event_type`` that a publisher left out because no handler would receive
        them (``wants``): the same as publishing them."""
        if self.wants(event_type):
            raise ValueError(f"{event_type.__name__} has handlers: publish it")
        self.published += n

    def publish(self, event: Event) -> None:
        self.published += 1
        cls = type(event)
        handlers = self._resolved.get(cls)
        if handlers is None:
            handlers = self._handlers_of(cls)
        for h in handlers:
            try:
                h(event)
            except Exception:
                # One broken consumer must not starve the others of market data; it is counted and logged.
                self.handler_errors += 1
                log.exception("bus_handler_failed", event_type=cls.__name__, handler=getattr(h, "__qualname__", h))


def bus_of(publish: Callable[[Event], None]) -> EventBus | None:
    """The bus whose ``publish`` method ``publish`` is, or None (another callable: nothing can be asked)."""
    owner = getattr(publish, "__self__", None)
    return owner if isinstance(owner, EventBus) and publish == owner.publish else None


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
