"""`copilot run | demo | resume | report`: exit codes, headless runs, SIGHUP and resume, the demo.

Headless runs go through `copilot.cli.main` in this process or, where a signal must
reach them, as real `python -m copilot` processes; they train a few dozen samples.
The demo test uses the demo's real data set and settings (the product's promise), so
it is marked slow.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from copilot.cli import main
from copilot.config import Settings
from copilot.events import RunStarted
from copilot.run_folder import RunFolder
from copilot.session.controller import Session
from copilot.commands.session import prepare_demo_folder
from copilot.history import ExperimentHistory
from tests.history.repos import git
from tests.session.conftest import SAMPLE_MODELS, TINY_DATA, TINY_TRIALS, git_home, project  # noqa: F401  (fixtures)
from tests.waiting import poll_until

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(autouse=True)
def _tiny_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flags set what the user sets; tiny data and the CPU come from the environment, as a user's would."""
    monkeypatch.setenv("COPILOT_DATA__TRAIN_SIZE", str(TINY_DATA["train_size"]))
    monkeypatch.setenv("COPILOT_DATA__VAL_SIZE", str(TINY_DATA["val_size"]))
    monkeypatch.setenv("COPILOT_TRAIN__DEVICE", "cpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # Trials are tested on their own below; elsewhere here they would only slow the runs down.
    monkeypatch.setenv("COPILOT_TRIALS__ENABLED", "false")


@pytest.fixture
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(project)
    return project


def test_user_errors_exit_2(in_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "no model given" in capsys.readouterr().err
    assert main(["run", "missing.py", "--headless"]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert main(["run", "bad_cnn.py", "--auto-accept", "all"]) == 2
    assert "needs --headless" in capsys.readouterr().err
    assert main(["resume", "no-such-run", "--headless"]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err

    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    (outside / "net.py").write_text((SAMPLE_MODELS / "bad_cnn.py").read_text())
    assert main(["run", str(outside / "net.py"), "--headless"]) == 2
    err = capsys.readouterr().err
    assert "not inside a git repository" in err and "--init-git" in err
    assert not (in_project / ".copilot" / "runs").exists() or not list((in_project / ".copilot" / "runs").iterdir())


def test_a_target_accuracy_outside_0_to_1_is_a_user_error(in_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "bad_cnn.py", "--headless", "--target-accuracy", "95"]) == 2
    assert "target_accuracy" in capsys.readouterr().err
    assert not (in_project / ".copilot" / "runs").exists()


def test_a_crash_nobody_fixes_exits_2_with_a_report(in_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "broken_cnn.py", "--headless", "--auto-accept", "all", "--max-rounds", "0", "--run-name", "crash"])
    captured = capsys.readouterr()
    assert code == 2
    assert "shapes cannot be multiplied" in captured.err
    report = in_project / ".copilot" / "runs" / "crash" / "report.md"
    assert "last trainer error" in report.read_text() and str(report) in captured.out.replace("\n", "")


def test_report_finds_runs_under_a_configured_runs_dir(
    in_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COPILOT_RUNS_DIR", str(in_project / "elsewhere"))
    code = main(["run", "broken_cnn.py", "--headless", "--auto-accept", "all", "--max-rounds", "0", "--run-name", "moved"])
    assert code == 2
    (in_project / "elsewhere" / "moved" / "report.md").unlink()
    capsys.readouterr()

    assert main(["report", "moved"]) == 0
    assert (in_project / "elsewhere" / "moved" / "report.md").exists()


def test_headless_auto_accept_validated_takes_the_fix_that_won_its_trial(
    in_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COPILOT_TRIALS__ENABLED", "true")
    for key, value in TINY_TRIALS.items():
        monkeypatch.setenv(f"COPILOT_TRIALS__{key.upper()}", str(value))
    code = main(
        ["run", "broken_cnn.py", "--headless", "--auto-accept", "validated", "--max-rounds", "1",
         "--epochs", "3", "--batch-size", "16", "--run-name", "trialled"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "trialling 1 candidate beside the unchanged run: 2 arms x 6 steps" in out
    assert "predicted: " in out and "measured: unchanged " in out and "winner: " in out
    assert "auto-accept (validated): accept" in out and "r1 committed as" in out
    assert "continues from its trial's end" in out
    # The trial's curves as a plain-text chart: both arms, their figures and the noise, no colour codes.
    chart = _trial_chart(out)
    # The broken model's unchanged run fails its trial: its line says why, the change's curve is drawn.
    assert chart[1].startswith("unchanged    forward pass failed") and chart[2].startswith("this change  val loss ")
    assert chart[2].endswith("at trial step 6") and chart[3] == "noise not measured"
    assert "this change" in "\n".join(chart[4:]) and any("┤" in line for line in chart)  # the plot and its legend
    assert "\x1b[" not in "\n".join(chart)
    # `copilot show r1` draws the same curves from the run's ledger.
    assert main(["show", "r1", "--run", "trialled"]) == 0
    assert _trial_chart(capsys.readouterr().out) == chart


def _trial_chart(out: str) -> list[str]:
    """The plain-text trial chart in `out`: from its title line to its x axis' label line."""
    lines = out.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("trial curves: "))
    end = next(index for index in range(start, len(lines)) if lines[index].rstrip().endswith("trial step"))
    return lines[start : end + 1]


def test_without_trials_proposals_are_not_trialled_and_auto_accept_validated_takes_none(
    in_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COPILOT_TRIALS__ENABLED", "true")  # the flag wins over the environment
    code = main(
        ["run", "broken_cnn.py", "--headless", "--auto-accept", "validated", "--no-trials", "--max-rounds", "1",
         "--epochs", "3", "--batch-size", "16", "--run-name", "untrialled"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 2  # the crash nobody fixed
    assert "not trialled (trials are off (--no-trials))" in out
    assert "auto-accept (validated): reject" in out and "committed as" not in out


def test_headless_auto_accept_commits_and_exits_0(in_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["run", "bad_cnn.py", "--headless", "--auto-accept", "all", "--max-rounds", "1",
         "--epochs", "5", "--batch-size", "16", "--run-name", "auto"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "auto-accept (all): accept" in out and "r1 committed as" in out
    history = ExperimentHistory.open(in_project, "auto")
    assert [info.kind for info in history.rounds()] == ["baseline", "arch"]
    assert (in_project / ".copilot" / "runs" / "auto" / "report.md").exists()
    assert main(["report", "auto"]) == 0
    assert "report: " in capsys.readouterr().out


def test_a_package_that_fails_to_import_is_one_line_with_its_fix_and_no_round(
    in_project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A whole training script importing a package that is installed but broken here (as PyPI's
    # torchvision is beside a CPU-only torch): the machine's set-up, not a model the advisor could fix.
    site = tmp_path_factory.mktemp("site-packages")
    (site / "visionish").mkdir()
    (site / "visionish" / "__init__.py").write_text("raise RuntimeError('operator visionish::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))  # the trainer is another process
    script = (SAMPLE_MODELS / "bad_cnn.py").read_text().replace("import torch\n", "import torch\nfrom visionish import datasets\n", 1)
    (in_project / "script.py").write_text(script)
    git(in_project, "add", "script.py")
    git(in_project, "commit", "-q", "-m", "a training script")

    code = main(["run", "script.py", "--headless", "--auto-accept", "all", "--run-name", "env"])

    captured = capsys.readouterr()
    assert code == 2
    assert "error: script.py:12 `from visionish import datasets` failed: RuntimeError: operator visionish::nms" in captured.err
    assert "hint: reinstall visionish" in captured.err
    assert "assessing the run" not in captured.out
    run = in_project / ".copilot" / "runs" / "env"
    assert not (run / "ledger.jsonl").exists()
    assert [info.kind for info in ExperimentHistory.open(in_project, "env").rounds()] == ["baseline"]


def _read_until(process: subprocess.Popen, marker: str, timeout: float = 180.0) -> str:
    """Everything the process printed up to and including `marker` (prompts end without a newline)."""
    assert process.stdout is not None
    stdout = process.stdout
    printed = bytearray()
    os.set_blocking(stdout.fileno(), False)

    def shown() -> bool:
        if marker.encode() in printed:
            return True
        assert process.poll() is None, f"no {marker!r} in the output:\n{printed.decode(errors='replace')[-3000:]}"
        printed.extend(stdout.read() or b"")
        return marker.encode() in printed

    poll_until(shown, lambda: f"no {marker!r} in the output:\n{printed.decode(errors='replace')[-3000:]}", timeout)
    return printed.decode(errors="replace")


def _copilot(project: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "copilot", *args],
        cwd=project,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )


def _fill(pipe_write_end: int) -> None:
    """Fill the pipe the process prints to: what it prints next blocks, as on a terminal that went away."""
    os.set_blocking(pipe_write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(pipe_write_end, b"x" * 4096)


def test_sigterm_ends_the_run_within_a_bound_whatever_the_terminal_does(in_project: Path) -> None:
    """SIGHUP takes the same way (`copilot.session.shutdown`); the next test sends it with a terminal that reads."""
    signum = signal.SIGTERM
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "copilot", "run", "bad_cnn.py", "--headless", "--epochs", "400", "--batch-size", "16", "--run-name", "stuck"]
    # stdin stays open and silent: the prompt waits, as a user who is away.
    process = subprocess.Popen(command, cwd=in_project, stdin=subprocess.PIPE, stdout=write_end, stderr=write_end)
    run = in_project / ".copilot" / "runs" / "stuck"
    try:
        os.set_blocking(read_end, False)

        def trained() -> bool:
            if (run / "metrics.jsonl").exists() and b'"type":"steps"' in (run / "metrics.jsonl").read_bytes():
                return True
            assert process.poll() is None, "the run never trained"
            with contextlib.suppress(BlockingIOError):
                os.read(read_end, 1 << 16)  # a terminal that reads, until now
            return False

        poll_until(trained, "the run never trained", timeout=180)
        _fill(write_end)
        process.send_signal(signum)
        # What it prints on the way out blocks: only the bounded shutdown can end it.
        assert process.wait(60) == 128 + signum
    finally:
        process.kill()
        process.stdin.close()
        os.close(read_end)
        os.close(write_end)
    assert list((run / "checkpoints").glob("*.pt")), "the checkpoint comes first"

    settings = Settings(runs_dir=in_project / ".copilot" / "runs")
    resumed = Session.reopen(settings, RunFolder(run))
    try:
        events: list = []
        deadline = time.monotonic() + 180
        while not any(isinstance(e, RunStarted) for e in events):
            assert time.monotonic() < deadline, "the run did not resume"
            events += resumed.poll_events(0.2)
        started = next(e for e in events if isinstance(e, RunStarted))
        assert started.resumed_from_epoch is not None, "the trainer starts again from the checkpoint"
    finally:
        resumed.stop()


def test_sighup_at_the_prompt_then_resume_with_the_proposal_waiting(in_project: Path) -> None:
    first = _copilot(in_project, "run", "bad_cnn.py", "--headless", "--epochs", "400", "--batch-size", "16", "--run-name", "hup")
    try:
        shown = _read_until(first, "Accept this change?")
        first.send_signal(signal.SIGHUP)
        assert first.wait(60) == 129
    finally:
        first.kill()
    shown += first.stdout.read().decode(errors="replace")
    assert "SIGHUP: writing a checkpoint and stopping" in shown and "copilot resume hup" in shown
    run = in_project / ".copilot" / "runs" / "hup"
    assert list((run / "checkpoints").glob("*.pt"))
    assert not (run / "ledger.jsonl").exists()  # the proposal waits at the gate, undecided
    summary = shown.split("Proposal: ")[1].splitlines()[0].strip()

    second = _copilot(in_project, "resume", "hup", "--headless")
    try:
        resumed = _read_until(second, "Accept this change?")
        assert "A proposal from before the restart is waiting" in resumed
        assert f"Proposal: {summary}" in resumed
        second.stdin.write(b"y\n")
        second.stdin.flush()
        resumed += _read_until(second, "model is now")
        second.send_signal(signal.SIGHUP)
        assert second.wait(60) == 129
    finally:
        second.kill()
    assert "r1 committed as" in resumed
    ledger = [json.loads(line) for line in (run / "ledger.jsonl").read_text().splitlines()]
    assert ledger[-1]["verdict"]["decision"] == "accept" and ledger[-1]["commit"]


def test_the_demo_folder_is_a_repository_of_its_own(tmp_path: Path, git_home: Path) -> None:
    config_before = (git_home / ".gitconfig").read_bytes()
    folder = tmp_path / "demo"
    model = prepare_demo_folder(folder)
    assert model.read_text() == (SAMPLE_MODELS / "bad_cnn.py").read_text()
    assert git(folder, "log", "--format=%an <%ae>|%cn <%ce>|%s").strip() == (
        "copilot <copilot@localhost>|copilot <copilot@localhost>|demo: the study's broken CNN"
    )
    assert git(folder, "status", "--porcelain") == ""
    assert prepare_demo_folder(folder) == model  # reused as it is
    assert git(folder, "rev-list", "--count", "HEAD").strip() == "1"
    assert (git_home / ".gitconfig").read_bytes() == config_before


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_headless_demo_reaches_95_percent_in_at_most_two_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("COPILOT_DATA__TRAIN_SIZE", "COPILOT_DATA__VAL_SIZE", "OMP_NUM_THREADS", "COPILOT_TRIALS__ENABLED"):
        monkeypatch.delenv(name)  # the demo as a user gets it: the default data set and settings
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    assert main(["demo", "--headless", "--auto-accept", "validated"]) == 0
    minutes = (time.monotonic() - started) / 60
    out = capsys.readouterr().out
    folder = tmp_path / "copilot-demo"
    (run,) = (folder / ".copilot" / "runs").iterdir()
    epochs = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "epoch"
    ]
    ledger = [json.loads(line) for line in (run / "ledger.jsonl").read_text().splitlines()]
    first_diagnosis_epoch = ledger[0]["epoch"]
    accepted = [info for info in ExperimentHistory.open(folder).rounds() if info.round > 0]
    print(f"demo: {minutes:.1f} min, first diagnosis at epoch {first_diagnosis_epoch}, "
          f"{len(accepted)} rounds, final validation accuracy {epochs[-1]['val_accuracy']:.3f}")  # fmt: skip
    assert first_diagnosis_epoch <= 2
    assert 1 <= len(accepted) <= 2
    assert epochs[-1]["val_accuracy"] >= 0.95
    assert "report: " in out and (run / "report.md").exists()
