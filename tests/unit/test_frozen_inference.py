"""The frozen inference functions the workers serve with (``TABL.inference``, ``LOBForecaster.inference``,
``bot.heads.Head.frozen``): the very bits of the modules' forward in eval mode, for random and shipped
weights, every batch size, missing values; rebuilt when a weight changes; never used in training mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from bot.checkpoints import SHIPPED_DIR, load_checkpoint_file  # noqa: E402
from bot.heads import LobForecastHead, TablHead  # noqa: E402
from models.lobforecast import LOBForecastConfig, LOBForecaster  # noqa: E402
from models.tabl import TABL, TABLConfig  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _same(a: object, b: object) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    assert isinstance(a, torch.Tensor)
    assert isinstance(b, torch.Tensor)
    return bool(a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))


@pytest.mark.parametrize("stack", ["A", "B", "C"])
@pytest.mark.parametrize(("heads", "combine", "horizons"), [(1, "concat", 1), (3, "concat", 2), (2, "mean", 1)])
def test_tabl_inference_is_forward_with_attention_bit_for_bit(stack: str, heads: int, combine: str,
                                                              horizons: int) -> None:  # fmt: skip
    torch.manual_seed(0)
    model = TABL(TABLConfig.paper(stack, heads=heads, combine=combine, n_horizons=horizons)).eval()
    run = model.inference()
    g = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for b in (1, 2, 7, 1):
            x = torch.randn(b, 40, 10, generator=g) * 3
            assert _same(run(x), model(x, return_attention=True))


def test_lobforecast_inference_is_forward_bit_for_bit_with_missing_values() -> None:
    torch.manual_seed(0)
    cfg = LOBForecastConfig(venues=("a", "b"), pairs=("X", "Y"), levels=3, window=12, horizons=(2, 4, 6),
                            d_embed=8, d_model=16, n_heads=2, n_encoder_layers=2, n_decoder_layers=2, d_ff=32)
    model = LOBForecaster(cfg).eval()
    run = model.inference()
    g = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for b in (1, 3, 1, 5):
            x = torch.randn(b, cfg.window, cfg.n_features, generator=g)
            x[torch.rand(x.shape, generator=g) < 0.2] = float("nan")
            assert _same(run(x), model(x))


@pytest.mark.parametrize("path", sorted(p for p in SHIPPED_DIR.glob("*.pt")
                                        if p.stem.split("_")[0] in ("tabl", "mhtabl", "lobforecast")))
def test_shipped_checkpoints_serve_the_same_bits_through_their_heads(path: Path) -> None:
    ck = load_checkpoint_file(path, "cpu")
    model = ck.model
    spec = ck.meta.extra["inputs"]
    g = torch.Generator().manual_seed(2)
    if ck.meta.family == "tabl":
        head: TablHead | LobForecastHead = TablHead(spec, ck.meta.config)
        shape: tuple[int, ...] = (ck.meta.config.n_features, ck.meta.config.window)
        kw = {"return_attention": True}
    else:
        head = LobForecastHead(spec, ck.meta.config)
        shape = (ck.meta.config.window, ck.meta.config.n_features)
        kw = {}
    with torch.inference_mode():
        for b in (1, 2, 1):
            x = torch.randn(b, *shape, generator=g)
            assert _same(head.forward(model, x), model(x, **kw))
    assert head.frozen(model) is head.frozen(model)  # made once


def test_a_changed_weight_rebuilds_the_frozen_function_and_training_mode_uses_the_module() -> None:
    torch.manual_seed(0)
    model = TABL(TABLConfig.paper("B")).eval()
    head = TablHead({"interval_ms": 1000, "labels": {"horizons": [10]}}, model.config)
    x = torch.randn(1, 40, 10)
    with torch.inference_mode():
        first = head.frozen(model)
        before = head.forward(model, x)
    with torch.no_grad():
        model.out.heads[0].lam.fill_(0.9)  # type: ignore[operator]
        model.hidden[0].w1.mul_(2.0)  # type: ignore[operator]
    with torch.inference_mode():
        after = head.forward(model, x)
        assert head.frozen(model) is not first
        assert _same(after, model(x, return_attention=True))
        assert not _same(after, before)
    second = head.frozen(model)
    model.out.w2.data = model.out.w2.data * 2.0  # other storage, no in-place change (as Module.to does it)
    with torch.inference_mode():
        assert head.frozen(model) is not second
        assert _same(head.forward(model, x), model(x, return_attention=True))
    model.train()
    assert head.frozen(model) is None
    with pytest.raises(ValueError, match="eval mode"):
        model.inference()
