"""Answers from a prefix-LM captioner. Closed set: each question (or classification prompt) gets the candidate answer
the LM finds most likely after the audio and the prompt, scored as the sum of the log-probabilities of its tokens and
``<eos>`` (:meth:`~captioning.models.prefix_lm.PrefixLMCaptioner.candidate_logprobs`). Open ended (``--generate
true``, Pengi's framing): the LM writes the answer. Audio question answering (``qa.json``, :mod:`eval.qa`) uses it
here; classification by prompt is the closed set with the labels as candidates.

    python -m captioning.answer --checkpoint exp/lm/best.pt --features eval.h5 --qa data/synth/evaluation \
        --train_qa data/synth/development --out answers.json [--generate true]

The candidates of a question type are the (normalised) answers that type has in ``--train_qa`` (default: in
``--qa`` itself); the scores by type are printed beside those of always giving the type's most frequent training
answer.
"""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import itertools
import json
from typing import Iterator, Mapping, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from captioning.checkpoint import load_captioner
from captioning.data import open_checked_store
from captioning.models.prefix_lm import AUDIO_MARK, LMVocabulary, PrefixLMCaptioner
from captioning.search import beam_search
from common.cli import run
from common.device import resolve_device
from common.tensor import module_device
from common.io import write_text_atomic
from eval.qa import QA, format_scores, majority_baseline, normalise_answer, read_qa, score_answers
from features.store import FeatureStore

QA_PROMPT = AUDIO_MARK + " {question}"
GENERATED_TOKENS = 8  # tokens an open answer may take: the synthetic corpus's longest answers take 4


def prompt_batches(model: PrefixLMCaptioner, store: FeatureStore, prompted: Sequence[tuple[str, str]],
                   batch_size: int = 32) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor, list[str]]]:
    """The items (audio_id, prompt) in batches of one prompt token length (the model runs such a batch at once):
    each batch's item indices, padded frames, frame lengths and prompts."""
    length = {k: len(model.after_ids(p)) for k, (_, p) in enumerate(prompted)}
    order = sorted(range(len(prompted)), key=lambda k: (length[k], k))
    device = module_device(model)
    for _, group in itertools.groupby(order, key=length.get):
        group = list(group)
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            clips = [torch.from_numpy(store.frames(prompted[k][0])).float() for k in chunk]
            yield (chunk, pad_sequence(clips, batch_first=True).to(device),
                   torch.tensor([len(c) for c in clips], device=device), [prompted[k][1] for k in chunk])


def score_candidates(model: PrefixLMCaptioner, store: FeatureStore, prompted: Sequence[tuple[str, str]],
                     candidates: Sequence[Sequence[str]], batch_size: int = 32) -> list[torch.Tensor]:
    """For each (audio_id, prompt), the log-probability of each of its candidates as the answer; each prompt is run
    once for all its candidates."""
    scores: dict[int, torch.Tensor] = {}
    for chunk, frames, lengths, prompts in prompt_batches(model, store, prompted, batch_size):
        scores.update(zip(chunk, model.candidate_logprobs(frames, lengths, prompts,
                                                          [list(candidates[k]) for k in chunk])))
    return [scores[k] for k in range(len(prompted))]


@torch.no_grad()
def generate_answers(model: PrefixLMCaptioner, store: FeatureStore, prompted: Sequence[tuple[str, str]],
                     batch_size: int = 32, beam_size: int = 3, max_len: int = GENERATED_TOKENS) -> list[str]:
    """For each (audio_id, prompt), the answer the LM writes (beam search, the most likely finished beam): open
    ended, as Pengi answers, so it may be no answer any training question had."""
    answers: dict[int, str] = {}
    vocab = LMVocabulary(model, "")  # for its decode only: no fingerprint is compared here
    for chunk, frames, lengths, prompts in prompt_batches(model, store, prompted, batch_size):
        found = beam_search(model, frames, lengths, bos=model.bos, eos=model.eos, pad=model.pad, beam_size=beam_size,
                            max_len=max_len, prompts=prompts)
        answers.update(zip(chunk, map(vocab.decode, found)))
    return [answers[k] for k in range(len(prompted))]


def rank_answers(model: PrefixLMCaptioner, store: FeatureStore, questions: Sequence[tuple[str, str]],
                 candidates: Sequence[Sequence[str]], prompt: str = QA_PROMPT, batch_size: int = 32) -> list[str]:
    """For each (audio_id, question), the most likely of its candidates (:func:`score_candidates`); ``prompt`` holds
    ``{question}``."""
    prompted = [(audio_id, prompt.format(question=q)) for audio_id, q in questions]
    scores = score_candidates(model, store, prompted, candidates, batch_size)
    return [options[int(s.argmax())] for options, s in zip(candidates, scores)]


def load_prefix_lm(checkpoint: str, features: str, need_ids: Sequence[str], device: str = "cpu"
                   ) -> tuple[PrefixLMCaptioner, FeatureStore]:
    """The prefix-LM captioner of ``checkpoint`` on ``device`` and the feature store ``features`` checked against it
    (its encoder, these clips)."""
    where = resolve_device(device)  # a bad device is refused before the checkpoint is read
    model, _, ckpt = load_captioner(checkpoint)
    if not isinstance(model, PrefixLMCaptioner):
        raise ValueError(f"{checkpoint}: a seq2seq captioner; answering by prompt needs a prefix-LM captioner")
    store = open_checked_store(features, expect={k: v for k, v in ckpt["feature_attrs"].items()
                                                 if k != "checkpoint_sha256" or v}, need_ids=list(need_ids))
    return model.to(where), store


def candidate_answers(qa: QA) -> dict[str, list[str]]:
    """The normalised answers each question type has in ``qa``, sorted."""
    out: dict[str, set[str]] = {}
    for qs in qa.values():
        for q in qs:
            out.setdefault(q["type"], set()).add(normalise_answer(q["answer"]))
    return {t: sorted(a) for t, a in sorted(out.items())}


def answer_qa(model: PrefixLMCaptioner, store: FeatureStore, qa: QA, candidates: Mapping[str, list[str]] | None,
              prompt: str = QA_PROMPT, batch_size: int = 32) -> dict[tuple[str, str], str]:
    """``{(audio_id, question): answer}`` for every question of ``qa``, each chosen among its type's candidates, or
    with ``candidates`` None written by the LM (:func:`generate_answers`)."""
    items = [(audio_id, q) for audio_id, qs in qa.items() for q in qs]
    keys = [(audio_id, q["question"]) for audio_id, q in items]
    if candidates is None:
        return dict(zip(keys, generate_answers(model, store, [(a, prompt.format(question=q)) for a, q in keys],
                                               batch_size)))
    absent = sorted({q["type"] for _, q in items} - set(candidates))
    if absent:
        raise ValueError(f"no candidate answers for question type(s) {absent}")
    answers = rank_answers(model, store, keys, [candidates[q["type"]] for _, q in items], prompt, batch_size)
    return dict(zip(keys, answers))


def main(checkpoint: str, features: str, qa: str, out: str, train_qa: str | None = None, prompt: str = QA_PROMPT,
         batch_size: int = 32, generate: bool = False, device: str = "auto") -> dict:
    """Answer every question of ``qa`` (a qa.json file or its split folder) for the clips of the feature store
    ``features`` with the prefix-LM captioner ``checkpoint``; write ``out`` (``[{"audio_id", "question",
    "answer"}]``) and print accuracy by question type beside the majority-answer baseline of ``train_qa``.

    Args:
        prompt: the question prompt, with ``[audio]`` first and ``{question}`` (as the model was trained).
        batch_size: questions scored in one pass (with all their candidates).
        generate: open-ended answers: each written by the LM (beam search, at most 8 tokens) instead of chosen
            among the candidates; right when equal to the truth once normalised ("The dog." is "dog").
        device: where the model runs: auto (this process's GPU where there is one, else the CPU), cpu, cuda or
            cuda:N.
    """
    resolve_device(device)  # a bad device is refused before any work
    if "{question}" not in prompt:
        raise ValueError(f"Invalid prompt. (expected a string containing '{{question}}', found {prompt!r})")
    questions, reference = read_qa(qa), read_qa(train_qa) if train_qa else None
    model, store = load_prefix_lm(checkpoint, features, list(questions), device)
    candidates = None if generate else candidate_answers(reference or questions)
    predictions = answer_qa(model, store, questions, candidates, prompt, batch_size)
    rows = [{"audio_id": a, "question": q, "answer": answer} for (a, q), answer in predictions.items()]
    write_text_atomic(out, json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    scores = score_answers(predictions, questions)
    baseline = majority_baseline(reference, questions) if reference else None
    print(format_scores(scores, baseline))
    return {"scores": scores, "baseline": baseline}


if __name__ == "__main__":
    run(main, "captioning.answer", text_args=("checkpoint", "features", "qa", "out", "train_qa", "prompt"))
