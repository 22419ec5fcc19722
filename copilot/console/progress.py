"""Headless training progress: a table of finished epochs above a progress bar.

Shared by `copilot train` and the headless co-pilot (`copilot run --headless`,
`copilot demo --headless`), so both print a run the same way. It shows trainer events
on a rich console and holds no training, advisor or git logic. Without a terminal (a
pipe, a log file) a rich `Live` display is drawn only once, when it stops, so there each
epoch is printed as one line the moment it ends and no bar is drawn.
"""

from __future__ import annotations

import math
import statistics

from rich.console import Console, Group
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from copilot.events import EpochSummary, Event, LogLine, RunStarted, StepBatch, StepRecord, TrainerError
from copilot.numbers import percent, scaled


class TrainingProgress:
    """A table of finished epochs above a progress bar for the epoch in progress."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.table = self._new_table()
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
        )
        self.epochs = 0
        self.steps_per_epoch = 1
        self.epoch_records: list[StepRecord] = []
        self.task: TaskID | None = None
        self.epoch_start_step = 0

    @staticmethod
    def _new_table() -> Table:
        table = Table(title=None, expand=False)
        for column in ("epoch", "loss", "acc", "val loss", "val acc", "grad norm", "worst module"):
            table.add_column(column, justify="left" if column.startswith("worst") else "right")
        return table

    @property
    def renderable(self) -> TrainingProgress:
        """What a `Live` display shows: the epochs' table once it has rows, then the bar of the epoch in progress."""
        return self

    def __rich__(self) -> Group:
        shown = [self.table] if self.table.row_count else []
        if self.console.is_terminal:
            shown.append(self.progress)
        return Group(*shown)

    def next_table(self) -> None:
        """Start an empty table: the rows so far were printed when the last `Live` display stopped."""
        self.table = self._new_table()

    def show(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._started(event)
        elif isinstance(event, StepBatch):
            self._steps(event.records)
        elif isinstance(event, EpochSummary):
            self._epoch(event)
        elif isinstance(event, LogLine) and event.level != "debug":
            self.console.print(escape(event.message), style="yellow" if event.level in ("warning", "error") else None)
        elif isinstance(event, TrainerError):
            self.console.print(f"[bold red]{event.kind} error:[/] {escape(event.message)}")

    def _started(self, event: RunStarted) -> None:
        model, hparams = event.model, event.hparams
        self.console.print(
            f"{escape(model.class_name)} ({model.total_params:,} parameters) on {escape(event.data.name)} "
            f"({event.data.train_size:,} training samples), {escape(event.device)}; "
            f"{hparams.optimizer} lr {hparams.lr:g}, batch {hparams.batch_size}, {hparams.epochs} epochs"
        )
        self.console.print(f"outputs: {escape(event.output_form)}")
        for hook in event.ignored_hooks:
            self.console.print(f"{hook}() is ignored: the optimizer comes from HPARAMS and the flags", style="yellow")
        self.epochs = hparams.epochs
        ranks = max(event.world_size, 1)  # the batch size is global: each rank takes its share of it
        self.steps_per_epoch = max(1, math.ceil((event.data.train_size // ranks) / max(1, hparams.batch_size // ranks)))
        self.epoch_start_step = 0

    def _steps(self, records: tuple[StepRecord, ...]) -> None:
        self.epoch_records.extend(records)
        last = records[-1]
        if self.task is None:
            self.epoch_start_step = records[0].step - 1
            self.task = self.progress.add_task(f"epoch {last.epoch}/{self.epochs}", total=self.steps_per_epoch)
        self.progress.update(self.task, completed=min(last.step - self.epoch_start_step, self.steps_per_epoch))

    def _epoch(self, event: EpochSummary) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        grad_norms = [r.total_grad_norm for r in self.epoch_records if math.isfinite(r.total_grad_norm)]
        cells = (
            str(event.epoch),
            scaled(event.train_loss, fixed=True),
            percent(event.train_accuracy, missing="-"),
            scaled(event.val_loss, fixed=True),
            percent(event.val_accuracy, missing="-"),
            scaled(statistics.fmean(grad_norms), fixed=True) if grad_norms else "-",
            worst_module(self.epoch_records),
        )
        self.epoch_records = []
        if self.console.is_terminal:
            self.table.add_row(*(escape(cell) for cell in cells))
            return
        named = zip((column.header for column in self.table.columns), cells)
        self.console.print(escape(", ".join(f"{name} {cell}" for name, cell in named)), soft_wrap=True)


def worst_module(records: list[StepRecord]) -> str:
    """The module whose gradient norm is furthest from the median module's, on a log scale.

    A vanishing layer (1/500 of the median) and an exploding one (x500) are both what an
    expert would look at first; "-" when there are fewer than two modules to compare.
    """
    logs: dict[str, list[float]] = {}
    for record in records:
        for name, norm in record.per_module_grad_norm.items():
            if math.isfinite(norm) and norm > 0:
                logs.setdefault(name, []).append(math.log10(norm))
    if len(logs) < 2:
        return "-"
    mean_logs = {name: statistics.fmean(values) for name, values in logs.items()}
    median = statistics.median(mean_logs.values())
    name, value = max(mean_logs.items(), key=lambda item: abs(item[1] - median))
    factor = 10 ** (value - median)
    relation = f"x{factor:.3g}" if factor >= 1 else f"1/{1 / factor:.3g}"
    return f"{name} {10**value:.2e} ({relation})"
