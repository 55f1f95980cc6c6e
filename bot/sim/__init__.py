"""The loopback exchange: replays recorded Bybit/Binance traffic on 127.0.0.1 (``python -m bot sim``).

Bybit v5 spot + linear and Binance spot + USD-M, websockets and the REST market-data endpoints, in the
venues' own shapes, from a native recording (``bot.recording``; convert public captures with
``python -m bot import``). Command line::

    python -m bot sim [--data DIR] [--speed N] [--seed S] [--faults SPEC] [--print-urls] [--no-loop]

In a test or in ``bot run --paper --sim``::

    from bot.sim import LoopbackExchange, MarketUrls, FaultSpec, SimTimings

    async with LoopbackExchange(rec_dir, speed=20, faults="drop=0.01", seed=1) as sim:
        settings = load_settings(venues=sim.venue_overrides())   # every venue points at the sim
        ...
        sim.reference_book(Venue.BINANCE_SPOT, "BTCUSDT")        # the truth a client must reach
        await sim.wait_position(Venue.BINANCE_SPOT, 0.5)         # half-way through the recording
        sim.fault_counts[(Venue.BINANCE_SPOT, "drop")], sim.stats

See ``bot.sim.server`` for the programmatic use, ``bot.sim.cli`` for the command line, ``bot.sim.ws`` and
``bot.sim.rest`` for the wire behaviour, ``bot.sim.faults`` for fault injection and ``bot.sim.replay`` for
how a recording becomes a paced timeline and the truth books.
"""

from bot.sim.faults import FaultSpec
from bot.sim.server import LoopbackExchange, MarketUrls
from bot.sim.truth import RefBook
from bot.sim.ws import SimTimings

__all__ = ["FaultSpec", "LoopbackExchange", "MarketUrls", "RefBook", "SimTimings"]
