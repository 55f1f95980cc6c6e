"""Baseline A of the shared performance anchors, for our benchmarks to report ratios comparable with theirs.

The anchors (``../shared/anchors``, README there) time the real Binance BTCUSDT L2 sessions through
nautilus_trader and hftbacktest, each beside "baseline A" in the same process, and report every engine as
a ratio to baseline A: (depth messages/s of the engine) / (depth messages/s of A), where A's depth messages
are its applied diffs plus snapshots. A benchmark of ours that runs the same baseline A on the same files,
in its own process and interleaved with our pipeline, gives a ratio that can be set beside theirs.

This module imports A from the anchors' own ``common.py`` (never a copy of it): ``load_common(dir)``.
``run_baseline_a`` runs it once on a list of files and returns its counts and times; ``ANCHOR_DATASETS``
names the anchors' datasets by their files (relative to the shared data directory), so a caller can tell
which of its cases are the anchors' own. Needs only ``orjson`` (which the bot's environment has).

    from anchors import anchors_dir, load_common, run_baseline_a
    common = load_common(anchors_dir())
    a = run_baseline_a(common, [data / "hftbacktest/examples/usdm/btcusdt_20240808.gz"], "usdm")
    print(a.depth_messages, a.cpu_s, a.depth_per_s)
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

HFT = "hftbacktest/examples"
ANCHOR_DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {  # name -> (market, files), as common.DATASETS
    "spot": ("spot", (f"{HFT}/spot/btcusdt_20240808.gz", f"{HFT}/spot/btcusdt_20240809.gz")),
    "usdm": ("usdm", (f"{HFT}/usdm/btcusdt_20240808.gz",)),
}


def anchors_dir(given: Path | None = None) -> Path | None:
    """``given``, or ``../shared/anchors`` beside the repository when it holds ``common.py``; else None."""
    path = given if given is not None else Path(__file__).resolve().parents[2] / "shared" / "anchors"
    return path if (path / "common.py").is_file() else None


def load_common(directory: Path) -> ModuleType:
    """The anchors' ``common.py`` from ``directory``, imported under its own name (``anchors_common``)."""
    path = directory / "common.py"
    spec = importlib.util.spec_from_file_location("anchors_common", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class BaselineA:
    """One run of baseline A: its counts (``common.baseline_replay``'s) and this process's CPU and wall time."""

    messages: int  # every line of the files
    depth_messages: int  # applied diffs + snapshots: the anchors' message count
    level_updates: int
    gaps: int
    cpu_s: float
    wall_s: float

    @property
    def depth_per_s(self) -> float:
        """Depth messages per CPU second (the anchors divide by wall time; on a quiet core they agree)."""
        return self.depth_messages / self.cpu_s


def run_baseline_a(common: ModuleType, files: list[Path], market: str) -> BaselineA:
    """Baseline A over ``files`` (hftbacktest gzip lines, in order) for ``market`` (``spot`` or ``usdm``),
    reading the files inside the timed region as the anchors do."""
    t0, w0 = time.process_time(), time.perf_counter()
    r = common.baseline_replay(common.iter_gz_lines([str(f) for f in files]), market)
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    return BaselineA(
        messages=r["messages"], depth_messages=r["applied_diffs"] + r["snapshots"], level_updates=r["levels_applied"],
        gaps=r["gaps"], cpu_s=cpu, wall_s=wall,
    )  # fmt: skip


def dataset_of(files: tuple[str, ...]) -> str | None:
    """The anchors' dataset made of exactly these files (relative to the shared data directory), or None."""
    return next((name for name, (_, fs) in ANCHOR_DATASETS.items() if fs == files), None)
