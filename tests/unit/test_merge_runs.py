"""``replay.sources.merge_runs``: streams of runs merged by receive time without unpacking them, against the
rule written out plainly (the stream with the earliest next record, ties to the first, gives every record up
to the others' next time, at least one), on random streams whose times step back, tie and go negative."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from bot.recording import Block
from replay.sources import merge_runs

pytestmark = pytest.mark.unit


def _plain(streams: Sequence[list[Block]]) -> list[tuple[tuple[int, ...], tuple[str, ...]]]:
    """The rule, one record at a time: (times, stream ids) of every slice it yields."""
    pos = [[0, 0] for _ in streams]  # run index, offset
    out: list[tuple[tuple[int, ...], tuple[str, ...]]] = []

    def nxt(i: int) -> int | None:
        r, o = pos[i]
        return None if r >= len(streams[i]) else int(streams[i][r][0][o])

    while True:
        times = [nxt(i) for i in range(len(streams))]
        live = [i for i, t in enumerate(times) if t is not None]
        if not live:
            return out
        best = min(live, key=lambda i: (times[i], i))
        others = [times[i] for i in live if i != best]
        run = streams[best][pos[best][0]]
        ts = list(run[0])
        off = pos[best][1]
        end = off + 1
        if others:
            limit = min(t for t in others if t is not None)
            upto = off + int(np.searchsorted(np.asarray(ts[off:]), limit, side="right"))
            end = max(off + 1, min(upto, len(ts)))
        else:
            end = len(ts)
        out.append((tuple(ts[off:end]), tuple(run[1][off:end])))
        if end < len(ts):
            pos[best][1] = end
        else:
            pos[best] = [pos[best][0] + 1, 0]


def _streams(seed: int) -> list[list[Block]]:
    r = np.random.default_rng(seed)
    out = []
    for s in range(int(r.integers(1, 5))):
        runs = []
        t = int(r.integers(-5, 5))
        for _ in range(int(r.integers(0, 6))):
            n = int(r.integers(1, 8))
            ts = (t + np.cumsum(r.integers(-2, 5, n))).tolist()
            t = max(ts)
            runs.append(Block(ts, [f"v{s}"] * n, ["ws"] * n, ["k"] * n, ["x"] * n))
        out.append(runs)
    return out


@pytest.mark.parametrize("seed", range(300))
def test_merge_runs_follows_the_rule(seed: int) -> None:
    streams = _streams(seed)
    its: list[Iterator[Block]] = [iter(s) for s in streams]
    got = [(tuple(b[0]), tuple(b[1])) for b in merge_runs(its)]
    assert got == _plain(streams)
