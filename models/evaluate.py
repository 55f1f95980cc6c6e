"""Evaluate a checkpoint on a span later than its training, always beside baselines on the same samples.

    python -m bot evaluate CHECKPOINT --data ... [--json OUT] [--span after|all] [--plots DIR]

The samples are rebuilt from ``--data`` with the checkpoint's own input spec (its frozen normalisation and
label thresholds), so they are exactly what a worker would feed the model. Which samples are scored:

* ``--span after`` (default): samples at or after the start of the checkpoint's test span (the data the
  training never saw, neither for fitting nor for early stopping). Data recorded later than the training
  data is scored whole.
* ``--span all``: every sample (for data from elsewhere: another venue, another symbol).

Baselines, scored on the very same samples:

* majority: the most frequent class of the baseline fit set;
* persistence: the label of the h steps that ended at t (classification), the last h-step return
  (regression), the current book (book forecast);
* zero (regression): no change;
* logistic / ridge regression on the same features: the model's normalised input flattened, L2 strength
  picked on the last quarter of the fit set, then refit on all of it. Logistic uses the same class weights
  as the model's training.

The fit set of the baselines is every sample of ``--data`` whose label ends before the first scored sample
(the training and validation spans when the data is the training data). When that holds fewer than 50
samples (new data), the scored span is cut in two: baselines fit on the first half, and everybody (the
model too) is scored on the second half. The report says which, and says plainly when the model does not
beat a baseline.

Intervals and verdicts. Neighbouring samples share most of their label: a 60-bar label scored every bar
overlaps its next 59 neighbours, so 17,000 such samples hold about 17,000 / 60 independent ones, and a
1-point accuracy edge over the majority class is well inside the noise. Every metric of every method gets
a 95% circular block-bootstrap interval (``bot.bootstrap``) with the block length = the label horizon in
samples divided by the stride (at least 1); each comparison of the model with a baseline bootstraps the
*difference* on the same resampled samples (paired: model and baseline see the same indices). The verdict
says the model beats a baseline on a metric only when that difference's interval lies wholly above 0
(for MSE: the baseline's MSE minus the model's); anything else is "not distinguishable from" or "worse
than" the baseline, and the task's verdict says the model does NOT beat the baselines.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from bot.bootstrap import Interval, bootstrap, horizon_block, mean_stat, verdict
from models.checkpoint import CheckpointError, load_checkpoint
from models.datasets import SampleSet, collect, finalize, load_data
from models.inputs import CLASSES, _target_block
from models.train import predict

MIN_FIT = 50
LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


# -- metrics ------------------------------------------------------------------------------------------


def classification_metrics(y_true: NDArray[np.int64], y_pred: NDArray[np.int64], n_classes: int = 3) -> dict[str, Any]:
    """accuracy, macro F1, per-class precision/recall/F1/support, confusion (rows true, columns predicted)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(conf, (y_true, y_pred), 1)
    per: dict[str, Any] = {}
    f1s = []
    for c in range(n_classes):
        tp = conf[c, c]
        precision = tp / conf[:, c].sum() if conf[:, c].sum() else 0.0
        recall = tp / conf[c].sum() if conf[c].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        per[CLASSES[c] if n_classes == len(CLASSES) else str(c)] = {
            "precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(conf[c].sum())}
    n = len(y_true)
    return {"n": n, "accuracy": float(np.trace(conf) / n) if n else math.nan, "macro_f1": float(np.mean(f1s)),
            "per_class": per, "confusion": conf.tolist()}


def regression_metrics(y_true: NDArray[Any], y_pred: NDArray[Any]) -> dict[str, Any]:
    """MSE, MAE and direction accuracy (sign agreement where the truth moved)."""
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    moved = t != 0
    # a forecast of no change (all zeros) calls no direction: None rather than a misleading 0
    direction = float(np.mean(np.sign(p[moved]) == np.sign(t[moved]))) if moved.any() and p.any() else None
    return {"n": int(t.size), "mse": float(np.mean((t - p) ** 2)), "mae": float(np.mean(np.abs(t - p))),
            "direction_accuracy": direction}


# -- block-bootstrap intervals (see the module docstring) ------------------------------------------------

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


def _macro_f1_rows(y: NDArray[Any], p: NDArray[Any], n_classes: int = len(CLASSES)) -> NDArray[np.float64]:
    """Macro F1 of each row of (B, n) labels and predictions, exactly as ``classification_metrics``."""
    b = y.shape[0]
    flat = (np.arange(b)[:, None] * n_classes * n_classes + y * n_classes + p).ravel()
    conf = np.bincount(flat, minlength=b * n_classes * n_classes).reshape(b, n_classes, n_classes).astype(np.float64)
    tp = np.diagonal(conf, axis1=1, axis2=2)
    col, row = conf.sum(axis=1), conf.sum(axis=2)
    precision = np.divide(tp, col, out=np.zeros_like(tp), where=col > 0)
    recall = np.divide(tp, row, out=np.zeros_like(tp), where=row > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    out: NDArray[np.float64] = f1.mean(axis=1)
    return out


def _direction_rows(t: NDArray[Any], p: NDArray[Any]) -> NDArray[np.float64]:
    """Share of sign agreement where the truth moved, per row (NaN where nothing moved)."""
    t2, p2 = t.reshape(t.shape[0], -1), p.reshape(p.shape[0], -1)
    moved = t2 != 0
    hits = (np.sign(p2) == np.sign(t2)) & moved
    with np.errstate(divide="ignore", invalid="ignore"):
        out: NDArray[np.float64] = hits.sum(axis=1) / moved.sum(axis=1)
    return out


def _sharpe_rows(p: NDArray[Any]) -> NDArray[np.float64]:
    """Per-sample Sharpe (mean / std, ddof 0, not annualised) per row, 0 where the std is 0, as ``stats``."""
    sd = p.std(axis=1)
    out: NDArray[np.float64] = np.where(sd > 0, p.mean(axis=1) / np.where(sd > 0, sd, 1.0), 0.0)
    return out


def _boot(stat: Any, *series: NDArray[Any], block: int) -> Interval:
    return bootstrap(stat, *series, block=block, resamples=RESAMPLES, level=LEVEL, seed=SEED)


def _iv(i: Interval) -> list[float | None]:
    d = i.to_dict()
    return [d["low"], d["high"]]


def classification_intervals(y: NDArray[np.int64], pred: NDArray[np.int64], block: int) -> dict[str, Any]:
    """95% block-bootstrap intervals of accuracy and macro F1."""
    return {"accuracy": _iv(_boot(lambda a, b: mean_stat(a == b), y, pred, block=block)),
            "macro_f1": _iv(_boot(_macro_f1_rows, y, pred, block=block))}


def regression_intervals(t: NDArray[Any], p: NDArray[Any], block: int) -> dict[str, Any]:
    """95% block-bootstrap intervals of MSE, MAE and direction accuracy (None where that is undefined);
    rows of 2-D arrays are resampled whole (one sample = one row)."""
    t, p = np.asarray(t, dtype=np.float64), np.asarray(p, dtype=np.float64)
    out: dict[str, Any] = {"mse": _iv(_boot(lambda a, b: mean_stat((a - b) ** 2), t, p, block=block)),
                           "mae": _iv(_boot(lambda a, b: mean_stat(np.abs(a - b)), t, p, block=block))}
    out["direction_accuracy"] = (_iv(_boot(_direction_rows, t, p, block=block))
                                 if (t != 0).any() and p.any() else None)
    return out


def compare(metric: str, baseline: str, diff: Interval, model_value: float, baseline_value: float) -> dict[str, Any]:
    """One model-vs-baseline comparison: ``diff`` is the interval of the model's advantage (higher = better)."""
    return {"metric": metric, "baseline": baseline, "model": model_value, "baseline_value": baseline_value,
            "advantage": diff.to_dict()["estimate"], "interval": _iv(diff), "block": diff.block,
            "verdict": verdict(diff)}


def _class_comparisons(y: NDArray[np.int64], model_pred: NDArray[np.int64], preds: dict[str, NDArray[np.int64]],
                       block: int, model: dict[str, Any], baselines: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for b, pb in preds.items():
        acc = _boot(lambda t, m, q: mean_stat(m == t) - mean_stat(q == t), y, model_pred, pb, block=block)
        out.append(compare("accuracy", b, acc, model["accuracy"], baselines[b]["accuracy"]))
        f1 = _boot(lambda t, m, q: _macro_f1_rows(t, m) - _macro_f1_rows(t, q), y, model_pred, pb, block=block)
        out.append(compare("macro_f1", b, f1, model["macro_f1"], baselines[b]["macro_f1"]))
    return out


def _mse_comparisons(t: NDArray[Any], model_pred: NDArray[Any], preds: dict[str, NDArray[Any]], block: int,
                     model: dict[str, Any], baselines: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    t = np.asarray(t, dtype=np.float64)
    for b, pb in preds.items():
        diff = _boot(lambda a, m, q: mean_stat((a - q) ** 2) - mean_stat((a - m) ** 2), t,
                     np.asarray(model_pred, dtype=np.float64), np.asarray(pb, dtype=np.float64), block=block)
        out.append(compare("mse", b, diff, model["mse"], baselines[b]["mse"]))
    return out


# -- linear baselines ---------------------------------------------------------------------------------


def flat_features(x: torch.Tensor | dict[str, torch.Tensor]) -> NDArray[np.float64]:
    """The model input, one row per sample (scales concatenated); NaN -> 0 (the training mean)."""
    parts = [v for _, v in sorted(x.items())] if isinstance(x, dict) else [x]
    flat: NDArray[np.float64] = np.concatenate([p.reshape(p.shape[0], -1).double().numpy() for p in parts], axis=1)
    return np.nan_to_num(flat, nan=0.0)


def _internal_split(n: int) -> tuple[slice, slice]:
    cut = int(n * 0.75)
    return slice(0, cut), slice(cut, n)


def fit_ridge(X: NDArray[Any], Y: NDArray[Any]) -> tuple[NDArray[Any], float]:
    """Least squares with an L2 penalty (λ by validation MSE on the fit set's last quarter); returns (W, λ)."""
    def solve(A: NDArray[Any], B: NDArray[Any], lam: float) -> NDArray[Any]:
        A1 = np.hstack([A, np.ones((len(A), 1))])
        reg = lam * len(A) * np.eye(A1.shape[1])
        reg[-1, -1] = 0.0  # no penalty on the intercept
        return np.linalg.solve(A1.T @ A1 + reg, A1.T @ B)

    tr, va = _internal_split(len(X))
    best = min(LAMBDAS, key=lambda lam: float(np.mean((_affine(X[va], solve(X[tr], Y[tr], lam)) - Y[va]) ** 2)))
    return solve(X, Y, best), best


def _affine(X: NDArray[Any], W: NDArray[Any]) -> NDArray[Any]:
    out: NDArray[Any] = np.hstack([X, np.ones((len(X), 1))]) @ W
    return out


def fit_logistic(X: NDArray[Any], y: NDArray[np.int64], weights: NDArray[Any] | None) -> tuple[Any, float]:
    """Multinomial logistic regression (torch, L-BFGS, L2 by validation macro F1); returns (predictor, λ)."""
    w = None if weights is None else torch.tensor(weights, dtype=torch.float64)

    def train(A: NDArray[Any], b: NDArray[np.int64], lam: float) -> torch.nn.Linear:
        torch.manual_seed(0)
        lin = torch.nn.Linear(A.shape[1], len(CLASSES)).double()
        At, bt = torch.from_numpy(A), torch.from_numpy(b)
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=100, history_size=10, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(lin(At), bt, weight=w) + lam * lin.weight.pow(2).sum()
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        opt.step(closure)  # type: ignore[no-untyped-call]
        return lin

    def pred(lin: torch.nn.Linear, A: NDArray[Any]) -> NDArray[np.int64]:
        with torch.no_grad():
            out: NDArray[np.int64] = lin(torch.from_numpy(A)).argmax(-1).numpy()
        return out

    tr, va = _internal_split(len(X))

    def score(lam: float) -> float:
        return float(classification_metrics(y[va], pred(train(X[tr], y[tr], lam), X[va]))["macro_f1"])

    best = max(LAMBDAS, key=score)
    final = train(X, y, best)
    return (lambda A: pred(final, A)), best


# -- the evaluation -----------------------------------------------------------------------------------


def _class_weights(labels: NDArray[np.int64]) -> NDArray[np.float64]:
    counts = np.bincount(labels[labels >= 0], minlength=len(CLASSES)).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (len(CLASSES) * np.maximum(counts, 1)), 1.0)
    return np.clip(w, 0.2, 5.0)


def choose_spans(
    s: SampleSet, test_start_ms: int | None, span: str
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], str]:
    """(scored mask, baseline-fit mask, how the fit set was chosen)."""
    if span not in ("after", "all"):
        raise ValueError(f"span must be 'after' or 'all', got {span!r}")
    if span == "after" and test_start_ms is not None:
        scored = s.times_ns >= test_start_ms * 1_000_000
    else:
        scored = np.ones(len(s), dtype=bool)
    if not scored.any():
        raise ValueError("no sample of the data lies after the checkpoint's training and validation spans; "
                         "pass --span all to score it anyway")
    first = s.times_ns[scored][0]
    fit = s.label_end_ns < first
    if fit.sum() >= MIN_FIT:
        return scored, fit, "samples of the data whose labels end before the first scored sample"
    idx = np.flatnonzero(scored)
    half = idx[len(idx) // 2]
    fit = scored & (s.label_end_ns < s.times_ns[half])
    scored = scored & (s.times_ns >= s.times_ns[half])
    return scored, fit, "first half of the scored span (too little earlier data); all methods scored on the second half"


def evaluate_checkpoint(
    path: str | Path,
    data_items: list[str],
    *,
    venue: str | None = None,
    target: str | None = None,
    span: str = "after",
    stride: int = 1,
) -> tuple[dict[str, Any], Any, SampleSet]:
    """The evaluation report (a JSON-able dict), the model and the scored samples (for plots)."""
    model, meta = load_checkpoint(path)
    spec = meta.extra.get("inputs")
    if not isinstance(spec, dict):
        raise CheckpointError(f"{path}: no input spec (extra['inputs']); it cannot be evaluated")
    data_meta = meta.extra.get("data", {})
    if venue is None and spec["kind"] == "klines":
        venue = spec["venue"]
    data = load_data(data_items, venue)
    c = collect(spec, data, target=target or _trained_target(spec), stride=stride)
    s = finalize(spec, c)
    test_start = (data_meta.get("spans_ms", {}).get("test") or [None])[0]
    scored, fit, how = choose_spans(s, test_start, span)
    ev, fs = s.select(scored), s.select(fit)
    out = predict(model, ev)
    family = spec["family"]
    tasks = {"tabl": _tasks_tabl, "multiscale": _tasks_multiscale, "crossasset": _tasks_crossasset,
             "lobforecast": _tasks_lobforecast}[family](spec, ev, fs, out, stride)
    report = {
        "checkpoint": Path(path).name,
        "family": family,
        "cli_family": meta.extra.get("cli_family", family),
        "code_version": meta.extra.get("code_version"),
        "trained_on": {"sources": data_meta.get("sources"), "spans_ms": data_meta.get("spans_ms"),
                       "venue": data_meta.get("venue"), "symbol": data_meta.get("symbol")},
        "data": {"sources": data.sources, "venue": s.venue, "symbol": s.symbol},
        "span": {"mode": span, "from_ms": int(ev.times_ns[0] // 1_000_000), "to_ms": int(ev.times_ns[-1] // 1_000_000),
                 "n": len(ev), "stride": stride},
        "baseline_fit": {"how": how, "n": len(fs),
                         "from_ms": int(fs.times_ns[0] // 1_000_000) if len(fs) else None,
                         "to_ms": int(fs.times_ns[-1] // 1_000_000) if len(fs) else None},
        "tasks": tasks,
    }
    report["verdict"] = [t["verdict"] for t in tasks]
    return report, model, ev


def _trained_target(spec: dict[str, Any]) -> str | None:
    if spec["family"] == "tabl":
        return f"{spec['venue']}:{spec['symbol']}"
    if spec["family"] == "multiscale":
        return str(spec["symbol"])
    return None


def _classification_task(name: str, y: NDArray[np.int64], model_pred: NDArray[np.int64], past: NDArray[Any],
                         X: NDArray[Any], fit_X: NDArray[Any], fit_y: NDArray[np.int64],
                         block: int) -> dict[str, Any]:
    ok = y >= 0
    y, model_pred, past, X = y[ok], model_pred[ok], past[ok], X[ok]
    fit_ok = fit_y >= 0
    fit_X, fit_y = fit_X[fit_ok], fit_y[fit_ok]
    counts = np.bincount(fit_y, minlength=len(CLASSES))
    preds: dict[str, NDArray[np.int64]] = {"majority": np.full_like(y, int(counts.argmax())),
                                           "persistence": np.where(past >= 0, past, 1)}
    extra: dict[str, dict[str, Any]] = {"majority": {"class": CLASSES[int(counts.argmax())]}}
    if len(fit_y) >= 8 and len(np.unique(fit_y)) > 1:
        predictor, lam = fit_logistic(fit_X, fit_y, _class_weights(fit_y))
        preds["logistic"] = predictor(X)
        extra["logistic"] = {"l2": lam}
    baselines: dict[str, Any] = {
        b: classification_metrics(y, pb) | extra.get(b, {}) | {"intervals": classification_intervals(y, pb, block)}
        for b, pb in preds.items()}
    model = classification_metrics(y, model_pred) | {"intervals": classification_intervals(y, model_pred, block)}
    comparisons = _class_comparisons(y, model_pred, preds, block, model, baselines)
    return {"name": name, "kind": "classification", "model": model, "baselines": baselines,
            "bootstrap": _bootstrap_info(block), "comparisons": comparisons,
            "verdict": _verdict(name, comparisons)}


def _regression_task(name: str, y: NDArray[Any], model_pred: NDArray[Any], past: NDArray[Any] | None,
                     X: NDArray[Any], fit_X: NDArray[Any], fit_y: NDArray[Any], block: int) -> dict[str, Any]:
    preds: dict[str, NDArray[Any]] = {"zero": np.zeros_like(y)}
    if past is not None:
        preds["persistence"] = np.nan_to_num(past, nan=0.0)
    extra: dict[str, dict[str, Any]] = {}
    if len(fit_y) >= 8:
        W, lam = fit_ridge(fit_X, fit_y)
        preds["ridge"] = _affine(X, W)
        extra["ridge"] = {"l2": lam}
    return _regression_result(name, y, model_pred, preds, extra, block)


def _regression_result(name: str, y: NDArray[Any], model_pred: NDArray[Any], preds: dict[str, NDArray[Any]],
                       extra: dict[str, dict[str, Any]], block: int) -> dict[str, Any]:
    """Metrics (of the flattened arrays), intervals and comparisons (samples = rows) of a regression task."""
    def metrics(p: NDArray[Any]) -> dict[str, Any]:
        return regression_metrics(np.ravel(y), np.ravel(p)) | {"intervals": regression_intervals(y, p, block)}

    baselines = {b: metrics(pb) | extra.get(b, {}) for b, pb in preds.items()}
    model = metrics(model_pred)
    comparisons = _mse_comparisons(y, model_pred, preds, block, model, baselines)
    return {"name": name, "kind": "regression", "model": model, "baselines": baselines,
            "bootstrap": _bootstrap_info(block), "comparisons": comparisons, "verdict": _verdict(name, comparisons)}


def _bootstrap_info(block: int) -> dict[str, Any]:
    return {"method": "circular block bootstrap, paired for differences", "block": block, "resamples": RESAMPLES,
            "level": LEVEL, "seed": SEED, "block_rule": "label horizon in samples / stride, at least 1"}


def _verdict(name: str, comparisons: list[dict[str, Any]]) -> str:
    """"beats" only where the interval of the model's advantage lies above 0 for every baseline and metric."""
    lost = [c for c in comparisons if c["verdict"] != "beats"]
    if not lost:
        keys = ", ".join(dict.fromkeys(c["metric"] for c in comparisons))
        return (f"{name}: the model beats every baseline on {keys} "
                f"({LEVEL:.0%} block-bootstrap intervals of the differences above 0)")
    parts = []
    for c in lost:
        lo, hi = c["interval"]
        word = "worse than" if c["verdict"] == "worse" else "not distinguishable from"
        parts.append(f"{c['metric']} {c['model']:.4g} vs {c['baseline']} {c['baseline_value']:.4g}: {word} it "
                     f"(advantage {_signed(c['advantage'])}, {LEVEL:.0%} interval {_signed(lo)} .. {_signed(hi)})")
    return f"{name}: the model does NOT beat the baselines: " + "; ".join(parts)


def _signed(v: float | None) -> str:
    return "?" if v is None else f"{v:+.3g}"


def _tasks_tabl(spec: dict[str, Any], ev: SampleSet, fs: SampleSet, out: Any, stride: int) -> list[dict[str, Any]]:
    X, fit_X = flat_features(ev.x), flat_features(fs.x)
    pred = out.argmax(-1).numpy()  # (N, H)
    tasks = []
    for k, h in enumerate(spec["labels"]["horizons"]):
        tasks.append(_classification_task(
            f"direction h={h} steps", ev.y["direction"][:, k].numpy(), pred[:, k], ev.past["direction"][:, k],
            X, fit_X, fs.y["direction"][:, k].numpy(), horizon_block(h, stride)))
    return tasks


def _tasks_multiscale(spec: dict[str, Any], ev: SampleSet, fs: SampleSet, out: Any,
                      stride: int) -> list[dict[str, Any]]:
    X, fit_X = flat_features(ev.x), flat_features(fs.x)
    lab = spec["labels"]
    tasks = [_classification_task(
        f"direction h={lab['direction_horizon']} bars", ev.y["direction"].numpy(),
        out["direction_logits"].argmax(-1).numpy(), ev.past["direction"], X, fit_X, fs.y["direction"].numpy(),
        horizon_block(lab["direction_horizon"], stride))]
    scale = np.asarray(lab["return_scale"])
    pred = out["returns"].double().numpy() * scale
    for k, h in enumerate(lab["return_horizons"]):
        tasks.append(_regression_task(f"log return h={h} bars", ev.y["ret"][:, k].numpy(), pred[:, k],
                                      ev.past["ret"][:, k], X, fit_X, fs.y["ret"][:, k].numpy(),
                                      horizon_block(h, stride)))
    return tasks


def _tasks_crossasset(spec: dict[str, Any], ev: SampleSet, fs: SampleSet, out: Any,
                      stride: int) -> list[dict[str, Any]]:
    X, fit_X = flat_features(ev.x), flat_features(fs.x)
    lab = spec["labels"]
    scale = np.asarray(lab["return_scale"])
    pred_dir = out["direction_logits"].argmax(-1).numpy()
    pred_ret = out["returns"].double().numpy() * scale
    block = horizon_block(lab["horizon"], stride)
    tasks = []
    for a, asset in enumerate(spec["assets"]):
        tasks.append(_classification_task(
            f"{asset} direction h={lab['horizon']} bars", ev.y["direction"][:, a].numpy(), pred_dir[:, a],
            ev.past["direction"][:, a], X, fit_X, fs.y["direction"][:, a].numpy(), block))
        tasks.append(_regression_task(f"{asset} log return h={lab['horizon']} bars", ev.y["ret"][:, a].numpy(),
                                      pred_ret[:, a], ev.past["ret"][:, a], X, fit_X, fs.y["ret"][:, a].numpy(),
                                      block))
    tasks.append(_portfolio_task(spec, ev, out, block))
    return tasks


def _portfolio_task(spec: dict[str, Any], ev: SampleSet, out: Any, block: int) -> dict[str, Any]:
    """Mean and Sharpe (per sample, overlapping horizons: not annualised) of the portfolio's h-bar log return."""
    r = ev.y["ret"].numpy()  # (N, A)
    w = out["portfolio_weights"].double().numpy()
    equal = np.full_like(w, 1.0 / w.shape[1])
    series = {"model": (w * r).sum(-1), "equal_weight": (equal * r).sum(-1)}

    def stats(p: NDArray[Any]) -> dict[str, Any]:
        return {"n": len(p), "mean_return": float(p.mean()), "sharpe": float(p.mean() / p.std()) if p.std() else 0.0,
                "intervals": {"mean_return": _iv(_boot(mean_stat, p, block=block)),
                              "sharpe": _iv(_boot(_sharpe_rows, p, block=block))}}

    model = stats(series["model"])
    model["mean_weights"] = w.mean(0).tolist()
    baselines = {"equal_weight": stats(series["equal_weight"])}
    diff = _boot(lambda m, q: _sharpe_rows(m) - _sharpe_rows(q), series["model"], series["equal_weight"], block=block)
    comparisons = [compare("sharpe", "equal_weight", diff, model["sharpe"], baselines["equal_weight"]["sharpe"])]
    verdict_text = _verdict(f"portfolio h={spec['labels']['horizon']} bars", comparisons)
    return {"name": "portfolio", "kind": "portfolio", "model": model, "baselines": baselines,
            "bootstrap": _bootstrap_info(block), "comparisons": comparisons, "verdict": verdict_text}


def _tasks_lobforecast(spec: dict[str, Any], ev: SampleSet, fs: SampleSet, out: Any,
                       stride: int) -> list[dict[str, Any]]:
    X, fit_X = flat_features(ev.x), flat_features(fs.x)
    levels = spec["levels"]
    t0 = _target_block(spec) * 4 * levels
    width = 4 * levels
    # the current book in the labels' space (unclipped: the input may be clipped, the truth is not)
    pers = np.nan_to_num(np.asarray(ev.past["book"], dtype=np.float64), nan=0.0)
    price_std = float(spec["norm"]["std"][t0])  # the target book's one price scale (bps per unit)
    y_all, p_all = ev.y["book"].double().numpy(), out.double().numpy()  # (N, H, 4L)
    tasks = []
    for k, h in enumerate(spec["labels"]["horizons"]):
        block = horizon_block(h, stride)
        y, p = y_all[:, k], p_all[:, k]
        preds: dict[str, NDArray[Any]] = {"zero": np.zeros_like(y), "persistence": pers}
        extra: dict[str, dict[str, Any]] = {}
        if len(fs) >= 8:
            W, lam = fit_ridge(fit_X, fs.y["book"][:, k].double().numpy())
            preds["ridge"] = _affine(X, W)
            extra["ridge"] = {"l2": lam}
        task = _regression_result(f"book h={h} steps (normalised, 4x{levels} features)", y, p, preds, extra, block)
        px = np.zeros(width, dtype=bool)
        px[0::2] = True
        task["by_field_mse"] = {name: {"prices": float(np.mean((q - y)[:, px] ** 2)),
                                       "sizes": float(np.mean((q - y)[:, ~px] ** 2))}
                                for name, q in {"model": p, **preds}.items()}
        # the mid in bps from the mid at t: (best bid + best ask) / 2, prices share one scale
        mid_true = 0.5 * (y[:, 0] + y[:, 2 * levels]) * price_std
        mid_pred = 0.5 * (p[:, 0] + p[:, 2 * levels]) * price_std
        task["mid_bps"] = regression_metrics(mid_true, mid_pred) | {
            "intervals": regression_intervals(mid_true, mid_pred, block)}
        tasks.append(task)
    return tasks


# -- printing -----------------------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
    data = report["data"]
    lines = [f"{report['checkpoint']} ({report['cli_family']}) on {data['venue']} {data['symbol']}: "
             f"{report['span']['n']} samples, {_ms(report['span']['from_ms'])} .. {_ms(report['span']['to_ms'])}",
             f"baselines fit on {report['baseline_fit']['n']} samples: {report['baseline_fit']['how']}"]
    for task in report["tasks"]:
        keys = {"classification": ("accuracy", "macro_f1"), "regression": ("mse", "mae", "direction_accuracy"),
                "portfolio": ("mean_return", "sharpe")}[task["kind"]]
        boot = task.get("bootstrap", {})
        lines.append("")
        lines.append(f"{task['name']} ({task['kind']}, n={task['model']['n']}"
                     + (f", {LEVEL:.0%} intervals, block {boot['block']}" if boot else "") + ")")
        lines.append("  " + f"{'method':<14}" + "".join(f"{k:>32}" for k in keys))
        for name, m in [("model", task["model"]), *task["baselines"].items()]:
            ivs = m.get("intervals", {})
            lines.append("  " + f"{name:<14}" + "".join(_cell(m[k], ivs.get(k)) for k in keys))
        for name, m in task.get("by_field_mse", {}).items():
            lines.append(f"  {name:<14}mse prices {m['prices']:.4g}, sizes {m['sizes']:.4g}")
        if "mid_bps" in task:
            m = task["mid_bps"]
            da = m["direction_accuracy"]
            lines.append(f"  mid (bps): mae {m['mae']:.4g}, direction accuracy "
                         + ("-" if da is None else f"{da:.4g}"))
        for c in task.get("comparisons", []):
            lo, hi = c["interval"]
            lines.append(f"  model vs {c['baseline']:<12} {c['metric']:<9} advantage {_signed(c['advantage']):>10} "
                         f"[{_signed(lo)}, {_signed(hi)}]: {c['verdict']}")
        lines.append(f"  -> {task['verdict']}")
    return "\n".join(lines)


def _cell(v: float | None, interval: list[float | None] | None = None) -> str:
    if v is None:
        return f"{'-':>32}"
    text = f"{v:.4g}"
    if interval and interval[0] is not None and interval[1] is not None:
        text += f" [{interval[0]:.3g}, {interval[1]:.3g}]"
    return f" {text:>31}"


def _ms(ms: int | None) -> str:
    if ms is None:
        return "?"
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
