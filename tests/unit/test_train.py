"""models.train and ``python -m bot train``: job matrices, a 1-epoch smoke train on a tiny real slice,
complete checkpoint metadata, determinism with a fixed seed."""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bot.config import BotSettings
from bot.export import export_books
from bot.importers import import_hftbacktest, slice_records
from bot.recording_writer import RecordingWriter
from bot.train_cli import register
from models.checkpoint import load_checkpoint
from models.datasets import TRAIN, build_samples, load_books_csv, load_data
from models.inputs import ArrayWindowSource, build_input
from models.train import Job, Progress, TrainConfig, class_weights, make_spec, plan_jobs, run_job

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SPOT = ("hftbacktest/examples/spot/btcusdt_20240808.gz", "hftbacktest/examples/spot/btcusdt_20240809.gz")
USDM = ("hftbacktest/examples/usdm/btcusdt_20240808.gz",)
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


def _export(shared: Path, tmp: Path, files: tuple[str, ...], seconds: float, name: str) -> Path:
    with RecordingWriter(tmp / f"rec_{name}") as w:
        for r in slice_records(import_hftbacktest([shared / f for f in files]), seconds):
            w.write(r)
    out = tmp / f"{name}.csv"
    export_books(tmp / f"rec_{name}", out, levels=10, interval_ms=1000, settings=BotSettings(), symbols=["BTCUSDT"])
    return out


@pytest.fixture(scope="module")
def books(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real books CSVs (`python -m bot books` code): 120 s of Binance spot and of USD-M BTCUSDT."""
    tmp = tmp_path_factory.mktemp("books")
    return _export(shared, tmp, SPOT, 120, "spot"), _export(shared, tmp, USDM, 120, "usdm")


@pytest.fixture(scope="module")
def kline_dir(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("k")
    for s in ("BTCUSDT", "ETHUSDT"):
        lines = (shared / KLINES / f"{s}_1m.csv").read_text().splitlines(keepends=True)
        (d / f"{s}_1m.csv").write_text("".join(lines[:401]))
    return d


def _cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="python -m bot")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


# -- the CLI -----------------------------------------------------------------------------------------


def test_list_only_prints_the_target_by_horizon_matrix_and_trains_nothing(
    books: tuple[Path, Path], tmp_path: Path
) -> None:
    code, out, _ = _cli("train", "--family", "tabl", "--data", str(books[0]), str(books[1]), "--target", "all",
                        "--horizon", "all", "--out", str(tmp_path), "--list-only")

    assert code == 0
    rows = [(venue, h) for venue in ("spot", "usdm") for h in (5, 10, 30)]
    assert out.splitlines() == ["6 job(s):"] + [
        f"  tabl        target=binance_{v}:BTCUSDT     horizon={h:<12} -> {tmp_path}/tabl_binance-{v}-btcusdt_h{h}.pt"
        for v, h in rows
    ]
    assert list(tmp_path.iterdir()) == []


def test_bad_train_arguments_exit_2_with_one_clear_line(books: tuple[Path, Path], tmp_path: Path) -> None:
    code, _, err = _cli("train", "--family", "tabl", "--data", str(books[0]), "--horizon", "ten",
                        "--out", str(tmp_path))
    assert code == 2
    assert err == "error: --horizon must be integers (comma separated) or all, got 'ten'\n"

    code, _, err = _cli("train", "--family", "multiscale", "--data", str(books[0]), "--out", str(tmp_path))
    assert code == 2
    assert "trains on kline files, not books CSVs" in err

    code, _, err = _cli("train", "--family", "tabl", "--data", str(books[0]), "--target", "bybit_linear:BTCUSDT",
                        "--out", str(tmp_path / "x.pt"))
    assert code == 2
    assert "target bybit_linear:BTCUSDT is not a book in the data" in err

    code, _, err = _cli("train", "--family", "tabl", "--data", str(books[0]), "--model-arg", "nonsense=1",
                        "--out", str(tmp_path / "x.pt"))
    assert code == 2
    assert "bad --model-arg" in err


def test_one_epoch_smoke_train_writes_a_small_checkpoint_that_serves_through_build_input(
    books: tuple[Path, Path], tmp_path: Path
) -> None:
    # Act
    out = tmp_path / "tabl.pt"
    code, _, err = _cli("train", "--family", "tabl", "--data", str(books[0]), "--horizon", "5", "--epochs", "1",
                             "--out", str(out))

    # Assert
    assert code == 0, err
    assert "epoch 1/1 train_loss" in err  # plain progress line (not a TTY)
    assert out.is_file()
    assert out.stat().st_size < 2_000_000
    model, meta = load_checkpoint(out)
    spec = meta.extra["inputs"]
    data = load_books_csv([books[0]])
    times, rows = data.books[("binance_spot", "BTCUSDT")]
    x = build_input(spec, ArrayWindowSource(lob={("binance_spot", "BTCUSDT", "fine"): (times, rows)}),
                    venue="binance_spot", symbol="BTCUSDT")
    assert isinstance(x, torch.Tensor)
    assert x.shape == (1, 43, 10)
    with torch.no_grad():
        assert model(x).shape == (1, 1, 3)


def test_checkpoint_metadata_is_complete(kline_dir: Path, tmp_path: Path) -> None:
    # Act
    out = tmp_path / "ms.pt"
    code, _, err = _cli("train", "--family", "multiscale", "--data", f"binance_spot={kline_dir}", "--target", "ETHUSDT",
                        "--horizon", "4", "--epochs", "2", "--seed", "3", "--input-arg", "scales=[\"1m\",\"5m\"]",
                        "--input-arg", "windows=[12,6]", "--input-arg", "return_horizons=[2,4]",
                        "--input-arg", f"features={SMALL_FEATURES}", "--model-arg", "d_model=16", "--out", str(out))

    # Assert
    assert code == 0, err
    _, meta = load_checkpoint(out)
    extra = meta.extra
    assert meta.config.d_model == 16
    assert meta.config.scales == ("1m", "5m")
    assert meta.config.horizons == (2, 4)
    spec = extra["inputs"]
    assert spec["family"] == "multiscale"
    assert spec["symbol"] == "ETHUSDT"
    assert spec["venue"] == "binance_spot"
    assert spec["features"]["ma_windows"] == [5, 10]
    assert spec["history"] == 9
    assert len(spec["norm"]["mean"]) == 2
    assert len(spec["norm"]["mean"][0]) == 9
    assert spec["labels"]["direction_horizon"] == 4
    assert spec["labels"]["threshold"] > 0
    assert len(spec["labels"]["return_scale"]) == 2
    training = extra["training"]
    assert [row["epoch"] for row in training["history"]] == [1, 2]
    assert {"train_loss", "val_loss", "lr", "seconds"} <= set(training["history"][0])
    assert training["config"]["seed"] == 3
    assert training["model_args"]["d_model"] == 16
    assert training["best_epoch"] in (1, 2)
    assert sum(training["train_class_counts"].values()) == training["samples"]["train"]
    assert len(training["class_weights"]) == 3
    data = extra["data"]
    assert data["kind"] == "klines"
    assert [s["name"] for s in data["sources"]] == ["BTCUSDT_1m.csv", "ETHUSDT_1m.csv"]
    spans = data["spans_ms"]
    assert spans["train"][0] < spans["train"][1] < spans["val"][0] <= spans["val"][1] < spans["test"][0]
    assert extra["code_version"].startswith(("git:", "bot "))


def test_parallel_matrix_trains_each_job_in_its_own_process(books: tuple[Path, Path], tmp_path: Path) -> None:
    code, out, err = _cli("train", "--family", "tabl", "--data", str(books[0]), str(books[1]), "--target", "all",
                          "--horizon", "5", "--epochs", "1", "--parallel", "2", "--out", str(tmp_path))

    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tabl_binance-spot-btcusdt_h5.pt",
                                                          "tabl_binance-usdm-btcusdt_h5.pt"]
    targets = {load_checkpoint(p)[1].extra["training"]["target"] for p in tmp_path.iterdir()}
    assert targets == {"binance_spot:BTCUSDT", "binance_usdm:BTCUSDT"}
    assert out.count('"family": "tabl"') == 2


# -- the library -------------------------------------------------------------------------------------


def test_training_twice_with_the_same_seed_gives_identical_weights_and_history(
    books: tuple[Path, Path], tmp_path: Path
) -> None:
    data = load_data([str(books[0]), str(books[1])])
    job = Job(family="lobforecast", data=(str(books[0]), str(books[1])), out=tmp_path / "a.pt",
              target="binance_usdm:BTCUSDT", horizon=(2, 4), input_args={"grid": "fine", "window": 8},
              train=TrainConfig(epochs=2, seed=7))

    a = run_job(job, io.StringIO(), data)
    b = run_job(Job(**{**job.__dict__, "out": tmp_path / "b.pt"}), io.StringIO(), data)

    ma, meta_a = load_checkpoint(tmp_path / "a.pt")
    mb, meta_b = load_checkpoint(tmp_path / "b.pt")
    assert a["best_val_loss"] == b["best_val_loss"]
    assert [r["train_loss"] for r in meta_a.extra["training"]["history"]] == \
           [r["train_loss"] for r in meta_b.extra["training"]["history"]]
    sa, sb = ma.state_dict(), mb.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_class_weights_are_inverse_class_frequency_of_the_training_labels(books: tuple[Path, Path]) -> None:
    data = load_books_csv([books[0]])
    spec, target = make_spec(Job(family="tabl", data=(), out=Path("x.pt"), horizon=(5,)), data)
    s = build_samples(spec, data, target=target)
    train = s.part(TRAIN)

    w = class_weights("tabl", train)

    counts = np.bincount(train.y["direction"].flatten().numpy(), minlength=3)
    assert w is not None
    assert w.tolist() == pytest.approx((counts.sum() / (3 * counts)).clip(0.2, 5.0).tolist())


def test_plan_jobs_names_outputs_and_expands_assets_for_crossasset(kline_dir: Path, tmp_path: Path) -> None:
    jobs = plan_jobs("crossasset", [f"binance_spot={kline_dir}"], target="all", horizon="all", out=tmp_path)

    assert [(j.target, j.horizon) for j in jobs] == [("BTCUSDT,ETHUSDT", (5,)), ("BTCUSDT,ETHUSDT", (15,)),
                                                     ("BTCUSDT,ETHUSDT", (60,))]
    assert [j.out.name for j in jobs] == ["crossasset_btcusdt-ethusdt_h5.pt", "crossasset_btcusdt-ethusdt_h15.pt",
                                          "crossasset_btcusdt-ethusdt_h60.pt"]


def test_progress_writes_one_plain_line_per_epoch_when_not_a_terminal() -> None:
    stream = io.StringIO()
    p = Progress(stream, "[x] ")

    p.step(1, 2, 5, 10, 0.5)
    p.epoch({"epoch": 1, "epochs": 2, "train_loss": 1.0, "val_loss": 1.25, "lr": 1e-3, "seconds": 0.5, "best": True})

    assert stream.getvalue() == "[x] epoch 1/2 train_loss 1.0000 val_loss 1.2500 lr 1.00e-03 0.5s *\n"
