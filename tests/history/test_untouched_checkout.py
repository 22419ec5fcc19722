"""The promise: the user's checkout (status, HEAD, index bytes, every file) is byte-identical
after a whole session, and after the process is SIGKILLed at random points mid-commit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from copilot.history.experiment import ExperimentHistory
from tests.history.repos import MODEL_CODE, checkout_snapshot, git, model_code
from tests.waiting import poll_until

RUN = "20261120-234500-net-3f2a"

# A co-pilot session that never stops: rounds, notes, rollbacks, undo and redo, in a loop.
SESSION = r"""
import sys
from pathlib import Path
from copilot.errors import HistoryError
from copilot.history.experiment import ExperimentHistory

repo, run = Path(sys.argv[1]), sys.argv[2]
try:
    history = ExperimentHistory.open(repo, run)
except HistoryError:
    history = ExperimentHistory.start(repo / "models" / "net.py", run)
step = 0
while True:
    step += 1
    info = history.commit_round(
        kind="arch", summary=f"variant {step}", findings=["flat loss"], rationale="try it",
        model_code=f"# variant {step}\n", hparams={"lr": 0.1 / step} if step % 2 else None,
        advisor="offline", before={"val_accuracy": 0.1, "epoch": step}, verdict="accepted",
    )
    print(info.round, flush=True)
    history.record_result(info.round, {"val_accuracy": 0.2, "epochs_trained": 1})
    if step % 5 == 0:
        history.rollback(1)
    if step % 5 == 3:
        history.undo()
        history.redo()
"""


def prepare_user_checkout(repo: Path) -> None:
    """A checkout mid-work: an edited model, a staged file, an untracked and an ignored file."""
    (repo / "models" / "net.py").write_text(MODEL_CODE + "\n# my own edit\n")
    (repo / "README.md").write_text("# experiments\nstaged line\n")
    git(repo, "add", "README.md")
    (repo / "scratch.py").write_text("print('untracked')\n")
    (repo / "train.log").write_text("ignored\n")


def processes_using(folder: Path) -> list[int]:
    """Processes (other than us) working in `folder` or naming it on their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(folder)) or str(folder) in command:
            found.append(int(entry.name))
    return found


def wait_for_orphans(folder: Path) -> None:
    """git commands a killed session started may still be finishing; let them."""
    poll_until(lambda: not processes_using(folder), lambda: f"processes still working in {folder}: {processes_using(folder)}", timeout=30)


def test_whole_session_leaves_the_checkout_byte_identical(repo: Path) -> None:
    prepare_user_checkout(repo)
    before = checkout_snapshot(repo)

    history = ExperimentHistory.start(repo / "models" / "net.py", RUN, hparams={"lr": 0.1})
    for step in range(1, 6):
        info = history.commit_round(
            kind="arch" if step % 2 else "hparams",
            summary=f"step {step}",
            findings=["finding"],
            rationale="why",
            model_code=model_code(step) if step % 2 else None,
            hparams=None if step % 2 else {"lr": 0.1 / step},
            advisor="offline",
            before={"val_accuracy": 0.1 * step},
            verdict="accepted",
        )
        history.record_result(info.round, {"val_accuracy": 0.1 * step + 0.05})
    history.diff(0, 5)
    history.show(3)
    history.rollback(2)
    history.undo()
    history.redo()
    assert history.close()
    ExperimentHistory.open(repo).model_path_in_worktree()

    assert checkout_snapshot(repo) == before
    assert git(repo, "stash", "list") == ""
    assert git(repo, "diff", "--cached", "--name-only") == "README.md\n", "the user's staged change is still staged"


def test_sigkill_at_random_points_never_touches_the_checkout(repo: Path) -> None:
    prepare_user_checkout(repo)
    before = checkout_snapshot(repo)
    chooser = random.Random(20261120)
    killed_rounds = []
    for attempt in range(6):
        session = subprocess.Popen(
            [sys.executable, "-c", SESSION, str(repo), RUN],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert session.stdout is not None
        killed_rounds.append(session.stdout.readline().strip())
        time.sleep(chooser.uniform(0.0, 0.25))  # not a wait: a random moment to kill it at, the race is the test
        whole_group = attempt % 2 == 1
        if whole_group:
            os.killpg(session.pid, signal.SIGKILL)  # the session and the git command it was running
        else:
            os.kill(session.pid, signal.SIGKILL)  # the session only: its git command finishes alone
        session.wait(timeout=30)
        session.stdout.close()
        wait_for_orphans(repo)

        assert checkout_snapshot(repo) == before, f"attempt {attempt}: the user's checkout changed"
        assert not (repo / ".git" / "index.lock").exists()
        if whole_group:
            # git itself was killed holding a lock, if unlucky: only ever copilot's own (copilot
            # deletes no ref, so packed-refs is never locked). A temporary index's lock copilot
            # clears by itself (its process is gone); a ref lock the error's hint tells the
            # user to delete, as done here (copilot deletes it too once it is older than any
            # live git could hold it).
            for lock in (repo / ".git").rglob("*.lock"):
                relative = lock.relative_to(repo / ".git").as_posix()
                if relative.startswith(f"worktrees/{RUN}/copilot-index-"):
                    continue
                assert relative.startswith(("refs/copilot/", "refs/heads/copilot/", "refs/notes/copilot")), relative
                lock.unlink()
        rounds = ExperimentHistory.open(repo, RUN).rounds()
        assert [info.round for info in rounds] == list(range(len(rounds))), "rounds stay consecutive"
        if not whole_group:
            history = ExperimentHistory.open(repo, RUN)
            tip_model = git(repo, "show", f"{history.branch}:models/net.py")
            assert history.model_path_in_worktree().read_text() == tip_model, "the worktree is brought to the tip"
            assert git(history.worktree, "status", "--porcelain", "--untracked-files=no") == ""

    assert all(line.isdigit() for line in killed_rounds), "every session committed before it was killed"
    assert checkout_snapshot(repo) == before
    ExperimentHistory.open(repo, RUN).model_path_in_worktree()
    assert not list((repo / ".git" / "worktrees" / RUN).glob("copilot-index-*")), "leftovers of killed sessions are gone"
