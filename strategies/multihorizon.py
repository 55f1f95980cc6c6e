"""Multi-horizon strategy on the multi-scale model: direction probabilities at its direction horizon and
predicted log returns at several horizons (``value_names`` ``ret_5m``, ``ret_60m``, ``ret_240m``).

Entry in direction d (up or down) when P(d) > ``threshold``, P(d) > P(opposite), and at least
``min_agreement`` of the predicted returns have d's sign: one horizon's probability alone is noisy, the
horizons agreeing is the confirmation. Held until the opposite direction's probability passes the threshold
(a flip when it also qualifies and shorting is allowed, else flat) or the direction horizon (``hold_s``) has
passed in event time.

Sizing (quote notional, then / mid):
* ``fixed``: ``notional``.
* ``confidence``: ``notional * (P(d) - P(opposite))``, the probability edge over the opposite class.
* ``kelly``: a binary bet where the stationary class is a push: p = P(d) / (P(d) + P(opposite)); the payoff
  ratio b = W / L, with W (the gain if right) the mean |predicted return| of the horizons that agree with d
  and L (the loss if wrong) the mean |predicted return| of all horizons, the model's own scale of a move: all
  agreeing gives b = 1, strong disagreeing horizons lower it, weak ones raise it only a little (b <= N / k
  for k of N agreeing). Kelly f = p - (1 - p) / b; a non-positive f does not trade. Notional =
  ``kelly_fraction * f * capital``.
Every mode is capped by ``max_notional``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from bot.events import Signal
from bot.orders import Intent
from strategies.common import Directional, sign_of
from strategies.config import MultiHorizonConfig
from strategies.threshold import class_probs


def kelly_fraction(p_dir: float, p_opp: float, agree: Sequence[float], disagree: Sequence[float]) -> float:
    """The full Kelly fraction (see the module docstring); <= 0 means no bet."""
    if p_dir + p_opp <= 0 or not agree:
        return 0.0
    p = p_dir / (p_dir + p_opp)
    win = sum(abs(r) for r in agree) / len(agree)
    loss = (sum(abs(r) for r in agree) + sum(abs(r) for r in disagree)) / (len(agree) + len(disagree))
    if win <= 0 or loss <= 0:
        return 0.0
    b = win / loss
    return p - (1.0 - p) / b


class MultiHorizonStrategy(Directional[MultiHorizonConfig]):
    kind = "multihorizon"

    def decide(self, s: Signal, out: list[Intent]) -> Sequence[Intent]:
        probs = class_probs(s, 0)
        returns = [v for n, v in zip(s.value_names, s.values, strict=False) if n.startswith("ret_")]
        if probs is None or not returns:
            self.counts["bad_signal"] += 1
            return out
        p_down, p_up = probs
        thr = self.cfg.threshold
        d = 1 if p_up > thr and p_up >= p_down else -1 if p_down > thr and p_down > p_up else 0
        if d == 0:
            return out
        agree = [r for r in returns if sign_of(r) == d]
        disagree = [r for r in returns if sign_of(r) != d]
        agreement = len(agree) / len(returns)
        have = self.direction(s.symbol)
        p_dir, p_opp = (p_up, p_down) if d > 0 else (p_down, p_up)
        label = f"{'up' if d > 0 else 'down'} {p_dir:.3f} > {thr:g}, agreement {agreement:.2f}"
        qualifies = agreement >= self.cfg.min_agreement and (d > 0 or self.cfg.allow_short)
        if have == d and not self.unreached(s.symbol):
            return out
        if not qualifies:
            if have == -d:  # the opposite direction passed the threshold: the position's premise is gone
                out.append(self.exit(s.symbol, s.ts_recv, s.ts_event, f"{label}: flat"))
            else:
                self.counts["not_agreed" if agreement < self.cfg.min_agreement else "no_short"] += 1
            return out
        notional = self._notional(p_dir, p_opp, agree, disagree)
        if notional <= 0:
            self.counts["kelly_no_bet"] += 1
            if have == -d:
                out.append(self.exit(s.symbol, s.ts_recv, s.ts_event, f"{label}: flat (no edge)"))
            return out
        hold = self.hold_for(s.horizon)
        t = self.enter(s.symbol, d, notional, s.ts_recv, s.ts_event, hold, f"{label}, {self.cfg.sizing} {notional:.2f}")
        if t is not None:
            out.append(t)
        return out

    def _notional(self, p_dir: float, p_opp: float, agree: Sequence[float], disagree: Sequence[float]) -> Decimal:
        cfg = self.cfg
        if cfg.sizing == "kelly":
            f = kelly_fraction(p_dir, p_opp, agree, disagree)
            assert cfg.capital is not None  # the config refuses kelly without capital
            n = cfg.capital * Decimal(repr(cfg.kelly_fraction * f)) if f > 0 else Decimal(0)
        else:
            assert cfg.notional is not None  # the config refuses fixed / confidence without notional
            n = cfg.notional
            if cfg.sizing == "confidence":
                n = n * Decimal(repr(max(0.0, p_dir - p_opp)))
        if cfg.max_notional is not None and n > cfg.max_notional:
            n = cfg.max_notional
        return n
