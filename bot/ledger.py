"""The ledger: cash, positions, realised and unrealised PnL, fees and funding per venue account.

Pure bookkeeping (no I/O, no clock): paper execution feeds it its own ``Fill`` events, live execution will
feed it the venue's. Everything is ``Decimal`` and exact: a position keeps its *cost basis* (the entry
notional of the open quantity, unsigned) rather than a rounded average, so a position closed in full
realises exactly ``exit notional - entry notional`` and the equity identity holds to the last digit.

Two kinds of account, by venue (``Venue.market``):

* **spot**: cash is the quote asset (USDT). A buy pays ``qty * price + fee``, a sell receives
  ``qty * price - fee``; the position is the base asset held and is worth ``qty * mark``.
* **perpetual** (linear, USDT-margined): cash moves only by realised PnL, fees and funding; a position is
  worth ``qty * (mark - avg_price)`` (= ``qty * mark - signed cost``).

At every moment ``equity(venue) == cash(venue) + sum(position values)`` exactly (that is how ``equity``
is computed; the tests check it against hand-computed figures). A position never marked is valued at its
own average entry (unrealised 0). Average entry is weighted on increases and unchanged on reductions;
reductions realise PnL; a fill through zero realises the old side and opens the rest at the fill price.
``realized_pnl`` is after fees and funding (as ``PositionSnapshot`` says); ``fees`` and ``funding`` in a
snapshot are amounts paid (positive = paid, negative = rebates / funding received).

Only quote-asset (USDT) cash is held; a fill whose symbol is quoted in anything else is refused with a
``ValueError`` naming it (there is no conversion rate to value it with); so is a fee in any other asset
than the quote (paper fees are; live fees in BNB or in the coin bought are not supported yet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot.events import Side, Venue
from bot.orders import ZERO, EquitySnapshot, Fill, FundingRate, PositionSnapshot

# Longest first, so FDUSD wins over USD-anything and BTCUSDT is quoted in USDT, not in ...T.
QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USDE", "DAI", "BTC", "ETH", "BNB", "EUR", "TRY")
ACCOUNT_QUOTE = "USDT"


def split_symbol(symbol: str) -> tuple[str, str]:
    """``BTCUSDT`` -> ``("BTC", "USDT")``: the one place symbols are split into base and quote asset."""
    for quote in sorted(QUOTE_ASSETS, key=len, reverse=True):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    raise ValueError(f"symbol {symbol!r}: no known quote asset (known: {', '.join(QUOTE_ASSETS)})")


def quote_asset(symbol: str) -> str:
    return split_symbol(symbol)[1]


def to_decimal(x: float | Decimal) -> Decimal:
    """A float market price as the decimal it was written as (shortest repr), never its binary expansion."""
    return x if isinstance(x, Decimal) else Decimal(repr(x))


@dataclass
class _Position:
    qty: Decimal = ZERO  # signed base quantity
    cost: Decimal = ZERO  # entry notional of |qty| (unsigned); avg_price = cost / |qty|
    realized: Decimal = ZERO  # trading PnL - fees - funding
    fees: Decimal = ZERO  # quote asset
    funding: Decimal = ZERO  # paid (positive) or received (negative)
    mark: Decimal | None = None

    @property
    def avg_price(self) -> Decimal:
        return self.cost / abs(self.qty) if self.qty else ZERO

    def signed_cost(self) -> Decimal:
        return self.cost if self.qty > 0 else -self.cost

    def marked(self) -> Decimal:
        """``qty * mark`` (the average entry standing in for a mark never seen)."""
        if self.mark is None:
            return self.signed_cost()
        return self.qty * self.mark

    def unrealized(self) -> Decimal:
        return self.marked() - self.signed_cost()


class Ledger:
    """Cash and positions of several venue accounts; see the module docstring for the rules."""

    def __init__(self, balances: Mapping[Venue, Mapping[str, Decimal]]) -> None:
        self._start: dict[Venue, Decimal] = {}
        for venue, assets in balances.items():
            other = sorted(a for a, v in assets.items() if a != ACCOUNT_QUOTE and v)
            if other:
                raise ValueError(f"{venue.value}: only {ACCOUNT_QUOTE} starting balances are supported, got {other}")
            self._start[venue] = Decimal(assets.get(ACCOUNT_QUOTE, ZERO))
        self._cash: dict[Venue, Decimal] = dict(self._start)
        self._pos: dict[tuple[Venue, str], _Position] = {}
        self._funding_due: dict[tuple[Venue, str, int], FundingRate] = {}  # latest rate per funding time
        self._funding_done: set[tuple[Venue, str, int]] = set()
        # (venue, symbol) -> the (best bid, best ask) of its latest mark not converted yet (``on_mid``)
        self._tops: dict[tuple[Venue, str], tuple[float, float]] = {}
        self.fills = 0

    # -- input --------------------------------------------------------------------------------------------

    def on_fill(self, f: Fill) -> None:
        _, quote = split_symbol(f.symbol)
        if quote != ACCOUNT_QUOTE:
            raise ValueError(f"{f.venue.value} {f.symbol}: quoted in {quote}; the ledger holds {ACCOUNT_QUOTE} only")
        if f.fee_asset != quote:
            raise ValueError(f"fill {f.trade_id}: fee in {f.fee_asset!r}; only fees in the quote asset ({quote})")
        if f.qty <= 0 or f.price <= 0:
            raise ValueError(f"fill {f.trade_id}: qty and price must be > 0 (got {f.qty} @ {f.price})")
        p = self._position(f.venue, f.symbol)
        signed = f.qty if f.side is Side.BUY else -f.qty
        trading = self._trade(p, signed, f.price)
        p.fees += f.fee
        p.realized += trading - f.fee
        if f.venue.market == "spot":
            self._cash[f.venue] = self.cash(f.venue) - signed * f.price - f.fee
        else:
            self._cash[f.venue] = self.cash(f.venue) + trading - f.fee
        self.fills += 1

    @staticmethod
    def _trade(p: _Position, signed: Decimal, price: Decimal) -> Decimal:
        """Apply a signed quantity at ``price`` to the position; returns the trading PnL it realises."""
        realized = ZERO
        if p.qty and (p.qty > 0) != (signed > 0):  # a reduction (maybe through zero)
            closed = min(abs(signed), abs(p.qty))
            cost_closed = p.cost if closed == abs(p.qty) else p.cost * closed / abs(p.qty)
            direction = 1 if p.qty > 0 else -1
            realized = direction * (closed * price - cost_closed)
            p.cost -= cost_closed
            p.qty += closed if p.qty < 0 else -closed
            signed += closed if signed < 0 else -closed  # what is left opens the new side
        if signed:
            p.cost += abs(signed) * price
            p.qty += signed
        if not p.qty:
            p.cost = ZERO
        return realized

    def on_mark(self, venue: Venue, symbol: str, price: float | Decimal) -> None:
        """The mark (mid from ``BookUpdate``) that positions are valued at."""
        self._tops.pop((venue, symbol), None)
        self._position(venue, symbol).mark = to_decimal(price)

    def on_mid(self, venue: Venue, symbol: str, bid_px: float, ask_px: float) -> None:
        """``on_mark`` of the exact mid of a top of book's two printed prices, ``(Decimal(repr(bid)) +
        Decimal(repr(ask))) / 2``, converted only when something reads a mark (a book moves many times
        between two reads): every reader sees the very Decimal ``on_mark`` would have set."""
        key = (venue, symbol)
        if key not in self._pos:
            self._pos[key] = _Position()  # the position exists from its first mark on, as with on_mark
        self._tops[key] = (bid_px, ask_px)

    def _settle_marks(self) -> None:
        """Convert the marks ``on_mid`` left as prices (every method that reads a mark calls this first)."""
        tops = self._tops
        for key, (bid, ask) in tops.items():
            self._pos[key].mark = (Decimal(repr(bid)) + Decimal(repr(ask))) / 2
        tops.clear()

    def on_funding(self, fr: FundingRate, ts_ns: int) -> None:
        """Remember ``fr`` (the venues announce the rate for the next funding time, again and again); then
        settle every funding time ``<= ts_ns`` not settled yet, each once, with the last rate heard for it:
        the position held then pays ``qty * mark * rate`` (longs pay when rate > 0)."""
        if fr.venue.market == "spot":
            raise ValueError(f"{fr.venue.value} {fr.symbol}: funding on a spot account")
        key = (fr.venue, fr.symbol, fr.funding_time_ns)
        if key not in self._funding_done:
            self._funding_due[key] = fr
        self.settle_funding(ts_ns, fr.venue)

    def settle_funding(self, ts_ns: int, venue: Venue | None = None) -> None:
        """Settle the remembered funding times that are due by ``ts_ns`` (for callers with a timer), of one
        venue or all. ``ts_ns`` is in the venue's clock (its funding times are): each venue's own."""
        if self._tops:
            self._settle_marks()
        for key in sorted(k for k in self._funding_due if k[2] <= ts_ns and (venue is None or k[0] is venue)):
            fr = self._funding_due.pop(key)
            self._funding_done.add(key)
            p = self._pos.get((fr.venue, fr.symbol))
            if p is None or not p.qty:
                continue
            mark = fr.mark_price if fr.mark_price is not None else (p.mark if p.mark is not None else p.avg_price)
            paid = p.qty * mark * fr.rate
            p.funding += paid
            p.realized -= paid
            self._cash[fr.venue] = self.cash(fr.venue) - paid

    # -- reading ------------------------------------------------------------------------------------------

    def _position(self, venue: Venue, symbol: str) -> _Position:
        p = self._pos.get((venue, symbol))
        if p is None:
            p = self._pos[(venue, symbol)] = _Position()
        return p

    def _get(self, venue: Venue, symbol: str) -> _Position:
        return self._pos.get((venue, symbol)) or _Position()

    def position(self, venue: Venue, symbol: str) -> Decimal:
        return self._get(venue, symbol).qty

    def avg_price(self, venue: Venue, symbol: str) -> Decimal:
        return self._get(venue, symbol).avg_price

    def mark(self, venue: Venue, symbol: str) -> Decimal | None:
        if self._tops:
            self._settle_marks()
        return self._get(venue, symbol).mark

    def realized_pnl(self, venue: Venue, symbol: str) -> Decimal:
        return self._get(venue, symbol).realized

    def unrealized_pnl(self, venue: Venue, symbol: str) -> Decimal:
        if self._tops:
            self._settle_marks()
        return self._get(venue, symbol).unrealized()

    def cash(self, venue: Venue) -> Decimal:
        return self._cash.get(venue, ZERO)

    def _value(self, venue: Venue, p: _Position) -> Decimal:
        return p.marked() if venue.market == "spot" else p.unrealized()

    def equity(self, venue: Venue | None = None) -> Decimal:
        """``cash + sum(position values)`` of one account, or of all of them together (venue None)."""
        if self._tops:
            self._settle_marks()
        venues = sorted(set(self._cash) | {v for v, _ in self._pos}) if venue is None else [venue]
        total = ZERO
        for v in venues:
            total += self.cash(v)
            for (pv, _), p in self._pos.items():
                if pv == v:
                    total += self._value(v, p)
        return total

    def gross_exposure(self) -> Decimal:
        """``sum(|qty| * mark)`` over every position (the average entry where no mark was seen)."""
        if self._tops:
            self._settle_marks()
        return sum((abs(p.marked()) for p in self._pos.values()), ZERO)

    def _snapshot(self, venue: Venue, symbol: str, p: _Position) -> PositionSnapshot:
        return PositionSnapshot(
            venue=venue,
            symbol=symbol,
            qty=p.qty,
            avg_price=p.avg_price,
            realized_pnl=p.realized,
            mark=p.mark,
            unrealized_pnl=p.unrealized(),
        )

    def positions(self) -> list[PositionSnapshot]:
        if self._tops:
            self._settle_marks()
        return [self._snapshot(v, s, p) for (v, s), p in sorted(self._pos.items())]

    def snapshot(self, venue: Venue, ts_ns: int) -> EquitySnapshot:
        if self._tops:
            self._settle_marks()
        mine = sorted((s, p) for (v, s), p in self._pos.items() if v == venue)
        return EquitySnapshot(
            ts_event=ts_ns,
            ts_recv=ts_ns,
            venue=venue,
            quote=ACCOUNT_QUOTE,
            cash=self.cash(venue),
            equity=self.equity(venue),
            fees=sum((p.fees for _, p in mine), ZERO),
            funding=sum((p.funding for _, p in mine), ZERO),
            positions=tuple(self._snapshot(venue, s, p) for s, p in mine),
        )

    # -- persistence --------------------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """The whole state as JSON-ready data (Decimals as strings); ``Ledger.load`` reads it back."""
        if self._tops:
            self._settle_marks()
        return {
            "start": {v.value: str(x) for v, x in sorted(self._start.items())},
            "cash": {v.value: str(x) for v, x in sorted(self._cash.items())},
            "positions": [
                {
                    "venue": v.value,
                    "symbol": s,
                    "qty": str(p.qty),
                    "cost": str(p.cost),
                    "realized": str(p.realized),
                    "fees": str(p.fees),
                    "funding": str(p.funding),
                    "mark": None if p.mark is None else str(p.mark),
                }
                for (v, s), p in sorted(self._pos.items())
            ],
            "funding_due": [
                {
                    "venue": fr.venue.value,
                    "symbol": fr.symbol,
                    "rate": str(fr.rate),
                    "funding_time_ns": fr.funding_time_ns,
                    "mark_price": None if fr.mark_price is None else str(fr.mark_price),
                    "ts": fr.ts_recv,
                }
                for _, fr in sorted(self._funding_due.items())
            ],
            "funding_done": sorted([v.value, s, t] for v, s, t in self._funding_done),
            "fills": self.fills,
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Ledger:
        try:
            ledger = cls({Venue(v): {ACCOUNT_QUOTE: Decimal(x)} for v, x in data["start"].items()})
            ledger._cash = {Venue(v): Decimal(x) for v, x in data["cash"].items()}
            for d in data["positions"]:
                mark = d["mark"]
                ledger._pos[(Venue(d["venue"]), d["symbol"])] = _Position(
                    qty=Decimal(d["qty"]),
                    cost=Decimal(d["cost"]),
                    realized=Decimal(d["realized"]),
                    fees=Decimal(d["fees"]),
                    funding=Decimal(d["funding"]),
                    mark=None if mark is None else Decimal(mark),
                )
            for d in data["funding_due"]:
                fr = FundingRate(
                    ts_event=d["ts"],
                    ts_recv=d["ts"],
                    venue=Venue(d["venue"]),
                    symbol=d["symbol"],
                    rate=Decimal(d["rate"]),
                    funding_time_ns=int(d["funding_time_ns"]),
                    mark_price=None if d["mark_price"] is None else Decimal(d["mark_price"]),
                )
                ledger._funding_due[(fr.venue, fr.symbol, fr.funding_time_ns)] = fr
            ledger._funding_done = {(Venue(v), s, int(t)) for v, s, t in data["funding_done"]}
            ledger.fills = int(data["fills"])
        except (KeyError, TypeError, ValueError, ArithmeticError) as e:
            raise ValueError(f"ledger state does not load: {e!r}") from e
        return ledger

    @classmethod
    def replay(cls, balances: Mapping[Venue, Mapping[str, Decimal]], fills: Sequence[Fill]) -> Ledger:
        """A ledger rebuilt from persisted fills, re-applied in order (marks and funding are not in fills)."""
        ledger = cls(balances)
        for f in fills:
            ledger.on_fill(f)
        return ledger
