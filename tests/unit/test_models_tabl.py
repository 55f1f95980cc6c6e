"""TABL (Tran et al. 2018): shapes of the paper's stacks, the temporal attention's algebra, gradients,
checkpoints, determinism, and that it can fit a handful of samples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from models.tabl import TABL, MultiHeadTABL, TABLConfig, TemporalAttention  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0, **kw: object) -> TABL:
    torch.manual_seed(seed)
    return TABL(TABLConfig(**kw))  # type: ignore[arg-type]


def _batch(n: int = 4, d: int = 40, t: int = 10, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, t, generator=g)


@pytest.mark.parametrize(("stack", "t_last"), [("A", 10), ("B", 5), ("C", 5)])
@pytest.mark.parametrize(("heads", "combine"), [(1, "concat"), (3, "concat"), (2, "mean")])
def test_paper_stacks_give_logits_per_horizon_and_attention_per_head(stack: str, t_last: int, heads: int,
                                                                     combine: str) -> None:
    torch.manual_seed(0)
    model = TABL(TABLConfig.paper(stack, heads=heads, combine=combine, n_horizons=2))  # type: ignore[arg-type]
    logits, attn = model(_batch(5), return_attention=True)
    assert logits.shape == (5, 2, 3)
    assert attn.shape == (5, heads, 2 * 3, t_last)
    assert model(_batch(5)).shape == (5, 2, 3)


def test_paper_stack_c_is_the_default_with_one_horizon_and_one_head() -> None:
    model = _model()
    assert model.config.hidden == ((60, 10), (120, 5))
    assert [(m.w1.shape, m.w2.shape) for m in model.hidden] == [((60, 40), (10, 10)), ((120, 60), (10, 5))]
    assert model.out.w1.shape == (3, 120)
    assert model.out.w2.shape == (5, 1)
    assert len(model.out.heads) == 1
    assert model(_batch()).shape == (4, 1, 3)


def test_attention_is_a_distribution_over_time_for_every_row_and_head() -> None:
    model = _model(heads=3, n_horizons=2)
    _, attn = model(_batch(), return_attention=True)
    assert attn.shape == (4, 3, 6, 5)  # (B, heads, n_horizons * n_classes, T_last)
    assert (attn >= 0).all()
    torch.testing.assert_close(attn.sum(dim=-1), torch.ones(4, 3, 6))
    assert not torch.allclose(attn.sum(dim=-2), torch.ones(4, 3, 5))  # not over rows


def test_attention_matrix_diagonal_is_fixed_to_one_over_t_and_gets_no_gradient() -> None:
    head = TemporalAttention(steps=7)
    w = head.effective_weight()
    torch.testing.assert_close(torch.diagonal(w), torch.full((7,), 1 / 7))
    head(torch.randn(2, 3, 7))[0].square().sum().backward()
    assert head.weight.grad is not None
    assert torch.count_nonzero(torch.diagonal(head.weight.grad)) == 0
    assert torch.count_nonzero(head.weight.grad) == 7 * 6


def test_lambda_zero_makes_the_tabl_layer_a_plain_bilinear_layer() -> None:
    torch.manual_seed(0)
    layer = MultiHeadTABL(d_in=40, t_in=10, d_out=3, t_out=1)
    with torch.no_grad():
        layer.heads[0].lam.fill_(0.0)
    x = _batch()
    y, _ = layer(x)
    torch.testing.assert_close(y, layer.w1 @ x @ layer.w2 + layer.bias)


def test_lambda_one_scales_each_feature_row_by_its_attention() -> None:
    torch.manual_seed(0)
    layer = MultiHeadTABL(d_in=40, t_in=10, d_out=3, t_out=1)
    with torch.no_grad():
        layer.heads[0].lam.fill_(1.0)
    x = _batch()
    y, attn = layer(x)
    torch.testing.assert_close(y, ((layer.w1 @ x) * attn[:, 0]) @ layer.w2 + layer.bias)


def test_lambda_outside_unit_interval_acts_clamped_and_constraints_put_it_back() -> None:
    model = _model(hidden=())
    head = model.out.heads[0]
    x = _batch()
    with torch.no_grad():
        head.lam.fill_(1.0)
    at_one = model(x)
    with torch.no_grad():
        head.lam.fill_(1.7)
    torch.testing.assert_close(model(x), at_one)
    model.apply_constraints()
    assert head.lam.item() == 1.0


def test_mean_of_identical_heads_equals_one_head() -> None:
    one = _model(hidden=(), heads=1)
    three = _model(hidden=(), heads=3, combine="mean")
    with torch.no_grad():
        three.out.w1.copy_(one.out.w1)
        three.out.w2.copy_(one.out.w2)
        for head in three.out.heads:
            head.weight.copy_(one.out.heads[0].weight)
    x = _batch()
    torch.testing.assert_close(three(x), one(x))


def test_concat_heads_read_out_through_a_wider_temporal_projection() -> None:
    model = _model(heads=4, combine="concat")
    assert model.out.w2.shape == (4 * 5, 1)
    assert _model(heads=4, combine="mean").out.w2.shape == (5, 1)


def test_max_norm_caps_feature_rows_and_temporal_columns_after_a_step() -> None:
    model = _model(max_norm=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10.0)
    model.apply_constraints()
    for layer in [*model.hidden, model.out]:
        assert torch.linalg.vector_norm(layer.w1, dim=1).max() <= 0.5 + 1e-6
        assert torch.linalg.vector_norm(layer.w2, dim=0).max() <= 0.5 + 1e-6


def test_gradients_reach_every_parameter() -> None:
    model = _model(heads=2, n_horizons=2, combine="concat")
    logits = model(_batch(16))
    labels = torch.arange(32).remainder(3).view(16, 2)
    F.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad) > 0, name


def test_wrong_input_shape_is_a_clear_error() -> None:
    model = _model()
    expected = r"expected input \(B, 40, 10\) = \(batch, features, time\), got \(4, 10, 40\)"
    with pytest.raises(ValueError, match=expected):
        model(torch.zeros(4, 10, 40))


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="combine"):
        TABLConfig(combine="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        TABLConfig(hidden=((60, 0),))
    with pytest.raises(ValueError, match="unknown paper stack"):
        TABLConfig.paper("D")
    with pytest.raises(ValueError, match="dropout"):
        TABLConfig(dropout=1.0)


def _train_steps(model: TABL, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 1e-2) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.apply_constraints()
        losses.append(loss.item())
    return losses


def test_checkpoint_round_trip_gives_bit_identical_outputs_in_eval_mode(tmp_path: Path) -> None:
    # Arrange: a trained-a-little multi-head model, so λ and W are no longer at their initial values
    model = _model(heads=3, n_horizons=2, combine="mean", dropout=0.2)
    x = _batch(8)
    _train_steps(model, x, torch.arange(16).remainder(3).view(8, 2), steps=3)
    model.eval()
    extra = {"label_thresholds": [-2e-4, 2e-4], "features": "40 = 10 levels x ask/bid x px/sz"}
    # Act
    path = save_checkpoint(tmp_path / "tabl.pt", model, family="tabl", config=model.config, extra=extra)
    loaded, meta = load_checkpoint(path)
    # Assert
    assert meta.config == model.config
    assert meta.extra == extra
    logits, attn = model(x, return_attention=True)
    logits2, attn2 = loaded(x, return_attention=True)
    assert torch.equal(logits2, logits)
    assert torch.equal(attn2, attn)


def test_same_seed_gives_the_same_weights_and_the_same_training_run() -> None:
    x, y = _batch(8), torch.arange(8).remainder(3).view(8, 1)
    runs = []
    for _ in range(2):
        model = _model(seed=7, heads=2, dropout=0.3)
        torch.manual_seed(11)  # dropout masks
        losses = _train_steps(model, x, y, steps=5)
        runs.append((losses, model.eval()(x)))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(_model(seed=8).out.w1, _model(seed=7).out.w1)


def test_overfits_eight_fixed_samples() -> None:
    # Arrange: 8 random windows with random but fixed labels: only memorisation can fit them
    x = _batch(8, seed=3)
    y = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1]).view(8, 1)
    model = _model(seed=0, dropout=0.0)
    # Act
    losses = _train_steps(model, x, y, steps=150)
    # Assert
    assert losses[0] > 0.8
    model.eval()
    final = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    assert final < 0.05
    assert torch.equal(model(x).argmax(-1), y)
