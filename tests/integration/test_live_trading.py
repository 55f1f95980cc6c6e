"""Live trading end to end against the loopback exchange, as a user runs it.

The sim runs as its own process (``python -m bot sim --print-urls``, the account's keys in its
environment), so it outlives a ``kill -9`` of the bot; the bot is ``python -m bot run --live`` with
``[live.venues.X] url`` pointed at the sim and the keys in ``BOT_BINANCE_API_KEY`` / ``_SECRET``. The
venue's own view is read with ccxt (sync) and the same keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest

from bot.execution.venues import point_at
from tests.integration.test_paper_trading import MAKER

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
KEY, SECRET = "liveKEYsentinel0123456789", "liveSECRETsentinel9876543210"
D = Decimal
SPOT, USDM = "binance_spot", "binance_usdm"

# paper's resting maker on Binance spot, and two takers
STRATEGIES = MAKER + """
[[strategies]]
name = "taker_usdm_btc"
kind = "threshold"
model = "tabl_binance-spot-btcusdt_h10"
venue = "binance_usdm"
symbols = ["BTCUSDT"]
threshold = 0.34
allow_short = true
notional = 250  # USD-M's minimum notional is 100 USDT, after rounding down to the 0.001 BTC step

[[strategies]]
name = "taker_spot_btc"
kind = "threshold"
model = "tabl_binance-spot-btcusdt_h10"
venue = "binance_spot"
symbols = ["BTCUSDT"]
threshold = 0.34
notional = 50
"""


@pytest.fixture(scope="module")
def sim() -> Iterator[dict[str, dict[str, Any]]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BOT_SIM_API_KEY": KEY, "BOT_SIM_API_SECRET": SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "bot", "sim", "--print-urls"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(4)]
        yield {x["venue"]: x for x in lines}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def _config(folder: Path, urls: dict[str, dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    venues = "\n".join(f'[venues.{v}]\nenabled = false\n' for v in urls if v not in (SPOT, USDM))
    for v in (SPOT, USDM):
        u = urls[v]
        venues += (f'[venues.{v}]\nws_url = "{u["ws"]}"\nrest_url = "{u["rest"]}"\n'
                   f'symbols = {json.dumps(u["symbols"])}\n[live.venues.{v}]\nurl = "{u["rest"]}"\n')
    cfg = folder / "config.toml"
    cfg.write_text(f"""
{venues}
[models]
dir = "{ROOT / 'models' / 'checkpoints'}"
serve_on = {{ tabl = ["binance_usdm"] }}

[reference]
measure_skew = false  # the sim's clock is the recording's (2024): ccxt tracks the offset for signing
{STRATEGIES}""")
    return cfg


def _venue(urls: dict[str, dict[str, Any]], venue: str = SPOT) -> Any:
    kind = "spot" if venue == SPOT else "linear"
    ex = ccxt.binance({"apiKey": KEY, "secret": SECRET, "options": {
        "fetchMarkets": {"types": [kind]}, "defaultType": "spot" if venue == SPOT else "future",
        "fetchCurrencies": False, "fetchMargins": False, "adjustForTimeDifference": True}})  # fmt: skip
    point_at(ex, urls[venue]["rest"], urls[venue]["ws"])
    ex.load_markets()
    return ex


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "BOT_LIVE_TRADING": "yes", "BOT_BINANCE_API_KEY": KEY,
            "BOT_BINANCE_API_SECRET": SECRET}  # fmt: skip


def _cmd(cfg: Path, duration: float) -> list[str]:
    return [sys.executable, "-m", "bot", "--config", str(cfg), "run", "--live", "--duration", str(duration),
            "--status-every", "5"]  # fmt: skip


def test_live_without_the_opt_in_refuses_with_one_line(tmp_path: Path, sim: dict[str, dict[str, Any]]) -> None:
    cfg = _config(tmp_path, sim)
    env = {k: v for k, v in _env().items() if k != "BOT_LIVE_TRADING"}
    p = subprocess.run(_cmd(cfg, 5), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0
    assert "BOT_LIVE_TRADING=yes" in p.stderr


def test_live_without_keys_names_the_variables_and_exits_2(tmp_path: Path, sim: dict[str, dict[str, Any]]) -> None:
    cfg = _config(tmp_path, sim)
    env = {k: v for k, v in _env().items() if not k.startswith("BOT_BINANCE")}
    p = subprocess.run(_cmd(cfg, 5), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "BOT_BINANCE_SPOT_API_KEY" in p.stderr
    assert "Traceback" not in p.stderr


def test_kill_9_mid_session_then_restart_reconciles_with_the_venue(
    tmp_path: Path, sim: dict[str, dict[str, Any]]
) -> None:
    # Arrange: a maker (post-only orders resting 3 bps behind the touch) and a taker on Binance spot, a
    # taker on USD-M (long and short)
    cfg = _config(tmp_path, sim)
    db = tmp_path / "out" / "live.sqlite"  # live's own (bot.state_lock.live_db), beside paper's state.sqlite
    venue, perp = _venue(sim), _venue(sim, USDM)
    first_log = tmp_path / "first.log"
    with first_log.open("w") as log:
        proc = subprocess.Popen(_cmd(cfg, 150), cwd=tmp_path, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    resting: list[str] = []
    try:
        # Act: kill -9 once an order rests at the venue (and the bot has written it)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not resting:
            assert proc.poll() is None, first_log.read_text()[-3000:]
            if db.exists():
                with contextlib.closing(sqlite3.connect(db)) as conn, contextlib.suppress(sqlite3.OperationalError):
                    resting = [r[0] for r in conn.execute(
                        "SELECT client_order_id FROM orders WHERE status = 'accepted' AND order_type = 'limit'")]
            time.sleep(0.25)
        assert resting, "no limit order rested within 120 s"
    finally:
        proc.kill()  # SIGKILL: no cancel, no flush of any kind
        proc.wait(timeout=30)
    at_venue = {o["clientOrderId"] for o in venue.fetch_open_orders("BTC/USDT")}
    assert set(resting) <= at_venue  # they were really resting there, orphans unless the restart adopts them
    # the restart: reconcile, trade a little, cancel everything on the way out
    p = subprocess.run(_cmd(cfg, 20), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=180,
                       check=False)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stdout + p.stderr
    reconciled = [json.loads(x) for x in p.stderr.splitlines() if '"live_reconciled"' in x]
    assert reconciled
    assert reconciled[0]["positions_ok"] is True
    # Assert: nothing orphaned at the venue, nothing doubled, the ledger equal to the venue's view
    assert venue.fetch_open_orders("BTC/USDT") == []
    assert perp.fetch_open_orders("BTC/USDT:USDT") == []
    venue_trades = {(SPOT, str(t["id"])) for t in venue.fetch_my_trades("BTC/USDT", limit=1000)}
    venue_trades |= {(USDM, str(t["id"])) for t in perp.fetch_my_trades("BTC/USDT:USDT", limit=1000)}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM orders WHERE status IN ('new', 'accepted', 'partially_filled')"
                            ).fetchone()[0] == 0  # fmt: skip
        for cid in resting:
            (st,) = conn.execute("SELECT status FROM orders WHERE client_order_id = ?", (cid,)).fetchone()
            assert st in ("filled", "cancelled"), (cid, st)
        news = conn.execute("SELECT COUNT(*) FROM order_events WHERE status = 'new' GROUP BY client_order_id")
        assert all(n == 1 for (n,) in news)
        assert sorted(conn.execute("SELECT venue, trade_id FROM fills")) == sorted(venue_trades)  # once, none made up
        fills = conn.execute("SELECT trade_id, side, qty, price, fee FROM fills WHERE venue = ?", (SPOT,)).fetchall()
        perp_fills = conn.execute("SELECT side, qty FROM fills WHERE venue = ?", (USDM,)).fetchall()
        for cid, filled in conn.execute("SELECT client_order_id, filled_qty FROM orders"):
            got = sum((D(q) for (q,) in conn.execute("SELECT qty FROM fills WHERE client_order_id = ?", (cid,))), D(0))
            assert got == D(filled), cid
        start = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE 'live_start:%'").fetchall())
    held = sum((D(q) if s == "buy" else -D(q) for _, s, q, _, _ in fills), D(0))
    cash = sum((-(D(q) * D(px)) if s == "buy" else D(q) * D(px) for _, s, q, px, _ in fills), D(0))
    fees = sum((D(f) for *_, f in fills), D(0))
    total = {b["asset"]: D(b["free"]) + D(b["locked"]) for b in venue.fetch_balance()["info"]["balances"]}
    assert total.get("BTC", D(0)) == D(start[f"live_start:{SPOT}:BTCUSDT"]) + held
    assert total["USDT"] == D(start[f"live_start:{SPOT}:cash"]) + cash - fees
    assert perp_fills, "the USD-M strategy never traded: the position check would prove nothing"
    risk = perp.fapiPrivateV2GetPositionRisk({"symbol": "BTCUSDT"})
    perp_held = sum((D(q) if side == "buy" else -D(q) for side, q in perp_fills), D(0))
    assert D(risk[0]["positionAmt"]) == D(start[f"live_start:{USDM}:BTCUSDT"]) + perp_held
    # the keys appear nowhere: not in either run's output or log, the state database or `bot status`
    status = subprocess.run([sys.executable, "-m", "bot", "--config", str(cfg), "status", "--live", "--json"],
                            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60, check=False)
    assert status.returncode == 0, status.stderr
    blob = first_log.read_text() + p.stdout + p.stderr + status.stdout + status.stderr
    blob += db.read_bytes().decode("latin-1")
    assert KEY not in blob
    assert SECRET not in blob
