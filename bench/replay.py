"""Replay benchmark: the whole trading path over real L2 sessions, beside the anchors' baseline A.

    python bench/replay.py [--shared DIR] [--anchors DIR] [--repeat N] [--skip-memory]

Three measurements, each printed as a table:

1. **Full path, no models** (the figure to set beside nautilus_trader and hftbacktest in
   ``../shared/anchors``): ``replay.engine`` with ``[models] enabled = false`` over the anchors' own
   datasets (Binance spot BTCUSDT 2024-08-08 + 08-09 as one stream, USD-M BTCUSDT 2024-08-08), converted
   to native recordings first (not timed): recording reader, venue adapter, books and sync checks, bus,
   LOB rings, kline store, the engine, risk gate and paper matcher on every book update, the ledger's
   marks, equity snapshots and the event log on disk, grid ticks. No strategy trades (none is
   configured), as nautilus' no-op strategy. In the same process, interleaved repetition by repetition,
   the anchors' **baseline A** (``common.baseline_replay``: gzip lines, orjson, dict book with an
   incremental best bid/ask) over the same files. Ratio = baseline A's CPU time / ours (both
   ``time.process_time``, best of ``--repeat``), the unit of the anchors' README (nautilus, logging
   bypassed: 2.2-2.7x; hftbacktest: 15-26x on this kind of machine).
2. **Full replay with every model family loaded** (shipped checkpoints, inline inference on CPU, one torch
   thread) over the embedded demo recording (nine books on four markets) and over the spot session:
   "x real time per venue-symbol" = (sum over books of the seconds their session spans) / CPU seconds.
3. **Peak memory** (``ru_maxrss`` of a fresh process each) of a replay with models over the first tenth
   of the spot session and over all of it: flat is the target (everything is streamed; the event log is
   written as it goes).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.config import BotSettings, ModelsConfig, load_settings  # noqa: E402
from bot.importers import convert  # noqa: E402
from bot.recording import iter_records, read_manifest  # noqa: E402
from bot.recording_writer import RecordingWriter  # noqa: E402
from replay.engine import ReplayRequest, run_replay  # noqa: E402
from replay.sources import open_sources  # noqa: E402

HFT = "hftbacktest/examples"
DATASETS = {  # the anchors' datasets (shared/anchors/common.py DATASETS)
    "spot": ("binance_spot", [f"{HFT}/spot/btcusdt_20240808.gz", f"{HFT}/spot/btcusdt_20240809.gz"]),
    "usdm": ("binance_usdm", [f"{HFT}/usdm/btcusdt_20240808.gz"]),
}


def _quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def native(shared: Path, name: str, work: Path) -> Path:
    venue, files = DATASETS[name]
    out = work / name
    if not out.exists():
        convert("hftbacktest", [shared / f for f in files], out, venue=venue)  # type: ignore[arg-type]
    return out


def ours(recording: Path, settings: BotSettings, work: Path) -> tuple[float, dict[str, Any]]:
    gc.collect()
    req = ReplayRequest(open_sources([str(recording)]), work / "out")
    t0 = time.process_time()
    summary = run_replay(settings, req)
    return time.process_time() - t0, summary


def baseline_a(common: Any, shared: Path, name: str) -> tuple[float, int]:
    market = {"spot": "spot", "usdm": "usdm"}[name]
    paths = [str(shared / f) for f in DATASETS[name][1]]
    gc.collect()
    t0 = time.process_time()
    r = common.baseline_replay(common.iter_gz_lines(paths), market)
    return time.process_time() - t0, int(r["depth_msgs"])


def full_path(args: argparse.Namespace, common: Any, work: Path) -> list[dict[str, Any]]:
    settings = BotSettings(models=ModelsConfig(enabled=False))
    rows = []
    for name in DATASETS:
        rec = native(args.shared, name, work)
        mine, base = [], []
        summary: dict[str, Any] = {}
        depth = 0
        for _ in range(args.repeat):
            t, summary = ours(rec, settings, work)
            mine.append(t)
            b, depth = baseline_a(common, args.shared, name)
            base.append(b)
        msgs = sum(summary["feed"]["messages"].values())
        rows.append({"dataset": name, "records": summary["records"], "venue_messages": msgs, "depth_msgs": depth,
                     "ours_s": min(mine), "baseline_a_s": min(base), "ratio": min(base) / min(mine),
                     "grid_ticks": summary["grid_ticks"], "events_logged": sum(summary["events"].values())})
    return rows


def book_seconds(recording: Path) -> float:
    """Sum over the books of the seconds their session spans (the manifest's sessions, else the whole)."""
    m = read_manifest(recording)
    sessions = m.get("sessions") or []
    if not sessions:
        files = m["files"]
        span = (max(f["last_ts_recv"] for f in files) - min(f["first_ts_recv"] for f in files)) / 1e9  # type: ignore[index,union-attr]
        return span * sum(len(s) for s in (m.get("symbols") or {}).values())  # type: ignore[union-attr]
    total = 0.0
    counts = {"binance_usdm ETHUSDT": 1, "binance_spot BTCUSDT": 1, "binance_usdm BTCUSDT": 1,
              "bybit_linear + bybit_spot": 6}  # the demo's sessions: books in each (PROVENANCE.md)
    for s in sessions:  # type: ignore[union-attr]
        n = next((c for k, c in counts.items() if str(s["name"]).startswith(k)), 1)
        total += (s["last_ts_recv"] - s["first_ts_recv"]) / 1e9 * n
    return total


def with_models(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    import torch

    from bot.sim.cli import DEMO_DIR

    settings = load_settings(REPO / "config.toml")
    torch.set_num_threads(1)
    rows = []
    for name, rec in (("demo (9 books)", DEMO_DIR / "recording"), ("spot BTC", native(args.shared, "spot", work))):
        times = []
        summary: dict[str, Any] = {}
        for _ in range(args.repeat):
            t, summary = ours(rec, settings, work)
            times.append(t)
        secs = book_seconds(rec)
        signals = summary["events"].get("Signal", 0)
        rows.append({"dataset": name, "book_seconds": round(secs, 1), "cpu_s": min(times),
                     "x_real_time_per_book": secs / min(times), "signals": signals,
                     "fills": summary["trading"]["fills"]})
    return rows


def _child(rec: str, out: str) -> None:  # a fresh process: its own peak RSS
    import resource

    _quiet()
    settings = load_settings(REPO / "config.toml")
    summary = run_replay(settings, ReplayRequest(open_sources([rec]), Path(out)))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": peak_kb / 1024, "records": summary["records"]}))


def memory(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    full = native(args.shared, "spot", work)
    recs = list(iter_records(full))
    short = work / "spot_tenth"
    if not short.exists():
        with RecordingWriter(short) as w:
            for r in recs[: len(recs) // 10]:
                w.write(r)
    rows = []
    for label, rec in (("first tenth", short), ("whole (10x)", full)):
        out = subprocess.run([sys.executable, __file__, "--child", str(rec), str(work / f"mem_{label[:5]}")],
                             capture_output=True, text=True, check=True)  # fmt: skip
        got = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"replay": label, **got})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    cells = [[f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    w = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w[i]) for i, k in enumerate(keys))]
    lines += ["  ".join(c[i].ljust(w[i]) for i in range(len(keys))) for c in cells]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--shared", type=Path, default=Path(os.environ.get("BOT_SHARED_DATA", REPO.parent / "shared/data")))
    p.add_argument("--anchors", type=Path, default=REPO.parent / "shared" / "anchors")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(*args.child)
        return 0
    _quiet()
    if not (args.anchors / "common.py").is_file():
        print(f"no anchors at {args.anchors} (common.py); pass --anchors DIR")
        return 2
    sys.path.insert(0, str(args.anchors))
    os.environ.setdefault("PERF_DATA_DIR", str(args.shared / HFT))
    import common  # the anchors' baseline A, imported from their folder, never copied

    from bot.book import warm_up

    warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("1. full path without models vs baseline A (CPU s, best of", args.repeat, ")")
        print(table(full_path(args, common, work)))
        print("\n2. full replay with every model family loaded (CPU, one torch thread)")
        print(table(with_models(args, work)))
        if not args.skip_memory:
            print("\n3. peak memory of a replay with models, fresh process each")
            print(table(memory(args, work)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
