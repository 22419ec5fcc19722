"""The layout of a run folder, `.copilot/runs/<run-id>/`, the source of truth on disk.

The trainer writes `metrics.jsonl` (append-only), `events.log`, `checkpoints/`, the
model files as trained and its own `trainer/` folder (home, scratch, output), nothing
else (`trainer_writes`, which the walls enforce); the advisor writes `ledger.jsonl` and its SQLite checkpoint; `copilot tune` its Optuna studies;
the report goes to `report.md`. Every part that reads or writes a run finds its files
here, so no path is spelled twice. It must not import torch.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from copilot.errors import CopilotError

DEFAULT_RUNS_DIR = Path(".copilot") / "runs"
DEMO_DIR = Path("copilot-demo")  # where `copilot demo` makes its repository, under the folder it was started in


def slugify(text: str, max_length: int = 24) -> str:
    """Lower-case letters, digits and single dashes: safe in a folder or branch name."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "model"


def new_run_id(model_path: str | Path, now: float | None = None) -> str:
    """`20261120-234500-bad-cnn-3f2a`: sortable by time, readable, unique."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{stamp}-{slugify(Path(model_path).stem)}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder. Creating the object touches nothing; `create()` does."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def events_log(self) -> Path:
        return self.path / "events.log"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def models(self) -> Path:
        """Copies of every model file as trained, named `r<round>_<file>.py`."""
        return self.path / "models"

    @property
    def trainer(self) -> Path:
        """The trainer's own folder: its home, its scratch space and its captured output."""
        return self.path / "trainer"

    @property
    def trainer_home(self) -> Path:
        return self.trainer / "home"

    @property
    def trainer_scratch(self) -> Path:
        return self.trainer / "tmp"

    @property
    def trainer_output(self) -> Path:
        """A walled trainer's stdout and stderr, capped (never the terminal)."""
        return self.trainer / "output.log"

    @property
    def rank_start(self) -> Path:
        """Under torch.distributed: what every rank reads first (the spec, how rank 0 reaches the app)."""
        return self.trainer / "rank_start.json"

    @property
    def rank_failure(self) -> Path:
        """Under torch.distributed: the elastic agent's one-line account of the rank that failed."""
        return self.trainer / "rank_failure.json"

    @property
    def ranks_logs(self) -> Path:
        """Under torch.distributed: the agent's log and each rank's stdout and stderr."""
        return self.trainer / "ranks"

    def trainer_writes(self) -> tuple[Path, ...]:
        """Every path a trainer writes: what the walls let it write, and nothing else of the run folder."""
        return (self.metrics, self.events_log, self.checkpoints, self.models, self.trainer, self.outputs)

    @property
    def trials(self) -> Path:
        """One folder per trial (`trials/<assessment>/<arm>/`), each laid out like a run folder."""
        return self.path / "trials"

    @property
    def outputs(self) -> Path:
        """In a trial's folder: its model outputs on the fixed validation samples, for the parent to score."""
        return self.path / "outputs"

    @property
    def ledger(self) -> Path:
        return self.path / "ledger.jsonl"

    @property
    def advisor_db(self) -> Path:
        return self.path / "advisor.sqlite"

    @property
    def tune_db(self) -> Path:
        """The Optuna studies of `copilot tune` (Optuna's own SQLite schema: optuna-dashboard opens it as it is)."""
        return self.path / "tune.sqlite"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def session(self) -> Path:
        """How the run was started (model, data, settings), so `resume` can start it again."""
        return self.path / "session.json"

    def unused_checkpoint(self, name: str) -> Path:
        """`checkpoints/name`, or `epoch0003-2.pt`, `-3`... when that file exists already.

        A checkpoint file is written once: a round's git note names it, and training that
        reaches the same epoch again (after a rollback or an undo, or a trial's end state
        copied in) must not replace the weights the note promises.
        """
        path = self.checkpoints / name
        number = 1
        while path.exists():
            number += 1
            path = self.checkpoints / f"{Path(name).stem}-{number}{Path(name).suffix}"
        return path

    def relative(self, path: str | Path) -> str:
        """`path` as a note stores it: relative to the run folder when inside it, so a repository
        moved or cloned elsewhere still finds it."""
        absolute = Path(path).resolve()
        return absolute.relative_to(self.path.resolve()).as_posix() if absolute.is_relative_to(self.path.resolve()) else str(path)

    def resolve(self, stored: str) -> Path:
        """A path a note stored (relative to the run folder, or absolute in older notes)."""
        return self.path / stored if not Path(stored).is_absolute() else Path(stored)

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.checkpoints.glob("*.pt"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None

    def create(self, *, for_trainer: bool = False) -> "RunFolder":
        """Make the folders; `for_trainer` also makes every file the trainer writes, before walls
        that let it write those files but create nothing else in the run folder."""
        try:
            for folder in (self.checkpoints, self.models, self.trainer_home, self.trainer_scratch):
                folder.mkdir(parents=True, exist_ok=True)
            if for_trainer:
                for file in (self.metrics, self.events_log):
                    file.touch(exist_ok=True)
        except OSError as exc:
            raise CopilotError(
                f"cannot create the run folder {self.path}: {exc.strerror or exc}",
                "check that the folder can be written, or set runs_dir in copilot.toml",
            ) from None
        return self


def runs_dir(root: Path | None = None) -> Path:
    return (root or Path.cwd()) / DEFAULT_RUNS_DIR


def find_run(name: str | None, root: Path | None = None, *, runs: Path | None = None) -> RunFolder:
    """A run by id, id prefix or path; the latest run when `name` is None.

    `runs` is the runs folder the settings name (`runs_dir`); without it, `.copilot/runs`
    under `root` (default: the working folder). The demo's runs are found too from the
    folder `copilot demo` was started in (they live in its own repository, `./copilot-demo`),
    so the `copilot resume RUN` its quit dialog names works from where the user typed it.
    """
    base = runs.resolve() if runs is not None else runs_dir(root)
    places = _run_places(base, root)
    if name:
        direct = Path(name)
        if (direct / "metrics.jsonl").exists() or (direct / "session.json").exists():
            return RunFolder(direct.resolve())
        matches = sorted(p for place in places for p in place.glob(f"{name}*") if p.is_dir())
        if len(matches) == 1:
            return RunFolder(matches[0])
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches[:5])
            raise CopilotError(f"run '{name}' is ambiguous: {names}", "give more of the run id")
        raise CopilotError(f"no run '{name}' under {base}", _where_runs_are(base, places))
    for place in places:
        found = sorted(p for p in place.glob("*") if p.is_dir())
        if found:
            return RunFolder(found[-1])
    raise CopilotError(f"no runs under {base}", "start one with `copilot train MODEL.py`")


def _run_places(base: Path, root: Path | None) -> list[Path]:
    """The runs folders that exist: the settings' one, then the demo's under the same folder."""
    demo = ((root or Path.cwd()) / DEMO_DIR / DEFAULT_RUNS_DIR).resolve()
    return [place for place in dict.fromkeys((base, demo)) if place.is_dir()]


def _where_runs_are(base: Path, places: list[Path]) -> str:
    """The hint for a run not found: folders that hold runs, never one that does not exist."""
    if places:
        return "list runs with " + " or ".join(f"`ls {place}`" for place in places)
    return f"no runs folder at {base}: run copilot from the folder the run was started in, or give the run folder's path"
