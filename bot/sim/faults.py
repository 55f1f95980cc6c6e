"""Fault injection for the loopback exchange: a spec string, per-connection dice, the REST ban state.

A spec is a comma-separated list of ``kind=probability[:parameter]``::

    drop=0.01,dup=0.01,reorder=0.01,malformed=0.005,stall=0.002:3,disconnect=0.001,
    rest429=0.2:1,snapshot_fail=0.2,bybit_reset=0.002,restart=0.5,order_timeout=0.1:5,order_lost=0.05:5

Stream kinds are rolled once per **book diff message** sent on a connection (Binance ``depthUpdate``
diffs, Bybit ``orderbook`` deltas); trades, klines, tickers and synthesized snapshots are never touched,
so a test can reason about exactly which sequence numbers a client missed:

=============  ==================================================================================
drop           the message is not sent: the client sees a sequence gap
dup            the message is sent twice
reorder        the message is held back and sent right after the next message of the same topic
malformed      the first half of the text is sent: a frame that does not parse
stall:S        the connection goes silent for S seconds (default 3): nothing is sent, pings are
               still answered and the socket stays open; messages of that time are lost
disconnect     the TCP connection is cut (no close frame)
bybit_reset    Bybit only: a snapshot of the current book with ``u=1`` is sent instead of the delta,
               and this connection's following deltas of the topic are renumbered from 2
=============  ==================================================================================

REST kinds are rolled once per depth request (Binance ``/api/v3/depth``, ``/fapi/v1/depth``; Bybit
``/v5/market/orderbook``):

=============  ==================================================================================
snapshot_fail  HTTP 503 with the venue's JSON error body
rest429:R      Binance: HTTP 429 with ``Retry-After: R`` (default 1 s). A client that comes back
               before R seconds have passed gets 418 (IP banned) for 2*R seconds, on every endpoint.
               Bybit: HTTP 200 with ``retCode`` 10006 ("Too many visits!").
=============  ==================================================================================

Order kinds are rolled once per **signed new-order request** on Binance (spot ``POST /api/v3/order``,
USD-M ``POST /fapi/v1/order``), before the request is read; at most one fires per request:

================  ===============================================================================
order_timeout:S   the order is handled as usual (placed, or refused) and the answer is held S seconds
                  (default 5) before it is sent: the venue has the order, the client hears late (one
                  with a shorter timeout sees a timeout)
order_lost:S      the request is not acted on (no order): the answer is held S seconds (default 5),
                  then HTTP 503 with the venue's JSON error body (code -1001)
================  ===============================================================================

The venue kind is rolled once per **end of the recording** of each venue (``bot.sim.replay``):

=============  ==================================================================================
restart        instead of the seamless wrap, the venue restarts: every connection of that venue is
               closed with 1001 "going away", the replay starts over with fresh books, the first
               recording's update ids and timestamps (ids go back: every client must resync).
               ``restart=1`` restarts at every end, as the sim did before the seamless loop.
=============  ==================================================================================

Dice are deterministic: a connection's generator is seeded from ``(seed, venue, connection index)``
(the n-th websocket accepted by that venue), REST dice from ``(seed, venue)``, order dice from
``(seed, venue, "order")``, restart dice from ``(seed, venue, "restart")``, and exactly one number is
drawn per diff message, so the same seed and the same client behaviour give the same faults.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

from bot.errors import ConfigError

STREAM_KINDS = ("drop", "dup", "reorder", "malformed", "stall", "disconnect", "bybit_reset")
REST_KINDS = ("snapshot_fail", "rest429")
ORDER_KINDS = ("order_timeout", "order_lost")
VENUE_KINDS = ("restart",)
KINDS = STREAM_KINDS + REST_KINDS + ORDER_KINDS + VENUE_KINDS
_PARAM_KINDS = {"stall": "stall_s", "rest429": "retry_after_s", "order_timeout": "order_timeout_s",
                "order_lost": "order_lost_s"}  # fmt: skip


@dataclass(frozen=True)
class FaultSpec:
    drop: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    malformed: float = 0.0
    stall: float = 0.0
    disconnect: float = 0.0
    bybit_reset: float = 0.0
    snapshot_fail: float = 0.0
    rest429: float = 0.0
    order_timeout: float = 0.0
    order_lost: float = 0.0
    restart: float = 0.0
    stall_s: float = 3.0
    retry_after_s: float = 1.0
    order_timeout_s: float = 5.0
    order_lost_s: float = 5.0

    @classmethod
    def parse(cls, spec: str | FaultSpec | None) -> FaultSpec:
        """``"drop=0.01,stall=0.002:3"`` → FaultSpec; raises ConfigError naming the bad part."""
        if isinstance(spec, FaultSpec):
            return spec
        values: dict[str, float] = {}
        for part in (spec or "").split(","):
            part = part.strip()
            if not part:
                continue
            name, eq, rhs = part.partition("=")
            name = name.strip()
            if not eq:
                raise ConfigError(f"fault spec: {part!r} is not kind=probability")
            if name not in KINDS:
                raise ConfigError(f"fault spec: unknown fault kind {name!r}; known: {', '.join(KINDS)}")
            if name in values:
                raise ConfigError(f"fault spec: {name!r} given twice")
            prob_s, colon, param_s = rhs.partition(":")
            values[name] = _number(prob_s, f"probability of {name}")
            if not 0.0 <= values[name] <= 1.0:
                raise ConfigError(f"fault spec: probability of {name} must be within [0, 1], not {prob_s}")
            if colon:
                if name not in _PARAM_KINDS:
                    raise ConfigError(f"fault spec: {name} takes no parameter (got {part!r})")
                param = _number(param_s, f"parameter of {name}")
                if param <= 0:
                    raise ConfigError(f"fault spec: parameter of {name} must be > 0 seconds, not {param_s}")
                values[_PARAM_KINDS[name]] = param
        out = cls(**values)
        stream_total = sum(getattr(out, k) for k in STREAM_KINDS)
        if stream_total > 1.0:
            raise ConfigError(f"fault spec: stream fault probabilities add up to {stream_total:g} > 1")
        if out.snapshot_fail + out.rest429 > 1.0:
            raise ConfigError("fault spec: snapshot_fail + rest429 add up to more than 1")
        if out.order_timeout + out.order_lost > 1.0:
            raise ConfigError("fault spec: order_timeout + order_lost add up to more than 1")
        return out

    def __str__(self) -> str:
        parts = []
        for f in fields(self):
            if f.name in KINDS and getattr(self, f.name) > 0:
                p = f"{f.name}={getattr(self, f.name):g}"
                if f.name in _PARAM_KINDS:
                    p += f":{getattr(self, _PARAM_KINDS[f.name]):g}"
                parts.append(p)
        return ",".join(parts)

    @property
    def streams_active(self) -> bool:
        return any(getattr(self, k) > 0 for k in STREAM_KINDS)


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"fault spec: {what} is not a number: {text!r}") from None


class ConnDice:
    """One connection's fault generator: one draw per diff message, at most one fault per message."""

    def __init__(self, spec: FaultSpec, seed: int, venue: str, index: int, *, bybit: bool) -> None:
        self.rng = random.Random(f"{seed}/{venue}/{index}")
        kinds = [k for k in STREAM_KINDS if bybit or k != "bybit_reset"]
        self._table: list[tuple[float, str]] = []
        acc = 0.0
        for k in kinds:
            p = float(getattr(spec, k))
            if p > 0:
                acc += p
                self._table.append((acc, k))
        self.active = bool(self._table)

    def roll(self) -> str | None:
        if not self.active:
            return None
        r = self.rng.random()
        for bound, kind in self._table:
            if r < bound:
                return kind
        return None


class RestDice:
    """REST depth-request faults for one venue, plus the 429 → 418 ban state (per venue, like per IP)."""

    def __init__(self, spec: FaultSpec, seed: int, venue: str) -> None:
        self.spec = spec
        self.rng = random.Random(f"{seed}/{venue}/rest")
        self.retry_until = 0.0  # monotonic s: a 429 asked the client to wait until then
        self.banned_until = 0.0  # monotonic s: 418 for every request until then

    def roll(self) -> str | None:
        if self.spec.snapshot_fail <= 0 and self.spec.rest429 <= 0:
            return None
        r = self.rng.random()
        if r < self.spec.snapshot_fail:
            return "snapshot_fail"
        if r < self.spec.snapshot_fail + self.spec.rest429:
            return "rest429"
        return None


class OrderDice:
    """One venue's new-order faults: one draw per signed new-order request."""

    def __init__(self, spec: FaultSpec, seed: int, venue: str) -> None:
        self.spec = spec
        self.rng = random.Random(f"{seed}/{venue}/order")

    def roll(self) -> tuple[str, float] | None:
        """``(kind, hold seconds)`` of the fault that fires, or None."""
        s = self.spec
        if s.order_timeout <= 0 and s.order_lost <= 0:
            return None
        r = self.rng.random()
        if r < s.order_timeout:
            return "order_timeout", s.order_timeout_s
        if r < s.order_timeout + s.order_lost:
            return "order_lost", s.order_lost_s
        return None


class RestartDice:
    """One venue's restart fault: one draw per end of its recording."""

    def __init__(self, spec: FaultSpec, seed: int, venue: str) -> None:
        self.p = spec.restart
        self.rng = random.Random(f"{seed}/{venue}/restart")

    def roll(self) -> bool:
        if self.p <= 0:
            return False
        return self.p >= 1 or self.rng.random() < self.p
