"""The one place copilot runs git: locating the user's repository, the co-pilot's linked
worktree, commits built on a temporary index, atomic ref updates and notes.

GitPython hygiene, as its own documentation asks for long-running processes: every
operation opens `Repo` in a `with` block here (`GitRepository.session`), so no
`git cat-file` process outlives it, and runs git as `repo.git.execute([...])` with an
explicit argument list. Nothing stages through `IndexFile.add` (it changes the
process-wide working directory under the app's threads); nothing runs porcelain that
could fire hooks, open an editor, sign, or prompt (`GIT_TERMINAL_PROMPT=0`); nothing
takes git's optional locks (`GIT_OPTIONAL_LOCKS=0`), so even reading never rewrites an
index.

What it must never write: the user's index, HEAD, branches, stash, config or working
files. What it does write: objects, `refs/heads/copilot/*`, `refs/copilot/*`,
`refs/notes/copilot`, the worktree under `.copilot/worktrees/`, its own index inside
that worktree's admin folder, and one line in `.git/info/exclude`. Because the user's
files are only ever read, killing the process at any instant cannot change them.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from git import Repo
from git.exc import InvalidGitRepositoryError, NoSuchPathError

from copilot.errors import HistoryError

COPILOT_DIR = ".copilot"
WORKTREES_DIR = f"{COPILOT_DIR}/worktrees"
EXCLUDE_ENTRY = f"/{COPILOT_DIR}/"
NOTES_REF = "refs/notes/copilot"
COPILOT_IDENTITY = {
    "GIT_AUTHOR_NAME": "copilot",
    "GIT_AUTHOR_EMAIL": "copilot@localhost",
    "GIT_COMMITTER_NAME": "copilot",
    "GIT_COMMITTER_EMAIL": "copilot@localhost",
}
# Never prompt, never take an optional lock (a read must not rewrite an index).
_QUIET_GIT = {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
# Set in the environment, these would point our commands at the user's index or repository.
_REDIRECTING_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY")
_TEMP_INDEX_PREFIX = "copilot-index-"
# "Unable to create '/repo/.git/refs/heads/x.lock': File exists."
_LOCK_IN_MESSAGE = re.compile(r"'([^']+\.lock)': File exists")
_OWN_REFS = ("refs/copilot/", "refs/heads/copilot/", "refs/notes/copilot")
STALE_LOCK_SECONDS = 30.0


def _first_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return (fatal or lines or ["no message"])[0]


class GitSession:
    """git commands inside one open `Repo`; each call is one `git` process."""

    def __init__(self, repo: Repo, env: Mapping[str, str]) -> None:
        self._repo = repo
        self.env = dict(env)

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        cwd: Path | None = None,
        ok: Sequence[int] = (0,),
    ) -> str:
        """stdout of `git <args>`; an exit status outside `ok` becomes a `HistoryError`."""
        return self.run_status(*args, env=env, stdin=stdin, cwd=cwd, ok=ok)[1]

    def run_status(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        cwd: Path | None = None,
        ok: Sequence[int] = (0, 1),
    ) -> tuple[int, str]:
        """Exit status and stdout, for commands whose status is the answer (`--is-ancestor`).

        `cwd` runs the command in another checkout of the same repository (`git -C`),
        so one open `Repo` serves the user's checkout and the co-pilot's worktree.
        """
        location = ["-C", str(cwd)] if cwd is not None else []
        command = [self._repo.git.GIT_PYTHON_GIT_EXECUTABLE, *location, *args]
        status, stdout, stderr = self._execute(command, env, stdin)
        if status not in ok and self._removed_stale_lock(stderr):
            status, stdout, stderr = self._execute(command, env, stdin)
        if status not in ok:
            raise _failure(args, stderr)
        return status, stdout

    def _execute(
        self, command: list[str], env: Mapping[str, str] | None, stdin: str | None
    ) -> tuple[int, str, str]:
        with contextlib.ExitStack() as stack:
            istream = None
            if stdin is not None:
                istream = stack.enter_context(tempfile.TemporaryFile())
                istream.write(stdin.encode("utf-8"))
                istream.seek(0)
            return self._repo.git.execute(  # type: ignore[return-value]
                command,
                istream=istream,
                with_extended_output=True,
                with_exceptions=False,
                env={**self.env, **(env or {})},
                strip_newline_in_stdout=False,
            )

    def _removed_stale_lock(self, stderr: str) -> bool:
        """Delete a lock on one of copilot's own refs that a killed process left behind.

        git holds a ref lock for milliseconds, so one older than `STALE_LOCK_SECONDS`
        belongs to no live process. Locks on anything else are the user's business.
        """
        match = _LOCK_IN_MESSAGE.search(stderr)
        if match is None:
            return False
        lock = Path(match.group(1))
        try:
            relative = lock.resolve().relative_to(Path(self._repo.common_dir).resolve()).as_posix()
            age = time.time() - lock.stat().st_mtime
        except (ValueError, OSError):
            return False
        if not relative.startswith(_OWN_REFS) or age < STALE_LOCK_SECONDS:
            return False
        lock.unlink(missing_ok=True)
        return True


def _failure(args: Sequence[str], stderr: str) -> HistoryError:
    line = _first_error_line(stderr)
    lock = _LOCK_IN_MESSAGE.search(stderr)
    if lock:
        return HistoryError(
            f"git {args[0]}: {lock.group(1)} is locked by another git process",
            f"wait for it to finish; if no git or copilot process is running, delete {lock.group(1)}",
        )
    return HistoryError(f"git {args[0]} failed: {line}", "fix the repository state git names, then try again")


@dataclass(frozen=True)
class Location:
    """Where a model file lives in git terms; `head` is None when the branch has no commit yet."""

    toplevel: Path  # root of the user's checkout
    common_dir: Path  # the repository's shared git folder (refs, objects, info/exclude)
    model_relpath: str  # the model file, relative to `toplevel`, with forward slashes
    head: str | None
    head_name: str  # the branch the user is on, or "detached HEAD"


@dataclass(frozen=True)
class WorktreeEntry:
    """One checkout of the repository and the branch it has checked out."""

    path: Path
    branch: str | None  # refs/heads/... or None when detached


def refuse_redirecting_environment() -> None:
    for name in _REDIRECTING_VARIABLES:
        if os.environ.get(name):
            raise HistoryError(
                f"{name} is set in the environment, so git would act on another repository or index",
                f"unset {name} before starting copilot",
            )


@contextlib.contextmanager
def open_repo(folder: Path, *, search_parent_directories: bool = False) -> Iterator[Repo]:
    """The one place a GitPython `Repo` is opened: per operation, closed (with its
    `git cat-file` helpers) on the way out."""
    refuse_redirecting_environment()
    with Repo(folder, search_parent_directories=search_parent_directories) as repo:
        yield repo


class GitRepository:
    """A repository, reached through one of its checkouts (normally the user's)."""

    def __init__(self, checkout: Path, common_dir: Path) -> None:
        self.checkout = checkout
        self.common_dir = common_dir
        self._identity: dict[str, str] | None = None

    @contextlib.contextmanager
    def session(self, *, writing: bool = False) -> Iterator[GitSession]:
        """git commands for one operation; `writing` adds the commit identity to every command."""
        try:
            with open_repo(self.checkout) as repo:
                git = GitSession(repo, _QUIET_GIT)
                if writing:
                    git.env.update(self._commit_identity(git))
                yield git
        except (InvalidGitRepositoryError, NoSuchPathError):
            raise HistoryError(
                f"{self.checkout} is no longer a git checkout",
                "restore the folder, or pass --repo with the repository the run was started in",
            ) from None

    def _commit_identity(self, git: GitSession) -> dict[str, str]:
        """Empty when git knows who the user is, else the copilot identity.

        Passed per command (commits, notes, reflogs) and never written to any config,
        so a user without `user.name`/`user.email` still gets commits and keeps their
        config exactly as it was.
        """
        if self._identity is None:
            known = all(
                git.run_status("-c", "user.useConfigOnly=true", "var", variable, ok=(0, 128))[0] == 0
                for variable in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT")
            )
            self._identity = {} if known else dict(COPILOT_IDENTITY)
        return self._identity


def init_repository_with_file(folder: Path, relpath: str, message: str) -> None:
    """A new repository whose first commit holds one file, committed as copilot (the demo's).

    The identity goes with the commands, so nobody's git configuration is read for it or written.
    """
    try:
        with Repo.init(folder) as repo:
            git = GitSession(repo, {**_QUIET_GIT, **COPILOT_IDENTITY})
            git.run("add", "--", relpath)
            git.run("-c", "commit.gpgsign=false", "commit", "--no-verify", "-q", "-m", message, "--", relpath)
    except OSError as exc:
        raise HistoryError(f"cannot create a git repository in {folder}: {exc}", "pass a writable folder") from None


def locate(model_path: Path, *, init_git: bool) -> Location:
    """Find (or, with `init_git`, create) the repository holding `model_path`, refusing states we must not touch."""
    model = model_path.expanduser().resolve()
    if not model.is_file():
        raise HistoryError(f"model file {model_path} not found", "check the path you gave")
    with contextlib.ExitStack() as stack:
        try:
            repo = stack.enter_context(open_repo(model.parent, search_parent_directories=True))
        except (InvalidGitRepositoryError, NoSuchPathError):
            if not init_git:
                raise HistoryError(
                    f"{model.parent} is not inside a git repository",
                    "pass --init-git to create one there (your files stay as they are), or run `git init`",
                ) from None
            with Repo.init(model.parent, mkdir=False):
                pass
            repo = stack.enter_context(open_repo(model.parent))
        if repo.bare or repo.working_tree_dir is None:
            raise HistoryError(
                f"{repo.git_dir} is a bare repository, with no checkout to take the model from",
                "clone it (`git clone <bare> <folder>`) and run copilot on the model in the clone",
            )
        toplevel = Path(repo.working_tree_dir).resolve()
        git_dir = Path(repo.git_dir).resolve()
        common_dir = Path(repo.common_dir).resolve()
        if is_copilot_worktree(toplevel):
            raise HistoryError(
                f"{model} is inside one of copilot's own worktrees",
                "start from the model in your own checkout, or reopen that run",
            )
        try:
            model_relpath = model.relative_to(toplevel).as_posix()
        except ValueError:
            raise HistoryError(
                f"{model_path} resolves to {model}, outside the repository at {toplevel}",
                "copy the model file into the repository",
            ) from None
        git = GitSession(repo, _QUIET_GIT)
        superproject = git.run("rev-parse", "--show-superproject-working-tree").strip()
        if superproject:
            raise HistoryError(
                f"{model_path} is inside a git submodule of {superproject}",
                f"clone the submodule on its own (`git clone {toplevel} <folder>`) and run copilot there",
            )
        lock = git_dir / "index.lock"
        if lock.exists():
            raise HistoryError(
                f"the git index is locked ({lock} exists): another git command is running in {toplevel}",
                f"wait for it to finish; if no git process is running, delete {lock}",
            )
        status, head = git.run_status("rev-parse", "-q", "--verify", "HEAD^{commit}")
        head_sha = head.strip() if status == 0 else None
        if head_sha is None and not init_git:
            raise HistoryError(
                f"the repository at {toplevel} has no commits yet, so there is nothing to branch from",
                f"commit a first version (`git add {model_relpath} && git commit -m 'first version'`), "
                "or pass --init-git to start copilot's branch from an empty history",
            )
        branch_status, branch = git.run_status("symbolic-ref", "-q", "--short", "HEAD")
    return Location(
        toplevel=toplevel,
        common_dir=common_dir,
        model_relpath=model_relpath,
        head=head_sha,
        head_name=branch.strip() if branch_status == 0 else "detached HEAD",
    )


def is_copilot_worktree(path: Path) -> bool:
    """A checkout under `.copilot/worktrees/`: one of ours, not one of the user's."""
    return path.parent.name == "worktrees" and path.parent.parent.name == COPILOT_DIR


def ensure_excluded(common_dir: Path) -> None:
    """Keep `.copilot/` out of `git status` through `.git/info/exclude`, never the user's `.gitignore`."""
    exclude = common_dir / "info" / "exclude"
    existing = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
    if EXCLUDE_ENTRY in existing.splitlines():
        return
    separator = "" if not existing or existing.endswith("\n") else "\n"
    try:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a", encoding="utf-8") as handle:
            handle.write(f"{separator}# copilot: experiment worktrees and run folders\n{EXCLUDE_ENTRY}\n")
    except OSError as exc:
        # The first write into the repository: a read-only .git stops the run here, before
        # anything exists under .copilot/ in the user's checkout.
        raise HistoryError(
            f"cannot write to the git repository {common_dir}: {exc.strerror.lower() if exc.strerror else exc}",
            "copilot keeps its experiment branch there: make it writable, or run on a writable copy of the project",
        ) from None


def checkouts(common_dir: Path) -> list[WorktreeEntry]:
    """Every checkout of the repository and the branch it has out, main checkout first.

    Read from git's own files (gitrepository-layout: `HEAD`, `worktrees/<id>/HEAD` and
    `worktrees/<id>/gitdir`) rather than `git worktree list`, because every commit
    checks this and a process per commit is worth saving.
    """
    main = common_dir.parent if common_dir.name == ".git" else common_dir
    entries = [WorktreeEntry(main, _checked_out_branch(common_dir / "HEAD"))]
    for admin in sorted((common_dir / "worktrees").glob("*")):
        gitdir = admin / "gitdir"
        if gitdir.is_file():
            pointer = Path(gitdir.read_text(encoding="utf-8").strip())
            entries.append(WorktreeEntry(pointer.parent, _checked_out_branch(admin / "HEAD")))
    return entries


def _checked_out_branch(head_file: Path) -> str | None:
    try:
        head = head_file.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return head[len("ref:") :].strip() if head.startswith("ref:") else None


def admin_dir(worktree: Path) -> Path:
    """The worktree's private folder under `.git/worktrees/`, where its index lives."""
    pointer = (worktree / ".git").read_text(encoding="utf-8").strip()
    if not pointer.startswith("gitdir:"):
        raise HistoryError(f"{worktree} is not a linked worktree", "remove the folder and open the run again")
    path = Path(pointer.partition(":")[2].strip())
    return path if path.is_absolute() else (worktree / path).resolve()


def remove_stale_temporary_indexes(admin: Path) -> None:
    """Temporary indexes left by a killed process (their pid is gone) are garbage."""
    for leftover in admin.glob(f"{_TEMP_INDEX_PREFIX}*"):
        pid = leftover.name[len(_TEMP_INDEX_PREFIX) :].split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TemporaryIndex:
    """An index file of our own, so neither the user's index nor the worktree's is ever half-written.

    It starts as a copy of `seed` (keeping its stat data, so unchanged files are not
    rewritten) and is used through `GIT_INDEX_FILE`. A kill leaves only this file
    behind, which `remove_stale_temporary_indexes` clears later.
    """

    def __init__(self, folder: Path, seed: Path | None = None) -> None:
        self.path = folder / f"{_TEMP_INDEX_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self._seed = seed

    def __enter__(self) -> "TemporaryIndex":
        if self._seed is not None and self._seed.exists():
            shutil.copyfile(self._seed, self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".lock").unlink(missing_ok=True)

    @property
    def env(self) -> dict[str, str]:
        return {"GIT_INDEX_FILE": str(self.path)}


class WorktreeIndex:
    """The co-pilot worktree's index and what is known about it.

    The index is only ever replaced whole (one rename) and remembered with the commit
    it matches, so the next round can start from it without re-reading the commit's
    tree. Before the worktree's files change, a "pending" mark is set, and it is
    cleared when the files, the index and the branch agree again; a kill in between
    leaves the mark, and the next operation restores the worktree first.
    """

    def __init__(self, worktree: Path) -> None:
        self.worktree = worktree
        admin = admin_dir(worktree)
        self.path = admin / "index"
        self._matched_commit = admin / "copilot-worktree-matches"
        self._pending = admin / "copilot-worktree-pending"

    def temporary(self) -> TemporaryIndex:
        return TemporaryIndex(self.path.parent, seed=self.path)

    def _signature(self) -> str:
        status = self.path.stat()
        return f"{status.st_ino} {status.st_mtime_ns} {status.st_size}"

    def matches(self, commit: str) -> bool:
        try:
            return self._matched_commit.read_text(encoding="utf-8") == f"{commit} {self._signature()}"
        except OSError:
            return False

    def begin_change(self) -> None:
        self._pending.touch()

    def interrupted(self) -> bool:
        return self._pending.exists()

    def install(self, index: TemporaryIndex, commit: str) -> None:
        """`index` becomes the worktree's, matching `commit`; the change is complete."""
        os.replace(index.path, self.path)
        self._matched_commit.write_text(f"{commit} {self._signature()}", encoding="utf-8")
        self._pending.unlink(missing_ok=True)


def write_tree(git: GitSession, index: TemporaryIndex, *, parent: str | None, blobs: Mapping[str, tuple[str, str]]) -> str:
    """The tree of `parent` with `blobs` ({path: (mode, blob sha)}) put in, built on `index`."""
    if parent is None:
        git.run("read-tree", "--empty", env=index.env)
    else:
        git.run("read-tree", parent, env=index.env)
    if blobs:
        cacheinfo = [arg for path, (mode, sha) in blobs.items() for arg in ("--cacheinfo", f"{mode},{sha},{path}")]
        git.run("update-index", "--add", *cacheinfo, env=index.env)
    return git.run("write-tree", env=index.env).strip()


def write_files(worktree: Path, files: Mapping[str, str]) -> None:
    """Replace files in the worktree, each in one rename (the trainer may be reading), keeping modes."""
    for relpath, text in files.items():
        target = worktree / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.copilot-{os.getpid()}")
        temporary.write_bytes(text.encode("utf-8"))
        if target.exists():
            os.chmod(temporary, target.stat().st_mode & 0o7777)
        os.replace(temporary, target)


def stage_files(
    git: GitSession, index: WorktreeIndex, staging: TemporaryIndex, *, parent: str, files: Mapping[str, str]
) -> str:
    """The tree of `parent` with `files` written into the worktree and staged (`git add`: filters apply)."""
    if not index.matches(parent):
        # --reset reads the tree whatever the worktree holds, keeping the stat data of
        # entries that match, so unchanged files are not re-read.
        git.run("read-tree", "--reset", parent, env=staging.env, cwd=index.worktree)
    index.begin_change()
    write_files(index.worktree, files)
    git.run("add", "-f", "--", *files, env=staging.env, cwd=index.worktree)
    return git.run("write-tree", env=staging.env, cwd=index.worktree).strip()


def commit_tree(
    git: GitSession, tree: str, *, parent: str | None, message: str, env: Mapping[str, str] | None = None
) -> str:
    """A commit object; no ref moves, no hook runs, nothing is signed (a signing prompt would hang us)."""
    parents = ["-p", parent] if parent else []
    return git.run("commit-tree", "--no-gpg-sign", tree, *parents, "-m", message, env=env).strip()


def hash_text(git: GitSession, relpath: str, text: str) -> str:
    """Store `text` as the blob for `relpath` (the path's clean filters apply, as with `git add`)."""
    return git.run("hash-object", "-w", "--stdin", f"--path={relpath}", stdin=text).strip()


def update_refs(git: GitSession, instructions: Sequence[str], reason: str) -> None:
    """All of `instructions` (`update <ref> <new> <old>`, `create ...`, `delete ...`) or none of them."""
    git.run("update-ref", "-m", reason, "--stdin", stdin="".join(f"{line}\n" for line in instructions))


def sync_worktree(git: GitSession, index: WorktreeIndex, commit: str, staging: TemporaryIndex | None = None) -> None:
    """Make the worktree's files and index equal `commit` (a full hash); files already equal are not rewritten.

    The worktree belongs to copilot: this is `reset --hard` confined to it, done on a
    temporary index that replaces the worktree's in one rename, so a kill leaves
    either the old index or the new one, never a lock.
    """
    with contextlib.ExitStack() as stack:
        if staging is None:
            staging = stack.enter_context(index.temporary())
        index.begin_change()
        git.run("read-tree", "--reset", "-u", commit, env=staging.env, cwd=index.worktree)
        index.install(staging, commit)


def set_note(git: GitSession, commit: str, text: str) -> None:
    git.run("notes", f"--ref={NOTES_REF}", "add", "-f", "-m", text, commit)
