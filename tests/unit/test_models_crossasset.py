"""Cross-asset attention model: shapes, attention maps, lead-lag causality, portfolio constraints, gradients,
determinism, checkpoints, overfit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from models.checkpoint import FAMILIES, load_checkpoint, save_checkpoint  # noqa: E402
from models.crossasset import CrossAssetConfig, CrossAssetModel  # noqa: E402

pytestmark = pytest.mark.unit

SMALL = CrossAssetConfig(
    assets=("BTCUSDT", "ETHUSDT", "SOLUSDT"),
    window=12,
    n_features=5,
    d_model=16,
    n_heads=2,
    n_temporal_layers=1,
    n_cross_layers=1,
    dropout=0.0,
    max_lag=3,
)
LAGGED = replace(SMALL, lagged=True)
VARIANTS = {
    "plain_last": SMALL,
    "plain_attention_pool": replace(SMALL, pooling="attention"),
    "plain_self_attend_long_short": replace(SMALL, self_attend=True, portfolio="long_short"),
    "lagged": LAGGED,
    "lagged_two_layers_self_attend": replace(LAGGED, n_cross_layers=2, self_attend=True),
}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _x(cfg: CrossAssetConfig, batch: int, seed: int = 0, steps: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, len(cfg.assets), steps or cfg.window, cfg.n_features, generator=g)  # (B, A, T, F)


def _model(cfg: CrossAssetConfig, seed: int = 0) -> CrossAssetModel:
    torch.manual_seed(seed)
    return CrossAssetModel(cfg)


@pytest.mark.parametrize("variant", VARIANTS)
def test_outputs_have_documented_shapes(variant: str) -> None:
    cfg = VARIANTS[variant]
    out = _model(cfg).eval()(_x(cfg, batch=2), need_weights=True)
    assert out["returns"].shape == (2, 3)
    assert out["direction_logits"].shape == (2, 3, 3)
    assert out["portfolio_weights"].shape == (2, 3)
    assert out["cross_attention"].shape == (2, 2, 3, 3)
    assert out["temporal_attention"].shape == (2, 3, 2, 12, 12)
    if cfg.lagged:
        assert out["returns_seq"].shape == (2, 3, 12)
        assert out["direction_logits_seq"].shape == (2, 3, 12, 3)
        assert out["lag_attention"].shape == (2, 2, 3, 12, 3, 3)
        assert out["lag_attention_null"].shape == (2, 2, 3, 12)
        assert torch.equal(out["returns"], out["returns_seq"][:, :, -1])
    if cfg.pooling == "attention":
        assert out["pool_attention"].shape == (2, 3, 2, 12)


def test_plain_cross_attention_rows_sum_to_one_and_never_look_at_the_asset_itself() -> None:
    out = _model(SMALL).eval()(_x(SMALL, batch=4), need_weights=True)
    w = out["cross_attention"]  # (B, H, A, A)
    torch.testing.assert_close(w.sum(-1), torch.ones(4, 2, 3))
    assert (w.diagonal(dim1=-2, dim2=-1) == 0).all()
    assert (w.sum(-1) > 0).all()
    torch.testing.assert_close(out["temporal_attention"].sum(-1), torch.ones(4, 3, 2, 12))
    # the temporal encoder is causal: nothing above the diagonal
    assert (out["temporal_attention"].triu(diagonal=1) == 0).all()


def test_self_attend_lets_an_asset_put_weight_on_itself() -> None:
    cfg = replace(SMALL, self_attend=True)
    w = _model(cfg).eval()(_x(cfg, batch=2), need_weights=True)["cross_attention"]
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 3))
    assert (w.diagonal(dim1=-2, dim2=-1) > 0).all()


def test_attention_pooling_weights_sum_to_one_over_the_window() -> None:
    cfg = VARIANTS["plain_attention_pool"]
    w = _model(cfg).eval()(_x(cfg, batch=2), need_weights=True)["pool_attention"]
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 2))


def test_lagged_attention_plus_null_sums_to_one_and_is_zero_on_itself_and_before_the_series_start() -> None:
    out = _model(LAGGED).eval()(_x(LAGGED, batch=2), need_weights=True)
    w, null = out["lag_attention"], out["lag_attention_null"]  # (B, H, A, T, A, L), (B, H, A, T)
    torch.testing.assert_close(w.sum((-2, -1)) + null, torch.ones(2, 2, 3, 12))
    for a in range(3):
        assert (w[:, :, a, :, a] == 0).all()  # own asset excluded (self_attend=False)
    for lag in range(1, 4):
        assert (w[:, :, :, : lag, :, lag - 1] == 0).all()  # step t - lag < 0 does not exist
    assert (null[:, :, :, 0] == 1).all()  # at t = 0 only the null key is visible
    assert (w[:, :, :, -1] > 0).any()


@pytest.mark.parametrize("variant", ["lagged", "lagged_two_layers_self_attend"])
def test_lagged_outputs_at_t_never_change_when_same_or_future_steps_of_other_assets_change(variant: str) -> None:
    cfg = VARIANTS[variant]
    model = _model(cfg).eval()
    x = _x(cfg, batch=2)
    base = model(x)
    g = torch.Generator().manual_seed(3)
    for t in torch.randint(0, cfg.window - 1, (6,), generator=g).tolist():
        for i in range(len(cfg.assets)):
            # Arrange: other assets change from step t on, asset i itself from t+1 on
            x2 = x.clone()
            others = [j for j in range(len(cfg.assets)) if j != i]
            x2[:, others, t:] = torch.randn(2, len(others), cfg.window - t, cfg.n_features, generator=g)
            x2[:, i, t + 1 :] = torch.randn(2, cfg.window - t - 1, cfg.n_features, generator=g)
            # Act
            out = model(x2)
            # Assert: bit-identical up to and including t
            assert torch.equal(out["returns_seq"][:, i, : t + 1], base["returns_seq"][:, i, : t + 1]), (t, i)
            assert torch.equal(out["direction_logits_seq"][:, i, : t + 1], base["direction_logits_seq"][:, i, : t + 1])


def test_lagged_output_at_t_does_react_to_another_asset_one_step_earlier() -> None:
    # the positive control for the causality test: information does cross assets with a lag of one
    model = _model(LAGGED).eval()
    x = _x(LAGGED, batch=1)
    x2 = x.clone()
    x2[:, 1, 7] += 3.0  # ETH at step 7
    a, b = model(x)["returns_seq"], model(x2)["returns_seq"]
    assert not torch.equal(a[:, 0, 8], b[:, 0, 8])  # BTC at step 8 sees it
    assert torch.equal(a[:, 0, :8], b[:, 0, :8])  # BTC before step 8 does not


def test_long_only_weights_are_a_distribution_and_long_short_gross_exposure_is_at_most_one() -> None:
    long_only = _model(SMALL).eval()(_x(SMALL, batch=5))["portfolio_weights"]
    assert (long_only >= 0).all()
    torch.testing.assert_close(long_only.sum(-1), torch.ones(5))

    cfg = replace(SMALL, portfolio="long_short")
    model = _model(cfg).eval()
    w = model(_x(cfg, batch=5))["portfolio_weights"]
    assert (w.abs().sum(-1) <= 1 + 1e-6).all()
    with torch.no_grad():  # saturate: every asset wants tanh(±8) ≈ ±1, gross 3 -> scaled to exactly 1
        model.portfolio_head.bias.fill_(8.0)
    w = model(_x(cfg, batch=5))["portfolio_weights"]
    torch.testing.assert_close(w.abs().sum(-1), torch.ones(5))
    assert (w > 0).all()


def test_shorter_windows_work_and_bad_inputs_are_refused_with_a_message() -> None:
    model = _model(LAGGED).eval()
    assert model(_x(LAGGED, batch=2, steps=1))["returns_seq"].shape == (2, 3, 1)
    with pytest.raises(ValueError, match=r"expected \(B, A=3, T, F=5\)"):
        model(torch.randn(2, 2, 12, 5))
    with pytest.raises(ValueError, match=r"window allows 1\.\.12"):
        model(torch.randn(2, 3, 13, 5))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lagged": True, "pooling": "attention"}, "attention pooling would read future steps"),
        ({"assets": ("BTCUSDT",)}, "set self_attend=True"),
        ({"max_lag": 12}, r"max_lag must be in 1\.\.window-1"),
        ({"portfolio": "short_only"}, "'long_only' or 'long_short'"),
        ({"n_heads": 3}, "not divisible"),
    ],
)
def test_inconsistent_configs_fail_at_construction(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(SMALL, **changes)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_parameter(variant: str) -> None:
    cfg = VARIANTS[variant]
    model = _model(cfg)
    out = model(_x(cfg, batch=2))
    # portfolio weights of a long-only softmax sum to 1 whatever the scores: use a non-constant function
    loss = out["returns"].square().sum() + out["direction_logits"].square().sum() + out["portfolio_weights"][:, 0].sum()
    loss.backward()
    # A long-only portfolio is a softmax over the assets' scores, which one shared bias shifts alike: that
    # bias gets no gradient by construction (exactly 0, or rounding noise, depending on the kernels).
    shift_invariant = {"portfolio_head.bias"} if cfg.portfolio == "long_only" else set()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        if name in shift_invariant:
            assert p.grad.abs().sum() < 1e-5, name
        else:
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", ["plain_attention_pool", "lagged"])
def test_same_seed_builds_the_same_model_and_gives_bit_identical_outputs_even_with_dropout(variant: str) -> None:
    cfg = replace(VARIANTS[variant], dropout=0.2)
    x = _x(cfg, batch=2)
    a, b = _model(cfg, seed=5).train(), _model(cfg, seed=5).train()
    torch.manual_seed(11)
    out_a = a(x)
    torch.manual_seed(11)
    out_b = b(x)
    for key in out_a:
        assert torch.equal(out_a[key], out_b[key]), key
    assert not torch.equal(_model(cfg, seed=6).eval()(x)["returns"], a.eval()(x)["returns"])


@pytest.mark.parametrize("variant", ["plain_attention_pool", "lagged"])
def test_family_is_registered_and_a_checkpoint_round_trip_gives_identical_outputs(
    variant: str, tmp_path: Path
) -> None:
    # Arrange
    assert FAMILIES["crossasset"] == (CrossAssetConfig, CrossAssetModel)
    cfg = VARIANTS[variant]
    model = _model(cfg).eval()
    x = _x(cfg, batch=2)
    expected = model(x, need_weights=True)
    # Act
    path = save_checkpoint(tmp_path / "ca.pt", model, family="crossasset", config=cfg)
    loaded, meta = load_checkpoint(path)
    got = loaded(x, need_weights=True)
    # Assert
    assert meta.config == cfg
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


@pytest.mark.parametrize("variant", ["plain_last", "lagged"])
def test_a_handful_of_fixed_samples_is_fitted_to_near_zero_loss(variant: str) -> None:
    # Arrange
    cfg = VARIANTS[variant]
    model = _model(cfg)
    x = _x(cfg, batch=8, seed=1)
    g = torch.Generator().manual_seed(2)
    target_returns = torch.randn(8, 3, generator=g)
    target_direction = torch.randint(0, 3, (8, 3), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # Act
    loss = torch.tensor(float("inf"))
    for _ in range(400):
        out = model(x)
        loss = F.mse_loss(out["returns"], target_returns) + F.cross_entropy(
            out["direction_logits"].flatten(0, 1), target_direction.flatten()
        )
        if loss.item() < 0.01:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Assert
    assert loss.item() < 0.01
    assert (model(x)["direction_logits"].argmax(-1) == target_direction).all()


def test_default_feature_width_matches_the_feature_module() -> None:
    from models.features import n_features

    assert CrossAssetConfig().n_features == n_features()


def test_real_btc_eth_sol_klines_run_through_the_default_lagged_model_with_finite_outputs() -> None:
    # Arrange: the 1m features of the three real series, aligned by timestamp, standardised
    import os

    import numpy as np

    from models.features import kline_features, warmup_rows

    data = Path(os.environ.get("BOT_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    folder = data / "benicio1007_bot_trading" / "f802e27" / "data"
    if not folder.is_dir():
        pytest.skip(f"shared data not found: {folder} (set BOT_SHARED_DATA)")
    pd = pytest.importorskip("pandas")
    cfg = CrossAssetConfig(lagged=True)
    frames = [pd.read_csv(folder / f"{a}_1m.csv", nrows=500) for a in cfg.assets]
    assert all((f["timestamp"] == frames[0]["timestamp"]).all() for f in frames)
    feats = np.stack([kline_features(*(f[c].to_numpy() for c in ("open", "high", "low", "close", "volume")))
                      for f in frames])[:, warmup_rows():]  # (A, N, F)
    feats = (feats - feats.mean(axis=(0, 1))) / feats.std(axis=(0, 1))
    x = torch.from_numpy(feats[:, -cfg.window :]).unsqueeze(0)  # (1, A, T, F)
    # Act
    out = _model(cfg).eval()(x)
    # Assert
    assert all(torch.isfinite(v).all() for v in out.values())
    torch.testing.assert_close(out["portfolio_weights"].sum(), torch.tensor(1.0))
