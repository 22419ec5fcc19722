"""The advisor's answer as terminal text: a diagnosis with its evidence, a proposal, the tokens it cost.

Shared by `copilot diagnose` and the headless driver, so a proposal reads the same
whether it was asked for once or met during a run: a syntax-highlighted diff for a new
model file, a before/after table for hyperparameters, the report for a finish.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from copilot.advisor.trials.curves import plain_chart, trial_curves
from copilot.advisor.trials.describe import start_lines
from copilot.numbers import significant

if TYPE_CHECKING:
    from copilot.advisor.schemas import ArchitectureProposal, Diagnosis, Finding, HParamProposal, TokenUsage, TrialReport
    from copilot.advisor.workflow import Assessment

HEALTH_STYLE = {"healthy": "bold green", "warning": "bold yellow", "critical": "bold red"}
SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "red"}


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
            escape("\n".join(evidence.one_line() for evidence in finding.evidence)),
            escape(finding.why),
        )
    console.print(table)


def _print_start(console: Console, proposal: HParamProposal | ArchitectureProposal) -> None:
    for line in start_lines(proposal):
        console.print(f"[bold yellow]{escape(line)}[/]")


def print_hparam_proposal(console: Console, proposal: HParamProposal) -> None:
    console.print(f"[bold]Proposal:[/] {escape(proposal.summary)}\n{escape(proposal.rationale)}")
    _print_start(console, proposal)
    table = Table("hyperparameter", "before", "after")
    for key in proposal.change.changes():
        table.add_row(key, significant(getattr(proposal.before, key)), f"[bold]{significant(getattr(proposal.after, key))}[/]")
    console.print(table)


def print_architecture_proposal(console: Console, proposal: ArchitectureProposal) -> None:
    console.print(f"[bold]Proposal:[/] {escape(proposal.summary)}\n{escape(proposal.rationale)}")
    for change in proposal.changes:
        console.print(f"  • {escape(change)}")
    _print_start(console, proposal)
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


def print_trial_curves(console: Console, report: TrialReport | None) -> bool:
    """The trial's curves as a plain-text chart (no colour: it reads the same in a pipe or a log file);
    False when the report has none to draw."""
    curves = trial_curves(report)
    if curves is None:
        return False
    # Unstyled and never wrapped: a wrapped chart line breaks the plot.
    console.print(Text(plain_chart(curves)), soft_wrap=True)
    return True


def print_tokens(console: Console, tokens: list[TokenUsage]) -> None:
    spent = [usage for usage in tokens if usage.input_tokens or usage.output_tokens]
    if spent:
        total_in = sum(usage.input_tokens for usage in spent)
        total_out = sum(usage.output_tokens for usage in spent)
        counted = " (about: the server sent no usage, copilot counted them)" if any(usage.estimated for usage in spent) else ""
        latency = sum(usage.latency_s for usage in spent)
        console.print(f"[dim]tokens: {total_in:,} in, {total_out:,} out over {len(spent)} call(s){counted}, {latency:.1f} s[/]")
