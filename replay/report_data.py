"""Reading a replay run directory (what ``python -m bot replay ... --report DIR`` writes) for the report.

    DIR/run.json       the run's description: mode, sources, span, bar_s, starting balances, strategies,
                       walk-forward folds, feed and model summaries, the baseline subdirectory (or null)
    DIR/events.jsonl   one event a line, in publish order: ``{"type": <event class name>, **fields}``
                       (``msgspec.to_builtins`` of the bot's own event classes: Decimals as strings, enums
                       as their values, times int ns), plus ``{"type": "Price", ...}`` mids at every grid
                       tick / bar close

Each line is decoded straight into the bot's own classes (``bot.events``, ``bot.orders``), so a field
missing or of the wrong type is caught exactly as the classes define it. A line that is not JSON, has no
``type`` or does not match its class is damage: ``ReportError`` naming the file and line. A line of a type
the report does not read (a future event class) is counted under ``ignored_types`` and skipped.

``ts_recv`` is the replay clock: every time the report uses is an event's ``ts_recv``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from bot.errors import BotError
from bot.events import BookCrossed, BookHealth, Signal
from bot.orders import (
    EquitySnapshot,
    Fill,
    FundingRate,
    OrderDenied,
    OrderUpdate,
    RiskStateChanged,
    StrategyHealth,
    TargetPosition,
)
from replay.eventlog import LOGGED, Price

RUN_JSON = "run.json"
EVENTS = "events.jsonl"
MODES = ("replay", "walk_forward", "baseline")  # "baseline": the no-model run beside a replay, scored like one

Key = tuple[str, str]  # (venue value, symbol)


class ReportError(BotError):
    """A run directory that cannot be read: missing, no run.json, a damaged line. One line, exit 2."""


def _tagged(cls: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """``cls`` with ``type`` = its class name as the tag, so one decoder reads every line."""
    return msgspec.defstruct(cls.__name__, [], bases=(cls,), tag=cls.__name__, tag_field="type",
                             frozen=True, kw_only=True)


_TAGGED = {cls.__name__: _tagged(cls) for cls in LOGGED}  # what the engine's event log writes
_ANY: Any = _tagged(Price)
for _t in _TAGGED.values():
    _ANY = _ANY | _t
_DECODER = msgspec.json.Decoder(_ANY)
_HEAD = msgspec.json.Decoder(dict[str, Any])


@dataclass
class Events:
    """Every event of a run, by kind, in publish order."""

    prices: dict[Key, tuple[NDArray[np.int64], NDArray[np.float64]]] = field(default_factory=dict)
    signals: list[Signal] = field(default_factory=list)
    targets: list[TargetPosition] = field(default_factory=list)
    orders: list[OrderUpdate] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    denials: list[OrderDenied] = field(default_factory=list)
    risk_states: list[RiskStateChanged] = field(default_factory=list)
    strategy_health: list[StrategyHealth] = field(default_factory=list)
    book_health: list[BookHealth] = field(default_factory=list)
    book_crossed: list[BookCrossed] = field(default_factory=list)
    equity: list[EquitySnapshot] = field(default_factory=list)
    funding: list[FundingRate] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    ignored_types: Counter[str] = field(default_factory=Counter)


@dataclass
class Run:
    """One run directory, read: its ``run.json`` (checked) and its events."""

    name: str  # the directory's name (never its absolute path: reports must not differ between machines)
    meta: dict[str, Any]
    events: Events
    baseline: Run | None = None
    spans: list[tuple[int, int]] | None = None  # a baseline is scored on the spans of the run it sits in

    @property
    def mode(self) -> str:
        return str(self.meta["mode"])

    @property
    def bar_s(self) -> float:
        return float(self.meta["bar_s"])

    @property
    def periods_per_year(self) -> float:
        return 365 * 86400 / self.bar_s

    @property
    def span_ns(self) -> tuple[int, int]:
        a, b = self.meta["span_ns"]
        return int(a), int(b)

    def starting_equity(self) -> dict[str, float]:
        """Per venue account: the sum of its starting balances (the ledger holds quote-asset cash only)."""
        return {venue: float(sum((Decimal(str(v)) for v in balances.values()), Decimal(0)))
                for venue, balances in self.meta["accounts"].items()}

    def scope(self) -> list[tuple[int, int]]:
        """The spans the report covers: the whole span (replay), or each fold's test span (walk-forward)."""
        if self.spans is not None:
            return self.spans
        if self.mode == "walk_forward":
            return [(int(f["test_ns"][0]), int(f["test_ns"][1])) for f in self.meta["folds"]]
        return [self.span_ns]

    def in_scope(self, ts: int) -> bool:
        return any(a <= ts <= b for a, b in self.scope())

    def fold_of(self, ts: int) -> int:
        """The index of the span in scope holding ``ts`` (a walk-forward fold; 0 for a replay), -1 if none."""
        for i, (a, b) in enumerate(self.scope()):
            if a <= ts <= b:
                return i
        return -1


def load_run(run_dir: Path, *, with_baseline: bool = True) -> Run:
    """Read ``run_dir`` (and its baseline subdirectory, when run.json names one); ``ReportError`` if it
    cannot be read."""
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run directory")
    meta = _read_meta(run_dir)
    events = read_events(run_dir / EVENTS)
    run = Run(name=run_dir.name, meta=meta, events=events)
    base = meta.get("baseline")
    if with_baseline and base:
        sub = run_dir / str(base)
        if Path(str(base)).is_absolute() or ".." in Path(str(base)).parts:
            raise ReportError(f"{run_dir / RUN_JSON}: baseline must be a subdirectory name, got {base!r}")
        run.baseline = load_run(sub, with_baseline=False)
        run.baseline.spans = run.scope()
    return run


def _read_meta(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_JSON
    if not path.is_file():
        raise ReportError(f"{run_dir}: no {RUN_JSON} (not a replay run directory)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ReportError(f"{path}: expected a JSON object")
    problems = _check_meta(meta)
    if problems:
        raise ReportError(f"{path}: " + "; ".join(problems))
    return meta


def _check_meta(meta: dict[str, Any]) -> list[str]:
    problems = []
    if meta.get("version") != 1:
        problems.append(f"version must be 1, got {meta.get('version')!r}")
    if meta.get("mode") not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)}, got {meta.get('mode')!r}")
    span = meta.get("span_ns")
    if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span) and span[0] <= span[1]):
        problems.append(f"span_ns must be [first_ns, last_ns], got {span!r}")
    bar = meta.get("bar_s")
    if not (isinstance(bar, int | float) and not isinstance(bar, bool) and bar > 0):
        problems.append(f"bar_s must be a positive number, got {bar!r}")
    accounts = meta.get("accounts")
    if not isinstance(accounts, dict) or not all(isinstance(b, dict) for b in accounts.values()):
        problems.append("accounts must map venue -> {asset: balance}")
    else:
        try:
            [Decimal(str(v)) for b in accounts.values() for v in b.values()]
        except InvalidOperation:
            problems.append("accounts: a balance that is not a decimal number")
    strategies = meta.get("strategies")
    if not isinstance(strategies, list) or not all(isinstance(s, dict) and "name" in s for s in strategies):
        problems.append("strategies must be a list of objects with a name")
    if meta.get("mode") == "walk_forward":
        folds = meta.get("folds")
        if not isinstance(folds, list) or not folds or not all(
                isinstance(f, dict) and isinstance(f.get("test_ns"), list) and len(f["test_ns"]) == 2 for f in folds):
            problems.append("walk_forward needs folds with test_ns [start, end]")
    return problems


def read_events(path: Path) -> Events:
    """Every line of ``events.jsonl``, typed; ``ReportError`` naming the first damaged line."""
    if not path.is_file():
        raise ReportError(f"{path}: missing (the run wrote no events)")
    ev = Events()
    price_rows: dict[Key, list[tuple[int, float]]] = {}
    lists: dict[str, list[Any]] = {
        "Signal": ev.signals, "TargetPosition": ev.targets, "OrderUpdate": ev.orders, "Fill": ev.fills,
        "OrderDenied": ev.denials, "RiskStateChanged": ev.risk_states, "StrategyHealth": ev.strategy_health,
        "BookHealth": ev.book_health, "BookCrossed": ev.book_crossed, "EquitySnapshot": ev.equity,
        "FundingRate": ev.funding,
    }
    try:
        fh = path.open("rb")
    except OSError as e:
        raise ReportError(f"{path}: cannot be read ({e.strerror})") from e
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = _DECODER.decode(line)
            except msgspec.DecodeError as e:
                kind = _unknown_type(line)
                if kind is None:
                    raise ReportError(f"{path} line {lineno}: damaged event ({e})") from e
                ev.ignored_types[kind] += 1
                continue
            name = "Price" if isinstance(obj, Price) else type(obj).__name__
            ev.counts[name] += 1
            if isinstance(obj, Price):
                price_rows.setdefault((obj.venue.value, obj.symbol), []).append((obj.ts_recv, obj.mid))
            else:
                lists[name].append(obj)
    for key, rows in price_rows.items():
        rows.sort(key=lambda r: r[0])  # stable: equal times keep publish order (the last one wins)
        ts = np.array([r[0] for r in rows], dtype=np.int64)
        mid = np.array([r[1] for r in rows], dtype=np.float64)
        ev.prices[key] = (ts, mid)
    return ev


def _unknown_type(line: bytes) -> str | None:
    """The ``type`` of a well-formed JSON object whose type the report does not read, else None."""
    try:
        head = _HEAD.decode(line)
    except msgspec.DecodeError:
        return None
    kind = head.get("type")
    if isinstance(kind, str) and kind not in _TAGGED and kind != "Price":
        return kind
    return None
