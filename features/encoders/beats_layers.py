"""BEATs' transformer (Chen et al., 2022): convolutional positional embedding, then post-LN (optionally DeepNorm) or
pre-LN layers whose self-attention adds a gated relative position bias (as in WavLM).

Module and parameter names follow the official BEATs code, so an official state dict loads unchanged: the
positional convolution is ``pos_conv.0`` with weight-norm parameters ``weight_g``/``weight_v``, and one relative
position embedding is shared by every layer (its state-dict key repeats under each layer's ``self_attn``).
Tensors are batch-first here (the official code runs time-first); shapes: B batch, L tokens, D model width,
H heads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = ("relu", "gelu", "gelu_fast", "gelu_accurate", "tanh", "linear", "glu")


@dataclass(frozen=True)
class BeatsConfig:
    """The official BEATs config fields. Defaults are those of the official config class, so that a checkpoint's
    ``cfg`` means here what it means there, except ``input_patch_size`` (16 in every published model)."""

    input_patch_size: int = 16
    embed_dim: int = 512  # patch embedding width (projected to encoder_embed_dim if different)
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0  # gradient scale applied before each layer (training only)
    layer_norm_first: bool = False  # pre-LN layers (else post-LN)
    deep_norm: bool = False  # post-LN with residuals scaled by (2 * layers) ** 0.25
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128  # kernel of the convolutional positional embedding
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False  # gate the relative position bias by the query
    finetuned_model: bool = False  # has the AudioSet ``predictor`` head
    predictor_dropout: float = 0.1
    predictor_class: int = 527

    def __post_init__(self) -> None:
        positive = ("input_patch_size", "embed_dim", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                    "encoder_attention_heads", "conv_pos", "conv_pos_groups", "num_buckets", "max_distance",
                    "predictor_class")
        bad = [f"{k}={getattr(self, k)!r}" for k in positive if not getattr(self, k) > 0]
        if bad:
            raise ValueError(f"Invalid BEATs config: {', '.join(bad)} (expected positive)")
        if self.encoder_embed_dim % self.encoder_attention_heads or self.encoder_embed_dim % self.conv_pos_groups:
            raise ValueError(f"Invalid BEATs config: encoder_embed_dim {self.encoder_embed_dim} must be divisible by "
                             f"encoder_attention_heads ({self.encoder_attention_heads}) and conv_pos_groups "
                             f"({self.conv_pos_groups})")
        if self.activation_fn not in ACTIVATIONS:
            raise ValueError(f"Invalid BEATs config: activation_fn {self.activation_fn!r}; valid: {list(ACTIVATIONS)}")
        if self.deep_norm and self.layer_norm_first:
            raise ValueError("Invalid BEATs config: deep_norm and layer_norm_first exclude each other")
        if self.relative_position_embedding and self.num_buckets < 4:
            raise ValueError(f"Invalid BEATs config: num_buckets {self.num_buckets} (expected >= 4)")

    @classmethod
    def from_dict(cls, cfg: dict[str, object]) -> "BeatsConfig":
        """Build from a config dict; an unknown key is a ValueError naming it and the valid ones."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(cfg) - set(names))
        if unknown:
            raise ValueError(f"Unknown BEATs config keys {unknown}; valid: {names}")
        return cls(**cfg)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward, gradient times ``scale`` backward (BEATs' layer-wise gradient decay)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device: torch.device) -> Tensor:
    """Bidirectional T5-style buckets of key - query offsets, (L, L) long: half the buckets per direction, exact
    below a quarter of them, log-spaced up to ``max_distance`` beyond (same float32 arithmetic as BEATs)."""
    pos = torch.arange(length, device=device)
    offset = pos[None, :] - pos[:, None]  # (L, L): key position - query position
    half = num_buckets // 2
    exact = half // 2
    buckets = (offset > 0).long() * half
    distance = offset.abs()
    log_part = (torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact)
                * (half - exact)).long()
    far = (exact + log_part).clamp(max=half - 1)
    return buckets + torch.where(distance < exact, distance, far)


def activation(name: str, x: Tensor) -> Tensor:
    """The FFN activations of the BEATs config (``glu`` is applied inside :class:`GluLinear`)."""
    if name == "relu":
        return F.relu(x)
    if name == "gelu":
        return F.gelu(x.float()).type_as(x)
    if name in ("gelu_fast", "gelu_accurate"):
        return F.gelu(x, approximate="tanh")
    if name == "tanh":
        return torch.tanh(x)
    return x  # "linear", "glu"


class GluLinear(nn.Module):
    """Linear to 2 x ``out_dim``, first half gated by swish of the second: (..., in_dim) -> (..., out_dim)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.linear = nn.Linear(in_dim, 2 * out_dim)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.linear(x).split(self.out_dim, dim=-1)
        return a * F.silu(gate)


class WeightNormConv1d(nn.Module):
    """Grouped conv1d whose weight is ``weight_v`` scaled to norm ``weight_g`` per kernel tap (weight norm over
    dim 2, as the official checkpoints store it). x (B, D, L) -> (B, D, L + 1 - K % 2)."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.padding, self.groups = kernel_size // 2, groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class MultiheadAttention(nn.Module):
    """Self-attention with an optional (gated) relative position bias: x (B, L, D) -> (B, L, D)."""

    def __init__(self, cfg: BeatsConfig, relative_attention_bias: nn.Embedding | None) -> None:
        super().__init__()
        d, self.num_heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.head_dim = d // self.num_heads
        self.dropout = cfg.attention_dropout
        if relative_attention_bias is not None:
            self.relative_attention_bias = relative_attention_bias  # shared by all layers: (num_buckets, H)
        self.k_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.q_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))

    def forward(self, x: Tensor, position_bias: Tensor | None, key_padding: Tensor | None) -> Tensor:
        """position_bias (H, L, L) or None; key_padding (B, L) bool, True = padding (never attended to)."""
        b, length, d = x.shape
        q, k, v = (proj(x).view(b, length, self.num_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))  # (B, H, L, d_h)
        mask = None
        if position_bias is not None:
            mask = position_bias[None]  # (1, H, L, L)
            if self.gru_rel_pos:  # gate per query: a * (b * grep_a - 1) + 2, in (1, 1 + grep_a) for grep_a > 0
                gates = torch.sigmoid(self.grep_linear(q).view(b, self.num_heads, length, 2, 4).sum(-1))
                gate_a, gate_b = gates.chunk(2, dim=-1)  # (B, H, L, 1) each
                mask = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * mask  # (B, H, L, L)
        if key_padding is not None:
            pad = torch.zeros(b, 1, 1, length, dtype=x.dtype, device=x.device)
            pad = pad.masked_fill(key_padding[:, None, None], float("-inf"))
            mask = pad if mask is None else mask + pad
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)  # (B, H, L, d_h)
        return self.out_proj(out.transpose(1, 2).reshape(b, length, d))


class EncoderLayer(nn.Module):
    """Attention and FFN blocks, pre-LN or post-LN (DeepNorm scales post-LN residuals): (B, L, D) -> (B, L, D)."""

    def __init__(self, cfg: BeatsConfig, relative_attention_bias: nn.Embedding | None) -> None:
        super().__init__()
        d, ffn = cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim
        self.cfg = cfg
        self.self_attn = MultiheadAttention(cfg, relative_attention_bias)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = GluLinear(d, ffn) if cfg.activation_fn == "glu" else nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.residual_scale = (2 * cfg.encoder_layers) ** 0.25 if cfg.deep_norm else 1.0

    def _ffn(self, x: Tensor) -> Tensor:
        x = F.dropout(activation(self.cfg.activation_fn, self.fc1(x)), self.cfg.activation_dropout, self.training)
        return F.dropout(self.fc2(x), self.cfg.dropout, self.training)

    def forward(self, x: Tensor, position_bias: Tensor | None, key_padding: Tensor | None) -> Tensor:
        p, train = self.cfg.dropout, self.training
        if self.cfg.layer_norm_first:
            x = x + F.dropout(self.self_attn(self.self_attn_layer_norm(x), position_bias, key_padding), p, train)
            return x + self._ffn(self.final_layer_norm(x))
        x = x * self.residual_scale + F.dropout(self.self_attn(x, position_bias, key_padding), p, train)
        x = self.self_attn_layer_norm(x)
        return self.final_layer_norm(x * self.residual_scale + self._ffn(x))


class TransformerEncoder(nn.Module):
    """Convolutional positional embedding, then the layers: tokens (B, L, D), padding (B, L) -> (B, L, D)."""

    def __init__(self, cfg: BeatsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.encoder_embed_dim
        # a one-module Sequential so the keys read pos_conv.0.* as in the official checkpoints
        self.pos_conv = nn.Sequential(WeightNormConv1d(d, cfg.conv_pos, cfg.conv_pos_groups))
        shared = nn.Embedding(cfg.num_buckets, cfg.encoder_attention_heads) if cfg.relative_position_embedding else None
        self.layers = nn.ModuleList(EncoderLayer(cfg, shared) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(d)

    def position_bias(self, length: int) -> Tensor | None:
        """Relative position bias (H, L, L) from the shared bucket embedding, or None without one."""
        if not self.cfg.relative_position_embedding:
            return None
        table = self.layers[0].self_attn.relative_attention_bias
        buckets = relative_position_buckets(length, self.cfg.num_buckets, self.cfg.max_distance, table.weight.device)
        return table(buckets).permute(2, 0, 1)

    def forward(self, x: Tensor, padding: Tensor | None = None) -> Tensor:
        """x (B, L, D); padding (B, L) bool (True = padding) or None -> (B, L, D). Padded tokens are zeroed before
        the positional convolution and never attended to, so valid tokens match those of the unpadded sequence."""
        if padding is not None:
            x = x.masked_fill(padding[..., None], 0.0)
        pos = self.pos_conv(x.transpose(1, 2))  # (B, D, L + 1) for an even kernel
        x = x + F.gelu(pos[:, :, :x.shape[1]]).transpose(1, 2)
        if not self.cfg.layer_norm_first:
            x = self.layer_norm(x)
        x = F.dropout(x, self.cfg.dropout, self.training)
        bias = self.position_bias(x.shape[1])
        for layer in self.layers:
            if self.cfg.layer_wise_gradient_decay_ratio != 1.0 and x.requires_grad:
                x = _ScaleGrad.apply(x, self.cfg.layer_wise_gradient_decay_ratio)
            if self.training and self.cfg.encoder_layerdrop > 0 and float(torch.rand(())) < self.cfg.encoder_layerdrop:
                continue
            x = layer(x, bias, padding)
        return self.layer_norm(x) if self.cfg.layer_norm_first else x


def init_weights(encoder: TransformerEncoder) -> None:
    """Random initialisation as BEATs pre-training starts: N(0, 0.02) linears and bucket embedding, zero biases;
    positional conv N(0, sqrt(4 / (K D))) with its norm as gain; DeepNorm's Xavier gains for q, k, v, out, FFN."""
    cfg = encoder.cfg
    for m in encoder.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
    conv = encoder.pos_conv[0]
    nn.init.normal_(conv.weight_v, std=math.sqrt(4 / (cfg.conv_pos * cfg.encoder_embed_dim)))
    with torch.no_grad():
        conv.weight_g.copy_(conv.weight_v.norm(dim=(0, 1), keepdim=True))
    nn.init.zeros_(conv.bias)
    if cfg.deep_norm:
        beta = (8 * cfg.encoder_layers) ** -0.25
        for layer in encoder.layers:
            attn = layer.self_attn
            for m, gain in ((attn.q_proj, 1.0), (attn.k_proj, 1.0), (attn.v_proj, beta), (attn.out_proj, beta),
                            (layer.fc1, beta), (layer.fc2, beta)):
                nn.init.xavier_normal_(m.linear.weight if isinstance(m, GluLinear) else m.weight, gain=gain)
