"""Cross-asset attention: what BTC just did says something about ETH and SOL, and the other way round.

Input ``x``: (B, A, T, F), A assets on a common clock (same bar times), T bars, F kline features::

    x: (B, A, T, F)
      │ TemporalEncoder (weights shared by all assets): Linear(F, D) + positions + asset embedding,
      │ n_temporal_layers × pre-LN *causal* self-attention over each asset's own bars
      ▼
    h: (B, A, T, D)   h[:, a, t] summarises asset a up to and including bar t
      │
      ├─ plain (lagged=False): summarise each asset to one token (last step, or attention pooling)
      │      tokens (B, A, D) ─► n_cross_layers × Block: asset i queries the other assets' tokens
      │      attention (B, H, A, A)                                     -> "cross_attention"
      │
      └─ lagged (lagged=True): every step t of asset i queries the *other* assets' steps t-1 .. t-L
             (LaggedBlock, lead-lag); a learned null key takes the mass when nothing qualifies
             (t = 0); attention (B, H, A, T, A, L)                       -> "lag_attention"
      ▼
    per-asset tokens (B, A, D) [and per-step (B, A, T, D) when lagged]
      ├─► returns (B, A)            return regression per asset (horizon in the config, metadata)
      ├─► direction_logits (B, A, 3)
      └─► portfolio_weights (B, A)  long_only: softmax over assets (w >= 0, Σw = 1)
                                    long_short: tanh, divided by max(1, Σ|w|) so Σ|w| <= 1

Self-attention across assets (``self_attend``, default False): an asset's own state already reaches its
heads through the residual connection, so the cross-asset step is reserved for *other* assets; the map
then reads directly as "who looks at whom" and is not dominated by the diagonal. Set it True to let an
asset attend to itself too (required when there is a single asset).

Causality of the lagged variant: the temporal encoder is causal, so h[:, j, t-l] depends on bars of asset
j up to t-l only, and the lagged block reads only l >= 1. Hence the outputs of asset i at step t depend on
asset i's bars <= t and the other assets' bars <= t-1 (tests perturb the rest and compare bit for bit).
The temporal encoder is causal in the plain variant too: one encoder for both, and h[:, a, t] keeps the
same meaning everywhere. Attention pooling reads a whole window at once, so it is plain-only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.checkpoint import register_family

__all__ = ["CrossAssetConfig", "CrossAssetModel"]


@dataclass(frozen=True)
class CrossAssetConfig:
    """The whole interface of the family; stored in checkpoints as the model args."""

    assets: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    window: int = 64  # bars per asset
    n_features: int = 12  # models.features.n_features() with its defaults
    d_model: int = 64
    n_heads: int = 4
    n_temporal_layers: int = 2
    n_cross_layers: int = 1
    ff_mult: int = 4
    dropout: float = 0.1
    horizon: int = 15  # bars ahead the return target looks; metadata for the label builder
    n_classes: int = 3  # direction: down / flat / up
    pooling: str = "last"  # "last" | "attention" (plain variant only)
    self_attend: bool = False  # may an asset attend to itself in cross-asset attention
    lagged: bool = False  # lead-lag variant: step t attends to others' steps t-1 .. t-max_lag
    max_lag: int = 5
    portfolio: str = "long_only"  # "long_only" | "long_short"

    def __post_init__(self) -> None:
        object.__setattr__(self, "assets", tuple(self.assets))
        if not self.assets or len(set(self.assets)) != len(self.assets):
            raise ValueError(f"assets must be non-empty and unique, got {self.assets}")
        if len(self.assets) < 2 and not self.self_attend:
            raise ValueError("a single asset has no others to attend to: set self_attend=True")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if min(self.window, self.n_features, self.n_temporal_layers, self.n_cross_layers) < 1:
            raise ValueError("window, n_features and layer counts must be >= 1")
        if self.pooling not in ("last", "attention"):
            raise ValueError(f"pooling must be 'last' or 'attention', got {self.pooling!r}")
        if self.lagged and self.pooling != "last":
            raise ValueError("the lagged variant works per step; attention pooling would read future steps")
        if not 1 <= self.max_lag < self.window:
            raise ValueError(f"max_lag must be in 1..window-1 ({self.window - 1}), got {self.max_lag}")
        if self.portfolio not in ("long_only", "long_short"):
            raise ValueError(f"portfolio must be 'long_only' or 'long_short', got {self.portfolio!r}")
        if self.n_classes < 2:
            raise ValueError("n_classes must be >= 2")


# --- blocks --------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention returning its weights; ``allowed`` (Tq, Tk) bool marks visible keys."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, xq: Tensor, xkv: Tensor, allowed: Tensor | None = None) -> tuple[Tensor, Tensor]:
        B, Tq, D = xq.shape
        Tk, H = xkv.shape[1], self.n_heads
        q = self.q(xq).view(B, Tq, H, D // H).transpose(1, 2)  # (B, H, Tq, dh)
        k, v = self.kv(xkv).view(B, Tk, 2, H, D // H).permute(2, 0, 3, 1, 4)  # 2 × (B, H, Tk, dh)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // H)  # (B, H, Tq, Tk)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        weights = scores.softmax(dim=-1)  # (B, H, Tq, Tk)
        y = (self.drop(weights) @ v).transpose(1, 2).reshape(B, Tq, D)  # (B, Tq, D)
        return self.drop(self.proj(y)), weights


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model),
            nn.GELU(),
            nn.Linear(ff_mult * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.net(x)  # (..., D)
        return y


class Block(nn.Module):
    """Pre-LN transformer block over one sequence, with an optional visibility mask."""

    def __init__(self, cfg: CrossAssetConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg.d_model, cfg.ff_mult, cfg.dropout)

    def forward(self, x: Tensor, allowed: Tensor | None) -> tuple[Tensor, Tensor]:
        a = self.ln1(x)  # (B, N, D)
        y, w = self.attn(a, a, allowed)  # (B, N, D), (B, H, N, N)
        x = x + y
        x = x + self.ff(self.ln2(x))
        return x, w


class TemporalEncoder(nn.Module):
    """Each asset's bars -> causal per-step states; weights shared across assets, told apart by embedding."""

    def __init__(self, cfg: CrossAssetConfig) -> None:
        super().__init__()
        self.embed = nn.Linear(cfg.n_features, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(cfg.window, cfg.d_model) * 0.02)  # (W, D), row W-1 = newest
        self.asset_emb = nn.Parameter(torch.randn(len(cfg.assets), cfg.d_model) * 0.02)  # (A, D)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_temporal_layers))
        self.ln = nn.LayerNorm(cfg.d_model)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        B, A, T, _ = x.shape
        h = self.embed(x) + self.pos[-T:] + self.asset_emb[:, None, :]  # (B, A, T, D)
        h = h.reshape(B * A, T, -1)  # (B·A, T, D)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
        w = torch.empty(0)
        for block in self.blocks:
            h, w = block(h, causal)  # last layer's weights (B·A, H, T, T)
        h = self.ln(h).view(B, A, T, -1)  # (B, A, T, D)
        return h, w.view(B, A, *w.shape[1:])  # (B, A, T, D), (B, A, H, T, T)


class AttentionPool(nn.Module):
    """A learned query reads each asset's whole window into one token."""

    def __init__(self, cfg: CrossAssetConfig) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, cfg.d_model) * 0.02)  # (1, 1, D)
        self.attn = Attention(cfg.d_model, cfg.n_heads, cfg.dropout)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        B, A, T, D = h.shape
        seq = h.reshape(B * A, T, D)  # (B·A, T, D)
        y, w = self.attn(self.query.expand(B * A, -1, -1), seq)  # (B·A, 1, D), (B·A, H, 1, T)
        token = seq[:, -1] + y[:, 0]  # (B·A, D): residual on the newest step
        return token.view(B, A, D), w[:, :, 0].reshape(B, A, -1, T)  # (B, A, D), (B, A, H, T)


class LaggedCrossAttention(nn.Module):
    """Asset i at step t attends to asset j's states at steps t-1 .. t-L (j != i unless self_attend).

    Keys carry a lag embedding so "BTC one bar ago" and "BTC five bars ago" are told apart. A learned
    null key/value is always visible: at t = 0 (or when every key is masked) the softmax stays defined
    and the query can also choose to take nothing from the others.
    """

    def __init__(self, cfg: CrossAssetConfig) -> None:
        super().__init__()
        self.n_heads, self.max_lag, self.self_attend = cfg.n_heads, cfg.max_lag, cfg.self_attend
        dh = cfg.d_model // cfg.n_heads
        self.lag_emb = nn.Parameter(torch.randn(cfg.max_lag, cfg.d_model) * 0.02)  # (L, D), row l-1 = lag l
        self.null_kv = nn.Parameter(torch.randn(2, cfg.n_heads, dh) * 0.02)  # (2, H, dh)
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, xq: Tensor, xkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, A, T, D = xq.shape
        H, L = self.n_heads, self.max_lag
        dh = D // H
        q = self.q(xq).view(B, A, T, H, dh)  # (B, A, T, H, dh)
        # past[:, j, t, l-1] = xkv[:, j, t-l]; rows before the series start are zeros, masked below
        past = torch.stack([F.pad(xkv, (0, 0, lag, 0))[:, :, :T] for lag in range(1, L + 1)], dim=3)
        past = past + self.lag_emb  # (B, A, T, L, D)
        k, v = self.kv(past).view(B, A, T, L, 2, H, dh).unbind(dim=4)  # 2 × (B, A, T, L, H, dh)
        scores = torch.einsum("bithd,bjtlhd->bhitjl", q, k) / math.sqrt(dh)  # (B, H, A, T, A, L)
        scores = scores.masked_fill(~self._allowed(A, T, xq.device), float("-inf"))
        null = torch.einsum("bithd,hd->bhit", q, self.null_kv[0]) / math.sqrt(dh)  # (B, H, A, T)
        weights = torch.cat([scores.flatten(-2), null.unsqueeze(-1)], dim=-1).softmax(dim=-1)
        dropped = self.drop(weights)  # (B, H, A, T, A·L + 1)
        w_keys = dropped[..., :-1].reshape(B, H, A, T, A, L)  # (B, H, A, T, A, L)
        y = torch.einsum("bhitjl,bjtlhd->bithd", w_keys, v)  # (B, A, T, H, dh)
        y = y + dropped[..., -1].permute(0, 2, 3, 1).unsqueeze(-1) * self.null_kv[1]  # (B, A, T, H, dh)
        y = self.drop(self.proj(y.reshape(B, A, T, D)))  # (B, A, T, D)
        return y, weights[..., :-1].reshape(B, H, A, T, A, L), weights[..., -1]

    def _allowed(self, A: int, T: int, device: torch.device) -> Tensor:
        lags = torch.arange(1, self.max_lag + 1, device=device)  # (L,)
        in_series = torch.arange(T, device=device)[:, None] >= lags  # (T, L): t - l >= 0
        other = torch.ones(A, A, dtype=torch.bool, device=device)
        if not self.self_attend:
            other = ~torch.eye(A, dtype=torch.bool, device=device)  # (A, A)
        return other[:, None, :, None] & in_series[None, :, None, :]  # (A, T, A, L)


class LaggedBlock(nn.Module):
    def __init__(self, cfg: CrossAssetConfig) -> None:
        super().__init__()
        self.ln_q = nn.LayerNorm(cfg.d_model)
        self.ln_kv = nn.LayerNorm(cfg.d_model)
        self.attn = LaggedCrossAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg.d_model, cfg.ff_mult, cfg.dropout)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        y, w, w_null = self.attn(self.ln_q(h), self.ln_kv(h))  # (B, A, T, D), (B, H, A, T, A, L), (B, H, A, T)
        h = h + y
        h = h + self.ff(self.ln2(h))  # (B, A, T, D)
        return h, w, w_null


# --- the model -----------------------------------------------------------------------------------


@register_family("crossasset", CrossAssetConfig)
class CrossAssetModel(nn.Module):
    def __init__(self, config: CrossAssetConfig) -> None:
        super().__init__()
        self.config = config
        self.temporal = TemporalEncoder(config)
        self.pool = AttentionPool(config) if config.pooling == "attention" else None
        block = LaggedBlock if config.lagged else Block
        self.cross = nn.ModuleList(block(config) for _ in range(config.n_cross_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.returns_head = nn.Linear(config.d_model, 1)
        self.direction_head = nn.Linear(config.d_model, config.n_classes)
        self.portfolio_head = nn.Linear(config.d_model, 1)

    def forward(self, x: Tensor, need_weights: bool = False) -> dict[str, Tensor]:
        """``x``: (B, A, T, F) with 1 <= T <= window, assets in ``config.assets`` order.

        Returns ``returns`` (B, A), ``direction_logits`` (B, A, C), ``portfolio_weights`` (B, A), all for
        the newest step; the lagged variant adds ``returns_seq`` (B, A, T) and ``direction_logits_seq``
        (B, A, T, C) for every step. With ``need_weights``: ``cross_attention`` (B, H, A, A) (query asset
        × key asset; in the lagged variant the newest step's weights summed over lags, rows then sum to 1
        minus the null weight), ``temporal_attention`` (B, A, H, T, T), and per variant ``lag_attention``
        (B, H, A, T, A, L) + ``lag_attention_null`` (B, H, A, T) or ``pool_attention`` (B, A, H, T).
        Weights are those of the last cross layer.
        """
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != len(cfg.assets) or x.shape[3] != cfg.n_features:
            raise ValueError(
                f"expected (B, A={len(cfg.assets)}, T, F={cfg.n_features}), got {tuple(x.shape)}"
            )
        if not 1 <= x.shape[2] <= cfg.window:
            raise ValueError(f"{x.shape[2]} steps, window allows 1..{cfg.window}")

        h, temporal_w = self.temporal(x)  # (B, A, T, D), (B, A, H, T, T)
        weights: dict[str, Tensor] = {"temporal_attention": temporal_w}
        if cfg.lagged:
            for block in self.cross:
                h, lag_w, null_w = block(h)  # (B, A, T, D), (B, H, A, T, A, L), (B, H, A, T)
            weights |= {
                "lag_attention": lag_w,
                "lag_attention_null": null_w,
                "cross_attention": lag_w[:, :, :, -1].sum(-1),  # (B, H, A, A)
            }
            seq = self.ln_f(h)  # (B, A, T, D)
            tokens = seq[:, :, -1]  # (B, A, D)
        else:
            if self.pool is None:
                tokens = h[:, :, -1]  # (B, A, D)
            else:
                tokens, weights["pool_attention"] = self.pool(h)  # (B, A, D), (B, A, H, T)
            allowed = None if cfg.self_attend else ~torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
            for block in self.cross:
                tokens, weights["cross_attention"] = block(tokens, allowed)  # (B, A, D), (B, H, A, A)
            tokens = self.ln_f(tokens)

        out = {"portfolio_weights": self._portfolio(self.portfolio_head(tokens).squeeze(-1))}  # (B, A)
        if cfg.lagged:
            out["returns_seq"] = self.returns_head(seq).squeeze(-1)  # (B, A, T)
            out["direction_logits_seq"] = self.direction_head(seq)  # (B, A, T, C)
            out["returns"] = out["returns_seq"][:, :, -1]  # (B, A), identical to the last step
            out["direction_logits"] = out["direction_logits_seq"][:, :, -1]  # (B, A, C)
        else:
            out["returns"] = self.returns_head(tokens).squeeze(-1)  # (B, A)
            out["direction_logits"] = self.direction_head(tokens)  # (B, A, C)
        if need_weights:
            out |= weights
        return out

    def _portfolio(self, score: Tensor) -> Tensor:
        if self.config.portfolio == "long_only":
            return score.softmax(dim=-1)  # (B, A): w >= 0, Σw = 1
        w = torch.tanh(score)  # (B, A) in (-1, 1)
        return w / w.abs().sum(dim=-1, keepdim=True).clamp(min=1.0)  # Σ|w| <= 1
