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


@pytest.mark.parametrize(
    "module", ["bot/book.py", "bot/bus.py", "bot/ring.py", "bot/grid_set.py", "bot/klines.py", "bot/events.py"]
)
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


ORDER_CORE = ["bot/orders.py", "bot/engine.py", "bot/risk.py", "bot/ledger.py", "bot/execution/base.py",
              "bot/execution/paper.py"]


@pytest.mark.parametrize("module", ORDER_CORE)
def test_the_order_path_core_is_synchronous_and_does_no_io(module: str) -> None:
    # the replay engine drives exactly these classes: no sockets, no event loop, no disk, no edges
    bad = {m for m in _imports(ROOT / module)
           if m.startswith(("asyncio", "websockets", "aiohttp", "aiosqlite", "sqlite3", "ccxt", "socket", "bot.feed",
                            "bot.sim", "bot.rest", "bot.state", "bot.app", "bot.trading", "bot.reference",
                            "bot.workers", "bot.worker_set", "torch"))}
    assert not bad, f"{module} imports {bad}"


def test_strategies_are_synchronous_and_see_only_the_domain() -> None:
    allowed = ("bot.events", "bot.orders", "strategies", "__future__")
    for f in (ROOT / "strategies").rglob("*.py"):
        bot_imports = {m for m in _imports(f) if m.startswith(("bot", "asyncio", "strategies"))}
        bad = {m for m in bot_imports if not m.startswith(allowed)}
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_the_loopback_exchange_imports_only_the_pure_core() -> None:
    # a world of its own: domain types, errors, the recording reader (its command front end may also read
    # the config and set up logging, like every command)
    allowed = ("bot.sim", "bot.events", "bot.errors", "bot.recording", "bot.orders", "bot.execution.paper",
               "bot.demo")
    for f in (ROOT / "bot" / "sim").glob("*.py"):
        extra = ("bot.config", "bot.logs") if f.name == "cli.py" else ()
        bad = {m for m in _imports(f) if m.startswith("bot") and not m.startswith(allowed + extra)}
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def _runtime_imports(path: Path) -> set[str]:
    """Modules imported when ``path`` runs: ``from pkg import mod`` counts as ``pkg.mod`` when that is a
    module; imports under ``if TYPE_CHECKING:`` (annotations only) do not count."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").exists()
                names.add(sub if is_module else node.module)
    return names


def test_no_two_bot_modules_import_each_other() -> None:
    graph: dict[str, set[str]] = {}
    for f in (ROOT / "bot").rglob("*.py"):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for m in _runtime_imports(f) if m.startswith("bot.")}
    cycles = sorted((a, b) for a, deps in graph.items() for b in deps if a < b and a in graph.get(b, set()))
    assert not cycles, f"modules that import each other: {cycles}"
