"""Rebuild the embedded demo data (``bot/demo/recording``, ``bot/demo/klines``) from ``../shared/data``.

    python -m bot.demo.make_demo [--shared DIR]      # rewrite bot/demo/{recording,klines}
    python -m bot.demo.make_demo --check             # rebuild in a temp dir, compare bytes, exit 1 if different

The output is a pure function of the inputs (whose sha256 are pinned below and checked first) and of the
zstandard library: records go through the same importers as ``python -m bot import`` and are written at
zstd level 19 in one part. The sessions come from different days, so the recording is their
concatenation in receive-time order (ETH USD-M 2024-07-18, then BTC spot + USD-M 2024-08-08 interleaved,
then Bybit 2026-08-09); the manifest's ``sessions`` list says where each one starts and ends.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import heapq
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.demo import DEMO_DIR
from bot.errors import BotError, RecordingError
from bot.events import Venue
from bot.importers import import_cryptofeed, import_hftbacktest, slice_records
from bot.recording import Record
from bot.recording_writer import RecordingWriter

ZSTD_LEVEL = 19
KLINE_ROWS = 1500
USDM_BTC_SECONDS = 240.0  # the BTC USD-M file is cut to its first 4 minutes (size)


@dataclass(frozen=True)
class Session:
    name: str
    fmt: str  # hftbacktest | cryptofeed
    files: tuple[str, ...]  # paths under shared/data
    venue: Venue | None  # None: per connection (cryptofeed)
    seconds: float | None = None  # keep only the first N seconds of receive time


SESSIONS = (
    Session(
        "binance_usdm ETHUSDT 2024-07-18", "hftbacktest",
        ("hftbacktest/73bfa17/examples/usdm/ethusdt_20240718.gz",), Venue.BINANCE_USDM,
    ),
    Session(
        "binance_spot BTCUSDT 2024-08-08", "hftbacktest",
        ("hftbacktest/examples/spot/btcusdt_20240808.gz",), Venue.BINANCE_SPOT,
    ),
    Session(
        "binance_usdm BTCUSDT 2024-08-08", "hftbacktest",
        ("hftbacktest/examples/usdm/btcusdt_20240808.gz",), Venue.BINANCE_USDM, USDM_BTC_SECONDS,
    ),
    Session(
        "bybit_linear + bybit_spot 2026-08-09", "cryptofeed",
        ("cryptofeed/v3/sample_data/BYBIT.jsonl.zst",), None,
    ),
)  # fmt: skip

# kline subfolder -> source folder under shared/data
KLINE_SOURCES = {
    "binance_spot": "benicio1007_bot_trading/f802e27/data",
    "bybit_linear": "cobra0506_crypto_backtester/33c8800/data",
}
KLINE_FILES = ("BTCUSDT_1m.csv", "ETHUSDT_1m.csv", "SOLUSDT_1m.csv")

INPUT_SHA256 = {
    "hftbacktest/examples/spot/btcusdt_20240808.gz": (
        "5d263f4c5379cfc27379ef0e22779aa33804463d1b69c292e9c0714e31f2e1b4"
    ),
    "hftbacktest/examples/usdm/btcusdt_20240808.gz": (
        "0ad7b3a0f5cff220761ea890cfd6e3c15f6899edc7f94637ec915043d7a72251"
    ),
    "hftbacktest/73bfa17/examples/usdm/ethusdt_20240718.gz": (
        "f2260198a4e9e8015fa9c0867746baec1675670a0c82cb9332beb4bf87696d4c"
    ),
    "cryptofeed/v3/sample_data/BYBIT.jsonl.zst": ("9844b5e38fd2db01066d3e30c8df4032c99462b4c0aba66b91fb0d62042851b9"),
    "benicio1007_bot_trading/f802e27/data/BTCUSDT_1m.csv": (
        "3ac26311dc83cb44a2a0d513c3659fcf57e228afe2629dbb5de6fe438f2da209"
    ),
    "benicio1007_bot_trading/f802e27/data/ETHUSDT_1m.csv": (
        "fbaaf8956fd2de5ae43b17cae483d4b0ad68a4bf3f54697d33fc12128a2e7720"
    ),
    "benicio1007_bot_trading/f802e27/data/SOLUSDT_1m.csv": (
        "e80274543a0f30ca38ee96d10be33282298243f9ec6980ab93492cefa1a13655"
    ),
    "cobra0506_crypto_backtester/33c8800/data/BTCUSDT_1m.csv": (
        "02bdf5a6270c21c91a850fab5dae8ab81beccaadea7d92879c9dca845ab7c045"
    ),
    "cobra0506_crypto_backtester/33c8800/data/ETHUSDT_1m.csv": (
        "2c9f235e46c47e81c3f977d23056e62d672a137dfd57e25469fa819af4c8f651"
    ),
    "cobra0506_crypto_backtester/33c8800/data/SOLUSDT_1m.csv": (
        "fe82bef3f0e121cd106fbc71f298291641c71e884c004bdd98037b4a23971757"
    ),
}


def default_shared() -> Path:
    env = os.environ.get("BOT_SHARED_DATA")
    return Path(env) if env else DEMO_DIR.parents[2] / "shared" / "data"


def verify_inputs(shared: Path) -> None:
    """Refuse to build from anything but the pinned input files."""
    for rel, want in INPUT_SHA256.items():
        path = shared / rel
        if not path.is_file():
            raise RecordingError(f"input missing: {path} (is --shared right?)")
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != want:
            raise RecordingError(f"input changed: {path} has sha256 {got}, expected {want}")


def session_records(shared: Path, s: Session) -> Iterator[Record]:
    paths = [shared / f for f in s.files]
    recs = import_hftbacktest(paths, s.venue) if s.fmt == "hftbacktest" else import_cryptofeed(paths)
    return slice_records(recs, s.seconds) if s.seconds is not None else recs


def build_recording(shared: Path, out: Path) -> dict[str, object]:
    """Write the demo recording to the new directory ``out``; returns its session table."""
    spans: list[dict[str, object]] = []
    for s in SESSIONS:
        first = last = n = 0
        for rec in session_records(shared, s):
            first = first or rec.ts_recv
            last = rec.ts_recv
            n += 1
        spans.append({"name": s.name, "files": list(s.files), "seconds": s.seconds, "records": n,
                      "first_ts_recv": first, "last_ts_recv": last})  # fmt: skip
    merged = heapq.merge(*(session_records(shared, s) for s in SESSIONS), key=lambda r: r.ts_recv)
    meta: dict[str, object] = {"imported_from": "bot.demo.make_demo", "sessions": spans}
    with RecordingWriter(out, rotate_bytes=1 << 40, level=ZSTD_LEVEL, meta=meta) as w:
        w.write_many(merged)
    return {"sessions": spans}


def build_klines(shared: Path, out: Path) -> None:
    """The header and the last ``KLINE_ROWS`` rows of each CSV, bytes unchanged."""
    for sub, src in KLINE_SOURCES.items():
        (out / sub).mkdir(parents=True, exist_ok=True)
        for name in KLINE_FILES:
            lines = (shared / src / name).read_bytes().splitlines(keepends=True)
            (out / sub / name).write_bytes(lines[0] + b"".join(lines[-KLINE_ROWS:]))


def build(shared: Path, dest: Path) -> None:
    """Build ``recording/`` and ``klines/`` under ``dest`` (replacing them only once both are complete)."""
    verify_inputs(shared)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".build-") as tmp:
        build_recording(shared, Path(tmp) / "recording")
        build_klines(shared, Path(tmp) / "klines")
        for name in ("recording", "klines"):
            shutil.rmtree(dest / name, ignore_errors=True)
            os.replace(Path(tmp) / name, dest / name)


def differences(a: Path, b: Path) -> list[str]:
    """Relative paths whose bytes differ between two trees (or exist in one only)."""
    out: list[str] = []
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    for rel in sorted(files_a | files_b):
        if rel not in files_a or rel not in files_b or not filecmp.cmp(a / rel, b / rel, shallow=False):
            out.append(str(rel))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bot.demo.make_demo", description=__doc__.splitlines()[0])
    p.add_argument(
        "--shared", type=Path, default=None, help="shared data dir (default: $BOT_SHARED_DATA or ../shared/data)"
    )
    p.add_argument("--out", type=Path, default=DEMO_DIR, help="where recording/ and klines/ go (default: bot/demo)")
    p.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with --out; change nothing")
    args = p.parse_args(argv)
    shared = args.shared or default_shared()
    try:
        if args.check:
            with tempfile.TemporaryDirectory() as tmp:
                build(shared, Path(tmp))
                diff = [d for n in ("recording", "klines") for d in differences(Path(tmp) / n, args.out / n)]
            if diff:
                print(f"demo data differs from a fresh build: {', '.join(diff)}", file=sys.stderr)
                return 1
            print("demo data is exactly what make_demo builds")
            return 0
        build(shared, args.out)
    except (BotError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'recording'} and {args.out / 'klines'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
