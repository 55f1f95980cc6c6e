"""The fitting loop: one model trained on a ``SampleSet``'s training span, early-stopped on its validation span.

``fit`` (settings in ``TrainConfig``): AdamW, linear warm-up then cosine decay, gradient clipping, class
weights against imbalance (``class_weights``), early stopping on the validation span (the best epoch's
weights are kept), mixed precision on CUDA. Also here: the family-specific training loss (``loss_for``),
the loss over a sample set (``evaluate_loss``) and the model's outputs over one (``predict``, used by
``models.evaluate``). Which model is fitted on which data, and the checkpoint it makes, is ``models.train``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.datasets import DatasetError, SampleSet, index_x
from models.inputs import CLASSES
from models.lobforecast import loss_fn

__all__ = [
    "FitResult",
    "Progress",
    "TrainConfig",
    "batches",
    "class_weights",
    "evaluate_loss",
    "fit",
    "forward",
    "loss_for",
    "predict",
    "resolve_device",
]


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
