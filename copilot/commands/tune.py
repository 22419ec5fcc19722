"""`copilot tune [RUN]`: an Optuna study of the run's hyperparameters, trials forked from its checkpoint.

`--trials N` trials (the run's current values and the advisor's guess first), each
trained the same budget in training samples: `--trial-steps S` at the run's batch size,
or `--budget-epochs E` passes over the training set; `--sampler tpe|cmaes|random`;
`--space FILE` narrows or widens the search space (see `copilot.tuning.space`). The
study is kept in the run's tune.sqlite: a tune that was stopped resumes where it was, and
`optuna-dashboard sqlite:///<run>/tune.sqlite` opens it. The best trial is shown against
the current values and, once accepted (y/n on stdin, or `--headless --auto-accept
validated`), committed as a `tune` round.

Thin: parse, reopen the run's session, hand it to the console's tune driver, stop it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from rich.console import Console

from copilot.config import SamplerName, Settings, load_settings
from copilot.errors import ConfigError
from copilot.run_folder import RunFolder, find_run
from copilot.tuning.study import TuneRequest

SPACE_HELP = (
    "a TOML file narrowing or widening the space: one table per hyperparameter, [lr] low = 1e-4, high = 0.3 "
    '(log = true|false), or [optimizer] choices = ["SGD", "Adam"]; "none" is no grad_clip'
)


def register(subparsers: argparse._SubParsersAction) -> None:
    tune = subparsers.add_parser(
        "tune",
        help="tune a run's hyperparameters with an Optuna study forked from its checkpoint",
        description="An Optuna study of the run's hyperparameters: its current values and the advisor's guess against the "
        "sampler's trials, on the same budget, from the same checkpoint; the best one, once accepted, is a round.",
    )
    tune.add_argument("run", nargs="?", metavar="RUN", help="run id, id prefix or run folder (default: the latest run)")
    tune.add_argument("--trials", type=int, metavar="N", help="trials in the study (default: [tune] trials, 12)")
    budget = tune.add_mutually_exclusive_group()
    budget.add_argument("--trial-steps", type=int, metavar="S", help="each trial trains as many samples as S steps at the run's batch size")
    budget.add_argument("--budget-epochs", type=float, metavar="E", help="each trial trains E passes over the training set")
    tune.add_argument("--sampler", choices=get_args(SamplerName), help="Optuna's sampler (default: [tune] sampler, tpe)")
    tune.add_argument("--space", type=Path, metavar="FILE", help=SPACE_HELP)
    tune.add_argument("--headless", action="store_true", help="no questions but y/n on stdin (with --auto-accept: none)")
    tune.add_argument(
        "--auto-accept", choices=["validated"], help="with --headless: commit the best trial only if it beat the current values beyond the noise"
    )
    tune.set_defaults(handler=run_tune_command)


def run_tune_command(args: argparse.Namespace) -> int:
    if args.auto_accept and not args.headless:
        raise ConfigError("--auto-accept decides without asking, so it needs --headless", "add --headless")
    settings = load_settings()
    request = _request(args, settings)
    by_name = settings.runs_dir / args.run if args.run else None
    run = RunFolder(by_name.resolve()) if by_name is not None and (by_name / "session.json").exists() else find_run(args.run, runs=settings.runs_dir)
    from copilot.console.tuning import drive_tune
    from copilot.session.controller import Session

    session = Session.reopen(settings, run)
    try:
        return drive_tune(session, Console(highlight=False), request, auto_accept=bool(args.auto_accept))
    finally:
        session.stop()


def _request(args: argparse.Namespace, settings: Settings) -> TuneRequest:
    for flag, value in (("--trials", args.trials), ("--trial-steps", args.trial_steps), ("--budget-epochs", args.budget_epochs)):
        if value is not None and value <= 0:
            raise ConfigError(f"{flag} {value} is not positive", f"give {flag} a number above 0")
    if args.space is not None and not args.space.is_file():
        raise ConfigError(f"space file not found: {args.space}", "give the path of a TOML file (see `copilot tune --help`)")
    return TuneRequest(
        trials=args.trials or settings.tune.trials, sampler=args.sampler or settings.tune.sampler,
        trial_steps=args.trial_steps, budget_epochs=args.budget_epochs, space_file=args.space,
    )  # fmt: skip
