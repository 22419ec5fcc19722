"""A full disk under the runs folder (a real 2 MB tmpfs): one `error:`/`hint:` pair naming the
space left and how to continue, no half-written checkpoint, no torn line, and the run resumes
once space is freed; for `copilot train` and for a whole co-pilot session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from copilot.cli import main
from copilot.events import EpochSummary, parse_event
from tests.faults.conftest import SAMPLE_MODELS
from tests.faults.mounts import open_files_beneath, tiny_disk

CONFIG = """
runs_dir = "runs"

[data]
train_size = 48
val_size = 16
"""


def test_a_full_disk_ends_the_run_in_one_line_and_it_resumes_after_freeing_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "copilot.toml").write_text(CONFIG, encoding="utf-8")
    shutil.copyfile(SAMPLE_MODELS / "bad_cnn.py", tmp_path / "bad_cnn.py")  # 0.7 MB checkpoints: the third fills it
    with tiny_disk(tmp_path / "runs", "2m") as runs:
        run = runs / "full"
        assert main(["train", "bad_cnn.py", "--device", "cpu", "--epochs", "30", "--run-name", "full"]) == 2
        err = capfd.readouterr().err
        lines = err.strip().splitlines()
        assert lines[0].startswith(f"error: no space left on {run} (") and lines[0].endswith(" MB free)"), err
        assert lines[1] == "hint: free space and run `copilot train --resume full`", err
        assert len(lines) == 2 and "Traceback" not in err, "no traceback wall"

        assert not list(run.rglob("*.partial")), "no half-written checkpoint"
        text = (run / "metrics.jsonl").read_text(encoding="utf-8")
        assert text.endswith("\n") and all(parse_event(line) for line in text.splitlines()), "no torn line"
        checkpoints = sorted((run / "checkpoints").iterdir())
        last = int(checkpoints[-1].stem.removeprefix("epoch"))

        for old in checkpoints[:-1]:  # the user frees space
            old.unlink()
        assert main(["train", "--resume", "full", "--epochs", str(last + 1)]) == 0
        epochs = [parse_event(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [e.epoch for e in epochs if isinstance(e, EpochSummary)][-1] == last + 1


def test_a_full_disk_under_a_co_pilot_session_is_one_line_naming_the_run(
    user_project: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # The advisor's own writes (advisor.sqlite, the ledger, the report) meet the full disk too.
    project = user_project
    (project / ".git" / "info" / "exclude").write_text("copilot.toml\nruns/\n", encoding="utf-8")
    (project / "copilot.toml").write_text(CONFIG, encoding="utf-8")
    with tiny_disk(project / "runs", "2m") as runs:
        run = runs / "full"
        argv = ["run", "bad_cnn.py", "--headless", "--auto-accept", "validated", "--epochs", "30", "--run-name", "full"]
        assert main(argv) == 2
        err = capfd.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 2 and "Traceback" not in err, err
        assert lines[0].startswith(f"error: no space left on {run} (") and lines[0].endswith(" MB free)"), err
        assert lines[1] == "hint: free space and run `copilot resume full`", err
        assert not list(run.rglob("*.partial"))
        for jsonl in ("metrics.jsonl", "ledger.jsonl"):
            text = (run / jsonl).read_text(encoding="utf-8") if (run / jsonl).exists() else ""
            assert not text or text.endswith("\n"), f"a torn line in {jsonl}"
        assert open_files_beneath(run) == [], "the session left files of its run open (advisor.sqlite)"
