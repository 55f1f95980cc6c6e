"""The shape stays honest: strategies and models import nothing from venues or execution; the core
(book, bus, rings) does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["strategies", "models"])
def test_strategies_and_models_never_import_venues_feeds_or_execution(package: str) -> None:
    forbidden = ("bot.venues", "bot.feed", "bot.execution", "bot.sim", "bot.rest", "websockets", "aiohttp", "ccxt")
    for f in (ROOT / package).rglob("*.py"):
        bad = {m for m in _imports(f) if m.startswith(forbidden)}
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("module", ["bot/book.py", "bot/bus.py", "bot/ring.py", "bot/klines.py", "bot/events.py"])
def test_sync_core_modules_do_no_network_io(module: str) -> None:
    f = ROOT / module
    if not f.exists():
        pytest.skip(f"{module} not written yet")
    bad = {m for m in _imports(f) if m.startswith(("websockets", "aiohttp", "ccxt", "socket", "bot.feed", "bot.sim"))}
    assert not bad, f"{module} imports {bad}"


def test_only_the_clock_module_reads_wall_time() -> None:
    offenders = []
    for f in (ROOT / "bot").rglob("*.py"):
        if f.name == "clock.py" or "sim" in f.parts:
            continue
        text = f.read_text()
        if "time.time()" in text or "time.time_ns()" in text or "datetime.now(" in text:
            offenders.append(str(f.relative_to(ROOT)))
    assert not offenders, f"wall time read outside bot/clock.py: {offenders}"
