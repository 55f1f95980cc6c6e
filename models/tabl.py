"""TABL: Temporal Attention augmented Bilinear Network (Tran, Iosifidis, Kanniainen, Gabbouj,
"Temporal Attention augmented Bilinear Network for Financial Time-Series Data Analysis", IEEE TNNLS 2018).

A window of limit-order-book snapshots is a matrix X of shape (D, T): D features (10 levels x ask/bid x
price/size = 40, optionally + mid, spread, imbalance) by T time steps. A bilinear layer mixes the two modes
separately, W1 over features and W2 over time, which keeps the parameter count at D'D + TT' + D'T' instead of
D'T'DT:

    BL:    Y = act(W1 X W2 + B)                          (D, T) -> (D', T')

The TABL layer inserts a temporal attention between the two mixings:

    X̄ = W1 X                                             (D', T)   feature mixing
    E = X̄ W                                              (D', T)   W: (T, T), diagonal fixed to 1/T
    A = softmax(E) over the time axis, row by row        (D', T)   each row sums to 1
    X̃ = λ (X̄ ⊙ A) + (1 - λ) X̄                            (D', T)   λ in [0, 1], learned
    Y = act(X̃ W2 + B)                                    (D', T')

The paper's networks take 40 features x 10 steps and end in a TABL layer of 3 x 1 whose rows are the
logits of (down, stationary, up):

    A: 40x10 -> TABL 3x1
    B: 40x10 -> BL 120x5 -> TABL 3x1
    C: 40x10 -> BL 60x10 -> BL 120x5 -> TABL 3x1          (the best in the paper, and the default here)

Two additions, both off by default so that the defaults are the paper's model:

- ``n_horizons`` > 1: the last layer has n_horizons x n_classes rows, row h * n_classes + c being the logit of
  class c at horizon h. Every horizon gets its own feature mixing (rows of W1) and attention rows; the
  attention matrix W and the temporal read-out W2 are shared, as the paper shares them across rows.
- ``heads`` > 1 (``MultiHeadTABL``): several temporal attentions in the last layer, each with its own W and
  λ, over the same X̄; their outputs X̃_k are averaged (``combine="mean"``) or concatenated along time and
  read out by a wider W2 of shape (heads * T, T') (``combine="concat"``: the concatenation's projection).

The max-norm constraint the paper trains with is not part of the forward pass: the training step calls
``model.apply_constraints()`` after each optimiser step, which also puts every λ back into [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import register_family

# The paper's three stacks, as the hidden bilinear layers (D', T') between the input and the last TABL layer.
PAPER_STACKS: dict[str, tuple[tuple[int, int], ...]] = {
    "A": (),
    "B": ((120, 5),),
    "C": ((60, 10), (120, 5)),
}


@dataclass(frozen=True)
class TABLConfig:
    """The whole interface of the model: it is built from this and nothing else."""

    n_features: int = 40  # D: rows of the input window
    window: int = 10  # T: time steps of the input window
    hidden: tuple[tuple[int, int], ...] = PAPER_STACKS["C"]  # bilinear layers (D', T'), input side first
    heads: int = 1  # temporal-attention heads in the last layer (1 = the paper's TABL)
    combine: Literal["concat", "mean"] = "concat"  # how the heads are merged when heads > 1
    dropout: float = 0.1  # after every hidden bilinear layer
    n_horizons: int = 1
    n_classes: int = 3  # down, stationary, up
    max_norm: float | None = None  # cap on the L2 norm of each W1 row / W2 column; None = no constraint

    def __post_init__(self) -> None:
        sizes = [self.n_features, self.window, self.heads, self.n_horizons, self.n_classes]
        sizes += [n for layer in self.hidden for n in layer]
        if any(not isinstance(n, int) or n < 1 for n in sizes):
            raise ValueError(f"sizes must be positive ints: {self}")
        if any(len(layer) != 2 for layer in self.hidden):
            raise ValueError(f"hidden layers are (rows, steps) pairs, got {self.hidden}")
        if self.combine not in ("concat", "mean"):
            raise ValueError(f"combine must be 'concat' or 'mean', got {self.combine!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_norm is not None and self.max_norm <= 0:
            raise ValueError(f"max_norm must be positive or None, got {self.max_norm}")

    @classmethod
    def paper(cls, stack: str = "C", **overrides: object) -> TABLConfig:
        """The paper's network A, B or C (40 features x 10 steps), with any field overridden."""
        if stack not in PAPER_STACKS:
            raise ValueError(f"unknown paper stack {stack!r}; choose one of {sorted(PAPER_STACKS)}")
        return cls(**{"hidden": PAPER_STACKS[stack], **overrides})  # type: ignore[arg-type]


class Bilinear(nn.Module):
    """BL without the activation: W1 X W2 + B, mapping (D, T) -> (D', T')."""

    def __init__(self, d_in: int, t_in: int, d_out: int, t_out: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(d_out, d_in))  # feature mixing
        self.w2 = nn.Parameter(torch.empty(t_in, t_out))  # temporal mixing
        self.bias = nn.Parameter(torch.zeros(d_out, t_out))
        nn.init.xavier_uniform_(self.w1)
        nn.init.xavier_uniform_(self.w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, D, T)
        return self.w1 @ x @ self.w2 + self.bias  # (B, D', T')


class TemporalAttention(nn.Module):
    """One attention head over the time axis: its own W (T x T, diagonal fixed to 1/T) and λ."""

    off_diagonal: torch.Tensor  # buffers, declared for the type checker
    diagonal: torch.Tensor

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.weight = nn.Parameter(torch.empty(steps, steps))
        nn.init.xavier_uniform_(self.weight)
        self.lam = nn.Parameter(torch.tensor(0.5))
        # The diagonal is not learned: W_eff = W ⊙ (1 - I) + I / T. Derived from the shape, so not saved.
        eye = torch.eye(steps)
        self.register_buffer("off_diagonal", 1.0 - eye, persistent=False)
        self.register_buffer("diagonal", eye / steps, persistent=False)

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.off_diagonal + self.diagonal  # (T, T)

    def forward(self, xbar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # xbar: (B, D', T)
        energy = xbar @ self.effective_weight()  # (B, D', T): e_ij = sum_k xbar_ik W_kj
        attn = F.softmax(energy, dim=-1)  # (B, D', T): softmax over time, row by row
        lam = self.lam.clamp(0.0, 1.0)
        mixed = lam * (xbar * attn) + (1.0 - lam) * xbar  # (B, D', T)
        return mixed, attn


class MultiHeadTABL(nn.Module):
    """The TABL layer without activation, with ``heads`` temporal attentions (heads=1: the paper's layer).

    forward(x) -> (W1-mixed, attended and read out (B, D', T'), attention (B, heads, D', T)).
    """

    def __init__(self, d_in: int, t_in: int, d_out: int, t_out: int, heads: int = 1,
                 combine: Literal["concat", "mean"] = "concat") -> None:
        super().__init__()
        self.combine = combine
        self.w1 = nn.Parameter(torch.empty(d_out, d_in))
        self.heads = nn.ModuleList(TemporalAttention(t_in) for _ in range(heads))
        read_steps = t_in * heads if combine == "concat" and heads > 1 else t_in
        self.w2 = nn.Parameter(torch.empty(read_steps, t_out))
        self.bias = nn.Parameter(torch.zeros(d_out, t_out))
        nn.init.xavier_uniform_(self.w1)
        nn.init.xavier_uniform_(self.w2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, D, T)
        xbar = self.w1 @ x  # (B, D', T)
        outs, attns = zip(*(head(xbar) for head in self.heads), strict=True)  # heads x (B, D', T)
        if len(outs) == 1:
            mixed = outs[0]  # (B, D', T)
        elif self.combine == "mean":
            mixed = torch.stack(outs).mean(dim=0)  # (B, D', T)
        else:
            mixed = torch.cat(outs, dim=-1)  # (B, D', heads * T)
        y = mixed @ self.w2 + self.bias  # (B, D', T')
        return y, torch.stack(attns, dim=1)  # (B, D', T'), (B, heads, D', T)


@register_family("tabl", TABLConfig)
class TABL(nn.Module):
    """Hidden BL layers (ReLU, dropout), then a (multi-head) TABL layer whose rows are the class logits.

    forward(x: (B, n_features, window)) -> logits (B, n_horizons, n_classes);
    with ``return_attention=True`` -> (logits, attention (B, heads, n_horizons * n_classes, T_last)),
    where T_last is the time steps entering the last layer (``window`` for stack A, else the last hidden T').
    """

    def __init__(self, config: TABLConfig) -> None:
        super().__init__()
        self.config = config
        shapes = [(config.n_features, config.window), *config.hidden]
        self.hidden = nn.ModuleList(
            Bilinear(d_in, t_in, d_out, t_out) for (d_in, t_in), (d_out, t_out) in pairwise(shapes)
        )
        self.drop = nn.Dropout(config.dropout)
        d_last, t_last = shapes[-1]
        self.out = MultiHeadTABL(d_last, t_last, config.n_horizons * config.n_classes, 1,
                                 heads=config.heads, combine=config.combine)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if x.dim() != 3 or x.shape[1:] != (cfg.n_features, cfg.window):
            raise ValueError(f"expected input (B, {cfg.n_features}, {cfg.window}) = (batch, features, time), "
                             f"got {tuple(x.shape)}")
        # x: (B, D, T)
        for layer in self.hidden:
            x = self.drop(F.relu(layer(x)))  # (B, D_i, T_i)
        y, attn = self.out(x)  # (B, H * C, 1), (B, heads, H * C, T_last)
        logits = y.view(x.shape[0], cfg.n_horizons, cfg.n_classes)  # (B, H, C)
        return (logits, attn) if return_attention else logits

    @torch.no_grad()
    def inference(self) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """``forward(x, return_attention=True)`` of this model in eval mode, frozen, for serving: the same
        operations in the same order on the same values (so the same bits), without what a tiny model pays
        per call for nothing. What does not depend on the input (each head's effective W, its clamped λ and
        1 - λ) is computed once here; there is no module dispatch and no dropout (the identity in eval
        mode). Valid while the parameters stay as they are now (``bot.heads`` rebuilds it when they change).
        """
        if self.training:
            raise ValueError("inference() is for a model in eval mode")
        cfg = self.config
        # The parameters themselves, not detached copies: matmul picks its kernel by whether an operand
        # requires grad, so a detached weight can round differently. What is derived from them is computed
        # under no_grad here, as forward computes it under inference_mode: plain tensors either way.
        hidden: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for layer in self.hidden:
            assert isinstance(layer, Bilinear)
            hidden.append((layer.w1, layer.w2, layer.bias))
        out = self.out
        w1, w2, bias = out.w1, out.w2, out.bias
        heads = []
        for head in out.heads:
            assert isinstance(head, TemporalAttention)
            lam = head.lam.clamp(0.0, 1.0)
            heads.append((head.effective_weight(), lam, 1.0 - lam))
        combine = "single" if len(heads) == 1 else out.combine
        shape = (cfg.n_features, cfg.window)
        n_h, n_c = cfg.n_horizons, cfg.n_classes

        def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if x.dim() != 3 or x.shape[1:] != shape:
                raise ValueError(f"expected input (B, {cfg.n_features}, {cfg.window}) = (batch, features, time), "
                                 f"got {tuple(x.shape)}")
            for a, b, c in hidden:  # Bilinear, ReLU (dropout: the identity)
                x = F.relu(a @ x @ b + c)
            xbar = w1 @ x  # MultiHeadTABL
            outs, attns = [], []
            for weight, lam, rest in heads:  # TemporalAttention
                attn = F.softmax(xbar @ weight, dim=-1)
                outs.append(lam * (xbar * attn) + rest * xbar)
                attns.append(attn)
            if combine == "single":
                mixed = outs[0]
            elif combine == "mean":
                mixed = torch.stack(outs).mean(dim=0)
            else:
                mixed = torch.cat(outs, dim=-1)
            y = mixed @ w2 + bias
            return y.view(x.shape[0], n_h, n_c), torch.stack(attns, dim=1)

        return run

    @torch.no_grad()
    def apply_constraints(self) -> None:
        """Call after each optimiser step: λ back into [0, 1]; max-norm on W1 rows and W2 columns if set."""
        for module in self.modules():
            if isinstance(module, TemporalAttention):
                module.lam.clamp_(0.0, 1.0)
        if self.config.max_norm is None:
            return
        c = self.config.max_norm
        for module in self.modules():
            if isinstance(module, Bilinear | MultiHeadTABL):
                # renorm(p, dim, maxnorm) caps the norm of each slice along ``dim``.
                module.w1.copy_(torch.renorm(module.w1, 2, 0, c))  # each output row's incoming weights
                module.w2.copy_(torch.renorm(module.w2, 2, 1, c))  # each output step's incoming weights
