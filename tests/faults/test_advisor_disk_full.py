"""The advisor's database on a full disk (a real tmpfs): a checkpoint write that fails still
leaves nothing of the run folder open once the session is closed.

SqliteSaver closes its cursor after its commit, so a commit that fails leaves the cursor in
the traceback's frames; sqlite3 defers closing a connection while a cursor lives. The
cycle collector is off in this test, as it may be for a long while in a real process, so
only references dropped, not a lucky collection, can close the file.
"""

from __future__ import annotations

import errno
import gc
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from copilot.advisor.snapshot import build_snapshot
from copilot.advisor.workflow import AdvisorSession
from copilot.config import load_settings
from copilot.errors import is_disk_full
from tests.advisor.scripted import ScriptedChecker, ScriptedRoles, hparam_answer, write_run
from tests.faults.mounts import open_files_beneath, tiny_disk


@pytest.fixture
def no_cycle_collection() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def fill(disk: Path) -> None:
    """Write until the disk has no byte left."""
    with open(disk / "filler", "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC



def test_a_checkpoint_write_on_a_full_disk_leaves_the_database_closed(tmp_path: Path, no_cycle_collection: None) -> None:
    with tiny_disk(tmp_path / "disk", "1m") as disk:
        run = write_run(disk)
        session = AdvisorSession.open(run, ScriptedRoles("hyperparameters", hparams=[hparam_answer()]), load_settings(config_dir=tmp_path), check_code=ScriptedChecker())
        snapshot = build_snapshot(run)
        fill(disk)
        failure: BaseException | None = None
        try:
            session.assess(snapshot)
        except sqlite3.Error as error:
            failure = error
        finally:
            session.close()
        assert failure is not None and is_disk_full(failure), failure
        del failure
        assert open_files_beneath(disk) == [], "advisor.sqlite is still open after close"
