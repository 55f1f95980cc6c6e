"""Model inputs from the newest windows: one function for training and for serving, so they cannot drift.

The live workers (``bot/workers.py``) read windows from the ring buffers; the training datasets
(``models/datasets.py``) read the same windows from arrays positioned at a past time t
(``ArrayWindowSource``). Both call :func:`build_input` with the checkpoint's ``InputSpec``, so a sample in
training and the tensor a worker feeds the model at the same market state are the same bits
(tests/unit/test_inputs.py checks this on real data).

**WindowSource** (a Protocol; ``ArrayWindowSource`` here, a ring-buffer adapter in the workers)::

    lob(venue, symbol, grid, n)       -> (times (n,) int64 ns, rows (n, 4 * levels) float) | None
        grid "fine" (TABL: 1 s x 10 levels) or "coarse" (forecaster: 5 s x 5 levels), rows oldest first,
        columns of ``bot.ring.lob_columns``: bid_px_1, bid_sz_1, .., bid_px_N, bid_sz_N, ask_px_1, ask_sz_1, ..
        (the CSV columns of ``python -m bot books``); NaN for missing levels.
    klines(venue, symbol, interval_s, n, end_ms=None) -> (open_time_ms (n,) int64, ohlcv (n, 5) float) | None
        closed bars only, oldest first; with ``end_ms`` the last ``n`` bars opened at or before it (crossasset
        reads an asset that is ahead of the others up to their common newest bar; only then is it passed).

Either returns None when it holds fewer than ``n`` rows. A source may have more levels than a spec reads
(the first ``levels`` of each side are used).

**InputSpec**: a plain dict (JSON-able, stored in checkpoint ``extra["inputs"]``), written by the trainer::

    common:      version, family ("tabl" | "multiscale" | "crossasset" | "lobforecast"), kind ("lob" | "klines"),
                 norm {"mean": [...], "std": [...], "clip": 10.0} (frozen from the training span only; see
                 ``apply_norm``), labels {...}
    lob (tabl, lobforecast): time_base "recv": the grid's rows are stamped by local receive time, as the
                 rings and ``python -m bot books`` stamp them (``bot.ring``); a spec without it was trained
                 on the exchange-time grid of the export before, and a worker refuses it
    tabl:        venue, symbol, grid, interval_ms, levels, window, extras ["mid", "spread", "imbalance"],
                 price_mode "relative" | "raw", size_mode "log1p" | "raw"           -> (1, D, T)
    multiscale:  venue, symbol, scales ["1m", ...], intervals_s, windows, features (KlineFeatureConfig as
                 a dict), history (extra bars for the feature warm-up)              -> {scale: (1, T_s, F)}
    crossasset:  venue, assets, interval_s, window, features, history               -> (1, A, T, F)
    lobforecast: venues, pairs, target [venue, pair], grid, interval_ms, levels, window -> (1, T, F)

``labels`` (what the outputs mean; read by :func:`decode_output`):
    tabl:        horizons (grid steps), thresholds (one per horizon, on the mid return), classes
    multiscale:  return_horizons (base bars), return_scale (one per horizon), direction_horizon, threshold
    crossasset:  horizon (bars), return_scale (one per asset), thresholds (one per asset)
    lobforecast: horizons (grid steps); prices of the target book as bps from its mid at the newest step

**Windows are strict.** A window whose times are not evenly spaced at the spec's interval (a gap: the book
was invalid, a kline is missing), or books whose newest times differ, gives None: a plausible but wrong
input is worse than no prediction. Assets whose newest bars differ are read up to their common newest bar
(every asset's window then ends at the same bar time, as in training, where sample times are the bar
times all assets share); an asset lacking that bar gives None. Features use only the window (the past, up
to the newest row); the first ``history`` bars of a kline window only warm the features up and are cut off
afterwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from models.features import KlineFeatureConfig, kline_features, warmup_rows

__all__ = [
    "CLASSES",
    "SPEC_VERSION",
    "TIME_BASE",
    "ArrayWindowSource",
    "InputSpec",
    "WindowSource",
    "apply_norm",
    "build_input",
    "decode_output",
    "feature_config",
    "input_names",
    "raw_input",
    "required_history",
    "to_tensor",
]

SPEC_VERSION = 1
TIME_BASE = "recv"  # LOB specs: the time base of the grids they were trained on (local receive time)
CLASSES = ("down", "stationary", "up")
NS_PER_MS = 1_000_000
EXTRAS = ("mid", "spread", "imbalance")

Grid = Literal["fine", "coarse"]
InputSpec = dict[str, Any]
F64 = NDArray[np.float64]
Raw = NDArray[Any] | dict[str, NDArray[Any]]  # un-normalised features of one or many samples


class WindowSource(Protocol):
    """The newest windows of books and klines (see the module docstring for shapes and layout)."""

    def lob(self, venue: str, symbol: str, grid: Grid, n: int) -> tuple[NDArray[np.int64], NDArray[Any]] | None:
        ...

    def klines(
        self, venue: str, symbol: str, interval_s: int, n: int, end_ms: int | None = None
    ) -> tuple[NDArray[np.int64], NDArray[Any]] | None:
        ...


# -- the public entry points --------------------------------------------------------------------------


def build_input(
    spec: InputSpec, source: WindowSource, *, venue: str, symbol: str
) -> torch.Tensor | dict[str, torch.Tensor] | None:
    """The model input for one sample (batch dim 1) from ``source``'s newest windows, or None.

    ``venue``/``symbol``: the instrument the prediction is for. tabl and multiscale read that instrument;
    crossasset reads the spec's assets on ``venue`` (``symbol`` must be one of them); lobforecast reads the
    spec's venues x pairs (``venue``/``symbol`` must be its target). Raises ValueError for a spec this code
    cannot serve (unknown family, newer version) or an instrument the spec cannot serve; returns None when
    the source lacks history or the windows have gaps.
    """
    raw = raw_input(spec, source, venue=venue, symbol=symbol)
    if raw is None:
        return None
    return to_tensor(spec, apply_norm(spec, _add_batch(raw)))


def raw_input(spec: InputSpec, source: WindowSource, *, venue: str, symbol: str) -> Raw | None:
    """Un-normalised float64 features of one sample (no batch dim): the first half of ``build_input``.

    tabl (T, D); multiscale {scale: (T_s, F)}; crossasset (A, T, F); lobforecast (T, F).
    """
    _check_spec(spec)
    family = spec["family"]
    if family == "tabl":
        return _tabl_raw(spec, source, venue, symbol)
    if family == "multiscale":
        return _multiscale_raw(spec, source, venue, symbol)
    if family == "crossasset":
        if symbol not in spec["assets"]:
            raise ValueError(f"crossasset model reads {spec['assets']}; {symbol!r} is not one of them")
        return _crossasset_raw(spec, source, venue)
    if (venue, symbol) != tuple(spec["target"]):
        raise ValueError(f"lobforecast model predicts {spec['target']}, not {[venue, symbol]}")
    return _lobforecast_raw(spec, source)


def apply_norm(spec: InputSpec, raw: Raw) -> Raw:
    """``clip((x - mean) / std, -c, c)`` with the spec's frozen statistics, as float32 (batched or not, same bits).

    The one place a model's input is normalised, in training (``models.datasets.finalize``) and serving
    (``build_input``). ``c`` is ``norm["clip"]`` (``models.datasets.NORM_CLIP``, 10, for specs written since
    it exists): a value far outside the training span's range (a two-tick spread in a market that quoted
    one tick all through training, a volume burst) reaches the network as "c standard units", never as a
    z-score of thousands the network has never seen. A spec without ``clip`` (a checkpoint written before
    it) is not clipped: it keeps exactly the transform it was trained with. The std itself was floored
    when it was fitted (``models.datasets._mean_std``), so nothing here divides by a near-zero scale.

    Element-wise only (no reductions), so normalising a stack of samples gives exactly the bits of
    normalising each alone. NaN (a thin book's missing level) becomes 0, the training mean, for every
    family except lobforecast, whose embedding has a learned "missing" token; clipping leaves non-finite
    values to that handling, unchanged. Without ``norm`` (the trainer's first pass) the features only
    change dtype.
    """
    norm = spec.get("norm")
    keep_nan = spec["family"] == "lobforecast"
    clip = None if not norm or norm.get("clip") is None else float(norm["clip"])
    if isinstance(raw, dict):
        out: dict[str, F64] = {}
        for i, scale in enumerate(spec["scales"]):
            mean, std = (None, None) if not norm else (norm["mean"][i], norm["std"][i])
            out[scale] = _affine(raw[scale], mean, std, keep_nan, clip)
        return out
    if not norm:
        return _affine(raw, None, None, keep_nan)
    mean = np.asarray(norm["mean"], dtype=np.float64)
    std = np.asarray(norm["std"], dtype=np.float64)
    if spec["family"] == "crossasset":  # (A, F) statistics for (..., A, T, F) features
        mean, std = mean[:, None, :], std[:, None, :]
    return _affine(raw, mean, std, keep_nan, clip)


def to_tensor(spec: InputSpec, x: Raw) -> torch.Tensor | dict[str, torch.Tensor]:
    """Normalised (batched) arrays -> the tensor(s) the model's forward takes (tabl: features x time)."""
    if isinstance(x, dict):
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in x.items()}
    if spec["family"] == "tabl":
        x = np.swapaxes(x, -1, -2)  # (B, T, D) -> (B, D, T)
    return torch.from_numpy(np.ascontiguousarray(x))


def required_history(spec: InputSpec) -> list[dict[str, Any]]:
    """What a source must hold for ``build_input``: one dict per stream with its minimum row count ``n``.

    ``{"stream": "lob", "venue", "symbol" (None = the instrument predicted), "grid", "interval_ms", "n"}`` or
    ``{"stream": "klines", "venue" (None), "symbol" (None), "interval_s", "n"}``.
    """
    _check_spec(spec)
    family = spec["family"]
    if family == "tabl":
        return [{"stream": "lob", "venue": None, "symbol": None, "grid": spec["grid"],
                 "interval_ms": spec["interval_ms"], "n": spec["window"]}]
    if family == "multiscale":
        return [{"stream": "klines", "venue": None, "symbol": None, "interval_s": iv, "n": w + spec["history"]}
                for iv, w in zip(spec["intervals_s"], spec["windows"], strict=True)]
    if family == "crossasset":
        return [{"stream": "klines", "venue": None, "symbol": a, "interval_s": spec["interval_s"],
                 "n": spec["window"] + spec["history"]} for a in spec["assets"]]
    return [{"stream": "lob", "venue": v, "symbol": p, "grid": spec["grid"], "interval_ms": spec["interval_ms"],
             "n": spec["window"]} for v in spec["venues"] for p in spec["pairs"]]


def input_names(spec: InputSpec) -> list[str]:
    """Feature names along the feature axis (tabl: rows of D; lobforecast: ``venue/pair/column``)."""
    family = spec["family"]
    if family == "tabl":
        return _lob_names(spec["levels"]) + list(spec["extras"])
    if family in ("multiscale", "crossasset"):
        from models.features import feature_names

        return feature_names(feature_config(spec))
    return [f"{v}/{p}/{c}" for v in spec["venues"] for p in spec["pairs"] for c in _lob_names(spec["levels"])]


def feature_config(spec: InputSpec) -> KlineFeatureConfig:
    """The spec's kline feature config as the dataclass."""
    return KlineFeatureConfig(**spec["features"])


def feature_config_dict(cfg: KlineFeatureConfig) -> dict[str, Any]:
    """A KlineFeatureConfig as plain data (tuples -> lists) for the spec."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def decode_output(spec: InputSpec, output: torch.Tensor | Mapping[str, torch.Tensor] | Sequence[Any]) -> dict[str, Any]:
    """A model's raw output for ONE sample (batch dim 1) in the units a strategy reads, as plain numpy.

    tabl: ``probs`` (H, 3) per horizon (rows sum to 1), ``classes`` (H,) argmax, ``horizons``.
    multiscale: ``returns`` (log returns at ``return_horizons`` base bars), ``probs`` (3,) direction at
    ``direction_horizon``, ``scale_importance`` (S,).
    crossasset: per asset ``returns`` (A,) log returns, ``probs`` (A, 3), ``portfolio_weights`` (A,).
    lobforecast outputs a plain tensor in normalised space: use :func:`decode_book`.
    """
    family = spec["family"]
    if family == "tabl":
        logits = output[0] if isinstance(output, tuple | list) else output
        assert isinstance(logits, torch.Tensor)
        probs = torch.softmax(logits.detach().float()[0], dim=-1).cpu().numpy()  # (H, C)
        return {"horizons": list(spec["labels"]["horizons"]), "probs": probs, "classes": probs.argmax(-1)}
    if not isinstance(output, Mapping):
        raise TypeError(f"{family} outputs a dict of tensors, got {type(output).__name__}")
    labels = spec["labels"]
    if family == "multiscale":
        scale = np.asarray(labels["return_scale"])
        probs = torch.softmax(output["direction_logits"].detach().float()[0], dim=-1).cpu().numpy()
        return {
            "return_horizons": list(labels["return_horizons"]),
            "returns": output["returns"].detach().float()[0].cpu().numpy() * scale,
            "direction_horizon": labels["direction_horizon"],
            "probs": probs,
            "scale_importance": output["scale_importance"].detach().float()[0].cpu().numpy(),
        }
    if family == "crossasset":
        scale = np.asarray(labels["return_scale"])
        return {
            "assets": list(spec["assets"]),
            "horizon": labels["horizon"],
            "returns": output["returns"].detach().float()[0].cpu().numpy() * scale,
            "probs": torch.softmax(output["direction_logits"].detach().float()[0], dim=-1).cpu().numpy(),
            "portfolio_weights": output["portfolio_weights"].detach().float()[0].cpu().numpy(),
        }
    raise ValueError(f"decode_output: family {family!r} returns a tensor; use decode_book for lobforecast")


def decode_book(spec: InputSpec, pred: torch.Tensor, mid_now: float) -> F64:
    """lobforecast output (1, H, 4 * levels) in normalised space -> (H, 4 * levels) prices and sizes.

    ``mid_now``: the target book's mid at the newest input step (prices were bps offsets from it).
    """
    levels = spec["levels"]
    t0 = _target_block(spec) * 4 * levels
    mean = np.asarray(spec["norm"]["mean"][t0 : t0 + 4 * levels])
    std = np.asarray(spec["norm"]["std"][t0 : t0 + 4 * levels])
    y: F64 = pred.detach().double()[0].cpu().numpy() * std + mean  # (H, 4L): bps for prices, log1p for sizes
    px = _price_mask(levels)
    out = np.empty_like(y)
    out[:, px] = mid_now * (1.0 + y[:, px] * 1e-4)
    out[:, ~px] = np.expm1(y[:, ~px])
    return out


# -- windows over arrays (datasets, tests, replay) -----------------------------------------------------


class ArrayWindowSource:
    """A ``WindowSource`` over whole arrays, positioned at ``now_ns``: it sees only what existed by then.

    ``lob[(venue, symbol, grid)] = (times_ns, rows)``: a grid row stamped t is visible when t <= now.
    ``klines[(venue, symbol, interval_s)] = (open_time_ms, ohlcv)``: a bar is visible once it has closed,
    open + interval <= now. Arrays must be sorted by time. ``at(t)`` returns a source at another time,
    sharing the arrays (cheap: one binary search per window read).
    """

    def __init__(
        self,
        lob: Mapping[tuple[str, str, str], tuple[NDArray[np.int64], NDArray[Any]]] | None = None,
        klines: Mapping[tuple[str, str, int], tuple[NDArray[np.int64], NDArray[Any]]] | None = None,
        now_ns: int | None = None,
    ) -> None:
        self._lob = dict(lob or {})
        self._klines = dict(klines or {})
        self.now_ns = np.iinfo(np.int64).max if now_ns is None else int(now_ns)

    def at(self, now_ns: int) -> ArrayWindowSource:
        src = ArrayWindowSource.__new__(ArrayWindowSource)
        src._lob, src._klines, src.now_ns = self._lob, self._klines, int(now_ns)
        return src

    def lob(self, venue: str, symbol: str, grid: Grid, n: int) -> tuple[NDArray[np.int64], NDArray[Any]] | None:
        entry = self._lob.get((venue, symbol, grid))
        if entry is None:
            return None
        times, rows = entry
        end = int(np.searchsorted(times, self.now_ns, side="right"))
        if end < n or n < 1:
            return None
        return times[end - n : end], rows[end - n : end]

    def klines(
        self, venue: str, symbol: str, interval_s: int, n: int, end_ms: int | None = None
    ) -> tuple[NDArray[np.int64], NDArray[Any]] | None:
        entry = self._klines.get((venue, symbol, interval_s))
        if entry is None:
            return None
        opens, bars = entry
        # visible: open + interval <= now  <=>  open <= now - interval (all in ms)
        last_open = self.now_ns // NS_PER_MS - interval_s * 1000
        if end_ms is not None:
            last_open = min(last_open, int(end_ms))
        end = int(np.searchsorted(opens, last_open, side="right"))
        if end < n or n < 1:
            return None
        return opens[end - n : end], bars[end - n : end]


# -- per family ---------------------------------------------------------------------------------------


def _tabl_raw(spec: InputSpec, source: WindowSource, venue: str, symbol: str) -> F64 | None:
    got = source.lob(venue, symbol, spec["grid"], spec["window"])
    if got is None or not _evenly_spaced(got[0], spec["interval_ms"] * NS_PER_MS, spec["window"]):
        return None
    book = _levels(np.asarray(got[1], dtype=np.float64), spec["levels"])  # (T, 4L)
    return tabl_features(book, spec["levels"], spec["extras"], spec["price_mode"], spec["size_mode"])


def tabl_features(book: F64, levels: int, extras: Sequence[str], price_mode: str, size_mode: str) -> F64 | None:
    """(T, 4L) book rows -> (T, 4L + len(extras)): prices, sizes, then the extras in the given order.

    ``price_mode`` "relative": every price as bps from the NEWEST row's mid (the window then shows the
    price path, and a model trained at 60k serves at 90k); "raw": prices as they are (the paper's
    z-scored levels, which do not travel across price regimes). Sizes: log1p or raw. Extras per row:
    mid (same price mode), spread (bps of that row's mid, or raw), level-1 size imbalance in [-1, 1].
    None when the newest row has no two-sided top of book.
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # thin books: NaN, zeroed by apply_norm
        return _tabl_features(book, levels, extras, price_mode, size_mode)


def _tabl_features(book: F64, levels: int, extras: Sequence[str], price_mode: str, size_mode: str) -> F64 | None:
    px = _price_mask(levels)
    bid1, ask1 = book[:, 0], book[:, 2 * levels]
    mid = 0.5 * (bid1 + ask1)  # (T,)
    ref = mid[-1]
    if not np.isfinite(ref) or ref <= 0:
        return None
    out = np.empty((book.shape[0], 4 * levels + len(extras)))
    if price_mode == "relative":
        out[:, : 4 * levels][:, px] = (book[:, px] / ref - 1.0) * 1e4
    else:
        out[:, : 4 * levels][:, px] = book[:, px]
    sizes = book[:, ~px]
    out[:, : 4 * levels][:, ~px] = np.log1p(sizes) if size_mode == "log1p" else sizes
    for i, name in enumerate(extras):
        col = 4 * levels + i
        if name == "mid":
            out[:, col] = (mid / ref - 1.0) * 1e4 if price_mode == "relative" else mid
        elif name == "spread":
            out[:, col] = (ask1 - bid1) / mid * 1e4 if price_mode == "relative" else ask1 - bid1
        elif name == "imbalance":
            bsz, asz = book[:, 1], book[:, 2 * levels + 1]
            out[:, col] = (bsz - asz) / (bsz + asz)
        else:
            raise ValueError(f"unknown extra feature {name!r}; known: {EXTRAS}")
    return out


def _multiscale_raw(spec: InputSpec, source: WindowSource, venue: str, symbol: str) -> dict[str, F64] | None:
    cfg = feature_config(spec)
    out: dict[str, F64] = {}
    for scale, iv, window in zip(spec["scales"], spec["intervals_s"], spec["windows"], strict=True):
        feats = _kline_window(source, venue, symbol, iv, window, spec["history"], cfg)
        if feats is None:
            return None
        out[scale] = feats
    return out


def _crossasset_raw(spec: InputSpec, source: WindowSource, venue: str) -> F64 | None:
    cfg = feature_config(spec)
    iv, window, history = spec["interval_s"], spec["window"], spec["history"]
    n = window + history
    windows = []
    for asset in spec["assets"]:
        got = source.klines(venue, asset, iv, n)
        if got is None:
            return None
        windows.append(got)
    common = min(int(got[0][-1]) for got in windows)  # the newest bar every asset has closed
    per_asset = []
    for asset, got in zip(spec["assets"], windows, strict=True):
        if int(got[0][-1]) != common:  # this asset is ahead: its window up to the common bar
            got = source.klines(venue, asset, iv, n, end_ms=common)
            if got is None or int(got[0][-1]) != common:  # it lacks the common bar: no common clock
                return None
        feats = _kline_features_checked(got, iv, window, cfg)
        if feats is None:
            return None
        per_asset.append(feats)
    return np.stack(per_asset)  # (A, T, F)


def _lobforecast_raw(spec: InputSpec, source: WindowSource) -> F64 | None:
    levels, window = spec["levels"], spec["window"]
    blocks = []
    times0 = None
    for venue in spec["venues"]:
        for pair in spec["pairs"]:
            got = source.lob(venue, pair, spec["grid"], window)
            if got is None or not _evenly_spaced(got[0], spec["interval_ms"] * NS_PER_MS, window):
                return None
            if times0 is None:
                times0 = got[0]
            elif not np.array_equal(got[0], times0):  # every book on the same grid times
                return None
            block = lob_relative(_levels(np.asarray(got[1], dtype=np.float64), levels), levels)
            if block is None:
                return None
            blocks.append(block)
    return np.concatenate(blocks, axis=1)  # (T, F)


def lob_relative(book: F64, levels: int, mid_ref: float | None = None) -> F64 | None:
    """(T, 4L) rows -> prices as bps from ``mid_ref`` (default: the newest row's mid), sizes as log1p.

    The forecaster's price parametrisation (models/lobforecast.py): every price column of a book goes
    through the same increasing map, so its structural regulariser keeps its meaning.
    """
    if mid_ref is None:
        mid_ref = 0.5 * (book[-1, 0] + book[-1, 2 * levels])
    if not np.isfinite(mid_ref) or mid_ref <= 0:
        return None
    px = _price_mask(levels)
    out = np.empty_like(book)
    out[:, px] = (book[:, px] / mid_ref - 1.0) * 1e4
    out[:, ~px] = np.log1p(book[:, ~px])
    return out


# -- helpers ------------------------------------------------------------------------------------------


def _check_spec(spec: InputSpec) -> None:
    version = spec.get("version")
    if version != SPEC_VERSION:
        raise ValueError(f"input spec version {version!r} is not {SPEC_VERSION} "
                         "(a checkpoint from another code version?)")
    if spec.get("family") not in ("tabl", "multiscale", "crossasset", "lobforecast"):
        raise ValueError(f"input spec for unknown family {spec.get('family')!r}")


def _evenly_spaced(times: NDArray[np.int64], step_ns: int, n: int) -> bool:
    t = np.asarray(times, dtype=np.int64)
    return len(t) == n and bool(np.all(np.diff(t) == step_ns))


def _levels(rows: F64, levels: int) -> F64:
    """The first ``levels`` of each side from rows with N >= levels levels: (T, 4N) -> (T, 4L)."""
    n = rows.shape[1] // 4
    if rows.shape[1] != 4 * n or n < levels:
        raise ValueError(f"book rows have {rows.shape[1]} columns; need 4 x levels with >= {levels} levels")
    if n == levels:
        return rows
    return np.concatenate([rows[:, : 2 * levels], rows[:, 2 * n : 2 * n + 2 * levels]], axis=1)


def _price_mask(levels: int) -> NDArray[np.bool_]:
    """True for the price columns of a (4L,) book row."""
    mask = np.zeros(4 * levels, dtype=bool)
    mask[0::2] = True
    return mask


def _lob_names(levels: int) -> list[str]:
    return [f"{side}_{f}_{i}" for side in ("bid", "ask") for i in range(1, levels + 1) for f in ("px", "sz")]


def _target_block(spec: InputSpec) -> int:
    venue, pair = spec["target"]
    return int(spec["venues"].index(venue) * len(spec["pairs"]) + spec["pairs"].index(pair))


def _kline_window(
    source: WindowSource, venue: str, symbol: str, iv: int, window: int, history: int, cfg: KlineFeatureConfig
) -> F64 | None:
    got = source.klines(venue, symbol, iv, window + history)
    if got is None:
        return None
    return _kline_features_checked(got, iv, window, cfg)


def _kline_features_checked(
    got: tuple[NDArray[np.int64], NDArray[Any]], iv: int, window: int, cfg: KlineFeatureConfig
) -> F64 | None:
    opens, bars = got
    if not np.all(np.diff(np.asarray(opens, dtype=np.int64)) == iv * 1000):
        return None  # a missing bar: the features would straddle a hole
    b = np.asarray(bars, dtype=np.float64)
    feats = kline_features(b[:, 0], b[:, 1], b[:, 2], b[:, 3], b[:, 4], cfg)[-window:].astype(np.float64)
    if not np.all(np.isfinite(feats)):
        return None
    return feats


def default_history(cfg: KlineFeatureConfig) -> int:
    """Bars fetched before a kline window so that every feature row inside it is defined."""
    return warmup_rows(cfg)


def _add_batch(raw: Raw) -> Raw:
    if isinstance(raw, dict):
        return {k: v[None] for k, v in raw.items()}
    return raw[None]


def _affine(x: F64, mean: Any, std: Any, keep_nan: bool, clip: float | None = None) -> F64:
    y = np.asarray(x, dtype=np.float64)
    if mean is not None:
        y = (y - np.asarray(mean, dtype=np.float64)) / np.asarray(std, dtype=np.float64)
        if clip is not None:  # finite values only: NaN and +-inf go to the handling below, as before
            y = np.where(np.isfinite(y), np.clip(y, -clip, clip), y)
    y = y.astype(np.float32)
    if not keep_nan:
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    return y
