"""``python -m bot train`` and ``python -m bot evaluate``: the command-line front of ``models/``.

    python -m bot train --family tabl --data books.csv --horizon 10 --epochs 30 --out checkpoints/
    python -m bot train --family multiscale --data binance_spot=DIR --target all --horizon all --list-only
    python -m bot evaluate checkpoints/tabl_binance-spot-btcusdt_h10.pt --data books.csv --json eval.json

Training data: a books CSV written by ``python -m bot books`` (tabl, mhtabl, lobforecast) or kline files
(multiscale, crossasset): ``SYMBOL_<n>m.csv`` files or directories, with their venue given as
``VENUE=PATH`` or ``--venue``. See models/train.py for targets and horizons per family and
models/checkpoints/README.md for the shipped checkpoints and the commands that made them.

torch and the models are imported only when a command runs, so the rest of the CLI starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bot.errors import BotError

FAMILIES = ("tabl", "mhtabl", "multiscale", "crossasset", "lobforecast")


def _key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that parses as JSON (numbers, lists, true) is taken as such."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BotError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise BotError(f"--split expects three fractions like 0.6,0.2,0.2, got {text!r}") from None
    if len(parts) != 3:
        raise BotError(f"--split expects three fractions like 0.6,0.2,0.2, got {text!r}")
    return parts[0], parts[1], parts[2]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser("train", help="train a model family on recorded books or kline files")
    t.add_argument("--family", required=True, choices=FAMILIES)
    t.add_argument("--data", required=True, nargs="+", metavar="PATH",
                   help="books CSV(s) from `python -m bot books`, or kline files/dirs (VENUE=PATH)")
    t.add_argument("--venue", default=None, help="venue of kline files given without VENUE=")
    t.add_argument("--target", default=None,
                   help="VENUE:SYMBOL (books), SYMBOL (multiscale), SYM,SYM,.. (crossasset), or all")
    t.add_argument("--horizon", default=None, help="steps ahead: N, N,M (one multi-horizon model) or all")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--patience", type=int, default=5, help="epochs without validation gain before stopping")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    t.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    t.add_argument("--stride", type=int, default=1, help="use every N-th sample time (klines: 1m bars)")
    t.add_argument("--split", default="0.6,0.2,0.2", help="train,validation,test fractions, in time order")
    t.add_argument("--threshold-bps", type=float, default=None,
                   help="fixed up/down threshold in bps (default: 1/3-quantile of |return| on the training span)")
    t.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="override a model config field")
    t.add_argument("--input-arg", action="append", metavar="KEY=VALUE",
                   help="override an input option (window, levels, grid, scales, windows, interval, ...)")
    t.add_argument("--out", type=Path, default=Path("checkpoints"), help="directory, or FILE.pt for one job")
    t.add_argument("--list-only", action="store_true", help="print the jobs and exit")
    t.add_argument("--parallel", type=int, default=1, help="worker processes for a matrix of jobs")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (one process)")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="score a checkpoint against baselines on a later span")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--data", required=True, nargs="+", metavar="PATH")
    e.add_argument("--venue", default=None, help="venue of kline files (default: the checkpoint's)")
    e.add_argument("--target", default=None, help="instrument to score (default: the one trained on)")
    e.add_argument("--span", default="after", choices=("after", "all"),
                   help="after: only samples from the checkpoint's test span on; all: every sample")
    e.add_argument("--stride", type=int, default=1)
    e.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the report as JSON")
    e.add_argument("--plots", type=Path, default=None, metavar="DIR", help="write attention plots (PNG)")
    e.set_defaults(func=_evaluate)


def _command_line() -> str:
    """The command as typed, for the checkpoint's record (empty when not run as ``python -m bot``)."""
    return " ".join(["python -m bot", *sys.argv[1:]]) if sys.argv[0].endswith("__main__.py") else ""


def _train(args: argparse.Namespace) -> int:
    try:
        import torch

        from models.train import TrainConfig, plan_jobs, run_jobs

        if args.threads:
            torch.set_num_threads(args.threads)
        if args.epochs < 1 or args.batch_size < 1 or args.parallel < 1:
            raise BotError("--epochs, --batch-size and --parallel must be >= 1")
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                          seed=args.seed, device=args.device, amp=not args.no_amp)
        jobs = plan_jobs(
            args.family, args.data, target=args.target, horizon=args.horizon, out=args.out, venue=args.venue,
            stride=args.stride, fractions=_fractions(args.split), threshold_bps=args.threshold_bps,
            model_args=_key_values(args.model_arg, "--model-arg"),
            input_args=_key_values(args.input_arg, "--input-arg"), train=cfg, command=_command_line(),
        )  # fmt: skip
        sys.stdout.write(f"{len(jobs)} job(s):\n" + "".join(f"  {j.describe()}\n" for j in jobs))
        if args.list_only:
            return 0
        for summary in run_jobs(jobs, parallel=args.parallel):
            sys.stdout.write(json.dumps(summary) + "\n")
    except (BotError, ValueError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    try:
        from models.evaluate import evaluate_checkpoint, format_report

        report, model, scored = evaluate_checkpoint(args.checkpoint, args.data, venue=args.venue, target=args.target,
                                                    span=args.span, stride=args.stride)
        sys.stdout.write(format_report(report) + "\n")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1) + "\n")
            sys.stdout.write(f"wrote {args.json}\n")
        if args.plots:
            from models.plots import plot_attention

            paths = plot_attention(model, scored, args.plots, prefix=args.checkpoint.stem + "_")
            sys.stdout.write("".join(f"wrote {p}\n" for p in paths) or "no attention plot for this family\n")
    except (BotError, ValueError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0
