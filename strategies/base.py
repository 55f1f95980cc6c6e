"""The strategy interface: pure, synchronous, clock-driven; no I/O, no wall clock, no tasks.

A strategy sees signals, book and bar events of the instruments it trades, and its own orders and fills,
nothing else, and answers each with zero or more intents (``bot.orders``: ``TargetPosition``,
``OrderIntent``, ``CancelIntent``). Time is the event clock: the ``ts_recv`` of what it is handed, or
``on_time(ts)`` from the engine's timer (live) or the replay driver. The engine (``bot.engine``) routes
events in, takes the intents out through the risk gate to execution, and the replay engine drives the very
same objects from a recording.

An intent that rests on a signal carries ``signal_ts = signal.ts_event``: the data time of the signal's
newest input, so the risk gate's ``max_signal_age_s`` bounds how old the data behind an order may be.

``position(venue, symbol)`` is this strategy's own position, kept from its own fills (and restored from the
state database after a restart by ``restore``), so two strategies on one symbol never trade each other's
inventory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import ClassVar

from bot.events import BookUpdate, KlineClosed, Side, Signal, Venue
from bot.orders import ZERO, Fill, Intent, OrderUpdate

Key = tuple[Venue, str]
NO_INTENTS: tuple[Intent, ...] = ()


class Strategy:
    """Base class. Subclasses set ``kind`` and override the ``on_*`` hooks they need."""

    kind: ClassVar[str] = ""

    def __init__(self, name: str, venue: Venue, symbols: Sequence[str], models: Sequence[str] = ()) -> None:
        self.name = name
        self.venue = venue
        self.symbols = tuple(symbols)
        self.models = tuple(models)  # checkpoint names (file stems) whose signals it reads; () = any
        self._positions: dict[Key, Decimal] = {}

    # -- routing (the engine asks) ---------------------------------------------------------------------

    def wants_signal(self, s: Signal) -> bool:
        return (not self.models or s.model in self.models) and s.venue == self.venue

    def trades(self, venue: Venue, symbol: str) -> bool:
        return venue == self.venue and symbol in self.symbols

    # -- hooks --------------------------------------------------------------------------------------------

    def on_signal(self, s: Signal) -> Sequence[Intent]:
        return NO_INTENTS

    def on_book(self, b: BookUpdate) -> Sequence[Intent]:
        return NO_INTENTS

    def on_bar(self, k: KlineClosed) -> Sequence[Intent]:
        return NO_INTENTS

    def on_time(self, ts_ns: int) -> Sequence[Intent]:
        return NO_INTENTS

    def on_order(self, o: OrderUpdate) -> Sequence[Intent]:
        return NO_INTENTS

    def on_fill(self, f: Fill) -> Sequence[Intent]:
        """Books the fill into ``position``; subclasses that override call ``super().on_fill(f)`` first."""
        key = (f.venue, f.symbol)
        signed = f.qty if f.side is Side.BUY else -f.qty
        self._positions[key] = self._positions.get(key, ZERO) + signed
        return NO_INTENTS

    # -- state ----------------------------------------------------------------------------------------

    def position(self, venue: Venue, symbol: str) -> Decimal:
        return self._positions.get((venue, symbol), ZERO)

    def restore(self, positions: Mapping[Key, Decimal]) -> None:
        """After a restart: this strategy's positions as the state database has them."""
        self._positions = {k: v for k, v in positions.items() if v != ZERO}
