"""Corpus readers: each turns a corpus as distributed into :class:`SplitSource` lists for preparation.

A reader only reads caption tables and locates files; probing audio and writing manifests is
:mod:`features.prepare`'s job, shared by all corpora.
"""
from features.corpora.source import ClipSource, SplitSource

__all__ = ["ClipSource", "SplitSource"]
