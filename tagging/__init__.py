"""Audio pre-training by tagging (stage 0 of the SJTU pipeline, AudioSet's role): binary cross-entropy on labels, on
prepared splits or on the synthetic corpus's scenes generated on the fly; writes the ``audio_encoder.pt`` that
retrieval training starts from (``python -m tagging.train``), and ships the encoders it made
(``python -m tagging.pretrained``).

Public pieces are imported on first use: a command's ``--help`` does not wait for torch."""
from common.lazy import lazy_exports

_PUBLIC = {
    "TAGS": "data", "GeneratedScenes": "data", "LabelDataset": "data", "generated_clip": "data", "scene_tags": "data",
    "Tagger": "model", "macro_average_precision": "model", "validate": "model",
    "pretrained_encoder": "pretrained",
}
__all__ = list(_PUBLIC)

__getattr__ = lazy_exports(__name__, _PUBLIC)
