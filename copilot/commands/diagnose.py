"""`copilot diagnose [RUN]`: what the advisor makes of a finished or crashed run, applying nothing.

Builds the run's snapshot (with the ledger's earlier verdicts), runs the advisor's
workflow up to the human gate and prints the diagnosis (health, findings with their
evidence) and the proposal: a syntax-highlighted diff for a new model file, a
before/after table for hyperparameters, or the report when training looks healthy.

It runs the workflow on an in-memory checkpointer (`AdvisorSession.in_memory`): the
proposal is shown, never left waiting at the gate in the run's `advisor.sqlite` where
the app would find it, and nothing is written to the ledger. To act on a proposal,
use the app. Exit codes: 0 when the advisor answered, 2 for a problem the user can
fix (no such run, no data description, a provider refusing the model), 1 for ours.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape

from copilot.config import load_settings
from copilot.console.advice import print_assessment
from copilot.run_folder import find_run


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diagnose",
        help="diagnose a run and show the change the advisor proposes, without applying it",
        description="Diagnose a finished or crashed run and print the advisor's proposal. Nothing is applied.",
    )
    parser.add_argument("run", nargs="?", metavar="RUN", help="run id, id prefix or folder (default: the latest run)")
    parser.add_argument(
        "--advisor",
        choices=["offline", "bedrock", "openai"],
        help="who advises every role (default: advisor.provider in copilot.toml, else offline)",
    )
    parser.set_defaults(handler=run_diagnose_command)


def run_diagnose_command(args: argparse.Namespace) -> int:
    from copilot.advisor.factory import build_advisor
    from copilot.advisor.ledger import read_ledger
    from copilot.advisor.snapshot import build_snapshot
    from copilot.advisor.workflow import AdvisorSession

    settings = load_settings({"advisor": {"provider": args.advisor}} if args.advisor else None)
    run = find_run(args.run, runs=settings.runs_dir)
    previous = read_ledger(run)
    accepted_rounds = sum(1 for entry in previous if entry.verdict and entry.verdict.applied)
    snapshot = build_snapshot(
        run, previous=previous, trigger="demand", round=accepted_rounds, target_accuracy=settings.advisor.target_accuracy
    )
    advisor = build_advisor(settings)

    console = Console(highlight=False)
    console.print(
        f"Run [bold]{escape(run.run_id)}[/]: epoch {snapshot.epoch}, step {snapshot.step}, "
        f"{escape(snapshot.class_name)} in {escape(snapshot.model_file_name)}; advisor: {escape(advisor.name)}"
    )
    asked_as = advisor.name
    outcome = AdvisorSession.in_memory(advisor, settings).assess(snapshot)
    if advisor.name != asked_as:  # an LLM server settled how it gives structured answers
        console.print(f"[dim]advisor: {escape(advisor.name)}[/]")
    print_assessment(console, outcome)
    console.print("[dim]Nothing was applied.[/]")
    return 0
