"""Input checks shared by the caption metrics: done once, where input enters."""
from typing import Any


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        inner = {type(v).__name__ for v in value[:20]}
        return f"{type(value).__name__}[{' | '.join(sorted(inner)) or '?'}]"
    return type(value).__name__


def check_candidates(candidates: Any) -> None:
    if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
        raise ValueError(f"Invalid candidates. (expected list[str], found {_describe(candidates)})")


def check_mult_references(mult_references: Any) -> None:
    if not isinstance(mult_references, list):
        raise ValueError(f"Invalid mult_references. (expected list[list[str]], found {_describe(mult_references)})")
    for i, refs in enumerate(mult_references):
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"Invalid mult_references. (expected list[list[str]], found {_describe(refs)} "
                             f"at position {i})")
        if not refs:
            raise ValueError(f"Invalid mult_references. (expected at least one reference per candidate, "
                             f"found none at position {i})")


def check_metric_inputs(candidates: Any, mult_references: Any) -> None:
    """Raise ``ValueError`` unless ``candidates`` is ``list[str]`` and ``mult_references`` a
    ``list[list[str]]`` of the same, non-zero length with at least one reference per candidate."""
    check_candidates(candidates)
    check_mult_references(mult_references)
    if len(candidates) != len(mult_references):
        raise ValueError(f"Invalid inputs. (expected as many candidates as reference lists, "
                         f"found {len(candidates)} candidates and {len(mult_references)} reference lists)")
    if len(candidates) == 0:
        raise ValueError("Invalid candidates. (expected at least one candidate, found an empty list)")
