"""Audio pre-training by tagging (stage 0 of the SJTU pipeline, AudioSet's role): binary cross-entropy on labels, on
prepared splits or on the synthetic corpus's scenes generated on the fly; writes the ``audio_encoder.pt`` that
retrieval training starts from. ``python -m tagging.train --help``."""
from tagging.data import TAGS, GeneratedScenes, LabelDataset, generated_clip, scene_tags
from tagging.model import Tagger, macro_average_precision, validate

__all__ = ["TAGS", "GeneratedScenes", "LabelDataset", "Tagger", "generated_clip", "macro_average_precision",
           "scene_tags", "validate"]
