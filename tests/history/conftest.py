"""Real git repositories in temporary folders, with a git configuration of their own.

Every test gets a HOME and global git config that belong to it (user Ada Lovelace,
branch `main`), so the developer's identity, hooks or signing settings never leak
in, and the no-identity test can remove the identity without touching anyone's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.history.repos import isolate_git, make_repo


@pytest.fixture(autouse=True)
def git_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_git(tmp_path_factory.mktemp("home"), monkeypatch)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "project")
