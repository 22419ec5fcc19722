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
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from copilot.config import load_settings
from copilot.run_folder import find_run

if TYPE_CHECKING:
    from copilot.advisor.schemas import ArchitectureProposal, Diagnosis, Evidence, Finding, HParamProposal, TokenUsage
    from copilot.advisor.workflow import Assessment

HEALTH_STYLE = {"healthy": "bold green", "warning": "bold yellow", "critical": "bold red"}
SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "red"}


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
    accepted_rounds = sum(1 for entry in previous if entry.verdict and entry.verdict.decision != "reject")
    snapshot = build_snapshot(
        run, previous=previous, trigger="demand", round=accepted_rounds, target_accuracy=settings.advisor.target_accuracy
    )
    advisor = build_advisor(settings)

    console = Console(highlight=False)
    console.print(
        f"Run [bold]{escape(run.run_id)}[/]: epoch {snapshot.epoch}, step {snapshot.step}, "
        f"{escape(snapshot.class_name)} in {escape(snapshot.model_file_name)}; advisor: {escape(advisor.name)}"
    )
    outcome = AdvisorSession.in_memory(advisor, settings).assess(snapshot)
    print_assessment(console, outcome)
    console.print("[dim]Nothing was applied.[/]")
    return 0


def print_assessment(console: Console, outcome: Assessment) -> None:
    diagnosis = outcome.diagnosis
    print_diagnosis(console, diagnosis)
    if outcome.kind == "failed":
        console.print(f"[bold red]No proposal:[/] {escape(outcome.message)}")
    elif outcome.kind == "continued":
        console.print("[bold]No change proposed:[/] training goes on as it is.")
    elif outcome.kind == "finished":
        console.print(Markdown(outcome.proposal.report))
    elif outcome.proposal.kind == "hyperparameters":
        print_hparam_proposal(console, outcome.proposal)
    elif outcome.proposal.kind == "architecture":
        print_architecture_proposal(console, outcome.proposal)
    print_tokens(console, outcome.tokens)


def print_diagnosis(console: Console, diagnosis: Diagnosis) -> None:
    style = HEALTH_STYLE[diagnosis.health]
    console.print(
        f"[{style}]{diagnosis.health.upper()}[/] {escape(diagnosis.summary)} "
        f"[dim](route: {diagnosis.route}, confidence {diagnosis.confidence:.0%})[/]"
    )
    for notice in diagnosis.notices:
        console.print(f"[yellow]notice:[/] {escape(notice)}")
    for contradiction in diagnosis.contradictions:
        console.print(f"[bold red]contradicted by the measurements:[/] {escape(contradiction)}")
    _print_findings(console, "Findings", diagnosis.findings)
    _print_findings(console, "Measured by the offline rules", diagnosis.measured_findings)


def _print_findings(console: Console, title: str, findings: list[Finding]) -> None:
    if not findings:
        return
    table = Table(title=title, title_justify="left", show_lines=True)
    for column in ("severity", "finding", "where", "evidence", "why it matters"):
        table.add_column(column)
    for finding in findings:
        table.add_row(
            f"[{SEVERITY_STYLE[finding.severity]}]{finding.severity}[/]",
            escape(finding.what),
            escape(finding.where or "whole model"),
            escape("\n".join(_evidence_text(evidence) for evidence in finding.evidence)),
            escape(finding.why),
        )
    console.print(table)


def _number(value: float | str | None) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _evidence_text(evidence: Evidence) -> str:
    threshold = f" (threshold {_number(evidence.threshold)})" if evidence.threshold is not None else ""
    return f"{evidence.metric} = {_number(evidence.value)}{threshold}"


def print_hparam_proposal(console: Console, proposal: HParamProposal) -> None:
    console.print(f"[bold]Proposal:[/] {escape(proposal.summary)}\n{escape(proposal.rationale)}")
    table = Table("hyperparameter", "before", "after")
    for key in proposal.change.changes():
        table.add_row(key, _number(getattr(proposal.before, key)), f"[bold]{_number(getattr(proposal.after, key))}[/]")
    console.print(table)


def print_architecture_proposal(console: Console, proposal: ArchitectureProposal) -> None:
    console.print(f"[bold]Proposal:[/] {escape(proposal.summary)}\n{escape(proposal.rationale)}")
    for change in proposal.changes:
        console.print(f"  • {escape(change)}")
    sandbox = proposal.sandbox
    checked = [f"sandbox: {sandbox.stage}"]
    if sandbox.param_count is not None:
        checked.append(f"{sandbox.param_count:,} parameters")
    if sandbox.forward_backward_ms is not None:
        checked.append(f"forward+backward {sandbox.forward_backward_ms:.1f} ms")
    if proposal.fix_rounds:
        checked.append(f"after {proposal.fix_rounds} fix round(s)")
    console.print("[green]" + escape(", ".join(checked)) + "[/]")
    console.print(Syntax(proposal.unified_diff(), "diff", theme="ansi_dark", background_color="default"))


def print_tokens(console: Console, tokens: list[TokenUsage]) -> None:
    spent = [usage for usage in tokens if usage.input_tokens or usage.output_tokens]
    if spent:
        total_in = sum(usage.input_tokens for usage in spent)
        total_out = sum(usage.output_tokens for usage in spent)
        console.print(f"[dim]tokens: {total_in:,} in, {total_out:,} out over {len(spent)} call(s)[/]")
