"""CLAP's feature fusion for variable-length audio (Wu et al., 2023), shared by the encoders that have it (HTS-AT,
the PANNs CNNs): its 48 kHz log-mel, the four views of a clip, and attentional feature fusion (AFF, iAFF).

A clip of up to 10 s is "repeatpadded" to 10 s: every view is that mel. A longer clip gives a global view (its whole
mel squeezed to 1001 frames) and three local 10-s windows, one from each third of the possible starts. CLAP draws
the local windows at random; here they are the middle of each third at inference, so a clip always gives the same
embedding, and random in training (from torch's global generator, whose state a resumed run restores).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from features.frontend import MelConfig
from features.melbank import mel_filterbank

SAMPLE_RATE = 48000
CLIP_SAMPLES = 480000  # 10 s: the input of one pass
CLAP_MEL = MelConfig(sample_rate=SAMPLE_RATE, window_size=1024, hop_size=480, mel_bins=64, fmin=50.0, fmax=14000.0)
MEL_FRAMES = CLIP_SAMPLES // CLAP_MEL.hop_size + 1  # 1001 centred frames per pass
FUSION_TYPES = ("aff_2d", "iaff_2d", "daf_2d")
AMIN_DB = 1e-10  # power floor before the dB conversion (torchaudio's AmplitudeToDB)


def repeat_pad(clip: Tensor, n: int) -> Tensor:
    """CLAP's "repeatpad": ``clip`` (N,) repeated ``n // N`` whole times, then zero-padded to ``n`` samples."""
    repeated = clip.repeat(n // clip.shape[0])
    return F.pad(repeated, (0, n - repeated.shape[0]))


class FusionMel(nn.Module):
    """CLAP's log-mel for fusion models: ``torchaudio.transforms.MelSpectrogram`` with CLAP's settings (periodic
    Hann window, centred reflect-padded frames, power, HTK mel without normalisation), then ``AmplitudeToDB``
    (10 log10 of the power floored at 1e-10). (N,) -> (T, 64), T = N // 480 + 1."""

    def __init__(self, cfg: MelConfig = CLAP_MEL) -> None:
        super().__init__()
        self.cfg = cfg
        bank = mel_filterbank(cfg.sample_rate, cfg.window_size, cfg.mel_bins, cfg.fmin, cfg.fmax, htk=True,
                              norm=None)  # (64, 513)
        self.register_buffer("bank", torch.from_numpy(np.ascontiguousarray(bank.T, dtype=np.float32)),
                             persistent=False)
        self.register_buffer("window", torch.from_numpy(np.hanning(cfg.window_size + 1)[:-1].astype(np.float32)),
                             persistent=False)

    def forward(self, clip: Tensor) -> Tensor:
        spec = torch.stft(clip.float(), self.cfg.window_size, self.cfg.hop_size, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True).abs().pow(2)  # (513, T)
        return 10.0 * torch.log10((spec.T @ self.bank).clamp(min=AMIN_DB))  # (T, 64)


def fusion_views(mel: Tensor, random: bool = False) -> tuple[Tensor, bool]:
    """A long clip's mel (T, 64), T > 1001 -> CLAP's four views (4, 1001, 64) [global, front, middle, back] and
    whether they differ (``longer``); a mel of exactly 1001 frames is its own four views. The local windows start
    in the middle of each third of the possible starts, or (``random``, training) anywhere in it, as CLAP draws."""
    total = mel.shape[0]
    if total == MEL_FRAMES:
        return mel.expand(4, -1, -1), False
    thirds = np.array_split(np.arange(total - MEL_FRAMES + 1), 3)
    if random:
        starts = [int(t[int(torch.randint(len(t), (), device="cpu"))]) if len(t) else 0 for t in thirds]  # host
    else:
        starts = [int(t[len(t) // 2]) if len(t) else 0 for t in thirds]
    squeezed = F.interpolate(mel[None, None], size=(MEL_FRAMES, mel.shape[1]), mode="bilinear",
                             align_corners=False)[0, 0]
    return torch.stack([squeezed] + [mel[s:s + MEL_FRAMES] for s in starts]), True


def fusion_inputs(mel: FusionMel, waveform: Tensor, lengths: Tensor, training: bool) -> tuple[Tensor, Tensor]:
    """Clips (B, N) at 48 kHz with valid ``lengths`` -> their four mel views (B, 4, 1001, 64) and ``longer`` (B,)
    bool. In training, local windows are random and, as CLAP trains, one clip of a batch without any long clip is
    marked long, so the fusion layers learn in every batch."""
    views, longer = [], []
    for clip, n in zip(waveform, lengths.tolist()):
        if n <= CLIP_SAMPLES:
            views.append(mel(repeat_pad(clip[:n], CLIP_SAMPLES)).expand(4, -1, -1))
            longer.append(False)
        else:
            view, is_longer = fusion_views(mel(clip[:n]), random=training)
            views.append(view)
            longer.append(is_longer)
    longer_t = torch.tensor(longer, device=waveform.device)
    if training and not any(longer):
        longer_t[torch.randint(len(longer), (), device=longer_t.device)] = True
    return torch.stack(views), longer_t


def _attention_branch(channels: int, inter: int, pooled: bool) -> nn.Sequential:
    """1x1 conv bottleneck with batch norms, on each position or (``pooled``) on the global average."""
    layers = [nn.AdaptiveAvgPool2d(1)] if pooled else []
    layers += [nn.Conv2d(channels, inter, 1), nn.BatchNorm2d(inter), nn.ReLU(inplace=True),
               nn.Conv2d(inter, channels, 1), nn.BatchNorm2d(channels)]
    return nn.Sequential(*layers)


class AttentionalFusion(nn.Module):
    """Attentional feature fusion of a global and a local map (Dai et al., 2021), as CLAP uses it: AFF, or iAFF
    (``iterative``: a second attention on the first fusion).

    CLAP's iAFF computes its second global attention with the first branch (``global_att``); ``global_att2`` is
    built and saved but unused, and so it is here, so that published weights give the published outputs.
    """

    def __init__(self, channels: int, iterative: bool, r: int = 4) -> None:
        super().__init__()
        inter = channels // r
        self.iterative = iterative
        self.local_att = _attention_branch(channels, inter, pooled=False)
        self.global_att = _attention_branch(channels, inter, pooled=True)
        if iterative:
            self.local_att2 = _attention_branch(channels, inter, pooled=False)
            self.global_att2 = _attention_branch(channels, inter, pooled=True)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        """x, residual (B, C, H, W) -> (B, C, H, W)."""
        single = x.shape[0] == 1 and self.training  # batch norm needs two samples to train; CLAP doubles one
        xa = x + residual
        if single:
            xa = xa.expand(2, -1, -1, -1)
        w = torch.sigmoid(self.local_att(xa) + self.global_att(xa))[:1 if single else None]
        if not self.iterative:
            return 2 * x * w + 2 * residual * (1 - w)
        xi = x * w + residual * (1 - w)
        if single:
            xi = xi.expand(2, -1, -1, -1)
        w = torch.sigmoid(self.local_att2(xi) + self.global_att(xi))[:1 if single else None]
        return x * w + residual * (1 - w)


__all__ = ["CLAP_MEL", "CLIP_SAMPLES", "FUSION_TYPES", "MEL_FRAMES", "SAMPLE_RATE", "AttentionalFusion", "FusionMel",
           "fusion_inputs", "fusion_views", "repeat_pad"]
