"""Multi-venue LOB forecaster: a window of books on several venues and pairs in, one book's future out.

Input: (B, T, F), T = ``window`` grid steps (120), F = venues x pairs x levels x (bid, ask) x (px, sz)
(3 x 4 x 5 x 2 x 2 = 240). Output: (B, H, 4 * levels), the target (venue, pair) book's 20 features at each of
the H horizons (12, 24, 36, 60 grid steps ahead).

    x (B, T, F) ─► CompoundEmbedding ─► + time embedding ─► encoder blocks ─► memory (B, T, D)
    horizon queries (H, D) ─► decoder blocks (self-attention, cross-attention to memory) ─► head ─► (B, H, 20)

Column layout. ``python -m bot books`` writes one CSV row per (ts_ms, venue, symbol) with the book columns
of ``bot.ring.lob_columns``: bid_px_1, bid_sz_1, ..., bid_px_L, bid_sz_L, ask_px_1, ask_sz_1, ..., ask_px_L,
ask_sz_L. One input row of this model is the rows of one ts_ms laid side by side: one block of 4 * levels
columns per (venue, pair), blocks in the order ``venues x pairs`` (venue-major), each block in that same
column order (its first ``levels`` levels if the CSV has more). ``feature_columns`` lists (venue, pair,
column) for every input column, which is exactly what a pivot of the CSV on (venue, symbol) needs;
``feature_index`` gives one column's position. Blank cells (a thin book) and a book with no row at that
ts_ms are NaN: each missing value is fed as a learned "missing" token, never as a number.

Price parametrisation assumed by the structural regulariser (the data pipeline does the normalisation and
records it in the checkpoint's ``extra``): the target's prices are offsets from the target book's mid at the
last input step, in basis points, ``(px - mid_now) / mid_now * 1e4``, so best bid < 0 < best ask in a sane
book. What the regulariser needs is weaker: every price column of the target book goes through the same
increasing affine map. A per-column z-score breaks this (level 2 could then sit "above" level 1), so do not
standardise price columns one by one. Sizes are free (log1p then any affine map is fine).

No causal masks: every input step is at or before "now", so bidirectional attention over the window sees no
future; the decoder's queries are learned horizon embeddings, not earlier outputs, so they may look at each
other too (the 60-step forecast can borrow from the 12-step one without any leakage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import register_family

SIDES = ("bid", "ask")
FIELDS = ("px", "sz")


@dataclass(frozen=True)
class LOBForecastConfig:
    """The whole interface of the model: it is built from this and nothing else."""

    venues: tuple[str, ...] = ("bybit_linear", "binance_usdm", "binance_spot")
    pairs: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
    levels: int = 5
    window: int = 120  # T: input grid steps
    target_venue: int = 0  # index into venues
    target_pair: int = 0  # index into pairs
    horizons: tuple[int, ...] = (12, 24, 36, 60)  # grid steps ahead, one decoder query each
    d_embed: int = 16  # width of one scalar's token
    d_model: int = 64
    n_heads: int = 4
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        sizes = (self.levels, self.window, self.d_embed, self.d_model, self.n_heads, self.d_ff, *self.horizons)
        if any(not isinstance(n, int) or n < 1 for n in sizes):
            raise ValueError(f"sizes must be positive ints: {self}")
        if self.n_encoder_layers < 1 or self.n_decoder_layers < 1:
            raise ValueError("need at least one encoder and one decoder layer")
        if not self.venues or not self.pairs:
            raise ValueError("need at least one venue and one pair")
        if len(set(self.venues)) != len(self.venues) or len(set(self.pairs)) != len(self.pairs):
            raise ValueError(f"duplicate venue or pair names: {self.venues}, {self.pairs}")
        if not 0 <= self.target_venue < len(self.venues) or not 0 <= self.target_pair < len(self.pairs):
            raise ValueError(f"target (venue {self.target_venue}, pair {self.target_pair}) is outside "
                             f"{len(self.venues)} venues x {len(self.pairs)} pairs")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def block_width(self) -> int:
        """Columns per (venue, pair) book: levels x (bid, ask) x (px, sz)."""
        return 4 * self.levels

    @property
    def n_features(self) -> int:
        return len(self.venues) * len(self.pairs) * self.block_width

    @property
    def n_targets(self) -> int:
        return self.block_width


# -- column layout ------------------------------------------------------------------------------------


def book_columns(levels: int) -> list[str]:
    """Names inside one book block, in column order: bid_px_1, bid_sz_1, ..., ask_px_1, ask_sz_1, ..."""
    return [f"{side}_{field}_{level}" for side in SIDES for level in range(1, levels + 1) for field in FIELDS]


def feature_index(config: LOBForecastConfig, venue: str | int, pair: str | int, level: int, side: str,
                  field: str) -> int:
    """Input column of (venue, pair, level, side, field); venue and pair by name or index, level from 1."""
    v = _position(config.venues, venue, "venue")
    p = _position(config.pairs, pair, "pair")
    if not 1 <= level <= config.levels:
        raise ValueError(f"level must be in 1..{config.levels}, got {level}")
    s = _position(SIDES, side, "side")
    f = _position(FIELDS, field, "field")
    block = v * len(config.pairs) + p
    return block * config.block_width + s * 2 * config.levels + (level - 1) * 2 + f


def feature_columns(config: LOBForecastConfig) -> list[tuple[str, str, str]]:
    """(venue, pair, book column name) for every input column, in order: map them onto a CSV header."""
    return [(v, p, name) for v in config.venues for p in config.pairs for name in book_columns(config.levels)]


def target_columns(config: LOBForecastConfig) -> slice:
    """The input columns of the target book (the same 20 features the model predicts, same order)."""
    start = feature_index(config, config.target_venue, config.target_pair, 1, "bid", "px")
    return slice(start, start + config.block_width)


def _position(names: tuple[str, ...], key: str | int, what: str) -> int:
    if isinstance(key, int):
        if not 0 <= key < len(names):
            raise ValueError(f"{what} index {key} is outside 0..{len(names) - 1}")
        return key
    if key not in names:
        raise ValueError(f"unknown {what} {key!r}; expected one of {names}")
    return names.index(key)


def _layout_ids(config: LOBForecastConfig) -> dict[str, torch.Tensor]:
    """For every input column, its level / side / field / venue / pair id, each a LongTensor (F,)."""
    ids: dict[str, list[int]] = {"level": [], "side": [], "field": [], "venue": [], "pair": []}
    for v in range(len(config.venues)):
        for p in range(len(config.pairs)):
            for s in range(2):
                for level in range(config.levels):
                    for f in range(2):
                        for key, value in (("level", level), ("side", s), ("field", f), ("venue", v), ("pair", p)):
                            ids[key].append(value)
    return {k: torch.tensor(v, dtype=torch.long) for k, v in ids.items()}


# -- blocks -------------------------------------------------------------------------------------------


class CompoundEmbedding(nn.Module):
    """Each scalar becomes a token: value projection + level + side + field + venue + pair embeddings;
    a time step's F tokens then become one d_model vector through a linear over their concatenation.

    Aggregation choice. Adding embeddings and then pooling linearly throws the embeddings away: the mean of
    (x_f w + e_f) is w * mean(x) + const (which column held which value is lost), and a linear over the
    concatenation of (x_f w + e_f) is a plain linear over the raw x. So every token first goes through a
    small shared MLP, where the embeddings decide how its value is read (a size is not a price offset,
    level 5 is not level 1). Then a linear over the concatenation (F x d_embed -> d_model) gives every
    column its own read-out weights. The alternative, a mean over the F tokens (DeepSets), dilutes each
    column's signal by 1/F: on the 8-sample memorisation test it sat on the predict-the-mean plateau for
    2 of 4 seeds after 300 steps, where the concatenation fitted all 4 (loss < 0.002). The price is
    F x d_embed x d_model weights in ``proj`` (240 x 16 x 64 = 246k, about half the default model) and a
    fixed F; the config fixes F anyway.

    A missing value (NaN: a thin book, a venue down) is not a number: its value projection is replaced by
    a learned ``missing`` vector, so the model sees "absent" rather than a fake 0.
    Cost: activations of B x T x F x d_embed, e.g. 32 x 120 x 240 x 16 floats (59 MB) per tensor.
    """

    level_ids: torch.Tensor  # buffers (F,), declared for the type checker
    side_ids: torch.Tensor
    field_ids: torch.Tensor
    venue_ids: torch.Tensor
    pair_ids: torch.Tensor

    def __init__(self, config: LOBForecastConfig) -> None:
        super().__init__()
        e = config.d_embed
        self.value = nn.Linear(1, e)
        self.missing = nn.Parameter(torch.randn(e))  # N(0, 1) like the embeddings
        self.level = nn.Embedding(config.levels, e)
        self.side = nn.Embedding(2, e)
        self.field = nn.Embedding(2, e)
        self.venue = nn.Embedding(len(config.venues), e)
        self.pair = nn.Embedding(len(config.pairs), e)
        for key, ids in _layout_ids(config).items():  # derived from the config, so not saved
            self.register_buffer(f"{key}_ids", ids, persistent=False)
        self.norm = nn.LayerNorm(e)
        self.mlp = nn.Linear(e, e)
        self.proj = nn.Linear(config.n_features * e, config.d_model)

    def identity(self) -> torch.Tensor:
        """What every column is, as one vector each: (F, d_embed)."""
        return (self.level(self.level_ids) + self.side(self.side_ids) + self.field(self.field_ids)
                + self.venue(self.venue_ids) + self.pair(self.pair_ids))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, F), NaN where a value is missing
        present = ~torch.isnan(x).unsqueeze(-1)  # (B, T, F, 1)
        values = self.value(torch.where(present, x.unsqueeze(-1), 0.0))  # (B, T, F, E)
        tokens = torch.where(present, values, self.missing) + self.identity()  # (B, T, F, E)
        tokens = F.gelu(self.mlp(self.norm(tokens)))  # (B, T, F, E)
        return self.proj(tokens.flatten(2))  # (B, T, D)


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` (self-attention when they are the same tensor)."""

    def __init__(self, config: LOBForecastConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.query = nn.Linear(config.d_model, config.d_model)
        self.key_value = nn.Linear(config.d_model, 2 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # x: (B, Lq, D), context: (B, Lk, D)
        b, lq, d = x.shape
        h = self.n_heads
        q = self.query(x).view(b, lq, h, d // h).transpose(1, 2)  # (B, h, Lq, D/h)
        k, v = self.key_value(context).split(d, dim=-1)  # (B, Lk, D) each
        k = k.view(b, -1, h, d // h).transpose(1, 2)  # (B, h, Lk, D/h)
        v = v.view(b, -1, h, d // h).transpose(1, 2)  # (B, h, Lk, D/h)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(b, lq, d)  # (B, Lq, D)
        return self.out(y)


class FeedForward(nn.Module):
    def __init__(self, config: LOBForecastConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_ff)
        self.down = nn.Linear(config.d_ff, config.d_model)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down(F.gelu(self.up(x))))  # (B, L, D)


class EncoderBlock(nn.Module):
    """Pre-norm: x + attention(x over x), then x + feed-forward."""

    def __init__(self, config: LOBForecastConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.ff = FeedForward(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D)
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h))  # (B, T, D)
        return x + self.ff(self.norm2(x))  # (B, T, D)


class DecoderBlock(nn.Module):
    """Pre-norm: queries attend to each other, then to the encoded window, then feed-forward."""

    def __init__(self, config: LOBForecastConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.self_attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.cross_attn = Attention(config)
        self.norm3 = nn.LayerNorm(config.d_model)
        self.ff = FeedForward(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, q: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        # q: (B, H, D), memory: (B, T, D)
        h = self.norm1(q)
        q = q + self.drop(self.self_attn(h, h))  # (B, H, D)
        q = q + self.drop(self.cross_attn(self.norm2(q), memory))  # (B, H, D)
        return q + self.ff(self.norm3(q))  # (B, H, D)


@register_family("lobforecast", LOBForecastConfig)
class LOBForecaster(nn.Module):
    """forward(x: (B, window, n_features)) -> (B, len(horizons), 4 * levels) in the target's normalised space."""

    steps: torch.Tensor  # buffers, declared for the type checker
    horizon_ids: torch.Tensor

    def __init__(self, config: LOBForecastConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = CompoundEmbedding(config)
        self.time = nn.Embedding(config.window, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(config) for _ in range(config.n_encoder_layers))
        self.encoder_norm = nn.LayerNorm(config.d_model)
        self.horizon = nn.Embedding(len(config.horizons), config.d_model)
        self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.n_decoder_layers))
        self.head_norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.n_targets)
        self.register_buffer("steps", torch.arange(config.window), persistent=False)
        self.register_buffer("horizon_ids", torch.arange(len(config.horizons)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.dim() != 3 or x.shape[1:] != (cfg.window, cfg.n_features):
            raise ValueError(f"expected input (B, {cfg.window}, {cfg.n_features}) = (batch, time, features), "
                             f"got {tuple(x.shape)}")
        # x: (B, T, F)
        h = self.drop(self.embed(x) + self.time(self.steps))  # (B, T, D)
        for block in self.encoder:
            h = block(h)  # (B, T, D)
        memory = self.encoder_norm(h)  # (B, T, D)
        q = self.horizon(self.horizon_ids).expand(x.shape[0], -1, -1)  # (B, H, D)
        for block in self.decoder:
            q = block(q, memory)  # (B, H, D)
        return self.head(self.head_norm(q))  # (B, H, 4 * levels)

    @torch.no_grad()
    def inference(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``forward`` of this model in eval mode, frozen, for serving: the same operations in the same order
        on the same values (so the same bits), without what a small model pays per call for nothing. What
        does not depend on the input is computed once: the columns' identity embeddings, the time
        embedding, the horizon queries and, per batch size, the first decoder block's self-attention over
        those queries (they are the same for every input). No module dispatch (the functional calls the
        modules make, on their own parameters: matmul picks its kernel by whether an operand requires
        grad, so no detached copies), no dropout (the identity in eval mode). Valid while the parameters
        stay as they are now (``bot.heads`` rebuilds it when they change); call it under inference_mode.
        """
        if self.training:
            raise ValueError("inference() is for a model in eval mode")
        cfg = self.config
        embed = self.embed
        identity = embed.identity()  # (F, E)
        time_emb = self.time(self.steps)  # (T, D)
        queries = self.horizon(self.horizon_ids)  # (H, D)
        first, *rest = self.decoder
        assert isinstance(first, DecoderBlock)
        starts: dict[int, torch.Tensor] = {}  # batch size -> the first decoder block's queries after self-attention

        def run(x: torch.Tensor) -> torch.Tensor:
            if x.dim() != 3 or x.shape[1:] != (cfg.window, cfg.n_features):
                raise ValueError(f"expected input (B, {cfg.window}, {cfg.n_features}) = (batch, time, features), "
                                 f"got {tuple(x.shape)}")
            present = ~torch.isnan(x).unsqueeze(-1)  # CompoundEmbedding
            values = _linear(embed.value, torch.where(present, x.unsqueeze(-1), 0.0))
            tokens = torch.where(present, values, embed.missing) + identity
            tokens = F.gelu(_linear(embed.mlp, _norm(embed.norm, tokens)))
            h = _linear(embed.proj, tokens.flatten(2)) + time_emb
            for block in self.encoder:
                assert isinstance(block, EncoderBlock)
                n = _norm(block.norm1, h)
                h = h + _attend(block.attn, n, n)
                h = h + _feed(block.ff, _norm(block.norm2, h))
            memory = _norm(self.encoder_norm, h)
            b = x.shape[0]
            q = starts.get(b)
            if q is None:
                q0 = queries.expand(b, -1, -1)
                n = _norm(first.norm1, q0)
                q = starts[b] = q0 + _attend(first.self_attn, n, n)
            q = q + _attend(first.cross_attn, _norm(first.norm2, q), memory)
            q = q + _feed(first.ff, _norm(first.norm3, q))
            for block in rest:
                assert isinstance(block, DecoderBlock)
                n = _norm(block.norm1, q)
                q = q + _attend(block.self_attn, n, n)
                q = q + _attend(block.cross_attn, _norm(block.norm2, q), memory)
                q = q + _feed(block.ff, _norm(block.norm3, q))
            return _linear(self.head, _norm(self.head_norm, q))

        return run


# -- the functional calls of the blocks above (eval mode), for LOBForecaster.inference -------------------


def _linear(m: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, m.weight, m.bias)


def _norm(m: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)


def _attend(a: Attention, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    b, lq, d = x.shape
    h = a.n_heads
    q = _linear(a.query, x).view(b, lq, h, d // h).transpose(1, 2)
    k, v = _linear(a.key_value, context).split(d, dim=-1)
    k = k.view(b, -1, h, d // h).transpose(1, 2)
    v = v.view(b, -1, h, d // h).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
    return _linear(a.out, y.transpose(1, 2).reshape(b, lq, d))


def _feed(f: FeedForward, x: torch.Tensor) -> torch.Tensor:
    return _linear(f.down, F.gelu(_linear(f.up, x)))


# -- loss ---------------------------------------------------------------------------------------------


def structural_penalty(pred: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Mean over books of the summed hinge violations of a book's price order (0 for a well-ordered book).

    ``pred``: (..., 4 * levels) in ``book_columns`` order, prices in one increasing affine space (see module
    docstring). Violations: best bid above best ask (crossed), a deeper bid above a shallower one, a deeper
    ask below a shallower one. With ``margin`` = 0 a locked book (bid == ask) or two equal levels cost
    nothing; a positive margin (in the price space's units) asks for that much room.
    """
    if pred.shape[-1] % 4:
        raise ValueError(f"last dim must be 4 * levels, got {pred.shape[-1]}")
    levels = pred.shape[-1] // 4
    book = pred.reshape(*pred.shape[:-1], 2, levels, 2)  # (..., side, level, field)
    bid_px = book[..., 0, :, 0]  # (..., L), best first
    ask_px = book[..., 1, :, 0]  # (..., L), best first
    crossed = F.relu(bid_px[..., 0] - ask_px[..., 0] + margin)  # (...)
    bids_misordered = F.relu(bid_px[..., 1:] - bid_px[..., :-1] + margin).sum(dim=-1)  # (...)
    asks_misordered = F.relu(ask_px[..., :-1] - ask_px[..., 1:] + margin).sum(dim=-1)  # (...)
    return (crossed + bids_misordered + asks_misordered).mean()


def loss_fn(pred: torch.Tensor, target: torch.Tensor, penalty_weight: float = 0.01) -> torch.Tensor:
    """MSE to the target books + ``penalty_weight`` x ``structural_penalty(pred)``; both (B, H, 4 * levels)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return F.mse_loss(pred, target) + penalty_weight * structural_penalty(pred)
