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
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

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
             "lobforecast": _tasks_lobforecast}[family](spec, ev, fs, out)
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
                         X: NDArray[Any], fit_X: NDArray[Any], fit_y: NDArray[np.int64]) -> dict[str, Any]:
    ok = y >= 0
    y, model_pred, past, X = y[ok], model_pred[ok], past[ok], X[ok]
    fit_ok = fit_y >= 0
    fit_X, fit_y = fit_X[fit_ok], fit_y[fit_ok]
    baselines: dict[str, Any] = {}
    counts = np.bincount(fit_y, minlength=len(CLASSES))
    baselines["majority"] = classification_metrics(y, np.full_like(y, int(counts.argmax())))
    baselines["majority"]["class"] = CLASSES[int(counts.argmax())]
    baselines["persistence"] = classification_metrics(y, np.where(past >= 0, past, 1))
    if len(fit_y) >= 8 and len(np.unique(fit_y)) > 1:
        predictor, lam = fit_logistic(fit_X, fit_y, _class_weights(fit_y))
        baselines["logistic"] = classification_metrics(y, predictor(X)) | {"l2": lam}
    model = classification_metrics(y, model_pred)
    return {"name": name, "kind": "classification", "model": model, "baselines": baselines,
            "verdict": _verdict(name, model, baselines, ("accuracy", "macro_f1"), higher=True)}


def _regression_task(name: str, y: NDArray[Any], model_pred: NDArray[Any], past: NDArray[Any] | None,
                     X: NDArray[Any], fit_X: NDArray[Any], fit_y: NDArray[Any]) -> dict[str, Any]:
    baselines: dict[str, Any] = {"zero": regression_metrics(y, np.zeros_like(y))}
    if past is not None:
        baselines["persistence"] = regression_metrics(y, np.nan_to_num(past, nan=0.0))
    if len(fit_y) >= 8:
        W, lam = fit_ridge(fit_X, fit_y)
        baselines["ridge"] = regression_metrics(y, _affine(X, W)) | {"l2": lam}
    model = regression_metrics(y, model_pred)
    return {"name": name, "kind": "regression", "model": model, "baselines": baselines,
            "verdict": _verdict(name, model, baselines, ("mse",), higher=False)}


def _verdict(name: str, model: dict[str, Any], baselines: dict[str, Any], keys: tuple[str, ...], higher: bool) -> str:
    lost = []
    for key in keys:
        for b, m in baselines.items():
            mv, bv = model[key], m[key]
            if not (mv > bv if higher else mv < bv):
                lost.append(f"{key} {mv:.4g} vs {b} {bv:.4g}")
    if not lost:
        return f"{name}: the model beats every baseline on {', '.join(keys)}"
    return f"{name}: the model does NOT beat the baselines: " + "; ".join(lost)


def _tasks_tabl(spec: dict[str, Any], ev: SampleSet, fs: SampleSet, out: Any) -> list[dict[str, Any]]:
    X, fit_X = flat_features(ev.x), flat_features(fs.x)
    pred = out.argmax(-1).numpy()  # (N, H)
    tasks = []
    for k, h in enumerate(spec["labels"]["horizons"]):
        tasks.append(_classification_task(
            f"direction h={h} steps", ev.y["direction"][:, k].numpy(), pred[:, k], ev.past["direction"][:, k],
            X, fit_X, fs.y["direction"][:, k].numpy()))
    return tasks


def _tasks_multiscale(spec: dict[str, Any], ev: SampleSet, fs: SampleSet, out: Any) -> list[dict[str, Any]]:
    X, fit_X = flat_features(ev.x), flat_features(fs.x)
    lab = spec["labels"]
    tasks = [_classification_task(
        f"direction h={lab['direction_horizon']} bars", ev.y["direction"].numpy(),
        out["direction_logits"].argmax(-1).numpy(), ev.past["direction"], X, fit_X, fs.y["direction"].numpy())]
    scale = np.asarray(lab["return_scale"])
    pred = out["returns"].double().numpy() * scale
    for k, h in enumerate(lab["return_horizons"]):
        tasks.append(_regression_task(f"log return h={h} bars", ev.y["ret"][:, k].numpy(), pred[:, k],
                                      ev.past["ret"][:, k], X, fit_X, fs.y["ret"][:, k].numpy()))
    return tasks


def _tasks_crossasset(spec: dict[str, Any], ev: SampleSet, fs: SampleSet, out: Any) -> list[dict[str, Any]]:
    X, fit_X = flat_features(ev.x), flat_features(fs.x)
    lab = spec["labels"]
    scale = np.asarray(lab["return_scale"])
    pred_dir = out["direction_logits"].argmax(-1).numpy()
    pred_ret = out["returns"].double().numpy() * scale
    tasks = []
    for a, asset in enumerate(spec["assets"]):
        tasks.append(_classification_task(
            f"{asset} direction h={lab['horizon']} bars", ev.y["direction"][:, a].numpy(), pred_dir[:, a],
            ev.past["direction"][:, a], X, fit_X, fs.y["direction"][:, a].numpy()))
        tasks.append(_regression_task(f"{asset} log return h={lab['horizon']} bars", ev.y["ret"][:, a].numpy(),
                                      pred_ret[:, a], ev.past["ret"][:, a], X, fit_X, fs.y["ret"][:, a].numpy()))
    tasks.append(_portfolio_task(spec, ev, out))
    return tasks


def _portfolio_task(spec: dict[str, Any], ev: SampleSet, out: Any) -> dict[str, Any]:
    """Mean and Sharpe (per sample, overlapping horizons: not annualised) of the portfolio's h-bar log return."""
    r = ev.y["ret"].numpy()  # (N, A)
    w = out["portfolio_weights"].double().numpy()

    def stats(weights: NDArray[Any]) -> dict[str, Any]:
        p = (weights * r).sum(-1)
        return {"n": len(p), "mean_return": float(p.mean()), "sharpe": float(p.mean() / p.std()) if p.std() else 0.0}

    model = stats(w)
    model["mean_weights"] = w.mean(0).tolist()
    baselines = {"equal_weight": stats(np.full_like(w, 1.0 / w.shape[1]))}
    verdict = _verdict(f"portfolio h={spec['labels']['horizon']} bars", model, baselines, ("sharpe",), higher=True)
    return {"name": "portfolio", "kind": "portfolio", "model": model, "baselines": baselines, "verdict": verdict}


def _tasks_lobforecast(spec: dict[str, Any], ev: SampleSet, fs: SampleSet, out: Any) -> list[dict[str, Any]]:
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
        y, p = y_all[:, k], p_all[:, k]
        task = _regression_task(f"book h={h} steps (normalised, 4x{levels} features)", y.ravel(), p.ravel(), None,
                                X, fit_X, np.zeros(0))
        baselines = task["baselines"]
        baselines["persistence"] = regression_metrics(y.ravel(), pers.ravel())
        if len(fs) >= 8:
            W, lam = fit_ridge(fit_X, fs.y["book"][:, k].double().numpy())
            baselines["ridge"] = regression_metrics(y.ravel(), _affine(X, W).ravel()) | {"l2": lam}
        px = np.zeros(width, dtype=bool)
        px[0::2] = True
        preds = {"model": p, "zero": np.zeros_like(p), "persistence": pers}
        if "ridge" in baselines:
            preds["ridge"] = _affine(X, W)
        task["by_field_mse"] = {name: {"prices": float(np.mean((q - y)[:, px] ** 2)),
                                       "sizes": float(np.mean((q - y)[:, ~px] ** 2))} for name, q in preds.items()}
        # the mid in bps from the mid at t: (best bid + best ask) / 2, prices share one scale
        mid_true = 0.5 * (y[:, 0] + y[:, 2 * levels]) * price_std
        mid_pred = 0.5 * (p[:, 0] + p[:, 2 * levels]) * price_std
        task["mid_bps"] = regression_metrics(mid_true, mid_pred)
        task["verdict"] = _verdict(task["name"], task["model"], baselines, ("mse",), higher=False)
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
        lines.append("")
        lines.append(f"{task['name']} ({task['kind']}, n={task['model']['n']})")
        lines.append("  " + f"{'method':<14}" + "".join(f"{k:>20}" for k in keys))
        for name, m in [("model", task["model"]), *task["baselines"].items()]:
            lines.append("  " + f"{name:<14}" + "".join(_cell(m[k]) for k in keys))
        for name, m in task.get("by_field_mse", {}).items():
            lines.append(f"  {name:<14}mse prices {m['prices']:.4g}, sizes {m['sizes']:.4g}")
        if "mid_bps" in task:
            m = task["mid_bps"]
            lines.append(f"  mid (bps): mae {m['mae']:.4g}, direction accuracy {m['direction_accuracy']:.4g}")
        lines.append(f"  -> {task['verdict']}")
    return "\n".join(lines)


def _cell(v: float | None) -> str:
    return f"{'-':>20}" if v is None else f"{v:>20.6g}"


def _ms(ms: int | None) -> str:
    if ms is None:
        return "?"
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
