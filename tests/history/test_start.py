"""Starting a run: where the branch and worktree go, round 0, and every repository state we refuse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from copilot.errors import HistoryError
from copilot.history.experiment import ExperimentHistory
from tests.history.repos import MODEL_CODE, checkout_snapshot, git

RUN = "20261120-234500-net-3f2a"


def test_start_forks_a_branch_and_worktree_and_records_round_zero(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    history = ExperimentHistory.start(repo / "models" / "net.py", RUN)

    assert history.branch.startswith("copilot/") and history.branch.endswith("-net-3f2a")
    assert history.worktree == repo / ".copilot" / "worktrees" / RUN
    assert history.model_path_in_worktree() == history.worktree / "models" / "net.py"
    assert history.model_path_in_worktree().read_text() == MODEL_CODE
    assert git(history.worktree, "rev-parse", "--abbrev-ref", "HEAD").strip() == history.branch
    assert "/.copilot/" in (repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert not (repo / ".gitignore").read_text().count("copilot"), "the user's .gitignore is not edited"

    [round0] = history.rounds()
    assert (round0.round, round0.kind) == (0, "baseline")
    assert round0.subject == "baseline(r0): start from net.py as committed"
    assert git(repo, "rev-parse", f"{round0.sha}^").strip() == head
    assert git(repo, "rev-parse", f"{round0.sha}^{{tree}}") == git(repo, "rev-parse", "HEAD^{tree}")
    assert dict(round0.trailers)["Copilot-Model"] == "models/net.py"


def test_dirty_model_file_becomes_round_zero_through_a_temporary_index(repo: Path) -> None:
    edited = MODEL_CODE + "\n# tried a wider layer\n"
    (repo / "models" / "net.py").write_text(edited)
    git(repo, "add", "README.md")  # something staged: the user's index differs from HEAD
    before = checkout_snapshot(repo)

    history = ExperimentHistory.start(repo / "models" / "net.py", RUN)
    [round0] = history.rounds()

    assert round0.subject == "baseline(r0): start from net.py with its uncommitted edits"
    assert git(repo, "show", f"{round0.sha}:models/net.py") == edited
    assert history.model_path_in_worktree().read_text() == edited
    assert checkout_snapshot(repo) == before
    assert git(repo, "status", "--porcelain", "--", "models/net.py") == " M models/net.py\n"

    history.commit_round(
        kind="arch",
        summary="narrower head",
        findings=[],
        rationale="",
        model_code=edited.replace("classes)", "classes, bias=False)"),
        hparams=None,
        advisor="offline",
        before={},
        verdict="accepted",
    )
    patch = history.diff(0, 1).patch
    assert "tried a wider layer" not in patch, "the first diff shows only the co-pilot's change"
    assert "+        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, classes, bias=False))" in patch


def test_untracked_model_file_is_recorded_in_round_zero(repo: Path) -> None:
    (repo / "fresh.py").write_text(MODEL_CODE)
    history = ExperimentHistory.start(repo / "fresh.py", RUN)
    assert git(repo, "show", f"{history.rounds()[0].sha}:fresh.py") == MODEL_CODE
    assert git(repo, "status", "--porcelain") == "?? fresh.py\n"


def test_initial_hyperparameters_go_into_round_zero(repo: Path) -> None:
    history = ExperimentHistory.start(repo / "models" / "net.py", RUN, hparams={"optimizer": "SGD", "lr": 0.1})
    assert history.hparams_path_in_worktree() == history.worktree / "models" / "net.hparams.toml"
    assert 'optimizer = "SGD"' in history.hparams_path_in_worktree().read_text()


def test_detached_head_forks_from_the_detached_commit_and_stays_detached(repo: Path) -> None:
    (repo / "README.md").write_text("# experiments\nmore\n")
    git(repo, "commit", "-q", "-am", "second")
    first = git(repo, "rev-parse", "HEAD~1").strip()
    git(repo, "checkout", "-q", "--detach", first)
    before = checkout_snapshot(repo)

    history = ExperimentHistory.start(repo / "models" / "net.py", RUN)

    assert git(repo, "rev-parse", f"{history.rounds()[0].sha}^").strip() == first
    assert "detached HEAD" in git(repo, "log", "-1", "--format=%B", history.branch)
    assert checkout_snapshot(repo) == before


def test_not_a_repository_names_the_init_flag(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(MODEL_CODE)
    with pytest.raises(HistoryError) as error:
        ExperimentHistory.start(tmp_path / "net.py", RUN)
    assert "not inside a git repository" in error.value.message
    assert "--init-git" in error.value.hint
    assert not (tmp_path / ".git").exists()


def test_init_git_creates_a_repository_and_leaves_its_branch_unborn(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(MODEL_CODE)
    history = ExperimentHistory.start(tmp_path / "net.py", RUN, init_git=True)

    assert (tmp_path / ".git").is_dir()
    assert git(tmp_path, "rev-parse", "-q", "--verify", "HEAD", check=False) == "", "the user's branch has no commit"
    [round0] = history.rounds()
    assert git(tmp_path, "log", "--format=%P", round0.sha).strip() == "", "round 0 is a root commit"
    assert git(tmp_path, "status", "--porcelain") == "?? net.py\n"
    assert history.model_path_in_worktree().read_text() == MODEL_CODE


def test_unborn_branch_is_refused_without_init_git(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "net.py").write_text(MODEL_CODE)
    with pytest.raises(HistoryError) as error:
        ExperimentHistory.start(tmp_path / "net.py", RUN)
    assert "no commits yet" in error.value.message
    assert "git commit" in error.value.hint and "--init-git" in error.value.hint
    assert ExperimentHistory.start(tmp_path / "net.py", RUN, init_git=True).rounds()[0].round == 0


def test_no_identity_commits_as_copilot_and_writes_no_config(repo: Path, git_home: Path) -> None:
    (git_home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
    config_before = (repo / ".git" / "config").read_bytes()

    history = ExperimentHistory.start(repo / "models" / "net.py", RUN)
    info = history.commit_round(
        kind="hparams",
        summary="lower the learning rate",
        findings=[],
        rationale="",
        model_code=None,
        hparams={"lr": 0.01},
        advisor="offline",
        before={"val_accuracy": 0.1},
        verdict="accepted",
    )
    history.record_result(info.round, {"val_accuracy": 0.2})

    idents = git(repo, "log", "--format=%an <%ae>|%cn <%ce>", "-2", history.branch).splitlines()
    assert idents == ["copilot <copilot@localhost>|copilot <copilot@localhost>"] * 2
    assert git(repo, "log", "-1", "--format=%an <%ae>", "refs/notes/copilot").strip() == "copilot <copilot@localhost>"
    assert (repo / ".git" / "config").read_bytes() == config_before
    assert (git_home / ".gitconfig").read_text() == "[init]\n\tdefaultBranch = main\n"


def test_known_identity_commits_as_the_user(repo: Path) -> None:
    history = ExperimentHistory.start(repo / "models" / "net.py", RUN)
    assert git(repo, "log", "-1", "--format=%an <%ae>", history.branch).strip() == "Ada Lovelace <ada@example.com>"


def test_locked_index_is_refused_and_the_lock_left_alone(repo: Path) -> None:
    lock = repo / ".git" / "index.lock"
    lock.write_bytes(b"someone else's")
    with pytest.raises(HistoryError) as error:
        ExperimentHistory.start(repo / "models" / "net.py", RUN)
    assert "index is locked" in error.value.message and "index.lock" in error.value.hint
    assert lock.read_bytes() == b"someone else's"
    assert git(repo, "for-each-ref", "refs/heads/copilot/") == ""


def test_bare_repository_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "store.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    (bare / "net.py").write_text(MODEL_CODE)
    with pytest.raises(HistoryError) as error:
        ExperimentHistory.start(bare / "net.py", RUN)
    assert "bare repository" in error.value.message and "git clone" in error.value.hint


def test_model_in_a_submodule_is_refused(repo: Path, tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    git(library, "init", "-q", "-b", "main")
    (library / "net.py").write_text(MODEL_CODE)
    git(library, "add", ".")
    git(library, "commit", "-q", "-m", "library")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(library), "vendor/library")
    with pytest.raises(HistoryError) as error:
        ExperimentHistory.start(repo / "vendor" / "library" / "net.py", RUN)
    assert "submodule" in error.value.message and "git clone" in error.value.hint


def test_redirecting_git_environment_is_refused(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_INDEX_FILE", str(repo / ".git" / "index"))
    with pytest.raises(HistoryError, match="GIT_INDEX_FILE"):
        ExperimentHistory.start(repo / "models" / "net.py", RUN)


def test_missing_model_file_and_bad_run_id(repo: Path) -> None:
    with pytest.raises(HistoryError, match="not found"):
        ExperimentHistory.start(repo / "models" / "missing.py", RUN)
    with pytest.raises(HistoryError, match="cannot name a git branch"):
        ExperimentHistory.start(repo / "models" / "net.py", "bad..id")


def test_same_run_twice_is_refused_and_a_second_run_gets_its_own_branch(repo: Path) -> None:
    first = ExperimentHistory.start(repo / "models" / "net.py", RUN)
    with pytest.raises(HistoryError, match="already has a history"):
        ExperimentHistory.start(repo / "models" / "net.py", RUN)
    second = ExperimentHistory.start(repo / "models" / "net.py", RUN.replace("234500", "235900"))
    assert second.branch == f"{first.branch}-2", "same day, model and id tail: the name gets a suffix"
    assert [run.run_id for run in ExperimentHistory.runs(repo)] == [second.run_id, first.run_id]
    exclude = (repo / ".git" / "info" / "exclude").read_text()
    assert exclude.count("/.copilot/") == 1


def test_starting_from_inside_a_copilot_worktree_is_refused(repo: Path) -> None:
    history = ExperimentHistory.start(repo / "models" / "net.py", RUN)
    with pytest.raises(HistoryError, match="copilot's own worktrees"):
        ExperimentHistory.start(history.model_path_in_worktree(), "another-run")


def test_executable_model_keeps_its_mode(repo: Path) -> None:
    model = repo / "models" / "net.py"
    os.chmod(model, 0o755)
    git(repo, "commit", "-q", "-am", "executable")
    history = ExperimentHistory.start(model, RUN)
    history.commit_round(
        kind="arch",
        summary="wider",
        findings=[],
        rationale="",
        model_code=MODEL_CODE + "# wider\n",
        hparams=None,
        advisor="offline",
        before={},
        verdict="accepted",
    )
    assert git(repo, "ls-tree", history.branch, "models/net.py").startswith("100755 ")


def test_clean_model_with_a_new_hparams_file_is_not_called_edited(repo: Path) -> None:
    history = ExperimentHistory.start(repo / "models" / "net.py", RUN, hparams={"optimizer": "SGD", "lr": 0.1})
    [round0] = history.rounds()

    assert round0.subject == "baseline(r0): start from net.py as committed"
    assert "lr = 0.1" in git(repo, "show", f"{round0.sha}:{dict(round0.trailers)['Copilot-Hparams']}")
