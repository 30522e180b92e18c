"""MACS (Multi-Annotator Captioned Soundscapes) as distributed: ``MACS.yaml`` and the TAU Urban Acoustic Scenes 2019
development clips it captions.

``MACS.yaml`` holds ``files:``, a list of ``{filename, annotations: [{annotator_id, sentence, tags: [...]}, ...]}``;
``filename`` is a clip's name in the TAU audio folder and becomes its audio id. Each annotation's sentence is a
caption; the union of its tags becomes the clip's labels, kept beside the captions. MACS has no splits of its own:
it is one split (``train`` by default), used for captioning pre-training as the SJTU report does.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from corpus.source import ClipSource, SplitSource


def read_macs(yaml_path: str | os.PathLike, audio_dir: str | os.PathLike, split: str = "train") -> SplitSource:
    """Read ``MACS.yaml`` and point each clip at ``audio_dir/<filename>``.

    Empty sentences are dropped and noted; a clip left with none is refused (``errors``).

    Raises:
        ValueError naming the file (and the entry): missing file or audio folder, not YAML, no ``files`` list, an
            entry without a file name or with a duplicate one, annotations or tags of the wrong type.
    """
    yaml_path, audio_dir = Path(yaml_path), Path(audio_dir)
    if not yaml_path.is_file():
        raise ValueError(f"{yaml_path}: MACS annotation file not found")
    if not audio_dir.is_dir():
        raise ValueError(f"{audio_dir}: audio folder not found (MACS annotations {yaml_path})")
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{yaml_path}: not a YAML file ({type(err).__name__}: {err})") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        raise ValueError(f"{yaml_path}: expected a top-level 'files' list of {{filename, annotations}}")
    source = SplitSource(split=split, clips=[])
    seen: dict[str, int] = {}
    for k, entry in enumerate(files):
        where = f"{yaml_path}, files[{k}]"
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: no filename")
        if name in seen:
            raise ValueError(f"{where}: duplicate filename {name!r} (first at files[{seen[name]}])")
        seen[name] = k
        annotations = entry.get("annotations") or []
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            raise ValueError(f"{where}: 'annotations' must be a list of {{annotator_id, sentence, tags}}")
        captions, labels = [], set()
        for j, note in enumerate(annotations):
            sentence, tags = note.get("sentence"), note.get("tags") or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise ValueError(f"{where}.annotations[{j}]: 'tags' must be a list of words")
            labels.update(t.strip() for t in tags if t.strip())
            if isinstance(sentence, str) and sentence.strip():
                captions.append(sentence.strip())
            else:
                source.dropped.append(f"{where}.annotations[{j}]: {name!r} has no sentence, dropped")
        path = str(audio_dir / name)
        if captions:
            source.clips.append(ClipSource(name, path, captions, sorted(labels)))
        else:
            source.errors.append((os.path.abspath(path), f"no non-empty sentence ({where})"))
    return source
