"""The report's pictures, as PNG bytes (matplotlib, Agg canvas, no pyplot state).

* ``equity.png``: the strategy's equity beside buy-and-hold and the no-model baseline, and its drawdown;
* ``positions.png``: each strategy's own position per symbol, as notional at the mid;
* ``trades.png``: each traded symbol's mid with the fills (buys ^, sells v) and the signals' calls
  (up / down, the first prediction of each signal) on it;
* ``attention.png``: per model with attention, TABL's temporal attention and the multi-scale model's scale
  importance as mean weights per label, the cross-asset attention as a symbol x attended-asset heatmap.

Deterministic: fixed sizes and dpi, the time axis in hours from the span's start, and PNGs saved with
``metadata={"Software": None}`` so the bytes carry no version stamp. matplotlib is optional (the ``plots``
extra): ``make_plots`` returns None without it.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from replay.metrics import Analysis, Curve, mids_at
from replay.report_data import Run
from replay.report_trades import position_paths
from replay.signal_metrics import predictions

SKIPPED = "plots skipped: matplotlib is not installed (pip install 'bot[plots]')"
DPI = 100
MAX_POINTS = 4000
NS = 1_000_000_000


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def make_plots(run: Run, an: Analysis) -> dict[str, bytes] | None:
    """name -> PNG bytes, or None when matplotlib is not installed."""
    if not available():
        return None
    out = {"equity.png": _equity(run, an), "positions.png": _positions(run, an), "trades.png": _trades(run, an)}
    att = _attention(an.report.get("attention") or {})
    if att is not None:
        out["attention.png"] = att
    return out


def _figure(rows: int, height: float = 2.6, width: float = 10.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, max(2.2, height * rows)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _hours(run: Run, an: Analysis, ts: np.ndarray) -> np.ndarray:
    """Hours of replayed data before each time: real hours from the span's start, except that stretches
    without prices (and walk-forward training spans) are left out, as the metrics leave them out."""
    t = an.grid.times
    ts = np.asarray(ts, dtype=np.float64)
    if len(t) < 2:
        out: np.ndarray = (ts - run.span_ns[0]) / NS / 3600.0
        return out
    step_h = an.grid.bar_s * an.grid.thinned / 3600.0
    at: np.ndarray = np.interp(ts, t.astype(np.float64), np.arange(len(t), dtype=np.float64)) * step_h
    return at


def _broken(run: Run, an: Analysis, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid values with a gap (NaN) between walk-forward test spans, so no line crosses a training span."""
    x, y = _hours(run, an, an.grid.times), np.asarray(values, dtype=np.float64)
    cut = np.cumsum([len(s) for s in an.grid.segments])[:-1]
    return np.insert(x, cut, np.nan), np.insert(y, cut, np.nan)


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= MAX_POINTS:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, MAX_POINTS).astype(np.int64))
    return x[idx], y[idx]


def _axis_label(run: Run, an: Analysis) -> str:
    start = f"hours from {np.datetime64(run.span_ns[0], 'ns').astype('datetime64[s]')} UTC"
    if an.grid.gaps or len(an.grid.segments) > 1:
        return start + " (replayed data only: gaps without prices and training spans left out)"
    return start


def _equity(run: Run, an: Analysis) -> bytes:
    fig = _figure(2)
    ax, dd = fig.subplots(2, 1, sharex=True)
    curves: list[tuple[Curve, str]] = [(an.strategy, "strategy"), (an.buy_and_hold, "buy-and-hold")]
    if an.baseline is not None and np.array_equal(an.baseline.times, an.strategy.times):
        curves.append((an.baseline, "no-model baseline"))
    for curve, label in curves:
        x, y = _broken(run, an, _on_grid(an, _chained(curve.returns, curve.equity[:1])))
        ax.plot(*_thin(x, y), label=label, linewidth=1.0)
    ax.set_ylabel("equity (quote)")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("equity" + (" (test spans only)" if run.mode == "walk_forward" else ""))
    eq = _on_grid(an, _chained(an.strategy.returns, an.strategy.equity[:1]))
    peak = np.maximum.accumulate(eq) if len(eq) else eq
    x, y = _thin(*_broken(run, an, 100.0 * (eq / peak - 1.0) if len(eq) else eq))
    dd.fill_between(np.nan_to_num(x), np.nan_to_num(y), 0.0, where=np.isfinite(y), color="tab:red", alpha=0.4,
                    linewidth=0)
    dd.set_ylabel("drawdown %")
    dd.set_xlabel(_axis_label(run, an))
    return _png(fig)


def _chained(returns: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The curve compounded from the grid returns (walk-forward: the test spans chained, as the metrics see
    them), starting at ``start`` (or 1)."""
    base = float(start[0]) if len(start) else 1.0
    return base * np.cumprod(np.concatenate([[1.0], 1.0 + np.asarray(returns, dtype=np.float64)]))


def _on_grid(an: Analysis, chained: np.ndarray) -> np.ndarray:
    """Chained values back on the grid points: each span's first point repeats the previous span's end."""
    out, j = [], 0
    for seg in an.grid.segments:
        out.append(chained[j : j + len(seg)])
        j += len(seg) - 1
    return np.concatenate(out) if out else np.zeros(0)


def _positions(run: Run, an: Analysis) -> bytes:
    fig = _figure(1, height=3.2)
    ax = fig.subplots()
    at = an.strategy.times
    paths = position_paths(run, an.fills, at)
    for (strategy, venue, symbol), qty in paths.items():
        notional = qty * np.nan_to_num(mids_at(run, (venue, symbol), at))
        x, y = _broken(run, an, notional)
        ax.step(*_thin(x, y), where="post", linewidth=1.0, label=f"{strategy} {venue}:{symbol}")
    if paths:
        ax.legend(loc="best", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no fills: no position was ever held", ha="center", va="center", transform=ax.transAxes)
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_ylabel("position notional (quote)")
    ax.set_xlabel(_axis_label(run, an))
    ax.set_title("positions over time (each strategy's own, from its fills)")
    return _png(fig)


def _trades(run: Run, an: Analysis) -> bytes:
    keys = sorted({(f.venue.value, f.symbol) for f in an.fills} | {(s.venue.value, s.symbol)
                  for s in run.events.signals if s.venue.value and (s.venue.value, s.symbol) in run.events.prices})
    keys = keys[:6] or sorted(run.events.prices)[:1]
    fig = _figure(max(1, len(keys)))
    axes = np.atleast_1d(fig.subplots(max(1, len(keys)), 1, sharex=True))
    if not keys:
        axes[0].text(0.5, 0.5, "no prices in the run", ha="center", va="center", transform=axes[0].transAxes)
    for ax, key in zip(axes, keys, strict=False):
        if key not in run.events.prices:
            ax.text(0.5, 0.5, "no prices in the run", ha="center", va="center", transform=ax.transAxes)
            continue
        ts, mid = run.events.prices[key]
        ax.plot(*_thin(_hours(run, an, ts), mid), color="black", linewidth=0.7, label="mid")
        for side, marker, color in (("buy", "^", "tab:green"), ("sell", "v", "tab:red")):
            fs = [f for f in an.fills if (f.venue.value, f.symbol) == key and f.side.value == side]
            if fs:
                ax.scatter(_hours(run, an, np.array([f.ts_recv for f in fs])), [float(f.price) for f in fs],
                           marker=marker, color=color, s=28, label=f"{side} fills", zorder=3)
        sig = [(s.ts_event, calls[0][2]) for s in run.events.signals
               if (s.venue.value, s.symbol) == key and (calls := predictions(s))]
        for call, color, label in ((1, "tab:blue", "signal up"), (-1, "tab:orange", "signal down")):
            t = np.array([ts_ for ts_, c in sig if c == call], dtype=np.int64)
            if len(t):
                ax.scatter(_hours(run, an, t), mids_at(run, key, t), marker=".", s=10, color=color, label=label,
                           zorder=2)
        ax.set_ylabel(f"{key[0]}:{key[1]}", fontsize=8)
        ax.legend(loc="best", fontsize=7)
    axes[-1].set_xlabel(_axis_label(run, an))
    axes[0].set_title("trades and signals on the mid")
    return _png(fig)


def _attention(att: dict[str, Any]) -> bytes | None:
    models = [m for m in sorted(att) if att[m].get("labels")]
    if not models:
        return None
    fig = _figure(len(models), height=2.8, width=8.0)
    axes = np.atleast_1d(fig.subplots(len(models), 1))
    for ax, model in zip(axes, models, strict=True):
        a = att[model]
        if a["kind"] == "cross_asset" and "matrix" in a:
            m = a["matrix"]
            data = np.array([[math.nan if v is None else v for v in row] for row in m["mean_weight"]], dtype=float)
            im = ax.imshow(data, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(m["keys"])), m["keys"], fontsize=8)
            ax.set_yticks(range(len(m["queries"])), m["queries"], fontsize=8)
            ax.set_xlabel("attended asset")
            fig.colorbar(im, ax=ax)
            for i in range(data.shape[0]):
                for j in range(data.shape[1]):
                    if math.isfinite(data[i, j]):
                        ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white")
        else:
            labels = a["labels"]
            ax.bar(range(len(labels)), [a["mean_weight"][lab] for lab in labels], color="tab:purple")
            ax.set_xticks(range(len(labels)), labels, fontsize=8)
            ax.set_ylabel("mean weight")
        what = {"temporal": "temporal attention (t-0 newest)", "scale": "scale importance",
                "cross_asset": "cross-asset attention"}.get(a["kind"], a["kind"])
        ax.set_title(f"{model}: {what}, {a['signals']} signals", fontsize=9)
    return _png(fig)
