"""The web app and JSON API over caption bundles and audio indexes (``python -m serve``)."""
from serve.app import create_app
from serve.limits import ApiError, Limits

__all__ = ["ApiError", "Limits", "create_app"]
