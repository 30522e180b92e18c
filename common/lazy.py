"""Package names imported on first use (PEP 562), so that a command's ``--help`` or a light command does not pay
for torch, transformers or the web framework that a package's other modules import."""
from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name of ``exports`` (name -> submodule of ``package``) is
    imported from its submodule when first asked for; any other name is an AttributeError."""
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{exports[name]}"), name)
    return __getattr__
