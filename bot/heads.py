"""Per-family glue between a checkpoint and its Signals: which instruments it predicts, how it is called and
what its output means, and how samples of one family batch together.

Why a module of its own: this is the only code that knows what each family's output *means* (class
probabilities per horizon, returns and portfolio weights per asset, a forecast book in bps), so adding a
family is one ``Head`` subclass here and one entry in ``HEADS``; the worker machinery (bot/workers.py)
and the window source (bot/model_inputs.py) stay family-agnostic. Everything here runs on the model
thread (``forward``, ``decode``, ``collate``) except ``prepare``, which reads the rings on the loop.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bot.events import Venue
from models import inputs as model_inputs
from models.inputs import WindowSource

Key = tuple[Venue, str]

@dataclass(frozen=True)
class Target:
    """One ``build_input`` call per tick: the instrument passed to it and the signals its sample yields."""

    venue: Venue
    symbol: str
    symbols: tuple[str, ...]  # crossasset: every asset; otherwise (symbol,)


@dataclass(frozen=True)
class SignalFields:
    symbol: str
    classes: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()
    value_names: tuple[str, ...] = ()
    values: tuple[float, ...] = ()
    confidence: float | None = None
    attention: str = ""


def duration_label(seconds: float) -> str:
    """60 -> "1m", 5 -> "5s", 5400 -> "90m", 86400 -> "1d": the shortest exact unit."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _floats(a: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(a, dtype=np.float64).ravel())


def _fingerprint(tensors: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    return [(t._version, t.data_ptr()) for t in tensors]


@functools.cache
def _step_labels(steps: int) -> tuple[str, ...]:
    return tuple(f"t-{i}" for i in range(steps))


def _top(weights: Sequence[float], labels: Sequence[str], k: int = 3) -> str:
    order = sorted(range(len(weights)), key=lambda i: -weights[i])[:k]
    return " ".join(f"{labels[i]} {weights[i]:.2f}" for i in order)


class Head:
    """Per-family glue: the targets, the forward call (with attention) and the decoding of one sample."""

    def __init__(self, spec: Mapping[str, Any], config: Any) -> None:
        self.spec = spec
        self.config = config
        self.horizon = ""
        # (model, its parameters and buffers, their versions then, model.inference()): see ``frozen``
        self._frozen: tuple[torch.nn.Module, list[torch.Tensor], list[tuple[int, int]], Any] | None = None

    def trained_targets(self) -> list[Target]:
        raise NotImplementedError

    def venue_targets(self, venue: Venue) -> list[Target]:
        """The trained symbol(s) on another venue (``models.serve_on``); default: the trained symbol there."""
        return [Target(venue, t.symbol, t.symbols) for t in self.trained_targets()]

    def all_targets(self, keys: Sequence[Key]) -> list[Target]:
        return [Target(v, s, (s,)) for v, s in keys]

    def book_keys(self, target: Target) -> list[Key]:
        """The books that must be LIVE, one per signal symbol."""
        return [(target.venue, s) for s in target.symbols]

    def prepare(self, source: WindowSource, target: Target) -> Any:
        """Anything decoding needs from the windows, read on the loop right after the input (default none)."""
        return None

    def forward(self, model: torch.nn.Module, x: Any) -> Any:
        run = self.frozen(model)
        return run(x) if run is not None else model(x)

    def frozen(self, model: torch.nn.Module) -> Any:
        """The model's frozen inference function (``model.inference()``: the family's forward call with the
        same bits, less its per-call overhead), or None for a family without one or a model in training
        mode, or whose ``forward`` was replaced on the instance (a wrapper or a spy: it is called, as before).
        Made once per model and made again whenever one of its parameters or buffers changed in place
        (``Tensor._version``) or got other storage (``.data`` reassigned, as ``Module.to`` does), so it
        never serves weights other than the model's own (a parameter replaced by another object is not
        seen: serve a model, do not rebuild it in place)."""
        make = getattr(model, "inference", None)
        if make is None or model.training or "forward" in vars(model):
            return None
        f = self._frozen
        if f is not None and f[0] is model and _fingerprint(f[1]) == f[2]:
            return f[3]
        tensors = [*model.parameters(), *model.buffers()]
        run = make()
        self._frozen = (model, tensors, _fingerprint(tensors), run)
        return run

    def decode(self, out: Any, target: Target, prepared: Any) -> list[SignalFields]:
        raise NotImplementedError


class TablHead(Head):
    """Per-horizon class probabilities; attention: the top-3 time steps of the last TABL layer (t-0 newest)."""

    def __init__(self, spec: Mapping[str, Any], config: Any) -> None:
        super().__init__(spec, config)
        step_s = spec["interval_ms"] / 1000
        self.horizon = ",".join(duration_label(h * step_s) for h in spec["labels"]["horizons"])
        self.classes = tuple(spec["labels"].get("classes", model_inputs.CLASSES))

    def trained_targets(self) -> list[Target]:
        return [Target(Venue(self.spec["venue"]), self.spec["symbol"], (self.spec["symbol"],))]

    def forward(self, model: torch.nn.Module, x: Any) -> Any:
        # (logits (B, H, C), attention (B, heads, H*C, T_last)); TABL.inference: this call, the same bits
        run = self.frozen(model)
        return run(x) if run is not None else model(x, return_attention=True)

    def decode(self, out: Any, target: Target, prepared: Any) -> list[SignalFields]:
        d = model_inputs.decode_output(dict(self.spec), out)
        probs = np.asarray(d["probs"])  # (H, C)
        attn = out[1].float()[0].mean(dim=(0, 1)).cpu().numpy()  # (T_last,), oldest first
        steps = len(attn)
        return [SignalFields(
            symbol=target.symbol,
            classes=self.classes,
            probabilities=_floats(probs),
            confidence=float(probs[0].max()),
            attention=_top(list(attn[::-1]), _step_labels(steps)),
        )]


class MultiScaleHead(Head):
    """Direction probabilities and returns per horizon; attention: the top-3 scale importances."""

    def __init__(self, spec: Mapping[str, Any], config: Any) -> None:
        super().__init__(spec, config)
        labels = spec["labels"]
        base_s = spec["intervals_s"][0]
        self.horizon = duration_label(labels["direction_horizon"] * base_s)
        self.value_names = tuple(f"ret_{duration_label(h * base_s)}" for h in labels["return_horizons"])

    def trained_targets(self) -> list[Target]:
        return [Target(Venue(self.spec["venue"]), self.spec["symbol"], (self.spec["symbol"],))]

    def forward(self, model: torch.nn.Module, x: Any) -> Any:
        return model(x, need_weights=False)

    def decode(self, out: Any, target: Target, prepared: Any) -> list[SignalFields]:
        d = model_inputs.decode_output(dict(self.spec), out)
        probs = np.asarray(d["probs"])
        return [SignalFields(
            symbol=target.symbol,
            classes=tuple(model_inputs.CLASSES),
            probabilities=_floats(probs),
            value_names=self.value_names,
            values=_floats(d["returns"]),
            confidence=float(probs.max()),
            attention=_top(_floats(d["scale_importance"]), list(self.spec["scales"])),
        )]


class CrossAssetHead(Head):
    """One sample per venue, one signal per asset; attention: the other assets it attended most."""

    def __init__(self, spec: Mapping[str, Any], config: Any) -> None:
        super().__init__(spec, config)
        self.assets = tuple(spec["assets"])
        self.horizon = duration_label(spec["labels"]["horizon"] * spec["interval_s"])

    def trained_targets(self) -> list[Target]:
        return [Target(Venue(self.spec["venue"]), self.assets[0], self.assets)]

    def all_targets(self, keys: Sequence[Key]) -> list[Target]:
        have = set(keys)
        venues = sorted({v for v, _ in keys if all((v, a) in have for a in self.assets)})
        return [Target(v, self.assets[0], self.assets) for v in venues]

    def forward(self, model: torch.nn.Module, x: Any) -> Any:
        return model(x, need_weights=True)

    def decode(self, out: Any, target: Target, prepared: Any) -> list[SignalFields]:
        d = model_inputs.decode_output(dict(self.spec), out)
        probs = np.asarray(d["probs"])  # (A, C)
        cross = out["cross_attention"].float()[0].mean(dim=0).cpu().numpy()  # (A, A): query asset x key asset
        res = []
        for a, asset in enumerate(self.assets):
            others = [j for j in range(len(self.assets)) if j != a] or [a]
            res.append(SignalFields(
                symbol=asset,
                classes=tuple(model_inputs.CLASSES),
                probabilities=_floats(probs[a]),
                value_names=(f"ret_{self.horizon}", "weight"),
                values=(float(d["returns"][a]), float(d["portfolio_weights"][a])),
                confidence=float(probs[a].max()),
                attention=_top([float(cross[a, j]) for j in others], [self.assets[j] for j in others], k=2),
            ))
        return res


class LobForecastHead(Head):
    """The target book's predicted mid move and spread per horizon, in bps of the mid now; no attention."""

    def __init__(self, spec: Mapping[str, Any], config: Any) -> None:
        super().__init__(spec, config)
        step_s = spec["interval_ms"] / 1000
        labels = [duration_label(h * step_s) for h in spec["labels"]["horizons"]]
        self.horizon = ",".join(labels)
        self.value_names = tuple(f"mid_bps_{h}" for h in labels) + tuple(f"spread_bps_{h}" for h in labels)
        self.levels = int(spec["levels"])

    def trained_targets(self) -> list[Target]:
        venue, pair = self.spec["target"]
        return [Target(Venue(venue), pair, (pair,))]

    def venue_targets(self, venue: Venue) -> list[Target]:
        return []  # its venues are part of the architecture: it predicts its target book only

    def all_targets(self, keys: Sequence[Key]) -> list[Target]:
        return self.trained_targets()  # the target is part of the architecture

    def prepare(self, source: WindowSource, target: Target) -> Any:
        got = source.lob(target.venue.value, target.symbol, self.spec["grid"], 1)
        if got is None:
            return math.nan
        row = got[1][-1]
        return 0.5 * (float(row[0]) + float(row[2 * (len(row) // 4)]))  # (best bid + best ask) / 2

    def decode(self, out: Any, target: Target, prepared: Any) -> list[SignalFields]:
        mid_now = float(prepared)
        book = model_inputs.decode_book(dict(self.spec), out, mid_now)  # (H, 4L) prices and sizes
        bid1, ask1 = book[:, 0], book[:, 2 * self.levels]
        mid = 0.5 * (bid1 + ask1)
        mid_bps = (mid / mid_now - 1.0) * 1e4
        spread_bps = (ask1 - bid1) / mid * 1e4
        return [SignalFields(symbol=target.symbol, value_names=self.value_names,
                             values=_floats(mid_bps) + _floats(spread_bps))]


HEADS: dict[str, type[Head]] = {
    "tabl": TablHead,
    "multiscale": MultiScaleHead,
    "crossasset": CrossAssetHead,
    "lobforecast": LobForecastHead,
}


# -- batching ------------------------------------------------------------------------------------------


def batch_signature(x: Any) -> tuple[Any, ...]:
    """Input shapes: samples with equal signatures batch together (start-up windows may be shorter)."""
    if isinstance(x, Mapping):
        return tuple((k, tuple(v.shape)) for k, v in sorted(x.items()))
    return (tuple(x.shape),)


def collate(xs: Sequence[Any]) -> Any:
    """Samples of batch dim 1 (tensors, or dicts of tensors) -> one batch, concatenated on dim 0. One
    contiguous sample is its own batch (a concatenation would only copy it into the same layout)."""
    if len(xs) == 1:
        x = xs[0]
        if isinstance(x, torch.Tensor) and x.is_contiguous():
            return x
        if isinstance(x, Mapping) and all(isinstance(v, torch.Tensor) and v.is_contiguous() for v in x.values()):
            return x
    if isinstance(xs[0], Mapping):
        return {k: torch.cat([x[k] for x in xs]) for k in xs[0]}
    return torch.cat(list(xs))


def split_output(out: Any, i: int, n: int = 0) -> Any:
    """Sample ``i`` of a batched output, keeping batch dim 1 (what decode_output expects); ``n`` = 1: the
    batch is that one sample, returned as it is (the same values as its slice)."""
    if n == 1:
        return out
    if isinstance(out, torch.Tensor):
        return out[i : i + 1]
    if isinstance(out, Mapping):
        return {k: split_output(v, i) for k, v in out.items()}
    if isinstance(out, tuple | list):
        return type(out)(split_output(v, i) for v in out)
    return out


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, Mapping):
        return {k: v.to(device) for k, v in x.items()}
    return x.to(device)
