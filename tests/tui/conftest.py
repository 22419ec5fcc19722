"""Shared set-up for the app's tests: async tests run on asyncio (Textual's loop), times in UTC."""

from __future__ import annotations

import time

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _utc_clock(monkeypatch: pytest.MonkeyPatch):
    """Log lines show wall-clock times; UTC keeps them the same on every machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
