"""The loopback exchange's new-order fault kinds (``order_timeout``, ``order_lost``): spec and dice."""

from __future__ import annotations

import pytest

from bot.errors import ConfigError
from bot.sim.faults import FaultSpec, OrderDice


def test_order_kinds_parse_with_their_hold_and_print_back() -> None:
    spec = FaultSpec.parse("order_timeout=0.25:3,order_lost=0.5")
    assert (spec.order_timeout, spec.order_timeout_s, spec.order_lost, spec.order_lost_s) == (0.25, 3.0, 0.5, 5.0)
    assert FaultSpec.parse(str(spec)) == spec
    assert not spec.streams_active


@pytest.mark.parametrize("bad", ["order_timeout=0.6,order_lost=0.6", "order_lost=1:0", "order_timeout=1:x"])
def test_bad_order_specs_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        FaultSpec.parse(bad)


def test_order_dice_are_deterministic_per_seed_and_venue() -> None:
    spec = FaultSpec.parse("order_timeout=0.3:2,order_lost=0.3:4")
    one, two = OrderDice(spec, 7, "binance_spot"), OrderDice(spec, 7, "binance_spot")
    rolls = [one.roll() for _ in range(200)]
    assert rolls == [two.roll() for _ in range(200)]
    assert rolls != [OrderDice(spec, 7, "binance_usdm").roll() for _ in range(200)]
    assert set(rolls) == {("order_timeout", 2.0), ("order_lost", 4.0), None}
    assert OrderDice(FaultSpec.parse("drop=0.5"), 7, "binance_spot").roll() is None
    always = OrderDice(FaultSpec.parse("order_lost=1"), 1, "binance_spot")
    assert all(always.roll() == ("order_lost", 5.0) for _ in range(50))
