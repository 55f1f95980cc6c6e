"""Attention pictures (PNG): what a trained model looked at, averaged over the scored samples.

* tabl / mhtabl: the last layer's temporal attention, one heat map per head: rows are the output logits
  (horizon x class), columns the time steps entering the layer (oldest left).
* multiscale: the scale importance (bar chart of the fusion weights) and the cross-scale attention
  (query scale x key scale, head-averaged).
* crossasset: the cross-asset attention (query asset x key asset, head-averaged).
* lobforecast: no attention map is exposed by the model; nothing is drawn.

matplotlib is optional (``pip install matplotlib``); without it :class:`PlotError` says so. The Agg
backend is used, so no display is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bot.errors import BotError
from models.datasets import SampleSet, index_x
from models.inputs import CLASSES


class PlotError(BotError):
    """Plots cannot be drawn (matplotlib missing)."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise PlotError("attention plots need matplotlib: pip install matplotlib") from e
    return plt


@torch.no_grad()
def attention_maps(model: torch.nn.Module, s: SampleSet, batch_size: int = 256) -> dict[str, NDArray[np.float64]]:
    """Sample-averaged attention of ``model`` over ``s``: name -> array (see the module docstring)."""
    family = s.spec["family"]
    model.eval()
    sums: dict[str, NDArray[np.float64]] = {}
    n = len(s)
    for i in range(0, n, batch_size):
        idx = torch.arange(i, min(i + batch_size, n))
        x = index_x(s.x, idx)
        if family == "tabl":
            _, attn = model(x, return_attention=True)  # (B, heads, H*C, T)
            parts = {"temporal_attention": attn}
        elif family == "multiscale":
            out = model(x, need_weights=True)
            parts = {"scale_importance": out["scale_importance"], "cross_scale": out["cross_attention_by_scale"]}
        elif family == "crossasset":
            out = model(x, need_weights=True)
            parts = {"cross_asset": out["cross_attention"].mean(dim=1)}  # (B, A, A), heads averaged
        else:
            return {}
        for k, v in parts.items():
            total = v.double().sum(dim=0).numpy()
            sums[k] = sums[k] + total if k in sums else total
    return {k: v / max(n, 1) for k, v in sums.items()}


def plot_attention(model: torch.nn.Module, s: SampleSet, out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Draw the family's attention pictures into ``out_dir``; returns the PNG paths written."""
    maps = attention_maps(model, s)
    if not maps:
        return []
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = s.spec
    written: list[Path] = []
    if "temporal_attention" in maps:
        attn = maps["temporal_attention"]  # (heads, H*C, T)
        rows = [f"h{h} {c}" for h in spec["labels"]["horizons"] for c in CLASSES]
        heads = attn.shape[0]
        fig, axes = plt.subplots(1, heads, figsize=(3.2 * heads + 1, 0.45 * len(rows) + 1.6), squeeze=False)
        for k in range(heads):
            ax = axes[0, k]
            im = ax.imshow(attn[k], aspect="auto", cmap="viridis")
            ax.set_title(f"head {k + 1}")
            ax.set_xlabel("step entering the TABL layer (oldest left)")
            ax.set_yticks(range(len(rows)), rows if k == 0 else [""] * len(rows))
            fig.colorbar(im, ax=ax, fraction=0.05)
        fig.suptitle(f"TABL temporal attention, mean of {len(s)} samples")
        written.append(_save(fig, out / f"{prefix}tabl_temporal_attention.png", plt))
    if "scale_importance" in maps:
        scales = spec["scales"]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
        ax1.bar(scales, maps["scale_importance"], color="tab:blue")
        ax1.set_title("scale importance (fusion weight)")
        ax1.set_ylim(0, max(1e-9, float(maps["scale_importance"].max())) * 1.15)
        im = ax2.imshow(maps["cross_scale"], cmap="viridis", vmin=0)
        ax2.set_xticks(range(len(scales)), scales)
        ax2.set_yticks(range(len(scales)), scales)
        ax2.set_xlabel("key scale")
        ax2.set_ylabel("query scale (newest bar)")
        ax2.set_title("cross-scale attention")
        fig.colorbar(im, ax=ax2, fraction=0.05)
        fig.suptitle(f"multi-scale attention, mean of {len(s)} samples")
        written.append(_save(fig, out / f"{prefix}multiscale_scale_importance.png", plt))
    if "cross_asset" in maps:
        assets = spec["assets"]
        fig, ax = plt.subplots(figsize=(1.3 * len(assets) + 2.5, 1.1 * len(assets) + 1.8))
        im = ax.imshow(maps["cross_asset"], cmap="magma", vmin=0)
        for i in range(len(assets)):
            for j in range(len(assets)):
                ax.text(j, i, f"{maps['cross_asset'][i, j]:.2f}", ha="center", va="center", color="tab:cyan")
        ax.set_xticks(range(len(assets)), assets)
        ax.set_yticks(range(len(assets)), assets)
        ax.set_xlabel("key asset (looked at)")
        ax.set_ylabel("query asset")
        ax.set_title(f"cross-asset attention, mean of {len(s)} samples")
        fig.colorbar(im, ax=ax, fraction=0.05)
        written.append(_save(fig, out / f"{prefix}crossasset_attention.png", plt))
    return written


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
