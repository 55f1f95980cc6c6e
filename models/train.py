"""Training: one job = one family x target x horizon on one dataset; matrices of jobs; checkpoints.

    python -m bot train --family tabl --data books.csv [--target binance_spot:BTCUSDT] [--horizon 10]
    python -m bot train --family multiscale --data binance_spot=DIR --target all --horizon all --list-only

A job (``Job``) builds its samples with ``models.datasets.build_samples`` (time split, statistics from the
training span), builds the model from the family's config, and fits it (``fit``): AdamW, linear warm-up
then cosine decay, gradient clipping, class weights against imbalance, early stopping on the validation
span (the best epoch's weights are kept), mixed precision on CUDA. The checkpoint carries the input spec
(feature and normalisation config, label thresholds), the training history, the data spans and the code
version, so a worker and ``python -m bot evaluate`` rebuild everything from the file alone.

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
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
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
    index_x,
    load_data,
)
from models.features import KlineFeatureConfig, n_features, warmup_rows
from models.inputs import CLASSES, SPEC_VERSION, TIME_BASE, InputSpec, feature_config_dict
from models.lobforecast import LOBForecastConfig, LOBForecaster, loss_fn
from models.multiscale import MultiScaleConfig, MultiScaleModel
from models.tabl import TABL, TABLConfig

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
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 5  # epochs without a better validation loss before stopping
    clip_norm: float = 1.0
    warmup_frac: float = 0.05  # share of all steps spent warming the learning rate up
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # mixed precision, CUDA only


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
    train: TrainConfig = TrainConfig()
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


# -- losses -------------------------------------------------------------------------------------------


def forward(model: nn.Module, x: torch.Tensor | dict[str, torch.Tensor]) -> Any:
    return model(x)


def loss_for(family: str, out: Any, y: dict[str, torch.Tensor], class_weights: torch.Tensor | None) -> torch.Tensor:
    """The training loss of one batch (family-specific; see the module docstring of each family)."""
    if family == "tabl":
        logits = out  # (B, H, C)
        return F.cross_entropy(logits.flatten(0, 1).float(), y["direction"].flatten(), weight=class_weights)
    if family == "multiscale":
        ce = F.cross_entropy(out["direction_logits"].float(), y["direction"], weight=class_weights)
        return ce + F.mse_loss(out["returns"].float(), y["returns"])
    if family == "crossasset":
        ce = F.cross_entropy(out["direction_logits"].flatten(0, 1).float(), y["direction"].flatten(),
                             weight=class_weights)
        mse = F.mse_loss(out["returns"].float(), y["returns"])
        port = (out["portfolio_weights"].float() * y["returns"]).sum(-1)  # (B,) scaled portfolio return
        sharpe = port.mean() / (port.std() + 1e-6) if port.numel() > 1 else port.mean()
        total: torch.Tensor = ce + mse - 0.1 * sharpe
        return total
    loss: torch.Tensor = loss_fn(out.float(), y["book"])
    return loss


def class_weights(family: str, s: SampleSet) -> torch.Tensor | None:
    """Inverse class frequency over the training labels (mean weight 1), clipped to [0.2, 5]."""
    if family == "lobforecast":
        return None
    labels = s.y["direction"].flatten().numpy()
    counts = np.bincount(labels[labels >= 0], minlength=len(CLASSES)).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (len(CLASSES) * np.maximum(counts, 1)), 1.0)
    return torch.tensor(np.clip(w, 0.2, 5.0), dtype=torch.float32)


# -- the fitting loop ---------------------------------------------------------------------------------


class Progress:
    """A progress line on a terminal (redrawn in place), or one plain line per epoch otherwise."""

    def __init__(self, stream: TextIO | None = None, label: str = "") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = label
        self._last = 0.0

    def step(self, epoch: int, epochs: int, done: int, total: int, loss: float) -> None:
        if not self.tty:
            return
        now = time.perf_counter()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        width = 24
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r{self.label}epoch {epoch}/{epochs} [{bar}] {done}/{total} loss {loss:.4f}")
        self.stream.flush()

    def epoch(self, row: dict[str, Any]) -> None:
        text = (f"{self.label}epoch {row['epoch']}/{row['epochs']} train_loss {row['train_loss']:.4f} "
                f"val_loss {row['val_loss']:.4f} lr {row['lr']:.2e} {row['seconds']:.1f}s"
                + (" *" if row.get("best") else ""))
        self.stream.write(("\r" if self.tty else "") + text + "\n")
        self.stream.flush()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DatasetError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if name not in ("cpu", "cuda"):
        raise DatasetError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=True) for k, v in x.items()}
    return x.to(device, non_blocking=True)


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_loss: float
    seconds: float
    device: str
    amp: str | None


def fit(
    family: str, model: nn.Module, train: SampleSet, val: SampleSet, cfg: TrainConfig, progress: Progress | None = None
) -> FitResult:
    """Train ``model`` in place; keeps the weights of the epoch with the lowest validation loss."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model.to(device)
    weights = class_weights(family, train)
    weights = weights.to(device) if weights is not None else None
    amp_dtype = None
    if device.type == "cuda" and cfg.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train) / cfg.batch_size))
    total = steps_per_epoch * cfg.epochs
    warm = max(1, int(cfg.warmup_frac * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    constrain = getattr(model, "apply_constraints", None)
    history: list[dict[str, Any]] = []
    best = (math.inf, 0)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    t_start = time.perf_counter()
    stale = 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total_loss, seen = 0.0, 0
        for k, idx in enumerate(batches(len(train), cfg.batch_size, gen), 1):
            x = _to(index_x(train.x, idx), device)
            y = {key: v[idx].to(device) for key, v in train.y.items()}
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss = loss_for(family, forward(model, x), y, weights)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            scaler.step(opt)
            scaler.update()
            sched.step()
            if constrain is not None:
                constrain()
            total_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
            if progress:
                progress.step(epoch, cfg.epochs, k, steps_per_epoch, total_loss / seen)
        train_loss = total_loss / max(seen, 1)
        val_loss = evaluate_loss(family, model, val, weights, device, cfg.batch_size) if len(val) else train_loss
        improved = val_loss < best[0] - 1e-9
        if improved:
            best = (val_loss, epoch)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            stale = 0
        else:
            stale += 1
        row = {"epoch": epoch, "epochs": cfg.epochs, "train_loss": train_loss, "val_loss": val_loss,
               "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0, "best": improved}
        history.append(row)
        if progress:
            progress.epoch(row)
        if stale >= cfg.patience:
            break
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    hist = [{k: v for k, v in r.items() if k != "epochs"} for r in history]
    return FitResult(history=hist, best_epoch=best[1], best_val_loss=float(best[0]),
                     seconds=time.perf_counter() - t_start, device=str(device),
                     amp=None if amp_dtype is None else str(amp_dtype).removeprefix("torch."))


@torch.no_grad()
def evaluate_loss(family: str, model: nn.Module, s: SampleSet, weights: torch.Tensor | None, device: torch.device,
                  batch_size: int = 256) -> float:
    model.eval()
    total, n = 0.0, 0
    for idx in batches(len(s), batch_size, None):
        out = forward(model, _to(index_x(s.x, idx), device))
        y = {k: v[idx].to(device) for k, v in s.y.items()}
        total += float(loss_for(family, out, y, weights)) * len(idx)
        n += len(idx)
    return total / max(n, 1)


@torch.no_grad()
def predict(model: nn.Module, s: SampleSet, batch_size: int = 256) -> Any:
    """Model outputs over every sample of ``s`` (CPU), concatenated along the batch."""
    model.eval()
    outs = [forward(model, index_x(s.x, idx)) for idx in batches(len(s), batch_size, None)]
    if isinstance(outs[0], dict):
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    return torch.cat(outs)


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
    """sha256 (16 hex) of the code that makes a model's inputs and weights: models/*.py and bot/klines.py, bot/ring.py.

    Stored beside the git version: it identifies the code even in an uncommitted tree or an installed package.
    """
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in [*sorted((root / "models").glob("*.py")), root / "bot" / "klines.py", root / "bot" / "ring.py"]:
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
