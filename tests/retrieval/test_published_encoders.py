"""The published encoders (BEATs, AST, HTS-AT with fusion; random init, tiny) as the retrieval audio encoder,
through the stage contract: retrieval training -> audio_encoder.pt -> HDF5 features -> captioner training -> beam
search."""
from __future__ import annotations

import json

import pytest

from captioning.decode import decode
from captioning.train import train as train_captioner
from features.extract import extract
from features.store import open_store
from retrieval.train import train as train_retrieval

TINY = {
    "beats": dict(input_patch_size=16, embed_dim=24, encoder_layers=2, encoder_embed_dim=32,
                  encoder_ffn_embed_dim=64, encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4,
                  deep_norm=True, relative_position_embedding=True, gru_rel_pos=True),
    "ast": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_length=128,
                num_mel_bins=32),
    "htsat": dict(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], classes_num=8, fusion_type="aff_2d"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_published_encoder_through_every_stage(name, tiny_corpus, tiny_settings, tmp_path):
    exp = tmp_path / "retrieval"
    settings = tiny_settings(tiny_corpus, exp, **{
        "train.epochs": 1, "model.audio_encoder.name": name, "model.audio_encoder.width": None,
        "model.audio_encoder.sample_rate": None, "model.audio_encoder.spec_augment": None,
        "model.audio_encoder.args": TINY[name]})
    result = train_retrieval(None, settings)
    assert result["epoch"] == 1 and (exp / "audio_encoder.pt").is_file()

    stores = {}
    for split in ("train", "val"):
        stores[split] = extract(str(tiny_corpus[split]), str(exp / "audio_encoder.pt"), str(tmp_path / f"{split}.h5"),
                                batch_size=4, workers=0, progress=False)
        store = open_store(stores[split])
        assert store.attrs["encoder"] == name and len(store.ids) == (48 if split == "train" else 18)

    captions = tmp_path / "captioner"
    train_captioner(None, {
        "exp_dir": str(captions), "data.train_features": str(stores["train"]),
        "data.train_captions": str(tiny_corpus["train"]), "data.val_features": str(stores["val"]),
        "data.val_captions": str(tiny_corpus["val"]), "train.epochs": 1, "train.batch_size": 16,
        "train.average_last": 1, "model.encoder_args": {"hidden": 16, "n_layers": 1},
        "model.decoder_args": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32},
        "val.beam_size": 2, "val.max_len": 8})
    out = decode(str(captions / "averaged.pt"), str(stores["val"]), str(tmp_path / "pred.json"), beam_size=2,
                 max_len=8, references=str(tiny_corpus["val"] / "captions.json"))
    predictions = json.loads((tmp_path / "pred.json").read_text(encoding="utf-8"))
    assert out["clips"] == len(predictions) == 18 and all(p["caption"] for p in predictions)
