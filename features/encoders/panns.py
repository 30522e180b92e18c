"""PANNs CNN audio encoders (CNN6, CNN10, CNN14, Wavegram-Logmel-CNN14), one class, variants as arguments.

Layer names and shapes follow PANNs (Kong et al., 2020), so an official ``{"model": state_dict}`` checkpoint loads
strictly, ``fc_audioset`` head included. Differences from the published forward, all no-ops for a full batch
without ``lengths``:

- padding-exact batching: each layer's output is zeroed past the clip's valid length at that resolution, so the
  convolutions see exactly the zero padding they see when the clip is alone; time pooling is masked;
- very short clips are zero-padded to one output frame (``frame_hop`` samples);
- long clips can be cut into ``chunk_seconds`` windows processed one after another (frames concatenated, clip
  embedding pooled over all valid frames), so activations stay bounded by one window.

With ``fusion_type`` (LAION-CLAP's PANNs, 48 kHz): CLAP's feature fusion (:mod:`features.encoders.fusion`). The
global view goes through ``conv_block1``; the three local windows of a long clip through ``mel_conv2d`` (a 5 x 5
convolution, stride 6 in time and 2 in frequency), side by side in time, and are fused into it by attentional
feature fusion (``aff_2d``, ``iaff_2d``) or addition (``daf_2d``). Every clip then costs one 10-s pass and gives the
same number of frames; the names follow LAION-CLAP's, so its PANNs checkpoints load strictly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.dropout import dropout
from common.tensor import lengths_to_mask, masked_mean
from features.encoders.fusion import (CLAP_MEL, CLIP_SAMPLES, FUSION_TYPES, AttentionalFusion, FusionMel, fusion_inputs,
                                      repeat_pad)
from features.frontend import (build_extractors, build_spec_augment, panns_mel_config, stft_frame_lengths,
                               waveform_to_logmel)


@dataclass(frozen=True)
class CnnArch:
    """Shape of one PANNs CNN: block widths (before the width multiplier), conv kernel, convs per block."""

    channels: tuple[int, ...]
    kernel_size: int = 3
    convs_per_block: int = 2
    wavegram: bool = False


PANNS_ARCHS: dict[str, CnnArch] = {
    "cnn14": CnnArch((64, 128, 256, 512, 1024, 2048)),
    "cnn10": CnnArch((64, 128, 256, 512)),
    "cnn6": CnnArch((64, 128, 256, 512), kernel_size=5, convs_per_block=1),
    "wavegram_logmel_cnn14": CnnArch((64, 128, 256, 512, 1024, 2048), wavegram=True),
}

MAX_TIME_POOLS = 5  # PANNs pools 2x2 in the first five blocks, not in CNN14's sixth.
WAVEGRAM_STRIDES = (5, 4, 4, 4)  # pre_conv0 stride, then the three pre_block max-pools: 320 samples per frame.


def _mask(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Zero time steps past ``lengths``; x is (B, C, T) or (B, C, T, F) with time on dim 2."""
    if lengths is None:
        return x
    mask = lengths_to_mask(lengths, x.shape[2])[:, None]  # (B, 1, T)
    return x * (mask if x.dim() == 3 else mask[..., None]).to(x.dtype)


class ConvBlock(nn.Module):
    """(conv - BN - ReLU) x ``n_convs``, then average pooling; PANNs' ConvBlock (3x3, 2 convs) / ConvBlock5x5."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, n_convs: int = 2) -> None:
        super().__init__()
        if n_convs not in (1, 2):
            raise ValueError(f"n_convs must be 1 or 2, got {n_convs}")
        pad = kernel_size // 2
        self.n_convs = n_convs
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        if n_convs == 2:
            self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size, padding=pad, bias=False)
            self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor, lengths: Tensor | None, pool_size: tuple[int, int]) -> tuple[Tensor, Tensor | None]:
        """x: (B, C_in, T, F) -> (B, C_out, T // p_t, F // p_f); lengths (B,) valid steps of T, or None."""
        x = F.relu_(self.bn1(self.conv1(x)))
        if self.n_convs == 2:
            x = F.relu_(self.bn2(self.conv2(_mask(x, lengths))))
        if pool_size != (1, 1):
            x = F.avg_pool2d(x, kernel_size=pool_size)
            if lengths is not None:
                lengths = torch.div(lengths, pool_size[0], rounding_mode="floor")
                x = _mask(x, lengths)  # a pooled step half past the end is not valid
        return x, lengths


class ConvPreWavBlock(nn.Module):
    """Wavegram block: conv3 - BN - ReLU, dilated conv3 - BN - ReLU, max-pool over time. x: (B, C, N)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, padding=2, dilation=2, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.bn2 = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor, lengths: Tensor | None, pool_size: int) -> tuple[Tensor, Tensor | None]:
        x = _mask(F.relu_(self.bn1(self.conv1(x))), lengths)
        x = F.max_pool1d(F.relu_(self.bn2(self.conv2(x))), kernel_size=pool_size)
        if lengths is not None:
            lengths = torch.div(lengths, pool_size, rounding_mode="floor")
            x = _mask(x, lengths)
        return x, lengths


class PannsCnn(nn.Module):
    """PANNs CNN as an audio encoder: waveform (B, N) -> frames (B, T, D), clip (B, D), clipwise (B, classes).

    Args:
        arch: one of ``PANNS_ARCHS``.
        sample_rate: 32000 or 16000 picks PANNs' mel preset; ``window_size`` etc. override it.
        width: channel multiplier (e.g. 0.25 for a small CPU model); 1.0 is the published model.
        classes_num: size of the ``fc_audioset`` head (527 for AudioSet checkpoints).
        chunk_seconds: if set, clips longer than this are processed in windows of about this length (rounded
            up to whole output frames so window boundaries fall on frame boundaries).
        spec_augment: apply PANNs' SpecAugment in training mode.
        fusion_type: None, or CLAP's feature fusion for long audio (``aff_2d``, ``iaff_2d``, ``daf_2d``; needs
            ``sample_rate=48000`` and CLAP's mel settings; not for the Wavegram branch).
        repeat_pad: clips shorter than 10 s are repeated, then zero-padded, to 10 s, as CLAP prepares the inputs of
            its PANNs (feature fusion always does it).
        dropout: of the clip embedding's input and output (PANNs: 0.5, made for AudioSet's two million clips;
            small corpora trained from scratch learn much faster with less).
    """

    def __init__(self, arch: str, sample_rate: int = 32000, width: float = 1.0, classes_num: int = 527,
                 chunk_seconds: float | None = None, spec_augment: bool = False, window_size: int | None = None,
                 hop_size: int | None = None, mel_bins: int | None = None, fmin: float | None = None,
                 fmax: float | None = None, dropout: float = 0.5, fusion_type: str | None = None,
                 repeat_pad: bool = False) -> None:
        super().__init__()
        self.dropout, self.repeat_pad = dropout, repeat_pad
        if arch not in PANNS_ARCHS:
            raise KeyError(f"Unknown PANNs architecture {arch!r}; valid: {sorted(PANNS_ARCHS)}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        spec = PANNS_ARCHS[arch]
        self.arch = arch
        self.mel = panns_mel_config(sample_rate, window_size=window_size, hop_size=hop_size, mel_bins=mel_bins,
                                    fmin=fmin, fmax=fmax)
        channels = [max(1, round(c * width)) for c in spec.channels]
        self.n_pools = min(len(channels), MAX_TIME_POOLS)

        self.spectrogram_extractor, self.logmel_extractor = build_extractors(self.mel)
        self.spec_augmenter = build_spec_augment() if spec_augment else None
        self.bn0 = nn.BatchNorm2d(self.mel.mel_bins)

        in_channels = [1] + channels[:-1]
        if spec.wavegram:
            self._build_wavegram(channels[0])
            in_channels[1] = 2 * channels[0]  # log-mel and wavegram maps are concatenated after conv_block1
        for i, (c_in, c_out) in enumerate(zip(in_channels, channels), start=1):
            setattr(self, f"conv_block{i}", ConvBlock(c_in, c_out, spec.kernel_size, spec.convs_per_block))
        self.n_blocks = len(channels)
        self.fusion_type = fusion_type
        if fusion_type is not None:
            self._build_fusion(fusion_type, channels[0], spec.wavegram)

        self.fc1 = nn.Linear(channels[-1], channels[-1])
        self.fc_audioset = nn.Linear(channels[-1], classes_num)

        self.sample_rate = self.mel.sample_rate
        self.frame_dim = self.clip_dim = channels[-1]
        self.frame_hop = self.mel.hop_size * 2 ** self.n_pools  # input samples per output frame
        self.min_samples = self.frame_hop  # shorter clips are zero-padded to one output frame
        self.chunk_samples = None
        if chunk_seconds is not None:
            if chunk_seconds <= 0:
                raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
            # rounded up to whole output frames: a clip of exactly chunk_seconds (AudioCaps' 10 s) is one window
            self.chunk_samples = -(-int(chunk_seconds * self.sample_rate) // self.frame_hop) * self.frame_hop
        self._init_weights()

    def _build_fusion(self, fusion_type: str, channels: int, wavegram: bool) -> None:
        if fusion_type not in FUSION_TYPES:
            raise ValueError(f"Invalid fusion_type. (expected None or one of {FUSION_TYPES}, found {fusion_type!r})")
        if wavegram:
            raise ValueError("fusion_type: CLAP fuses log-mel views; the Wavegram-Logmel CNN has no fusion")
        if self.mel != CLAP_MEL:
            raise ValueError(f"fusion_type needs CLAP's log-mel ({CLAP_MEL}); found {self.mel}")
        self.fusion_mel = FusionMel(CLAP_MEL)
        self.mel_conv2d = nn.Sequential(nn.Conv2d(1, channels, kernel_size=5, stride=(6, 2), padding=2),
                                        nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        if fusion_type != "daf_2d":
            self.fusion_model = AttentionalFusion(channels, iterative=fusion_type == "iaff_2d")

    def _build_wavegram(self, out_channels: int) -> None:
        """PANNs' Wavegram branch; its last reshape splits channels into (maps, mel_bins // 2) pseudo-frequencies."""
        if self.mel.hop_size != math.prod(WAVEGRAM_STRIDES):
            raise ValueError(f"wavegram needs hop_size {math.prod(WAVEGRAM_STRIDES)}, got {self.mel.hop_size}")
        c1, c2 = out_channels, 2 * out_channels  # 64, 128 at width 1
        self.wavegram_bins = self.mel.mel_bins // 2
        if c2 % self.wavegram_bins:
            raise ValueError(f"wavegram needs 2 * conv_block1 channels ({c2}) divisible by mel_bins // 2 "
                             f"({self.wavegram_bins}); use a width that is a multiple of 0.25")
        self.pre_conv0 = nn.Conv1d(1, c1, kernel_size=11, stride=WAVEGRAM_STRIDES[0], padding=5, bias=False)
        self.pre_bn0 = nn.BatchNorm1d(c1)
        self.pre_block1 = ConvPreWavBlock(c1, c1)
        self.pre_block2 = ConvPreWavBlock(c1, c2)
        self.pre_block3 = ConvPreWavBlock(c2, c2)
        self.pre_block4 = ConvBlock(c2 // self.wavegram_bins, c1)

    def _init_weights(self) -> None:
        """PANNs' initialisation: Xavier-uniform convs and linears, zero biases, unit BatchNorm."""
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ---- lengths ----------------------------------------------------------------------------------------------
    def _count(self, lengths: Tensor) -> Tensor:
        """Output frames for clips of ``lengths`` samples (no short-clip padding applied here)."""
        n = stft_frame_lengths(lengths, self.mel.hop_size)  # centred STFT frames
        n = torch.div(n, 2, rounding_mode="floor")  # conv_block1
        if hasattr(self, "pre_conv0"):
            a = torch.div(lengths + WAVEGRAM_STRIDES[0] - 1, WAVEGRAM_STRIDES[0], rounding_mode="floor")
            for s in WAVEGRAM_STRIDES[1:]:
                a = torch.div(a, s, rounding_mode="floor")
            n = torch.minimum(n, torch.div(a, 2, rounding_mode="floor"))  # pre_block4 pools time by 2
        return torch.div(n, 2 ** (self.n_pools - 1), rounding_mode="floor")

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Frames ``forward`` returns for clips of ``lengths`` samples (B,) -> (B,) long, chunking included."""
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        if self.fusion_type:  # every clip is one 10-s pass
            return self._count(torch.full_like(lengths, CLIP_SAMPLES))
        if self.chunk_samples is None:
            return self._count(lengths.clamp(min=self.min_samples))
        total = torch.zeros_like(lengths)
        for start in range(0, max(int(lengths.max()), 1), self.chunk_samples):
            part = (lengths - start).clamp(0, self.chunk_samples)
            total += self._count(part.clamp(min=self.min_samples)) if start == 0 else self._count(part) * (part > 0)
        return total

    # ---- forward ----------------------------------------------------------------------------------------------
    def _backbone(self, waveform: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """waveform (B, N) -> frequency-averaged last conv map (B, C, T) and valid frames (B,) or None."""
        if waveform.shape[1] < self.min_samples:
            waveform = F.pad(waveform, (0, self.min_samples - waveform.shape[1]))
        if lengths is not None:
            lengths = lengths.clamp(min=self.min_samples)
        x, mel_lengths = waveform_to_logmel(self.spectrogram_extractor, self.logmel_extractor, waveform, lengths)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # BatchNorm over mel bins: (B, 1, T, M)
        if self.training and self.spec_augmenter is not None:
            x = self.spec_augmenter(x)
        x, x_lengths = self.conv_block1(_mask(x, mel_lengths), mel_lengths, (2, 2))
        if hasattr(self, "pre_conv0"):
            a, a_lengths = self._wavegram(waveform, lengths)  # (B, C1, T', M / 2)
            t = min(x.shape[2], a.shape[2])  # the branches can differ by one frame on odd lengths
            x = torch.cat((x[:, :, :t], a[:, :, :t]), dim=1)
            x_lengths = None if lengths is None else torch.minimum(x_lengths, a_lengths)
        return self._blocks(x, x_lengths)

    def _fused(self, views: Tensor, longer: Tensor) -> Tensor:
        """CLAP's four mel views (B, 4, T, M) and ``longer`` (B,) -> conv_block1's map (B, C, T', M / 2) of the
        global view, with the local windows' map fused into it for long clips."""
        x = self.bn0(views.transpose(1, 3)).transpose(1, 3)  # BatchNorm over mel bins, every view
        if self.training and self.spec_augmenter is not None:
            x = self.spec_augmenter(x)
        fused, _ = self.conv_block1(x[:, :1].contiguous(), None, (2, 2))  # the global view
        rows = torch.nonzero(longer).flatten()
        if len(rows) == 0:
            return fused
        local = x[rows, 1:]  # (L, 3, T, M): each window alone through mel_conv2d, then side by side in time
        n, windows, t, m = local.shape
        local = self.mel_conv2d(local.reshape(n * windows, 1, t, m))
        local = local.view(n, windows, *local.shape[1:]).permute(0, 2, 1, 3, 4).flatten(2, 3)  # (L, C, 3 T'', M')
        steps = fused.shape[2]
        local = F.pad(local, (0, 0, 0, steps - local.shape[2])) if local.shape[2] < steps else local[:, :, :steps]
        merged = (fused[rows] + local if self.fusion_type == "daf_2d" else self.fusion_model(fused[rows], local))
        return fused.index_copy(0, rows, merged)

    def _repeat_padded(self, waveform: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Clips shorter than 10 s as CLAP's "repeatpad" makes them: (waveform, lengths) as :meth:`forward` takes."""
        n = int(10 * self.sample_rate)
        counts = [waveform.shape[1]] * len(waveform) if lengths is None else lengths.tolist()
        if min(counts) >= n:
            return waveform, lengths
        width = max(waveform.shape[1], n)
        rows = [repeat_pad(clip[:k], n) if k < n else clip for clip, k in zip(waveform, counts)]
        padded = torch.stack([F.pad(row, (0, width - row.shape[0])) for row in rows])
        new_lengths = torch.tensor([max(k, n) for k in counts], device=waveform.device)
        return padded, None if bool((new_lengths == width).all()) else new_lengths

    def _blocks(self, x: Tensor, x_lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """conv_block1's map -> blocks 2..n -> frequency-averaged last map (B, C, T) and valid frames."""
        for i in range(2, self.n_blocks + 1):
            x = dropout(x, p=0.2, training=self.training)
            pool = (2, 2) if i <= self.n_pools else (1, 1)
            x, x_lengths = getattr(self, f"conv_block{i}")(x, x_lengths, pool)
        x = dropout(x, p=0.2, training=self.training)
        return x.mean(dim=3), x_lengths  # (B, C, T)

    def _wavegram(self, waveform: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """waveform (B, N) -> wavegram map (B, C1, T', mel_bins // 2) and its valid frames."""
        a = F.relu_(self.pre_bn0(self.pre_conv0(waveform[:, None, :])))  # (B, C1, ceil(N / 5))
        if lengths is not None:
            lengths = torch.div(lengths + WAVEGRAM_STRIDES[0] - 1, WAVEGRAM_STRIDES[0], rounding_mode="floor")
            a = _mask(a, lengths)
        for block, pool in zip((self.pre_block1, self.pre_block2, self.pre_block3), WAVEGRAM_STRIDES[1:]):
            a, lengths = block(a, lengths, pool)
        b, c, t = a.shape
        a = a.reshape(b, c // self.wavegram_bins, self.wavegram_bins, t).transpose(2, 3)  # (B, C2 / F, T', F)
        return self.pre_block4(a, lengths, (2, 1))

    def _head(self, x: Tensor, lengths: Tensor | None) -> dict[str, Tensor]:
        """(B, C, T) map -> PANNs time smoothing for frames, masked mean + max pooling and fc1 for the clip."""
        b, _, t = x.shape
        if lengths is None:
            x_max, x_mean = x.amax(dim=2), x.mean(dim=2)
            frames = F.max_pool1d(x, 3, 1, 1) + F.avg_pool1d(x, 3, 1, 1)  # (B, C, T)
            lengths = torch.full((b,), t, dtype=torch.long, device=x.device)
        else:
            valid = lengths_to_mask(lengths, t)[:, None]  # (B, 1, T)
            x = x * valid.to(x.dtype)
            x_low = x.masked_fill(~valid, float("-inf"))  # padding never wins a max
            x_max = x_low.amax(dim=2)
            x_mean = masked_mean(x, valid, dim=2)
            # avg_pool counts padding as zeros, like the zero padding of a clip alone
            frames = F.max_pool1d(x_low, 3, 1, 1) + F.avg_pool1d(x, 3, 1, 1)
            frames = frames.masked_fill(~valid, 0.0)  # padded steps are -inf after the max
        h = dropout(x_max + x_mean, p=self.dropout, training=self.training)
        h = F.relu_(self.fc1(h))  # (B, D)
        return {"frames": frames.transpose(1, 2), "frame_lengths": lengths,
                "clip": dropout(h, p=self.dropout, training=self.training),
                "clipwise": torch.sigmoid(self.fc_audioset(h))}

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """waveform (B, N) float, lengths (B,) valid samples or None -> dict with
        ``frames`` (B, T, D), ``frame_lengths`` (B,) long, ``clip`` (B, D), ``clipwise`` (B, classes)."""
        lengths = check_input(waveform, lengths)
        if lengths is not None and bool((lengths == waveform.shape[1]).all()):
            lengths = None  # nothing is padded: the unmasked path computes the same, about 5% faster
        if lengths is not None:
            waveform = waveform * lengths_to_mask(lengths, waveform.shape[1]).to(waveform.dtype)  # padding must be 0
        if self.repeat_pad and not self.fusion_type:
            waveform, lengths = self._repeat_padded(waveform, lengths)
        full = torch.full((waveform.shape[0],), waveform.shape[1], dtype=torch.long, device=waveform.device)
        if self.fusion_type:
            views, longer = fusion_inputs(self.fusion_mel, waveform, full if lengths is None else lengths,
                                          self.training)
            if self.training:  # batch statistics need the batch
                return self._head(*self._blocks(self._fused(views, longer), None))
            # at inference one clip per pass: a clip's embedding is bit-identical alone or in any batch
            outs = [self._head(*self._blocks(self._fused(views[i:i + 1], longer[i:i + 1]), None))
                    for i in range(len(views))]
            return {key: torch.cat([o[key] for o in outs]) for key in outs[0]}
        if self.chunk_samples is None or waveform.shape[1] <= self.chunk_samples:
            return self._head(*self._backbone(waveform, lengths))
        lengths = full if lengths is None else lengths
        maps, counts = [], []
        for start in range(0, int(lengths.max()), self.chunk_samples):
            part = (lengths - start).clamp(0, self.chunk_samples)  # (B,) valid samples in this window
            x, _ = self._backbone(waveform[:, start:start + self.chunk_samples], part)
            # a clip's first window is padded to one frame; later windows count only their real samples
            n = self._count(part.clamp(min=self.min_samples)) if start == 0 else self._count(part) * (part > 0)
            maps.append(_mask(x, n))
            counts.append(n)
        # every window but a clip's last is full, so each clip's valid frames stay contiguous
        return self._head(torch.cat(maps, dim=2), torch.stack(counts).sum(dim=0))


def check_input(waveform: Tensor, lengths: Tensor | None) -> Tensor | None:
    """Validate an encoder's input where it enters; returns lengths as a long tensor on waveform's device."""
    if not isinstance(waveform, Tensor) or waveform.dim() != 2 or not waveform.is_floating_point():
        raise ValueError(f"Invalid waveform. (expected float tensor (B, N), found "
                         f"{type(waveform).__name__} {tuple(getattr(waveform, 'shape', ()))})")
    if waveform.shape[0] == 0 or waveform.shape[1] == 0:
        raise ValueError(f"Invalid waveform. (expected non-empty (B, N), found {tuple(waveform.shape)})")
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths, device=waveform.device).long()
    if lengths.shape != (waveform.shape[0],):
        raise ValueError(f"Invalid lengths. (expected shape ({waveform.shape[0]},), found {tuple(lengths.shape)})")
    if int(lengths.min()) < 1 or int(lengths.max()) > waveform.shape[1]:
        raise ValueError(f"Invalid lengths. (expected 1 <= length <= {waveform.shape[1]}, "
                         f"found {lengths.tolist()})")
    return lengths
