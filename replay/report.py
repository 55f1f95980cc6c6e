"""The report of a replay run directory: ``report.json``, ``plots/*.png`` and ``report.html`` beside the run.

    write_report(run_dir) -> dict      what the replay engine calls at the end of a run (and ``bot report``)

The figures and their definitions are in ``replay.metrics`` (returns, buy-and-hold, and the definitions of
trades, costs and exposure, which ``replay.report_trades`` computes), ``replay.report_sections`` (per
strategy and symbol, books, risk) and ``replay.signal_metrics`` (signals, hit rates, attention).
Walk-forward runs are scored on their test spans only, and the report's ``run.coverage`` says so.

**Deterministic.** The same run directory gives the same bytes: keys sorted, every float written with 10
significant digits (NaN and infinities as null), no wall-clock time, no absolute path (sources given as
absolute paths are reduced to their file names, the run directory to its name), the bootstrap seeded, and
PNGs written without a software/date stamp. Plots need matplotlib (the ``plots`` extra); without it
``report.json`` is still written and the HTML says the plots were skipped.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from replay import html, plots
from replay.metrics import (
    LEVEL,
    RESAMPLES,
    SEED,
    Analysis,
    Curve,
    Grid,
    buy_and_hold_curve,
    compare_curves,
    make_grid,
    return_metrics,
    traded_keys,
)
from replay.report_data import ReportError, Run, load_run
from replay.report_sections import book_section, risk_section, strategy_section, symbol_section
from replay.report_trades import portfolio_section
from replay.signal_metrics import attention_section, signal_section

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
PLOTS_DIR = "plots"
SIGNIFICANT = 10

__all__ = ["ReportError", "analyse", "canonical", "dumps", "render", "summary_table", "write_report"]


# -- deterministic JSON -----------------------------------------------------------------------------------


def canonical(obj: Any) -> Any:
    """``obj`` as plain JSON values: floats to 10 significant digits (non-finite -> None, -0 -> 0), numpy
    scalars and Decimals to floats, tuples to lists, keys to strings."""
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [canonical(v) for v in obj]
    if isinstance(obj, bool | None | str):
        return obj
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating | Decimal):
        x = float(obj)
        if not math.isfinite(x):
            return None
        x = float(f"{x:.{SIGNIFICANT}g}")
        return 0.0 if x == 0 else x
    raise TypeError(f"not JSON-able in a report: {type(obj).__name__}")


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(canonical(report), sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


# -- the analysis -----------------------------------------------------------------------------------------


def _source_name(s: Any) -> str:
    p = Path(str(s))
    return p.name if p.is_absolute() else str(s)


def run_section(run: Run, grid: Grid) -> dict[str, Any]:
    a, b = run.span_ns
    scope = run.scope()
    covered = sum(hi - lo for lo, hi in scope) / 1e9
    if run.mode == "walk_forward":
        coverage = (f"test spans only: {len(scope)} folds, {covered:g} s of the {(b - a) / 1e9:g} s span; "
                    "nothing in a training span is scored, and returns never cross from one test span to the next")
    else:
        coverage = "the whole span"
    meta = run.meta
    return {
        "name": run.name, "mode": run.mode, "sources": [_source_name(s) for s in meta.get("sources", [])],
        "config_sha256": meta.get("config_sha256"), "span_ns": [a, b], "span_s": (b - a) / 1e9,
        "bar_s": run.bar_s, "periods_per_year": run.periods_per_year, "grid_points": len(grid.times),
        "grid": grid.describe(),
        "coverage": coverage, "scope_ns": [list(s) for s in scope], "accounts": meta.get("accounts"),
        "starting_equity": run.starting_equity(), "strategies": meta.get("strategies"),
        "folds": [{"train_ns": f.get("train_ns"), "test_ns": f.get("test_ns")} for f in meta.get("folds") or []],
        "baseline": meta.get("baseline"),
    }


def analyse(run: Run) -> Analysis:
    """Every figure of ``run`` (and of its baseline run), as a JSON-able report and the plots' series."""
    grid = make_grid(run)
    portfolio, curve, fills = portfolio_section(run, grid)
    mean_eq = float(np.mean(curve.equity)) if len(curve.equity) else None
    bh = buy_and_hold_curve(run, grid)
    comparisons = compare_curves(curve, bh, "buy_and_hold")
    baseline: dict[str, Any] | None = None
    base_curve: Curve | None = None
    if run.baseline is not None:
        bgrid = make_grid(run.baseline)
        bsection, base_curve, _ = portfolio_section(run.baseline, bgrid)
        baseline = {"name": run.baseline.name, "mode": run.baseline.mode,
                    "strategies": [s.get("name") for s in run.baseline.meta["strategies"]]} | bsection
        comparisons += compare_curves(curve, base_curve, "baseline")
    report: dict[str, Any] = {
        "version": 1,
        "summary": _headline(portfolio, return_metrics(bh, run), baseline, comparisons, run),
        "run": run_section(run, grid),
        "portfolio": portfolio,
        "buy_and_hold": {"returns": return_metrics(bh, run), "symbols": [f"{v}:{s}" for v, s in traded_keys(run)
                                                                         if (v, s) in run.events.prices],
                         "how": "starting balances split equally over the strategies' symbols, bought at each "
                                "symbol's first Price, no fees, held to the end"},
        "baseline": baseline,
        "comparisons": comparisons,
        "strategies": strategy_section(run, grid, fills, mean_eq),
        "symbols": symbol_section(run, grid, fills, mean_eq),
        "signals": signal_section(run),
        "attention": attention_section(run),
        "books": book_section(run, grid),
        "risk": risk_section(run, grid),
        "feed": run.meta.get("feed"),
        "models": run.meta.get("models"),
        "events": dict(sorted(run.events.counts.items())),
        "ignored_event_types": dict(sorted(run.events.ignored_types.items())),
        "bootstrap": {"method": "circular block bootstrap (bot.bootstrap), paired for comparisons",
                      "resamples": RESAMPLES, "level": LEVEL, "seed": SEED,
                      "block": "n^(1/3) for grid returns and round trips; the horizon in signals for hit rates"},
    }
    return Analysis(report=canonical(report), grid=grid, strategy=curve, buy_and_hold=bh, baseline=base_curve,
                    fills=fills)


def _headline(portfolio: dict[str, Any], bh: dict[str, Any], baseline: dict[str, Any] | None,
              comparisons: list[dict[str, Any]], run: Run) -> dict[str, Any]:
    """The few figures a run is judged by (what ``python -m bot replay`` prints)."""
    r, t, c = portfolio["returns"], portfolio["trades"], portfolio["costs"]
    verdicts: dict[str, dict[str, str]] = {}
    for comp in comparisons:
        verdicts.setdefault(comp["vs"], {})[comp["statistic"]] = comp["verdict"]
    return {"coverage": "test spans only" if run.mode == "walk_forward" else "whole span",
            "total_return": r.get("total_return"), "sharpe": r.get("sharpe"), "max_drawdown": r.get("max_drawdown"),
            "round_trips": t["round_trips"], "win_rate": t.get("win_rate"), "fees": c["fees"],
            "slippage": c["slippage"], "buy_and_hold_total_return": bh.get("total_return"),
            "baseline_total_return": baseline["returns"].get("total_return") if baseline else None,
            "verdicts": verdicts}


# -- writing ----------------------------------------------------------------------------------------------


def render(run: Run, run_dir: Path) -> Analysis:
    """Analyse ``run`` and write its report.json, plots and HTML into ``run_dir``."""
    an = analyse(run)
    try:
        (run_dir / REPORT_JSON).write_text(dumps(an.report), encoding="utf-8")
        images = plots.make_plots(run, an)
        if images is not None:
            (run_dir / PLOTS_DIR).mkdir(exist_ok=True)
            for name, data in images.items():
                (run_dir / PLOTS_DIR / name).write_bytes(data)
        note = "" if images is not None else plots.SKIPPED
        (run_dir / REPORT_HTML).write_text(html.page(an.report, images or {}, note), encoding="utf-8")
    except OSError as e:
        raise ReportError(f"{run_dir}: cannot write the report ({e.strerror or e})") from e
    return an


def write_report(run_dir: Path) -> dict[str, Any]:
    """Read ``run_dir``, write ``report.json``, ``plots/`` and ``report.html`` into it; return the report."""
    return render(load_run(Path(run_dir)), Path(run_dir)).report


# -- text summaries ---------------------------------------------------------------------------------------


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if pct:
        return f"{v * 100:.2f}%"
    return f"{v:.4g}"


def _with_iv(section: dict[str, Any] | None, key: str, pct: bool = False) -> str:
    if not section:
        return "-"
    v = section.get(key)
    iv = section.get(f"{key}_interval")
    text = _fmt(v, pct)
    if iv and iv.get("low") is not None and iv.get("high") is not None:
        text += f" [{_fmt(iv['low'], pct)}, {_fmt(iv['high'], pct)}]"
    return text


ROWS: tuple[tuple[str, str, str, bool], ...] = (
    ("total return", "returns", "total_return", True),
    ("Sharpe (annualised)", "returns", "sharpe", False),
    ("Sortino (annualised)", "returns", "sortino", False),
    ("max drawdown", "returns", "max_drawdown", True),
    ("max drawdown duration s", "returns", "max_drawdown_duration_s", False),
    ("round trips", "trades", "round_trips", False),
    ("win rate", "trades", "win_rate", True),
    ("profit factor", "trades", "profit_factor", False),
    ("mean holding s", "trades", "mean_holding_s", False),
    ("fees", "costs", "fees", False),
    ("slippage", "costs", "slippage", False),
    ("slippage bps", "costs", "slippage_bps", False),
    ("turnover (x mean equity)", "costs", "turnover", False),
    ("time in market", "exposure", "time_in_market", True),
)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    return "\n".join(lines)


def summary_table(report: dict[str, Any]) -> str:
    """The key figures of the strategy, buy-and-hold and the baseline, with intervals, and the verdicts."""
    cols = [("strategy", report["portfolio"]), ("buy-and-hold", report["buy_and_hold"])]
    if report.get("baseline"):
        cols.append(("no-model baseline", report["baseline"]))
    rows = [[label, *(_with_iv(sec.get(part), key, pct) for _, sec in cols)] for label, part, key, pct in ROWS]
    run = report["run"]
    grid = run["grid"]
    gap = html.duration_text(grid["gap_s"])
    gaps = f", {grid['gaps']} gaps without prices ({gap}) left out" if grid["gaps"] else ""
    head = (f"{run['name']}: {run['mode']}, {html.duration_text(run['span_s'])}, {run['grid_points']:,} points of "
            f"{grid['step_s']:g} s"
            f"{gaps} ({run['coverage']}); {int(LEVEL * 100)}% block-bootstrap intervals")
    verdicts = [f"strategy vs {c['vs']} on {c['statistic']}: {c['verdict']}" + _diff(c)
                for c in report["comparisons"]]
    return "\n".join([head, "", _table(["", *(n for n, _ in cols)], rows), "", *verdicts])


def _diff(c: dict[str, Any]) -> str:
    iv = c.get("interval")
    if c.get("difference") is None or not iv:
        return f" ({c['why']})" if c.get("why") else ""
    return f" (difference {_fmt(c['difference'])}, interval {_fmt(iv['low'])} .. {_fmt(iv['high'])})"


def compare_table(a: Analysis, b: Analysis) -> str:
    """Two runs side by side (key figures with their intervals) and, on a common grid, paired verdicts."""
    ra, rb = a.report, b.report
    rows = [[label, _with_iv(ra["portfolio"].get(part), key, pct), _with_iv(rb["portfolio"].get(part), key, pct)]
            for label, part, key, pct in ROWS]
    out = [_table(["", ra["run"]["name"], rb["run"]["name"]], rows), ""]
    for c in compare_curves(a.strategy, b.strategy, rb["run"]["name"]):
        out.append(f"{ra['run']['name']} vs {rb['run']['name']} on {c['statistic']}: {c['verdict']}" + _diff(c))
    return "\n".join(out)
