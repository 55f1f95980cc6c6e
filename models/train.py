"""Training: one job = one family x target x horizon on one dataset; matrices of jobs; checkpoints.

    python -m bot train --family tabl --data books.csv [--target binance_spot:BTCUSDT] [--horizon 10]
    python -m bot train --family multiscale --data binance_spot=DIR --target all --horizon all --list-only

A job (``Job``) builds its samples with ``models.datasets.build_samples`` (time split, statistics from the
training span), builds the model from the family's config, and fits it with ``models.fit.fit`` (AdamW,
linear warm-up then cosine decay, gradient clipping, class weights against imbalance, early stopping on the
validation span (the best epoch's weights are kept), mixed precision on CUDA). The checkpoint carries the
input spec (feature and normalisation config, label thresholds), the training history, the data spans and
the code version (``code_version``, ``source_hash``), so a worker and ``python -m bot evaluate`` rebuild
everything from the file alone. Matrices of jobs (``plan_jobs``) run here or in worker processes
(``run_jobs``). The fitting names other code imports from here (``TrainConfig``, ``fit``, ``loss_for``,
``predict``, ...) are ``models.fit``'s, re-exported.

Targets and horizons per family (``--target all`` / ``--horizon all`` expand to every row of the table):

=============  ==========================  ======================================  =======================
family         target                      horizon                                 all horizons
=============  ==========================  ======================================  =======================
tabl, mhtabl   book VENUE:SYMBOL           grid steps; "5,10" = one multi-horizon   5, 10, 30
                                           model
multiscale     SYMBOL (klines)             direction label, in first-scale bars     5, 60, 240
crossasset     SYMBOL,SYMBOL,.. (assets)   bars of its interval                     5, 15, 60
lobforecast    book VENUE:SYMBOL           grid steps, the decoder's horizons       one run: 12,24,36,60
=============  ==========================  ======================================  =======================
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import os
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from bot.config import INTERVALS_S
from models.checkpoint import save_checkpoint
from models.crossasset import CrossAssetConfig, CrossAssetModel
from models.datasets import (
    PURGED,
    TEST,
    TRAIN,
    VAL,
    DatasetError,
    KlineData,
    LobData,
    SampleSet,
    build_samples,
    load_data,
)
from models.features import KlineFeatureConfig, n_features, warmup_rows
from models.fit import Progress, TrainConfig, class_weights, fit, loss_for, predict
from models.inputs import CLASSES, SPEC_VERSION, TIME_BASE, InputSpec, feature_config_dict
from models.lobforecast import LOBForecastConfig, LOBForecaster
from models.multiscale import MultiScaleConfig, MultiScaleModel
from models.tabl import TABL, TABLConfig

__all__ = [
    "ALL_HORIZONS",
    "CHECKPOINT_FAMILY",
    "DEFAULT_HORIZON",
    "DEFAULT_INPUT_ARGS",
    "DEFAULT_MODEL_ARGS",
    "FAMILIES",
    "MODEL_CLASSES",
    "Job",
    "Progress",
    "TrainConfig",
    "class_weights",
    "code_version",
    "fit",
    "loss_for",
    "make_spec",
    "model_config",
    "plan_jobs",
    "predict",
    "run_job",
    "run_jobs",
    "source_hash",
]

FAMILIES = ("tabl", "mhtabl", "multiscale", "crossasset", "lobforecast")
ALL_HORIZONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "tabl": ((5,), (10,), (30,)),
    "mhtabl": ((5,), (10,), (30,)),
    "multiscale": ((5,), (60,), (240,)),
    "crossasset": ((5,), (15,), (60,)),
    "lobforecast": ((12, 24, 36, 60),),
}
DEFAULT_HORIZON = {"tabl": (10,), "mhtabl": (10,), "multiscale": (60,), "crossasset": (15,),
                   "lobforecast": (12, 24, 36, 60)}
CHECKPOINT_FAMILY = {"tabl": "tabl", "mhtabl": "tabl", "multiscale": "multiscale", "crossasset": "crossasset",
                     "lobforecast": "lobforecast"}

# Small models by default: the shared data is short and a worker runs on a CPU. Override with --model-arg.
DEFAULT_MODEL_ARGS: dict[str, dict[str, Any]] = {
    "tabl": {"hidden": [[60, 10], [120, 5]], "dropout": 0.1},
    "mhtabl": {"hidden": [[60, 10], [120, 5]], "dropout": 0.1, "heads": 4, "combine": "concat"},
    "multiscale": {"d_model": 32, "n_heads": 4, "n_layers": 1, "ff_mult": 2, "dropout": 0.1},
    "crossasset": {"d_model": 32, "n_heads": 4, "n_temporal_layers": 1, "n_cross_layers": 1, "ff_mult": 2,
                   "dropout": 0.1},
    "lobforecast": {"d_embed": 8, "d_model": 32, "n_heads": 4, "n_encoder_layers": 1, "n_decoder_layers": 1,
                    "d_ff": 64, "dropout": 0.1},
}
# Input options and their defaults (--input-arg key=value).
DEFAULT_INPUT_ARGS: dict[str, dict[str, Any]] = {
    "tabl": {"grid": "fine", "levels": 10, "window": 10, "extras": ["mid", "spread", "imbalance"],
             "price_mode": "relative", "size_mode": "log1p"},
    "multiscale": {"scales": ["1m", "5m", "15m", "1h"], "windows": [60, 48, 32, 24], "return_horizons": [5, 60, 240]},
    "crossasset": {"interval": "1m", "window": 64},
    "lobforecast": {"grid": "coarse", "levels": 5, "window": 120},
}
DEFAULT_INPUT_ARGS["mhtabl"] = DEFAULT_INPUT_ARGS["tabl"]


@dataclass(frozen=True)
class Job:
    family: str
    data: tuple[str, ...]
    out: Path
    target: str | None = None
    horizon: tuple[int, ...] | None = None
    venue: str | None = None
    stride: int = 1
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    threshold_bps: float | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    input_args: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = TrainConfig()  # noqa: RUF009 (frozen, so one shared default is safe, as before the split)
    command: str = ""

    def describe(self) -> str:
        h = ",".join(map(str, self.horizon or DEFAULT_HORIZON[self.family]))
        return f"{self.family:<11} target={self.target or '(default)':<24} horizon={h:<12} -> {self.out}"


# -- specs and models --------------------------------------------------------------------------------


def make_spec(job: Job, data: LobData | KlineData) -> tuple[InputSpec, str]:
    """The input spec template (no statistics yet) for ``job`` on ``data``, and the resolved target."""
    fam = CHECKPOINT_FAMILY[job.family]
    opts = {**DEFAULT_INPUT_ARGS[job.family], **job.input_args}
    horizons = list(job.horizon or DEFAULT_HORIZON[job.family])
    spec: InputSpec = {"version": SPEC_VERSION, "family": fam}
    if fam in ("tabl", "lobforecast"):
        if not isinstance(data, LobData):
            raise DatasetError(f"{job.family} trains on books CSVs (`python -m bot books`), not kline files")
        if opts["grid"] not in ("fine", "coarse"):
            raise DatasetError(f"grid must be fine or coarse, got {opts['grid']!r}")
        books = list(data.books)
        target = job.target or f"{books[0][0]}:{books[0][1]}"
        venue, _, symbol = target.partition(":")
        symbol = symbol.upper()
        if (venue, symbol) not in data.books:
            raise DatasetError(f"target {target} is not a book in the data (have {[f'{v}:{s}' for v, s in books]})")
        spec |= {"kind": "lob", "time_base": TIME_BASE, "grid": opts["grid"], "interval_ms": data.interval_ms,
                 "levels": int(opts["levels"]), "window": int(opts["window"])}
        if fam == "tabl":
            spec |= {"venue": venue, "symbol": symbol, "extras": list(opts["extras"]),
                     "price_mode": opts["price_mode"], "size_mode": opts["size_mode"],
                     "labels": {"kind": "mid_return_3class", "horizons": horizons, "classes": list(CLASSES)}}
        else:
            venues = list(dict.fromkeys(v for v, _ in books))
            pairs = list(dict.fromkeys(s for _, s in books))
            spec |= {"venues": venues, "pairs": pairs, "target": [venue, symbol],
                     "labels": {"kind": "book_forecast", "horizons": horizons}}
        return spec, f"{venue}:{symbol}"
    if not isinstance(data, KlineData):
        raise DatasetError(f"{job.family} trains on kline files, not books CSVs")
    try:
        cfg = KlineFeatureConfig(**opts.get("features", {}))
    except (TypeError, ValueError) as e:
        raise DatasetError(f"bad --input-arg features: {e}") from e
    spec |= {"kind": "klines", "venue": data.venue, "features": feature_config_dict(cfg), "history": warmup_rows(cfg)}
    if fam == "multiscale":
        symbol = (job.target or sorted(data.bars)[0]).upper()
        scales = list(opts["scales"])
        unknown = [s for s in scales if s not in INTERVALS_S]
        if unknown:
            raise DatasetError(f"unknown scale(s) {unknown}; use {sorted(INTERVALS_S)}")
        if len(horizons) != 1:
            raise DatasetError("multiscale has one direction head: give one --horizon (or all)")
        spec |= {"symbol": symbol, "scales": scales, "intervals_s": [INTERVALS_S[s] for s in scales],
                 "windows": [int(w) for w in opts["windows"]],
                 "labels": {"kind": "log_return", "return_horizons": [int(h) for h in opts["return_horizons"]],
                            "direction_horizon": horizons[0], "classes": list(CLASSES)}}
        return spec, symbol
    assets = [a.upper() for a in (job.target.split(",") if job.target else sorted(data.bars))]
    if len(horizons) != 1:
        raise DatasetError("crossasset predicts one horizon: give one --horizon (or all)")
    spec |= {"symbol": assets[0], "assets": assets, "interval_s": INTERVALS_S[opts["interval"]],
             "window": int(opts["window"]),
             "labels": {"kind": "log_return", "horizon": horizons[0], "classes": list(CLASSES)}}
    return spec, ",".join(assets)


def model_config(job: Job, spec: InputSpec) -> Any:
    """The family's config dataclass from the spec's shapes plus defaults and --model-arg overrides."""
    args = {**DEFAULT_MODEL_ARGS[job.family], **job.model_args}
    fam = spec["family"]
    try:
        if fam == "tabl":
            args["hidden"] = tuple(tuple(int(n) for n in layer) for layer in args.get("hidden", ()))
            d = 4 * spec["levels"] + len(spec["extras"])
            return TABLConfig(n_features=d, window=spec["window"], n_horizons=len(spec["labels"]["horizons"]), **args)
        if fam == "multiscale":
            return MultiScaleConfig(scales=tuple(spec["scales"]), windows=tuple(spec["windows"]),
                                    n_features=n_features(KlineFeatureConfig(**spec["features"])),
                                    horizons=tuple(spec["labels"]["return_horizons"]), **args)
        if fam == "crossasset":
            return CrossAssetConfig(assets=tuple(spec["assets"]), window=spec["window"],
                                    n_features=n_features(KlineFeatureConfig(**spec["features"])),
                                    horizon=spec["labels"]["horizon"], **args)
        venue, pair = spec["target"]
        return LOBForecastConfig(venues=tuple(spec["venues"]), pairs=tuple(spec["pairs"]), levels=spec["levels"],
                                 window=spec["window"], target_venue=spec["venues"].index(venue),
                                 target_pair=spec["pairs"].index(pair),
                                 horizons=tuple(spec["labels"]["horizons"]), **args)
    except TypeError as e:  # an unknown --model-arg
        raise DatasetError(f"bad --model-arg for {job.family}: {e}") from e


MODEL_CLASSES: dict[str, Callable[[Any], nn.Module]] = {
    "tabl": TABL, "multiscale": MultiScaleModel, "crossasset": CrossAssetModel, "lobforecast": LOBForecaster,
}


# -- jobs ---------------------------------------------------------------------------------------------


def code_version() -> str:
    """``git describe`` of the source tree when it is a git checkout, else the installed package version."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        # --no-optional-locks: read only, never refresh/write the index (others work in this tree)
        return subprocess.run(["git", "--no-optional-locks", *args], cwd=root, capture_output=True, text=True,
                              timeout=10, check=False)

    try:
        res = git("describe", "--always", "--tags")
        if res.returncode == 0 and res.stdout.strip():
            dirty = git("status", "--porcelain", "--", "bot", "models").stdout.strip()  # untracked files count
            return f"git:{res.stdout.strip()}" + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"bot {importlib.metadata.version('bot')}"
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def source_hash() -> str:
    """sha256 (16 hex) of the code that makes a model's inputs and weights: models/*.py and bot/klines.py, bot/ring.py,
    bot/grid_set.py.

    Stored beside the git version: it identifies the code even in an uncommitted tree or an installed package.
    """
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in [*sorted((root / "models").glob("*.py")), root / "bot" / "klines.py", root / "bot" / "ring.py",
              root / "bot" / "grid_set.py"]:  # fmt: skip
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _span(s: SampleSet, which: int) -> list[int] | None:
    t = s.times_ns[s.split == which]
    return [int(t[0] // 1_000_000), int(t[-1] // 1_000_000)] if len(t) else None


def run_job(job: Job, progress_stream: TextIO | None = None, data: LobData | KlineData | None = None) -> dict[str, Any]:
    """Build the samples, train, save the checkpoint; returns a summary (also stored in the checkpoint)."""
    if data is None:
        data = load_data(job.data, job.venue)
    spec, target = make_spec(job, data)
    samples = build_samples(spec, data, target=target, stride=job.stride, fractions=job.fractions,
                            threshold_bps=job.threshold_bps)
    spec = samples.spec
    train, val = samples.part(TRAIN), samples.part(VAL)
    if len(train) < 2:
        raise DatasetError(f"only {len(train)} training samples: the data is too short for this window/horizon")
    torch.manual_seed(job.train.seed)
    config = model_config(job, spec)
    model = MODEL_CLASSES[spec["family"]](config)
    label = f"[{job.family} {target} h={','.join(map(str, job.horizon or DEFAULT_HORIZON[job.family]))}] "
    result = fit(spec["family"], model, train, val, job.train, Progress(progress_stream, label))
    counts = {}
    if "direction" in train.y:
        lab = train.y["direction"].flatten().numpy()
        counts = {c: int((lab == i).sum()) for i, c in enumerate(CLASSES)}
    summary = {
        "family": job.family,
        "target": target,
        "horizons": list(job.horizon or DEFAULT_HORIZON[job.family]),
        "samples": {"train": len(train), "val": len(val), "test": int((samples.split == TEST).sum()),
                    "purged": int((samples.split == PURGED).sum())},
        "train_class_counts": counts,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "seconds": round(result.seconds, 2),
        "device": result.device,
        "amp": result.amp,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    extra = {
        "inputs": spec,
        "cli_family": job.family,
        "training": {
            **summary,
            "history": result.history,
            "config": dataclasses.asdict(job.train),
            "model_args": {**DEFAULT_MODEL_ARGS[job.family], **job.model_args},
            "class_weights": None if (w := class_weights(spec["family"], train)) is None else w.tolist(),
        },
        "data": {
            "kind": "lob" if isinstance(data, LobData) else "klines",
            "sources": data.sources,
            "venue": samples.venue,
            "symbol": samples.symbol,
            "stride": job.stride,
            "fractions": list(job.fractions),
            "spans_ms": {"train": _span(samples, TRAIN), "val": _span(samples, VAL), "test": _span(samples, TEST)},
        },
        "code_version": code_version(),
        "source_sha256_16": source_hash(),
        "command": job.command,
    }
    save_checkpoint(job.out, model, family=spec["family"], config=config, extra=_plain(extra))
    summary["out"] = str(job.out)
    summary["bytes"] = job.out.stat().st_size
    return summary


def _plain(x: Any) -> Any:
    """numpy scalars and tuples -> plain Python (checkpoints hold plain data only)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, bool | int | float | str) or x is None:
        return type(x)(x) if x is not None else None
    return x


def _run_in_worker(job: Job, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    return run_job(job)


def plan_jobs(
    family: str,
    data_items: Sequence[str],
    *,
    target: str | None,
    horizon: str | None,
    out: Path,
    venue: str | None = None,
    data: LobData | KlineData | None = None,
    **job_fields: Any,
) -> list[Job]:
    """Expand ``--target``/``--horizon`` (values, comma lists, or ``all``) into jobs with output paths."""
    if family not in FAMILIES:
        raise DatasetError(f"unknown family {family!r}; choose one of {FAMILIES}")
    if data is None and (target == "all" or not target):
        data = load_data(data_items, venue)
    if not target:
        assert data is not None
        if isinstance(data, LobData):
            target = "{}:{}".format(*next(iter(data.books)))
        else:
            target = ",".join(sorted(data.bars)) if family == "crossasset" else sorted(data.bars)[0]
    if target == "all":
        assert data is not None
        if family == "crossasset":
            targets: list[str | None] = [",".join(sorted(data.bars))] if isinstance(data, KlineData) else [None]
        elif isinstance(data, LobData):
            targets = [f"{v}:{s}" for v, s in data.books]
        else:
            targets = [*sorted(data.bars)]
    else:
        targets = [target]
    if horizon == "all":
        horizons: list[tuple[int, ...] | None] = list(ALL_HORIZONS[family])
    elif horizon:
        try:
            horizons = [tuple(int(h) for h in horizon.split(","))]
        except ValueError:
            raise DatasetError(f"--horizon must be integers (comma separated) or all, got {horizon!r}") from None
        if any(h < 1 for h in horizons[0] or ()):
            raise DatasetError(f"--horizon values must be >= 1, got {horizon!r}")
    else:
        horizons = [None]
    single = len(targets) * len(horizons) == 1
    jobs = []
    for t in targets:
        for h in horizons:
            if single and out.suffix == ".pt":
                path = out
            else:
                name = f"{family}_{_slug(t or 'default')}_h{'-'.join(map(str, h or DEFAULT_HORIZON[family]))}.pt"
                path = (out.parent if out.suffix == ".pt" else out) / name
            jobs.append(Job(family=family, data=tuple(data_items), out=path, target=t, horizon=h, venue=venue,
                            **job_fields))
    return jobs


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower()


def run_jobs(jobs: Sequence[Job], parallel: int = 1, stream: TextIO | None = None) -> list[dict[str, Any]]:
    """Run ``jobs`` in this process, or in ``parallel`` worker processes (each with its share of threads)."""
    for job in jobs:
        job.out.parent.mkdir(parents=True, exist_ok=True)
    if parallel <= 1 or len(jobs) <= 1:
        data_cache: dict[tuple[tuple[str, ...], str | None], LobData | KlineData] = {}
        out = []
        for job in jobs:
            key = (job.data, job.venue)
            if key not in data_cache:
                data_cache[key] = load_data(job.data, job.venue)
            out.append(run_job(job, stream, data_cache[key]))
        return out
    threads = max(1, (os.cpu_count() or 1) // parallel)
    with ProcessPoolExecutor(max_workers=parallel, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run_in_worker, job, threads) for job in jobs]
        return [f.result() for f in futures]
