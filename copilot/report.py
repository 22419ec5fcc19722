"""The final report of a run: `.copilot/runs/<run-id>/report.md`, and its curves as PNG files.

Everything comes from the record on disk: the trainer's `metrics.jsonl`, the advisor's
`ledger.jsonl` and, when the run has one, its experiment history in git (rounds,
their diffs and measured results). The report holds the run summary; each round with
its diagnosis, change, verdict and before/after measurements; the rejected proposals
with the human's reasons; tokens and an estimated cost per provider and model; and
the loss, accuracy and gradient-norm curves as text charts (plotext, no colour) and,
when matplotlib is installed (it is not a dependency), as PNG files beside it.

It writes the report and its images and nothing else; it drives no trainer and
changes no history.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from copilot.advisor.ledger import read_ledger
from copilot.advisor.schemas import ArchitectureProposal, FinishProposal, HParamProposal, LedgerEntry, TokenUsage
from copilot.events import EpochSummary, Finished, HParamsApplied, ModelSwapped, RunStarted, StepBatch, TrainerError
from copilot.metrics_file import read_metrics
from copilot.numbers import percent, quantity
from copilot.plotext_lock import PLOTEXT_LOCK
from copilot.run_folder import RunFolder

if TYPE_CHECKING:
    from copilot.history import ExperimentHistory, RoundInfo

CHART_WIDTH = 78
CHART_HEIGHT = 18
PNG_SIZE_INCHES = (8.0, 4.0)
MAX_POINTS = 400  # per series in a chart: more cannot be seen at this width

# List prices in US dollars per million tokens (input, output), as published by AWS
# Bedrock and OpenAI in 2025. An ESTIMATE: regional prices, batch and cache discounts
# and later price changes are not modelled. Matched as a substring of the model id.
PRICE_PER_MILLION_TOKENS: dict[str, tuple[float, float]] = {
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-haiku": (0.25, 1.25),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}

def price_of(model: str) -> tuple[float, float] | None:
    """(input, output) dollars per million tokens for a model id, or None when not in the table."""
    for key in sorted(PRICE_PER_MILLION_TOKENS, key=len, reverse=True):
        if key in model:
            return PRICE_PER_MILLION_TOKENS[key]
    return None


# --------------------------------------------------------------------------- reading the run


@dataclass
class MetricsRecord:
    """What the report needs from metrics.jsonl, read once."""

    starts: list[RunStarted] = field(default_factory=list)
    epochs: list[EpochSummary] = field(default_factory=list)
    step_losses: list[tuple[int, float]] = field(default_factory=list)
    grad_norms: list[tuple[int, float]] = field(default_factory=list)
    round_steps: list[tuple[int, int]] = field(default_factory=list)  # (round, step) where a change applied
    errors: list[TrainerError] = field(default_factory=list)
    finished: Finished | None = None


def read_run(run: RunFolder) -> MetricsRecord:
    record = MetricsRecord()
    for event in read_metrics(run.metrics):
        if isinstance(event, RunStarted):
            record.starts.append(event)
        elif isinstance(event, EpochSummary):
            record.epochs.append(event)
        elif isinstance(event, StepBatch):
            for step in event.records:
                record.step_losses.append((step.step, step.loss))
                record.grad_norms.append((step.step, step.total_grad_norm))
        elif isinstance(event, (ModelSwapped, HParamsApplied)) and event.round is not None:
            record.round_steps.append((event.round, event.step))
        elif isinstance(event, TrainerError):
            record.errors.append(event)
        elif isinstance(event, Finished):
            record.finished = event
    return record


# --------------------------------------------------------------------------- formatting


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s" if minutes else f"{rest}s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return lines


def _fence(text: str, language: str = "") -> list[str]:
    """A code block whose fence is longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{language}", text.rstrip("\n"), fence]


# --------------------------------------------------------------------------- sections


def _summary(record: MetricsRecord, entries: Sequence[LedgerEntry], history: ExperimentHistory | None,
             rounds: Sequence[RoundInfo], advisor_name: str | None) -> list[str]:  # fmt: skip
    rows: list[tuple[str, str]] = []
    if record.starts:
        first, last = record.starts[0], record.starts[-1]
        data = first.data
        rows.append(("model", f"{first.model.class_name} from {Path(first.model.source_path).name}, {first.model.total_params:,} parameters at the start"))
        rows.append(("data", f"{data.name}: {data.train_size:,} training / {data.val_size:,} validation samples, {data.num_classes} classes"))
        rows.append(("device", last.device))
        rows.append(("starting hyperparameters", ", ".join(f"{k}={v}" for k, v in first.hparams.model_dump().items())))
    if record.epochs:
        final = record.epochs[-1]
        rows.append(("epochs trained", f"{final.epoch} ({final.step:,} steps, {_duration(sum(e.duration_s for e in record.epochs))} of training)"))
        rows.append(("final validation", f"accuracy {percent(final.val_accuracy, missing='-')}, loss {quantity(final.val_loss)} (epoch {final.epoch})"))
        scored = [e for e in record.epochs if e.val_accuracy is not None and math.isfinite(e.val_accuracy)]
        if scored:
            best = max(scored, key=lambda e: e.val_accuracy or 0.0)
            rows.append(("best validation accuracy", f"{percent(best.val_accuracy, missing='-')} at epoch {best.epoch}"))
    accepted = [info for info in rounds if info.round > 0]
    rejected = [e for e in entries if e.verdict is not None and e.verdict.decision == "reject"]
    proposals = "proposal" if len(rejected) == 1 else "proposals"
    rows.append(("rounds", f"{len(accepted)} after the baseline; {len(rejected)} {proposals} rejected"))
    if history is not None:
        rows.append(("experiment branch", f"`{history.branch}`"))
    if advisor_name:
        rows.append(("advisor", advisor_name))
    if record.finished is not None:
        ended = {"epochs_done": "the epoch budget was spent", "stopped": "stopped", "error": "stopped on an error"}
        rows.append(("ended", ended[record.finished.reason]))
    if record.errors:
        last_error = record.errors[-1]
        rows.append(("last trainer error", f"{last_error.kind}: {last_error.message}"))
    return ["## Summary", "", *_table(("", ""), rows)]


def _diagnosis_lines(entry: LedgerEntry) -> list[str]:
    diagnosis = entry.diagnosis
    lines = [
        f"Assessed at epoch {entry.epoch} (trigger: {entry.trigger}). **Diagnosis:** {diagnosis.health}, "
        f"route {diagnosis.route}, confidence {diagnosis.confidence:.0%}. {diagnosis.summary}".rstrip()
    ]
    lines += [f"- {finding.one_line()} — {finding.why}" for finding in diagnosis.findings]
    lines += [f"- notice: {notice}" for notice in diagnosis.notices]
    return lines


def _change_lines(entry: LedgerEntry | None, patch: str) -> list[str]:
    proposal = entry.proposal if entry is not None else None
    lines: list[str] = []
    if isinstance(proposal, (ArchitectureProposal, HParamProposal)):
        lines += ["", f"**Rationale:** {proposal.rationale}"]
    if isinstance(proposal, ArchitectureProposal):
        lines += [f"- {change}" for change in proposal.changes]
        sandbox = proposal.sandbox
        lines += ["", f"Sandbox (advisory): {sandbox.stage}, {quantity(sandbox.param_count)} parameters, forward+backward {quantity(sandbox.forward_backward_ms)} ms."]
    if patch.strip():
        lines += ["", *_fence(patch, "diff")]
    elif isinstance(proposal, ArchitectureProposal):
        lines += ["", *_fence(proposal.unified_diff(), "diff")]
    return lines


def _measured(info: RoundInfo) -> str:
    parts = []
    for name, label, shown in (("val_accuracy", "validation accuracy", partial(percent, missing="-")), ("val_loss", "validation loss", quantity)):
        before, after = info.before.get(name), info.after.get(name)
        if before is not None or after is not None:
            parts.append(f"{label} {shown(before)} → {shown(after)}")
    results = info.results
    if results is not None and results.epochs_trained is not None:
        parts.append(f"over {results.epochs_trained} epochs" + (f" ({_duration(results.training_s)} of training)" if results.training_s else ""))
    return "; ".join(parts) or "nothing measured yet"


def _rounds(rounds: Sequence[RoundInfo], patches: dict[int, str], entries: Sequence[LedgerEntry]) -> list[str]:
    by_commit = {entry.commit: entry for entry in entries if entry.commit}
    lines = ["## Rounds"]
    for info in rounds:
        entry = by_commit.get(info.sha)
        verdict = f", {info.verdict}" if info.verdict else ""
        advisor = f", advisor {info.advisor}" if info.advisor else ""
        lines += ["", f"### {info.subject} (`{info.short_sha}`{verdict}{advisor})", ""]
        if info.round == 0:
            after = info.after.get("val_accuracy")
            lines.append(f"The model as the user wrote it. Measured: validation accuracy {percent(after, missing='-')}.")
            continue
        if entry is not None:
            lines += _diagnosis_lines(entry)
        lines += ["", f"**Measured:** {_measured(info)}."]
        lines += _change_lines(entry, patches.get(info.round, ""))
    return lines


def _rounds_from_ledger(entries: Sequence[LedgerEntry]) -> list[str]:
    """For a run without a history (plain `copilot train`): the accepted proposals as the ledger has them."""
    accepted = [e for e in entries if e.verdict is not None and e.verdict.applied and e.proposal.kind != "finish"]
    lines = ["## Accepted proposals"]
    for entry in accepted:
        lines += ["", f"### {entry.proposal.kind}: {entry.proposal.summary} ({entry.verdict.decision if entry.verdict else ''})", ""]
        lines += _diagnosis_lines(entry)
        lines += _change_lines(entry, "")
    return lines if accepted else []


def _rejected(entries: Sequence[LedgerEntry]) -> list[str]:
    rejected = [e for e in entries if e.verdict is not None and e.verdict.decision == "reject"]
    if not rejected:
        return []
    rows = [
        (str(e.epoch), e.trigger, e.proposal.kind, e.proposal.summary, e.verdict.reason or "(no reason given)")
        for e in rejected
        if e.verdict is not None
    ]
    return ["## Rejected proposals", "", *_table(("epoch", "trigger", "kind", "proposal", "reason"), rows)]


def _closing_report(entries: Sequence[LedgerEntry]) -> list[str]:
    finishes = [e for e in entries if isinstance(e.proposal, FinishProposal) and (e.verdict is None or e.verdict.decision == "accept")]
    if not finishes:
        return []
    return ["## The advisor's closing report", "", finishes[-1].proposal.report.strip()]


def _tokens(entries: Sequence[LedgerEntry]) -> list[str]:
    """Calls, tokens and time per provider, model and role; a server's counts where it sent
    them, copilot's own count (marked) where it did not."""
    totals: dict[tuple[str, str, str], list[TokenUsage]] = {}
    for usage in (usage for entry in entries for usage in entry.tokens):
        totals.setdefault((usage.provider, usage.model, usage.role), []).append(usage)
    lines = ["## Tokens and cost (estimate)", ""]
    if not totals:
        return lines + ["No advisor calls were recorded."]
    rows = []
    total_cost = 0.0
    for (provider, model, role), usages in sorted(totals.items()):
        tokens_in = sum(usage.input_tokens for usage in usages)
        tokens_out = sum(usage.output_tokens for usage in usages)
        counted = "~" if any(usage.estimated for usage in usages) else ""
        seconds = sum(usage.latency_s for usage in usages)
        cost = estimated_cost(TokenUsage(provider=provider, model=model, role="assessor", input_tokens=tokens_in, output_tokens=tokens_out))
        total_cost += cost or 0.0
        shown = "not in the price table" if cost is None else f"${cost:.4f}"
        rows.append((provider, model, role, str(len(usages)), f"{counted}{tokens_in:,}", f"{counted}{tokens_out:,}",
                     f"{seconds:.1f} s ({seconds / len(usages):.1f} s a call)", shown))  # fmt: skip
    lines += _table(("provider", "model", "role", "calls", "input tokens", "output tokens", "time", "estimated cost"), rows)
    counted_note = (
        " Counts marked ~ were made by copilot (about four characters a token): the server sent none."
        if any(usage.estimated for usages in totals.values() for usage in usages)
        else ""
    )
    return lines + [
        "",
        f"Estimated total: ${total_cost:.4f}. This is an ESTIMATE from list prices in `copilot/report.py` "
        f"(US dollars per million tokens); your provider's bill is the real figure.{counted_note}",
    ]


def estimated_cost(usage: TokenUsage) -> float | None:
    """Dollars for one usage by the price table; 0 for the offline rules, None for an unknown model."""
    if usage.provider == "offline":
        return 0.0
    price = price_of(usage.model)
    if price is None:
        return None
    return (usage.input_tokens * price[0] + usage.output_tokens * price[1]) / 1_000_000


# --------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class Curve:
    name: str
    file_stem: str
    x_label: str
    y_label: str
    series: tuple[tuple[str, tuple[float, ...], tuple[float, ...]], ...]  # (label, xs, ys)
    marks: tuple[tuple[int, int], ...] = ()  # (round, x) where a change applied


def _thinned(points: Sequence[tuple[float, float]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    finite = [(x, y) for x, y in points if math.isfinite(y)]
    every = max(1, math.ceil(len(finite) / MAX_POINTS))
    kept = finite[::every]
    if finite and kept[-1] != finite[-1]:
        kept.append(finite[-1])
    return tuple(x for x, _ in kept), tuple(y for _, y in kept)


def curves(record: MetricsRecord) -> list[Curve]:
    """Loss and total gradient norm by step, accuracy by epoch; empty series are left out."""
    val_loss = [(float(e.step), e.val_loss) for e in record.epochs if e.val_loss is not None]
    train_acc = [(float(e.epoch), e.train_accuracy) for e in record.epochs if e.train_accuracy is not None]
    val_accuracy = [(float(e.epoch), e.val_accuracy) for e in record.epochs if e.val_accuracy is not None]
    log_norms = [(float(step), math.log10(norm)) for step, norm in record.grad_norms if norm > 0 and math.isfinite(norm)]
    by_step = tuple(record.round_steps)
    epoch_of_round = tuple(
        (number, next((e.epoch for e in record.epochs if e.step >= step), record.epochs[-1].epoch if record.epochs else 0))
        for number, step in record.round_steps
    )
    candidates = [
        Curve("Loss", "loss", "step", "loss", (("train (logged steps)", *_thinned(record.step_losses)), ("validation", *_thinned(val_loss))), by_step),
        Curve("Accuracy", "accuracy", "epoch", "accuracy", (("train", *_thinned(train_acc)), ("validation", *_thinned(val_accuracy))), epoch_of_round),
        Curve("Total gradient norm (log10, before clipping)", "grad_norm", "step", "log10 norm", (("total", *_thinned(log_norms)),), by_step),
    ]
    kept = []
    for curve in candidates:
        series = tuple(item for item in curve.series if item[1])
        if series:
            kept.append(Curve(curve.name, curve.file_stem, curve.x_label, curve.y_label, series, curve.marks))
    return kept


_MARKERS = ("braille", "x", "o")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def text_chart(curve: Curve, width: int = CHART_WIDTH, height: int = CHART_HEIGHT) -> str:
    """The curve drawn by plotext in plain characters (no colour codes), rounds as vertical lines."""
    import plotext as plt

    with PLOTEXT_LOCK:
        plt.clear_figure()
        plt.plotsize(width, height)
        plt.theme("clear")
        for (label, xs, ys), marker in zip(curve.series, _MARKERS):
            plt.plot(list(xs), list(ys), label=label, marker=marker)
        for _round, x in curve.marks:
            plt.vline(x)
        plt.xlabel(curve.x_label)
        plt.ylabel(curve.y_label)
        text = plt.build()
        plt.clear_figure()
    return "\n".join(line.rstrip() for line in _ANSI.sub("", text).splitlines())


def png_chart(curve: Curve, path: Path) -> bool:
    """The curve as a PNG file when matplotlib is installed; False (and no file) when it is not."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    # A Figure of its own (no pyplot): no global state, safe beside the app's threads.
    figure = Figure(figsize=PNG_SIZE_INCHES, layout="tight")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, xs, ys in curve.series:
        axes.plot(xs, ys, label=label)
    for number, x in curve.marks:
        axes.axvline(x, color="grey", linestyle=":", linewidth=1)
        axes.annotate(f"r{number}", (x, 1), xycoords=("data", "axes fraction"), fontsize=8, va="top")
    axes.set_title(curve.name)
    axes.set_xlabel(curve.x_label)
    axes.set_ylabel(curve.y_label)
    axes.legend()
    figure.savefig(path, dpi=100)
    return True


def _curve_sections(run: RunFolder, record: MetricsRecord) -> Iterator[str]:
    drawn = curves(record)
    if not drawn:
        return
    yield "## Curves"
    if record.round_steps:
        yield ""
        yield "Vertical lines mark where each round's change applied: " + ", ".join(f"r{n} at {s}" for n, s in record.round_steps) + " (steps)."
    for curve in drawn:
        yield ""
        yield f"### {curve.name}"
        yield ""
        yield from _fence(text_chart(curve), "text")
        image = run.path / f"{curve.file_stem}.png"
        if png_chart(curve, image):
            yield ""
            yield f"![{curve.name}]({image.name})"


# --------------------------------------------------------------------------- the report


def render_report(run: RunFolder, history: ExperimentHistory | None = None, *, advisor_name: str | None = None) -> str:
    """The report's markdown (and, as a side effect, its PNG curves in the run folder)."""
    record = read_run(run)
    entries = read_ledger(run)
    rounds: list[RoundInfo] = history.rounds() if history is not None else []
    patches = {info.round: history.show(info.round).patch for info in rounds if info.round > 0} if history else {}
    sections = [
        [f"# copilot report: {run.run_id}"],
        _summary(record, entries, history, rounds, advisor_name),
        _rounds(rounds, patches, entries) if rounds else _rounds_from_ledger(entries),
        _rejected(entries),
        _closing_report(entries),
        _tokens(entries),
        list(_curve_sections(run, record)),
    ]
    return "\n\n".join("\n".join(section) for section in sections if section) + "\n"


def write_report(run: RunFolder, history: ExperimentHistory | None = None, *, advisor_name: str | None = None) -> Path:
    """Write `report.md` in the run folder and return its path."""
    text = render_report(run, history, advisor_name=advisor_name)
    run.path.mkdir(parents=True, exist_ok=True)
    run.report.write_text(text, encoding="utf-8")
    return run.report
