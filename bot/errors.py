"""The bot's exceptions. Foreign exceptions are translated at the boundary (``raise ... from e``).

    BotError
    ├── ConfigError              bad config.toml / BOT_* env / CLI input: clear message, exit 2
    ├── VenueError
    │   ├── VenueUnavailable     retryable: connection refused/closed, 5xx, timeouts
    │   ├── RateLimited          retryable after ``retry_after`` seconds (HTTP 429, 418)
    │   └── VenueRejected        not retryable: 4xx, subscribe refused
    ├── DataIntegrityError       gap, malformed frame, crossed book, NaN: resync, never halt
    │   └── MalformedMessage     a frame that does not parse; dropped and counted
    ├── RecordingError           a recording that cannot be read as the native format
    └── InvariantViolation       a bug or impossible state: halt, exit non-zero
"""

from __future__ import annotations


class BotError(Exception):
    """Root of every error the bot raises on purpose."""


class ConfigError(BotError):
    """Configuration or command-line input is invalid."""


class VenueError(BotError):
    """A venue (or the loopback exchange) did not give us what we asked for."""


class VenueUnavailable(VenueError):
    """Retryable: the venue could not be reached or answered 5xx."""


class RateLimited(VenueError):
    """Retryable after ``retry_after`` seconds: HTTP 429 (back off) or 418 (IP banned)."""

    def __init__(self, message: str, retry_after: float, status: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class VenueRejected(VenueError):
    """Not retryable: the venue refused the request."""


class DataIntegrityError(BotError):
    """Market data that cannot be trusted: a sequence gap, a malformed frame, a crossed book."""


class MalformedMessage(DataIntegrityError):
    """A frame that does not parse as the venue's wire format."""


class RecordingError(BotError):
    """A file that is not a readable recording."""


class InvariantViolation(BotError):
    """Something that must never happen did: stop trading and exit non-zero."""
