"""models.evaluate and ``python -m bot evaluate``: metrics checked by hand, baselines scored on exactly the
model's samples, the span after training, the JSON and plots, and the shipped checkpoints."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bot.bootstrap import bootstrap, mean_stat, verdict
from bot.config import BotSettings
from bot.export import export_books
from bot.importers import import_hftbacktest, slice_records
from bot.recording_writer import RecordingWriter
from bot.train_cli import register
from models.checkpoint import load_checkpoint
from models.datasets import collect, finalize, load_data
from models.evaluate import (
    _classification_task,
    _macro_f1_rows,
    classification_metrics,
    evaluate_checkpoint,
    format_report,
    regression_intervals,
    regression_metrics,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ROOT / "models" / "checkpoints"
SPOT = ("hftbacktest/examples/spot/btcusdt_20240808.gz", "hftbacktest/examples/spot/btcusdt_20240809.gz")
KLINES = "benicio1007_bot_trading/f802e27/data"
SMALL_FEATURES = '{"return_lags": [1, 3], "vol_window": 5, "volume_window": 5, "ma_windows": [5, 10], "rsi_period": 5}'


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shared() -> Path:
    root = Path(os.environ.get("BOT_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not (root / "SOURCES.md").is_file():
        pytest.skip(f"shared data not found at {root} (set BOT_SHARED_DATA)")
    return root


def _cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="python -m bot")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def spot_csv(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("spot")
    with RecordingWriter(tmp / "rec") as w:
        for r in slice_records(import_hftbacktest([shared / f for f in SPOT]), 300):
            w.write(r)
    out = tmp / "spot.csv"
    export_books(tmp / "rec", out, levels=10, interval_ms=1000, settings=BotSettings(), symbols=["BTCUSDT"])
    return out


@pytest.fixture(scope="module")
def tabl_checkpoint(spot_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ck") / "tabl.pt"
    code, _, err = _cli("train", "--family", "mhtabl", "--data", str(spot_csv), "--horizon", "3,5", "--epochs", "2",
                        "--model-arg", "heads=2", "--out", str(out))
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def kline_dirs(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real slices of the same files: the first 600 bars (training) and bars 600..1100 (later data)."""
    d1, d2 = tmp_path_factory.mktemp("early"), tmp_path_factory.mktemp("later")
    for s in ("BTCUSDT", "ETHUSDT"):
        lines = (shared / KLINES / f"{s}_1m.csv").read_text().splitlines(keepends=True)
        (d1 / f"{s}_1m.csv").write_text("".join(lines[:601]))
        (d2 / f"{s}_1m.csv").write_text("".join([lines[0], *lines[601:1101]]))
    return d1, d2


# -- metrics -----------------------------------------------------------------------------------------


def test_classification_metrics_match_a_hand_computed_confusion_matrix() -> None:
    y_true = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 2, 2, 0, 2])

    m = classification_metrics(y_true, y_pred)

    assert m["confusion"] == [[1, 1, 0], [0, 2, 1], [1, 0, 3]]
    assert m["accuracy"] == pytest.approx(6 / 9)
    assert m["per_class"]["down"] == pytest.approx({"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2})
    assert m["per_class"]["stationary"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["up"]["recall"] == pytest.approx(3 / 4)
    f1_up = 2 * (3 / 4) * (3 / 4) / (3 / 4 + 3 / 4)
    assert m["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + f1_up) / 3)


def test_regression_metrics_and_a_no_change_forecast_calls_no_direction() -> None:
    t = np.array([1.0, -2.0, 0.0, 3.0])

    m = regression_metrics(t, np.array([2.0, -1.0, 1.0, -1.0]))
    z = regression_metrics(t, np.zeros(4))

    assert m["mse"] == pytest.approx((1 + 1 + 1 + 16) / 4)
    assert m["mae"] == pytest.approx(7 / 4)
    assert m["direction_accuracy"] == pytest.approx(2 / 3)  # the unmoved sample is not counted
    assert z["direction_accuracy"] is None


def test_vectorised_macro_f1_equals_the_confusion_matrix_one() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, size=(4, 200))
    p = rng.integers(0, 3, size=(4, 200))
    p[2] = 1  # one row predicts one class only: zero precision/recall for the others

    rows = _macro_f1_rows(y, p)

    assert rows == pytest.approx([classification_metrics(y[i], p[i])["macro_f1"] for i in range(4)])


def _overlapping_labels(n: int = 17391, h: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the h-step forward sum of a drifting random walk, scored at every step (so neighbours share
    h-1 steps), and a model whose forecast is that sum seen through heavy, equally persistent noise."""
    rng = np.random.default_rng(0)
    e = rng.normal(size=n + 2 * h) + 0.03
    fwd = np.convolve(e, np.ones(h), mode="valid")[h : h + n]
    c = np.quantile(np.abs(fwd), 1 / 3)
    y = np.where(fwd > c, 2, np.where(fwd < -c, 0, 1))
    g = 0.3 * fwd + np.convolve(rng.normal(size=n + h - 1), np.ones(h), mode="valid")
    return y, np.where(g < np.quantile(g, 0.2), 0, 2)


def test_an_accuracy_edge_inside_the_overlap_noise_is_not_called_a_win() -> None:
    # Arrange: 17,391 samples of a 60-step label (about 290 independent ones), model 0.438 vs majority 0.421
    y, model = _overlapping_labels()
    n = len(y)

    # Act: block = horizon 60 / stride 1
    task = _classification_task("direction h=60 bars", y, model, np.roll(y, 60), np.zeros((n, 1)),
                                np.zeros((50, 1)), np.full(50, 2), 60)

    # Assert: the point estimates say "better" (what the old verdict called a win) ...
    acc = next(c for c in task["comparisons"] if c["baseline"] == "majority" and c["metric"] == "accuracy")
    assert task["model"]["accuracy"] == pytest.approx(0.4379, abs=1e-4)
    assert task["baselines"]["majority"]["accuracy"] == pytest.approx(0.4213, abs=1e-4)
    assert acc["advantage"] == pytest.approx(task["model"]["accuracy"] - task["baselines"]["majority"]["accuracy"])
    # ... but the interval of the difference straddles 0, so the verdict refuses it
    lo, hi = acc["interval"]
    assert lo < 0 < hi
    assert acc["verdict"] == "indistinguishable"
    assert acc["block"] == 60
    assert "does NOT beat" in task["verdict"]
    assert "accuracy 0.4379 vs majority 0.4213: not distinguishable" in task["verdict"]
    # every method carries its own interval around its point estimate
    for m in (task["model"], *task["baselines"].values()):
        assert m["intervals"]["accuracy"][0] <= m["accuracy"] <= m["intervals"]["accuracy"][1]
    # the same data treated as independent samples (block 1) would have called the edge real
    diff = (model == y).astype(float) - (y == 2)
    assert verdict(bootstrap(mean_stat, diff, block=1)) == "beats"
    assert "model vs majority" in format_report({
        "checkpoint": "x.pt", "cli_family": "multiscale", "data": {"venue": "v", "symbol": "s"},
        "span": {"n": n, "from_ms": 0, "to_ms": 1}, "baseline_fit": {"n": 50, "how": "test"}, "tasks": [task]})


def test_a_model_that_is_right_every_time_beats_every_baseline() -> None:
    y, _ = _overlapping_labels(n=3000, h=10)

    task = _classification_task("direction h=10 steps", y, y.copy(), np.roll(y, 10), np.zeros((3000, 1)),
                                np.zeros((50, 1)), np.full(50, 2), 10)

    assert all(c["verdict"] == "beats" for c in task["comparisons"])
    assert task["verdict"].startswith("direction h=10 steps: the model beats every baseline on accuracy, macro_f1")


def test_regression_intervals_resample_whole_rows_and_skip_an_undefined_direction() -> None:
    t = np.arange(40, dtype=np.float64).reshape(20, 2) - 20
    p = t + 1.0  # every error is exactly 1

    ivs = regression_intervals(t, p, block=3)

    assert ivs["mse"] == pytest.approx([1.0, 1.0])
    assert ivs["mae"] == pytest.approx([1.0, 1.0])
    assert regression_intervals(t, np.zeros_like(t), block=3)["direction_accuracy"] is None


# -- evaluation --------------------------------------------------------------------------------------


def test_model_and_every_baseline_are_scored_on_the_same_samples_after_the_training_span(
    tabl_checkpoint: Path, spot_csv: Path
) -> None:
    # Act
    report, _, scored = evaluate_checkpoint(tabl_checkpoint, [str(spot_csv)])

    # Assert: the scored span starts at the checkpoint's test span, the fit set ends before it
    _, meta = load_checkpoint(tabl_checkpoint)
    test_start = meta.extra["data"]["spans_ms"]["test"][0]
    assert report["span"]["from_ms"] == test_start
    assert report["baseline_fit"]["to_ms"] < test_start
    assert [t["name"] for t in report["tasks"]] == ["direction h=3 steps", "direction h=5 steps"]
    for k, task in enumerate(report["tasks"]):
        n = task["model"]["n"]
        assert n == len(scored) > 0
        assert {b: m["n"] for b, m in task["baselines"].items()} == {"majority": n, "persistence": n, "logistic": n}
        # persistence = the label of the h steps that ended at t, recomputed from the scored samples
        past = scored.past["direction"][:, k]
        y = scored.y["direction"][:, k].numpy()
        assert task["baselines"]["persistence"]["accuracy"] == pytest.approx(np.mean(np.where(past >= 0, past, 1) == y))
        # majority = the most common class of the fit set, whatever the scored span holds
        assert task["baselines"]["majority"]["accuracy"] == pytest.approx(
            np.mean(y == ["down", "stationary", "up"].index(task["baselines"]["majority"]["class"])))
        assert task["verdict"].startswith(task["name"])


def test_new_data_later_than_training_is_scored_whole_with_baselines_fit_on_its_first_half(
    kline_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    # Arrange
    early, later = kline_dirs
    ck = tmp_path / "ca.pt"
    code, _, err = _cli("train", "--family", "crossasset", "--data", f"binance_spot={early}", "--horizon", "3",
                        "--epochs", "1", "--input-arg", "window=12", "--input-arg", f"features={SMALL_FEATURES}",
                        "--out", str(ck))
    assert code == 0, err

    # Act
    out = tmp_path / "eval.json"
    code, text, err = _cli("evaluate", str(ck), "--data", f"binance_spot={later}", "--json", str(out))

    # Assert
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["baseline_fit"]["how"].startswith("first half of the scored span")
    assert report["baseline_fit"]["to_ms"] < report["span"]["from_ms"]
    spec = load_checkpoint(ck)[1].extra["inputs"]
    every = finalize(spec, collect(spec, load_data([f"binance_spot={later}"])))
    assert report["span"]["n"] == len(every) - len(every) // 2
    names = [t["name"] for t in report["tasks"]]
    assert names == ["BTCUSDT direction h=3 bars", "BTCUSDT log return h=3 bars", "ETHUSDT direction h=3 bars",
                     "ETHUSDT log return h=3 bars", "portfolio"]
    assert set(report["tasks"][1]["baselines"]) == {"zero", "persistence", "ridge"}
    assert "equal_weight" in report["tasks"][-1]["baselines"]
    assert "portfolio" in text
    assert "->" in text


def test_evaluate_refuses_data_with_nothing_after_training_unless_span_all(tabl_checkpoint: Path, tmp_path: Path,
                                                                            shared: Path) -> None:
    # the first 60 s of the same recording end before the checkpoint's test span
    with RecordingWriter(tmp_path / "rec") as w:
        for r in slice_records(import_hftbacktest([shared / f for f in SPOT]), 60):
            w.write(r)
    early = tmp_path / "early.csv"
    export_books(tmp_path / "rec", early, levels=10, interval_ms=1000, settings=BotSettings(), symbols=["BTCUSDT"])

    code, _, err = _cli("evaluate", str(tabl_checkpoint), "--data", str(early))
    assert code == 2
    assert "pass --span all" in err
    code, _, err = _cli("evaluate", str(tabl_checkpoint), "--data", str(early), "--span", "all")
    assert code == 0, err


def test_attention_plots_are_written_as_png(tabl_checkpoint: Path, spot_csv: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")

    code, out, err = _cli("evaluate", str(tabl_checkpoint), "--data", str(spot_csv), "--plots", str(tmp_path))

    assert code == 0, err
    png = tmp_path / "tabl_tabl_temporal_attention.png"
    assert png.is_file()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in out


# -- the shipped checkpoints -------------------------------------------------------------------------


SHIPPED = sorted(CHECKPOINTS.glob("*.pt"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_checkpoint_is_small_complete_and_evaluated_on_a_later_span(path: Path) -> None:
    assert path.stat().st_size < 2_000_000
    _, meta = load_checkpoint(path)
    spec = meta.extra["inputs"]
    assert spec["norm"]
    assert spec["labels"]
    assert meta.extra["training"]["history"]
    assert meta.extra["code_version"]
    assert meta.extra["data"]["sources"]
    reports = sorted(CHECKPOINTS.glob(f"{path.stem}.eval*.json"))
    assert reports, f"no evaluation JSON for {path.name}"
    trained_to = meta.extra["data"]["spans_ms"]["val"][1]
    for r in reports:
        report = json.loads(r.read_text())
        assert report["checkpoint"] == path.name
        assert report["span"]["from_ms"] > trained_to
        assert all(t["baselines"] for t in report["tasks"])


@pytest.mark.parametrize("report", sorted(CHECKPOINTS.glob("*.eval*.json")), ids=lambda p: p.stem)
def test_shipped_evaluations_carry_intervals_and_call_a_win_only_outside_them(report: Path) -> None:
    data = json.loads(report.read_text())
    for task in data["tasks"]:
        assert task["comparisons"], task["name"]
        for c in task["comparisons"]:
            lo, hi = c["interval"]
            assert c["verdict"] == ("beats" if lo > 0 else "worse" if hi < 0 else "indistinguishable")
        won = all(c["verdict"] == "beats" for c in task["comparisons"])
        assert ("beats every baseline" in task["verdict"]) == won
        for m in (task["model"], *task["baselines"].values()):
            assert m["intervals"]


def test_models_checkpoints_readme_gives_the_command_of_every_shipped_checkpoint() -> None:
    if not SHIPPED:
        pytest.skip("no shipped checkpoints")
    readme = (CHECKPOINTS / "README.md").read_text()
    for path in SHIPPED:
        assert f"--out models/checkpoints/{path.name}" in readme


# -- damaged checkpoints: one line, exit 2 ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "no_spec"])
def test_evaluate_on_a_damaged_checkpoint_prints_one_line_naming_it_and_exits_2(kind: str, tmp_path: Path) -> None:
    # Arrange: a copy of a shipped checkpoint, damaged
    good = CHECKPOINTS / "tabl_binance-spot-btcusdt_h10.pt"
    bad = tmp_path / f"{kind}.pt"
    data = good.read_bytes()
    if kind == "truncated":
        bad.write_bytes(data[: len(data) * 2 // 3])
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "text":
        bad.write_text("12345\n")
    else:
        raw = torch.load(good, weights_only=True)
        del raw["extra"]["inputs"]
        torch.save(raw, bad)
    books = tmp_path / "books.csv"
    books.write_text("ts\n")
    # Act
    code, out, err = _cli("evaluate", str(bad), "--data", str(books))
    # Assert
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    expected = {
        "truncated": f"error: {bad} is not a readable checkpoint: truncated or damaged ({bad.stat().st_size} bytes): "
                     "its end (the zip directory) is missing\n",
        "empty": f"error: {bad} is not a readable checkpoint: the file is empty (0 bytes)\n",
        "text": f"error: {bad} is not a readable checkpoint: not a zip archive as torch.save writes "
                "(the file starts b'1234')\n",
        "no_spec": f"error: {bad}: no input spec (extra['inputs']); it cannot be evaluated\n",
    }[kind]
    assert err == expected
