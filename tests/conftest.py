"""Repository-wide pytest wiring: tests under tests/e2e are marked `e2e` by where they live,
so `pytest -m "not e2e"` runs everything that needs no stack; and the tests run in local mode.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).parent / "e2e"

# The image's own checks need a built image (`make image-test` names it); `make test` runs every
# other end-to-end test against the checkout.
collect_ignore = [] if os.environ.get("PAYGATE_STACK_IMAGE") else ["e2e/test_image.py"]

# Tests run on the published development secrets, which only APP_ENV=local accepts; a test of
# production's rules sets APP_ENV itself.
os.environ["APP_ENV"] = "local"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)
