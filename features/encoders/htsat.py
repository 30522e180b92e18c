"""HTS-AT (Chen et al., 2022) as LAION-CLAP builds it (Wu et al., 2023), with CLAP's feature fusion for long audio.

Every pass sees 10 s at 48 kHz (480000 samples), as a 64-bin log-mel of 1001 frames, batch-normalised per bin,
stretched (bicubic) to 1024 frames and folded into a 256 x 256 image: four 256-frame segments stacked along the
frequency axis. A 4-stage Swin transformer (:mod:`features.encoders.htsat_layers`) turns it into an 8 x 8 token grid;
unfolding the segments gives 32 time steps x 2 frequency groups. ``frames`` are those steps averaged over frequency,
(B, 32, D) per 10 s (one every 15000 samples, 312.5 ms), the ``clip`` embedding is their mean (CLAP's
``embedding``), and ``logits`` are the token-semantic head's (``tscam_conv``, averaged over time; its sigmoid is
HTS-AT's ``clipwise_output``).

Input, as CLAP prepares it at inference:

- **Without fusion** (``fusion_type=None``): the log-mel is torchlibrosa's (PANNs' front end: Slaney mel, 50 Hz to
  14 kHz). A clip of up to 10 s is repeated as many whole times as fit and zero-padded to 10 s ("repeatpad"); the
  clip embedding then equals CLAP's. Longer clips are cut into consecutive 10-s windows (the last one repeat-padded),
  where CLAP would take a random crop: frames are concatenated, the clip embedding is the mean of the windows'
  weighted by their length.
- **With fusion** (``aff_2d``, ``iaff_2d``, ``daf_2d``): CLAP's own log-mel (``torchaudio``'s ``MelSpectrogram``
  defaults: HTK mel without normalisation, power in dB). A clip of up to 10 s is repeat-padded and seen globally
  only. A longer clip is seen whole: its mel squeezed to 1001 frames (bilinear) is the global view, and three
  10-s windows of it, one from each third of the possible starts, are the local views, embedded by ``mel_conv2d``
  and fused into the global patch embedding by attention. CLAP draws each window start at random; here it is the
  middle of its third, so inference is deterministic. The squeeze does not antialias, as the torchvision versions
  CLAP was trained with did not. Such a clip has 32 frames, whatever its length.

Parameter and buffer names follow LAION-CLAP's ``HTSAT_Swin_Transformer``: the ``audio_branch.*`` weights of a CLAP
checkpoint (prefix removed) load strictly. Sizes: ``tiny`` (CLAP's published models) and ``base``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from features.encoders.fusion import (CLAP_MEL, CLIP_SAMPLES, FUSION_TYPES, SAMPLE_RATE, AttentionalFusion,
                                      FusionMel, fusion_inputs, repeat_pad)
from features.encoders.htsat_layers import SwinStage
from features.encoders.panns import check_input
from features.frontend import build_extractors, build_spec_augment, waveform_to_logmel

SPEC_SIZE, PATCH_SIZE, WINDOW_SIZE = 256, 4, 8  # the 256 x 256 image, 4 x 4 patches, 8 x 8 attention windows
FREQ_RATIO = SPEC_SIZE // CLAP_MEL.mel_bins  # 4 time segments stacked along frequency
FRAMES_PER_PASS = 32
FRAME_HOP = CLIP_SAMPLES // FRAMES_PER_PASS  # 15000 samples per frame
HTSAT_SIZES: dict[str, dict[str, Sequence[int] | int]] = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(4, 8, 16, 32)),
    "base": dict(embed_dim=128, depths=(2, 2, 12, 2), num_heads=(4, 8, 16, 32)),
}


class PatchEmbed(nn.Module):
    """4 x 4 patches of the global view; with fusion, the local views' patches (4 x 12, three side by side) fused
    into those of the clips marked ``longer``. (B, C, 256, 256) -> (B, 64 * 64, D)."""

    def __init__(self, embed_dim: int, fusion_type: str | None) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, PATCH_SIZE, stride=PATCH_SIZE)
        self.norm = nn.LayerNorm(embed_dim)
        self.fusion_type = fusion_type
        if fusion_type:
            wide = (PATCH_SIZE, 3 * PATCH_SIZE)
            self.mel_conv2d = nn.Conv2d(1, embed_dim, kernel_size=wide, stride=wide)
            if fusion_type != "daf_2d":
                self.fusion_model = AttentionalFusion(embed_dim, iterative=fusion_type == "iaff_2d")

    def forward(self, x: Tensor, longer: Tensor | None = None) -> Tensor:
        patches = self.proj(x[:, :1])  # (B, D, 64, 64)
        if longer is not None and bool(longer.any()):
            rows = longer.nonzero()[:, 0]
            local = x[rows, 1:]  # (b, 3, 256, 256)
            b, views, h, w = local.shape
            local = self.mel_conv2d(local.reshape(b * views, 1, h, w))  # (b * 3, D, 64, 21)
            local = local.view(b, views, *local.shape[1:]).permute(0, 2, 3, 1, 4).flatten(3)  # (b, D, 64, 63)
            width = patches.shape[-1]
            local = F.pad(local, (0, width - local.shape[-1])) if local.shape[-1] < width else local[..., :width]
            fused = (patches[rows] + local if self.fusion_type == "daf_2d"
                     else self.fusion_model(patches[rows], local))
            patches = patches.index_put((rows,), fused)
        return self.norm(patches.flatten(2).transpose(1, 2))


class HtsatEncoder(nn.Module):
    """HTS-AT: waveform (B, N) at 48 kHz -> ``frames`` (B, T, D), ``frame_lengths``, ``clip`` (B, D), ``logits``.

    Args:
        size: ``tiny`` or ``base`` (:data:`HTSAT_SIZES`); ``embed_dim``, ``depths``, ``num_heads`` override it
            (four stages; e.g. a small model for tests).
        fusion_type: None, or CLAP's 2-D feature fusion ``aff_2d``, ``iaff_2d``, ``daf_2d`` for long audio.
        classes_num: outputs of the token-semantic head (527 AudioSet classes in CLAP's checkpoints).
        spec_augment: SpecAugment on the log-mel in training mode, as HTS-AT trains.
        drop_path_rate: stochastic depth of the last block (linearly less before it), in training mode.
    """

    def __init__(self, size: str = "tiny", fusion_type: str | None = None, classes_num: int = 527,
                 embed_dim: int | None = None, depths: Sequence[int] | None = None,
                 num_heads: Sequence[int] | None = None, spec_augment: bool = True,
                 drop_path_rate: float = 0.1) -> None:
        super().__init__()
        if size not in HTSAT_SIZES:
            raise ValueError(f"Invalid HTS-AT size. (expected one of {sorted(HTSAT_SIZES)}, found {size!r})")
        if fusion_type is not None and fusion_type not in FUSION_TYPES:
            raise ValueError(f"Invalid fusion_type. (expected None or one of {FUSION_TYPES}, found {fusion_type!r})")
        embed_dim = int(embed_dim or HTSAT_SIZES[size]["embed_dim"])
        depths = list(depths or HTSAT_SIZES[size]["depths"])
        num_heads = list(num_heads or HTSAT_SIZES[size]["num_heads"])
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"HTS-AT has four stages: depths and num_heads need four values each, found "
                             f"{depths} and {num_heads}")
        self.fusion_type = fusion_type
        self.spectrogram_extractor, self.logmel_extractor = build_extractors(CLAP_MEL)
        self.spec_augmenter = build_spec_augment() if spec_augment else None
        self.bn0 = nn.BatchNorm2d(CLAP_MEL.mel_bins)
        self.patch_embed = PatchEmbed(embed_dim, fusion_type)
        grid = SPEC_SIZE // PATCH_SIZE
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList(
            SwinStage(embed_dim * 2 ** i, (grid >> i, grid >> i), depths[i], num_heads[i], WINDOW_SIZE,
                      mlp_ratio=4.0, dropout=0.0, drop_path_rates=rates[sum(depths[:i]):sum(depths[:i + 1])],
                      downsample=i < 3) for i in range(4))
        width = embed_dim * 8
        self.norm = nn.LayerNorm(width)
        freq_groups = (grid >> 3) // FREQ_RATIO  # 2 frequency groups per time step in the last grid
        self.tscam_conv = nn.Conv2d(width, classes_num, kernel_size=(freq_groups, 3), padding=(0, 1))
        self.head = nn.Linear(classes_num, classes_num)  # saved in CLAP's checkpoints, unused by HTS-AT's forward
        if fusion_type:
            self.fusion_mel = FusionMel()
        self.apply(_init_weights)

        self.sample_rate = SAMPLE_RATE
        self.frame_dim = self.clip_dim = width
        self.frame_hop = FRAME_HOP

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Frames ``forward`` returns for clips of ``lengths`` samples: one per 15000 samples begun (a fused long
        clip: 32)."""
        n = torch.as_tensor(lengths, dtype=torch.long).clamp(min=1)
        counts = torch.div(n + FRAME_HOP - 1, FRAME_HOP, rounding_mode="floor")
        if self.fusion_type:
            counts = torch.where(n > CLIP_SAMPLES, FRAMES_PER_PASS, counts)
        return counts

    def _image(self, mel: Tensor) -> Tensor:
        """Log-mel views (P, C, 1001, 64) -> normalised, augmented (training), folded images (P, C, 256, 256)."""
        x = self.bn0(mel.transpose(1, 3)).transpose(1, 3)
        if self.training and self.spec_augmenter is not None:
            x = self.spec_augmenter(x)
        x = F.interpolate(x, (SPEC_SIZE * FREQ_RATIO, x.shape[3]), mode="bicubic", align_corners=True)
        p, c = x.shape[:2]  # (P, C, 1024, 64) -> 4 segments of 256 frames, stacked along frequency
        x = x.transpose(2, 3).reshape(p, c, CLAP_MEL.mel_bins, FREQ_RATIO, SPEC_SIZE).transpose(2, 3)
        return x.reshape(p, c, SPEC_SIZE, SPEC_SIZE)

    def _passes(self, images: Tensor, longer: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Images (P, C, 256, 256) -> frames (P, 32, D), logits (P, classes)."""
        x = self.patch_embed(images, longer)
        for stage in self.layers:
            x = stage(x)
        x = self.norm(x)  # (P, 64, D): an 8 x 8 grid, rows = 4 segments x 2 frequency groups, columns = time
        p, n, d = x.shape
        side = math.isqrt(n)
        groups = side // FREQ_RATIO
        x = x.transpose(1, 2).reshape(p, d, FREQ_RATIO, groups, side).transpose(2, 3)
        x = x.reshape(p, d, groups, FREQ_RATIO * side)  # (P, D, 2, 32): segments back in time order
        logits = self.tscam_conv(x).flatten(2).mean(-1)  # (P, classes)
        return x.mean(2).transpose(1, 2), logits

    def _plain(self, waveform: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """Without fusion: 10-s windows -> per-clip frames, clip embeddings (B, D), logits (B, classes)."""
        windows, owners, weights = [], [], []
        for b, n in enumerate(lengths.tolist()):
            for start in range(0, n, CLIP_SAMPLES):
                part = waveform[b, start:min(n, start + CLIP_SAMPLES)]
                windows.append(repeat_pad(part, CLIP_SAMPLES))
                owners.append(b)
                weights.append(part.shape[0] / n)
        mel, _ = waveform_to_logmel(self.spectrogram_extractor, self.logmel_extractor, torch.stack(windows))
        frames, logits = self._passes(self._image(mel))  # (P, 32, D), (P, classes)
        owner = torch.tensor(owners, device=waveform.device)
        weight = torch.tensor(weights, device=waveform.device, dtype=frames.dtype)[:, None]
        clips = frames.new_zeros(len(lengths), frames.shape[2]).index_add(0, owner, frames.mean(1) * weight)
        logits = logits.new_zeros(len(lengths), logits.shape[1]).index_add(0, owner, logits * weight)
        return [frames[owner == b].flatten(0, 1) for b in range(len(lengths))], clips, logits

    def _fused(self, waveform: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """With fusion: one pass per clip (a long one seen whole) -> per-clip frames, clip embeddings, logits."""
        views, longer = fusion_inputs(self.fusion_mel, waveform, lengths, self.training)
        frames, logits = self._passes(self._image(views), longer)
        return list(frames), frames.mean(1), logits

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """waveform (B, N) float at 48 kHz, lengths (B,) valid samples or None -> ``frames`` (B, T, D), zero past
        ``frame_lengths`` (B,), ``clip`` (B, D) and ``logits`` (B, classes)."""
        lengths = check_input(waveform, lengths)
        if lengths is None:
            lengths = torch.full((waveform.shape[0],), waveform.shape[1], device=waveform.device)
        per_clip, clip, logits = (self._fused if self.fusion_type else self._plain)(waveform, lengths)
        counts = self.num_frames(lengths.cpu()).tolist()
        frames = nn.utils.rnn.pad_sequence([f[:c] for f, c in zip(per_clip, counts)], batch_first=True)
        return {"frames": frames, "frame_lengths": torch.tensor(counts, device=waveform.device), "clip": clip,
                "logits": logits}


def _init_weights(module: nn.Module) -> None:
    """HTS-AT's initialisation: truncated normal (std 0.02) linear weights, zero biases, unit layer norms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


__all__ = ["HTSAT_SIZES", "HtsatEncoder"]
