"""Rounds as read back from git: the table, the measured results, and metric diffs.

A round is a commit on the run's branch whose trailers say `Copilot-Run: <this run>`;
its results are the JSON note on it under `refs/notes/copilot`. One `git log` with
`%(trailers)` and `%N` reads every round and every note at once; this module turns
that output into frozen models. It holds nothing between calls (git is the record)
and runs no git itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from copilot.history.messages import RENAMED_METRICS, copilot_trailers, parse_metrics, parse_round_label, parse_trailers, summary_of

# "tune": hyperparameters an Optuna study chose (`copilot tune`), committed like "hparams" with the study in the note.
RoundKind = Literal["baseline", "arch", "hparams", "tune", "rollback"]
ROUND_KINDS: tuple[str, ...] = get_args(RoundKind)
Verdict = Literal["accepted", "edited"]
Metrics = dict[str, float | int]
WALL_CLOCK_NOTE_KEY = "wall_time_s"  # what round notes called their (pause-counting) time before `training_s`

_FIELD = "\x1f"
_RECORD = "\x1e"
# One record per commit: hash, short hash, parents, committer time, subject, trailers, note.
LOG_FORMAT = "%H%x1f%h%x1f%P%x1f%cI%x1f%s%x1f%(trailers:only,unfold)%x1f%N%x1e"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TrialResults(Frozen):
    """A round's trial in its note: the change against the unchanged run, same steps, same data."""

    steps: int  # trial steps of the change (counted apart from the run's epochs)
    wall_time_s: float  # every arm together
    val_loss: float | None = None
    val_accuracy: float | None = None
    unchanged_val_loss: float | None = None
    unchanged_val_accuracy: float | None = None
    noise: float | None = None
    tried: list[str] = Field(default_factory=list)  # every arm, one line each


class TuneResults(Frozen):
    """A tune round's study in its note: where it is stored, what it tried, and the best against the current values."""

    study: str  # the study's name in the run's tune.sqlite
    sampler: str
    trials: int  # every trial the study finished, pruned and failed ones included
    pruned: int
    samples_per_trial: int  # the budget each trial trained, counted in training samples
    best_trial: int
    best_val_loss: float
    current_val_loss: float | None = None  # trial 0: the run's own hyperparameters
    advisor_val_loss: float | None = None  # trial 1 when the advisor had a guess
    changes: str  # `lr 0.5 -> 0.02, optimizer SGD -> Adam`: the best trial against the current values
    wall_time_s: float
    table: list[str] = Field(default_factory=list)  # every trial, one line each


class RoundResults(Frozen):
    """What a round achieved, measured after it (the JSON note on its commit)."""

    val_accuracy: float | None = None
    val_loss: float | None = None
    train_loss: float | None = None
    epoch: int | None = None  # the epoch the figures were measured at
    epochs_trained: int | None = None  # epochs trained on this round's code
    training_s: float | None = None  # the time those epochs trained: pauses and waits for the human left out
    checkpoint: str | None = None  # the checkpoint a rollback to this round resumes from
    trial: TrialResults | None = None  # what the round's change measured in its trial, before it was accepted
    final: bool | None = None  # the run left the round (a later round, rollback, undo or redo): never rewritten
    tune: TuneResults | None = None  # a tune round: the study that chose it

    def merged(self, newer: "RoundResults") -> "RoundResults":
        """These results with every field `newer` sets replaced."""
        return type(self).model_validate({**self.model_dump(exclude_none=True), **newer.model_dump(exclude_none=True)})

    def metrics(self) -> Metrics:
        return self.model_dump(include={"val_accuracy", "val_loss", "train_loss", "epoch"}, exclude_none=True)

    def to_note(self) -> str:
        """Indented JSON, so `git log --notes=copilot` is readable; NaN stays NaN."""
        return json.dumps(self.model_dump(exclude_none=True), indent=2, sort_keys=True, allow_nan=True)

    @classmethod
    def from_note(cls, text: str) -> "RoundResults | None":
        """A note we cannot read (edited by hand) counts as no results rather than breaking the table."""
        if not text.strip():
            return None
        try:
            note = _renamed(json.loads(text))
            if isinstance(note, dict):
                # Notes before `training_s` held the round's wall-clock time, the minutes a proposal
                # waited included: a different figure, so it is not read as this one.
                note.pop(WALL_CLOCK_NOTE_KEY, None)
            return cls.model_validate(note)
        except (ValueError, ValidationError):
            return None


def _renamed(note: object) -> object:
    """A note written before the metric renames, with today's names (its trial's too)."""
    if not isinstance(note, dict):
        return note
    return {RENAMED_METRICS.get(key, key): _renamed(value) for key, value in note.items()}


class RoundInfo(Frozen):
    """One row of the rounds table."""

    round: int
    kind: RoundKind
    subject: str
    summary: str  # the subject without `kind(rN): `
    sha: str
    short_sha: str
    time: datetime
    run_id: str
    advisor: str | None = None
    verdict: Verdict | None = None
    before: Metrics = {}  # metrics when the change was proposed (Copilot-Before)
    after: Metrics = {}  # metrics measured on this round: its note, else the next round's `before`
    results: RoundResults | None = None
    rollback_to: int | None = None
    proposal_id: str | None = None  # the ledger entry this round applies (Copilot-Proposal)
    trailers: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return f"r{self.round}"

    @property
    def val_accuracy_before(self) -> float | None:
        return _number(self.before.get("val_accuracy"))

    @property
    def val_accuracy_after(self) -> float | None:
        return _number(self.after.get("val_accuracy"))

    @property
    def val_loss_before(self) -> float | None:
        return _number(self.before.get("val_loss"))

    @property
    def val_loss_after(self) -> float | None:
        return _number(self.after.get("val_loss"))


class MetricChange(Frozen):
    """One metric of a diff: round a's value, round b's, and b minus a."""

    name: str
    old: float | int | None
    new: float | int | None
    change: float | int | None  # new - old, None when either is missing


class RoundDiff(Frozen):
    """Round `a` against round `b`: the model and hyperparameter files, and the metrics."""

    a: RoundInfo
    b: RoundInfo
    files: tuple[str, ...]  # files that differ
    patch: str  # unified diff, a/ is round a, b/ is round b
    metrics: tuple[MetricChange, ...]


class RoundDetail(Frozen):
    """`copilot show R`: the round, its full message and its change against the commit before it."""

    info: RoundInfo
    message: str
    patch: str


@dataclass(frozen=True)
class LogEntry:
    """One commit as `git log --format=LOG_FORMAT` printed it; rounds or not."""

    sha: str
    short_sha: str
    parents: tuple[str, ...]
    time: datetime
    subject: str
    trailers: tuple[tuple[str, str], ...]
    note: str

    def copilot(self) -> dict[str, str]:
        return copilot_trailers(self.trailers)


def parse_log(output: str) -> list[LogEntry]:
    entries = []
    for record in output.split(_RECORD):
        record = record.lstrip("\n")
        if not record:
            continue
        sha, short_sha, parents, time, subject, trailers, note = record.split(_FIELD, 6)
        entries.append(
            LogEntry(
                sha=sha,
                short_sha=short_sha,
                parents=tuple(parents.split()),
                time=datetime.fromisoformat(time),
                subject=subject,
                trailers=parse_trailers(trailers),
                note=note,
            )
        )
    return entries


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def round_number_of(entry: LogEntry, run_id: str) -> int | None:
    """The round number a commit records, or None when it is not one of this run's rounds."""
    fields = entry.copilot()
    if fields.get("Run") != run_id or fields.get("Kind") not in ROUND_KINDS:
        return None
    return parse_round_label(fields.get("Round", ""))


def round_of_entry(entry: LogEntry, run_id: str) -> RoundInfo | None:
    """The round a commit records, or None when it is not one of this run's rounds."""
    number = round_number_of(entry, run_id)
    if number is None:
        return None
    fields = entry.copilot()
    kind = fields["Kind"]
    results = RoundResults.from_note(entry.note)
    verdict = fields.get("Verdict")
    return RoundInfo(
        round=number,
        kind=kind,  # type: ignore[arg-type]
        subject=entry.subject,
        summary=summary_of(entry.subject),
        sha=entry.sha,
        short_sha=entry.short_sha,
        time=entry.time,
        run_id=run_id,
        advisor=fields.get("Advisor"),
        verdict=verdict if verdict in ("accepted", "edited") else None,  # type: ignore[arg-type]
        before=parse_metrics(fields.get("Before", "")),
        after=results.metrics() if results else {},
        results=results,
        rollback_to=parse_round_label(fields.get("Rollback-To", "")),
        proposal_id=fields.get("Proposal"),
        trailers=entry.trailers,
    )


def rounds_from_log(entries: list[LogEntry], run_id: str) -> list[RoundInfo]:
    """The run's rounds, oldest first, from `git log` entries (newest first, as git prints them).

    A round's `after` figures are its note's, completed by the next round's `before`:
    those were measured on this round's code when the next change was proposed.
    """
    rounds = [info for entry in reversed(entries) if (info := round_of_entry(entry, run_id)) is not None]
    for position, info in enumerate(rounds[:-1]):
        after = {**rounds[position + 1].before, **info.after}
        if after != info.after:
            rounds[position] = info.model_copy(update={"after": after})
    return rounds


def metric_changes(a: RoundInfo, b: RoundInfo) -> tuple[MetricChange, ...]:
    """Old (round a), new (round b) and the change, for every metric either round measured."""
    first = [name for name in ("val_accuracy", "val_loss") if name in a.after or name in b.after]
    rest = sorted((set(a.after) | set(b.after)) - set(first) - {"epoch"})
    changes = []
    for name in first + rest:
        old, new = a.after.get(name), b.after.get(name)
        both = _number(old) is not None and _number(new) is not None
        changes.append(MetricChange(name=name, old=old, new=new, change=(new - old) if both else None))  # type: ignore[operator]
    return tuple(changes)
