"""The web app and JSON API over caption bundles and audio indexes (``python -m serve``).

Public pieces are imported on first use: ``python -m serve --help`` does not wait for the web framework and torch."""
from common.lazy import lazy_exports

_PUBLIC = {"create_app": "app", "ApiError": "limits", "Limits": "limits"}
__all__ = list(_PUBLIC)

__getattr__ = lazy_exports(__name__, _PUBLIC)
