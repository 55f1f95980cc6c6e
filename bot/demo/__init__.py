"""The embedded demo data: what a fresh clone runs on when ``../shared/data`` is not there.

* ``recording/``: a native recording (``bot.recording``) of four real sessions (Bybit spot + linear,
  Binance spot BTC, Binance USD-M BTC and ETH), built by ``bot/demo/make_demo.py``;
* ``klines/binance_spot/`` and ``klines/bybit_linear/``: the last 1500 one-minute candles of BTC, ETH
  and SOL from each kline source, byte for byte.

``PROVENANCE.md`` says where every byte came from and what was cut.
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
RECORDING = DEMO_DIR / "recording"
KLINES = DEMO_DIR / "klines"
