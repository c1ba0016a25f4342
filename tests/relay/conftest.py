"""Fixtures of the relay unit tests: an in-process fake Redis (Lua included), nothing real."""

from __future__ import annotations

import fakeredis
import pytest


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    """A private fake Redis per test (each ``FakeRedis()`` has its own server)."""
    return fakeredis.FakeRedis()
