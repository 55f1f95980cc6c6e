"""A small REST client for market data: raw bodies, venue errors translated, a rate-limit gate per host.

Market data is fetched with aiohttp and kept as the exact text received: the recorder stores it byte for
byte and the parsers read prices as exact decimal strings. ccxt is reserved for orders.

HTTP outcomes become the bot's exceptions (``bot.errors``), so callers never see aiohttp:

    2xx/3xx                         -> (status, body text)
    429                             -> RateLimited(status=429, retry_after from Retry-After, default 1 s)
    418 (Binance IP ban)            -> RateLimited(status=418, retry_after from Retry-After, default 120 s)
    5xx, refused, reset, timeout    -> VenueUnavailable
    other 4xx, malformed URL        -> VenueRejected

After a 429 or 418 the host is *gated*: until ``retry_after`` has passed, every request to that host
(``host:port``) fails at once with ``RateLimited`` and nothing is sent. Binance turns repeated 429s into
an IP ban of minutes to days, so the only safe reaction is not to ask again too soon, whoever asks.
"""

from __future__ import annotations

import email.utils
from datetime import UTC
from types import TracebackType

import aiohttp
import structlog
from yarl import URL

from bot.clock import Clock, LiveClock
from bot.errors import RateLimited, VenueRejected, VenueUnavailable

log = structlog.get_logger(__name__)

DEFAULT_RETRY_AFTER_429_S = 1.0
DEFAULT_RETRY_AFTER_418_S = 120.0  # Binance bans start at 2 minutes
MAX_RETRY_AFTER_S = 3 * 86400.0  # the longest documented Binance ban
_SNIPPET = 200  # characters of an error body kept in the exception message


class RestClient:
    """GET market-data endpoints and return ``(status, text)``; see the module docstring for errors.

    One aiohttp session (opened lazily inside the running loop) is shared by every request. Use as an
    async context manager or call ``close()``.
    """

    def __init__(self, timeout_s: float, *, clock: Clock | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock or LiveClock()
        self._session: aiohttp.ClientSession | None = None
        self._gate: dict[str, tuple[int, int]] = {}  # host:port -> (monotonic deadline ns, status)
        self.requests = 0  # sent over the network
        self.gated = 0  # refused locally because the host is rate-limited

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def blocked_for(self, url: str) -> float:
        """Seconds until requests to ``url``'s host are allowed again (0 when not gated)."""
        gate = self._gate.get(_host_key(url))
        if gate is None:
            return 0.0
        left = (gate[0] - self._clock.monotonic_ns()) / 1e9
        return max(left, 0.0)

    async def get_text(self, url: str) -> tuple[int, str]:
        host = _host_key(url)
        gate = self._gate.get(host)
        if gate is not None:
            left_ns = gate[0] - self._clock.monotonic_ns()
            if left_ns > 0:
                self.gated += 1
                raise RateLimited(f"{host} is rate-limited for another {left_ns / 1e9:.1f} s", left_ns / 1e9, gate[1])
            del self._gate[host]
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False)
        self.requests += 1
        try:
            async with self._session.get(url) as resp:
                status = resp.status
                data = await resp.read()
                retry_after = resp.headers.get("Retry-After")
        except aiohttp.InvalidURL as e:
            raise VenueRejected(f"invalid URL {url!r}") from e
        except TimeoutError as e:  # before ClientError: aiohttp's timeouts are both
            raise VenueUnavailable(f"GET {_short(url)} timed out after {self._timeout.total} s") from e
        except (aiohttp.ClientError, OSError) as e:
            raise VenueUnavailable(f"GET {_short(url)} failed: {type(e).__name__}: {e}") from e

        if status < 400:
            try:
                return status, data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise VenueUnavailable(f"GET {_short(url)}: body is not UTF-8") from e
        snippet = data[:_SNIPPET].decode("utf-8", errors="replace")
        if status in (429, 418):
            default = DEFAULT_RETRY_AFTER_429_S if status == 429 else DEFAULT_RETRY_AFTER_418_S
            wait = self._retry_after(retry_after, default)
            self._gate[host] = (self._clock.monotonic_ns() + int(wait * 1e9), status)
            what = "rate limit (429)" if status == 429 else "IP ban (418)"
            log.warning("rest_rate_limited", host=host, status=status, retry_after_s=wait)
            raise RateLimited(f"GET {_short(url)}: {what}, retry after {wait:g} s: {snippet}", wait, status)
        if status >= 500:
            raise VenueUnavailable(f"GET {_short(url)}: HTTP {status}: {snippet}")
        raise VenueRejected(f"GET {_short(url)}: HTTP {status}: {snippet}")

    def _retry_after(self, header: str | None, default: float) -> float:
        """``Retry-After`` as seconds: a number, or an HTTP date; anything unreadable gives ``default``."""
        if header is None:
            return default
        header = header.strip()
        try:
            secs = float(header)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(header)
            except (TypeError, ValueError):
                return default
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            secs = when.timestamp() - self._clock.now_ns() / 1e9
        if secs != secs:  # NaN
            return default
        return min(max(secs, 0.0), MAX_RETRY_AFTER_S)


def _host_key(url: str) -> str:
    try:
        u = URL(url)
    except (TypeError, ValueError):
        return url
    return f"{u.host}:{u.port}"


def _short(url: str) -> str:
    """The URL without its query string: enough to name the endpoint in a message."""
    return url.split("?", 1)[0]
