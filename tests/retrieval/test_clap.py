"""LAION-CLAP checkpoints into the bi-encoder (``retrieval.clap``), against LAION's own CLAP model
(``shared/reference/laion_clap``): random weights saved in the published format, converted, then compared (audio
and text embeddings, the transforms, the temperatures); strict loading; the converted checkpoint through search,
zero-shot classification, the audio-encoder file and the command line.

The reference CLAP is built small (HTS-AT of width 16, a 2-layer RoBERTa over a byte-level BPE vocabulary of 270
tokens) so nothing is downloaded; its text branch must keep RoBERTa-base's width, 768, which CLAP's projection
takes. The RoBERTa folder given to the converter holds only config.json and the tokenizer.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from features.encoders.fusion import CLIP_SAMPLES, FusionMel, fusion_views, repeat_pad
from features.weights import load_audio_encoder
from retrieval.clap import audio_args, convert, htsat_args
from retrieval.embed import audio_embeddings, text_embeddings
from retrieval.model import load_model
from retrieval.search import search_audio, search_text
from retrieval.zeroshot import zero_shot
from common.text_encoder import TextEncoderFilesError
from tests.conftest import import_laion_clap

REPO = Path(__file__).resolve().parents[2]
SR = 48000
TOL = 1e-5  # on unit vectors
SMALL_HTSAT = dict(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4])
ROBERTA = dict(hidden_size=768, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
               max_position_embeddings=81, type_vocab_size=1)  # 77 tokens from position 2, as roberta-base
MERGES = [("Ġ", "a"), ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "s"), ("o", "u"), ("n", "d"), ("ou", "nd"),
          ("Ġs", "ound"), ("Ġ", "d"), ("o", "g")]
CAPTIONS = ["the sound of rain", "a dog barks twice", "x" * 100]  # the last one is cut at 77 tokens
LOGIT_SCALES = {"logit_scale_a": math.log(1 / 0.02), "logit_scale_t": math.log(1 / 0.05)}
# the reference builds its window index with torch.meshgrid without indexing=
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")


@pytest.fixture(scope="module")
def reference(reference_dir: Path) -> types.SimpleNamespace:
    model, htsat = import_laion_clap(reference_dir)
    configs = json.loads((reference_dir / "laion_clap" / "model_configs" / "HTSAT-tiny.json").read_text())
    # LAION's factory: the audio config of the model's JSON, the text branch named by tmodel
    return types.SimpleNamespace(model=model, htsat=htsat, audio_cfg=configs["audio_cfg"],
                                 text_cfg={**configs["text_cfg"], "model_type": "roberta"},
                                 configs=reference_dir / "laion_clap" / "model_configs")


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory) -> Path:
    """A RoBERTa folder with config.json and a byte-level BPE tokenizer only (no weights)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaConfig, RobertaTokenizer

    tokens = ["<s>", "<pad>", "</s>", "<unk>", *sorted(ByteLevel.alphabet()), *("".join(m) for m in MERGES), "<mask>"]
    folder = tmp_path_factory.mktemp("roberta")
    RobertaTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=MERGES).save_pretrained(folder)
    RobertaConfig(vocab_size=len(tokens), **ROBERTA).save_pretrained(folder)
    assert not [p for p in folder.iterdir() if p.suffix in (".bin", ".safetensors")]
    return folder


def reference_clap(reference: types.SimpleNamespace, roberta_dir: Path, fusion_type: str | None = None,
                   seed: int = 0, pann: str | None = None) -> torch.nn.Module:
    """LAION's CLAP (small HTS-AT, or ``pann``: LAION's PANN-6/10/14 config; small RoBERTa) with perturbed random
    weights and batch-norm statistics, so that every parameter matters, and distinct logit scales; in eval mode."""
    from transformers import AutoConfig, RobertaModel

    torch.manual_seed(seed)
    text_branch = RobertaModel(AutoConfig.from_pretrained(roberta_dir))
    audio_cfg, embed_dim = reference.audio_cfg, SMALL_HTSAT["embed_dim"] * 8
    if pann:
        config = json.loads((reference.configs / f"{pann}.json").read_text())
        audio_cfg, embed_dim = config["audio_cfg"], config["embed_dim"]

    def small_htsat(audio_cfg, enable_fusion=False, fusion_type="None"):
        return reference.htsat.HTSAT_Swin_Transformer(
            spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=audio_cfg.class_num, window_size=8,
            config=audio_cfg, enable_fusion=enable_fusion, fusion_type=fusion_type, **SMALL_HTSAT)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reference.model.RobertaModel, "from_pretrained", lambda *args, **kwargs: text_branch)
        patch.setattr(reference.model, "create_htsat_model", small_htsat)
        clap = reference.model.CLAP(embed_dim, audio_cfg, reference.text_cfg, enable_fusion=fusion_type is not None,
                                    fusion_type=str(fusion_type))
    state = {}
    for key, value in clap.state_dict().items():
        if key.endswith("running_var"):
            value = value * (0.5 + torch.rand_like(value))
        elif value.is_floating_point() and "extractor" not in key and "attn_mask" not in key:
            value = value + 0.05 * torch.randn_like(value)
        state[key] = value
    state.update({k: torch.tensor(v) for k, v in LOGIT_SCALES.items()})
    clap.load_state_dict(state)
    return clap.eval()


def save_official(clap: torch.nn.Module, path: Path, **extra: Any) -> Path:
    """The published layout: training keys around ``state_dict``, ``module.`` prefixes (DDP), the position ids of
    older transformers, and a NumPy learning rate in the optimizer state, as LAION's training loop stores it."""
    state = {f"module.{k}": v for k, v in clap.state_dict().items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(ROBERTA["max_position_embeddings"])[None]
    torch.save({"epoch": 45, "name": "small", "state_dict": state,
                "optimizer": {"param_groups": [{"lr": np.float64(1e-4), "betas": (0.9, 0.99)}]}, **extra}, path)
    return path


@pytest.fixture(scope="module")
def clips() -> dict[str, torch.Tensor]:
    """Noise-modulated tones at 48 kHz: 3.3 s, 7.1 s, 10 s and (fused by fusion models) 14.2 s."""
    gen = torch.Generator().manual_seed(5)
    out = {}
    for seconds, freq in ((3.3, 1500.0), (7.1, 300.0), (10.0, 440.0), (14.2, 2500.0)):
        t = torch.arange(int(seconds * SR)) / SR
        tone = torch.sin(2 * torch.pi * freq * t) * (0.3 + 0.2 * torch.sin(2 * torch.pi * 0.7 * t))
        out[f"{seconds}s"] = (tone + 0.05 * torch.randn(len(t), generator=gen)).float()
    return out


def laion_sample(clip: torch.Tensor, fusion: bool) -> dict[str, torch.Tensor]:
    """What LAION's data code makes of a clip ("repeatpad" filling; "fusion" truncation for fusion models): the
    input dict of ``get_audio_embedding``. A long clip's fusion views are the audio encoder's own (LAION draws their
    starts at random; ``tests/features/test_htsat.py`` checks them against LAION's model)."""
    if len(clip) > CLIP_SAMPLES:
        assert fusion, "LAION crops long clips at random without fusion"
        views, longer = fusion_views(FusionMel()(clip))
        return {"waveform": clip[:CLIP_SAMPLES], "longer": torch.tensor([longer]), "mel_fusion": views}
    waveform = repeat_pad(clip, CLIP_SAMPLES)
    sample = {"waveform": waveform, "longer": torch.tensor([False])}
    if fusion:
        sample["mel_fusion"] = FusionMel()(waveform).expand(4, -1, -1)
    return sample


def laion_tokens(roberta_dir: Path, texts: list[str]) -> dict[str, torch.Tensor]:
    """LAION's tokenizer call: RobertaTokenizer, padded to 77 tokens."""
    from transformers import RobertaTokenizer

    tokenizer = RobertaTokenizer.from_pretrained(roberta_dir)
    return dict(tokenizer(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt"))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# --- parity with LAION-CLAP ---------------------------------------------------------------------------------------

AUDIO_ARGS = {"htsat": {"name": "htsat", "size": "tiny", **SMALL_HTSAT},  # what the converter reads from the weights
              "PANN-14": {"name": "cnn14", "sample_rate": 48000}}


# LAION's CLAP runs only its Cnn14 among the PANNs (its Cnn6 and Cnn10 take no input dict, and have no fusion); the
# PANN-14 without fusion converts to repeat_pad=True (tests/features/test_panns_fusion.py checks that padding)
@pytest.mark.parametrize("branch, fusion_type", [("htsat", None), ("htsat", "iaff_2d"), ("PANN-14", "aff_2d")])
def test_converted_checkpoint_matches_laion_clap(reference, roberta_dir, clips, tmp_path, branch, fusion_type):
    ref = reference_clap(reference, roberta_dir, fusion_type, pann=None if branch == "htsat" else branch)
    result = convert(str(save_official(ref, tmp_path / "630k.pt")), text_encoder=str(roberta_dir),
                     out=str(tmp_path / "clap" / "best.pt"))
    repeat = {"repeat_pad": True} if branch != "htsat" and fusion_type is None else {}
    assert result["model_args"] == {
        "audio_encoder": {**AUDIO_ARGS[branch], "fusion_type": fusion_type, **repeat},
        "text_encoder": {"name": str(roberta_dir), "pooling": "pooler", "max_length": 77},
        "embed_dim": 512, "projection": "mlp", "transforms": True}
    model = load_model(result["checkpoint"])

    names = ["3.3s", "7.1s", "14.2s" if fusion_type else "10.0s"]  # a fusion model also fuses a long clip
    waves = [clips[n] for n in names]
    samples = [laion_sample(w, fusion_type is not None) for w in waves]
    tokens = laion_tokens(roberta_dir, CAPTIONS)
    with torch.no_grad():
        expected_audio = ref.get_audio_embedding(samples)
        expected_text = ref.get_text_embedding(dict(tokens))
        batch = {k: torch.cat([s[k][None] for s in samples]) for k in samples[0]}
        expected = ref(batch, dict(tokens), device=torch.device("cpu"))  # CLAP's training outputs
        lengths = torch.tensor([len(w) for w in waves])
        out = model(torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths,
                    **model.text_encoder.tokenize(CAPTIONS))

    # what search and evaluation use
    diffs = {"audio": max_diff(audio_embeddings(model, [w.numpy() for w in waves]), expected_audio),
             "text": max_diff(text_embeddings(model, CAPTIONS), expected_text)}
    # the whole forward pass, CLAP's transforms included
    for i, key in enumerate(("audio", "text", "audio_mlp", "text_mlp")):
        diffs[f"forward {key}"] = max_diff(out[key], expected[i])
    print(f"\nLAION-CLAP parity ({branch}, {fusion_type}): max abs differences {diffs}")
    assert max(diffs.values()) < TOL, diffs
    assert model.log_temperature.item() == -ref.logit_scale_a.item() != -ref.logit_scale_t.item()
    assert model.log_temperature_t.item() == -ref.logit_scale_t.item()
    assert out["temperature"].item() == pytest.approx(1 / expected[4].item(), rel=1e-6)
    assert out["temperature_t"].item() == pytest.approx(1 / expected[5].item(), rel=1e-6)
    assert (out["temperature"].item(), out["temperature_t"].item()) == pytest.approx((0.02, 0.05))
    # the audio encoder file beside the checkpoint is LAION's audio branch
    encoder = load_audio_encoder(result["audio_encoder"])
    with torch.no_grad():
        clip = encoder(waves[0][None])["clip"]
        expected_clip = ref.audio_branch(batch, device="cpu")["embedding"][:1]
        assert max_diff(clip, expected_clip) < 1e-5 * expected_clip.abs().max()  # relative: large activations


def test_published_architectures_are_recognised(reference):
    """LAION's own presets (``create_htsat_model``) give the project's presets, without overrides; the fusion type
    is read from the fusion layers (small models: the fusion layers do not depend on the size)."""
    for size, fusion_type in (("tiny", None), ("base", "aff_2d")):
        cfg = reference.model.CLAPAudioCfp(**{**reference.audio_cfg, "model_name": size})
        branch = reference.htsat.create_htsat_model(cfg, fusion_type is not None, str(fusion_type))
        state = {f"audio_branch.{k}": v for k, v in branch.state_dict().items()}
        assert htsat_args(state, "x.pt") == {"name": "htsat", "size": size, "fusion_type": fusion_type}
    cfg = reference.model.CLAPAudioCfp(**reference.audio_cfg)
    for fusion_type in (None, "aff_2d", "iaff_2d", "daf_2d"):
        branch = reference.htsat.HTSAT_Swin_Transformer(config=cfg, enable_fusion=fusion_type is not None,
                                                        fusion_type=str(fusion_type), **SMALL_HTSAT)
        state = {f"audio_branch.{k}": v for k, v in branch.state_dict().items()}
        assert htsat_args(state, "x.pt") == {"name": "htsat", "size": "tiny", "fusion_type": fusion_type,
                                             **SMALL_HTSAT}
    panns = sys.modules["laion_clap.pann_model"]
    cnn = dict(sample_rate=SR, window_size=1024, hop_size=480, mel_bins=64, fmin=50, fmax=14000, classes_num=527)
    for fusion_type in (None, "aff_2d"):
        branch = panns.Cnn14(**cnn, enable_fusion=fusion_type is not None, fusion_type=str(fusion_type))
        state = {f"audio_branch.{k}": v for k, v in branch.state_dict().items()}
        padding = {"repeat_pad": True} if fusion_type is None else {}
        assert audio_args(state, "x.pt") == {"name": "cnn14", "sample_rate": SR, "fusion_type": fusion_type,
                                             **padding}
    state = {f"audio_branch.{k}": v for k, v in panns.Cnn10(**cnn).state_dict().items()}
    with pytest.raises(ValueError, match="x.pt: a PANN-based CLAP audio branch of 5 convolution blocks: only CNN14"):
        audio_args(state, "x.pt")


# --- strictness -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def official(reference, roberta_dir, tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """The plain (no fusion) reference model and its published-format file."""
    ref = reference_clap(reference, roberta_dir, seed=1)
    return ref, save_official(ref, tmp_path_factory.mktemp("official") / "630k-audioset-best.pt")


def test_weights_that_do_not_fit_are_refused_naming_file_and_keys(official, roberta_dir, tmp_path):
    state = official[0].state_dict()
    missing = {k: v for k, v in state.items() if k != "audio_projection.2.bias"}
    extra = {**state, "audio_branch.extra.weight": torch.zeros(3)}
    reshaped = {**state, "text_projection.0.weight": torch.zeros(512, 700)}
    cases = {"missing": (missing, r"missing keys: audio_proj.2.bias"),
             "extra": (extra, r"unexpected keys: audio_encoder.extra.weight"),
             "shape": (reshaped, r"shape mismatches: text_proj.0.weight \(checkpoint \(512, 700\) vs model "
                                 r"\(512, 768\)\)")}
    for name, (bad, message) in cases.items():
        torch.save(bad, tmp_path / f"{name}.pt")  # a bare state dict, the other published form
        with pytest.raises(ValueError, match=rf"{name}.pt does not fit BiEncoder: {message}.*LAION's audio_branch"):
            convert(str(tmp_path / f"{name}.pt"), text_encoder=str(roberta_dir), out=str(tmp_path / name / "c.pt"))
        assert not (tmp_path / name).exists()  # nothing written


def test_other_files_are_refused_with_the_reason(roberta_dir, tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"state_dict": {"logit_scale_a": torch.tensor(1.0)}, "args": Payload()}, tmp_path / "code.pt")
    pann = {"module.audio_branch.conv_block1.conv1.weight": torch.zeros(64, 1, 3, 3),
            "module.audio_branch.fc1.weight": torch.zeros(2048, 2048)}
    torch.save({"state_dict": pann}, tmp_path / "pann.pt")
    torch.save({"state_dict": {"visual.conv1.weight": torch.zeros(2)}}, tmp_path / "unknown.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    cases = {"code": r"code.pt: refused: the LAION-CLAP checkpoint holds Python objects \(posix.system\)",
             "pann": r"pann.pt: a PANN-based CLAP audio branch of 1 convolution blocks: only CNN14",
             "unknown": r"unknown.pt: not a LAION-CLAP checkpoint of HTS-AT or PANNs \(neither "
                        r"audio_branch.patch_embed.proj.weight nor audio_branch.conv_block1.conv1.weight",
             "list": r"list.pt: not a LAION-CLAP checkpoint",
             "absent": r"absent.pt: LAION-CLAP checkpoint not found"}
    for name, message in cases.items():
        with pytest.raises(ValueError, match=message):
            convert(str(tmp_path / f"{name}.pt"), text_encoder=str(roberta_dir), out=str(tmp_path / "out.pt"))
    assert not marker.exists() and not (tmp_path / "out.pt").exists()
    with pytest.raises(ValueError, match="would be overwritten by the audio encoder"):
        convert(str(tmp_path / "pann.pt"), text_encoder=str(roberta_dir), out=str(tmp_path / "audio_encoder.pt"))


def test_missing_or_incomplete_roberta_folder_says_what_it_needs(official, roberta_dir, tmp_path):
    needs = r"needs only config.json and the tokenizer files.*AutoConfig.from_pretrained\(HUB\).save_pretrained\(DIR\)"
    with pytest.raises(TextEncoderFilesError, match=rf"(?s)'{tmp_path / 'absent'}'.*no such folder.*{needs}"):
        convert(str(official[1]), text_encoder=str(tmp_path / "absent"), out=str(tmp_path / "a" / "c.pt"))
    incomplete = tmp_path / "roberta"
    incomplete.mkdir()
    (incomplete / "config.json").write_bytes((roberta_dir / "config.json").read_bytes())
    with pytest.raises(TextEncoderFilesError, match=rf"(?s)'{incomplete}' \(the folder lacks tokenizer files.*{needs}"):
        convert(str(official[1]), text_encoder=str(incomplete), out=str(tmp_path / "b" / "c.pt"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # a converted checkpoint whose folder is gone: the error names the checkpoint and the folder
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (incomplete / name).write_bytes((roberta_dir / name).read_bytes())
    convert(str(official[1]), text_encoder=str(incomplete), out=str(tmp_path / "c" / "best.pt"))
    (incomplete / "config.json").unlink()
    with pytest.raises(TextEncoderFilesError, match=rf"best.pt: text encoder '{incomplete}'.*lacks config.json"):
        load_model(tmp_path / "c" / "best.pt")


# --- the converted checkpoint in the project's commands -------------------------------------------------------------

@pytest.fixture(scope="module")
def converted(official, roberta_dir, tmp_path_factory) -> Path:
    """The official file converted by the command line."""
    out = tmp_path_factory.mktemp("converted") / "clap" / "best.pt"
    done = subprocess.run([sys.executable, "-m", "retrieval.clap", str(official[1]), "--text_encoder",
                           str(roberta_dir), "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and (out.parent / "audio_encoder.pt").is_file()
    return out


def test_search_and_zero_shot_with_the_converted_checkpoint(official, roberta_dir, converted, clips, tmp_path):
    ref = official[0]
    folder = tmp_path / "clips"
    folder.mkdir()
    names = ["3.3s", "7.1s"]
    for name in names:
        sf.write(folder / f"{name}.wav", clips[name].numpy(), SR, subtype="FLOAT")  # read back exactly
    labels = ["rain", "dog", "engine", "bird"]
    prompts = [f"the sound of {label}" for label in labels]
    with torch.no_grad():
        audio = ref.get_audio_embedding([laion_sample(clips[n], fusion=False) for n in names])
        sim = ref.get_text_embedding(laion_tokens(roberta_dir, prompts)) @ audio.T  # (labels, clips)

    result = zero_shot(str(converted), str(folder), labels, prompt="the sound of {label}")
    assert {p["audio_id"]: p["labels"][0] for p in result["predictions"]} == {
        f"{n}.wav": labels[int(k)] for n, k in zip(names, sim.argmax(0))}
    found = search_text(str(converted), str(folder), prompts[1])
    assert {i: s for i, s in found["results"]} == pytest.approx({f"{n}.wav": sim[1, j].item()
                                                                 for j, n in enumerate(names)}, abs=TOL)
    ranked = search_audio(str(converted), str(folder / "7.1s.wav"), ",".join(prompts))
    assert {c: s for c, s in ranked["results"]} == pytest.approx({p: sim[i, 1].item()
                                                                  for i, p in enumerate(prompts)}, abs=TOL)


def test_command_line_help_and_errors(capsys, tmp_path):
    from common.cli import run

    with pytest.raises(SystemExit) as done:
        run(convert, "retrieval.clap", argv=["--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().err  # fire shows help on stderr
    assert "LAION-CLAP" in shown and "--text_encoder" in shown and "audio_encoder.pt" in shown
    with pytest.raises(SystemExit) as done:
        run(convert, "retrieval.clap", argv=[str(tmp_path / "none.pt"), "--text_encoder", str(tmp_path),
                                             "--out", str(tmp_path / "c.pt")])
    assert done.value.code == 1
    assert capsys.readouterr().err.strip() == (f"retrieval.clap: error: {tmp_path / 'none.pt'}: LAION-CLAP "
                                               "checkpoint not found")
