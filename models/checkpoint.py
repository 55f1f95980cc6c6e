"""Checkpoints that carry everything a worker needs to rebuild a model exactly, and the family registry.

A checkpoint is one ``torch.save`` file holding only plain data (dicts, lists, tuples, strings, numbers,
booleans, None, tensors), so it loads with ``torch.load(..., weights_only=True)`` and never runs pickled code:

    {
        "format": "bot.models/1",
        "family": "tabl",                    # key into FAMILIES
        "module": "models.tabl",             # where the family registers itself (imported on load)
        "config": {...},                     # the frozen config dataclass as a dict: the model args
        "state_dict": {...},                 # parameters and persistent buffers
        "extra": {...},                      # free-form, filled by the caller: feature/normalisation config,
                                             # label thresholds, training history, data span, code version
        "torch_version": "2.13.0+cpu",
    }

Every model family is one file in ``models/`` with a frozen config dataclass and an ``nn.Module`` whose
constructor takes that config as its only argument and keeps it as ``self.config``. Adding a family is one
line, in the family's own file::

    @register_family("tabl", TABLConfig)
    class TABL(nn.Module): ...

so two people adding families never edit the same file.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
import tempfile
import typing
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from bot.errors import BotError

FORMAT = "bot.models/1"

# family name -> (config dataclass, model class). Filled by ``@register_family`` in each model file.
FAMILIES: dict[str, tuple[type[Any], type[nn.Module]]] = {}

M = TypeVar("M", bound=type[nn.Module])


class CheckpointError(BotError):
    """A checkpoint that cannot be written or rebuilt: unknown family, mismatched args, unsafe metadata."""


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
    """Everything in a checkpoint except the weights."""

    family: str
    config: Any  # an instance of the family's config dataclass
    extra: dict[str, Any]
    format: str
    torch_version: str


def register_family(name: str, config_cls: type[Any]) -> Callable[[M], M]:
    """Class decorator: register ``model_cls`` under ``name`` with its config dataclass.

    Re-registering the same pair (a module reloaded) is harmless; a different pair under a taken name is
    a bug and raises.
    """
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"family {name!r}: config {config_cls.__name__} is not a dataclass")

    def decorate(model_cls: M) -> M:
        known = FAMILIES.get(name)
        if known is not None and _qualname(known[1]) != _qualname(model_cls):
            raise ValueError(f"family {name!r} is already registered to {_qualname(known[1])}")
        FAMILIES[name] = (config_cls, model_cls)
        return model_cls

    return decorate


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    family: str,
    config: Any,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` with its config and the caller's metadata to ``path`` (atomically); return the path.

    Refuses (CheckpointError) an unregistered family, a model of another class, a config that is not the
    one the model was built with, and metadata that would not load with ``weights_only=True``.
    """
    if family not in FAMILIES:
        raise CheckpointError(f"unknown model family {family!r}; registered: {sorted(FAMILIES)}")
    config_cls, model_cls = FAMILIES[family]
    if type(model) is not model_cls:
        raise CheckpointError(f"family {family!r} expects a {model_cls.__name__}, got {type(model).__name__}")
    if type(config) is not config_cls:
        raise CheckpointError(f"family {family!r} expects a {config_cls.__name__} config, got {type(config).__name__}")
    built_with = getattr(model, "config", None)
    if built_with != config:
        raise CheckpointError(f"config does not match the one the model was built with: {built_with!r} != {config!r}")
    extra_dict = dict(extra or {})
    _check_safe(extra_dict, "extra")
    config_dict = dataclasses.asdict(config)
    _check_safe(config_dict, "config")

    payload = {
        "format": FORMAT,
        "family": family,
        "module": model_cls.__module__,
        "config": config_dict,
        # detach + clone: tensors that share storage with the live model (or with each other) are saved
        # on their own, and a later in-place update cannot race the write.
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "extra": extra_dict,
        "torch_version": str(torch.__version__),  # TorchVersion is a str subclass: not plain
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model stored at ``path``: ``(model in eval mode, meta)``.

    The architecture comes from the stored config, never from the caller. Every way the file can disagree
    with the code (unknown family, config keys added or removed, weights of the wrong shape) raises a
    CheckpointError naming what disagrees.
    """
    p = Path(path)
    payload = _read_payload(p, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{p} is not a {FORMAT} checkpoint (format: {found!r})")
    _check_payload(p, payload)

    family = payload["family"]
    _import_family(family, payload.get("module", ""))
    config_cls, model_cls = FAMILIES[family]
    config = config_from_dict(config_cls, payload["config"], where=f"{p} ({family})")
    try:
        model = model_cls(config)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{p}: {family} cannot be built from its stored config: {e}") from e
    _load_state(model, payload["state_dict"], where=str(p))
    model.to(map_location)
    model.eval()
    meta = CheckpointMeta(
        family=family,
        config=config,
        extra=payload.get("extra", {}),
        format=payload["format"],
        torch_version=payload.get("torch_version", "?"),
    )
    return model, meta


def config_from_dict(config_cls: type[Any], data: Mapping[str, Any], *, where: str = "config") -> Any:
    """Build ``config_cls`` from ``data`` exactly: unknown or missing keys raise, nested dataclasses recurse."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CheckpointError(
            f"{where}: stored args {unknown} are not fields of {config_cls.__name__} "
            "(checkpoint written by a different version of the model code?)"
        )
    required = {n for n, f in fields.items() if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(data))
    if missing:
        raise CheckpointError(f"{where}: stored args lack required fields {missing} of {config_cls.__name__}")
    hints = typing.get_type_hints(config_cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints.get(name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = config_from_dict(hint, value, where=f"{where}.{name}")
        kwargs[name] = value
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ validation
        raise CheckpointError(f"{where}: stored args are not a valid {config_cls.__name__}: {e}") from e


# -- internals ---------------------------------------------------------------------------------------

ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive (stored members, each with its CRC-32)


def _read_payload(p: Path, map_location: str | torch.device) -> Any:
    """``torch.load(p, weights_only=True)``, with one clear line for every way the file can be unreadable.

    torch's own messages are several lines of advice (or, for some damaged files, a bare number), so
    the file is checked first: present, not empty, a zip archive whose central directory is there (a
    truncated file loses it) and whose members pass their CRC-32 (torch does not check it, so a damaged
    weight would load silently), with a ``data.pkl``. Only then is it unpickled, by the weights-only
    unpickler, which refuses anything but plain data.
    """
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    size = p.stat().st_size
    where = f"{p} is not a readable checkpoint"
    if size == 0:
        raise CheckpointError(f"{where}: the file is empty (0 bytes)")
    try:
        with p.open("rb") as f:
            head = f.read(len(ZIP_MAGIC))
        if head != ZIP_MAGIC:
            raise CheckpointError(f"{where}: not a zip archive as torch.save writes (the file starts {head!r})")
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
            bad = z.testzip()
    except zipfile.BadZipFile as e:
        why = "its end (the zip directory) is missing" if str(e) == "File is not a zip file" else _one_line(e)
        raise CheckpointError(f"{where}: truncated or damaged ({size} bytes): {why}") from e
    except (OSError, EOFError, ValueError, RuntimeError) as e:  # zlib/struct errors of a mangled archive
        raise CheckpointError(f"{where}: damaged zip archive ({size} bytes): {_one_line(e)}") from e
    if bad is not None:
        raise CheckpointError(f"{where}: damaged: member {bad!r} fails its CRC-32 check")
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        raise CheckpointError(f"{where}: a zip archive without data.pkl, not a torch.save file")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler refused something
        raise CheckpointError(f"{where}: it holds objects a weights-only load refuses ({_one_line(e)})") from e
    except Exception as e:  # unpickling errors come in many types; all mean "not a checkpoint"
        raise CheckpointError(f"{where}: {_one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    """The informative line of an exception's message: torch's ``WeightsUnpickler error: ...`` line, else
    the first non-empty one, prefixed with the exception type when it says little on its own (``101``)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("WeightsUnpickler error:"):
            rest = ln.partition(":")[2].strip()
            i = lines.index(ln)
            return _first_sentence(rest or (lines[i + 1] if i + 1 < len(lines) else ln))[:300]
    text = lines[0] if lines else ""
    if len(text) < 12 or not any(c.isalpha() for c in text):
        text = f"{type(e).__name__}: {text}".rstrip(": ")
    return text[:300]


def _first_sentence(text: str) -> str:
    """torch appends advice after the first sentence ("... by default. Please use ..."): keep the first."""
    head, sep, _ = text.partition(". ")
    return head + "." if sep else text


def _check_payload(p: Path, payload: Mapping[str, Any]) -> None:
    """The fields every reader below indexes: present and of the right type, else one clear line."""
    problems = []
    if not isinstance(payload.get("family"), str) or not payload.get("family"):
        problems.append("no family name")
    if not isinstance(payload.get("config"), Mapping):
        problems.append("no config dict")
    state = payload.get("state_dict")
    if not isinstance(state, Mapping):
        problems.append("no state_dict")
    elif not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        problems.append("a state_dict entry that is not a named tensor")
    if not isinstance(payload.get("extra", {}), dict):
        problems.append("extra is not a dict")
    if problems:
        raise CheckpointError(f"{p}: damaged {FORMAT} checkpoint: {', '.join(problems)}")

_SAFE_SCALARS = (str, int, float, bool, type(None))


def _check_safe(value: Any, where: str) -> None:
    """Raise unless ``value`` is plain data that ``torch.load(weights_only=True)`` accepts."""
    # Exact types: str subclasses (StrEnum, TorchVersion) and int subclasses (IntEnum) pickle as their class.
    if type(value) in _SAFE_SCALARS or isinstance(value, torch.Tensor):
        return
    if type(value) in (dict, OrderedDict):
        for k, v in value.items():
            if type(k) not in (str, int):
                raise CheckpointError(f"{where}: key {k!r} ({type(k).__name__}) must be a str or int")
            _check_safe(v, f"{where}[{k!r}]")
        return
    if isinstance(value, list | tuple) and type(value) in (list, tuple):  # not namedtuples
        for i, v in enumerate(value):
            _check_safe(v, f"{where}[{i}]")
        return
    hint = ""
    if type(value).__module__ == "numpy":
        hint = " (use float()/int()/.tolist() for numpy values)"
    elif isinstance(value, str | int | float):
        hint = " (convert it to a plain str/int/float, e.g. str(v) or v.value)"
    raise CheckpointError(f"{where}: {type(value).__module__}.{type(value).__name__} cannot go in a "
                          f"weights_only checkpoint; use plain dicts, lists, strings, numbers or tensors{hint}")


def _import_family(family: str, module: str) -> None:
    """Make sure ``family`` is registered, importing its own module (only from ``models.``) if needed."""
    if family not in FAMILIES and module.startswith("models.") and module.replace(".", "").isidentifier():
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise CheckpointError(f"family {family!r}: cannot import its module {module!r}: {e}") from e
    if family not in FAMILIES:
        raise CheckpointError(f"unknown model family {family!r} (module {module!r}); registered: {sorted(FAMILIES)}")


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """``load_state_dict(strict=True)`` with a message that names the first disagreements."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: stored {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing weights {missing[:5]}")
    if unexpected:
        problems.append(f"unexpected weights {unexpected[:5]}")
    if wrong:
        problems.append(f"shape mismatches {wrong[:5]}")
    if problems:
        raise CheckpointError(f"{where}: weights do not fit the model built from the stored config: "
                              + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def _qualname(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
