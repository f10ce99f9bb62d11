"""The sandbox's own tests: a fresh sandbox with fixed data (seed 42, no shuffling) and a raw HTTP client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.server import Sandbox
from tests.sandbox.vtex_client import Vtex


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    sb = Sandbox(seed=42, shuffle=False).start()
    yield sb
    sb.stop()


@pytest.fixture
def vtex(sandbox: Sandbox) -> Vtex:
    return Vtex(sandbox)
