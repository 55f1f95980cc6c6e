"""Checkpoints rebuild a model from its stored args alone, load with weights_only=True, and refuse clearly."""

from __future__ import annotations

import re
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from bot.events import Venue  # noqa: E402
from models import checkpoint  # noqa: E402
from models.checkpoint import (  # noqa: E402
    FAMILIES,
    CheckpointError,
    load_checkpoint,
    register_family,
    save_checkpoint,
)

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class Head:
    width: int = 2


@dataclass(frozen=True)
class ToyConfig:
    n_in: int
    hidden: tuple[int, ...] = (4, 3)
    head: Head = field(default_factory=Head)
    name: str = "toy"

    def __post_init__(self) -> None:
        if self.n_in < 1:
            raise ValueError(f"n_in must be >= 1, got {self.n_in}")


class Toy(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        sizes = [config.n_in, *config.hidden, config.head.width]
        self.layers = nn.Sequential(*(nn.Linear(a, b) for a, b in pairwise(sizes)))
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) * self.scale


class OtherToy(Toy):
    pass


@pytest.fixture
def toy_family(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FAMILIES, "toy", (ToyConfig, Toy))


def _toy(seed: int = 0, **kw: object) -> Toy:
    torch.manual_seed(seed)
    return Toy(ToyConfig(**{"n_in": 5, **kw}))  # type: ignore[arg-type]


def test_round_trip_rebuilds_the_same_model_with_its_config_and_metadata(toy_family: None, tmp_path: Path) -> None:
    # Arrange
    model = _toy(hidden=(6,), head=Head(width=3))
    extra = {"features": {"mean": torch.tensor([1.0, 2.0]), "columns": ["bid_px_1", "ask_px_1"]},
             "thresholds": (-0.0002, 0.0002), "history": [{"epoch": 1, "loss": 0.5}], "span": None}
    x = torch.randn(7, 5)
    # Act
    path = save_checkpoint(tmp_path / "sub" / "toy.pt", model, family="toy", config=model.config, extra=extra)
    loaded, meta = load_checkpoint(path)
    # Assert
    assert isinstance(loaded, Toy)
    assert not loaded.training
    assert meta.family == "toy"
    assert meta.config == ToyConfig(n_in=5, hidden=(6,), head=Head(width=3))
    assert isinstance(meta.config.hidden, tuple)
    assert isinstance(meta.config.head, Head)
    assert meta.extra["thresholds"] == (-0.0002, 0.0002)
    assert meta.extra["history"] == [{"epoch": 1, "loss": 0.5}]
    assert torch.equal(meta.extra["features"]["mean"], torch.tensor([1.0, 2.0]))
    assert meta.torch_version == torch.__version__
    model.eval()
    assert torch.equal(loaded(x), model(x))
    assert [p.name for p in path.parent.iterdir()] == ["toy.pt"]  # no temporary file left behind


def test_checkpoint_file_is_plain_data_that_loads_with_weights_only(toy_family: None, tmp_path: Path) -> None:
    model = _toy()
    path = save_checkpoint(tmp_path / "toy.pt", model, family="toy", config=model.config, extra={"v": "abc123"})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "bot.models/1"
    assert raw["family"] == "toy"
    assert raw["module"] == __name__
    assert raw["config"] == {"n_in": 5, "hidden": (4, 3), "head": {"width": 2}, "name": "toy"}
    assert set(raw["state_dict"]) == set(model.state_dict())
    assert raw["extra"] == {"v": "abc123"}


def test_saving_an_unregistered_family_is_refused(tmp_path: Path) -> None:
    model = _toy()
    with pytest.raises(CheckpointError, match="unknown model family 'nope'"):
        save_checkpoint(tmp_path / "x.pt", model, family="nope", config=model.config, extra={})


def test_saving_a_model_with_a_config_other_than_its_own_is_refused(toy_family: None, tmp_path: Path) -> None:
    model = _toy()
    with pytest.raises(CheckpointError, match="does not match the one the model was built with"):
        save_checkpoint(tmp_path / "x.pt", model, family="toy", config=ToyConfig(n_in=5, hidden=(9,)), extra={})
    assert not (tmp_path / "x.pt").exists()


def test_saving_a_model_of_another_class_under_the_family_is_refused(toy_family: None, tmp_path: Path) -> None:
    model = OtherToy(ToyConfig(n_in=5))
    with pytest.raises(CheckpointError, match="expects a Toy, got OtherToy"):
        save_checkpoint(tmp_path / "x.pt", model, family="toy", config=model.config, extra={})


def test_numpy_metadata_is_refused_at_save_with_its_path_named(toy_family: None, tmp_path: Path) -> None:
    model = _toy()
    extra = {"norm": {"mean": np.zeros(3)}}
    with pytest.raises(CheckpointError, match=r"extra\['norm'\]\['mean'\]: numpy.ndarray .*tolist"):
        save_checkpoint(tmp_path / "x.pt", model, family="toy", config=model.config, extra=extra)
    assert list(tmp_path.iterdir()) == []


def test_arbitrary_objects_in_metadata_are_refused(toy_family: None, tmp_path: Path) -> None:
    model = _toy()
    with pytest.raises(CheckpointError, match=r"extra\['when'\]\[0\]: builtins.object"):
        save_checkpoint(tmp_path / "x.pt", model, family="toy", config=model.config, extra={"when": [object()]})


def test_enum_values_in_metadata_are_refused_because_they_pickle_as_their_class(toy_family: None,
                                                                                 tmp_path: Path) -> None:
    model = _toy()
    with pytest.raises(CheckpointError, match=r"extra\['venue'\]: bot.events.Venue .*v.value"):
        save_checkpoint(tmp_path / "x.pt", model, family="toy", config=model.config,
                        extra={"venue": Venue.BYBIT_SPOT})


def test_loading_an_unknown_family_names_it_and_the_known_ones(toy_family: None, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    model = _toy()
    path = save_checkpoint(tmp_path / "toy.pt", model, family="toy", config=model.config, extra={})
    monkeypatch.delitem(FAMILIES, "toy")
    with pytest.raises(CheckpointError, match="unknown model family 'toy'"):
        load_checkpoint(path)


def _rewrite(path: Path, edit: object) -> None:
    raw = torch.load(path, weights_only=True)
    edit(raw)  # type: ignore[operator]
    torch.save(raw, path)


def test_stored_args_the_config_no_longer_has_are_named(toy_family: None, tmp_path: Path) -> None:
    model = _toy()
    path = save_checkpoint(tmp_path / "toy.pt", model, family="toy", config=model.config, extra={})
    _rewrite(path, lambda raw: raw["config"].update(depth=3))
    with pytest.raises(CheckpointError, match=r"stored args \['depth'\] are not fields of ToyConfig"):
        load_checkpoint(path)


def test_missing_required_args_are_named(toy_family: None, tmp_path: Path) -> None:
    model = _toy()
    path = save_checkpoint(tmp_path / "toy.pt", model, family="toy", config=model.config, extra={})
    _rewrite(path, lambda raw: raw["config"].pop("n_in"))
    with pytest.raises(CheckpointError, match=r"lack required fields \['n_in'\]"):
        load_checkpoint(path)


def test_stored_args_the_config_rejects_give_a_checkpoint_error(toy_family: None, tmp_path: Path) -> None:
    model = _toy()
    path = save_checkpoint(tmp_path / "toy.pt", model, family="toy", config=model.config, extra={})
    _rewrite(path, lambda raw: raw["config"].update(n_in=0))
    with pytest.raises(CheckpointError, match="not a valid ToyConfig: n_in must be >= 1"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_stored_args_are_named(toy_family: None, tmp_path: Path) -> None:
    model = _toy()
    path = save_checkpoint(tmp_path / "toy.pt", model, family="toy", config=model.config, extra={})
    _rewrite(path, lambda raw: raw["config"].update(hidden=(4, 8)))
    expected = r"shape mismatches \['layers.1.weight: stored \(3, 4\) vs model \(8, 4\)"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)


def test_missing_weights_are_named(toy_family: None, tmp_path: Path) -> None:
    model = _toy()
    path = save_checkpoint(tmp_path / "toy.pt", model, family="toy", config=model.config, extra={})
    _rewrite(path, lambda raw: raw["state_dict"].pop("scale"))
    with pytest.raises(CheckpointError, match=r"missing weights \['scale'\]"):
        load_checkpoint(path)


def test_a_missing_file_and_a_file_that_is_not_a_checkpoint_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match=r"is not a bot\.models/1 checkpoint"):
        load_checkpoint(other)


def test_a_pickled_object_is_refused_rather_than_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "bot.models/1", "obj": Head()}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_registering_a_taken_name_for_another_class_raises_but_re_registering_is_harmless(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "FAMILIES", {})
    register_family("toy", ToyConfig)(Toy)
    register_family("toy", ToyConfig)(Toy)
    assert dict(checkpoint.FAMILIES) == {"toy": (ToyConfig, Toy)}
    with pytest.raises(ValueError, match="already registered"):
        register_family("toy", ToyConfig)(OtherToy)
    with pytest.raises(TypeError, match="not a dataclass"):
        register_family("bad", int)


def test_loading_imports_the_family_module_when_it_is_not_registered_yet(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import models
    from models.tabl import TABL, TABLConfig

    torch.manual_seed(0)
    model = TABL(TABLConfig.paper("A")).eval()
    path = save_checkpoint(tmp_path / "tabl.pt", model, family="tabl", config=model.config, extra={})
    # A fresh worker process: neither the registry entry nor the module exist yet.
    monkeypatch.delitem(FAMILIES, "tabl")
    monkeypatch.delitem(sys.modules, "models.tabl")
    monkeypatch.delattr(models, "tabl")
    loaded, _ = load_checkpoint(path)
    assert "tabl" in FAMILIES
    assert type(loaded).__name__ == "TABL"
    x = torch.randn(2, 40, 10)
    assert torch.equal(loaded(x), model(x))


# -- damaged files: one line naming the file and what is wrong ------------------------------------------


def _damaged(kind: str, good: Path, tmp_path: Path) -> Path:
    data = good.read_bytes()
    out = tmp_path / f"{kind}.pt"
    if kind == "empty":
        out.write_bytes(b"")
    elif kind == "truncated":
        out.write_bytes(data[: len(data) // 2])
    elif kind == "bit_flips":  # inside the largest stored member (a weight tensor), zip directory intact
        import zipfile

        with zipfile.ZipFile(good) as z:
            info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len  # the member's stored bytes
        flipped = bytearray(data)
        for i in range(start, start + 4):  # the first float of that tensor
            flipped[i] ^= 0xFF
        out.write_bytes(bytes(flipped))
    elif kind == "text":
        out.write_text("hello\n")
    elif kind == "number":
        out.write_text("12345")
    return out


@pytest.mark.parametrize(("kind", "why"), [
    ("empty", r"the file is empty \(0 bytes\)"),
    ("truncated", r"truncated or damaged \(\d+ bytes\): its end \(the zip directory\) is missing"),
    ("bit_flips", r"damaged: member '[^']+/data/\d+' fails its CRC-32 check"),
    ("text", r"not a zip archive as torch\.save writes \(the file starts b'hell'\)"),
    ("number", r"not a zip archive as torch\.save writes \(the file starts b'1234'\)"),
])  # fmt: skip
def test_a_damaged_file_gives_one_line_naming_the_file_and_what_is_wrong(
    toy_family: None, tmp_path: Path, kind: str, why: str
) -> None:
    # Arrange: a good checkpoint, then a damaged copy of it
    good = save_checkpoint(tmp_path / "good.pt", _toy(), family="toy", config=_toy().config, extra={})
    bad = _damaged(kind, good, tmp_path)
    # Act
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    # Assert: one line, the file first, torch's advice nowhere
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{bad} is not a readable checkpoint: ")
    assert re.search(why, msg), msg
    assert "weights_only" not in msg
    assert "Please" not in msg
    load_checkpoint(good)  # the original still loads


def test_a_flipped_weight_would_otherwise_load_silently(toy_family: None, tmp_path: Path) -> None:
    """Why the CRC check is there: torch.load itself does not verify it."""
    good = save_checkpoint(tmp_path / "good.pt", _toy(), family="toy", config=_toy().config, extra={})
    bad = _damaged("bit_flips", good, tmp_path)
    raw = torch.load(bad, weights_only=True)  # no error from torch
    assert not all(torch.equal(raw["state_dict"][k], v) for k, v in _toy().state_dict().items())


def test_a_pickled_object_is_refused_with_the_first_sentence_of_the_reason_only(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "bot.models/1", "obj": Head()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert msg == (f"{path} is not a readable checkpoint: it holds objects a weights-only load refuses "
                   f"(Unsupported global: GLOBAL {Head.__module__}.Head was not an allowed global by default.)")


def test_a_checkpoint_dict_without_its_fields_names_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "hollow.pt"
    torch.save({"format": "bot.models/1", "state_dict": {"w": [1.0]}}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == (f"{path}: damaged bot.models/1 checkpoint: no family name, no config dict, "
                               "a state_dict entry that is not a named tensor")


def test_a_zip_archive_that_is_not_a_torch_file_is_named_as_such(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "notes.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(CheckpointError, match=r"notes\.pt is not a readable checkpoint: a zip archive without "
                                              r"data\.pkl, not a torch\.save file$"):
        load_checkpoint(path)
