"""The loopback exchange's websocket connections: which errors around a connection are bugs of ours."""

from __future__ import annotations

from bot.sim.ws import unexpected


def test_a_peer_going_away_is_not_a_bug_alone_or_in_a_task_group() -> None:
    assert unexpected(ConnectionResetError("Cannot write to closing transport")) is None
    assert unexpected(RuntimeError("closing")) is None
    assert unexpected(ExceptionGroup("tg", [ConnectionResetError()])) is None
    assert unexpected(ExceptionGroup("tg", [ConnectionResetError(), ExceptionGroup("inner", [RuntimeError()])])) is None


def test_a_bug_is_reported_as_itself_without_the_peers_going_away() -> None:
    bug = KeyError("x")
    assert unexpected(bug) is bug
    assert unexpected(ExceptionGroup("tg", [ConnectionResetError(), bug])) is bug
    both = unexpected(ExceptionGroup("tg", [bug, ValueError("y"), RuntimeError()]))
    assert isinstance(both, ExceptionGroup)
    assert [type(e) for e in both.exceptions] == [KeyError, ValueError]
