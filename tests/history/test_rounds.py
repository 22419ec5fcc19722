"""Rounds over a long run: the table, diffs, notes, rollback, undo and redo, read back from git."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from copilot.errors import HistoryError
from copilot.history.experiment import ExperimentHistory
from copilot.history.hparams_file import read_hparams
from copilot.history.messages import parse_metrics
from copilot.history.rounds import RoundInfo, RoundResults
from tests.history.repos import checkout_snapshot, git, model_code

RUN = "20261120-234500-net-3f2a"
ROUNDS = 8  # most tests; the long-run test makes 50


def hparams_for(round_number: int) -> dict[str, float | int | str | None]:
    return {"optimizer": "Adam", "lr": round(0.1 / round_number, 6), "batch_size": 64, "grad_clip": None}


def commit(history: ExperimentHistory, round_number: int) -> RoundInfo:
    """Odd rounds change the architecture, even rounds the hyperparameters."""
    architecture = round_number % 2 == 1
    return history.commit_round(
        kind="arch" if architecture else "hparams",
        summary=f"{'widen the hidden layer' if architecture else 'lower the learning rate'} (step {round_number})",
        findings=[f"validation accuracy flat for {round_number} epochs"],
        rationale="More capacity." if architecture else "Smaller steps.",
        model_code=model_code(round_number) if architecture else None,
        hparams=None if architecture else hparams_for(round_number),
        advisor="offline" if round_number % 3 else "bedrock:us.anthropic.claude-3-7-sonnet-20250219-v1:0",
        before={"val_accuracy": round(0.1 + round_number / 100, 3), "val_loss": 2.3 - round_number / 50, "epoch": round_number},
        verdict="edited" if round_number % 5 == 0 else "accepted",
    )


def run_with_rounds(repo: Path, count: int) -> ExperimentHistory:
    history = ExperimentHistory.start(repo / "models" / "net.py", RUN, hparams={"optimizer": "SGD", "lr": 0.1})
    for round_number in range(1, count + 1):
        info = commit(history, round_number)
        history.record_result(info.round, {"val_accuracy": round(0.11 + round_number / 100, 3), "epochs_trained": 2})
    return history


@pytest.fixture
def history(repo: Path) -> ExperimentHistory:
    return run_with_rounds(repo, ROUNDS)


def tip_tree(repo: Path, revision: str) -> str:
    return git(repo, "rev-parse", f"{revision}^{{tree}}").strip()


def test_fifty_rounds_then_log_diff_rollback_undo_redo(repo: Path) -> None:
    history = run_with_rounds(repo, 50)
    rounds = history.rounds()
    assert [info.round for info in rounds] == list(range(51))
    assert [info.kind for info in rounds[1:5]] == ["arch", "hparams", "arch", "hparams"]
    r7 = rounds[7]
    assert r7.subject == "arch(r7): widen the hidden layer (step 7)"
    assert (r7.val_accuracy_before, r7.val_accuracy_after) == (pytest.approx(0.17), pytest.approx(0.18))
    assert r7.before["epoch"] == 7 and r7.advisor == "offline" and r7.verdict == "accepted"
    assert rounds[9].advisor == "bedrock:us.anthropic.claude-3-7-sonnet-20250219-v1:0"
    assert rounds[10].verdict == "edited"
    assert rounds[0].after == rounds[1].before, "round 0 has no note: its results come from round 1's 'before'"

    diff = history.diff(3, 40)
    assert diff.files == ("models/net.py", "models/net.hparams.toml")
    assert "-        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 19)" in diff.patch
    assert "+        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 55)" in diff.patch
    assert "+lr = 0.0025" in diff.patch
    [acc] = [change for change in diff.metrics if change.name == "val_accuracy"]
    assert (acc.old, acc.new, acc.change) == (pytest.approx(0.14), pytest.approx(0.51), pytest.approx(0.37))

    rolled = history.rollback(10)
    assert (rolled.round, rolled.kind, rolled.rollback_to) == (51, "rollback", 10)
    assert rolled.subject.startswith("rollback(r51): back to r10: lower the learning rate")
    assert tip_tree(repo, history.branch) == tip_tree(repo, rounds[10].sha)
    assert history.model_path_in_worktree().read_text() == model_code(9)
    assert read_hparams(history.hparams_path_in_worktree().read_text())["lr"] == 0.01
    assert git(history.worktree, "status", "--porcelain") == ""

    assert history.undo() == history.rounds()[-1], "undo returns the round now at the tip"
    assert history.rounds()[-1].sha == rounds[-1].sha
    assert git(repo, "rev-parse", history.branch).strip() == rounds[-1].sha
    assert git(repo, "rev-parse", f"refs/copilot/{RUN}/attic/{rolled.sha}").strip() == rolled.sha
    assert history.model_path_in_worktree().read_text() == model_code(49)

    redone = history.redo()
    assert redone.sha == rolled.sha and redone.rollback_to == 10
    assert git(repo, "for-each-ref", "--format=%(objectname)", f"refs/copilot/{RUN}/attic/") == f"{rolled.sha}\n", (
        "the attic keeps every round ever taken off; redo deletes no ref"
    )
    with pytest.raises(HistoryError, match="nothing to redo"):
        history.redo()
    assert [info.round for info in history.rounds()] == list(range(52))


def test_undo_twice_then_redo_twice_restores_the_line(history: ExperimentHistory, repo: Path) -> None:
    rounds = history.rounds()
    assert history.undo().round == 7
    assert history.undo().round == 6
    assert history.rounds()[-1].round == 6
    assert history.model_path_in_worktree().read_text() == model_code(5)

    assert history.redo().round == 7
    assert history.redo().round == 8
    assert [info.sha for info in history.rounds()] == [info.sha for info in rounds]
    redone = history.rounds()[-1].results
    assert redone is not None and redone.final, "undo left the round: its results are final"
    assert redone.model_copy(update={"final": None}) == rounds[-1].results, "the note travels with the commit"
    assert git(history.worktree, "status", "--porcelain") == ""


def test_new_round_after_undo_ends_the_redo_chain_but_loses_nothing(history: ExperimentHistory, repo: Path) -> None:
    undone = history.rounds()[-1]
    history.undo()
    replacement = commit(history, 9)
    assert replacement.round == 8, "the freed round number is reused"
    with pytest.raises(HistoryError, match="nothing to redo"):
        history.redo()
    assert git(repo, "rev-parse", f"refs/copilot/{RUN}/attic/{undone.sha}").strip() == undone.sha
    history.undo()
    assert history.redo().sha == replacement.sha, "undoing the new round makes it the one to redo"


def test_undo_works_across_restarts(history: ExperimentHistory, repo: Path) -> None:
    history.undo()
    reopened = ExperimentHistory.open(repo)
    assert (reopened.run_id, reopened.branch, reopened.worktree) == (history.run_id, history.branch, history.worktree)
    assert reopened.redo().round == 8
    assert ExperimentHistory.open(repo / "models", RUN[:15]).rounds()[-1].round == 8


def test_trailers_and_notes_parse_back_with_git_itself(history: ExperimentHistory, repo: Path) -> None:
    r5 = history.round(5)
    message = git(repo, "log", "-1", "--format=%B", r5.sha)
    trailers = subprocess.run(
        ["git", "interpret-trailers", "--parse"], input=message, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert trailers == [
        f"Copilot-Run: {RUN}",
        "Copilot-Round: 5",
        "Copilot-Kind: arch",
        "Copilot-Advisor: offline",
        "Copilot-Before: val_accuracy=0.15 val_loss=2.2 epoch=5",
        "Copilot-Verdict: edited",
    ]
    assert "Findings:\n- validation accuracy flat for 5 epochs\n\nRationale:\nMore capacity." in message
    note = json.loads(git(repo, "notes", "--ref=copilot", "show", r5.sha))
    assert note == {"val_accuracy": 0.16, "epochs_trained": 2, "final": True}, "r6 was committed on it: r5 is final"


def test_git_log_with_copilot_notes_shows_the_metrics(history: ExperimentHistory, repo: Path) -> None:
    history.record_result(ROUNDS, {"val_loss": 1.25, "training_s": 31.5, "checkpoint": "/runs/x/epoch-100.pt"})
    shown = git(repo, "log", "-1", "--notes=copilot", history.branch)
    assert "Notes (copilot):" in shown
    assert '"val_accuracy": 0.19' in shown and '"val_loss": 1.25' in shown and '"training_s": 31.5' in shown
    assert history.round(ROUNDS).results == RoundResults(
        val_accuracy=0.19, val_loss=1.25, epochs_trained=2, training_s=31.5, checkpoint="/runs/x/epoch-100.pt"
    ), "record_result merges into the note"


def test_rounds_committed_with_the_old_val_acc_name_read_as_val_accuracy(history: ExperimentHistory, repo: Path) -> None:
    """Branches made before the rename keep their figures: `val_acc` in trailers and notes reads as today's name."""
    old_note = {
        "val_acc": 0.42, "epochs_trained": 2, "wall_time_s": 600.0,
        "trial": {"steps": 100, "wall_time_s": 9.0, "val_acc": 0.4, "unchanged_val_acc": 0.1},
    }  # fmt: skip
    sha = history.round(3).sha
    git(repo, "notes", "--ref=copilot", "add", "-f", "-m", json.dumps(old_note), sha)
    results = history.round(3).results
    assert results is not None and results.val_accuracy == 0.42 and results.trial is not None
    # The round's old wall-clock time counted the human's waits: not read as its training time.
    assert results.training_s is None and results.trial.wall_time_s == 9.0
    assert (results.trial.val_accuracy, results.trial.unchanged_val_accuracy) == (0.4, 0.1)
    assert parse_metrics("val_acc=0.15 val_loss=2.2 epoch=5") == {"val_accuracy": 0.15, "val_loss": 2.2, "epoch": 5}


def test_show_gives_the_message_and_the_change(history: ExperimentHistory) -> None:
    detail = history.show(2)
    assert detail.message.startswith("hparams(r2): lower the learning rate (step 2)\n")
    assert "-lr = 0.1\n" in detail.patch and "+lr = 0.05\n" in detail.patch
    assert "models/net.py" not in detail.patch


def test_unknown_rounds_and_bad_results_are_refused(history: ExperimentHistory) -> None:
    with pytest.raises(HistoryError, match="no round r99"):
        history.diff(1, 99)
    with pytest.raises(HistoryError, match="already the latest round"):
        history.rollback(ROUNDS)
    with pytest.raises(ValueError):
        history.record_result(3, {"validation_acc": 0.5})  # not a result field
    with pytest.raises(ValueError, match="rejected changes are not commits"):
        history.commit_round(
            kind="arch", summary="x", findings=[], rationale="", model_code="", hparams=None,
            advisor="offline", before={}, verdict="rejected",  # type: ignore[arg-type]
        )


def test_undo_refuses_round_zero_foreign_commits_and_pushed_rounds(repo: Path, tmp_path: Path) -> None:
    history = ExperimentHistory.start(repo / "models" / "net.py", RUN)
    with pytest.raises(HistoryError, match="r0 is where the run started"):
        history.undo()

    commit(history, 1)
    (history.worktree / "notes.txt").write_text("my own commit\n")
    git(history.worktree, "add", "notes.txt")
    git(history.worktree, "commit", "-q", "-m", "note to self")
    with pytest.raises(HistoryError, match="not one of copilot's rounds"):
        history.undo()
    assert history.rounds()[-1].round == 1, "a user's commit on the branch is not a round"
    assert commit(history, 2).round == 2

    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", history.branch)
    with pytest.raises(HistoryError, match="already pushed") as error:
        history.undo()
    assert "copilot rollback" in error.value.hint


def test_refuses_to_move_the_branch_under_someone_elses_checkout(history: ExperimentHistory, repo: Path) -> None:
    assert history.close() is True
    assert not history.worktree.exists()
    git(repo, "switch", "-q", history.branch)
    before = checkout_snapshot(repo)
    for session in (history, ExperimentHistory.open(repo)):
        assert session.worktree == history.worktree, "the user's checkout is never taken for copilot's worktree"
        with pytest.raises(HistoryError, match="is checked out in"):
            commit(session, 9)
        with pytest.raises(HistoryError, match="is checked out in"):
            session.undo()
    assert checkout_snapshot(repo) == before


def test_closed_worktree_comes_back_and_close_keeps_unsaved_edits(history: ExperimentHistory, repo: Path) -> None:
    assert history.close() is True
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert history.rounds()[-1].round == ROUNDS, "reading needs no worktree"

    reopened = ExperimentHistory.open(repo, RUN)
    assert reopened.model_path_in_worktree().read_text() == model_code(7)
    reopened.model_path_in_worktree().write_text("# hand edit\n")
    assert reopened.close() is False
    assert reopened.worktree.exists()


def test_interrupted_branch_move_is_repaired_on_next_use(history: ExperimentHistory, repo: Path) -> None:
    """As if the process died after moving the branch and before updating the worktree."""
    target = history.rounds()[5].sha
    git(repo, "update-ref", f"refs/heads/{history.branch}", target)
    assert history.worktree.joinpath("models", "net.py").read_text() == model_code(7)

    reopened = ExperimentHistory.open(repo)
    assert reopened.model_path_in_worktree().read_text() == model_code(5)
    assert git(history.worktree, "status", "--porcelain") == ""


def test_round_interrupted_before_the_branch_moved_is_put_back(history: ExperimentHistory, repo: Path) -> None:
    """As if the process died after writing a round's files and before committing them."""
    admin = repo / ".git" / "worktrees" / RUN
    (admin / "copilot-worktree-pending").touch()
    history.worktree.joinpath("models", "net.py").write_text("# half-written proposal\n")

    info = commit(history, 10)  # a hyperparameter round: it does not write the model file
    assert git(repo, "show", f"{info.sha}:models/net.py") == model_code(7), "the stray file is not committed"
    assert history.worktree.joinpath("models", "net.py").read_text() == model_code(7)
    assert git(history.worktree, "status", "--porcelain") == ""
    assert not (admin / "copilot-worktree-pending").exists()


def test_stale_lock_on_our_own_ref_is_cleared_and_a_fresh_one_explained(
    history: ExperimentHistory, repo: Path
) -> None:
    lock = repo / ".git" / "refs" / "heads" / f"{history.branch}.lock"
    lock.write_text("")
    with pytest.raises(HistoryError) as error:
        commit(history, 9)
    assert "is locked" in error.value.message and str(lock) in error.value.hint

    an_hour_ago = time.time() - 3600
    os.utime(lock, (an_hour_ago, an_hour_ago))
    assert commit(history, 9).round == 9, "a lock no live git could still hold is a leftover of a killed process"
    assert not lock.exists()


def _git_children() -> list[str]:
    """Command lines of this process's child processes that are git, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and "git" in command:
            found.append(command)
    return found


def test_no_git_processes_outlive_a_session(history: ExperimentHistory, repo: Path) -> None:
    with subprocess.Popen(["git", "cat-file", "--batch"], cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as probe:
        assert any("cat-file" in command for command in _git_children()), "the /proc scan sees a live cat-file"
        probe.communicate(b"")
    history.diff(1, 2)
    history.show(3)
    history.rollback(4)
    history.undo()
    history.redo()
    assert _git_children() == [], "no `git cat-file` (or any git) child process is left running"


def test_a_round_the_branch_left_keeps_its_results_for_good(history: ExperimentHistory) -> None:
    """A new round, a rollback or an undo leaves the tip: its note is final, and never rewritten."""
    history.record_result(8, {"val_accuracy": 0.5, "checkpoint": "checkpoints/epoch0008.pt"})
    history.undo()
    left = history.rounds()[-1]
    assert left.round == 7 and left.results is not None and left.results.final, "r7 was left when r8 was committed"
    with pytest.raises(HistoryError, match="r7's results are final"):
        history.record_result(7, {"val_accuracy": 0.01})
    redone = history.redo().results
    assert redone is not None and (redone.val_accuracy, redone.checkpoint, redone.final) == (0.5, "checkpoints/epoch0008.pt", True)
    with pytest.raises(HistoryError, match="r8's results are final"):
        history.record_result(8, {"val_accuracy": 0.01})
    rolled = history.rollback(2)
    assert history.record_result(rolled.round, {"val_accuracy": 0.3}).val_accuracy == 0.3, "the new tip's note is open"
