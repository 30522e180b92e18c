"""Making and preparing corpora: everything before the manifest.

- ``corpus.synth``: ``python -m corpus.synth``, the built-in synthetic corpus (14 synthesized event types)
- ``corpus.prepare``: ``python -m corpus.prepare clotho|audiocaps|synth``, a corpus -> one manifest per split
- ``corpus.clotho``, ``corpus.audiocaps``: readers of the corpora as distributed, into ``SplitSource`` lists
- ``corpus.source``: ``ClipSource``, ``SplitSource`` (what a reader hands to preparation)

The manifest format itself lives in ``features.manifest``: ``features`` reads it, ``corpus`` writes it.
"""
from corpus.source import ClipSource, SplitSource

__all__ = ["ClipSource", "SplitSource", "synth", "prepare", "clotho", "audiocaps"]
