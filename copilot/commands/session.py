"""`copilot run | demo | resume | report`: the co-pilot's loop, in the app or headless.

- `run MODEL` takes every `copilot train` flag (`--epochs` is the run's total budget
  across rounds) plus the loop's own: `--headless`, `--auto-accept validated|all`,
  `--max-rounds N`, `--no-trials`, `--assess-every K`, `--advisor`, `--init-git`.
- `demo` runs the study's broken CNN on the shapes set with the offline advisor, in a
  git repository of its own (`./copilot-demo` or `--dir`), so the user's repositories
  are never touched.
- `resume RUN` continues a stopped run where it was, a waiting proposal included.
- `report RUN` writes the run's report.md on demand.

Thin: parse, start or reopen a `Session`, hand it to the app or the headless driver.
Registering imports nothing heavy; the session, the app and git load in the handlers.
Exit codes as for `copilot train`: 0, 2 for a problem the user can fix, 1 for ours.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

import copilot
from copilot.commands.train import add_training_options, training_overrides
from copilot.config import Settings, load_settings
from copilot.errors import ConfigError, CopilotError
from copilot.run_folder import DEMO_DIR, RunFolder, find_run

if TYPE_CHECKING:
    from copilot.session.controller import Session

DEMO_MODEL = "bad_cnn.py"
DEMO_INTRO = (
    "Demo: the study's broken CNN (bad_cnn.py) learning the synthetic shapes set, with the offline advisor, "
    "which looks every 2 epochs."
)
# The app's one-row banner in three lengths: the longest that fits the terminal is shown, whole.
DEMO_BANNER = (
    "Demo: the study's broken CNN (bad_cnn.py) on synthetic shapes; the offline advisor looks every 2 epochs. "
    "a accept · r reject · e edit · h history · q quit",
    "Demo: a broken CNN; the advisor looks every 2 epochs. a accept · r reject · e edit · h history · q quit",
    "Demo: a broken CNN. a accept · r reject · e edit · h history · q quit",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    loop = argparse.ArgumentParser(add_help=False)
    loop.add_argument("--headless", action="store_true", help="no app: print progress and ask y/n on stdin")
    loop.add_argument(
        "--auto-accept",
        choices=["validated", "all"],
        help="decide without asking (with --headless): accept proposals that passed their checks and beat "
        "the unchanged run in their trial, or all",
    )
    loop.add_argument("--max-rounds", type=int, metavar="N", help="accept at most N rounds, then just train")
    loop.add_argument(
        "--no-trials",
        action="store_true",
        help="propose without trialling candidates first (proposals are 'not trialled'; --auto-accept validated takes none)",
    )
    loop.add_argument(
        "--target-accuracy",
        type=float,
        metavar="A",
        help="validation accuracy (0-1] at which training is done: the advisor then proposes to finish",
    )

    run = subparsers.add_parser(
        "run",
        parents=[loop],
        help="train with the co-pilot: the advisor proposes changes, you decide",
        description="Train MODEL.py with the advisor watching; accepted changes become commits on an experiment branch.",
    )
    add_training_options(run)
    run.add_argument("--assess-every", type=int, metavar="K", help="epochs between the advisor's scheduled looks (default 2)")
    run.add_argument("--advisor", choices=["offline", "bedrock", "openai"], help="who advises (default: offline)")
    run.add_argument("--init-git", action="store_true", help="create a git repository for the model's folder if it has none")
    run.set_defaults(handler=run_session_command)

    demo = subparsers.add_parser(
        "demo",
        parents=[loop],
        help="watch the co-pilot fix a broken CNN (offline, in its own git repository)",
        description="Run the study's broken CNN on the shapes set with the offline advisor, in ./copilot-demo.",
    )
    demo.add_argument("--dir", type=Path, metavar="PATH", help=f"the demo's folder and git repository (default ./{DEMO_DIR})")
    demo.set_defaults(handler=run_demo_command)

    resume = subparsers.add_parser(
        "resume",
        parents=[loop],
        help="continue a stopped co-pilot run, a waiting proposal included",
        description="Continue a run from its latest checkpoint; a proposal left waiting is shown again.",
    )
    resume.add_argument("run", metavar="RUN", help="run id, id prefix or run folder")
    resume.add_argument(
        "--epochs", type=int, metavar="N", help="train to N epochs in all (more than the run has trained): a run that ended goes on"
    )
    resume.set_defaults(handler=run_resume_command)

    report = subparsers.add_parser(
        "report", help="write a run's report.md", description="Write the run's report (summary, rounds, tokens, curves)."
    )
    report.add_argument("run", nargs="?", metavar="RUN", help="run id, id prefix or run folder (default: the latest run)")
    report.set_defaults(handler=run_report_command)


# --------------------------------------------------------------------------- handlers


def _loop_overrides(args: argparse.Namespace, advisor: Mapping[str, object]) -> dict:
    """Settings the loop's own flags change, with the `advisor` settings the command's other
    flags set. Deciding without a human (`--auto-accept`), the run is there for its outcome:
    the trainer waits for the advisor, however slow."""
    overrides: dict = {"trials": {"enabled": False}} if args.no_trials else {}
    advisor = {**advisor, **({"hold_training_while_assessing": True} if args.auto_accept else {})}
    if advisor:
        overrides["advisor"] = advisor
    return overrides


def run_session_command(args: argparse.Namespace) -> int:
    if not args.model:
        raise ConfigError("no model given", "run `copilot run MODEL.py`, or `copilot resume RUN` for a stopped run")
    _check_loop_flags(args)
    advisor = {"assess_every": args.assess_every, "provider": args.advisor, "target_accuracy": args.target_accuracy}
    chosen = {key: value for key, value in advisor.items() if value is not None}
    settings = load_settings(training_overrides(args) | _loop_overrides(args, chosen))
    from copilot.session.controller import Session

    session = Session.start(settings, args.model, init_git=args.init_git, run_name=args.run_name, max_rounds=args.max_rounds)
    return _drive(session, settings, args)


def run_demo_command(args: argparse.Namespace) -> int:
    _check_loop_flags(args)
    folder = (args.dir or DEMO_DIR).expanduser().resolve()
    model = prepare_demo_folder(folder)
    # The demo's own folder holds its settings: a copilot.toml where the user stands must not change it.
    settings = load_settings(
        {"runs_dir": folder / ".copilot" / "runs"} | _loop_overrides(args, {"provider": "offline", **_target(args)}),
        config_dir=folder,
    )
    from copilot.session.controller import Session

    Console(highlight=False).print(f"demo repository: [bold]{escape(str(folder))}[/]")
    session = Session.start(settings, str(model), max_rounds=args.max_rounds)
    return _drive(session, settings, args, banner=DEMO_BANNER, intro=DEMO_INTRO)


def run_resume_command(args: argparse.Namespace) -> int:
    _check_loop_flags(args)
    settings = load_settings(_loop_overrides(args, _target(args)))
    by_name = settings.runs_dir / args.run
    run = RunFolder(by_name.resolve()) if (by_name / "session.json").exists() else find_run(args.run, runs=settings.runs_dir)
    from copilot.session.controller import Session

    session = Session.reopen(settings, run, max_rounds=args.max_rounds, epochs=args.epochs)
    return _drive(session, settings, args)


def run_report_command(args: argparse.Namespace) -> int:
    from copilot.errors import HistoryError
    from copilot.report import write_report
    from copilot.session.controller import history_of

    run = find_run(args.run, runs=load_settings().runs_dir)
    console = Console(highlight=False)
    try:
        history = history_of(run)
    except (HistoryError, CopilotError) as exc:
        history = None
        console.print(f"[dim]no experiment history for this run ({escape(exc.message)}); the report has no rounds from git[/]")
    path = write_report(run, history)
    console.print(f"report: [bold]{escape(str(path))}[/]")
    return 0


# --------------------------------------------------------------------------- helpers


def _check_loop_flags(args: argparse.Namespace) -> None:
    if args.auto_accept and not args.headless:
        raise ConfigError("--auto-accept decides without asking, so it needs --headless", "add --headless")
    if args.max_rounds is not None and args.max_rounds < 0:
        raise ConfigError(f"--max-rounds {args.max_rounds} is negative", "give 0 or more")


def _target(args: argparse.Namespace) -> dict[str, float]:
    """The advisor setting `--target-accuracy` overrides, if given."""
    return {} if args.target_accuracy is None else {"target_accuracy": args.target_accuracy}


def _drive(
    session: Session, settings: Settings, args: argparse.Namespace, *, banner: Sequence[str] | None = None, intro: str | None = None
) -> int:
    """Hand the session to the headless driver (which prints `intro`) or the app (which shows `banner`); it is stopped after."""
    try:
        if args.headless:
            from copilot.console.headless import drive

            console = Console(highlight=False)
            if intro:
                console.print(intro)
            return drive(session, console, auto_accept=args.auto_accept)
        from copilot.tui.app import run_app

        return run_app(session, settings, banner=banner)
    finally:
        session.stop()


def demo_model_source() -> Path:
    """bad_cnn.py as installed with copilot (an editable install keeps `sample_models/` beside the package)."""
    source = Path(copilot.__file__).resolve().parents[1] / "sample_models" / DEMO_MODEL
    if not source.is_file():
        raise CopilotError(
            f"the demo's model file is not installed ({source} is missing)",
            "install copilot from its source folder with `pip install -e .`",
        )
    return source


def prepare_demo_folder(folder: Path) -> Path:
    """The demo's git repository with bad_cnn.py committed; an existing one is reused as it is.

    The first commit is made by the history layer as `copilot <copilot@localhost>`,
    without reading or writing anybody's git configuration.
    """
    from copilot.history.repo import init_repository_with_file

    folder.mkdir(parents=True, exist_ok=True)
    model = folder / DEMO_MODEL
    fresh = not (folder / ".git").exists()
    if not model.exists():
        shutil.copyfile(demo_model_source(), model)
    if not fresh:
        return model
    init_repository_with_file(folder, DEMO_MODEL, "demo: the study's broken CNN")
    return model
