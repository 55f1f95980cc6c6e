"""Finding and loading model checkpoints for the workers: the directory, the torch device, one file.

The checkpoint directory: ``models.dir`` left at its default (``models/checkpoints``) is the package's
shipped checkpoints (``SHIPPED_DIR``), wherever the bot runs from; any other value is used as given.
Loading (``load_checkpoint_file``) is safe on any thread: the app loads on a thread, a replay inline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

import models
from bot.config import ModelsConfig
from models.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
SHIPPED_DIR = Path(models.__file__).resolve().parent / "checkpoints"
DEFAULT_DIR = ModelsConfig.model_fields["dir"].default


def checkpoint_dir(configured: str | Path | None) -> Path:
    """The checkpoint directory: the shipped checkpoints for None or the config's default, else as given."""
    if configured is None or Path(configured) == DEFAULT_DIR:
        return SHIPPED_DIR
    return Path(configured)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise CheckpointError(f"unknown torch device {device!r}: {e}") from e


@dataclass
class LoadedCheckpoint:
    """What loading a checkpoint file gives (safe to produce on any thread)."""

    path: Path
    model: torch.nn.Module
    meta: CheckpointMeta
    sha256: str
    device: torch.device


def load_checkpoint_file(path: str | Path, device: str = "auto") -> LoadedCheckpoint:
    """Load and hash one checkpoint; CheckpointError for anything that would not serve."""
    p = Path(path)
    dev = pick_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} requested but CUDA is not available")
    model, meta = load_checkpoint(p, map_location=dev)
    spec = meta.extra.get("inputs") if isinstance(meta.extra, dict) else None
    if not isinstance(spec, dict):
        raise CheckpointError(f"{p}: no input spec (extra['inputs']); cannot build its inputs")
    if spec.get("family") != meta.family:
        raise CheckpointError(f"{p}: input spec is for {spec.get('family')!r}, the model is {meta.family!r}")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    return LoadedCheckpoint(p, model, meta, digest, dev)
