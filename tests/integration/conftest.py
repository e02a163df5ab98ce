"""Fixtures for tests on the real broker: a topic space of their own per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from jetbridge.settings import Settings
from tests.support.streams_worker import TopicSpace


@pytest.fixture
async def space(settings: Settings) -> AsyncIterator[TopicSpace]:
    """Every topic of the architecture under a unique prefix (its own schema subjects and groups too)."""
    topics = TopicSpace(settings)
    await topics.open()
    try:
        yield topics
    finally:
        await topics.close()
