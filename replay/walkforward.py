"""Walk-forward replay: train on span k, replay span k+1 with that checkpoint, roll on.

    python -m bot replay binance_spot=KLINES/ --walk-forward --train-days 7 --test-days 3 --report DIR

A replay of the span a model was trained on tells how well it remembers, not how it trades: its weights
were fitted to exactly those prices (and early-stopped on them), so an in-sample backtest is optimistic
by construction, and the more a model can memorise the more it flatters. The honest backtest only ever
trades a model on data it has not seen: fold k trains every model the enabled strategies read on
``[t0 + k * test, t0 + k * test + train)`` and replays the ``test`` days after it with those checkpoints;
the next fold moves on by ``test``. The report covers only these out-of-sample spans and says so.

Each model is retrained exactly as its shipped checkpoint was (the training command stored in it:
family, target, horizon, input options, model size, stride), on the fold's training span, with its own
last fifth as the early-stopping validation (purged as training purges), under the checkpoint's own name,
so the strategies read it unchanged. Kline models only: the shared order-book sessions are minutes long.

Each fold's replay starts with the configured balances (a fold is scored on its own, the report chains
them) and reads the kline files from their start, so the bars before the fold's span fill the models'
windows; nothing is traded or logged before the span. ``DIR/events.jsonl`` is the folds' logs in order,
``DIR/folds/k/`` each fold's own run and checkpoints.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from bot.config import BotSettings
from bot.errors import ConfigError
from replay.engine import ReplayRequest, replay_settings, run_replay
from replay.sources import Source

log = structlog.get_logger(__name__)

NS_PER_DAY = 86_400 * 1_000_000_000
KLINE_FAMILIES = ("multiscale", "crossasset")


@dataclass(frozen=True)
class WalkForward:
    train_days: float = 7.0
    test_days: float = 3.0
    family: str | None = None  # only this family's models are retrained (and traded)
    epochs: int | None = None  # None: each checkpoint's own


def folds(span_ns: tuple[int, int], wf: WalkForward) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """((train_from, train_to), (test_from, test_to)) per fold, half-open, inside ``span_ns``."""
    if wf.train_days <= 0 or wf.test_days <= 0:
        raise ConfigError("--train-days and --test-days must be > 0")
    train, test = int(wf.train_days * NS_PER_DAY), int(wf.test_days * NS_PER_DAY)
    lo, hi = span_ns
    out = []
    k = 0
    while lo + k * test + train + test <= hi + 1:
        a = lo + k * test
        out.append(((a, a + train), (a + train, a + train + test)))
        k += 1
    if not out:
        days = (hi - lo) / NS_PER_DAY
        raise ConfigError(f"the sources span {days:.2f} days: too short for one fold of "
                          f"{wf.train_days:g} + {wf.test_days:g} days")
    return out


def _span(sources: Sequence[Source]) -> tuple[int, int]:
    """First and last bar close over all kline sources (read once, streamed)."""
    lo = hi = None
    for s in sources:
        for k in s.items():
            t = k.ts_recv  # type: ignore[union-attr]
            lo = t if lo is None else min(lo, t)
            hi = t if hi is None else max(hi, t)
    if lo is None or hi is None:
        raise ConfigError("walk-forward: the kline sources hold no bars")
    return lo, hi


def _train_jobs(settings: BotSettings, models_dir: Path, sources: Sequence[Source], wf: WalkForward) -> list[Any]:
    """One training job per model the enabled strategies read: the checkpoint's own command, re-planned."""
    import argparse

    from bot.train_cli import register as register_train
    from bot.workers import checkpoint_dir
    from models.checkpoint import load_checkpoint
    from models.train import TrainConfig, plan_jobs

    parser = argparse.ArgumentParser(prog="train", add_help=False)
    register_train(parser.add_subparsers(dest="command"))
    kline_paths: dict[str, list[str]] = {}
    for s in sources:
        if s.kind == "klines" and s.venue is not None:
            kline_paths.setdefault(s.venue.value, []).extend(str(p) for p in s.paths)
    directory = checkpoint_dir(settings.models.dir)
    jobs: list[Any] = []
    for c in settings.strategies:
        if not c.enabled:
            continue
        path = directory / f"{c.model}.pt"
        if not path.is_file():
            raise ConfigError(f"walk-forward: strategy {c.name!r} reads {c.model!r}, not in {directory}")
        _, meta = load_checkpoint(path)
        family = str(meta.extra.get("cli_family", meta.family))
        if family not in KLINE_FAMILIES or (wf.family is not None and family != wf.family):
            continue
        words = shlex.split(str(meta.extra.get("command", "")))
        if words[:3] != ["python", "-m", "bot"]:
            raise ConfigError(f"walk-forward: {path.name} records no training command to repeat")
        args = parser.parse_args(words[3:])
        venue = c.venue.value
        if venue not in kline_paths:
            continue
        cfg = TrainConfig(epochs=wf.epochs or args.epochs, batch_size=args.batch_size, lr=args.lr,
                          patience=args.patience, seed=args.seed, device="cpu", amp=False)  # fmt: skip
        planned = plan_jobs(
            family, [f"{venue}={p}" for p in kline_paths[venue]], target=args.target,
            horizon=args.horizon, out=models_dir / path.name, stride=args.stride, fractions=(0.8, 0.2, 0.0),
            threshold_bps=args.threshold_bps, model_args=_kv(args.model_arg), input_args=_kv(args.input_arg),
            train=cfg, command=f"walk-forward retrain of {path.name}",
        )  # fmt: skip
        jobs.extend(replace(j, out=models_dir / path.name) for j in planned[:1])
    if not jobs:
        raise ConfigError("walk-forward: no enabled strategy reads a kline model (multiscale, crossasset) on the "
                          "sources' venues")
    return jobs


def _kv(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:  # a list whose quotes the shell took: [1m,5m,15m]
            inner = value[1:-1] if value.startswith("[") and value.endswith("]") else None
            out[key] = [_scalar(x.strip()) for x in inner.split(",") if x.strip()] if inner is not None else value
    return out


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _sliced(data: Any, lo_ns: int, hi_ns: int) -> Any:
    """The training span of a ``KlineData``: the bars that close inside ``[lo_ns, hi_ns)``."""
    bars = {s: [b for b in bs if lo_ns <= b.ts_recv < hi_ns] for s, bs in data.bars.items()}
    return replace(data, bars=bars)


def run_walk_forward(
    settings: BotSettings, sources: Sequence[Source], out: Path, wf: WalkForward, *, speed: float | None = None,
    progress: bool = False, baseline: bool = True,
) -> dict[str, Any]:  # fmt: skip
    from models.datasets import load_data
    from models.train import run_job

    if any(s.kind != "klines" for s in sources):
        raise ConfigError("walk-forward replays kline files (VENUE=DIR); the recorded books are too short to train on")
    settings = replay_settings(settings, sources)
    span = _span(sources)
    plan = folds(span, wf)
    out.mkdir(parents=True, exist_ok=True)
    fold_info: list[dict[str, Any]] = []
    summaries = []
    data_cache: dict[tuple[str, ...], Any] = {}
    for k, (train, test) in enumerate(plan):
        fdir = out / "folds" / str(k)
        ck_dir = fdir / "checkpoints"
        ck_dir.mkdir(parents=True, exist_ok=True)
        trained = {}
        for job in _train_jobs(settings, ck_dir, sources, wf):
            if job.data not in data_cache:
                data_cache[job.data] = load_data(job.data, job.venue)
            log.info("walk_forward_training", fold=k, model=job.out.stem, train_ns=list(train))
            summary = run_job(job, data=_sliced(data_cache[job.data], *train))
            trained[job.out.stem] = {"samples": summary["samples"], "best_epoch": summary["best_epoch"]}
        extra = {"folds": [], "fold": k}
        only = tuple(c if c.model in trained else c.model_copy(update={"enabled": False})
                     for c in settings.strategies)  # the strategies of the models it trained
        fold_settings = settings.model_copy(update={"strategies": only})
        req = ReplayRequest(list(sources), fdir, speed=speed, from_ns=test[0], to_ns=test[1] - 1, progress=progress,
                            models_dir=ck_dir, run_name="walk_forward", extra=extra)  # fmt: skip
        summaries.append(run_replay(fold_settings, req))
        if baseline:
            base = replace(req, out=fdir / "baseline", progress=False, run_name="baseline")
            run_replay(fold_settings, base, baseline=True)
        fold_info.append({"train_ns": list(train), "test_ns": list(test), "checkpoints": trained})
    _combine(out, summaries, fold_info, baseline)
    return {"mode": "walk_forward", "folds": fold_info, "records": sum(s.get("records", 0) for s in summaries),
            "trading": _sum_trading(summaries)}


def _combine(out: Path, summaries: list[dict[str, Any]], fold_info: list[dict[str, Any]], baseline: bool) -> None:
    """DIR/events.jsonl and run.json over the folds (and DIR/baseline likewise): what the report reads."""
    for sub in ([""] + (["baseline"] if baseline else [])):
        target = out / sub if sub else out
        target.mkdir(parents=True, exist_ok=True)
        with open(target / "events.jsonl", "wb") as fh:
            for k in range(len(fold_info)):
                src = out / "folds" / str(k) / sub / "events.jsonl" if sub else out / "folds" / str(k) / "events.jsonl"
                with open(src, "rb") as part:
                    while chunk := part.read(1 << 20):
                        fh.write(chunk)
        first = summaries[0]
        run = {**first, "mode": "baseline" if sub else "walk_forward", "folds": fold_info,
               "span_ns": [fold_info[0]["test_ns"][0], fold_info[-1]["test_ns"][1]],
               "records": sum(s.get("records", 0) for s in summaries), "fold": None,
               "baseline": "baseline" if baseline and not sub else None}  # fmt: skip
        with open(target / "run.json", "w", encoding="utf-8") as fh:
            json.dump(run, fh, indent=1, sort_keys=True, default=str)
            fh.write("\n")


def _sum_trading(summaries: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in summaries:
        for k in ("orders", "fills", "denied"):
            out[k] = out.get(k, 0) + int((s.get("trading") or {}).get(k, 0))
    return out
