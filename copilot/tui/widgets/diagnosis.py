"""The diagnosis pane: the run's health, then each finding with the evidence it rests on.

A trainer error that triggered the assessment is shown above the findings, in one
line (the full text is one keypress away in the log). It renders what it is given
and never calls the advisor.
"""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from copilot.advisor.schemas import Diagnosis, Evidence, Finding
from copilot.events import TrainerError
from copilot.numbers import compact

HEALTH_STYLES = {"healthy": "bold green", "warning": "bold yellow", "critical": "bold red"}
SEVERITY_MARKS = {"info": ("·", "cyan"), "warning": ("▲", "yellow"), "critical": ("✖", "red")}
WAITING_TEXT = (
    "No diagnosis yet. The advisor looks every few epochs, and at once on an error, "
    "a NaN or a plateau. Press ? to ask it now."
)


def _measure(value: float | str | None) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return compact(float(value))
    return str(value)


def evidence_text(evidence: Evidence) -> Text:
    text = Text("    ")
    text.append(evidence.metric, "bold")
    text.append(f" = {_measure(evidence.value)}")
    if evidence.threshold is not None:
        text.append(f"  (threshold {_measure(evidence.threshold)})", "dim")
    return text


def finding_text(finding: Finding) -> Text:
    mark, style = SEVERITY_MARKS[finding.severity]
    text = Text()
    text.append(f"{mark} ", style)
    text.append(finding.what, f"bold {style}")
    if finding.where:
        text.append(f" in {finding.where}", "bold")
    text.append("\n")
    for evidence in finding.evidence:
        text.append_text(evidence_text(evidence))
        text.append("\n")
    text.append(f"    {finding.why}", "italic")
    return text


def diagnosis_renderable(
    diagnosis: Diagnosis | None, *, trigger: str | None, error: TrainerError | None, thinking: bool
) -> Group:
    parts: list[Text] = []
    if error is not None:
        line = Text("trainer stopped: ", "bold red")
        line.append(f"{error.kind}: {error.message}", "red")
        if error.hint:
            line.append(f"\nhint: {error.hint}", "italic")
        line.append("  (x: full text)", "dim")
        parts.append(line)
    if diagnosis is None:
        parts.append(Text("The advisor is thinking…" if thinking else WAITING_TEXT, "dim" if not thinking else "yellow"))
        return Group(*parts)
    head = Text("health ")
    head.append(f" {diagnosis.health} ", f"reverse {HEALTH_STYLES[diagnosis.health]}")
    head.append(f"  confidence {diagnosis.confidence:.0%}", "dim")
    if trigger:
        head.append(f"  trigger: {trigger}", "dim")
    parts.append(head)
    if diagnosis.summary:
        parts.append(Text(diagnosis.summary))
    for finding in diagnosis.findings:
        parts.append(finding_text(finding))
    for notice in diagnosis.notices:
        parts.append(Text(f"note: {notice}", "italic yellow"))
    for contradiction in diagnosis.contradictions:
        parts.append(Text(f"contradicted by the measurements: {contradiction}", "bold red"))
    if diagnosis.measured_findings:
        parts.append(Text("measured by the offline rules:", "dim"))
        parts.extend(finding_text(finding) for finding in diagnosis.measured_findings)
    return Group(*parts)


class DiagnosisPane(VerticalScroll):
    """Scrollable, focusable view of the latest diagnosis."""

    DEFAULT_CSS = """
    DiagnosisPane {
        height: auto;
        max-height: 50%;
    }
    DiagnosisPane > Static {
        width: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._shown: tuple[object, ...] | None = None

    def compose(self) -> ComposeResult:
        yield Static(diagnosis_renderable(None, trigger=None, error=None, thinking=False))

    def show(
        self, diagnosis: Diagnosis | None, *, trigger: str | None, error: TrainerError | None, thinking: bool
    ) -> None:
        shown = (diagnosis, trigger, error, thinking)
        if shown == self._shown:
            return
        self._shown = shown
        self.query_one(Static).update(diagnosis_renderable(diagnosis, trigger=trigger, error=error, thinking=thinking))
        # The pane's own height follows its content (auto, capped at a share of the column):
        # lay it out again, not only the text inside, or it keeps the height of what it showed before.
        self.refresh(layout=True)
        # And once more after the next frame: a new diagnosis that lands in the same frame as a
        # layout of the old text was seen (2 runs in about 30, on a loaded machine) to keep the
        # old text's one-row height, so the pane showed its first line over a blank one.
        self.call_after_refresh(self._lay_out_again)

    def _lay_out_again(self) -> None:
        self.query_one(Static).refresh(layout=True)
        self.refresh(layout=True)
