"""The compiled router of recorded frames (bot.recording_kernels.route): the same answer as the dict lookup
of ``on_ws`` (the frame's text up to its first quote at or after byte 11) for every frame, odd ones too."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bot.recording_kernels import route

pytestmark = pytest.mark.unit

HEADS = [
    b'{"stream":"btcusdt@trade"',
    b'{"stream":"ethusdt@trade"',
    b'{"stream":"btcusdt@bookTicker"',
    b'{"stream":"x"',
]


def _frames(rng: random.Random) -> list[bytes]:
    pieces = [*HEADS, b'{"stream":"', b'{"stream":"btcusdt@trade', b'{"stream', b'"', b"", b'{"result":null}']
    tails = [b"", b'"', b',"data":{"e":"trade"}}', b"x", b'@depth"']
    return [rng.choice(pieces) + rng.choice(tails) + rng.choice(tails) for _ in range(5000)]


def test_route_equals_the_dict_lookup_of_on_ws_for_random_and_odd_frames() -> None:
    rng = random.Random(7)
    frames = _frames(rng)
    table = {h: i for i, h in enumerate(HEADS)}
    data = b"\n".join(frames) + b"\n"
    end = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    raw = np.concatenate(([0], end[:-1] + 1))
    bounds = np.cumsum([0, *map(len, HEADS)], dtype=np.int64)

    got = route(np.frombuffer(data, np.uint8), raw, end, 11, np.frombuffer(b"".join(HEADS), np.uint8), bounds)

    want = [table.get(f[: f.find(b'"', 11) + 1], -1) if f.find(b'"', 11) >= 0 else -1 for f in frames]
    assert got.tolist() == want
    assert {-1, 0, 1, 2, 3} <= set(want)  # every head, and frames that match none
