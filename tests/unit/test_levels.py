"""bot.venues.levels: the compiled level reader gives msgspec's floats bit for bit, or defers to msgspec.

The reference is msgspec with the wire types (``WireLevels``, lax mode), which the adapters used before
the compiled reader existed: every input must give the same levels or the same error.
"""

from __future__ import annotations

import random

import msgspec
import numpy as np
import pytest

from bot.venues.levels import _LEVELS, parse_levels, parse_pair

pytestmark = pytest.mark.unit

NUMBERS = [
    "61824.00000000", "0.32726000", "65140", "0.000231", "5", "10", "0", "0.0", "00.5", ".5", "5.", "1e3", "-1",
    " 1", "", "1.2.3", "123456789012345", "1234567890123456", "0.00000001", "999999999999999",
]  # fmt: skip
SHAPES = [
    '[["{p}","{q}"]]', '[["{p}","{q}"],["1","2"]]', '[["1","2"],["{p}","{q}"]]', '[["{p}",{q}]]',
    '[ ["{p}","{q}"]]', '[["{p}","{q}"],]', '[["{p}","{q}"]', '[["{p}","{q}","3"]]', '[["{p}"]]', '{{"p":"{p}"}}',
]  # fmt: skip


def _reference(raw: bytes) -> tuple[str, object]:
    try:
        return "ok", [list(level) for level in _LEVELS.decode(raw)]
    except msgspec.MsgspecError as e:
        return "error", str(e)


def _ours(raw: bytes) -> tuple[str, object]:
    try:
        levels = parse_levels(raw)
    except msgspec.MsgspecError as e:
        return "error", str(e)
    assert levels.dtype == np.float64
    assert levels.shape == (len(levels), 2)
    return "ok", levels.tolist()


@pytest.mark.parametrize("shape", SHAPES)
def test_every_number_form_in_every_shape_gives_the_reference_levels_or_error(shape: str) -> None:
    for p in NUMBERS:
        for q in NUMBERS:
            raw = shape.format(p=p, q=q).encode()
            assert _ours(raw) == _reference(raw), raw


def test_random_venue_shaped_levels_equal_the_reference_bit_for_bit() -> None:
    rnd = random.Random(7)
    for _ in range(5000):
        levels = []
        for _ in range(rnd.randint(0, 6)):
            decimals = rnd.randint(0, 8)
            mantissa = rnd.randint(1, 10 ** rnd.randint(1, 14 - decimals))
            price = str(mantissa) if decimals == 0 else f"{mantissa / 10**decimals:.{decimals}f}"
            size = f"{rnd.random() * 1000:.{rnd.randint(0, 8)}f}"
            levels.append(f'["{price}","{size}"]')
        raw = ("[" + ",".join(levels) + "]").encode()
        assert _ours(raw) == _reference(raw), raw


def test_pair_reads_both_sides_and_an_empty_side() -> None:
    b, a = parse_pair(msgspec.Raw(b'[["61824.00000000","0.32726000"],["61799.5","0"]]'), msgspec.Raw(b"[]"))

    assert b.tolist() == [[61824.0, 0.32726], [61799.5, 0.0]]
    assert a.shape == (0, 2)


def test_pair_with_one_malformed_side_raises_the_reference_error() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"Expected `float` > 0\.0"):
        parse_pair(msgspec.Raw(b'[["1","2"]]'), msgspec.Raw(b'[["0","2"]]'))
