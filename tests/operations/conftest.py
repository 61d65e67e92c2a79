"""Operations fixtures: the runtime's upstream client reports to the metrics and the circuit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.runtime import Runtime
from tests.fixtures.metrics import observed


@pytest.fixture
async def runtime(runtime: Runtime) -> AsyncIterator[Runtime]:
    async for wired in observed(runtime):
        yield wired
