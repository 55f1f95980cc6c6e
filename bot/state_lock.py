"""Where a state database lives and who writes it: live trading's own file beside paper's (``live_db``) and
the single-writer lock beside every database (``<db>.lock``).

One writer per database: the store's ``open()`` takes an OS lock (flock) on ``<db>.lock`` (``take_lock``) and
a second bot on the same file is refused (it would reuse client order ids); the lock dies with its process,
kill -9 included, and tells the CLI whether a bot is running (``writer_pid``).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bot.errors import ConfigError


def live_db(db: Path, sim: bool = False) -> Path:
    """Live trading's own state database: where ``db`` is the default ``state.sqlite`` (paper's),
    ``live.sqlite`` beside it (``live-sim.sqlite`` under ``--sim``); a database named otherwise is used
    as it is."""
    return db if db.name != "state.sqlite" else db.with_name("live-sim.sqlite" if sim else "live.sqlite")


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


def writer_pid(db: Path) -> int | None:
    """The pid of the process holding ``db``'s writer lock (a running bot), or None. The lock is the OS's
    (flock): it goes with the process, so a kill -9 never leaves a stale one."""
    path = lock_path(db)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def take_lock(db: Path) -> int:
    """One writer per database: two bots on one ledger would reuse client order ids and drop each other's
    fills as duplicates. The lock file's descriptor: closing it releases the lock."""
    fd = os.open(lock_path(db), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise ConfigError(f"state database {db} is in use by another running bot (pid {text or '?'}); "
                          "stop it or give this one another [state] db") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd
