"""Semantic caption metrics: SBERT-sim, and FENSE and SPIDEr-FL (Zhou et al. 2022) where FENSE's fluency-error
checker is on the machine.

- **SBERT-sim**: a candidate's mean cosine similarity to its references, on Sentence-BERT embeddings. The published
  metric uses ``paraphrase-TinyBERT-L6-v2``; offline, the default here is the packaged all-MiniLM-L6-v2, and every
  report names the model (:func:`sbert_model_name`), since the two give different numbers.
- **Fluency errors**: FENSE's error checker, a BERT with a linear head on the first token, reads a caption with its
  punctuation removed, lower-cased; a caption is an error where the sigmoid of the last head output ("error")
  exceeds 0.9. Its official checkpoints (``echecker_clotho_audiocaps_base.ckpt``, ``..._tiny.ckpt``) are files
  ``{"model_type", "num_classes", "state_dict"}``; ``model_type`` (``bert-base-uncased``) must be a local folder or in
  the local Hugging Face cache, for its config and tokenizer. Nothing is downloaded: give the file (``echecker``, or
  the environment variable ``AAC_FENSE_ECHECKER``), otherwise FENSE and SPIDEr-FL are reported unavailable.
- **FENSE** = SBERT-sim x (1 - 0.9 x error); **SPIDEr-FL** = SPIDEr x (1 - 0.9 x error), per caption, then averaged.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from ._coco import Scores
from .spice import MetricUnavailableError

SBERT_DEFAULT = "minilm"  # the packaged all-MiniLM-L6-v2; published SBERT-sim: paraphrase-TinyBERT-L6-v2
ECHECKER_ENV = "AAC_FENSE_ECHECKER"
ERROR_THRESHOLD = 0.9
PENALTY = 0.9
ECHECKER_MAX_TOKENS = 64


def sbert_model_name(model: str = SBERT_DEFAULT) -> str:
    """How a report names the SBERT-sim model (an alias or a folder)."""
    return "all-MiniLM-L6-v2 (packaged)" if model == SBERT_DEFAULT else Path(model).name or model


@lru_cache(maxsize=2)
def _sentence_transformer(model: str):
    from sentence_transformers import SentenceTransformer

    from common.model_folder import refuse_custom_code
    from common.text_encoder import TextEncoderFilesError, resolve_text_encoder

    source = resolve_text_encoder(model)
    refuse_custom_code(source, f"SBERT-sim model '{model}'")
    try:
        return SentenceTransformer(source, device="cpu", local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise TextEncoderFilesError(f"SBERT-sim model '{model}': cannot load '{source}' offline "
                                    f"({type(err).__name__}: {err}); give a local sentence-transformers folder")


_embedded: dict[tuple[str, str], np.ndarray] = {}  # (model, sentence) -> unit vector, for this process's later calls


def _embeddings(model: str, texts: list[str], batch_size: int) -> np.ndarray:
    """Unit-norm sentence embeddings (N, D); a sentence embedded before in this process (the references, when
    several systems are scored) is not embedded again."""
    new = list(dict.fromkeys(t for t in texts if (model, t) not in _embedded))
    if new:
        vectors = _sentence_transformer(model).encode(new, batch_size=batch_size, normalize_embeddings=True,
                                                      convert_to_numpy=True)
        _embedded.update(((model, t), v) for t, v in zip(new, vectors))
    return np.stack([_embedded[model, t] for t in texts]) if texts else np.zeros((0, 0), np.float32)


def sbert_sim(candidates: list[str], mult_references: list[list[str]], *, model: str = SBERT_DEFAULT,
              batch_size: int = 64) -> Scores:
    """SBERT-sim ``{"sbert_sim"}``, per candidate the mean cosine similarity to its references."""
    flat = [r for refs in mult_references for r in refs]
    cands, refs = (_embeddings(model, texts, batch_size) for texts in (candidates, flat))
    bounds = np.cumsum([0] + [len(r) for r in mult_references])
    sents = [float((refs[a:b] @ cand).mean()) for cand, a, b in zip(cands, bounds[:-1], bounds[1:])]
    return {"sbert_sim": float(np.mean(sents))}, {"sbert_sim": sents}


def find_echecker(echecker: str | os.PathLike | None = None) -> Path:
    """The error checker's checkpoint (``echecker``, else ``$AAC_FENSE_ECHECKER``), or MetricUnavailableError."""
    path = echecker if echecker is not None else os.environ.get(ECHECKER_ENV)
    if not path:
        raise MetricUnavailableError(
            f"FENSE's fluency-error checker is not given: get echecker_clotho_audiocaps_base.ckpt (FENSE's V0.1 "
            f"release) and bert-base-uncased's config and tokenizer, then pass the file with --echecker or set "
            f"{ECHECKER_ENV}")
    if not Path(path).is_file():
        raise MetricUnavailableError(f"{path}: FENSE's fluency-error checker not found (--echecker or {ECHECKER_ENV})")
    return Path(path)


class FluencyChecker:
    """FENSE's error checker, from an official checkpoint file: ``error_probs(captions)``."""

    def __init__(self, path: str | os.PathLike) -> None:
        import torch

        from common.checkpoint import read_torch_file
        from common.text_encoder import TextEncoderFilesError, load_pretrained

        self.path = Path(path)
        # data only: a file holding Python objects is refused by name, never with torch's advice to unpickle it
        saved = read_torch_file(self.path, what="FENSE error checker")
        if not isinstance(saved, dict) or not {"model_type", "num_classes", "state_dict"} <= saved.keys():
            raise ValueError(f"{self.path}: not a FENSE error checker (expected a dict with model_type, num_classes "
                             f"and state_dict)")
        state = {k: v for k, v in saved["state_dict"].items() if k != "encoder.embeddings.position_ids"}
        try:
            self.encoder, self.tokenizer = load_pretrained(saved["model_type"], pretrained=False)
        except TextEncoderFilesError as err:
            raise MetricUnavailableError(f"{self.path}: its BERT is not on this machine: {err}") from None
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, int(saved["num_classes"]))
        encoder_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        head_state = {k[len("clf."):]: v for k, v in state.items() if k.startswith("clf.")}
        unknown = [k for k in state if not k.startswith(("encoder.", "clf."))]
        try:
            if unknown:
                raise RuntimeError(f"unexpected keys {unknown[:5]}")
            self.encoder.load_state_dict(encoder_state, strict=False)  # the unused pooler may be absent
            missing = [k for k in self.encoder.state_dict() if k not in encoder_state and not k.startswith("pooler.")]
            if missing:
                raise RuntimeError(f"missing keys {missing[:5]}")
            self.head.load_state_dict(head_state)
        except RuntimeError as err:
            raise ValueError(f"{self.path}: does not fit its model_type {saved['model_type']!r} ({err})") from None
        self.encoder.eval()

    def error_probs(self, captions: list[str], batch_size: int = 64) -> np.ndarray:
        """The probability that each caption has a fluency error (the head's last output)."""
        import torch

        texts = [re.sub(r"[^\w\s]", "", c).lower() for c in captions]
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(texts[i:i + batch_size], truncation=True, padding=True,
                                       max_length=ECHECKER_MAX_TOKENS, return_tensors="pt")
                hidden = self.encoder(**batch).last_hidden_state[:, 0]
                out.append(torch.sigmoid(self.head(hidden))[:, -1].numpy())
        return np.concatenate(out) if out else np.zeros(0)


@lru_cache(maxsize=2)
def _checker(path: Path) -> FluencyChecker:
    return FluencyChecker(path)


def fluency_errors(candidates: list[str], echecker: str | os.PathLike | None = None) -> np.ndarray:
    """1.0 for each candidate the error checker flags, else 0.0 (MetricUnavailableError without the checker)."""
    return (_checker(find_echecker(echecker)).error_probs(candidates) > ERROR_THRESHOLD).astype(float)


def fluency_penalised(name: str, sentence_scores: list[float], errors: np.ndarray) -> Scores:
    """``{name: ...}``: each score times (1 - 0.9 x its caption's error), and their mean."""
    sents = [float(s * (1.0 - PENALTY * e)) for s, e in zip(sentence_scores, errors)]
    return {name: float(np.mean(sents))}, {name: sents}
