"""Real file-system faults for tests: a tiny tmpfs (disk full) and a read-only bind mount.

The test machines run tests as root, which ignores file modes, so a fault has to come
from the kernel. Each context manager unmounts on the way out; where mounting is not
allowed (no root, no CAP_SYS_ADMIN) the test is skipped with the reason.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here (mount {' '.join(args)}: {done.stderr.strip()})")


def _unmount(folder: Path) -> None:
    # Lazy, so that a test failing with a file still open leaves no mount behind; the tests
    # assert themselves that nothing beneath is left open (`open_files_beneath`).
    subprocess.run(["umount", "--lazy", str(folder)], check=True, capture_output=True)


@contextmanager
def tiny_disk(folder: Path, size: str) -> Iterator[Path]:
    """`folder` as a tmpfs of `size` (e.g. "2m"): writes past it fail with ENOSPC."""
    folder.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        _unmount(folder)


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder` bind-mounted over itself read-only: every write in it fails with EROFS, even as root."""
    _mount("--bind", str(folder), str(folder))
    try:
        done = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {done.stderr.strip()}")
        yield folder
    finally:
        _unmount(folder)


def open_files_beneath(folder: Path) -> list[str]:
    """What this process holds open beneath `folder` (its descriptors' targets): a mount cannot go while any is."""
    targets = []
    for descriptor in Path("/proc/self/fd").iterdir():
        try:
            target = descriptor.readlink()
        except OSError:
            continue  # the listing's own descriptor, closed meanwhile
        if target.is_relative_to(folder):
            targets.append(str(target))
    return targets
