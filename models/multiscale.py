"""Multi-scale attention over kline resolutions (1m, 5m, 15m, 1h by default).

One encoder per resolution reads that resolution's recent window; then the newest bar of every scale asks
all scales' windows what matters now, and a gated, softmax-weighted fusion makes one vector from which the
heads predict returns at three horizons and a 3-class direction::

    xs[s]: (B, T_s, F)  for each scale s                      F = kline features (models/features.py)
      │ ScaleEncoder[s]: Linear(F, D) + learnable positions, n_layers × pre-LN self-attention
      ▼
    h[s]:  (B, T_s, D)
      │ CrossScaleAttention: queries = newest step of every scale         (B, S, D)
      │                      keys/values = all steps of all scales         (B, ΣT_s, D)
      │                      (+ a learnable scale embedding on both, so a key knows its resolution)
      ▼
    z:     (B, S, D)   one token per scale, informed by every scale
      │ GatedScaleFusion: importance = softmax_s(prior_s + score(z_s))    (B, S)  -> "scale_importance"
      │                   fused = Σ_s importance_s · sigmoid(gate(z_s)) ⊙ value(z_s)
      ▼
    fused: (B, D) ──► returns (B, 3) short/medium/long horizon ──► direction_logits (B, 3)

Why this shape: a 1h bar says where the trend is, a 1m bar where the price is; letting each scale's newest
step query every scale (rather than concatenating everything into one long sequence) keeps the cost at
S queries × ΣT keys and gives an attention map that reads as "which resolution did the 1m view look at".
Self-attention inside a window is bidirectional: the whole window lies in the past of the prediction time.
Windows may be shorter than configured (start-up): positions are aligned to the end, so the newest bar
always gets the last positional embedding. The caller must pass only *closed* bars of each resolution.

Inputs are raw model-ready floats (standardised features); labels and training live elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.checkpoint import register_family

__all__ = ["MultiScaleConfig", "MultiScaleModel"]


@dataclass(frozen=True)
class MultiScaleConfig:
    """The whole interface of the family; stored in checkpoints as the model args."""

    scales: tuple[str, ...] = ("1m", "5m", "15m", "1h")
    windows: tuple[int, ...] = (60, 48, 32, 24)  # bars per scale: 1 h, 4 h, 8 h, 1 day
    n_features: int = 12  # models.features.n_features() with its defaults
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2  # self-attention blocks per scale encoder
    ff_mult: int = 4
    dropout: float = 0.1
    horizons: tuple[int, ...] = (5, 60, 240)  # minutes; metadata for the label builder, one output each
    n_classes: int = 3  # direction: down / flat / up
    importance: str = "input"  # "input": per-sample weights (B, S); "global": one learned vector

    def __post_init__(self) -> None:
        for name in ("scales", "windows", "horizons"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.scales or len(set(self.scales)) != len(self.scales):
            raise ValueError(f"scales must be non-empty and unique, got {self.scales}")
        if len(self.windows) != len(self.scales) or any(w < 1 for w in self.windows):
            raise ValueError(f"windows {self.windows} must give one positive length per scale {self.scales}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not self.horizons or self.n_classes < 2 or self.n_features < 1 or self.n_layers < 1:
            raise ValueError("need >= 1 horizon, >= 2 classes, >= 1 feature and >= 1 layer")
        if self.importance not in ("input", "global"):
            raise ValueError(f"importance must be 'input' or 'global', got {self.importance!r}")


# --- blocks --------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention that returns its weights: queries from one sequence, keys/values from another."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, xq: Tensor, xkv: Tensor) -> tuple[Tensor, Tensor]:
        B, Tq, D = xq.shape
        Tk, H = xkv.shape[1], self.n_heads
        q = self.q(xq).view(B, Tq, H, D // H).transpose(1, 2)  # (B, H, Tq, dh)
        k, v = self.kv(xkv).view(B, Tk, 2, H, D // H).permute(2, 0, 3, 1, 4)  # 2 × (B, H, Tk, dh)
        weights = (q @ k.transpose(-2, -1) / math.sqrt(D // H)).softmax(dim=-1)  # (B, H, Tq, Tk)
        y = self.drop(weights) @ v  # (B, H, Tq, dh)
        y = y.transpose(1, 2).reshape(B, Tq, D)  # (B, Tq, D)
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


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + ff(ln(x))."""

    def __init__(self, cfg: MultiScaleConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg.d_model, cfg.ff_mult, cfg.dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a = self.ln1(x)  # (B, T, D)
        y, w = self.attn(a, a)  # (B, T, D), (B, H, T, T)
        x = x + y
        x = x + self.ff(self.ln2(x))
        return x, w


class ScaleEncoder(nn.Module):
    """One resolution's window -> contextualised steps, with learnable end-aligned positions."""

    def __init__(self, cfg: MultiScaleConfig, window: int) -> None:
        super().__init__()
        self.embed = nn.Linear(cfg.n_features, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(window, cfg.d_model) * 0.02)  # (W, D), row W-1 = newest bar
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        T = x.shape[1]
        h = self.embed(x) + self.pos[-T:]  # (B, T, D)
        w = torch.empty(0)
        for block in self.blocks:
            h, w = block(h)  # keep the last layer's weights (B, H, T, T)
        return self.ln(h), w


class CrossScaleAttention(nn.Module):
    """Each scale's newest step (query) attends to every step of every scale (keys/values)."""

    def __init__(self, cfg: MultiScaleConfig) -> None:
        super().__init__()
        self.scale_emb = nn.Parameter(torch.randn(len(cfg.scales), cfg.d_model) * 0.02)  # (S, D)
        self.ln_q = nn.LayerNorm(cfg.d_model)
        self.ln_kv = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg.d_model, cfg.ff_mult, cfg.dropout)

    def forward(self, seqs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        latest = torch.stack([h[:, -1] for h in seqs], dim=1) + self.scale_emb  # (B, S, D)
        memory = torch.cat([h + self.scale_emb[s] for s, h in enumerate(seqs)], dim=1)  # (B, ΣT, D)
        y, w = self.attn(self.ln_q(latest), self.ln_kv(memory))  # (B, S, D), (B, H, S, ΣT)
        z = latest + y
        z = z + self.ff(self.ln2(z))  # (B, S, D)
        return z, w


class GatedScaleFusion(nn.Module):
    """Softmax scale weights (learned prior + optional per-sample score) times a sigmoid-gated value."""

    def __init__(self, cfg: MultiScaleConfig) -> None:
        super().__init__()
        self.prior = nn.Parameter(torch.zeros(len(cfg.scales)))  # (S,) equal weights at start
        self.score = nn.Linear(cfg.d_model, 1) if cfg.importance == "input" else None
        self.gate = nn.Linear(cfg.d_model, cfg.d_model)
        self.value = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.prior.expand(z.shape[0], -1)  # (B, S)
        if self.score is not None:
            logits = logits + self.score(z).squeeze(-1)  # (B, S)
        importance = logits.softmax(dim=-1)  # (B, S)
        gated = torch.sigmoid(self.gate(z)) * self.value(z)  # (B, S, D)
        fused = (importance.unsqueeze(-1) * gated).sum(dim=1)  # (B, D)
        return fused, importance


# --- the model -----------------------------------------------------------------------------------


@register_family("multiscale", MultiScaleConfig)
class MultiScaleModel(nn.Module):
    def __init__(self, config: MultiScaleConfig) -> None:
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleList(ScaleEncoder(config, w) for w in config.windows)
        self.cross = CrossScaleAttention(config)
        self.fusion = GatedScaleFusion(config)
        self.ln_f = nn.LayerNorm(config.d_model)
        self.returns_head = nn.Linear(config.d_model, len(config.horizons))
        self.direction_head = nn.Linear(config.d_model, config.n_classes)

    def forward(
        self, xs: Mapping[str, Tensor] | Sequence[Tensor], need_weights: bool = False
    ) -> dict[str, Tensor]:
        """``xs``: scale name -> (B, T_s, F), or a sequence in ``config.scales`` order; 1 <= T_s <= window.

        Returns ``returns`` (B, n_horizons), ``direction_logits`` (B, n_classes), ``scale_importance``
        (B, S); with ``need_weights`` also ``cross_attention`` (B, H, S, ΣT_s) (keys in scale order, oldest
        first), ``cross_attention_by_scale`` (B, S, S) (head-averaged mass each query scale puts on each
        key scale; rows sum to 1) and ``self_attention/<scale>`` (B, H, T_s, T_s) of each encoder's last
        layer.
        """
        seqs = self._check(xs)
        encoded = [enc(x) for enc, x in zip(self.encoders, seqs, strict=True)]
        hs = [h for h, _ in encoded]  # S × (B, T_s, D)
        z, cross_w = self.cross(hs)  # (B, S, D), (B, H, S, ΣT)
        fused, importance = self.fusion(z)  # (B, D), (B, S)
        fused = self.ln_f(fused)
        out = {
            "returns": self.returns_head(fused),  # (B, n_horizons)
            "direction_logits": self.direction_head(fused),  # (B, n_classes)
            "scale_importance": importance,  # (B, S)
        }
        if need_weights:
            lengths = [h.shape[1] for h in hs]
            per_scale = cross_w.mean(dim=1).split(lengths, dim=-1)  # S × (B, S, T_s)
            out["cross_attention"] = cross_w
            out["cross_attention_by_scale"] = torch.stack([p.sum(-1) for p in per_scale], dim=-1)  # (B, S, S)
            for name, (_, w) in zip(self.config.scales, encoded, strict=True):
                out[f"self_attention/{name}"] = w
        return out

    def _check(self, xs: Mapping[str, Tensor] | Sequence[Tensor]) -> list[Tensor]:
        cfg = self.config
        if isinstance(xs, Mapping):
            missing = [s for s in cfg.scales if s not in xs]
            extra = sorted(set(xs) - set(cfg.scales))
            if missing or extra:
                raise ValueError(f"scales do not match config {cfg.scales}: missing {missing}, unexpected {extra}")
            seqs = [xs[s] for s in cfg.scales]
        else:
            seqs = list(xs)
            if len(seqs) != len(cfg.scales):
                raise ValueError(f"got {len(seqs)} inputs for {len(cfg.scales)} scales {cfg.scales}")
        batch = seqs[0].shape[0] if seqs[0].dim() == 3 else -1
        for name, window, x in zip(cfg.scales, cfg.windows, seqs, strict=True):
            if x.dim() != 3 or x.shape[0] != batch or x.shape[2] != cfg.n_features:
                raise ValueError(
                    f"scale {name}: expected (B={batch}, T, F={cfg.n_features}), got {tuple(x.shape)}"
                )
            if not 1 <= x.shape[1] <= window:
                raise ValueError(f"scale {name}: {x.shape[1]} steps, window allows 1..{window}")
        return seqs
