"""The experiment history of one run: the API the app and the `copilot log|diff|show|
rollback|undo|redo` commands call.

A session forks `copilot/<yyyymmdd>-<model>-<id>` from the user's HEAD (detached or
not) and works in a linked worktree, `.copilot/worktrees/<run-id>`, which the trainer
reads the model from, so every metric maps to an exact commit. Round 0 is always a
commit: the model file exactly as the user has it on disk (uncommitted edits
included, staged on a temporary index, never the user's), so the first diff shows
only the co-pilot's change. Every later accepted change is a round commit; results
are JSON notes under `refs/notes/copilot`, made final when the branch leaves the round
(a new round, a rollback or an undo), so that no later training rewrites them; undo parks the old tip under
`refs/copilot/<run-id>/attic/<sha>`. All of it is read back from git, never kept in
memory, so a restarted process (or the CLI beside the app) sees the same history.

What it must not do: check out, stash, reset or detach the user's checkout, write
their config, or import the TUI. It is not for concurrent writers on one run.

Where a repository has no commits yet we do not make one on the user's branch: we
refuse, or with `init_git=True` start the co-pilot's branch from an empty history
(round 0 is then a root commit and the user's unborn branch stays unborn).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Literal

from git.exc import InvalidGitRepositoryError, NoSuchPathError

from copilot.errors import HistoryError
from copilot.history.hparams_file import HParamValue, hparams_path_for, hparams_to_toml
from copilot.history.messages import compose_message, copilot_trailers, format_metrics, parse_trailers, subject_line
from copilot.history.repo import (
    NOTES_REF,
    WORKTREES_DIR,
    GitRepository,
    GitSession,
    Location,
    TemporaryIndex,
    WorktreeIndex,
    admin_dir,
    checkouts,
    commit_tree,
    ensure_excluded,
    hash_text,
    is_copilot_worktree,
    locate,
    open_repo,
    remove_stale_temporary_indexes,
    set_note,
    stage_files,
    sync_worktree,
    update_refs,
    write_tree,
)
from copilot.history.rounds import (
    LOG_FORMAT,
    LogEntry,
    RoundDetail,
    RoundDiff,
    RoundInfo,
    RoundResults,
    metric_changes,
    parse_log,
    round_number_of,
    round_of_entry,
    rounds_from_log,
)
from copilot.run_folder import slugify

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SHORT_ID = re.compile(r"-([0-9a-f]{4,12})$")
_RUN_FORMAT = "%(refname)%1f%(objectname)%1f%(parent)%1f%(creatordate:iso-strict)%1f%(trailers:only,unfold)%1e"
# Porcelain diff output, pinned against the user's diff configuration.
_PLAIN_DIFF = ("--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/")


@dataclass(frozen=True)
class RunRecord:
    """A run as its round-0 commit records it (found through `refs/copilot/<run-id>/start`)."""

    run_id: str
    branch: str  # copilot/<yyyymmdd>-<model>-<id>
    start: str  # the round-0 commit
    base: str | None  # the user's commit the run forked from; None for an empty history
    model_relpath: str
    hparams_relpath: str
    started: datetime


def _run_ref(run_id: str, name: str) -> str:
    return f"refs/copilot/{run_id}/{name}"


def _check_run_id(run_id: str) -> None:
    if not _RUN_ID.match(run_id) or ".." in run_id or run_id.endswith(".lock"):
        raise HistoryError(
            f"run id {run_id!r} cannot name a git branch", "use letters, digits, '.', '_' and '-' only"
        )


def branch_name_for(run_id: str, model_relpath: str, day: str) -> str:
    """`copilot/20261120-bad-cnn-3f2a`: the date, the model, and the run id's random tail."""
    match = _SHORT_ID.search(run_id)
    short = match.group(1) if match else hashlib.sha1(run_id.encode()).hexdigest()[:6]
    return f"copilot/{day}-{slugify(PurePosixPath(model_relpath).stem)}-{short}"


def _list_runs(git: GitSession) -> list[RunRecord]:
    output = git.run(
        "for-each-ref", "--sort=-refname", "--sort=-creatordate", f"--format={_RUN_FORMAT}", "refs/copilot/*/start"
    )
    runs = []
    for record in output.split("\x1e"):
        record = record.lstrip("\n")
        if not record:
            continue
        refname, start, parents, created, trailers = record.split("\x1f", 4)
        fields = copilot_trailers(parse_trailers(trailers))
        run_id = refname.split("/")[2]
        if fields.get("Run") != run_id or "Branch" not in fields or "Model" not in fields:
            continue
        runs.append(
            RunRecord(
                run_id=run_id,
                branch=fields["Branch"],
                start=start,
                base=parents.split()[0] if parents.strip() else None,
                model_relpath=fields["Model"],
                hparams_relpath=fields.get("Hparams") or hparams_path_for(fields["Model"]),
                started=datetime.fromisoformat(created),
            )
        )
    return runs


def _select_run(runs: Sequence[RunRecord], wanted: str | None, where: Path) -> RunRecord:
    if not runs:
        raise HistoryError(
            f"no copilot runs in the repository at {where}",
            "start one with `copilot run MODEL.py` (`copilot train` only trains; it records no rounds)",
        )
    if wanted is None:
        return runs[0]
    exact = [run for run in runs if wanted in (run.run_id, run.branch, run.branch.removeprefix("copilot/"))]
    matches = exact or [run for run in runs if run.run_id.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(run.run_id for run in (matches or runs)[:5])
    if matches:
        raise HistoryError(f"run {wanted!r} is ambiguous: {listing}", "give more of the run id")
    raise HistoryError(f"no run {wanted!r} in {where}", f"runs here: {listing}")


def _repository_at(folder: Path) -> GitRepository:
    """The repository of the checkout containing `folder` (the user's, or a copilot worktree)."""
    try:
        with open_repo(folder, search_parent_directories=True) as repo:
            if repo.bare or repo.working_tree_dir is None:
                raise HistoryError(
                    f"{repo.git_dir} is a bare repository; copilot runs live in a checkout",
                    "pass --repo with the checkout the run was started in",
                )
            return GitRepository(Path(repo.working_tree_dir).resolve(), Path(repo.common_dir).resolve())
    except (InvalidGitRepositoryError, NoSuchPathError):
        raise HistoryError(
            f"{folder} is not inside a git repository", "pass --repo with the repository the run was started in"
        ) from None


def _file_mode(path: Path) -> str:
    return "100755" if path.is_file() and os.access(path, os.X_OK) else "100644"


def _commit_dates(stamp: int) -> dict[str, str]:
    """Author and committer date set by us, so a commit can be described without reading it back."""
    date = f"@{stamp} {time.strftime('%z', time.localtime(stamp))}"
    return {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}


def _free_branch_name(git: GitSession, wanted: str) -> str:
    """`wanted`, or `wanted-2`, `wanted-3`... when another run (same day, model and id tail) has it."""
    taken = set(git.run("for-each-ref", "--format=%(refname:lstrip=2)", "refs/heads/copilot/").split())
    return next(name for n in range(1, 1000) if (name := wanted if n == 1 else f"{wanted}-{n}") not in taken)


def _round_zero_message(where: Location, run_id: str, *, edited: bool, trailers: list[tuple[str, str]]) -> str:
    name = PurePosixPath(where.model_relpath).name
    if where.head is None:
        summary, story = f"start from {name} (no earlier commits)", "There were no commits to fork from."
    elif edited:
        summary = f"start from {name} with its uncommitted edits"
        story = (
            f"Forked from {where.head_name} at {where.head[:12]}. The model file had uncommitted edits; "
            "this round records it as it was on disk, so later diffs show only copilot's changes."
        )
    else:
        summary, story = f"start from {name} as committed", f"Forked from {where.head_name} at {where.head[:12]}."
    return compose_message(
        subject_line("baseline", 0, summary),
        [],
        story,
        [("Copilot-Run", run_id), ("Copilot-Round", "0"), ("Copilot-Kind", "baseline"), *trailers],
    )


class ExperimentHistory:
    """One run's rounds on its own branch and worktree. Make it with `start` or `open`."""

    def __init__(self, repository: GitRepository, run: RunRecord, worktree: Path) -> None:
        self._repository = repository
        self._run = run
        self.run_id = run.run_id
        self.branch = run.branch
        self.worktree = worktree

    def __repr__(self) -> str:
        return f"ExperimentHistory(run_id={self.run_id!r}, branch={self.branch!r}, worktree={str(self.worktree)!r})"

    @property
    def run(self) -> RunRecord:
        return self._run

    # ------------------------------------------------------------------ making one

    @classmethod
    def start(
        cls,
        model_path: Path,
        run_id: str,
        *,
        init_git: bool = False,
        hparams: Mapping[str, HParamValue] | None = None,
    ) -> "ExperimentHistory":
        """Fork the run's branch from the user's HEAD, commit round 0, add the worktree.

        `hparams`, when given, are the run's starting hyperparameters, recorded in
        round 0's hyperparameter file so the first hyperparameter round diffs against them.
        """
        _check_run_id(run_id)
        where = locate(Path(model_path), init_git=init_git)
        # Before anything exists under .copilot/, so `git status` never shows it, even after a kill.
        ensure_excluded(where.common_dir)
        repository = GitRepository(where.toplevel, where.common_dir)
        hparams_relpath = hparams_path_for(where.model_relpath)
        worktree = where.toplevel / WORKTREES_DIR / run_id
        stamp = int(time.time())
        with repository.session(writing=True) as git:
            if git.run_status("rev-parse", "-q", "--verify", _run_ref(run_id, "start"))[0] == 0:
                raise HistoryError(f"run {run_id} already has a history", "reopen it instead of starting it again")
            branch = _free_branch_name(git, branch_name_for(run_id, where.model_relpath, time.strftime("%Y%m%d")))
            model_file = where.toplevel / where.model_relpath
            blobs = {
                where.model_relpath: (
                    _file_mode(model_file),
                    git.run("hash-object", "-w", f"--path={where.model_relpath}", "--", str(model_file)).strip(),
                )
            }
            if hparams is not None:
                blobs[hparams_relpath] = ("100644", hash_text(git, hparams_relpath, hparams_to_toml(hparams)))
            with tempfile.TemporaryDirectory(prefix="copilot-") as scratch, TemporaryIndex(Path(scratch)) as index:
                tree = write_tree(git, index, parent=where.head, blobs=blobs)
            # "Edited" is about the model file alone: the run's hyperparameter file is new in every run.
            edited = where.head is not None and (
                git.run_status("rev-parse", "-q", "--verify", f"{where.head}:{where.model_relpath}")[1].strip()
                != blobs[where.model_relpath][1]
            )
            trailers = [("Copilot-Branch", branch), ("Copilot-Model", where.model_relpath), ("Copilot-Hparams", hparams_relpath)]
            message = _round_zero_message(where, run_id, edited=edited, trailers=trailers)
            commit = commit_tree(git, tree, parent=where.head, message=message, env=_commit_dates(stamp))
            update_refs(
                git,
                [f"create refs/heads/{branch} {commit}", f"create {_run_ref(run_id, 'start')} {commit}"],
                f"copilot: start run {run_id}",
            )
            git.run("worktree", "add", str(worktree), branch)
        run = RunRecord(
            run_id=run_id,
            branch=branch,
            start=commit,
            base=where.head,
            model_relpath=where.model_relpath,
            hparams_relpath=hparams_relpath,
            started=datetime.fromtimestamp(stamp).astimezone(),
        )
        return cls(repository, run, worktree)

    @classmethod
    def open(cls, repo_path: Path, run_id: str | None = None) -> "ExperimentHistory":
        """A run of the repository at `repo_path`: the latest when `run_id` is None, else by
        id, unique id prefix or branch name. Reads only; the worktree is re-created when
        an operation needs it."""
        repository = _repository_at(Path(repo_path).expanduser().resolve())
        with repository.session() as git:
            run = _select_run(_list_runs(git), run_id, repository.checkout)
        entries = checkouts(repository.common_dir)
        # Only a worktree of ours: the user may have checked the branch out in their own checkout.
        registered = [
            entry.path
            for entry in entries
            if entry.branch == f"refs/heads/{run.branch}" and is_copilot_worktree(entry.path)
        ]
        worktree = registered[0] if registered else entries[0].path / WORKTREES_DIR / run.run_id
        return cls(repository, run, worktree)

    @staticmethod
    def runs(repo_path: Path) -> list[RunRecord]:
        """Every run in the repository, newest first."""
        with _repository_at(Path(repo_path).expanduser().resolve()).session() as git:
            return _list_runs(git)

    # ------------------------------------------------------------------ the worktree

    def model_path_in_worktree(self) -> Path:
        """The model file the trainer reads; the worktree is re-created or restored to the
        branch tip first if it was removed or left half-updated by a killed process."""
        self._restore_worktree()
        return self.worktree / self._run.model_relpath

    def hparams_path_in_worktree(self) -> Path:
        """The run's hyperparameter TOML file (it exists once round 0 or a hyperparameter round wrote it)."""
        self._restore_worktree()
        return self.worktree / self._run.hparams_relpath

    def close(self) -> bool:
        """Remove the worktree (files and registration); keep the branch, refs and notes.

        Returns False and keeps the worktree when it holds edits to tracked files
        that are not in any round. `open()` and any later operation bring it back.
        """
        here = self.worktree.resolve()
        with self._repository.session() as git:
            if not any(entry.path.resolve() == here for entry in checkouts(self._repository.common_dir)):
                return False
            if not (here / ".git").is_file():
                git.run("worktree", "prune")
                return True
            if git.run("status", "--porcelain", "--untracked-files=no", cwd=here).strip():
                return False
            git.run("worktree", "remove", "--force", str(here))
        return True

    @contextlib.contextmanager
    def _writing(self) -> Iterator[GitSession]:
        """A session for an operation that moves the branch: the worktree is there and ours."""
        with self._repository.session(writing=True) as git:
            self._prepare_worktree(git)
            yield git

    def _prepare_worktree(self, git: GitSession) -> None:
        branch_ref = f"refs/heads/{self.branch}"
        here = self.worktree.resolve()
        mine = None
        for entry in checkouts(self._repository.common_dir):
            if entry.path.resolve() == here:
                mine = entry
            elif entry.branch == branch_ref:
                raise HistoryError(
                    f"branch {self.branch} is checked out in {entry.path}; moving it would change that checkout",
                    f"switch that checkout to another branch (`git -C {entry.path} switch -`), then try again",
                )
        if mine is not None and mine.branch != branch_ref and (here / ".git").is_file():
            raise HistoryError(
                f"copilot's worktree {here} is on {mine.branch or 'a detached HEAD'} instead of {self.branch}",
                f"switch it back with `git -C {here} switch {self.branch}`",
            )
        if mine is None or not (here / ".git").is_file():
            git.run("worktree", "prune")
            if here.exists() and any(here.iterdir()):
                raise HistoryError(
                    f"copilot's worktree folder {here} is there, but git no longer knows it as a worktree",
                    f"delete the folder (every round is safe on branch {self.branch}) and try again",
                )
            git.run("worktree", "add", str(here), self.branch)
        remove_stale_temporary_indexes(admin_dir(here))
        index = WorktreeIndex(here)
        if index.interrupted():
            sync_worktree(git, index, git.run("rev-parse", "--verify", f"refs/heads/{self.branch}").strip())

    def _restore_worktree(self) -> None:
        with self._writing() as git:
            if git.run_status("diff-index", "--quiet", "HEAD", "--", cwd=self.worktree)[0]:
                tip = git.run("rev-parse", "--verify", f"refs/heads/{self.branch}").strip()
                sync_worktree(git, WorktreeIndex(self.worktree), tip)

    # ------------------------------------------------------------------ reading

    def _log(self, git: GitSession, *revisions: str) -> list[LogEntry]:
        """The branch's own line of commits since the fork, newest first, with notes."""
        if not revisions:
            revisions = (f"refs/heads/{self.branch}", *([f"^{self._run.base}"] if self._run.base else []))
        status, output = git.run_status(
            "log",
            "--first-parent",
            "--no-show-signature",
            "--no-notes",
            f"--notes={NOTES_REF}",
            f"--format={LOG_FORMAT}",
            *revisions,
            "--",
            ok=(0, 128),
        )
        entries = parse_log(output) if status == 0 else []
        if not entries:
            raise HistoryError(
                f"branch {self.branch} of run {self.run_id} is gone or holds no rounds",
                f"restore it with `git branch -f {self.branch} {self._run.start}` (round 0), or start a new run",
            )
        return entries

    def _round_at(self, git: GitSession, commit: str) -> RoundInfo:
        info = round_of_entry(self._log(git, "-1", commit)[0], self.run_id)
        assert info is not None, "copilot wrote this commit, so it carries its trailers"
        return info

    def _find(self, rounds: Sequence[RoundInfo], number: int) -> RoundInfo:
        for info in rounds:
            if info.round == number:
                return info
        raise self._no_round(number, rounds[-1].round if rounds else 0)

    def _no_round(self, number: int, last: int) -> HistoryError:
        return HistoryError(f"run {self.run_id} has no round r{number}", f"its rounds are r0 to r{last}: see `copilot log`")

    def _last_round_number(self, entries: Sequence[LogEntry]) -> int:
        """Without building every round: the hot path of each commit and note."""
        numbers = [number for entry in entries if (number := round_number_of(entry, self.run_id)) is not None]
        return max(numbers, default=0)

    def rounds(self) -> list[RoundInfo]:
        """Every round on the branch, oldest first, with its results, read from git and notes."""
        with self._repository.session() as git:
            return rounds_from_log(self._log(git), self.run_id)

    def round(self, number: int) -> RoundInfo:
        return self._find(self.rounds(), number)

    def round_of_proposal(self, proposal_id: str) -> RoundInfo | None:
        """The round whose `Copilot-Proposal` trailer is `proposal_id`, if one was committed."""
        return next((info for info in self.rounds() if info.proposal_id == proposal_id), None)

    def show(self, number: int) -> RoundDetail:
        """A round with its full message and its change against the commit before it."""
        with self._repository.session() as git:
            info = self._find(rounds_from_log(self._log(git), self.run_id), number)
            output = git.run("show", *_PLAIN_DIFF, "--format=%B%x1e", info.sha, "--", *self._tracked_files())
        message, _, patch = output.partition("\x1e")
        return RoundDetail(info=info, message=message.strip() + "\n", patch=patch.lstrip("\n"))

    def diff(self, a: int, b: int) -> RoundDiff:
        """The model and hyperparameter files of round `a` against round `b`, and their metrics."""
        with self._repository.session() as git:
            rounds = rounds_from_log(self._log(git), self.run_id)
            first, second = self._find(rounds, a), self._find(rounds, b)
            patch = git.run("diff", *_PLAIN_DIFF, first.sha, second.sha, "--", *self._tracked_files())
        headers = [line for line in patch.splitlines() if line.startswith("diff --git ")]
        files = tuple(path for path in self._tracked_files() if any(line.endswith(f" b/{path}") for line in headers))
        return RoundDiff(a=first, b=second, files=files, patch=patch, metrics=metric_changes(first, second))

    def _tracked_files(self) -> tuple[str, str]:
        return (self._run.model_relpath, self._run.hparams_relpath)

    # ------------------------------------------------------------------ writing

    def commit_round(
        self,
        *,
        kind: Literal["arch", "hparams", "tune"],
        summary: str,
        findings: Sequence[str],
        rationale: str,
        model_code: str | None,
        hparams: Mapping[str, HParamValue] | None,
        advisor: str,
        before: Mapping[str, float | int],
        verdict: Literal["accepted", "edited"],
        proposal_id: str | None = None,
        edited_by: str | None = None,
    ) -> RoundInfo:
        """Commit an accepted change as the next round and bring the worktree to it.

        `model_code` is the whole new model file (required for "arch"); `hparams` the
        run's complete hyperparameters (required for "hparams" and "tune"); either round may
        carry both. `before` is what was measured when the change was proposed;
        `proposal_id` (the ledger's) becomes the `Copilot-Proposal` trailer, `edited_by`
        (who changed what in the proposal, e.g. `user (lr 0.001 -> 0.0015)`) `Copilot-Edited-By`.
        """
        if kind not in ("arch", "hparams", "tune"):
            raise ValueError(f"kind must be 'arch', 'hparams' or 'tune', not {kind!r}")
        if verdict not in ("accepted", "edited"):
            raise ValueError(f"verdict must be 'accepted' or 'edited', not {verdict!r}; rejected changes are not commits")
        if (kind == "arch" and model_code is None) or (kind in ("hparams", "tune") and hparams is None):
            raise ValueError(f"a {kind} round needs {'model_code' if kind == 'arch' else 'hparams'}")
        trailers = [
            ("Copilot-Advisor", advisor),
            ("Copilot-Before", format_metrics(before)),
            ("Copilot-Verdict", verdict),
            *([("Copilot-Proposal", proposal_id)] if proposal_id else []),
            *([("Copilot-Edited-By", edited_by)] if edited_by else []),
        ]
        files = {}
        if model_code is not None:
            files[self._run.model_relpath] = model_code
        if hparams is not None:
            files[self._run.hparams_relpath] = hparams_to_toml(hparams)
        with self._writing() as git:
            return self._advance(git, kind, summary, findings, rationale, trailers, files=files)

    def rollback(self, k: int, *, before: Mapping[str, float | int] | None = None) -> RoundInfo:
        """Commit and return a new round whose files equal round `k`'s (trailer `Copilot-Rollback-To: r<k>`).

        Nothing is lost: the rounds after `k` stay on the branch below it. The run
        continues from round k's checkpoint, `round(k).results.checkpoint`.
        """
        with self._writing() as git:
            entries = self._log(git)
            target = self._find(rounds_from_log(entries, self.run_id), k)
            if target.sha == entries[0].sha:
                raise HistoryError(f"r{k} is already the latest round", "nothing to roll back")
            rationale = (
                f"Restores the files of r{k} ({target.short_sha}). The rounds after it stay in the "
                "history below this commit; roll back to any of them to return."
            )
            trailers = [("Copilot-Rollback-To", f"r{k}"), ("Copilot-Before", format_metrics(before or {}))]
            summary = f"back to r{k}: {target.summary}"
            return self._advance(git, "rollback", summary, [], rationale, trailers, tree=f"{target.sha}^{{tree}}")

    def _advance(
        self,
        git: GitSession,
        kind: str,
        summary: str,
        findings: Sequence[str],
        rationale: str,
        trailers: Sequence[tuple[str, str]],
        *,
        files: Mapping[str, str] | None = None,
        tree: str | None = None,
    ) -> RoundInfo:
        """Commit the next round on the tip (`files` written over the tip's, or a whole `tree`),
        move the branch to it, and leave the worktree equal to it.

        Files are written into the worktree before the branch moves, so `git add` stages
        them with the user's filters; if the round cannot be committed they are put back,
        and if the process dies first, the next operation puts them back.
        Only the branch is locked: a redo chain goes stale by itself, since its next
        commit no longer sits on the tip.
        """
        entries = self._log(git)
        tip = entries[0].sha
        number = self._last_round_number(entries) + 1
        self._make_final(git, entries[0])
        subject = subject_line(kind, number, summary)
        message = compose_message(
            subject,
            findings,
            rationale,
            [("Copilot-Run", self.run_id), ("Copilot-Round", str(number)), ("Copilot-Kind", kind), *trailers],
        )
        stamp = int(time.time())
        index = WorktreeIndex(self.worktree)
        with index.temporary() as staging:
            try:
                if tree is None:
                    tree = stage_files(git, index, staging, parent=tip, files=files or {})
                commit = commit_tree(git, tree, parent=tip, message=message, env=_commit_dates(stamp))
                update_refs(git, [f"update refs/heads/{self.branch} {commit} {tip}"], f"copilot: {subject}")
            except HistoryError:
                if files:
                    sync_worktree(git, index, tip)
                raise
            if files:
                index.install(staging, commit)
            else:
                sync_worktree(git, index, commit, staging)
        written = LogEntry(
            sha=commit,
            short_sha=commit[: len(entries[0].short_sha)],
            parents=(tip,),
            time=datetime.fromtimestamp(stamp).astimezone(),
            subject=subject,
            trailers=parse_trailers(message.rstrip("\n").rsplit("\n\n", 1)[-1]),
            note="",
        )
        info = round_of_entry(written, self.run_id)
        assert info is not None, "the message carries this run's trailers"
        return info

    def record_result(self, round: int, results: RoundResults | Mapping[str, object]) -> RoundResults:
        """Merge measured results into the round's note (JSON under refs/notes/copilot);
        the commit's hash does not change. Returns the note's content now.

        A note marked `final` is the round's record for good: it is never rewritten.
        """
        new = results if isinstance(results, RoundResults) else RoundResults.model_validate(dict(results))
        with self._repository.session(writing=True) as git:
            entries = self._log(git)
            entry = next((entry for entry in entries if round_number_of(entry, self.run_id) == round), None)
            if entry is None:
                raise self._no_round(round, self._last_round_number(entries))
            noted = RoundResults.from_note(entry.note) or RoundResults()
            if noted.final:
                raise HistoryError(
                    f"r{round}'s results are final: the run left that round, and its record is never rewritten",
                    "record later training on a new round",
                )
            merged = noted.merged(new)
            set_note(git, entry.sha, merged.to_note())
        return merged

    def _make_final(self, git: GitSession, entry: LogEntry) -> None:
        """Mark the results of the round the branch leaves final (`record_result` never rewrites
        them): whatever trains after a new round, a rollback or an undo is not that round's record."""
        noted = RoundResults.from_note(entry.note) if entry.note.strip() else RoundResults()
        # Not a round of ours, or a note edited by hand into something we cannot read: left as it is.
        if round_number_of(entry, self.run_id) is None or noted is None or noted.final:
            return
        set_note(git, entry.sha, noted.merged(RoundResults(final=True)).to_note())

    def undo(self) -> RoundInfo:
        """Take the last round off the branch and return the round now at the tip.

        Only copilot's own, unpushed round; its commit is parked under
        `refs/copilot/<run-id>/attic/<sha>`, where `redo()` finds it, across restarts too.
        """
        with self._writing() as git:
            entries = self._log(git)
            tip = entries[0]
            info = round_of_entry(tip, self.run_id)
            if info is None:
                raise HistoryError(
                    f"the tip of {self.branch} ({tip.short_sha} {tip.subject}) is not one of copilot's rounds",
                    "undo removes only copilot's own last round; change your own commits with git",
                )
            if info.round == 0 or not tip.parents:
                raise HistoryError("r0 is where the run started; there is no earlier round", "start a new run instead")
            pushed = git.run("for-each-ref", "--contains", tip.sha, "--format=%(refname:short)", "refs/remotes/").split()
            if pushed:
                raise HistoryError(
                    f"{info.label} is already pushed ({pushed[0]}); undo would rewrite published history",
                    "use `copilot rollback R` instead: it adds a commit and rewrites nothing",
                )
            redo_ref = _run_ref(self.run_id, "redo")
            status, redo_top = git.run_status("rev-parse", "-q", "--verify", redo_ref)
            # Undoing further down the same line keeps the whole line redoable.
            extends_chain = status == 0 and git.run_status("merge-base", "--is-ancestor", tip.sha, redo_top.strip())[0] == 0
            parent = tip.parents[0]
            instructions = [
                f"update refs/heads/{self.branch} {parent} {tip.sha}",
                f"update {_run_ref(self.run_id, 'attic/' + tip.sha)} {tip.sha}",
            ]
            if not extends_chain:
                instructions.append(f"update {redo_ref} {tip.sha}")
            self._make_final(git, tip)
            update_refs(git, instructions, f"copilot undo: {tip.subject}")
            sync_worktree(git, WorktreeIndex(self.worktree), parent)
        return rounds_from_log(entries[1:], self.run_id)[-1]

    def redo(self) -> RoundInfo:
        """Put back the round the last `undo()` took off (if the branch has not moved on since) and return it."""
        redo_ref = _run_ref(self.run_id, "redo")
        with self._writing() as git:
            tip = self._log(git)[0].sha
            status, redo_top = git.run_status("rev-parse", "-q", "--verify", redo_ref)
            if status:
                raise HistoryError("nothing to redo", "redo puts back a round taken off by `copilot undo`")
            redo_top = redo_top.strip()
            chain = git.run("rev-list", "--first-parent", "--parents", f"{tip}..{redo_top}").splitlines()
            if not chain:
                raise HistoryError("nothing to redo", "redo puts back a round taken off by `copilot undo`")
            if chain[-1].split()[1:2] != [tip]:
                raise HistoryError(
                    "nothing to redo: a new round was committed after the undo",
                    f"undone rounds stay under refs/copilot/{self.run_id}/attic/ (see `git log` of them)",
                )
            target = chain[-1].split()[0]
            update_refs(git, [f"update refs/heads/{self.branch} {target} {tip}"], "copilot redo")
            sync_worktree(git, WorktreeIndex(self.worktree), target)
            return self._round_at(git, target)
