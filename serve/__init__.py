"""The web app and JSON API over caption bundles and audio indexes (``python -m serve``).

Public pieces are imported on first use: ``python -m serve --help`` does not wait for the web framework and torch."""
from importlib import import_module

_PUBLIC = {"create_app": "app", "ApiError": "limits", "Limits": "limits"}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'serve' has no attribute {name!r}")
    return getattr(import_module(f"serve.{_PUBLIC[name]}"), name)
