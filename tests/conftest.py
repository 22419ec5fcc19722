"""Shared test set-up: deterministic, CPU-only, and never touching the user's config."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray COPILOT_* settings or AWS credentials from the developer's shell leak into a test."""
    for name in list(os.environ):
        if name.startswith("COPILOT_") or name.startswith("AWS_"):
            monkeypatch.delenv(name, raising=False)
