"""aactk: audio captioning and audio-text retrieval.

From Python (:mod:`aactk.api`)::

    import aactk

    captioner = aactk.Captioner.load("model/caption_bundle.pt")
    captioner.caption("clips/")                  # [{"audio_id", "path", "caption", "score", "silent"}, ...]
    retriever = aactk.Retriever.load("retrieval/best.pt")
    retriever.search("a dog barks", "clips/")    # [(audio id, similarity), ...]

From a shell: ``aactk --help`` (:mod:`aactk.cli`). The pieces are imported on first use.
"""
from common.lazy import lazy_exports

_PUBLIC = {"Captioner": "api", "Retriever": "api", "open_index": "api", "build_index": "api"}
__all__ = list(_PUBLIC)

__getattr__ = lazy_exports(__name__, _PUBLIC)
