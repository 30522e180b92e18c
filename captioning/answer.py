"""Closed-set answers from a prefix-LM captioner: each question (or classification prompt) gets the candidate answer
the LM finds most likely after the audio and the prompt, scored as the sum of the log-probabilities of its tokens and
``<eos>``. Audio question answering (``qa.json``, :mod:`eval.qa`) and classification by prompt both use it.

    python -m captioning.answer --checkpoint exp/lm/best.pt --features eval.h5 --qa data/synth/evaluation \
        --train_qa data/synth/development --out answers.json

The candidates of a question type are the (normalised) answers that type has in ``--train_qa`` (default: in
``--qa`` itself); the scores by type are printed beside those of always giving the type's most frequent training
answer.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from captioning.checkpoint import load_captioner
from captioning.data import open_checked_store
from captioning.models.prefix_lm import AUDIO_MARK, PrefixLMCaptioner
from common.cli import run
from common.io import write_text_atomic
from eval.qa import QA, format_scores, majority_baseline, normalise_answer, read_qa, score_answers
from features.store import FeatureStore

QA_PROMPT = AUDIO_MARK + " {question}"


@torch.no_grad()
def answer_logprobs(model: PrefixLMCaptioner, frames: torch.Tensor, frame_lengths: torch.Tensor,
                    prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
    """log p(answer, <eos> | audio, prompt) per row: ``frames`` (B, T, D), B prompts and B answers -> (B,)."""
    ids = [torch.tensor(model.tokenizer(a, add_special_tokens=False)["input_ids"] + [model.eos]) for a in answers]
    tokens = pad_sequence(ids, batch_first=True, padding_value=model.pad)  # (B, L)
    logp = model(frames, frame_lengths, tokens, list(prompts))["logits"].float().log_softmax(-1)
    picked = logp.gather(-1, tokens[..., None])[..., 0]  # (B, L)
    valid = torch.arange(tokens.shape[1])[None] < torch.tensor([len(i) for i in ids])[:, None]
    return (picked * valid).sum(1)


def rank_answers(model: PrefixLMCaptioner, store: FeatureStore, questions: Sequence[tuple[str, str]],
                 candidates: Sequence[Sequence[str]], prompt: str = QA_PROMPT, batch_size: int = 32) -> list[str]:
    """For each (audio_id, question), the most likely of its candidates (``prompt`` holds ``{question}``)."""
    rows = [(k, c) for k, options in enumerate(candidates) for c in options]
    scores = torch.empty(len(rows))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        clips = [torch.from_numpy(store.frames(questions[k][0])).float() for k, _ in chunk]
        frames, lengths = pad_sequence(clips, batch_first=True), torch.tensor([len(c) for c in clips])
        prompts = [prompt.format(question=questions[k][1]) for k, _ in chunk]
        scores[start:start + len(chunk)] = answer_logprobs(model, frames, lengths, prompts, [c for _, c in chunk])
    best: dict[int, tuple[float, str]] = {}
    for (k, c), score in zip(rows, scores.tolist()):
        if k not in best or score > best[k][0]:
            best[k] = (score, c)
    return [best[k][1] for k in range(len(questions))]


def candidate_answers(qa: QA) -> dict[str, list[str]]:
    """The normalised answers each question type has in ``qa``, sorted."""
    out: dict[str, set[str]] = {}
    for qs in qa.values():
        for q in qs:
            out.setdefault(q["type"], set()).add(normalise_answer(q["answer"]))
    return {t: sorted(a) for t, a in sorted(out.items())}


def answer_qa(model: PrefixLMCaptioner, store: FeatureStore, qa: QA, candidates: Mapping[str, list[str]],
              prompt: str = QA_PROMPT, batch_size: int = 32) -> dict[tuple[str, str], str]:
    """``{(audio_id, question): answer}`` for every question of ``qa``, each chosen among its type's candidates."""
    items = [(audio_id, q) for audio_id, qs in qa.items() for q in qs]
    absent = sorted({q["type"] for _, q in items} - set(candidates))
    if absent:
        raise ValueError(f"no candidate answers for question type(s) {absent}")
    keys = [(audio_id, q["question"]) for audio_id, q in items]
    answers = rank_answers(model, store, keys, [candidates[q["type"]] for _, q in items], prompt, batch_size)
    return dict(zip(keys, answers))


def main(checkpoint: str, features: str, qa: str, out: str, train_qa: str | None = None, prompt: str = QA_PROMPT,
         batch_size: int = 32) -> dict:
    """Answer every question of ``qa`` (a qa.json file or its split folder) for the clips of the feature store
    ``features`` with the prefix-LM captioner ``checkpoint``; write ``out`` (``[{"audio_id", "question",
    "answer"}]``) and print accuracy by question type beside the majority-answer baseline of ``train_qa``.

    Args:
        prompt: the question prompt, with ``[audio]`` first and ``{question}`` (as the model was trained).
        batch_size: (clip, question, candidate) rows scored in one pass.
    """
    model, _, ckpt = load_captioner(checkpoint)
    if not isinstance(model, PrefixLMCaptioner):
        raise ValueError(f"{checkpoint}: a seq2seq captioner; answering questions needs a prefix-LM captioner")
    if "{question}" not in prompt:
        raise ValueError(f"Invalid prompt. (expected a string containing '{{question}}', found {prompt!r})")
    questions, reference = read_qa(qa), read_qa(train_qa) if train_qa else None
    store = open_checked_store(features, expect={k: v for k, v in ckpt["feature_attrs"].items()
                                                 if k != "checkpoint_sha256" or v}, need_ids=list(questions))
    predictions = answer_qa(model, store, questions, candidate_answers(reference or questions), prompt, batch_size)
    rows = [{"audio_id": a, "question": q, "answer": answer} for (a, q), answer in predictions.items()]
    write_text_atomic(out, json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    scores = score_answers(predictions, questions)
    baseline = majority_baseline(reference, questions) if reference else None
    print(format_scores(scores, baseline))
    return {"scores": scores, "baseline": baseline}


if __name__ == "__main__":
    run(main, "captioning.answer", text_args=("checkpoint", "features", "qa", "out", "train_qa", "prompt"))
