"""The multi-venue LOB forecaster: column layout, shapes, the structural regulariser, gradients,
checkpoints, determinism, and that it can fit a handful of samples."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from models.lobforecast import (  # noqa: E402
    LOBForecastConfig,
    LOBForecaster,
    book_columns,
    feature_columns,
    feature_index,
    loss_fn,
    structural_penalty,
    target_columns,
)

pytestmark = pytest.mark.unit

# Small enough to train in a second on one CPU thread, but with every kind of part present.
TINY = LOBForecastConfig(venues=("v0", "v1"), pairs=("AAA", "BBB"), levels=2, window=8, target_venue=1,
                         target_pair=0, horizons=(1, 3), d_embed=8, d_model=16, n_heads=2, n_encoder_layers=1,
                         n_decoder_layers=1, d_ff=32, dropout=0.0)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(config: LOBForecastConfig = TINY, seed: int = 0) -> LOBForecaster:
    torch.manual_seed(seed)
    return LOBForecaster(config)


def _inputs(config: LOBForecastConfig = TINY, n: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, config.window, config.n_features, generator=g)


def _book(bids: list[float], asks: list[float], size: float = 1.0) -> list[float]:
    """One book row in column order: bid px/sz per level, then ask px/sz per level."""
    return [v for px in bids for v in (px, size)] + [v for px in asks for v in (px, size)]


# -- layout ---------------------------------------------------------------------------------------------


def test_default_config_is_three_venues_four_pairs_five_levels_into_twenty_targets_at_four_horizons() -> None:
    cfg = LOBForecastConfig()
    assert cfg.n_features == 240
    assert cfg.n_targets == 20
    out = _model(cfg)(torch.zeros(2, 120, 240))
    assert out.shape == (2, 4, 20)


def test_book_block_column_order_is_bid_levels_then_ask_levels_with_price_before_size() -> None:
    assert book_columns(2) == ["bid_px_1", "bid_sz_1", "bid_px_2", "bid_sz_2",
                               "ask_px_1", "ask_sz_1", "ask_px_2", "ask_sz_2"]


def test_book_block_column_order_matches_the_lob_grid_rows() -> None:
    ring = pytest.importorskip("bot.ring")
    assert book_columns(5) == ring.lob_columns(5)


def test_feature_index_maps_venue_pair_level_side_field_to_the_csv_column() -> None:
    cfg = LOBForecastConfig()  # venues bybit_linear, binance_usdm, binance_spot; pairs BTC, ETH, SOL, XRP
    assert feature_index(cfg, "bybit_linear", "BTCUSDT", 1, "bid", "px") == 0
    assert feature_index(cfg, "bybit_linear", "BTCUSDT", 1, "bid", "sz") == 1
    assert feature_index(cfg, "bybit_linear", "BTCUSDT", 5, "bid", "px") == 8
    assert feature_index(cfg, "bybit_linear", "BTCUSDT", 1, "ask", "px") == 10
    assert feature_index(cfg, "bybit_linear", "BTCUSDT", 5, "ask", "sz") == 19
    assert feature_index(cfg, "bybit_linear", "ETHUSDT", 1, "bid", "px") == 20
    assert feature_index(cfg, "binance_usdm", "BTCUSDT", 1, "bid", "px") == 80
    assert feature_index(cfg, "binance_spot", "XRPUSDT", 5, "ask", "sz") == 239
    assert feature_index(cfg, 2, 3, 5, "ask", "sz") == 239


def test_feature_columns_agree_with_feature_index_for_every_column() -> None:
    cfg = LOBForecastConfig()
    cols = feature_columns(cfg)
    assert len(cols) == 240
    assert cols[80] == ("binance_usdm", "BTCUSDT", "bid_px_1")
    for i, (venue, pair, name) in enumerate(cols):
        side, field, level = name.split("_")
        assert feature_index(cfg, venue, pair, int(level), side, field) == i


def test_target_columns_are_the_target_books_block() -> None:
    cfg = LOBForecastConfig(target_venue=1, target_pair=2)
    assert target_columns(cfg) == slice(120, 140)
    assert feature_columns(cfg)[120] == ("binance_usdm", "SOLUSDT", "bid_px_1")
    assert feature_columns(cfg)[139] == ("binance_usdm", "SOLUSDT", "ask_sz_5")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("okx", "BTCUSDT", 1, "bid", "px"), "unknown venue 'okx'"),
        (("bybit_linear", "DOGEUSDT", 1, "bid", "px"), "unknown pair 'DOGEUSDT'"),
        (("bybit_linear", "BTCUSDT", 0, "bid", "px"), r"level must be in 1..5, got 0"),
        (("bybit_linear", "BTCUSDT", 6, "bid", "px"), r"level must be in 1..5, got 6"),
        (("bybit_linear", "BTCUSDT", 1, "buy", "px"), "unknown side 'buy'"),
        (("bybit_linear", "BTCUSDT", 1, "bid", "qty"), "unknown field 'qty'"),
        ((3, "BTCUSDT", 1, "bid", "px"), r"venue index 3 is outside 0..2"),
    ],
)
def test_feature_index_refuses_what_is_not_in_the_layout(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        feature_index(LOBForecastConfig(), *args)  # type: ignore[arg-type]


def test_every_column_gets_the_identity_embeddings_of_its_own_level_side_field_venue_and_pair() -> None:
    embed = _model(LOBForecastConfig()).embed
    cfg = LOBForecastConfig()
    col = feature_index(cfg, "binance_spot", "SOLUSDT", 4, "ask", "sz")
    ids = (embed.level_ids[col], embed.side_ids[col], embed.field_ids[col], embed.venue_ids[col], embed.pair_ids[col])
    assert [int(i) for i in ids] == [3, 1, 1, 2, 2]


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="outside 3 venues x 4 pairs"):
        LOBForecastConfig(target_pair=4)
    with pytest.raises(ValueError, match="not divisible"):
        LOBForecastConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="duplicate"):
        LOBForecastConfig(pairs=("BTCUSDT", "BTCUSDT"))


def test_wrong_input_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"expected input \(B, 8, 32\) = \(batch, time, features\), got \(2, 32, 8\)"):
        _model()(torch.zeros(2, 32, 8))


# -- embedding ------------------------------------------------------------------------------------------


def test_missing_values_are_read_as_missing_not_as_zero_and_only_change_their_own_time_step() -> None:
    # Arrange: the second bid level of every book is missing (NaN) at the last step
    model = _model()
    x = _inputs(n=2)
    missing = [feature_index(TINY, v, p, 2, "bid", f) for v in TINY.venues for p in TINY.pairs for f in ("px", "sz")]
    with_nan, with_zero = x.clone(), x.clone()
    with_nan[:, -1, missing] = float("nan")
    with_zero[:, -1, missing] = 0.0
    # Act
    tokens_nan, tokens_zero, tokens_full = model.embed(with_nan), model.embed(with_zero), model.embed(x)
    # Assert
    assert torch.isfinite(tokens_nan).all()
    assert torch.equal(tokens_nan[:, :-1], tokens_full[:, :-1])
    assert not torch.allclose(tokens_nan[:, -1], tokens_zero[:, -1])
    out = model(with_nan)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert model.embed.missing.grad is not None
    assert torch.count_nonzero(model.embed.missing.grad) > 0


# -- structural penalty and loss -------------------------------------------------------------------------


def test_structural_penalty_is_zero_for_a_well_ordered_book_in_mid_offset_bps() -> None:
    book = torch.tensor(_book(bids=[-0.5, -1.5, -2.0, -4.0, -9.0], asks=[0.5, 1.0, 3.0, 3.5, 7.0], size=-0.3))
    assert structural_penalty(book).item() == 0.0
    assert structural_penalty(book.expand(3, 4, 20)).item() == 0.0


def test_structural_penalty_charges_a_crossed_book_by_how_far_it_is_crossed() -> None:
    crossed = torch.tensor(_book(bids=[3.0, -2.0, -3.0, -4.0, -5.0], asks=[1.0, 2.0, 3.0, 4.0, 5.0]))
    assert structural_penalty(crossed).item() == pytest.approx(2.0)


def test_structural_penalty_charges_mis_ordered_levels_on_each_side() -> None:
    bids_wrong = torch.tensor(_book(bids=[-1.0, -0.5, -3.0, -2.0, -5.0], asks=[1.0, 2.0, 3.0, 4.0, 5.0]))
    asks_wrong = torch.tensor(_book(bids=[-1.0, -2.0, -3.0, -4.0, -5.0], asks=[1.0, 0.75, 3.0, 4.0, 3.0]))
    assert structural_penalty(bids_wrong).item() == pytest.approx(0.5 + 1.0)
    assert structural_penalty(asks_wrong).item() == pytest.approx(0.25 + 1.0)


def test_structural_penalty_averages_over_books_and_honours_a_margin() -> None:
    good = _book(bids=[-1.0, -2.0], asks=[1.0, 2.0])
    crossed = _book(bids=[2.0, -2.0], asks=[1.0, 2.0])
    locked = _book(bids=[0.0, -1.0], asks=[0.0, 1.0])
    assert structural_penalty(torch.tensor([good, crossed])).item() == pytest.approx(0.5)
    assert structural_penalty(torch.tensor(locked)).item() == 0.0
    assert structural_penalty(torch.tensor(locked), margin=0.1).item() == pytest.approx(0.1)


def test_structural_penalty_gradient_pushes_a_crossed_best_bid_down_and_best_ask_up() -> None:
    pred = torch.tensor(_book(bids=[3.0, -2.0], asks=[1.0, 2.0]), requires_grad=True)
    structural_penalty(pred).backward()
    assert pred.grad is not None
    assert pred.grad.tolist() == [1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0]


def test_loss_is_mse_plus_one_hundredth_of_the_structural_penalty() -> None:
    target = torch.tensor([[_book(bids=[-1.0, -2.0], asks=[1.0, 2.0])]])  # (1, 1, 8)
    pred = torch.tensor([[_book(bids=[2.0, -2.0], asks=[1.0, 2.0])]])  # best bid 3.0 off, crossed by 1.0
    assert loss_fn(pred, target).item() == pytest.approx(9.0 / 8 + 0.01 * 1.0)
    assert loss_fn(target, target).item() == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        loss_fn(pred, target[..., :4])


# -- the model --------------------------------------------------------------------------------------------


def _target_books(n: int, config: LOBForecastConfig = TINY, seed: int = 2) -> torch.Tensor:
    """Random well-ordered target books (B, H, 4 * levels): bids below 0, asks above, sizes free."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, len(config.horizons), config.levels)
    bids = -torch.rand(shape, generator=g).add(0.1).cumsum(-1)
    asks = torch.rand(shape, generator=g).add(0.1).cumsum(-1)
    sizes = torch.randn(*shape, 2, generator=g)
    book = torch.stack([torch.stack([bids, sizes[..., 0]], -1), torch.stack([asks, sizes[..., 1]], -1)], dim=-3)
    return book.flatten(-3)  # (B, H, side * level * field)


def test_target_book_helper_builds_well_ordered_books() -> None:
    books = _target_books(5)
    assert books.shape == (5, 2, 8)
    assert structural_penalty(books).item() == 0.0


def test_gradients_reach_every_parameter() -> None:
    model = _model(replace(TINY, dropout=0.1))
    x = _inputs(n=4)
    x[0, 3, 5] = float("nan")  # the "missing" token is a parameter too
    loss_fn(model(x), _target_books(4)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad) > 0, name


def _train_steps(model: LOBForecaster, x: torch.Tensor, y: torch.Tensor, steps: int,
                 lr: float = 3e-3) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_checkpoint_round_trip_gives_bit_identical_outputs_in_eval_mode(tmp_path: Path) -> None:
    # Arrange
    config = replace(TINY, dropout=0.1)
    model = _model(config)
    x = _inputs(n=4)
    _train_steps(model, x, _target_books(4), steps=2)
    model.eval()
    extra = {"normalisation": {"prices": "bps offset from target mid at t0", "sizes": "log1p"},
             "columns": [":".join(c) for c in feature_columns(config)], "code_version": "abc123"}
    # Act
    path = save_checkpoint(tmp_path / "lob.pt", model, family="lobforecast", config=config, extra=extra)
    loaded, meta = load_checkpoint(path)
    # Assert
    assert meta.config == config
    assert meta.config.horizons == (1, 3)
    assert meta.extra == extra
    assert torch.equal(loaded(x), model(x))


def test_same_seed_gives_the_same_weights_and_the_same_training_run() -> None:
    config = replace(TINY, dropout=0.2)
    x, y = _inputs(n=4), _target_books(4)
    runs = []
    for _ in range(2):
        model = _model(config, seed=5)
        torch.manual_seed(9)  # dropout masks
        losses = _train_steps(model, x, y, steps=3)
        runs.append((losses, model.eval()(x)))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_overfits_eight_fixed_samples() -> None:
    # Arrange: 8 random windows mapped to 8 random (but well-ordered) future books
    x, y = _inputs(n=8, seed=3), _target_books(8, seed=4)
    model = _model(seed=0)
    # Act
    losses = _train_steps(model, x, y, steps=300, lr=3e-3)
    # Assert
    assert losses[0] > 0.5
    model.eval()
    assert loss_fn(model(x), y).item() < 0.05
