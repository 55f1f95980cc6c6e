"""Multi-scale attention model: shapes, attention maps, gradients, determinism, checkpoints, overfit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from models.checkpoint import FAMILIES, load_checkpoint, save_checkpoint  # noqa: E402
from models.multiscale import MultiScaleConfig, MultiScaleModel  # noqa: E402

pytestmark = pytest.mark.unit

SMALL = MultiScaleConfig(
    scales=("1m", "5m", "15m", "1h"), windows=(8, 6, 4, 3), n_features=5, d_model=16, n_heads=2, n_layers=1, dropout=0.0
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inputs(cfg: MultiScaleConfig, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {s: torch.randn(batch, w, cfg.n_features, generator=g) for s, w in zip(cfg.scales, cfg.windows, strict=True)}


def _model(cfg: MultiScaleConfig = SMALL, seed: int = 0) -> MultiScaleModel:
    torch.manual_seed(seed)
    return MultiScaleModel(cfg)


def test_outputs_have_documented_shapes_and_dict_or_list_input_give_the_same_result() -> None:
    # Arrange
    model = _model().eval()
    xs = _inputs(SMALL, batch=3)
    # Act
    out = model(xs, need_weights=True)
    out_list = model([xs[s] for s in SMALL.scales])
    # Assert
    assert out["returns"].shape == (3, 3)
    assert out["direction_logits"].shape == (3, 3)
    assert out["scale_importance"].shape == (3, 4)
    assert out["cross_attention"].shape == (3, 2, 4, 8 + 6 + 4 + 3)
    assert out["cross_attention_by_scale"].shape == (3, 4, 4)
    for s, w in zip(SMALL.scales, SMALL.windows, strict=True):
        assert out[f"self_attention/{s}"].shape == (3, 2, w, w)
    assert set(out_list) == {"returns", "direction_logits", "scale_importance"}
    for key in out_list:
        assert torch.equal(out[key], out_list[key])


def test_every_attention_map_and_the_scale_importance_sum_to_one() -> None:
    model = _model().eval()
    out = model(_inputs(SMALL, batch=4), need_weights=True)
    ones = torch.ones(4, 4)
    torch.testing.assert_close(out["scale_importance"].sum(-1), torch.ones(4))
    assert (out["scale_importance"] > 0).all()
    torch.testing.assert_close(out["cross_attention"].sum(-1), torch.ones(4, 2, 4))
    torch.testing.assert_close(out["cross_attention_by_scale"].sum(-1), ones)
    for s, w in zip(SMALL.scales, SMALL.windows, strict=True):
        torch.testing.assert_close(out[f"self_attention/{s}"].sum(-1), torch.ones(4, 2, w))


def test_global_importance_gives_every_sample_the_same_learned_scale_weights() -> None:
    cfg = replace(SMALL, importance="global")
    model = _model(cfg).eval()
    with torch.no_grad():
        model.fusion.prior.copy_(torch.tensor([2.0, 0.0, 0.0, -1.0]))
    imp = model(_inputs(cfg, batch=3))["scale_importance"]
    expected = torch.tensor([2.0, 0.0, 0.0, -1.0]).softmax(-1).expand(3, -1)
    torch.testing.assert_close(imp, expected)


def test_windows_shorter_than_configured_are_accepted_and_bad_inputs_are_refused_with_a_message() -> None:
    model = _model().eval()
    short = {s: torch.randn(2, 2, 5) for s in SMALL.scales}
    assert model(short)["returns"].shape == (2, 3)
    xs = _inputs(SMALL, batch=2)
    with pytest.raises(ValueError, match=r"missing \['1h'\]"):
        model({s: xs[s] for s in SMALL.scales[:3]})
    with pytest.raises(ValueError, match=r"window allows 1\.\.8"):
        model({**xs, "1m": torch.randn(2, 9, 5)})
    with pytest.raises(ValueError, match=r"scale 5m: expected \(B=2, T, F=5\)"):
        model({**xs, "5m": torch.randn(2, 6, 4)})
    with pytest.raises(ValueError, match="got 3 inputs for 4 scales"):
        model([xs[s] for s in SMALL.scales[:3]])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"windows": (8, 6, 4)}, "one positive length per scale"),
        ({"scales": ("1m", "1m", "15m", "1h")}, "unique"),
        ({"d_model": 15}, "not divisible"),
        ({"importance": "local"}, "'input' or 'global'"),
    ],
)
def test_inconsistent_configs_fail_at_construction(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(SMALL, **changes)


def test_a_sample_output_does_not_depend_on_the_rest_of_the_batch() -> None:
    model = _model().eval()
    xs = _inputs(SMALL, batch=4)
    full = model(xs)["returns"]
    alone = model({s: x[2:3] for s, x in xs.items()})["returns"]
    torch.testing.assert_close(alone, full[2:3])


@pytest.mark.parametrize("importance", ["input", "global"])
def test_gradients_reach_every_parameter(importance: str) -> None:
    # Arrange: full-length windows so every positional row is used
    cfg = replace(SMALL, importance=importance)
    model = _model(cfg)
    out = model(_inputs(cfg, batch=3))
    # Act
    (out["returns"].square().sum() + out["direction_logits"].square().sum()).backward()
    # Assert
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_same_seed_builds_the_same_model_and_gives_bit_identical_outputs_even_with_dropout() -> None:
    cfg = replace(SMALL, dropout=0.2)
    xs = _inputs(cfg, batch=2)
    a, b = _model(cfg, seed=5).train(), _model(cfg, seed=5).train()
    torch.manual_seed(11)
    out_a = a(xs)
    torch.manual_seed(11)
    out_b = b(xs)
    for key in out_a:
        assert torch.equal(out_a[key], out_b[key]), key
    assert not torch.equal(_model(cfg, seed=6).eval()(xs)["returns"], a.eval()(xs)["returns"])


def test_family_is_registered_and_a_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    # Arrange
    assert FAMILIES["multiscale"] == (MultiScaleConfig, MultiScaleModel)
    model = _model().eval()
    xs = _inputs(SMALL, batch=2)
    expected = model(xs, need_weights=True)
    # Act
    path = save_checkpoint(tmp_path / "ms.pt", model, family="multiscale", config=SMALL, extra={"note": "test"})
    loaded, meta = load_checkpoint(path)
    got = loaded(xs, need_weights=True)
    # Assert
    assert meta.config == SMALL
    assert meta.extra == {"note": "test"}
    assert not loaded.training
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_a_handful_of_fixed_samples_is_fitted_to_near_zero_loss() -> None:
    # Arrange
    model = _model()
    xs = _inputs(SMALL, batch=8, seed=1)
    g = torch.Generator().manual_seed(2)
    target_returns = torch.randn(8, 3, generator=g)
    target_direction = torch.randint(0, 3, (8,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # Act
    loss = torch.tensor(float("inf"))
    for _ in range(400):
        out = model(xs)
        loss = F.mse_loss(out["returns"], target_returns) + F.cross_entropy(out["direction_logits"], target_direction)
        if loss.item() < 0.01:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Assert
    assert loss.item() < 0.01
    assert (model(xs)["direction_logits"].argmax(-1) == target_direction).all()


def test_default_feature_width_matches_the_feature_module() -> None:
    from models.features import n_features

    assert MultiScaleConfig().n_features == n_features()


def test_real_btc_klines_resampled_to_four_scales_run_through_the_default_model_with_finite_outputs() -> None:
    # Arrange: closed 1m/5m/15m/1h bars of the real BTC series, features standardised per scale
    import os

    import numpy as np

    from models.features import kline_features, warmup_rows

    data = Path(os.environ.get("BOT_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    path = data / "benicio1007_bot_trading" / "f802e27" / "data" / "BTCUSDT_1m.csv"
    if not path.is_file():
        pytest.skip(f"shared data not found: {path} (set BOT_SHARED_DATA)")
    pd = pytest.importorskip("pandas")
    cfg = MultiScaleConfig()
    df = pd.read_csv(path, nrows=6000, parse_dates=["timestamp"], index_col="timestamp")
    agg = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    xs = {}
    for scale, window in zip(cfg.scales, cfg.windows, strict=True):
        bars = df if scale == "1m" else df.resample(scale.replace("m", "min")).agg(agg)
        feats = kline_features(*(bars[c].to_numpy() for c in agg))[warmup_rows():]
        feats = (feats - feats.mean(0)) / feats.std(0)
        xs[scale] = torch.from_numpy(np.ascontiguousarray(feats[-window:])).unsqueeze(0)  # (1, T_s, F)
    # Act
    out = _model(cfg).eval()(xs)
    # Assert
    assert all(torch.isfinite(v).all() for v in out.values())
    assert out["returns"].shape == (1, 3)
