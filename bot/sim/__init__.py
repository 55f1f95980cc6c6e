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

At the end of the recording it loops seamlessly (``bot.sim.loop``): clients stay connected and their books
valid, ids and timestamps keep increasing; ``faults="restart=1"`` restarts the venue instead (every
connection closed with 1001, ids from the start). Handler errors are answered in the venue's error shape
and counted (``sim.stats[venue]["handler_errors"]``), never a traceback or an abnormal close.

The private side (``bot.sim.account``, ``bot.sim.private_binance``): Binance spot ``/api/v3`` and USD-M
``/fapi`` signed REST for one account (``api_key``, ``api_secret``, ``balances`` keywords; ``bot sim
--api-key/--api-secret``), orders matched by ``bot.execution.paper`` against the truth books; Binance's
user-data streams (``bot.sim.userdata_binance``: the spot WebSocket API's ``userDataStream.subscribe.signature``,
USD-M and legacy listenKeys) push its order, fill and balance events. Bybit's private REST and private
websocket streams are not served yet.

See ``bot.sim.server`` for the programmatic use, ``bot.sim.cli`` for the command line, ``bot.sim.ws`` and
``bot.sim.rest`` for the wire behaviour, ``bot.sim.faults`` for fault injection, ``bot.sim.replay`` for
how a recording becomes a timeline and the truth books, and ``bot.sim.loop`` for pacing and the loop.
"""

from bot.sim.faults import FaultSpec
from bot.sim.server import LoopbackExchange, MarketUrls
from bot.sim.truth import RefBook
from bot.sim.ws import SimTimings

__all__ = ["FaultSpec", "LoopbackExchange", "MarketUrls", "RefBook", "SimTimings"]
