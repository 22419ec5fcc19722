"""Finding a run by id from where the user is: the settings' runs folder, and the demo's."""

from __future__ import annotations

from pathlib import Path

import pytest

from copilot.errors import CopilotError
from copilot.run_folder import DEFAULT_RUNS_DIR, DEMO_DIR, RunFolder, find_run


def make_run(runs: Path, run_id: str) -> Path:
    folder = runs / run_id
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("", encoding="utf-8")
    return folder


def test_the_demos_runs_are_found_from_the_folder_the_demo_was_started_in(tmp_path: Path) -> None:
    demo_run = make_run(tmp_path / DEMO_DIR / DEFAULT_RUNS_DIR, "20261201-120000-bad-cnn-ab12")
    assert find_run("20261201-120000", root=tmp_path).path == demo_run
    assert find_run(None, root=tmp_path).path == demo_run  # the latest run, when this folder has none of its own
    own = make_run(tmp_path / DEFAULT_RUNS_DIR, "20261201-130000-net-cd34")
    assert find_run(None, root=tmp_path).path == own  # the folder's own runs come first
    with pytest.raises(CopilotError, match="ambiguous"):
        find_run("20261201", root=tmp_path)


def test_a_run_not_found_names_only_folders_that_exist(tmp_path: Path) -> None:
    with pytest.raises(CopilotError) as nowhere:
        find_run("nosuch", root=tmp_path)
    assert "no runs folder at" in nowhere.value.hint and "`ls" not in nowhere.value.hint
    make_run(tmp_path / DEMO_DIR / DEFAULT_RUNS_DIR, "20261201-120000-bad-cnn-ab12")
    with pytest.raises(CopilotError) as elsewhere:
        find_run("nosuch", root=tmp_path)
    assert elsewhere.value.hint == f"list runs with `ls {(tmp_path / DEMO_DIR / DEFAULT_RUNS_DIR).resolve()}`"


def test_a_note_stores_a_checkpoint_relative_to_the_run_and_an_old_absolute_one_still_reads(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run").create()
    checkpoint = run.checkpoints / "epoch0002.pt"
    assert run.relative(checkpoint) == "checkpoints/epoch0002.pt"
    moved = RunFolder(tmp_path / "clone" / "run")
    assert moved.resolve("checkpoints/epoch0002.pt") == moved.path / "checkpoints" / "epoch0002.pt"
    assert run.resolve(str(checkpoint)) == checkpoint, "notes written before kept absolute paths"
    assert run.relative(tmp_path / "elsewhere.pt") == str(tmp_path / "elsewhere.pt")


def test_a_checkpoint_name_already_taken_gets_a_new_one(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run").create()
    assert run.unused_checkpoint("epoch0005.pt") == run.checkpoints / "epoch0005.pt"
    (run.checkpoints / "epoch0005.pt").write_bytes(b"r2's weights")
    (run.checkpoints / "epoch0005-2.pt").write_bytes(b"a rollback's")
    assert run.unused_checkpoint("epoch0005.pt") == run.checkpoints / "epoch0005-3.pt"
