"""Shared fixtures: the real data that lives beside a checkout (``../shared/data``)."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real audio and captions for tests; skips cleanly where a checkout has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (a folder 'shared/data' beside the checkout)")
    return SHARED_DATA
