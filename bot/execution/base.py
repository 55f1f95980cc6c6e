"""The execution interface: paper and live are two implementations of it.

Calls are synchronous and return at once; what happens to an order comes back as events published on the
bus (``OrderUpdate`` on every change of status, ``Fill`` per fill), in order, on the loop thread. The paper
matcher does everything inside these calls and ``on_time``; live execution puts the request on a bounded
queue that its own task sends through ccxt and publishes what the venue answers. Either way the caller
never awaits a venue, so strategies and the risk gate stay synchronous.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bot.events import Event
from bot.orders import OrderRequest, OrderUpdate

Publish = Callable[[Event], None]


class Execution(Protocol):
    def submit(self, request: OrderRequest) -> None:
        """Send a risk-checked order. Publishes ``OrderUpdate(status=NEW)`` before returning."""
        ...

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        """Ask to cancel an open order (unknown or closed ids are ignored). The ``OrderUpdate(CANCELLED)``
        comes when the venue has done it."""
        ...

    def on_time(self, ts_ns: int) -> None:
        """The event clock moved to ``ts_ns`` (paper: requests whose latency is over arrive now)."""
        ...

    def open_orders(self) -> list[OrderUpdate]:
        """Every order not yet filled, cancelled, rejected or expired, as last published."""
        ...
