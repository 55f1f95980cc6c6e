"""Configuration: ``config.toml``, then ``BOT_...`` environment variables (``BOT_BOOK__STALE_AFTER_S=5``).

Every model is frozen and rejects unknown keys, so a typo fails at start-up with a message naming it.
Real venue endpoints are the defaults; ``--sim`` replaces them with the loopback exchange's.
Secrets (API keys) are read only from the environment, as ``SecretStr``, and are never logged.
Each venue's ``depth`` and ``snapshot_limit`` are checked against what that venue serves.

Relative paths (every ``Path`` field: ``signal_log.db``, ``state.db``, ``sim.data``, ...) follow one rule,
so that ``python -m bot --config /x/config.toml ...`` reads and writes the same files from any folder:

* written in the config file, or left at their default while a config file is in use: from the config
  file's folder (``~`` is expanded);
* with no config file, and in ``BOT_*`` variables or ``load_settings(**overrides)``: from the working
  directory, like any path typed in a shell.

``load_settings`` hands out absolute paths. The one exception is ``models.dir`` left at its default,
which is used as it is (it names the package's shipped checkpoints).

This module holds ``BotSettings`` (the sections put together, checked against each other) and the loading
(the config-file source, the path rule, ``load_settings``). The sections are in ``bot.config_sections``
(data path) and ``bot.config_trading`` (order path); every name is re-exported here, the one place to
import configuration from.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.config_sections import (
    DEPTHS,
    INTERVALS_S,
    SNAPSHOT_LIMITS,
    BookConfig,
    KlineConfig,
    LogConfig,
    ModelsConfig,
    ReconnectConfig,
    RingConfig,
    Section,
    SignalLogConfig,
    SimConfig,
    VenueConfig,
    bybit_has_no_snapshot_limit,
    default_venues,
    merge_per_venue,
    venue_config_problems,
)
from bot.config_trading import (
    LiveConfig,
    LiveVenueConfig,
    PaperConfig,
    PaperVenueConfig,
    ReferenceConfig,
    ReplayConfig,
    RiskConfig,
    StateConfig,
)
from bot.errors import ConfigError
from bot.events import Venue
from strategies.config import StrategyConfig, duplicate_names

__all__ = [
    "DEFAULT_CONFIG",
    "DEPTHS",
    "INTERVALS_S",
    "SNAPSHOT_LIMITS",
    "BookConfig",
    "BotSettings",
    "KlineConfig",
    "LiveConfig",
    "LiveVenueConfig",
    "LogConfig",
    "ModelsConfig",
    "PaperConfig",
    "PaperVenueConfig",
    "ReconnectConfig",
    "ReferenceConfig",
    "ReplayConfig",
    "RingConfig",
    "RiskConfig",
    "Section",
    "SignalLogConfig",
    "SimConfig",
    "StateConfig",
    "VenueConfig",
    "load_settings",
    "merge_per_venue",
    "venue_config_problems",
]

DEFAULT_CONFIG = Path("config.toml")


class BotSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BOT_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        toml_file=None,
    )

    venues: dict[Venue, VenueConfig] = Field(default_factory=default_venues)
    book: BookConfig = BookConfig()
    reconnect: ReconnectConfig = ReconnectConfig()
    ring: RingConfig = RingConfig()
    klines: KlineConfig = KlineConfig()
    sim: SimConfig = SimConfig()
    log: LogConfig = LogConfig()
    models: ModelsConfig = ModelsConfig()
    signal_log: SignalLogConfig = SignalLogConfig()
    paper: PaperConfig = PaperConfig()
    live: LiveConfig = LiveConfig()
    risk: RiskConfig = RiskConfig()
    reference: ReferenceConfig = ReferenceConfig()
    state: StateConfig = StateConfig()
    replay: ReplayConfig = ReplayConfig()
    strategies: tuple[StrategyConfig, ...] = ()  # [[strategies]] tables (strategies/config.py)

    @field_validator("strategies")
    @classmethod
    def _unique_strategy_names(cls, v: tuple[StrategyConfig, ...]) -> tuple[StrategyConfig, ...]:
        dup = duplicate_names(v)
        if dup:
            raise ValueError(f"strategy names must be unique (orders and positions are owned by name): {dup}")
        return v

    @model_validator(mode="after")
    def _strategies_trade_configured_books(self) -> BotSettings:
        """An enabled strategy on a disabled venue, or on a symbol the venue does not stream, would never
        see a book: refused here, with every such strategy named."""
        problems = []
        for c in self.strategies:
            venue = self.venues.get(c.venue)
            if not c.enabled:
                continue
            if venue is None or not venue.enabled:
                problems.append(f"strategy {c.name!r} trades on {c.venue.value}, which is not enabled "
                                f"([venues.{c.venue.value}] enabled = false)")
                continue
            missing = [sym for sym in c.symbols if sym not in venue.symbols]
            if missing:
                problems.append(f"strategy {c.name!r} trades {missing} on {c.venue.value}, whose symbols are "
                                f"{list(venue.symbols)} ([venues.{c.venue.value}] symbols)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("venues", mode="before")
    @classmethod
    def _merge_venue_defaults(cls, v: Any) -> Any:
        """A partial ``[venues.X]`` table overrides only the keys it names; unknown venues are refused."""
        return merge_per_venue(v, default_venues(), "venues", check=bybit_has_no_snapshot_limit)

    @field_validator("venues")
    @classmethod
    def _venues_serve_it(cls, v: dict[Venue, VenueConfig]) -> dict[Venue, VenueConfig]:
        """A depth or snapshot limit the venue does not serve would subscribe to nothing, silently."""
        problems = [p for venue, cfg in v.items() for p in venue_config_problems(venue, cfg)]
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_PATH.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(_ConfigFileSource(settings_cls, path))
        return tuple(sources)

    def enabled_venues(self) -> dict[Venue, VenueConfig]:
        return {v: c for v, c in self.venues.items() if c.enabled}


_CONFIG_PATH: dict[str, Path | None] = {"path": None}


# -- relative paths (the rule is in the module docstring) ------------------------------------------------

_KEEP_DEFAULT = {("models", "dir")}  # used as it is when left at its default (the shipped checkpoints)


def _path_typed(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Path)


def _anchor(value: Any, annotation: Any, base: Path) -> Any:
    """``value`` (raw config-file data for a field of type ``annotation``) with every relative path in it
    made absolute against ``base``; anything that is not a path (or not of the expected shape) is left
    for validation to judge."""
    if _path_typed(annotation):
        if isinstance(value, str) and value:
            p = Path(value).expanduser()
            return str(p if p.is_absolute() else base / p)
        return value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not isinstance(value, dict):
            return value
        fields = annotation.model_fields
        return {k: _anchor(v, fields[k].annotation, base) if k in fields else v for k, v in value.items()}
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        for member in args:
            if (isinstance(value, str) and _path_typed(member)) or (
                isinstance(value, dict | list) and member is not type(None) and not _path_typed(member)
            ):
                return _anchor(value, member, base)
        return value
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {k: _anchor(v, args[1], base) for k, v in value.items()}
    if origin in (list, tuple, set, frozenset) and isinstance(value, list) and args:
        return [_anchor(v, args[0], base) for v in value]
    return value


class _ConfigFileSource(TomlConfigSettingsSource):
    """The config file, its relative paths already resolved against the file's folder."""

    def __init__(self, settings_cls: type[BaseSettings], toml_file: Path) -> None:
        self._model = settings_cls
        self._base = Path(toml_file).resolve().parent
        super().__init__(settings_cls, toml_file=toml_file)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data: dict[str, Any] = super()._read_file(file_path)
        anchored: dict[str, Any] = _anchor(data, self._model, self._base)
        return anchored


def _absolute(model: BaseModel, defaults_base: Path, given_base: Path, loc: tuple[str, ...] = ()) -> Any:
    """``model`` with every relative ``Path`` in it absolute: a default one against ``defaults_base``,
    one given (environment, overrides) against ``given_base``; sections and containers are walked."""
    changes: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        here = (*loc, name)
        if isinstance(value, Path):
            if value.is_absolute() or (here in _KEEP_DEFAULT and name not in model.model_fields_set):
                continue
            value = value.expanduser()
            base = given_base if name in model.model_fields_set else defaults_base
            changes[name] = value if value.is_absolute() else base / value
        else:
            new = _absolute_in(value, defaults_base, given_base, here)
            if new is not value:
                changes[name] = new
    return model.model_copy(update=changes) if changes else model


def _absolute_in(value: Any, defaults_base: Path, given_base: Path, loc: tuple[str, ...]) -> Any:
    if isinstance(value, BaseModel):
        return _absolute(value, defaults_base, given_base, loc)
    if isinstance(value, dict):
        items = {k: _absolute_in(v, defaults_base, given_base, (*loc, str(k))) for k, v in value.items()}
        return items if any(items[k] is not value[k] for k in value) else value
    if isinstance(value, tuple | list) and not isinstance(value, str):
        seq = [_absolute_in(v, defaults_base, given_base, loc) for v in value]
        return type(value)(seq) if any(a is not b for a, b in zip(seq, value, strict=True)) else value
    return value


def load_settings(path: Path | None = None, **overrides: Any) -> BotSettings:
    """Read ``path`` (default: ``$BOT_CONFIG`` or ./config.toml if present) and the environment.

    Relative paths come back absolute (the rule is in the module docstring). Raises ``ConfigError`` with
    every problem listed, never a pydantic traceback.
    """
    if path is None:
        env = os.environ.get("BOT_CONFIG")
        path = Path(env) if env else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file not found: {path}")
    _CONFIG_PATH["path"] = Path(path) if path is not None else None
    cwd = Path.cwd()
    try:
        settings = BotSettings(**overrides)
        anchored: BotSettings = _absolute(settings, Path(path).resolve().parent if path is not None else cwd, cwd)
        return anchored
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (typo?)"
            elif err["type"] == "value_error":
                msg = msg.removeprefix("Value error, ")
            lines.append(f"  {loc}: {msg}")
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"invalid configuration{where} or BOT_* environment:\n" + "\n".join(lines)) from None
    except Exception as e:  # TOML syntax errors and the like
        raise ConfigError(f"cannot read configuration {path}: {e}") from None
    finally:
        _CONFIG_PATH["path"] = None
