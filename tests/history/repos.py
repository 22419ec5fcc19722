"""Helpers for the history tests: real git repositories and a byte-exact picture of a checkout."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

MODEL_CODE = '''import torch.nn as nn


class Net(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, classes))

    def forward(self, x):
        return self.body(x)
'''


def git(repo: Path, *args: str, check: bool = True) -> str:
    """Run git as a user would, in `repo`, without taking optional locks."""
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def model_code(variant: int) -> str:
    """A different, valid model file per round: the hidden width changes."""
    width = 16 + variant
    return MODEL_CODE.replace(
        "nn.Linear(3 * 32 * 32, classes)",
        f"nn.Linear(3 * 32 * 32, {width}), nn.ReLU(), nn.Linear({width}, classes)",
    )


def make_repo(folder: Path) -> Path:
    """A user's project: a committed model, a helper module, a README; on branch main."""
    folder.mkdir(parents=True, exist_ok=True)
    git(folder, "init", "-q", "-b", "main")
    (folder / "models").mkdir()
    (folder / "models" / "net.py").write_text(MODEL_CODE)
    (folder / "models" / "layers.py").write_text("WIDTH = 16\n")
    (folder / "README.md").write_text("# experiments\n")
    (folder / ".gitignore").write_text("*.log\n")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "first model")
    return folder


def checkout_snapshot(repo: Path) -> dict[str, object]:
    """Everything of the user's checkout we promise not to change, byte for byte.

    `.copilot/` (ours, and excluded) and `.git/` internals other than HEAD, the
    index and the config are left out; user branches and the stash are compared.
    """
    files = {}
    for path in sorted(repo.rglob("*")):
        relative = path.relative_to(repo)
        if relative.parts[0] in (".git", ".copilot") or not path.is_file():
            continue
        files[relative.as_posix()] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
    index = repo / ".git" / "index"
    user_refs = [
        line
        for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
        if line.startswith(("refs/heads/", "refs/tags/", "refs/stash")) and not line.startswith("refs/heads/copilot/")
    ]
    return {
        "status": git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all"),
        "HEAD file": (repo / ".git" / "HEAD").read_bytes(),
        "HEAD": git(repo, "rev-parse", "-q", "--verify", "HEAD", check=False),
        "index bytes": index.read_bytes() if index.exists() else None,
        "index mtime": index.stat().st_mtime_ns if index.exists() else None,
        "config": (repo / ".git" / "config").read_bytes(),
        "user refs": user_refs,
        "files": files,
    }


def isolate_git(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME and global git config of the test's own (user Ada Lovelace, branch main),
    so the developer's identity, hooks or signing settings never leak in."""
    config = home / ".gitconfig"
    config.write_text("[user]\n\tname = Ada Lovelace\n\temail = ada@example.com\n[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in (
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "EMAIL",
    ):
        monkeypatch.delenv(name, raising=False)
    return home
