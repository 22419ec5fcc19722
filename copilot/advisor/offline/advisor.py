"""The offline advisor: the rule engine and the code generators behind the advisor roles.

`OfflineAdvisor` implements `copilot.advisor.roles.AdvisorRoles` with no network and
no randomness: the assessor is `copilot.advisor.offline.rules`, the coder and the fixer are
`copilot.advisor.offline.codegen.architect`, and the reporter renders the snapshot as
markdown. Its replies cost no tokens, so they carry no usage. It is the default
advisor and the fallback when an LLM provider is unavailable. It does not run code
(the sandbox does) and does not write files (the caller saves the report).
"""

from __future__ import annotations

import math

from copilot.advisor.offline import rules
from copilot.advisor.offline.codegen import architect
from copilot.advisor.roles import RoleReply
from copilot.advisor.schemas import ArchitectureAnswer, Diagnosis, HParamAnswer, SandboxReport
from copilot.advisor.snapshot import TrainingSnapshot
from copilot.numbers import percent


def _facts(snapshot: TrainingSnapshot) -> architect.ModelFacts:
    return architect.ModelFacts(
        class_name=snapshot.class_name,
        file_name=snapshot.model_file_name,
        source_code=snapshot.source_code,
        data=snapshot.data,
        model=snapshot.model,
        model_args=snapshot.model_args,
        forward_contract=snapshot.forward_contract,
    )


class OfflineAdvisor:
    """Every advisor role from rules and generators: deterministic, local, free."""

    name = "offline"

    def assess(self, snapshot: TrainingSnapshot) -> RoleReply[Diagnosis]:
        return RoleReply(rules.assess(snapshot))

    def propose_hparams(self, snapshot: TrainingSnapshot, diagnosis: Diagnosis, feedback: str | None) -> RoleReply[HParamAnswer]:
        return RoleReply(rules.propose_hparams(snapshot, diagnosis, feedback))

    def write_architecture(
        self, snapshot: TrainingSnapshot, diagnosis: Diagnosis, feedback: str | None
    ) -> RoleReply[ArchitectureAnswer]:
        tags = rules.diagnosis_tags(snapshot, diagnosis)
        feedback = rules.human_feedback(snapshot, "architecture", feedback)
        return RoleReply(architect.write_architecture(_facts(snapshot), diagnosis, tags, feedback))

    def fix_architecture(
        self, snapshot: TrainingSnapshot, answer: ArchitectureAnswer, report: SandboxReport
    ) -> RoleReply[ArchitectureAnswer]:
        return RoleReply(architect.fix_architecture(_facts(snapshot), answer, report))

    def write_report(self, snapshot: TrainingSnapshot, diagnosis: Diagnosis) -> RoleReply[str]:
        return RoleReply(render_report(snapshot, diagnosis))


def _value(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (a human's reason may hold a pipe or a newline)."""
    return text.replace("|", "\\|").replace("\n", " ")


def render_report(snapshot: TrainingSnapshot, diagnosis: Diagnosis) -> str:
    """A markdown summary of the run: outcome, findings with evidence, rounds, and the metric history."""
    data = snapshot.data
    lines = [
        f"# Run {snapshot.run_id}",
        "",
        f"**{snapshot.class_name}** ({snapshot.model_file_name}) on **{data.name}** ({data.task}, input {list(data.input_shape)}, "
        f"{data.num_classes} classes): {snapshot.epoch} epochs, {snapshot.step} steps, {snapshot.round} accepted rounds.",
        "",
        f"**Health: {diagnosis.health}.** {diagnosis.summary}",
        "",
    ]
    if snapshot.model is not None:
        model = snapshot.model
        lines += [
            f"Model: {model.total_params:,} parameters; activations {', '.join(model.activations) or 'none'}; "
            f"normalisation {'yes' if model.has_normalization else 'no'}; residual {'yes' if model.has_residual else 'no'}.",
            "",
        ]
    lines += ["Hyperparameters: " + ", ".join(f"{key}={value}" for key, value in snapshot.hparams.model_dump().items()), ""]

    if snapshot.history:
        lines += ["## Metrics", "", "| metric | first | best | last | points (downsampled) |", "| --- | --- | --- | --- | --- |"]
        for trend in snapshot.history:
            points = " ".join(_value(point) for point in trend.points)
            lines.append(f"| {trend.name} | {_value(trend.first)} | {_value(trend.best)} (at {trend.best_at}) | {_value(trend.last)} | {points} |")
        lines.append("")
    if snapshot.recent_epochs:
        lines += ["| epoch | round | train loss | train acc | val loss | val acc |", "| --- | --- | --- | --- | --- | --- |"]
        for row in snapshot.recent_epochs:
            lines.append(
                f"| {row.epoch} | {row.round} | {_value(row.train_loss)} | {percent(row.train_accuracy, missing='-')} | "
                f"{_value(row.val_loss)} | {percent(row.val_accuracy, missing='-')} |"
            )
        lines.append("")

    if snapshot.error is not None:
        lines += [f"## Training stopped: {snapshot.error.kind} error", "", snapshot.error.message, ""]

    lines += ["## Findings", ""]
    if not diagnosis.findings:
        lines.append("No problems found.")
    for finding in diagnosis.findings:
        where = f" in `{finding.where}`" if finding.where else ""
        evidence = "; ".join(
            f"{item.metric} = {_value(item.value)}" + (f" (threshold {_value(item.threshold)})" if item.threshold is not None else "")
            for item in finding.evidence
        )
        lines.append(f"- **{finding.what}**{where} ({finding.severity}): {finding.why} Evidence: {evidence}.")
    lines.append("")

    if snapshot.previous:
        lines += ["## Rounds", "", "| round | epoch | kind | proposal | verdict | reason | effect |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for proposal in snapshot.previous:
            effect = "-"
            if proposal.effect is not None:
                e = proposal.effect
                effect = f"{e.metric} {_value(e.before)} -> {_value(e.after)} in {e.epochs} epochs"
            lines.append(
                f"| {proposal.round} | {proposal.epoch} | {proposal.kind} | {_cell(proposal.summary)} | {proposal.decision} | "
                f"{_cell(proposal.reason or '-')} | {effect} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
