"""Fixtures of the TUF server tests: both repositories set up on the running server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.server.harness import Server
from tests.server.trust.operator import TufRepo


@pytest.fixture
async def repo(server: Server) -> AsyncIterator[TufRepo]:
    """Both repositories set up on the running server."""
    tuf = TufRepo(server)
    await tuf.set_up()
    yield tuf
