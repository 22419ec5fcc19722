"""Trial results in words: the lines the gate, the headless output, the commit and the note show.

One place for how measured figures read, so the proposal pane, the terminal and git
agree. Pure formatting of a `TrialReport`; no torch, no I/O.
"""

from __future__ import annotations

from copilot.advisor.schemas import ArchitectureProposal, ArmResult, HParamProposal, Proposal, TrialReport
from copilot.advisor.trials.runner import INCUMBENT


def arm_figures(arm: ArmResult) -> str:
    final = arm.final
    if final is None:
        return arm.message or arm.status
    accuracy = f", val acc {100 * final.val_accuracy:.1f}%" if final.val_accuracy is not None else ""
    return f"val loss {final.val_loss:.4f}{accuracy}"


def noise_text(noise: float) -> str:
    """`noise ±0.0040`: the unchanged run's spread of validation loss, as every view of a trial says it."""
    return f"noise ±{noise:.4f}"


def measured_line(report: TrialReport | None) -> str:
    """`measured: val loss 2.3026 -> 1.8511 (noise ±0.0040, 200 steps each)`, or why it was not measured."""
    if report is None or report.status == "not_trialled":
        why = f" ({report.reason})" if report is not None and report.reason else ""
        return f"not trialled{why}"
    incumbent, winner = report.arm(INCUMBENT), report.arm(report.winner) if report.winner else None
    noise = f"{noise_text(report.noise)}, " if report.noise is not None else ""
    extended = ", extended once" if report.extended else ""
    budget = f"{noise}{report.budget_steps} steps each{extended}, {report.wall_time_s:.0f} s"
    base = arm_figures(incumbent) if incumbent is not None else "-"
    if winner is None:
        return f"measured: no candidate beat the unchanged run ({base}; {budget})"
    steadier = f"; {report.reason}" if report.won_by == "steadier" else ""
    return f"measured: unchanged {base} -> this change {arm_figures(winner)} ({budget}{steadier})"


def start_lines(proposal: Proposal) -> list[str]:
    """Where the change starts from when that is not where the run stands, and weights it does not carry over."""
    lines = []
    if isinstance(proposal, ArchitectureProposal) and not proposal.carry_weights:
        lines.append("weights re-initialised: the edit changes their initial scale, so the trained ones are not carried over")
    start = proposal.start_from if isinstance(proposal, (HParamProposal, ArchitectureProposal)) else None
    if start is not None:
        where = f"the checkpoint at step {start.step} (epoch {start.epoch})" if start.checkpoint else "the run's start (the model file's fresh weights)"
        if start.exploded_at is not None:
            before = "no checkpoint was written before it" if start.checkpoint is None else f"before the loss exploded at step {start.exploded_at}"
            lines.append(f"applied from {where}, {before}: {start.evidence}")
        else:
            lines.append(f"applied from {where}: {start.evidence}")
    return lines


def arm_lines(report: TrialReport | None) -> list[str]:
    """One line per arm: the winner, the unchanged run, and every candidate tried with no gain."""
    if report is None or report.status == "not_trialled":
        return []
    labels = {"winner": "winner", "incumbent": "unchanged run", "no gain": "tried, no gain", "failed": "tried, failed"}
    return [f"{labels[arm.outcome]}: {arm.summary}: {arm_figures(arm)}" for arm in report.arms]
