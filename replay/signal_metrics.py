"""Model signals in a replay run: counts, hit rates per model and horizon, and attention summaries.

What a Signal predicts (its fields as ``bot.heads`` fills them):

* class probabilities (TABL and multi-head TABL, multi-scale, cross-asset): ``probabilities`` is
  horizon-major over ``classes``, one block per label of the comma-separated ``horizon`` (``"10s,50s"``,
  ``"60m"``, ``"15m"``); the predicted class of a horizon is its most probable one; "up" calls +1, "down"
  -1, anything else (stationary) calls no direction;
* values named ``ret_<horizon>`` (multi-scale, cross-asset) or ``mid_bps_<horizon>`` (LOB forecaster): the
  sign of the value is the call. ``spread_bps_*`` and the portfolio ``weight`` predict no direction.

A call is **scored** against the sign of the mid move over its horizon, from the run's own Price series:
the last mid at or before the signal's data time (``ts_event``) to the last mid at or before
``ts_event + horizon``. A call whose horizon ends after the last Price is unresolved; a move of exactly 0
is neither hit nor miss (counted as ``unmoved``). **Hit rate** = hits / scored calls; **edge** = the mean
of ``call * move`` in bps over resolved calls. Both carry a block-bootstrap interval whose block is the
horizon measured in signals (horizon / the median time between the model's signals, times the number of
symbols it signals on): calls whose horizons overlap share their outcome and are not independent. A hit
rate means little without the base rate: in a falling market "down" every time hits often. So each is
compared with the **constant call** (the direction most of the same scored moves took, chosen in sample,
which flatters it): the paired interval of the difference says "beats" only when it lies above 0.

Attention (``Signal.attention``, "label weight label weight ..." of the top few): TABL (family ``tabl``)
names time steps ``t-0`` (newest) ..., multi-scale names its scales, cross-asset names the other assets a
symbol attended to. The summary is each label's mean weight over the model's signals (0 where it was not
among the top few) and how often it was the top one; for cross-asset, the matrix symbol x attended asset.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from bot.bootstrap import Interval, bootstrap, horizon_block, mean_stat, verdict
from bot.events import Signal
from replay.report_data import Run
from strategies.common import horizon_seconds

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
NS = 1_000_000_000
_VALUE = re.compile(r"^(ret|mid_bps)_(.+)$")
ATTENTION_KINDS = {"tabl": "temporal", "multiscale": "scale", "crossasset": "cross_asset"}


def predictions(s: Signal) -> list[tuple[str, str, int]]:
    """(horizon label, source, call) for every directional prediction in ``s``; source "class" or a value
    name; call +1 / -1 / 0."""
    out: list[tuple[str, str, int]] = []
    c = len(s.classes)
    if c and s.probabilities and len(s.probabilities) % c == 0:
        n_h = len(s.probabilities) // c
        labels = [p.strip() for p in s.horizon.split(",")]
        if len(labels) != n_h:
            labels = [f"h{i}" for i in range(n_h)]
        for i, label in enumerate(labels):
            probs = s.probabilities[i * c : (i + 1) * c]
            cls = s.classes[max(range(c), key=lambda j: probs[j])]
            out.append((label, "class", 1 if cls == "up" else -1 if cls == "down" else 0))
    for name, value in zip(s.value_names, s.values, strict=False):
        m = _VALUE.match(name)
        if m and math.isfinite(value):
            out.append((m.group(2), name, 1 if value > 0 else -1 if value < 0 else 0))
    return out


def _boot(*series: np.ndarray, block: int) -> Interval:
    return bootstrap(mean_stat, *series, block=block, resamples=RESAMPLES, level=LEVEL, seed=SEED)


def _iv(i: Interval) -> dict[str, Any]:
    d = i.to_dict()
    return {"low": d["low"], "high": d["high"], "block": i.block}


def _signal_block(signals: Sequence[Signal], horizon_s: float) -> int:
    times = np.unique(np.array([s.ts_event for s in signals], dtype=np.int64))
    symbols = len({(s.venue, s.symbol) for s in signals})
    if len(times) < 2:
        return 1
    dt = float(np.median(np.diff(times))) / NS
    return horizon_block(horizon_s / dt if dt > 0 else 1.0, 1) * max(symbols, 1)


def signal_section(run: Run) -> dict[str, Any]:
    """Per model: counts by symbol and call, and the scored calls per (horizon, source)."""
    signals = [s for s in run.events.signals if run.in_scope(s.ts_recv)]
    by_model: dict[str, list[Signal]] = defaultdict(list)
    for s in signals:
        by_model[s.model].append(s)
    out: dict[str, Any] = {}
    for model in sorted(by_model):
        sigs = sorted(by_model[model], key=lambda s: (s.ts_event, s.venue.value, s.symbol))
        families = sorted({s.family for s in sigs})
        symbols = Counter(f"{s.venue.value}:{s.symbol}" for s in sigs)
        entry: dict[str, Any] = {"count": len(sigs), "family": ",".join(families),
                                 "by_symbol": dict(sorted(symbols.items())), "horizons": _scored(run, sigs)}
        out[model] = entry
    return out


def _scored(run: Run, sigs: Sequence[Signal]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], list[tuple[Signal, int]]] = defaultdict(list)
    for s in sigs:
        for label, source, call in predictions(s):
            rows[(label, source)].append((s, call))
    out = []
    for (label, source), calls in sorted(rows.items()):
        secs = horizon_seconds(label)
        entry: dict[str, Any] = {"horizon": label, "source": source, "signals": len(calls),
                                 "up": sum(c > 0 for _, c in calls), "down": sum(c < 0 for _, c in calls),
                                 "flat": sum(c == 0 for _, c in calls)}
        if not secs:
            out.append(entry | {"resolved": 0, "scored": 0, "hits": 0, "hit_rate": None, "edge_bps": None,
                                "why": "horizon not a duration label"})
            continue
        h_ns = round(secs[0] * NS)
        moves, hits, edges = [], [], []
        unresolved = unmoved = 0
        for s, call in calls:
            if call == 0:
                continue
            move = _move_bps(run, s, h_ns)
            if move is None:
                unresolved += 1
                continue
            edges.append(call * move)
            if move == 0:
                unmoved += 1
                continue
            moves.append(move)
            hits.append(1.0 if (move > 0) == (call > 0) else 0.0)
        block = _signal_block([s for s, _ in calls], secs[0])
        entry |= {"horizon_s": secs[0], "resolved": len(edges), "unresolved": unresolved, "unmoved": unmoved,
                  "scored": len(hits), "hits": int(sum(hits)), "block": block}
        for name, values in (("hit_rate", hits), ("edge_bps", edges)):
            if values:
                iv = _boot(np.array(values), block=block)
                entry[name] = iv.estimate
                entry[f"{name}_interval"] = _iv(iv)
            else:
                entry[name] = None
        if hits:
            up = np.array(moves) > 0
            const_up = bool(up.mean() >= 0.5)
            const_hits = (up == const_up).astype(np.float64)
            diff = _boot(np.array(hits) - const_hits, block=block)
            entry["constant_call"] = {"call": "up" if const_up else "down", "hit_rate": float(const_hits.mean()),
                                      "difference": diff.estimate, "interval": _iv(diff), "verdict": verdict(diff)}
        out.append(entry)
    return out


def _move_bps(run: Run, s: Signal, h_ns: int) -> float | None:
    got = run.events.prices.get((s.venue.value, s.symbol))
    if got is None:
        return None
    ts, mid = got
    t0, t1 = s.ts_event, s.ts_event + h_ns
    if not len(ts) or t1 > ts[-1]:
        return None
    i0 = int(np.searchsorted(ts, t0, side="right")) - 1
    i1 = int(np.searchsorted(ts, t1, side="right")) - 1
    if i0 < 0 or not mid[i0] > 0:
        return None
    return float((mid[i1] / mid[i0] - 1.0) * 1e4)


# -- attention --------------------------------------------------------------------------------------------


def parse_attention(text: str) -> list[tuple[str, float]]:
    """"t-0 0.41 t-3 0.20" -> [("t-0", 0.41), ("t-3", 0.2)]; pieces that do not pair up are dropped."""
    parts = text.split()
    out = []
    for i in range(0, len(parts) - 1, 2):
        try:
            out.append((parts[i], float(parts[i + 1])))
        except ValueError:
            continue
    return out


def _label_order(kind: str, labels: Sequence[str]) -> list[str]:
    if kind == "temporal":
        def step(label: str) -> tuple[int, str]:
            m = re.match(r"^t-(\d+)$", label)
            return (int(m.group(1)) if m else 10**9, label)
        return sorted(labels, key=step)
    if kind == "scale":
        return sorted(labels, key=lambda x: (horizon_seconds(x) or (math.inf,))[0])
    return sorted(labels)


def attention_section(run: Run) -> dict[str, Any]:
    """Per model with attention: mean weight and top-1 count per label (cross-asset: per symbol too)."""
    by_model: dict[str, list[Signal]] = defaultdict(list)
    for s in run.events.signals:
        if s.attention and run.in_scope(s.ts_recv):
            by_model[s.model].append(s)
    out: dict[str, Any] = {}
    for model in sorted(by_model):
        sigs = by_model[model]
        kind = ATTENTION_KINDS.get(sigs[0].family, "other")
        parsed = [(s, parse_attention(s.attention)) for s in sigs]
        parsed = [(s, p) for s, p in parsed if p]
        if not parsed:
            continue
        labels = _label_order(kind, list({lab for _, p in parsed for lab, _ in p}))
        total: dict[str, float] = defaultdict(float)
        top: Counter[str] = Counter()
        for _, p in parsed:
            for lab, w in p:
                total[lab] += w
            top[max(p, key=lambda x: x[1])[0]] += 1
        entry: dict[str, Any] = {"kind": kind, "signals": len(parsed), "labels": labels,
                                 "mean_weight": {lab: total[lab] / len(parsed) for lab in labels},
                                 "top_count": {lab: top[lab] for lab in labels}}
        if kind == "cross_asset":
            queries = sorted({s.symbol for s, _ in parsed})
            keys = sorted(set(labels) | set(queries))
            matrix = []
            for q in queries:
                rows = [p for s, p in parsed if s.symbol == q]
                sums: dict[str, float] = defaultdict(float)
                for p in rows:
                    for lab, w in p:
                        sums[lab] += w
                matrix.append([sums[k] / len(rows) if k != q else None for k in keys])
            entry["matrix"] = {"queries": queries, "keys": keys, "mean_weight": matrix}
        out[model] = entry
    return out
