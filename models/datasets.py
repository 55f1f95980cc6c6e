"""Sample sets: raw samples split by time, statistics fitted on the training span, normalised, labelled.

Training samples from real data, built through ``models.inputs`` so that training and serving agree.
``build_samples`` runs the whole pipeline, over three modules:

* ``models.loaders``: the data files (books CSVs, kline files) -> ``LobData`` / ``KlineData``;
* ``models.samples``: ``collect``, every usable sample's raw input and continuous labels (``Collected``);
* here: the time split, the statistics and label thresholds of the training span, normalisation and the
  model's targets (``split_by_time``, ``fit_spec``, ``finalize``) -> ``SampleSet``.

The names other code uses from the first two are re-exported here (``load_data``, ``collect``, ...).

Splits are by time (``split_by_time``): the first 60% of samples train, the next 20% validate (early
stopping), the last 20% test, and a sample whose label reaches the start of the next span is purged, so
nothing fitted on the training span reads a value stamped at or after the first validation sample.
``fit_spec`` then freezes the normalisation statistics and the
label thresholds/scales from the training samples only, and ``finalize`` normalises every sample with
``models.inputs.apply_norm``: the function ``build_input`` ends with.

Normalisation: per feature ``z = clip((x - mean) / scale, -10, 10)``. ``scale`` is the training span's
std, floored in the feature's own units (``_mean_std``): at least ``STD_REL_FLOOR`` (a tenth) of the
feature's mean absolute value. Without the floor, a feature that hardly moves while the model trains turns
the first ordinary value outside its narrow range into an enormous z-score: the spread of Binance spot
BTCUSDT is one tick (0.0016 bps of the mid) in every training row of the demo recording, std 1.2e-6 bps,
so a two-tick spread would be z = 1,400 and the 337-tick spread in its validation span was z = 460,000
(a validation cross-entropy of 1,264; that was the exchange-time grid of the export then: on the receive-time
grid the widest, 180 ticks, falls in the test span, z = 245,000). The clip bound (``NORM_CLIP``, stored in the spec as
``norm["clip"]``) catches what the floor cannot: that book, heavy tails, a regime the training span never
saw. Both apply to every family, in training exactly as in serving.

Labels (3 classes down/stationary/up, ``models.inputs.CLASSES``): r = mid[t+h] / mid[t] - 1 (books) or
log(close[t+h] / close[t]) (klines); up if r > θ, down if r < -θ, else stationary. θ defaults to the
1/3-quantile of |r| over the training span, which makes roughly a third of the training labels stationary
and is stored in the spec. Regression targets are r divided by its training-span standard deviation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models.inputs import InputSpec, Raw, _price_mask, _target_block, apply_norm, to_tensor
from models.loaders import DatasetError, KlineData, LobData, load_books_csv, load_data, load_klines
from models.samples import Collected, collect

__all__ = [
    "Collected",
    "DatasetError",
    "KlineData",
    "LobData",
    "SampleSet",
    "build_samples",
    "collect",
    "finalize",
    "fit_spec",
    "index_x",
    "load_books_csv",
    "load_data",
    "load_klines",
    "split_by_time",
]

TRAIN, VAL, TEST, PURGED = 0, 1, 2, -1
STATIONARY_QUANTILE = 1.0 / 3.0
# Normalisation (``_mean_std``, ``models.inputs.apply_norm``): the scale of a feature is at least a tenth of
# its typical magnitude (mean |x| over the training span), normalised values are clipped to +-NORM_CLIP.
STD_REL_FLOOR = 0.1
STD_ABS_FLOOR = 1e-8  # below this a feature has no usable scale at all (it was ~exactly 0): scale 1
NORM_CLIP = 10.0

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]


@dataclass
class SampleSet:
    """Normalised samples ready for a model, with their split and labels."""

    spec: InputSpec
    times_ns: I64
    label_end_ns: I64
    x: torch.Tensor | dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    past: dict[str, NDArray[Any]]
    split: NDArray[np.int8]
    venue: str
    symbol: str
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times_ns)

    def select(self, mask: NDArray[np.bool_] | NDArray[np.int64]) -> SampleSet:
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        ti = torch.from_numpy(idx)
        return replace(
            self,
            times_ns=self.times_ns[idx],
            label_end_ns=self.label_end_ns[idx],
            x=index_x(self.x, ti),
            y={k: v[ti] for k, v in self.y.items()},
            past={k: v[idx] for k, v in self.past.items()},
            split=self.split[idx],
        )

    def part(self, which: int) -> SampleSet:
        return self.select(self.split == which)


def index_x(x: torch.Tensor | dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
    if isinstance(x, dict):
        return {k: v[idx] for k, v in x.items()}
    return x[idx]


# -- splits, statistics, labels ------------------------------------------------------------------------


def split_by_time(c: Collected, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> NDArray[np.int8]:
    """TRAIN / VAL / TEST by sample order (time), PURGED where a label reaches into the next span."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise DatasetError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    n = len(c.times_ns)
    n_train = round(n * fractions[0])
    n_val = round(n * fractions[1])
    split = np.full(n, TEST, dtype=np.int8)
    split[:n_train] = TRAIN
    split[n_train : n_train + n_val] = VAL
    for span, nxt in ((TRAIN, n_train), (VAL, n_train + n_val)):
        if nxt < n:
            start = c.times_ns[nxt]
            split[(split == span) & (c.label_end_ns >= start)] = PURGED  # strict: no shared row either
    return split


def fit_spec(
    spec: InputSpec, c: Collected, train: NDArray[np.bool_], *, threshold_bps: float | None = None
) -> InputSpec:
    """A copy of ``spec`` with ``norm`` and the label thresholds/scales fitted on the ``train`` samples only.

    ``threshold_bps``: a fixed class threshold in basis points instead of the 1/3 quantile of |r|.
    """
    if not np.any(train):
        raise DatasetError("no training samples: the data is too short for this window and horizon")
    out = {**spec, "labels": dict(spec["labels"])}
    out["norm"] = _fit_norm(spec, _select_raw(c.raw, train))
    family = spec["family"]
    lab = out["labels"]
    if family == "tabl":
        lab["thresholds"] = [_threshold(c.targets["ret"][train, k], threshold_bps) for k in range(len(lab["horizons"]))]
    elif family == "multiscale":
        lab["return_scale"] = [_scale(c.targets["ret"][train, k]) for k in range(len(lab["return_horizons"]))]
        lab["threshold"] = _threshold(c.targets["ret_dir"][train], threshold_bps)
    elif family == "crossasset":
        ret = c.targets["ret"][train]
        lab["return_scale"] = [_scale(ret[:, a]) for a in range(ret.shape[1])]
        lab["thresholds"] = [_threshold(ret[:, a], threshold_bps) for a in range(ret.shape[1])]
    return out


def _threshold(r: F64, bps: float | None) -> float:
    if bps is not None:
        return float(bps) * 1e-4
    return float(np.quantile(np.abs(r), STATIONARY_QUANTILE))


def _scale(r: F64) -> float:
    s = float(np.std(r))
    return s if s > 0 else 1.0


def _select_raw(raw: Raw, mask: NDArray[np.bool_]) -> Raw:
    return {k: v[mask] for k, v in raw.items()} if isinstance(raw, dict) else raw[mask]


def _mean_std(x: NDArray[Any], axes: tuple[int, ...], rel_floor: float | F64 = STD_REL_FLOOR) -> tuple[F64, F64]:
    """Per-feature mean and scale over ``axes`` (NaN ignored): the one place normalisation is fitted.

    ``scale = max(std, rel_floor * mean|x|)``, i.e. a change of a tenth of what the feature typically is
    counts as at most one unit. That floor is in the feature's own units (bps, log sizes, RSI points), so
    it bites only where the std says "constant" but the values say "not zero": the one-tick spread
    (mean 0.0016 bps, std 1.2e-6 bps: a two-tick spread becomes z = 10 instead of 1,400), a resting size
    that never changed. Features that really vary keep their std: in the shipped checkpoints' training
    spans every book and kline feature has std >= 0.17 mean|x| (RSI, the closest: 0.18 to 0.23).
    ``rel_floor`` may be per feature: 0 for a price level (raw-price mode), whose |mean| says where the
    market is, not how far it moves. A scale still below ``STD_ABS_FLOOR`` (the feature was ~exactly 0,
    or all NaN, in the whole training span: nothing says what its units are) is 1, as it always was.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN feature: NaN statistics, handled below
        mean = np.nanmean(x, axis=axes)
        std = np.nanstd(x, axis=axes)
        magnitude = np.nanmean(np.abs(x), axis=axes)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    scale = np.fmax(np.where(np.isfinite(std), std, 0.0), np.asarray(rel_floor) * np.nan_to_num(magnitude))
    scale = np.where(scale >= STD_ABS_FLOOR, scale, 1.0)
    return mean, scale


def _fit_norm(spec: InputSpec, raw: Raw) -> dict[str, Any]:
    norm = _fit_mean_std(spec, raw)
    norm["clip"] = NORM_CLIP
    return norm


def _fit_mean_std(spec: InputSpec, raw: Raw) -> dict[str, Any]:
    family = spec["family"]
    if isinstance(raw, dict):  # multiscale: (N, T_s, F) per scale -> (F,) per scale
        stats = [_mean_std(raw[s], (0, 1)) for s in spec["scales"]]
        return {"mean": [m.tolist() for m, _ in stats], "std": [s.tolist() for _, s in stats]}
    if family == "crossasset":  # (N, A, T, F) -> (A, F)
        mean, std = _mean_std(raw, (0, 2))
        return {"mean": mean.tolist(), "std": std.tolist()}
    if family == "tabl":  # (N, T, D) -> (D,)
        rel = np.full(raw.shape[-1], STD_REL_FLOOR)
        if spec.get("price_mode") == "raw":  # price levels and the raw mid: location, not magnitude
            levels = spec["levels"]
            rel[: 4 * levels][_price_mask(levels)] = 0.0
            if "mid" in spec["extras"]:
                rel[4 * levels + list(spec["extras"]).index("mid")] = 0.0
        mean, std = _mean_std(raw, (0, 1), rel)
        return {"mean": mean.tolist(), "std": std.tolist()}
    # lobforecast (N, T, F): sizes per column; prices of a book share one scale around 0 (bps from mid), so
    # the map stays increasing and identical for every price column (the structural regulariser needs it).
    width = 4 * spec["levels"]
    mean, std = _mean_std(raw, (0, 1))
    px = _price_mask(spec["levels"])
    for b in range(raw.shape[2] // width):
        cols = slice(b * width, (b + 1) * width)
        prices = raw[:, :, cols][:, :, px]
        rms = float(np.sqrt(np.nanmean(prices**2))) if np.isfinite(prices).any() else 1.0
        mean[cols][px] = 0.0
        std[cols][px] = rms if rms >= STD_ABS_FLOOR else 1.0  # an RMS is a magnitude: no relative floor
    return {"mean": mean.tolist(), "std": std.tolist()}


def finalize(spec: InputSpec, c: Collected, split: NDArray[np.int8] | None = None) -> SampleSet:
    """Normalise with ``spec``'s frozen statistics (the ``build_input`` code) and make the model's targets."""
    x = to_tensor(spec, apply_norm(spec, c.raw))
    family = spec["family"]
    lab = spec["labels"]
    y: dict[str, torch.Tensor] = {}
    past: dict[str, NDArray[Any]] = {}
    if family == "tabl":
        th = np.asarray(lab["thresholds"])
        y["direction"] = torch.from_numpy(classify(c.targets["ret"], th))
        y["ret"] = torch.from_numpy(c.targets["ret"])
        past["direction"] = classify(c.past["ret"], th)
    elif family == "multiscale":
        scale = np.asarray(lab["return_scale"])
        y["returns"] = torch.from_numpy((c.targets["ret"] / scale).astype(np.float32))
        y["direction"] = torch.from_numpy(classify(c.targets["ret_dir"], lab["threshold"]))
        y["ret"] = torch.from_numpy(c.targets["ret"])
        y["ret_dir"] = torch.from_numpy(c.targets["ret_dir"])
        past["direction"] = classify(c.past["ret_dir"], lab["threshold"])
        past["ret"] = c.past["ret"]
    elif family == "crossasset":
        scale, th = np.asarray(lab["return_scale"]), np.asarray(lab["thresholds"])
        y["returns"] = torch.from_numpy((c.targets["ret"] / scale).astype(np.float32))
        y["direction"] = torch.from_numpy(classify(c.targets["ret"], th))
        y["ret"] = torch.from_numpy(c.targets["ret"])
        past["direction"] = classify(c.past["ret"], th)
        past["ret"] = c.past["ret"]
    else:
        t0 = _target_block(spec) * 4 * spec["levels"]
        width = 4 * spec["levels"]
        mean = np.asarray(spec["norm"]["mean"][t0 : t0 + width])
        std = np.asarray(spec["norm"]["std"][t0 : t0 + width])
        y["book"] = torch.from_numpy(((c.targets["book"] - mean) / std).astype(np.float32))
        y["mid_now"] = torch.from_numpy(c.targets["mid_now"])
        # persistence (the current target book) in the labels' space: normalised like them, NOT clipped
        now = np.asarray(c.raw)[:, -1, t0 : t0 + width]
        past["book"] = ((now - mean) / std).astype(np.float32)
    n = len(c.times_ns)
    return SampleSet(
        spec=spec, times_ns=c.times_ns, label_end_ns=c.label_end_ns, x=x, y=y, past=past,
        split=np.full(n, TEST, dtype=np.int8) if split is None else split, venue=c.venue, symbol=c.symbol,
    )  # fmt: skip


def classify(r: NDArray[Any], threshold: float | NDArray[Any]) -> NDArray[np.int64]:
    """0 down (r < -θ), 1 stationary, 2 up (r > θ); -1 where r is NaN (unknown)."""
    r = np.asarray(r, dtype=np.float64)
    th = np.asarray(threshold, dtype=np.float64)
    out = np.ones(r.shape, dtype=np.int64)
    out[r > th] = 2
    out[r < -th] = 0
    out[~np.isfinite(r)] = -1
    return out


def build_samples(
    spec: InputSpec,
    data: LobData | KlineData,
    *,
    target: str | None = None,
    stride: int = 1,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    threshold_bps: float | None = None,
) -> SampleSet:
    """collect -> split by time -> fit statistics on the training span -> finalize (training)."""
    c = collect(spec, data, target=target, stride=stride)
    split = split_by_time(c, fractions)
    fitted = fit_spec(spec, c, split == TRAIN, threshold_bps=threshold_bps)
    s = finalize(fitted, c, split)
    s.info = {"sources": data.sources, "stride": stride, "fractions": list(fractions)}
    return s
