"""Throughput on a CUDA GPU at the SJTU report's sizes, one line per figure, in fp32 and bf16 (autocast):

    python benchmarks/bench_gpu.py                        # on cuda: within about 5 minutes; stops at once without one
    python benchmarks/bench_gpu.py --device cpu --small   # the same code at tiny sizes, to check it runs anywhere

- ``extract``: clips of 10 s per second through each audio encoder (CNN14, Wavegram-Logmel-CNN14, AST, HTS-AT,
  BEATs; random weights), batches of 32, inference;
- ``retrieval``: training steps per second of a bi-encoder (forward, symmetric InfoNCE, backward, AdamW), batches of
  32 clips of 10 s and 32 captions of 30 tokens: each audio encoder with BERT-base, and CNN14 with RoBERTa-base (the
  text encoders built from their default configs, fed random token ids: no tokenizer is needed);
- ``caption``: captions per second of the report's seq2seq captioner (BiGRU 3x256 + Transformer decoder 2x256) by
  beam search (beam 3, up to 30 words) over CNN14 frames, batches of 32;
- ``lm``: training steps per second of SmolLM2-135M with LoRA (r 16 on q and k) behind an MLP mapping of CNN14
  frames, batches of 16 answers of 30 tokens;
- ``loader``: whether the waveform loader keeps the GPU busy: CNN14 training steps (forward, backward, AdamW) fed
  by ``retrieval.train``'s own loader (clips of 30 s decoded from WAV files, 10-s crops, pinned memory) with 0 and
  with ``--workers`` processes; the share of the time the loop waits for a batch (near 0: the GPU sets the pace);
- each with the peak GPU memory it took (``torch.cuda.max_memory_allocated``).

Each figure is the median of ``--runs`` timed repeats after one warm-up, synchronised with the device.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from typing import Callable

import fire
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ENCODERS = ["cnn14", "wavegram_logmel_cnn14", "ast", "htsat", "beats"]
RATES = {"cnn14": 32000, "wavegram_logmel_cnn14": 32000, "ast": 16000, "htsat": 48000, "beats": 16000}


def _encoder(name: str, small: bool):
    from features.encoders import build_audio_encoder

    if name in ("cnn14", "wavegram_logmel_cnn14"):
        return build_audio_encoder(name, sample_rate=RATES[name], width=0.25 if small else 1.0)
    if name == "ast":
        tiny = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
        return build_audio_encoder("ast", **(tiny if small else {}))
    if name == "beats":
        tiny = {"encoder_layers": 1, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
                "encoder_attention_heads": 2}
        return build_audio_encoder("beats", **(tiny if small else {}))
    return build_audio_encoder("htsat")


def _text_model(kind: str, small: bool):
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    size = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64} if small \
        else {}
    return BertModel(BertConfig(**size)) if kind == "bert" else RobertaModel(RobertaConfig(**size))


def _timed(step: Callable[[], object], device: torch.device, runs: int) -> float:
    """Median seconds of ``step`` after one warm-up, the device synchronised around each run."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def _reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _report(what: str, precision: str, per_second: float, unit: str, device: torch.device) -> None:
    print(f"{what:<40} {precision:<5} {per_second:10.2f} {unit:<14} peak {_peak_mib(device):8.0f} MiB", flush=True)


def bench_extract(device, precision, autocast, batch, seconds, runs, small):
    for name in ENCODERS:
        _reset(device)
        encoder = _encoder(name, small).to(device).eval()
        wave = torch.randn(batch, int(seconds * RATES[name]), device=device) * 0.1
        lengths = torch.full((batch,), wave.shape[1], device=device)

        def step():
            with torch.inference_mode(), autocast():
                encoder(wave, lengths)
        _report(f"extract {name}", precision, batch / _timed(step, device, runs), "clips/s", device)
        del encoder, wave


def bench_retrieval(device, precision, autocast, batch, seconds, runs, small):
    from retrieval.loss import info_nce

    pairs = [(name, "bert") for name in ENCODERS] + [("cnn14", "roberta")]
    for name, text_kind in pairs:
        _reset(device)
        encoder, text = _encoder(name, small).to(device).train(), _text_model(text_kind, small).to(device).train()
        dim = 32 if small else 512
        with torch.no_grad():
            clip_dim = encoder(torch.zeros(1, int(seconds * RATES[name]), device=device))["clip"].shape[-1]
        audio_proj = torch.nn.Linear(clip_dim, dim).to(device)
        text_proj = torch.nn.Linear(text.config.hidden_size, dim).to(device)
        params = [*encoder.parameters(), *text.parameters(), *audio_proj.parameters(), *text_proj.parameters()]
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        wave = torch.randn(batch, int(seconds * RATES[name]), device=device) * 0.1
        lengths = torch.full((batch,), wave.shape[1], device=device)
        ids = torch.randint(5, min(1000, text.config.vocab_size), (batch, 30), device=device)
        pair_ids, temperature = torch.arange(batch, device=device), torch.tensor(0.07, device=device)

        def step():
            with autocast():
                audio = F.normalize(audio_proj(encoder(wave, lengths)["clip"]).float(), dim=-1)
                caption = F.normalize(text_proj(text(input_ids=ids).last_hidden_state[:, 0]).float(), dim=-1)
                loss = info_nce(audio, caption, pair_ids, temperature, gather=False)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _report(f"retrieval {name} + {text_kind}", precision, 1 / _timed(step, device, runs), "steps/s", device)
        del encoder, text, optimizer


def bench_caption(device, precision, autocast, batch, runs, small):
    from captioning.models import build_captioner
    from captioning.search import beam_hypotheses

    _reset(device)
    hidden, frame_dim = (32, 64) if small else (256, 2048)
    model = build_captioner({"encoder": "bigru", "encoder_args": {"hidden": hidden, "n_layers": 3},
                             "decoder": "transformer", "decoder_args": {"d_model": hidden, "n_heads": 4,
                                                                        "n_layers": 2, "d_ff": 4 * hidden},
                             "frame_dim": frame_dim, "vocab_size": 5000}).to(device).eval()
    frames = torch.randn(batch, 32, frame_dim, device=device)
    lengths = torch.full((batch,), 32, device=device)

    def step():
        with torch.inference_mode(), autocast():
            beam_hypotheses(model, frames, lengths, bos=1, eos=2, pad=0, beam_size=3, max_len=30, min_len=30)
    _report("caption BiGRU + Transformer, beam 3", precision, batch / _timed(step, device, runs), "captions/s",
            device)


def bench_lm(device, precision, autocast, batch, runs, small):
    from captioning.models.prefix_lm import build_prefix_lm
    from captioning.train_lm import answer_loss

    _reset(device)
    frame_dim = 64 if small else 2048
    model, _ = build_prefix_lm({"lm": "smollm2", "frame_dim": frame_dim, "mapping": "mlp", "prefix_length": 1,
                                "lora": {"r": 16, "alpha": 32, "targets": ["q_proj", "k_proj"]}})
    model = model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    frames = torch.randn(batch, 32, frame_dim, device=device)
    frame_lengths = torch.full((batch,), 32, device=device)
    tokens = torch.randint(100, 10000, (batch, 30), device=device)
    token_lengths = torch.full((batch,), 30, device=device)

    def step():
        with autocast():
            logits = model(frames, frame_lengths, tokens)["logits"]
        loss = answer_loss(logits.float(), tokens, token_lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _report("lm SmolLM2-135M + LoRA r16", precision, 1 / _timed(step, device, runs), "steps/s", device)


def bench_loader(device, precision, autocast, batch, seconds, runs, small, workers):
    import tempfile

    import soundfile as sf
    from torch.utils.data import DataLoader

    from features.manifest import AudioEntry, Manifest
    from features.waveforms import WaveformStore
    from retrieval.data import PairDataset, collate_pairs

    rate, clip_seconds, steps = RATES["cnn14"], 3 * seconds, 2 + 4 * runs
    with tempfile.TemporaryDirectory() as folder:
        audio, rng = [], np.random.default_rng(0)
        for i in range(batch * steps):
            path = os.path.join(folder, f"clip{i}.wav")
            sf.write(path, (0.1 * rng.standard_normal(int(clip_seconds * rate))).astype(np.float32), rate,
                     subtype="PCM_16")
            audio.append(AudioEntry(f"clip{i}", path, clip_seconds, rate, 1))
        manifest = Manifest("bench", audio, {entry.audio_id: ["a sound"] for entry in audio})
        dataset = PairDataset(manifest, WaveformStore(manifest, rate, cache=False), seconds)
        for n in sorted({0, workers}):
            _reset(device)
            encoder = _encoder("cnn14", small).to(device).train()
            optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-5)
            loader = DataLoader(dataset, batch_size=batch, shuffle=True, collate_fn=collate_pairs, drop_last=True,
                                num_workers=n, pin_memory=device.type == "cuda", persistent_workers=False)
            waiting, start, done = 0.0, None, 0
            batches = iter(loader)
            for step in range(steps):
                asked = time.perf_counter()
                data = next(batches)
                if step == 1:  # the first step warms up (workers starting, kernels chosen): not counted
                    start, waiting = asked, 0.0
                waiting += time.perf_counter() - asked
                with autocast():
                    loss = encoder(data["waveform"].to(device, non_blocking=True),
                                   data["lengths"].to(device, non_blocking=True))["clip"].float().pow(2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                done += step >= 1
            total = time.perf_counter() - start
            print(f"{f'loader cnn14, {n} workers':<40} {precision:<5} {done / total:10.2f} {'steps/s':<14} "
                  f"waiting {waiting / total:6.1%} of the time", flush=True)
            del encoder, optimizer, loader, batches


def main(device: str = "cuda", small: bool = False, runs: int = 3,
         only: str = "extract,retrieval,caption,lm,loader", precisions: str = "fp32,bf16", workers: int = 4) -> None:
    """Print the figures; ``only`` picks parts, ``precisions`` the arithmetic, ``small`` tiny sizes (to check),
    ``workers`` the loader's processes (``loader``)."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"bench_gpu: no CUDA GPU here (torch {torch.__version__}); on a CPU, check the code with "
                         "--device cpu --small")
    batch, seconds = (2, 1.0) if small else (32, 10.0)
    if device.type == "cuda":
        print(f"# {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    for precision in precisions.split(","):
        def autocast(precision=precision):
            if precision == "fp32":
                return contextlib.nullcontext()
            return torch.autocast(device.type, dtype=torch.bfloat16)
        parts = only.split(",")
        if "extract" in parts:
            bench_extract(device, precision, autocast, batch, seconds, runs, small)
        if "retrieval" in parts:
            bench_retrieval(device, precision, autocast, batch, seconds, runs, small)
        if "caption" in parts:
            bench_caption(device, precision, autocast, batch, runs, small)
        if "lm" in parts:
            bench_lm(device, precision, autocast, batch // 2 or 1, runs, small)
        if "loader" in parts:
            bench_loader(device, precision, autocast, batch, seconds, runs, small, workers)


if __name__ == "__main__":
    fire.Fire(main)
