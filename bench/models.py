"""Model benchmark: inference latency at batch 1 and 16, and training throughput, per model family.

    python bench/models.py [--device auto|cpu|cuda] [--threads N] [--repeat N] [--only FAMILY,..] [--json OUT]

Every family (tabl, mhtabl, multiscale, crossasset, lobforecast) is measured in two configurations:

* **ckpt**: the config of the shipped checkpoint (``models/checkpoints/*.pt``, rebuilt by ``load_checkpoint``),
  which is ``DEFAULT_MODEL_ARGS`` of ``models/train.py`` on the checkpoint's input spec: the small models a
  worker serves today.
* **default**: the family's config dataclass with its own defaults (``TABLConfig()`` = the paper's stack C
  on 40 x 10; mhtabl adds the 4 heads of ``DEFAULT_MODEL_ARGS``; ``MultiScaleConfig()``, ``CrossAssetConfig()``,
  ``LOBForecastConfig()`` = 3 venues x 4 pairs x 120 steps): the sizes the model files are designed around,
  which ``--model-arg`` restores when training on your own data.

Inputs are random tensors of exactly the shapes the model takes. For a checkpoint they are derived from its
input spec (``extra["inputs"]``, read with ``models.inputs`` / ``models.features``) and checked against the
shapes its config implies; for a default config, from the config. Random values time the same as real ones.

What is measured, on the chosen device:

* **inference**: ``model(x)`` in eval mode under ``torch.inference_mode()``, at batch 1 and batch 16;
  ``--repeat`` timed calls each (default 30) after 3 untimed warm-up calls. Reported: median and p90 of
  the per-call wall time in ms, batch 16 per sample, and ``b16/b1`` = (batch-16 latency / 16) / batch-1
  latency, the batching gain (1 = batching buys nothing, 1/16 = 0.0625 = a batch of 16 costs one call).
* **training**: the step of ``models.train.fit``: forward, the family's real loss (``models.train.loss_for``,
  with class weights where the family uses them), backward, gradient clipping, AdamW step, and the TABL
  constraints, at ``TrainConfig().batch_size`` (64), in train mode (dropout on). ``max(3, repeat // 5)``
  timed steps after 2 warm-up steps (the first step allocates AdamW's state). Reported: samples/s from the
  median step time. On CUDA the forward and loss run under autocast (bf16, or fp16 with a GradScaler where
  bf16 is unsupported), as ``fit`` does with AMP; inference stays fp32, as the workers run it.
* **baseline**: a plain 2-layer MLP (Linear(in, 256), ReLU, Linear(256, out)) with the model's input size
  (all input values of one sample, flattened) and output size (all output values of one sample), timed
  call by call interleaved with the model, so both run in the same conditions; it trains on MSE. The
  ``b1 x mlp`` column is the model's batch-1 median over the MLP's.

Latency is wall time (``time.perf_counter``), with ``torch.cuda.synchronize()`` before and after each call
on CUDA. Beside it each call's process CPU time (``time.process_time``, all threads) is kept. ``cpu/wall``
(summed over the timed calls or steps) near ``--threads`` means every thread computed all along; below 1
with ``--threads 1`` means the process waited for a core held by other work (on a shared machine: read the
load average printed with the table). With one thread, ``b1 cpu`` (median CPU ms per batch-1 call) is what
the latency would be on an idle core, the figure that other work on the machine does not inflate, as in
``bench/ingest.py``. With more threads, CPU time also counts the OpenMP workers spinning after each parallel
region, so ``cpu/wall`` can exceed ``--threads`` and ``b1 cpu`` exceed the wall time. ``others`` (from
``/proc/stat``) is the cores other processes kept busy during a row: with ``--threads 2`` on a 2-core
machine, any other load makes every parallel region wait for a descheduled worker (calls of ~8-16 ms, a
scheduler slice, even for the MLP), so only rows with ``others`` near 0 show the model's own speed.
The garbage collector is off during timed loops.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Run as a script, this file's directory (bench/) heads sys.path, where this file, bench/models.py, would
# shadow the ``models`` package: the repository root goes in front of it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.checkpoint import FAMILIES as REGISTRY
from models.checkpoint import CheckpointError, load_checkpoint
from models.crossasset import CrossAssetConfig
from models.features import KlineFeatureConfig, n_features
from models.inputs import feature_config
from models.lobforecast import LOBForecastConfig
from models.multiscale import MultiScaleConfig
from models.tabl import TABLConfig
from models.train import CHECKPOINT_FAMILY, DEFAULT_MODEL_ARGS, FAMILIES, TrainConfig, loss_for

CHECKPOINTS = Path(__file__).resolve().parents[1] / "models" / "checkpoints"
BATCHES = (1, 16)
WARMUP_CALLS = 3
WARMUP_STEPS = 2
MLP_HIDDEN = 256

Shapes = tuple[int, ...] | dict[str, tuple[int, ...]]  # one sample's input shape(s), without the batch dim
Batch = torch.Tensor | dict[str, torch.Tensor]


@dataclass(frozen=True)
class Case:
    family: str  # the CLI family: tabl, mhtabl, multiscale, crossasset, lobforecast
    source: str  # "ckpt" or "default"
    config: Any
    shapes: Shapes
    model: nn.Module | None = None  # the checkpoint's model (eval mode); None: built from config
    path: str | None = None

    @property
    def base(self) -> str:
        """The registered family (mhtabl is a TABL): which model class and which loss."""
        return CHECKPOINT_FAMILY[self.family]


@dataclass
class Timing:
    """Per-call wall seconds and process CPU seconds (all threads)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def ms(self, q: float) -> float:
        return float(np.percentile(self.wall, q)) * 1e3

    def cpu_ms(self) -> float:
        """Median CPU ms per call: with one thread, the latency an idle machine would show."""
        return float(np.median(self.cpu)) * 1e3

    def cpu_per_wall(self) -> float:
        return sum(self.cpu) / max(sum(self.wall), 1e-12)


@dataclass
class Row:
    name: str
    source: str
    params: int
    in_size: int
    out_size: int
    latency: dict[int, Timing]
    train: Timing
    train_batch: int

    def summary(self) -> dict[str, Any]:
        lat = {f"b{b}": {"median_ms": t.ms(50), "p90_ms": t.ms(90), "per_sample_ms": t.ms(50) / b,
                         "cpu_median_ms": t.cpu_ms(), "cpu_per_wall": t.cpu_per_wall(), "calls": len(t.wall)}
               for b, t in self.latency.items()}
        step = float(np.median(self.train.wall))
        return {
            "name": self.name, "source": self.source, "params": self.params, "in_size": self.in_size,
            "out_size": self.out_size, "latency": lat, "batch_gain_b16_per_sample_over_b1": self.gain(),
            "train": {"batch": self.train_batch, "steps": len(self.train.wall), "median_step_ms": step * 1e3,
                      "samples_per_s": self.train_batch / step,
                      "best_samples_per_s": self.train_batch / min(self.train.wall),
                      "cpu_median_step_ms": self.train.cpu_ms(),
                      "cpu_per_wall": self.train.cpu_per_wall()},
        }

    def gain(self) -> float:
        return (self.latency[16].ms(50) / 16) / self.latency[1].ms(50)

    def samples_per_s(self) -> float:
        return self.train_batch / float(np.median(self.train.wall))


# -- cases: configs and input shapes --------------------------------------------------------------------


def shapes_from_config(base: str, config: Any) -> Shapes:
    """One sample's input shape(s) as the model's forward takes them."""
    if base == "tabl":
        return (config.n_features, config.window)  # (D, T)
    if base == "multiscale":
        return {s: (w, config.n_features) for s, w in zip(config.scales, config.windows, strict=True)}  # (T_s, F)
    if base == "crossasset":
        return (len(config.assets), config.window, config.n_features)  # (A, T, F)
    return (config.window, config.n_features)  # lobforecast: (T, F)


def shapes_from_spec(spec: dict[str, Any]) -> Shapes:
    """One sample's input shape(s) from a checkpoint's input spec (what ``models.inputs.build_input`` makes)."""
    family = spec["family"]
    if family == "tabl":
        return (4 * spec["levels"] + len(spec["extras"]), spec["window"])
    if family == "lobforecast":
        return (spec["window"], len(spec["venues"]) * len(spec["pairs"]) * 4 * spec["levels"])
    nf = n_features(feature_config(spec))
    if family == "multiscale":
        return {s: (w, nf) for s, w in zip(spec["scales"], spec["windows"], strict=True)}
    return (len(spec["assets"]), spec["window"], nf)


def default_config(family: str) -> Any:
    if family == "tabl":
        return TABLConfig()
    if family == "mhtabl":
        args = DEFAULT_MODEL_ARGS["mhtabl"]
        return TABLConfig(heads=args["heads"], combine=args["combine"])
    if family == "multiscale":
        return MultiScaleConfig(n_features=n_features(KlineFeatureConfig()))
    if family == "crossasset":
        return CrossAssetConfig(n_features=n_features(KlineFeatureConfig()))
    return LOBForecastConfig()


def load_cases(directory: Path, families: Sequence[str], device: torch.device) -> list[Case]:
    """For each family: every shipped checkpoint of it, then its default config."""
    paths = sorted(directory.glob("*.pt"))
    if not paths:
        raise CheckpointError(f"no checkpoints (*.pt) in {directory}")
    shipped: dict[str, list[Case]] = {f: [] for f in FAMILIES}
    for path in paths:
        model, meta = load_checkpoint(path, map_location=device)
        family = meta.extra.get("cli_family", meta.family)
        spec = meta.extra.get("inputs")
        if family not in shipped or not isinstance(spec, dict):
            raise CheckpointError(f"{path.name}: no known family / input spec (cli_family={family!r})")
        shapes = shapes_from_spec(spec)
        if shapes != shapes_from_config(meta.family, meta.config):
            raise CheckpointError(f"{path.name}: input spec shapes {shapes} disagree with the config's "
                                  f"{shapes_from_config(meta.family, meta.config)}")
        shipped[family].append(Case(family, "ckpt", meta.config, shapes, model, path.name))
    cases = []
    for family in families:
        cases += shipped[family]
        config = default_config(family)
        cases.append(Case(family, "default", config, shapes_from_config(CHECKPOINT_FAMILY[family], config)))
    return cases


def random_input(shapes: Shapes, batch: int, device: torch.device) -> Batch:
    if isinstance(shapes, dict):
        return {k: torch.randn(batch, *s, device=device) for k, s in shapes.items()}
    return torch.randn(batch, *shapes, device=device)


def numel(shapes: Shapes) -> int:
    if isinstance(shapes, dict):
        return sum(int(np.prod(s)) for s in shapes.values())
    return int(np.prod(shapes))


def random_targets(base: str, config: Any, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Labels of the shapes ``loss_for`` reads (classes drawn uniformly)."""
    def classes(*shape: int) -> torch.Tensor:
        return torch.randint(0, config.n_classes, shape, device=device)

    if base == "tabl":
        return {"direction": classes(batch, config.n_horizons)}
    if base == "multiscale":
        return {"direction": classes(batch), "returns": torch.randn(batch, len(config.horizons), device=device)}
    if base == "crossasset":
        a = len(config.assets)
        return {"direction": classes(batch, a), "returns": torch.randn(batch, a, device=device)}
    return {"book": torch.randn(batch, len(config.horizons), config.n_targets, device=device)}


def output_size(out: Any) -> int:
    """Values per sample of a batch-1 output (tensor or dict of tensors)."""
    if isinstance(out, dict):
        return sum(v[0].numel() for v in out.values())
    return int(out[0].numel())


# -- timing -----------------------------------------------------------------------------------------------


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have run since boot (``/proc/stat``, Linux), or None where unavailable."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        # user nice system idle iowait irq softirq steal: busy = all but idle and iowait
        ticks = [int(v) for v in fields[1:9]]
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class OtherLoad:
    """Cores that other processes kept busy while this one measured: ``with OtherLoad() as load: ...``."""

    def __init__(self) -> None:
        self.cores: float | None = None

    def __enter__(self) -> OtherLoad:
        self._busy, self._cpu, self._wall = machine_busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = machine_busy_seconds()
        if busy is not None and self._busy is not None:
            others = (busy - self._busy) - (time.process_time() - self._cpu)
            self.cores = max(0.0, others / (time.perf_counter() - self._wall))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_interleaved(calls: Sequence[Callable[[], object]], n: int, warmup: int, device: torch.device) -> list[Timing]:
    """Run each of ``calls`` ``warmup`` times untimed, then ``n`` times timed, call by call interleaved."""
    for _ in range(warmup):
        for call in calls:
            call()
    _sync(device)
    out = [Timing() for _ in calls]
    gc.collect()
    gc.disable()
    try:
        for _ in range(n):
            for call, timing in zip(calls, out, strict=True):
                c0 = time.process_time()
                t0 = time.perf_counter()
                call()
                _sync(device)
                timing.wall.append(time.perf_counter() - t0)
                timing.cpu.append(time.process_time() - c0)
    finally:
        gc.enable()
    return out


class MLP(nn.Module):
    """The baseline: flattened input -> Linear -> ReLU -> Linear -> flattened output."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, MLP_HIDDEN), nn.ReLU(), nn.Linear(MLP_HIDDEN, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.net(x)  # (B, out)
        return y


def make_train_step(
    model: nn.Module, x: Batch, loss: Callable[[Any], torch.Tensor], device: torch.device
) -> Callable[[], None]:
    """One step of ``models.train.fit`` (without the LR schedule, which costs nothing measurable)."""
    train_cfg = TrainConfig()
    amp_dtype = None
    if device.type == "cuda" and train_cfg.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    constrain = getattr(model, "apply_constraints", None)
    model.train()

    def step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            value = loss(model(x))
        opt.zero_grad(set_to_none=True)
        scaler.scale(value).backward()  # type: ignore[no-untyped-call]
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip_norm)
        scaler.step(opt)
        scaler.update()
        if constrain is not None:
            constrain()

    return step


def bench_case(case: Case, repeat: int, device: torch.device) -> tuple[Row, Row]:
    """The model's row and its MLP baseline's row."""
    torch.manual_seed(0)
    model_cls = REGISTRY[case.base][1]
    model = case.model if case.model is not None else model_cls(case.config).to(device)
    model.eval()
    in_size = numel(case.shapes)
    with torch.inference_mode():
        out_size = output_size(model(random_input(case.shapes, 1, device)))
    mlp = MLP(in_size, out_size).to(device).eval()

    latency: dict[int, Timing] = {}
    mlp_latency: dict[int, Timing] = {}
    for b in BATCHES:
        x = random_input(case.shapes, b, device)
        flat = torch.randn(b, in_size, device=device)
        with torch.inference_mode():
            latency[b], mlp_latency[b] = timed_interleaved(
                [partial(model, x), partial(mlp, flat)], repeat, WARMUP_CALLS, device
            )

    # training starts from fresh weights, as a training run does (and leaves the checkpoint's model alone)
    batch = TrainConfig().batch_size
    torch.manual_seed(0)
    trainee = model_cls(case.config).to(device)
    x = random_input(case.shapes, batch, device)
    y = random_targets(case.base, case.config, batch, device)
    weights = None if case.base == "lobforecast" else torch.ones(case.config.n_classes, device=device)
    step = make_train_step(trainee, x, lambda out: loss_for(case.base, out, y, weights), device)
    train_mlp = MLP(in_size, out_size).to(device)
    flat = torch.randn(batch, in_size, device=device)
    target = torch.randn(batch, out_size, device=device)
    mlp_step = make_train_step(train_mlp, flat, lambda out: F.mse_loss(out.float(), target), device)
    train, mlp_train = timed_interleaved([step, mlp_step], max(3, repeat // 5), WARMUP_STEPS, device)

    params = sum(p.numel() for p in model.parameters())
    name = case.family
    row = Row(name, case.source, params, in_size, out_size, latency, train, batch)
    base = Row("  mlp", case.source, sum(p.numel() for p in mlp.parameters()), in_size, out_size, mlp_latency,
               mlp_train, batch)
    return row, base


# -- the run ----------------------------------------------------------------------------------------------


HEAD = (f"{'model':<12} {'cfg':<7} {'params':>9} {'in':>6} {'out':>4} | {'b1 med':>7} {'b1 p90':>7} {'b1 cpu':>7} | "
        f"{'b16 med':>7} {'b16 p90':>7} {'b16/smp':>7} {'b16/b1':>6} {'cpu/wall':>8} | "
        f"{'train smp/s':>11} {'cpu/wall':>8} | {'b1 x mlp':>8} {'others':>6}")  # fmt: skip


def format_row(row: Row, mlp_b1_ms: float | None, others: float | None) -> str:
    b1, b16 = row.latency[1], row.latency[16]
    ratio = f"{b1.ms(50) / mlp_b1_ms:>7.1f}x" if mlp_b1_ms else f"{'':>8}"
    ratio += f" {others:>6.2f}" if others is not None else ""
    return (f"{row.name:<12} {row.source:<7} {row.params:>9,} {row.in_size:>6} {row.out_size:>4} | "
            f"{b1.ms(50):>7.3f} {b1.ms(90):>7.3f} {b1.cpu_ms():>7.3f} | {b16.ms(50):>7.3f} {b16.ms(90):>7.3f} "
            f"{b16.ms(50) / 16:>7.3f} {row.gain():>6.2f} {b16.cpu_per_wall():>8.2f} | "
            f"{row.samples_per_s():>11,.0f} {row.train.cpu_per_wall():>8.2f} | {ratio}")  # fmt: skip


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {cpu}, {os.cpu_count()} logical cores"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    return torch.device(name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="model benchmark: inference latency (batch 1, 16) and training "
                                            "throughput per family, against a 2-layer MLP")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto: cuda if any")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    p.add_argument("--repeat", type=int, default=30,
                   help="timed calls per batch size (default 30); training times max(3, repeat // 5) steps")
    p.add_argument("--only", default=None, metavar="FAMILY,..", help=f"a subset of {', '.join(FAMILIES)}")
    p.add_argument("--checkpoints", type=Path, default=CHECKPOINTS, help="directory of shipped *.pt")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write every figure as JSON")
    args = p.parse_args(argv)
    wanted = FAMILIES if args.only is None else tuple(f.strip() for f in args.only.split(",") if f.strip())
    unknown = [f for f in wanted if f not in FAMILIES]
    families = [f for f in FAMILIES if f in wanted]
    if unknown or not families:
        print(f"error: --only: unknown family {unknown}; choose from {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    if args.repeat < 3:
        print(f"error: --repeat must be >= 3 (a p90 needs a few calls), got {args.repeat}", file=sys.stderr)
        return 2
    if args.json is not None and not args.json.parent.is_dir():
        print(f"error: --json: directory {args.json.parent} does not exist", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        cases = load_cases(args.checkpoints, families, device)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    print(f"torch {torch.__version__}, {describe_device(device)}, {torch.get_num_threads()} thread(s), "
          f"repeat {args.repeat} (train: {max(3, args.repeat // 5)} steps of {TrainConfig().batch_size}), "
          f"load average {load_before[0]:.2f}")
    print("latency: wall ms per call (median, p90) under inference_mode; b1 cpu = median CPU ms per call;\n"
          "b16/smp = b16 median / 16; b16/b1 = b16/smp / b1 median (batching gain: 0.0625 = a batch of 16 costs\n"
          "one call, > 1 = batching hurts); cpu/wall = process CPU time / wall time over the timed calls or steps;\n"
          "train smp/s = training samples per second from the median step time; others = cores kept busy by\n"
          "other processes while the row (model and MLP) was measured: a shared machine's noise, row by row")
    print(HEAD)
    print("-" * len(HEAD))
    results: list[dict[str, Any]] = []
    for case in cases:
        with OtherLoad() as load:
            row, base = bench_case(case, args.repeat, device)
        print(format_row(row, base.latency[1].ms(50), load.cores))
        print(format_row(base, None, None))
        results.append({**row.summary(), "checkpoint": case.path, "config": dataclasses.asdict(case.config),
                        "other_processes_cores": load.cores, "mlp": base.summary()})
    load_after = os.getloadavg()
    seconds = time.perf_counter() - t_start
    print("-" * len(HEAD))
    print(f"ckpt = shipped checkpoint's config; default = the family's config defaults; mlp = Linear(in, "
          f"{MLP_HIDDEN}) ReLU Linear({MLP_HIDDEN}, out) on the row above's in/out sizes. "
          f"{seconds:.0f} s, load average {load_after[0]:.2f} at the end")
    if args.json is not None:
        doc = {"torch": str(torch.__version__), "device": describe_device(device), "threads": torch.get_num_threads(),
               "repeat": args.repeat, "load_average": [load_before[0], load_after[0]], "seconds": seconds,
               "results": results}
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
