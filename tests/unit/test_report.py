"""The replay report (``replay.report``, ``python -m bot report``) on hand-made run directories.

The hand-checked run (``tests/unit/replay_run.hand_run``): one spot account of 10,000 USDT, bar 60 s, five
grid points; BTCUSDT mids 100, 102, 101, 104, 103; account equity 10000, 10100, 10050, 10200, 10150.

Fills of strategy ``thr`` (decision = the order's NEW update, mid = the Price at or before it):

    o1  +1 s  buy  50 @ 100.5 fee 2.5   decided at 0 s,   mid 100  slippage (100.5 - 100) * 50 = 25
    o2 121 s  sell 50 @ 100.8 fee 2.5   decided at 120 s, mid 101  slippage (101 - 100.8) * 50 = 10
    o3 181 s  sell 20 @ 103.9 fee 1     decided at 180 s, mid 104  slippage (104 - 103.9) * 20 = 2
    o4 200 s  buy  40 @ 104.2 fee 2     decided at 190 s, mid 104  slippage (104.2 - 104) * 40 = 8

Round trips: long 50 (0 .. 121 s) PnL 0.3 * 50 - 5 = 10; short 20 (181 .. 200 s, closed by half of o4,
half its fee) PnL -0.3 * 20 - 1 - 1 = -8; o4's other half opens a long 20 @ 104.2 (fee 1) still open at the
end, marked at 103: -24 - 1 = -25. Win rate 1/2, profit factor 10 / 8, mean holding (120 + 19) / 2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bot.bootstrap import sharpe_rows, sortino_rows
from bot.events import Side
from replay import html as page
from replay import plots
from replay.metrics import Curve, compare_curves
from replay.report import dumps, write_report
from replay.report_cli import register
from tests.unit.replay_run import T0, S, equity, fill, hand_run, meta, order_new, price, write_run

pytestmark = pytest.mark.unit

EQ = [10000.0, 10100.0, 10050.0, 10200.0, 10150.0]
PPY = 365 * 86400 / 60


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = write_run(tmp_path_factory.mktemp("r") / "run", hand_run(), meta())
    return write_report(d)


def _cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="python -m bot")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


# -- hand-checked figures ---------------------------------------------------------------------------------


def test_returns_sharpe_sortino_and_drawdown_match_a_hand_computation(report: dict) -> None:
    r = [EQ[i + 1] / EQ[i] - 1 for i in range(4)]
    mean = sum(r) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / 3)
    down = math.sqrt(sum(min(x, 0) ** 2 for x in r) / 4)

    got = report["portfolio"]["returns"]

    assert report["run"]["periods_per_year"] == pytest.approx(PPY)
    assert got["periods"] == 4
    assert got["total_return"] == pytest.approx(0.015)
    assert got["sharpe"] == pytest.approx(mean / sd * math.sqrt(PPY))
    assert got["sortino"] == pytest.approx(mean / down * math.sqrt(PPY))
    assert got["max_drawdown"] == pytest.approx(50 / 10100)  # 10100 -> 10050 is deeper than 10200 -> 10150
    assert got["max_drawdown_duration_s"] == 60.0
    assert got["volatility"] == pytest.approx(sd * math.sqrt(PPY))
    for key in ("total_return", "sharpe", "sortino", "max_drawdown"):
        iv = got[f"{key}_interval"]
        assert iv["low"] <= iv["high"]
        assert iv["block"] == 2  # round(4 ** (1/3))


def test_round_trips_win_rate_profit_factor_and_holding_time(report: dict) -> None:
    t = report["portfolio"]["trades"]

    assert (t["round_trips"], t["open_trips"], t["long"], t["short"]) == (2, 1, 1, 1)
    assert t["closed_pnl"] == pytest.approx(10 - 8)
    assert t["open_pnl"] == pytest.approx(-25)
    assert t["win_rate"] == pytest.approx(0.5)
    assert t["profit_factor"] == pytest.approx(10 / 8)
    assert t["mean_pnl"] == pytest.approx(1.0)
    assert t["mean_holding_s"] == pytest.approx((120 + 19) / 2)
    assert report["strategies"]["thr"]["pnl"] == pytest.approx(2 - 25)


def test_fees_slippage_against_the_decision_mid_and_turnover(report: dict) -> None:
    c = report["portfolio"]["costs"]

    assert c["fills"] == 4
    assert c["fees"] == pytest.approx(8.0)
    assert c["slippage"] == pytest.approx(25 + 10 + 2 + 8)
    assert c["slippage_bps"] == pytest.approx(45 / (50 * 100 + 50 * 101 + 20 * 104 + 40 * 104) * 1e4)
    assert c["traded_notional"] == pytest.approx(50 * 100.5 + 50 * 100.8 + 20 * 103.9 + 40 * 104.2)
    assert c["turnover"] == pytest.approx(c["traded_notional"] / (sum(EQ) / 5))
    assert c["unmatched_fills"] == 0
    assert report["portfolio"]["fees_booked"] == pytest.approx(8.0)  # the last snapshot's cumulative fees


def test_exposure_from_the_snapshots_and_from_the_strategy_own_fills(report: dict) -> None:
    e = report["portfolio"]["exposure"]
    s = report["strategies"]["thr"]["exposure"]

    assert e["time_in_market"] == pytest.approx(3 / 5)  # positions in the snapshots at 60, 120 and 240 s
    assert e["mean_gross_leverage"] == pytest.approx((50 * 102 / 10100 + 50 * 101 / 10050 + 20 * 103 / 10150) / 5)
    # the strategy's own position at the grid points: 0, 50, 50, 0 (o2 at 121 s, o3+o4 net +20 at 200 s), 20
    assert s["time_in_market"] == pytest.approx(3 / 5)
    assert s["mean_gross_notional"] == pytest.approx((50 * 102 + 50 * 101 + 20 * 103) / 5)
    assert report["symbols"]["binance_spot:BTCUSDT"]["exposure"] == s


def test_buy_and_hold_splits_the_balance_at_the_first_price(report: dict) -> None:
    bh = report["buy_and_hold"]

    assert bh["symbols"] == ["binance_spot:BTCUSDT"]
    assert bh["returns"]["total_return"] == pytest.approx(103 / 100 - 1)
    assert bh["returns"]["end_equity"] == pytest.approx(10300)
    assert {(c["vs"], c["statistic"]) for c in report["comparisons"]} == {("buy_and_hold", "mean_return"),
                                                                         ("buy_and_hold", "sharpe")}


def test_signal_hit_rates_per_model_and_horizon(report: dict) -> None:
    tabl = {h["horizon"]: h for h in report["signals"]["tabl_x"]["horizons"]}
    ca = report["signals"]["ca"]

    # 1m: up at 0 s (100 -> 102 hit), stationary at 120 s (no call), down at 180 s (104 -> 103 hit)
    assert (tabl["1m"]["up"], tabl["1m"]["down"], tabl["1m"]["flat"]) == (1, 1, 1)
    assert (tabl["1m"]["scored"], tabl["1m"]["hits"]) == (2, 2)
    assert tabl["1m"]["hit_rate"] == 1.0
    assert tabl["1m"]["edge_bps"] == pytest.approx((200 + (1 - 103 / 104) * 1e4) / 2)
    # the moves went up once and down once: calling "up" every time would have hit half of them
    const = tabl["1m"]["constant_call"]
    assert (const["call"], const["hit_rate"], const["difference"]) == ("up", 0.5, 0.5)
    # 2m: down at 0 s (100 -> 101 miss), down at 120 s (101 -> 103 miss), up at 180 s (ends after the data)
    assert (tabl["2m"]["scored"], tabl["2m"]["hits"], tabl["2m"]["unresolved"]) == (2, 0, 1)
    assert tabl["2m"]["hit_rate"] == 0.0
    assert tabl["2m"]["block"] == 2  # 120 s horizon / 90 s median spacing, rounded up
    assert ca["by_symbol"] == {"binance_spot:BTCUSDT": 1, "binance_spot:ETHUSDT": 1}
    assert ca["horizons"][0]["unresolved"] == 1  # no ETHUSDT prices


def test_attention_summaries(report: dict) -> None:
    t = report["attention"]["tabl_x"]
    c = report["attention"]["ca"]

    assert t["kind"] == "temporal"
    assert t["labels"] == ["t-0", "t-1", "t-2", "t-3"]
    assert t["mean_weight"]["t-0"] == pytest.approx((0.5 + 0.3 + 0.9) / 3)
    assert t["mean_weight"]["t-3"] == pytest.approx(0.1 / 3)
    assert t["top_count"] == {"t-0": 2, "t-1": 1, "t-2": 0, "t-3": 0}
    assert c["matrix"] == {"queries": ["BTCUSDT", "ETHUSDT"], "keys": ["BTCUSDT", "ETHUSDT"],
                           "mean_weight": [[None, 0.7], [0.6, None]]}


def test_book_incidents_and_risk_denials(report: dict) -> None:
    book = report["books"]["binance_spot:BTCUSDT"]
    risk = report["risk"]

    assert (book["incidents"], book["by_reason"], book["not_live_s"]) == (1, {"gap": 1}, 30.0)
    assert (book["crossed"], book["crossed_levels_removed"]) == (1, 2)
    assert risk["denials_by_reason"] == {"max_position": 1, "min_notional": 1}
    assert risk["time_in_state_s"] == {"active": 150.0 + 30.0, "reducing": 60.0}
    assert report["events"]["Fill"] == 4


# -- verdicts ---------------------------------------------------------------------------------------------


def _curve(name: str, returns: np.ndarray) -> Curve:
    eq = 10000 * np.cumprod(np.concatenate([[1.0], 1 + returns]))
    return Curve(name, np.arange(len(eq), dtype=np.int64), eq, returns, PPY)


def test_beats_only_when_the_interval_of_the_difference_excludes_zero() -> None:
    rng = np.random.default_rng(0)
    market = rng.normal(0, 0.01, size=500)
    bh = _curve("bh", market)

    better = compare_curves(_curve("s", market + 0.002), bh, "buy_and_hold")
    same = compare_curves(_curve("s", market.copy()), bh, "buy_and_hold")
    noise = rng.normal(0.0, 0.01, size=500)
    noisy = compare_curves(_curve("s", market + noise - noise.mean() + 0.0003), bh, "buy_and_hold")
    worse = compare_curves(_curve("s", market - 0.002), bh, "buy_and_hold")

    assert better[0]["verdict"] == "beats"
    assert better[0]["difference"] == pytest.approx(0.002)
    assert better[0]["interval"]["low"] > 0
    assert same[0]["verdict"] == "indistinguishable"
    assert same[0]["difference"] == 0.0
    assert noisy[0]["difference"] == pytest.approx(0.0003)  # a positive point estimate, but inside the noise
    assert noisy[0]["interval"]["low"] < 0 < noisy[0]["interval"]["high"]
    assert noisy[0]["verdict"] == "indistinguishable"
    assert worse[0]["verdict"] == "worse"
    sharpe = better[1]
    assert sharpe["statistic"] == "sharpe"
    scale = math.sqrt(PPY)
    assert sharpe["difference"] == pytest.approx(
        sharpe_rows((market + 0.002)[None], scale)[0] - sharpe_rows(market[None], scale)[0])
    assert sortino_rows(market[None], 1.0)[0] < sortino_rows((market + 0.002)[None], 1.0)[0]


def test_the_baseline_subdirectory_is_reported_and_compared(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", hand_run(), meta(baseline="baseline"))
    g = [T0 + k * 60 * S for k in range(5)]
    base = [price(t, m) for t, m in zip(g, [100.0, 102.0, 101.0, 104.0, 103.0], strict=True)]
    base += [equity(t, v) for t, v in zip(g, ["10000", "10010", "10000", "10010", "10000"], strict=True)]
    write_run(d / "baseline", base, meta(mode="baseline", strategies=[{"name": "flat", "kind": "threshold",
                                                                        "venue": "binance_spot",
                                                                        "symbols": ["BTCUSDT"]}]))

    report = write_report(d)

    assert report["baseline"]["name"] == "baseline"
    assert report["baseline"]["returns"]["total_return"] == pytest.approx(0.0)
    assert report["baseline"]["trades"]["round_trips"] == 0
    vs = {c["statistic"]: c for c in report["comparisons"] if c["vs"] == "baseline"}
    assert set(vs) == {"mean_return", "sharpe"}
    assert report["summary"]["verdicts"]["baseline"] == {"mean_return": vs["mean_return"]["verdict"],
                                                         "sharpe": vs["sharpe"]["verdict"]}
    assert report["summary"]["baseline_total_return"] == pytest.approx(0.0)
    assert vs["mean_return"]["difference"] == pytest.approx(
        np.mean([EQ[i + 1] / EQ[i] - 1 for i in range(4)]) - np.mean([0.001, -10 / 10010, 0.001, -10 / 10010]))


# -- walk-forward -----------------------------------------------------------------------------------------


def test_walk_forward_scores_only_the_test_spans_and_says_so(tmp_path: Path) -> None:
    # 0..480 s; tests 120..240 and 360..480, each fold a run of its own (accounts start afresh); the equity
    # of another run in the training span 240..360 and a fill there count nothing; fold 2 has no snapshot
    # at its first point (its first one stands in: no return is made of fold 1's end and fold 2's start)
    g = [T0 + k * 60 * S for k in range(9)]
    snaps = [(2, "10000", "0"), (3, "10100", "1"), (4, "10200", "2"), (5, "20000", "9"), (7, "10000", "0.5"),
             (8, "10100", "1.5")]
    ev = [price(t, 100.0 + k) for k, t in enumerate(g)]
    ev += [equity(g[k], v, fees=fee) for k, v, fee in snaps]
    ev += [order_new(g[5], "w1", Side.BUY, "1"), fill(g[5] + S, "w1", Side.BUY, "1", "105", "0.1")]
    # a buy left open at fold 1's end and a sell in fold 2 are two open trips, never one round trip
    ev += [order_new(g[3], "f1", Side.BUY, "1"), fill(g[3] + S, "f1", Side.BUY, "1", "103", "0.1"),
           order_new(g[7], "f2", Side.SELL, "1"), fill(g[7] + S, "f2", Side.SELL, "1", "107", "0.1")]
    folds = [{"train_ns": [g[0], g[2]], "test_ns": [g[2], g[4]], "checkpoints": {}},
             {"train_ns": [g[4], g[6]], "test_ns": [g[6], g[8]], "checkpoints": {}}]
    d = write_run(tmp_path / "wf", sorted(ev, key=lambda e: e["ts_recv"] if isinstance(e, dict) else e.ts_recv),
                  meta(mode="walk_forward", span_ns=[g[0], g[8]], folds=folds, baseline="baseline"))
    flat = [price(t, 100.0 + k) for k, t in enumerate(g)] + [equity(t, "10000") for t in g]
    write_run(d / "baseline", flat, meta(mode="baseline", span_ns=[g[0], g[8]]))

    report = write_report(d)

    assert report["run"]["coverage"].startswith("test spans only: 2 folds, 240 s of the 480 s span")
    assert report["run"]["grid_points"] == 6
    r = report["portfolio"]["returns"]
    assert r["periods"] == 4  # two per test span, none across the gap
    assert r["total_return"] == pytest.approx((10200 / 10000) * (10100 / 10000) - 1)
    assert report["portfolio"]["costs"]["fills"] == 2  # the training span's fill is out
    assert (report["portfolio"]["trades"]["round_trips"], report["portfolio"]["trades"]["open_trips"]) == (0, 2)
    assert report["portfolio"]["fees_booked"] == pytest.approx(2 + 1.5)  # each fold's own cumulative fees
    # the baseline (a plain run of the whole span) is scored on the same test spans, so it compares
    assert report["baseline"]["returns"]["periods"] == 4
    assert {c["verdict"] for c in report["comparisons"] if c["vs"] == "baseline"} <= {"beats", "indistinguishable",
                                                                                      "worse"}
    assert report["summary"]["coverage"] == "test spans only"
    assert "test spans only" in (d / "report.html").read_text()


def test_a_stretch_without_prices_is_one_period_not_thousands_of_empty_ones(tmp_path: Path) -> None:
    # two five-minute sessions two days apart (recordings of different days replayed back to back)
    day2 = T0 + 2 * 86400 * S
    times = [T0 + k * 60 * S for k in range(5)] + [day2 + k * 60 * S for k in range(5)]
    values = [10000 + 10 * k for k in range(5)] + [10100 + 10 * k for k in range(5)]
    ev = [price(t, 100.0 + k) for k, t in enumerate(times)]
    ev += [equity(t, str(v)) for t, v in zip(times, values, strict=True)]
    d = write_run(tmp_path / "gap", ev, meta(span_ns=[T0, times[-1]]))

    report = write_report(d)

    grid = report["run"]["grid"]
    assert (grid["points"], grid["gaps"]) == (10, 1)
    assert grid["gap_s"] == pytest.approx(2 * 86400 - 240)
    r = report["portfolio"]["returns"]
    assert r["periods"] == 9  # one of them the change across the gap
    assert r["total_return"] == pytest.approx(10140 / 10000 - 1)


# -- determinism, optional matplotlib, the command ----------------------------------------------------------


def test_two_renders_are_byte_identical_and_carry_no_absolute_path(tmp_path: Path) -> None:
    d = write_run(tmp_path / "det", hand_run(), meta())

    first = write_report(d)
    files = {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
    second = write_report(d)
    again = {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    assert first == second
    assert files == again
    assert {str(p) for p in files} >= {"report.json", "report.html", "plots/equity.png", "plots/attention.png"}
    assert files[Path("report.json")] == dumps(first).encode()
    for name in ("report.json", "report.html"):
        assert str(tmp_path) not in files[Path(name)].decode()
    assert first["run"]["sources"] == ["rec_spot"]
    assert "sources: rec_spot;" in files[Path("report.html")].decode()  # the page names them (it once printed code)
    assert "{escape(" not in files[Path("report.html")].decode()
    assert b"Matplotlib" not in files[Path("plots/equity.png")]


@pytest.mark.parametrize(("seconds", "text"), [(44.1, "44.1 s"), (588, "9.8 min"), (18_720, "5.2 h"),
                                               (3 * 86_400, "3 d"), (6.49638e7, "752 d")])  # fmt: skip
def test_spans_are_written_for_people(seconds: float, text: str) -> None:
    assert page.duration_text(seconds) == text


def test_without_matplotlib_the_json_is_written_and_the_page_says_plots_were_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "available", lambda: False)
    d = write_run(tmp_path / "noplot", hand_run(), meta())

    write_report(d)

    assert json.loads((d / "report.json").read_text())["portfolio"]["trades"]["round_trips"] == 2
    assert not (d / "plots").exists()
    assert html.escape(plots.SKIPPED) in (d / "report.html").read_text()


def test_an_event_type_the_report_does_not_read_is_counted_not_fatal(tmp_path: Path) -> None:
    d = write_run(tmp_path / "unknown", [*hand_run(), {"type": "FutureThing", "ts_recv": T0}], meta())

    assert write_report(d)["ignored_event_types"] == {"FutureThing": 1}


def test_report_command_prints_the_summary_and_compares_two_runs(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", hand_run(), meta())
    b = write_run(tmp_path / "b", hand_run(), meta())

    code, out, err = _cli("report", str(a), "--compare", str(b))

    assert code == 0, err
    assert "total return" in out
    assert "strategy vs buy_and_hold on mean_return" in out
    assert "a vs b on mean_return: indistinguishable" in out  # the same run twice: difference exactly 0
    assert (a / "report.json").is_file()
    assert not (b / "report.json").exists()  # --compare writes nothing into DIR2


@pytest.mark.parametrize("case", ["missing", "no_run_json", "damaged_line", "bad_run_json", "bad_field"])
def test_bad_input_prints_one_line_and_exits_2(case: str, tmp_path: Path) -> None:
    d = tmp_path / "run"
    if case != "missing":
        write_run(d, hand_run(), meta())
    if case == "no_run_json":
        (d / "run.json").unlink()
    elif case == "damaged_line":
        lines = (d / "events.jsonl").read_text().splitlines(keepends=True)
        lines[3] = lines[3][: len(lines[3]) // 2] + "\n"
        (d / "events.jsonl").write_text("".join(lines))
    elif case == "bad_run_json":
        (d / "run.json").write_text(json.dumps(meta(mode="banana", bar_s=0)))
    elif case == "bad_field":
        (d / "events.jsonl").write_text(json.dumps({"type": "Fill", "ts_recv": "soon"}) + "\n")

    code, out, err = _cli("report", str(d))

    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "Traceback" not in err
    expected = {"missing": f"error: {d}: no such run directory\n",
                "no_run_json": f"error: {d}: no run.json (not a replay run directory)\n"}.get(case)
    if expected:
        assert err == expected
    elif case == "damaged_line":
        assert err.startswith(f"error: {d / 'events.jsonl'} line 4: damaged event")
    elif case == "bad_run_json":
        assert "mode must be one of replay, walk_forward" in err
        assert "bar_s must be a positive number" in err
    else:
        assert err.startswith(f"error: {d / 'events.jsonl'} line 1: damaged event")


def test_the_report_command_is_registered() -> None:
    from bot.__main__ import COMMAND_MODULES

    assert "replay.report_cli" in COMMAND_MODULES
