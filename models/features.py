"""Kline features for one resolution, computed strictly from the past.

numpy in (five 1-D OHLCV arrays of one scale: 1m, 5m, 1h, ...), float32 ``(N, F)`` out. Row ``t`` uses
only bars ``0..t``: every rolling statistic is a trailing window ending at ``t`` and the RSI is a
forward recursion, so changing a bar after ``t`` can never change row ``t`` (tests/unit/test_features.py
checks this bit for bit). The warm-up rows, where a feature's window is not yet full, are NaN; drop the
first :func:`warmup_rows` rows before feeding a model.

Features, in column order (defaults in brackets), with the warm-up (leading NaN rows) of each:

==========================  ===============================================  =========
name                        definition                                       warm-up
==========================  ===============================================  =========
``logret_k`` [1,3,6,12]     ``log(c[t] / c[t-k])``                            k
``vol_n`` [20]              sample std (ddof=1) of the last n 1-bar          n
                            log returns
``volume_ratio_n`` [20]     ``v[t] / mean(v[t-n+1..t])`` (current bar in     n - 1
                            the mean, so the ratio lies in [0, n]);
                            1.0 when the window's volume is all zero
``hl_range``                ``(h - l) / c``                                   0
``close_pos``               ``(c - l) / (h - l)``, 0.5 when ``h == l``        0
``ma_ratio_n`` [5,20,60]    ``c / SMA_n(c) - 1``                              n - 1
``rsi_n`` [14]              Wilder's RSI in [0, 100]: seeded with the plain   n
                            mean of the first n changes, then
                            ``avg = (avg * (n-1) + x) / n``; 100 when there
                            were only gains, 50 when nothing moved
==========================  ===============================================  =========

The features are raw (RSI in [0, 100], returns around 1e-3): standardise them with statistics of the
training split before they reach a network. Computation is float64 throughout; only the result is cast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "KlineFeatureConfig",
    "feature_names",
    "feature_warmups",
    "kline_features",
    "n_features",
    "warmup_rows",
]

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class KlineFeatureConfig:
    """Window lengths, in bars of the scale the features are computed on."""

    return_lags: tuple[int, ...] = (1, 3, 6, 12)
    vol_window: int = 20
    volume_window: int = 20
    ma_windows: tuple[int, ...] = (5, 20, 60)
    rsi_period: int = 14

    def __post_init__(self) -> None:
        # Lists arrive from JSON/TOML; keep the dataclass hashable and frozen in spirit.
        object.__setattr__(self, "return_lags", tuple(self.return_lags))
        object.__setattr__(self, "ma_windows", tuple(self.ma_windows))
        if not self.return_lags or any(k < 1 for k in self.return_lags):
            raise ValueError(f"return_lags must be non-empty positive ints, got {self.return_lags}")
        if not self.ma_windows or any(n < 1 for n in self.ma_windows):
            raise ValueError(f"ma_windows must be non-empty positive ints, got {self.ma_windows}")
        if self.vol_window < 2:
            raise ValueError(f"vol_window must be >= 2 (sample std), got {self.vol_window}")
        if self.volume_window < 1 or self.rsi_period < 1:
            raise ValueError("volume_window and rsi_period must be >= 1")


def feature_warmups(cfg: KlineFeatureConfig | None = None) -> dict[str, int]:
    """Feature name -> number of leading NaN rows, in column order."""
    cfg = cfg or KlineFeatureConfig()
    w: dict[str, int] = {f"logret_{k}": k for k in cfg.return_lags}
    w[f"vol_{cfg.vol_window}"] = cfg.vol_window
    w[f"volume_ratio_{cfg.volume_window}"] = cfg.volume_window - 1
    w["hl_range"] = 0
    w["close_pos"] = 0
    w.update({f"ma_ratio_{n}": n - 1 for n in cfg.ma_windows})
    w[f"rsi_{cfg.rsi_period}"] = cfg.rsi_period
    return w


def feature_names(cfg: KlineFeatureConfig | None = None) -> list[str]:
    return list(feature_warmups(cfg))


def n_features(cfg: KlineFeatureConfig | None = None) -> int:
    return len(feature_warmups(cfg))


def warmup_rows(cfg: KlineFeatureConfig | None = None) -> int:
    """Rows to drop so that every feature of every remaining row is defined (59 with the defaults)."""
    return max(feature_warmups(cfg).values())


def kline_features(
    open_: ArrayLike,
    high: ArrayLike,
    low: ArrayLike,
    close: ArrayLike,
    volume: ArrayLike,
    cfg: KlineFeatureConfig | None = None,
) -> NDArray[np.float32]:
    """Features of one kline series: ``(N, n_features(cfg))`` float32, NaN in the warm-up rows.

    Raises ValueError naming the column and first bad row for input that would silently corrupt the
    features: mismatched lengths, non-finite values, prices <= 0, negative volume, high < low.
    ``open_`` is validated but no default feature uses it (it equals the previous close on a gapless
    feed and adds nothing).
    """
    cfg = cfg or KlineFeatureConfig()
    _, h, lo, c, v = _validated(open_, high, low, close, volume)
    logc = np.log(c)
    ret1 = _lagged_diff(logc, 1)  # (N,), NaN at 0

    cols: list[F64] = [_lagged_diff(logc, k) for k in cfg.return_lags]
    cols.append(_rolling(ret1, cfg.vol_window, "std"))
    cols.append(_volume_ratio(v, cfg.volume_window))
    cols.append((h - lo) / c)
    span = h - lo
    cols.append(np.divide(c - lo, span, out=np.full_like(c, 0.5), where=span > 0))
    cols.extend(c / _rolling(c, n, "mean") - 1.0 for n in cfg.ma_windows)
    cols.append(_wilder_rsi(c, cfg.rsi_period))
    return np.stack(cols, axis=1).astype(np.float32)


# --- helpers -------------------------------------------------------------------------------------


def _validated(*arrays: ArrayLike) -> tuple[F64, F64, F64, F64, F64]:
    names = ("open", "high", "low", "close", "volume")
    out = [np.asarray(a, dtype=np.float64) for a in arrays]
    n = out[0].shape
    for name, a in zip(names, out, strict=True):
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
        if a.shape != n:
            raise ValueError(f"{name} has {a.shape[0]} rows, open has {n[0]}")
        _first_bad(name, ~np.isfinite(a), "is not finite")
    o, h, lo, c, v = out
    for name, a in zip(names[:4], out[:4], strict=True):
        _first_bad(name, a <= 0, "is not a positive price")
    _first_bad("volume", v < 0, "is negative")
    _first_bad("high", h < lo, "is below low")
    return o, h, lo, c, v


def _first_bad(name: str, bad: NDArray[np.bool_], what: str) -> None:
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] {what} ({int(bad.sum())} bad rows in all)")


def _lagged_diff(x: F64, k: int) -> F64:
    """``x[t] - x[t-k]``, NaN for ``t < k``."""
    out = np.full_like(x, np.nan)
    if k < len(x):
        out[k:] = x[k:] - x[:-k]
    return out


def _rolling(x: F64, n: int, stat: str) -> F64:
    """Trailing-window mean or sample std ending at each row; NaN until the window is full.

    Each window is reduced on its own (no running sums), so a row depends on its n inputs only and
    is bit-identical however the rest of the series changes. NaN inputs propagate (the std of the
    1-bar returns starts one row later than a plain window would).
    """
    out = np.full_like(x, np.nan)
    if n <= len(x):
        win = sliding_window_view(x, n)  # (N - n + 1, n)
        out[n - 1 :] = win.mean(axis=1) if stat == "mean" else win.std(axis=1, ddof=1)
    return out


def _volume_ratio(v: F64, n: int) -> F64:
    mean = _rolling(v, n, "mean")
    ratio = np.full_like(v, np.nan)
    full = ~np.isnan(mean)
    ratio[full] = 1.0  # all-zero window: "as usual"
    nz = full & (mean > 0)
    ratio[nz] = v[nz] / mean[nz]
    return ratio


def _wilder_rsi(c: F64, n: int) -> F64:
    out = np.full_like(c, np.nan)
    if len(c) <= n:
        return out
    d = np.diff(c)  # d[i] = c[i+1] - c[i]
    gain, loss = np.maximum(d, 0.0), np.maximum(-d, 0.0)
    avg_g, avg_l = float(gain[:n].mean()), float(loss[:n].mean())
    out[n] = _rsi(avg_g, avg_l)
    for t in range(n + 1, len(c)):  # a recursion: inherently causal, ~40k rows in a few ms
        avg_g = (avg_g * (n - 1) + gain[t - 1]) / n
        avg_l = (avg_l * (n - 1) + loss[t - 1]) / n
        out[t] = _rsi(avg_g, avg_l)
    return out


def _rsi(avg_gain: float, avg_loss: float) -> float:
    total = avg_gain + avg_loss
    return 50.0 if total == 0.0 else 100.0 * avg_gain / total
