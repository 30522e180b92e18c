"""Tokenizers for caption metrics.

``ptb_tokenize`` is the COCO caption evaluation tokenizer: Stanford's PTBTokenizer (the jar shipped with
pycocoevalcap) with lower-casing, then removal of the punctuation tokens pycocoevalcap removes. It is run here
directly (one JVM for any number of sentences) rather than through ``pycocoevalcap``'s wrapper so that
(1) the encoding is UTF-8 whatever the locale, (2) no temporary file is written into the installed package, and
(3) characters Java treats as line breaks inside a caption cannot shift captions out of alignment.
On plain captions its output equals ``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer`` (tested).

``simple_tokenize`` is a dependency-free approximation for SCST rewards; see its docstring.
"""
import os
import re
import string
import subprocess

from pycocoevalcap.tokenizer import ptbtokenizer as _ptb

from ._java import require_java

_PTB_JAR = os.path.join(os.path.dirname(os.path.abspath(_ptb.__file__)), _ptb.STANFORD_CORENLP_3_4_1_JAR)
_DROP = frozenset(_ptb.PUNCTUATIONS)
_PUNCT_RE = re.compile(f"[{re.escape(string.punctuation)}]")


def ptb_tokenize(sentences: list[str]) -> list[str]:
    """PTB-tokenize, lower-case and strip punctuation tokens; returns space-joined tokens, one per sentence."""
    if not sentences:
        return []
    java = require_java("The PTB tokenizer used by the caption metrics")
    # One sentence per line: anything Python or Java may read as a line break becomes a space.
    lines = [" ".join(s.splitlines()) for s in sentences]
    proc = subprocess.run(
        [java, "-cp", _PTB_JAR, "edu.stanford.nlp.process.PTBTokenizer",
         "-preserveLines", "-lowerCase", "-encoding", "UTF-8"],
        input="\n".join(lines).encode("utf-8"), capture_output=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"PTB tokenizer failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')}")
    out = proc.stdout.decode("utf-8").split("\n")
    # The tokenizer drops the final newline; trailing empty sentences show up as missing lines.
    out += [""] * (len(lines) - len(out))
    if len(out) != len(lines):
        raise RuntimeError(f"PTB tokenizer returned {len(out)} lines for {len(lines)} sentences")
    return [" ".join(w for w in line.rstrip().split(" ") if w and w not in _DROP) for line in out]


def ptb_tokenize_inputs(candidates: list[str], mult_references: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Tokenize candidates and references in one JVM call, keeping the nesting of ``mult_references``."""
    flat = [r for refs in mult_references for r in refs]
    tokens = ptb_tokenize(list(candidates) + flat)
    cands, rest = tokens[: len(candidates)], tokens[len(candidates):]
    refs_out, pos = [], 0
    for refs in mult_references:
        refs_out.append(rest[pos: pos + len(refs)])
        pos += len(refs)
    return cands, refs_out


def simple_tokenize(sentence: str) -> list[str]:
    """Lower-case, turn ASCII punctuation into spaces, split on whitespace.

    An approximation of :func:`ptb_tokenize` that needs no Java. Both lower-case and drop punctuation; they differ
    where PTB splits or keeps things inside words: PTB gives ``dog 's`` / ``do n't`` / ``well-known`` where this
    gives ``dog s`` / ``don t`` / ``well known``. For exact agreement with pycocoevalcap, pre-tokenize with
    :func:`ptb_tokenize` and pass word lists.
    """
    return _PUNCT_RE.sub(" ", sentence.lower()).split()
