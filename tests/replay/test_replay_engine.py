"""The replay engine end to end: golden event stream and report, determinism, look-ahead, kline replays,
walk-forward, the command line.

The golden files are the replay of the embedded demo recording with the shipped config and checkpoints:
``tests/replay/golden/replay_demo_events.jsonl.zst`` (every event of the order path, in publish order)
and ``replay_demo_report.json``. They are regenerated only on request:
``BOT_REGEN_GOLDEN=1 pytest tests/replay/test_replay_engine.py``; a diff in them is explained in the commit
(a retrained checkpoint, a strategy or matcher change).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from bot.__main__ import main
from bot.config import BotSettings, load_settings
from bot.events import Venue
from bot.klines import iter_kline_csv
from bot.recording import iter_records, read_manifest
from bot.recording_writer import RecordingWriter
from bot.sim.cli import DEMO_DIR
from replay.engine import ReplayRequest, run_replay
from replay.report import write_report
from replay.sources import open_sources

pytestmark = pytest.mark.replay

REPO = Path(__file__).resolve().parents[2]
RECORDING = DEMO_DIR / "recording"
GOLDEN = Path(__file__).parent / "golden"
GOLDEN_EVENTS = GOLDEN / "replay_demo_events.jsonl.zst"
GOLDEN_REPORT = GOLDEN / "replay_demo_report.json"
REGEN = os.environ.get("BOT_REGEN_GOLDEN") == "1"


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI configures structlog onto the captured stderr; later tests must not log into a closed file."""
    monkeypatch.setattr("replay.cli.setup_logging", lambda *a, **k: None)


def _settings() -> BotSettings:
    return load_settings(REPO / "config.toml")


def _replay(src: list[str], out: Path, *, baseline: bool = True, **kw: object) -> dict[str, object]:
    settings = _settings()
    sources = open_sources(src)
    summary = run_replay(settings, ReplayRequest(sources, out, **kw))  # type: ignore[arg-type]
    if baseline:
        run_replay(settings, ReplayRequest(sources, out / "baseline", run_name="baseline", **kw),  # type: ignore[arg-type]
                   baseline=True)
        run = json.loads((out / "run.json").read_text())
        run["baseline"] = "baseline"
        (out / "run.json").write_text(json.dumps(run, indent=1, sort_keys=True) + "\n")
    write_report(out)
    return summary


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"  # the report names its directory: the same name each time
    _replay([str(RECORDING)], out)
    return out


def test_demo_replay_matches_golden(demo: Path) -> None:
    events = (demo / "events.jsonl").read_bytes()
    report = (demo / "report.json").read_bytes()
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        GOLDEN_EVENTS.write_bytes(zstandard.ZstdCompressor(level=19).compress(events))
        GOLDEN_REPORT.write_bytes(report)
    assert GOLDEN_EVENTS.is_file(), f"missing {GOLDEN_EVENTS}; create it with BOT_REGEN_GOLDEN=1"
    want = zstandard.ZstdDecompressor().decompress(GOLDEN_EVENTS.read_bytes())
    if events != want:  # say where, not just that
        got_lines, want_lines = events.splitlines(), want.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(got_lines, want_lines, strict=False)) if a != b),
                     min(len(got_lines), len(want_lines)))
        pytest.fail(f"event stream differs from the golden file at line {first + 1} "
                    f"(got {len(got_lines)} lines, golden {len(want_lines)}):\n"
                    f"got    {got_lines[first][:300] if first < len(got_lines) else b'<end>'!r}\n"
                    f"golden {want_lines[first][:300] if first < len(want_lines) else b'<end>'!r}")
    assert report == GOLDEN_REPORT.read_bytes()


def test_demo_replay_trades_through_the_whole_path(demo: Path) -> None:
    run = json.loads((demo / "run.json").read_text())
    ev = _events(demo / "events.jsonl")
    kinds = {e["type"] for e in ev}
    assert {"Signal", "OrderUpdate", "Fill", "EquitySnapshot", "Price", "BookHealth"} <= kinds
    fills = [e for e in ev if e["type"] == "Fill"]
    assert fills
    assert run["trading"]["fills"] == len(fills)
    assert run["bus_handler_errors"] == 0
    models = {e["model"] for e in ev if e["type"] == "Signal"}
    assert {"tabl_binance-spot-btcusdt_h10", "mhtabl_binance-spot-btcusdt_h10",
            "lobforecast_binance-usdm-btcusdt_h5-10-15-20"} <= models
    times = [int(e["ts_recv"]) for e in ev]
    # one clock: never backwards, but for the recording's own receive times (the Bybit capture steps back
    # 0.3 ms once; its events keep the time the venue's frame was received)
    assert all(b >= a - 1_000_000 for a, b in itertools.pairwise(times))
    # every order's NEW precedes its fills, and a fill never happens before its order was decided + latency
    new_at = {e["client_order_id"]: e["ts_recv"] for e in ev if e["type"] == "OrderUpdate" and e["status"] == "new"}
    latency_ns = {v.value: int(c.latency_ms * 1e6) for v, c in _settings().paper.venues.items()}
    for f in fills:
        assert f["ts_recv"] >= new_at[f["client_order_id"]] + latency_ns[f["venue"]]
    baseline = json.loads((demo / "baseline" / "run.json").read_text())
    assert baseline["mode"] == "baseline"
    assert baseline["models"]["tabl_binance-spot-btcusdt_h10"]["published"] > 0
    report = json.loads((demo / "report.json").read_text())
    assert report["summary"]["coverage"] == "whole span"
    assert (demo / "report.html").stat().st_size > 10_000


def test_replay_is_deterministic(demo: Path, tmp_path: Path) -> None:
    _replay([str(RECORDING)], tmp_path / "run")
    for name in ("events.jsonl", "run.json", "report.json", "baseline/events.jsonl"):
        assert (tmp_path / "run" / name).read_bytes() == (demo / name).read_bytes(), name


def _spot_excerpt(out: Path, change_after: int | None = None, how: str = "") -> tuple[Path, list[int]]:
    """The demo's Binance spot session as its own recording; records after ``change_after`` (ns) dropped
    (``how="cut"``) or every other one dropped (``how="thin"``, a different market from then on)."""
    w = RecordingWriter(out)
    times = []
    n = 0
    for r in iter_records(RECORDING, venues=["binance_spot"]):
        if change_after is not None and r.ts_recv > change_after:
            n += 1
            if how == "cut" or (how == "thin" and n % 2):
                continue
        w.write(r)
        times.append(r.ts_recv)
    w.close()
    return out, times


def test_nothing_published_before_t_depends_on_records_after_t(tmp_path: Path) -> None:
    """Change the recording after t (cut it; thin it out): every event stamped before t stays identical."""
    base_dir, times = _spot_excerpt(tmp_path / "rec")
    t = times[len(times) // 2]
    runs = {}
    for how in ("", "cut", "thin"):
        rec = base_dir if not how else _spot_excerpt(tmp_path / f"rec_{how}", t, how)[0]
        out = tmp_path / f"out_{how or 'base'}"
        _replay([str(rec)], out, baseline=False)
        runs[how] = (out / "events.jsonl").read_text().splitlines()
    before = [line for line in runs[""] if json.loads(line)["ts_recv"] < t]
    kinds = {json.loads(line)["type"] for line in before}
    assert {"Signal", "Fill", "EquitySnapshot"} <= kinds  # the prefix holds trading, not just books
    for how in ("cut", "thin"):
        assert [line for line in runs[how] if json.loads(line)["ts_recv"] < t] == before, how
    assert runs["thin"] != runs[""]  # the change did change what came after t


def _bar_events(out: Path) -> Iterator[dict[str, Any]]:
    for line in (out / "events.jsonl").read_text().splitlines():
        yield json.loads(line)


def test_kline_replay_trades_on_bar_books(tmp_path: Path) -> None:
    """Kline files alone: the cross-asset model on Bybit linear bars, filled at the next bar's close."""
    summary = _replay([f"bybit_linear={DEMO_DIR / 'klines' / 'bybit_linear'}"], tmp_path, baseline=False)
    ev = list(_bar_events(tmp_path))
    sig = [e for e in ev if e["type"] == "Signal"]
    fills = [e for e in ev if e["type"] == "Fill"]
    assert sig
    assert {e["model"] for e in sig} == {"crossasset_btcusdt-ethusdt-solusdt_h15"}
    assert fills, summary
    half = _settings().replay.bar_spread_bps / 2e4
    closes: dict[tuple[str, int], float] = {}
    for csv in (DEMO_DIR / "klines" / "bybit_linear").iterdir():
        for k in iter_kline_csv(csv, venue=Venue.BYBIT_LINEAR):
            closes[(k.symbol, k.ts_recv)] = k.close
    decided = {e["client_order_id"]: e["ts_recv"] for e in ev if e["type"] == "OrderUpdate" and e["status"] == "new"}
    for f in fills:
        close = closes[(f["symbol"], f["ts_recv"])]  # filled at a bar close ...
        assert f["ts_recv"] > decided[f["client_order_id"]]  # ... of a later bar than the decision's
        want = close * (1 + half) if f["side"] == "buy" else close * (1 - half)
        assert float(f["price"]) == pytest.approx(want, rel=1e-12)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["bar_s"] == 60.0
    assert run["feed"]["bars"] == 4500


def test_walk_forward_covers_only_out_of_sample_spans(tmp_path: Path) -> None:
    """Four days of real Binance 1m bars: train 2 days, trade the next, roll by a day (two folds)."""
    full = REPO.parent / "shared" / "data" / "benicio1007_bot_trading" / "f802e27" / "data" / "BTCUSDT_1m.csv"
    if not full.is_file():
        pytest.skip("../shared/data is not beside the repository")
    bars = tmp_path / "bars"
    bars.mkdir()
    with full.open() as src_fh, (bars / "BTCUSDT_1m.csv").open("w") as out_fh:
        for i, line in enumerate(src_fh):
            if i > 4 * 1440 + 60:  # four days and an hour: two folds
                break
            out_fh.write(line)
    tmp_path = tmp_path / "out"
    src = f"binance_spot={bars}"
    code = main(["--config", str(REPO / "config.toml"), "replay", src, "--walk-forward", "--train-days", "2",
                 "--test-days", "1", "--epochs", "1", "--report", str(tmp_path), "--no-progress"])
    assert code == 0
    run = json.loads((tmp_path / "run.json").read_text())
    folds = run["folds"]
    assert run["mode"] == "walk_forward"
    assert len(folds) >= 2
    for a, b in itertools.pairwise(folds):
        assert b["test_ns"][0] == a["test_ns"][1]
        assert a["train_ns"][1] == a["test_ns"][0]
    cks = [tmp_path / "folds" / str(k) / "checkpoints" / "multiscale_btcusdt_h60.pt" for k in range(len(folds))]
    assert all(p.is_file() for p in cks)
    assert cks[0].read_bytes() != cks[1].read_bytes()
    spans = [f["test_ns"] for f in folds]
    ev = list(_bar_events(tmp_path))
    assert any(e["type"] == "Signal" for e in ev)
    for e in ev:
        assert any(lo <= int(e["ts_recv"]) < hi for lo, hi in spans), e  # nothing from a training span
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"]["coverage"] == "test spans only"


def test_replay_of_an_imported_file(tmp_path: Path) -> None:
    """A public-format file as the source, converted on the fly (the hftbacktest capture, when present)."""
    f = REPO.parent / "shared" / "data" / "hftbacktest" / "examples" / "spot" / "btcusdt_20240808.gz"
    if not f.is_file():
        pytest.skip("../shared/data is not beside the repository")
    _replay([str(f)], tmp_path, baseline=False)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["sources"] == [str(f)]
    assert run["feed"]["books"]["binance_spot/BTCUSDT"]["gaps"] == 0
    assert run["models"]["tabl_binance-spot-btcusdt_h10"]["published"] > 100
    assert run["feed"]["unroutable"]["binance_spot/not_handled:btcusdt@bookTicker"] > 0  # counted, not lost


@pytest.mark.parametrize(("args", "says"), [
    (["/nonexistent/rec"], "no such file or directory"),
    ([str(DEMO_DIR / "klines" / "binance_spot")], "need their venue"),
    (["nosuchvenue=/tmp"], "unknown venue"),
    ([str(RECORDING), "--speed", "fast"], "--speed"),
    ([str(RECORDING), "--speed", "0x"], "--speed"),
    ([str(RECORDING), "--from", "yesterday"], "--from"),
    ([str(RECORDING), "--from", "2024-08-09", "--to", "2024-08-08"], "--to must be after --from"),
])  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    code = main(["replay", *args, "--report", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert says in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_from_to_bound_what_is_logged(tmp_path: Path) -> None:
    m: dict[str, Any] = read_manifest(RECORDING)
    spot = next(s for s in m["sessions"] if s["name"].startswith("binance_spot"))
    lo = spot["first_ts_recv"] + 120 * 10**9
    hi = lo + 60 * 10**9
    rec, _ = _spot_excerpt(tmp_path / "rec")
    _replay([str(rec)], tmp_path / "out", baseline=False, from_ns=lo, to_ns=hi)
    ev = list(_bar_events(tmp_path / "out"))
    assert ev
    assert all(lo <= int(e["ts_recv"]) <= hi for e in ev)
    assert any(e["type"] == "Signal" for e in ev)  # the books were warmed up before --from


def test_signals_of_the_replay_are_the_model_on_the_training_export(demo: Path, tmp_path: Path) -> None:
    """One path for model inputs: the TABL signals the replay published are, bit for bit, the checkpoint run
    on the windows of the ``bot books`` export (the training dataset) at the same grid times."""
    import torch

    from bot.export import BooksExport
    from bot.heads import HEADS, collate, split_output
    from bot.recording import iter_frames
    from bot.workers import SHIPPED_DIR, load_checkpoint_file
    from models.datasets import load_books_csv
    from models.inputs import ArrayWindowSource, build_input

    settings = BotSettings()
    symbols = {Venue(v): tuple(s) for v, s in read_manifest(RECORDING)["symbols"].items()}
    csv_path = tmp_path / "fine.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        exp = BooksExport(settings, symbols, settings.ring.fine_interval_ms, settings.ring.fine_levels, fh)
        exp.run(iter_frames(RECORDING))
    data = load_books_csv([csv_path])
    ck = load_checkpoint_file(SHIPPED_DIR / "tabl_binance-spot-btcusdt_h10.pt", "cpu")
    spec = ck.meta.extra["inputs"]
    head = HEADS[ck.meta.family](spec, ck.meta.config)
    src = ArrayWindowSource(lob={(v, s, spec["grid"]): arr for (v, s), arr in data.books.items()})
    target = head.trained_targets()[0]
    signals = [e for e in _events(demo / "events.jsonl")
               if e["type"] == "Signal" and e["model"] == "tabl_binance-spot-btcusdt_h10"]
    assert len(signals) > 300
    torch.set_num_threads(1)
    with torch.inference_mode():
        for s in signals:
            x = build_input(spec, src.at(int(s["ts_event"])), venue="binance_spot", symbol="BTCUSDT")
            assert x is not None, s["ts_event"]
            out = head.forward(ck.model, collate([x]))
            fields = head.decode(split_output(out, 0), target, None)
            assert list(fields[0].probabilities) == s["probabilities"], s["ts_event"]
