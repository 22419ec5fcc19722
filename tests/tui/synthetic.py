"""A seeded stand-in for `copilot.session.controller.Session`, for app tests and the load benchmark.

TEST DOUBLE / LOAD GENERATOR: it implements the interface the app drives (the same
method names and return shapes as the real session) with seeded trainer events, a
scripted advisor and an in-memory rounds list, so snapshots are byte-for-byte
repeatable and the load benchmark can stream exactly 100 steps a second. Tests
against the real session (real trainer, real git) live in test_app_real_session.py.

The story it tells is the demo's: a CNN whose early layers' gradients have vanished
(loss flat at ln 10, accuracy at chance), then, after round 1, a healthy model.
"""

from __future__ import annotations

import difflib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from copilot.advisor.schemas import (
    ArchitectureProposal,
    ArmResult,
    Diagnosis,
    Evidence,
    Finding,
    HParamChange,
    HParamProposal,
    SandboxReport,
    TrialPoint,
    TrialReport,
    Verdict,
)
from copilot.events import (
    ActivationStats,
    DataSpec,
    EpochSummary,
    Event,
    HParams,
    LogLine,
    ModelSummary,
    ModelSwapped,
    ModuleInfo,
    RunStarted,
    StateChanged,
    StepBatch,
    StepRecord,
)
from copilot.history.rounds import MetricChange, RoundDiff, RoundInfo
from copilot.session.controller import AdvisorTurn as Turn
from copilot.session.controller import BranchMoved, VerdictResult

RUN_ID = "20261120-093000-bad-cnn-3f2a"
START_TIME = 1_795_000_000.0  # fixed, so log times in snapshots never move
DATA = DataSpec(
    name="shapes", task="classification", input_shape=(3, 32, 32), num_classes=10, train_size=4096, val_size=1024
)
MODULES = (
    ModuleInfo(name="features.0", type="Conv2d", params=448, detail="3->16, k=3"),
    ModuleInfo(name="features.2", type="Conv2d", params=4640, detail="16->32, k=3"),
    ModuleInfo(name="features.4", type="Conv2d", params=18496, detail="32->64, k=3"),
    ModuleInfo(name="classifier.0", type="Linear", params=262272, detail="4096->64"),
    ModuleInfo(name="classifier.2", type="Linear", params=650, detail="64->10"),
)
BROKEN_MODEL = ModelSummary(
    class_name="BadCNN",
    source_path="bad_cnn.py",
    total_params=286506,
    trainable_params=286506,
    modules=MODULES,
    activations=("Sigmoid",),
)
FIXED_MODEL = BROKEN_MODEL.model_copy(update={"class_name": "BadCNN", "activations": ("ReLU",), "has_normalization": True})
# Typical gradient norms per module (log10) before and after the fix: the early layers have vanished.
BROKEN_GRAD_LOG10 = {"features.0": -9.3, "features.2": -7.8, "features.4": -6.1, "classifier.0": -3.2, "classifier.2": -1.6}
FIXED_GRAD_LOG10 = {"features.0": -1.1, "features.2": -1.0, "features.4": -0.9, "classifier.0": -0.8, "classifier.2": -0.5}

OLD_CODE = '''import torch
from torch import nn


class BadCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.Sigmoid(),
            nn.Conv2d(16, 32, 3, padding=1), nn.Sigmoid(),
            nn.Conv2d(32, 64, 3, padding=1), nn.Sigmoid(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4096, 64), nn.Sigmoid(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(nn.functional.max_pool2d(self.features(x), 4))
'''
NEW_CODE = OLD_CODE.replace("nn.Sigmoid()", "nn.ReLU()").replace(
    "nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),", "nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),"
)


def broken_diagnosis() -> Diagnosis:
    return Diagnosis(
        health="critical",
        route="architecture",
        confidence=0.86,
        summary="vanishing gradients in features.0; proposing a new architecture.",
        findings=[
            Finding(
                what="vanishing gradients",
                where="features.0",
                evidence=[Evidence(metric="grad_norm", value=5.1e-10, threshold=1e-7)],
                why="The first layers barely learn, so the loss stays at chance level.",
                severity="critical",
            ),
            Finding(
                what="saturated activations",
                where="features.1",
                evidence=[Evidence(metric="saturated_fraction", value=0.93, threshold=0.3)],
                why="Sigmoid outputs pinned near 0 or 1 pass almost no gradient back.",
                severity="warning",
            ),
        ],
    )


def architecture_proposal() -> ArchitectureProposal:
    return ArchitectureProposal(
        summary="ReLU instead of Sigmoid, batch norm after the first conv",
        rationale="Sigmoid saturates and multiplies gradients by at most 0.25 per layer; ReLU and batch norm keep them alive.",
        changes=["Sigmoid -> ReLU everywhere", "BatchNorm2d(16) after features.0"],
        class_name="BadCNN",
        file_name="bad_cnn.py",
        old_code=OLD_CODE,
        code=NEW_CODE,
        sandbox=SandboxReport(
            ok=True, stage="passed", message="passed", output_shape=(8, 10), expected_shape=(8, 10),
            param_count=286538, forward_backward_ms=4.2,
        ),
        trials=trial_report(),
    )


def trial_report() -> TrialReport:
    """The change against the unchanged run over 200 steps, with a hyperparameter candidate that gained nothing."""

    def points(*losses: float) -> list[TrialPoint]:
        return [TrialPoint(trial_step=50 * (i + 1), val_loss=loss, val_accuracy=max(0.0, 1.2 - loss / 2)) for i, loss in enumerate(losses)]

    return TrialReport(
        status="trialled", reason="c1 lowers validation loss by 0.8", budget_steps=200, expected_s=24.0,
        noise=0.004, noise_method="trend residuals over 4 evaluations", min_gain=0.01, winner="c1",
        wall_time_s=31.0, trial_steps=600,
        arms=[
            ArmResult(arm="incumbent", summary="unchanged", status="measured", outcome="incumbent", points=points(2.29, 2.28, 2.28, 2.27), steps=200),
            ArmResult(arm="c1", summary="ReLU and batch norm", status="measured", outcome="winner", points=points(2.0, 1.8, 1.6, 1.47), steps=200),
            ArmResult(arm="c2", summary="lr 0.05 instead of 0.1", status="measured", outcome="no gain", points=points(2.29, 2.28, 2.27, 2.27), steps=200),
        ],
    )  # fmt: skip


def hparam_proposal() -> HParamProposal:
    before = HParams(optimizer="SGD", lr=0.1, momentum=0.0, epochs=12)
    change = HParamChange(optimizer="Adam", lr=1e-3)
    return HParamProposal(
        summary="Adam at lr 1e-3 instead of SGD at 0.1",
        rationale="The loss oscillates: a smaller, adaptive step settles it.",
        change=change,
        before=before,
        after=change.apply_to(before),
    )


def round_info(number: int, kind: str, summary: str, sha: str, before: float | None, after: float | None) -> RoundInfo:
    return RoundInfo(
        round=number,
        kind=kind,
        subject=f"{kind}(r{number}): {summary}" if kind != "baseline" else f"baseline(r0): {summary}",
        summary=summary,
        sha=sha * 5,
        short_sha=sha[:7],
        time=datetime(2026, 11, 20, 9, 30 + number, tzinfo=timezone.utc),
        run_id=RUN_ID,
        advisor="offline",
        verdict="accepted" if number else None,
        before={"val_accuracy": before} if before is not None else {},
        after={"val_accuracy": after} if after is not None else {},
    )


def metric_change(name: str, old: float | None, new: float | None) -> MetricChange:
    return MetricChange(name=name, old=old, new=new, change=None if old is None or new is None else new - old)


def seeded_rounds() -> list[RoundInfo]:
    return [
        round_info(0, "baseline", "bad_cnn.py as you wrote it", "1a2b3c4d", None, 0.101),
        round_info(1, "arch", "ReLU instead of Sigmoid, batch norm after the first conv", "5e6f7a8b", 0.101, 0.912),
        round_info(2, "hparams", "Adam at lr 1e-3 instead of SGD at 0.1", "9c0d1e2f", 0.912, 0.968),
    ]


# --------------------------------------------------------------------------- seeded events


def step_record(rng: np.random.Generator, step: int, epoch: int, progress: float, fixed: bool) -> StepRecord:
    """One logged step: flat at chance while broken, a falling loss once fixed (`progress` 0..1 through the round)."""
    centres = FIXED_GRAD_LOG10 if fixed else BROKEN_GRAD_LOG10
    norms = {name: float(10 ** (centre + rng.normal(0, 0.15))) for name, centre in centres.items()}
    ratios = {name: float(norm * (0.02 if fixed else 0.5)) for name, norm in norms.items()}
    if fixed:
        loss = 0.15 + 2.15 * math.exp(-5 * progress) + rng.normal(0, 0.03)
        accuracy = min(1.0, 0.98 - 0.88 * math.exp(-5 * progress) + rng.normal(0, 0.01))
    else:
        loss = math.log(10) + rng.normal(0, 0.004)
        accuracy = 0.1 + rng.normal(0, 0.01)
    return StepRecord(
        epoch=epoch,
        step=step,
        loss=loss,
        accuracy=accuracy,
        lr=0.1 if not fixed else 1e-3,
        samples_per_sec=2400.0 + 10 * (step % 7),
        total_grad_norm=float(math.sqrt(sum(norm * norm for norm in norms.values()))),
        per_module_grad_norm=norms,
        per_module_update_ratio=ratios,
    )


def seeded_run_events(
    *, seed: int = 0, epochs_broken: int = 4, epochs_fixed: int = 3, steps_per_epoch: int = 320, log_every: int = 10
) -> list[Event]:
    """A whole run's events: the broken model, round 1 (a model swap), the fixed model."""
    rng = np.random.default_rng(seed)
    hparams = HParams(lr=0.1, epochs=epochs_broken + epochs_fixed + 5)
    events: list[Event] = [
        RunStarted(run_id=RUN_ID, device="cpu", data=DATA, model=BROKEN_MODEL, hparams=hparams, time=START_TIME),
        LogLine(message="training BadCNN (286,506 parameters) on shapes, cpu", time=START_TIME),
    ]
    step = 0
    clock = START_TIME
    total_epochs = epochs_broken + epochs_fixed
    for epoch in range(1, total_epochs + 1):
        fixed = epoch > epochs_broken
        if epoch == epochs_broken + 1:
            events.append(ModelSwapped(model=FIXED_MODEL, transferred=6, total=8, step=step, round=1))
            events.append(LogLine(message="round 1: model swapped, 6/8 tensors carried over", time=clock))
        records = []
        for _ in range(steps_per_epoch // log_every):
            step += log_every
            progress = (epoch - epochs_broken - 1 + len(records) * log_every / steps_per_epoch) / max(1, epochs_fixed)
            records.append(step_record(rng, step, epoch, max(0.0, progress), fixed))
        for start in range(0, len(records), 8):
            events.append(StepBatch(records=tuple(records[start : start + 8])))
        dead = {"features.1": 0.0, "features.3": 0.02} if fixed else {}
        saturated = {} if fixed else {"features.1": 0.93, "features.3": 0.88, "features.5": 0.71}
        events.append(ActivationStats(epoch=epoch, step=step, dead_fraction=dead, saturated_fraction=saturated))
        clock += 30.0
        last = records[-1]
        val_accuracy = last.accuracy - 0.01 if last.accuracy is not None else None
        events.append(
            EpochSummary(
                epoch=epoch, step=step, train_loss=last.loss, train_accuracy=last.accuracy,
                val_loss=last.loss + 0.02, val_accuracy=val_accuracy, lr=last.lr,
                samples_per_sec=last.samples_per_sec, duration_s=30.0, round=1 if fixed else 0,
            )
        )
        events.append(LogLine(message=f"epoch {epoch}: val_loss {last.loss + 0.02:.3f}, val_acc {val_accuracy:.3f}", time=clock))
    return events


# --------------------------------------------------------------------------- the session double


@dataclass
class SyntheticSession:
    """Scripted session: seeded events once (or a steady stream), scripted advisor turns, in-memory rounds.

    `calls` records every call the app made, in order, for the tests to assert on.
    """

    events: list[Event] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    due: list[str] = field(default_factory=list)  # triggers due_assessment() hands out, one per call
    waiting: Turn | None = None  # pending() after a "restart"
    run_id: str = RUN_ID
    requested_model: str = "bad_cnn.py"
    advisor_name: str = "offline"
    round: int = 0
    tokens_spent: int = 0
    held_for_advisor: bool = False
    rounds_list: list[RoundInfo] = field(default_factory=seeded_rounds)
    calls: list[tuple] = field(default_factory=list)
    assess_delay_s: float = 0.0
    stop_delay_s: float = 0.0
    stream: "SteadyStream | None" = None
    edit_retries: list[Turn] = field(default_factory=list)  # what an edit verdict gets back, one per edit: the edit refused

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._recorded = list(self.events)  # what a real session's metrics.jsonl would hold
        self._undone: list[RoundInfo] = []
        self.poll_threads: set[str] = set()
        self.stopped = threading.Event()
        self.on_history_changed: Callable[[], None] | None = None  # the app's, as a real session's

    def record_result(self, round_number: int, after: dict[str, float]) -> None:
        """A round's results written into the record, as a real session's assessment does (from its thread)."""
        with self._lock:
            self.rounds_list = [info.model_copy(update={"after": after}) if info.round == round_number else info for info in self.rounds_list]
        self._history_changed()

    def _history_changed(self) -> None:
        if self.on_history_changed is not None:
            self.on_history_changed()

    def _record(self, *call: object) -> None:
        with self._lock:
            self.calls.append(call)

    def names(self) -> list[str]:
        with self._lock:
            return [call[0] for call in self.calls]

    # trainer side
    def poll_events(self, timeout: float) -> list[Event]:
        self.poll_threads.add(threading.current_thread().name)
        with self._lock:
            drained, self.events = self.events, []
        if self.stream is not None:
            return drained + self.stream.poll(timeout)
        if not drained:
            time.sleep(min(timeout, 0.01))  # not a wait: the fake of a blocking poll, as the real session's, but brief
        return drained

    def due_assessment(self) -> str | None:
        with self._lock:
            return self.due.pop(0) if self.due else None

    def pause(self) -> None:
        self._record("pause")
        with self._lock:
            self.events.append(StateChanged(state="paused"))

    def resume_training(self) -> None:
        self._record("resume_training")
        self.held_for_advisor = False
        with self._lock:
            self.events.append(StateChanged(state="running"))

    def checkpoint_now(self) -> None:
        self._record("checkpoint_now")

    def stop(self, timeout: float = 5.0) -> None:
        self._record("stop")
        time.sleep(self.stop_delay_s)  # not a wait: a slow trainer's checkpoint on the way out, the thing under test
        self.stopped.set()

    # advisor side
    def assess(self, trigger: str) -> Turn:
        self._record("assess", trigger)
        time.sleep(self.assess_delay_s)  # not a wait: a slow advisor, the thing under test
        turn = self.turns.pop(0)
        turn = Turn(turn.diagnosis, turn.proposal, trigger, turn.tokens, turn.edit_problem)
        self.tokens_spent += sum(usage.input_tokens + usage.output_tokens for usage in turn.tokens)
        self.waiting = turn
        return turn

    def pending(self) -> Turn | None:
        self._record("pending")
        return self.waiting

    def take_recorded(self) -> list[Event]:
        return []  # a fresh run: the seeded events arrive live

    def recorded_diagnosis(self) -> tuple[Diagnosis, str] | None:
        return None

    def decide(self, verdict: Verdict) -> VerdictResult:
        self._record("decide", verdict)
        turn = self.waiting
        assert turn is not None, "decide() without a pending proposal"
        if verdict.decision == "reject":
            self.waiting = None
            return VerdictResult(False, None, f"rejected: {verdict.reason or 'no reason given'}", None)
        if verdict.decision == "edit" and self.edit_retries:
            self.waiting = self.edit_retries.pop(0)
            return VerdictResult(False, None, self.waiting.edit_problem or "the edit was not taken", self.waiting)
        self.waiting = None
        self.round += 1
        info = round_info(self.round, "arch" if turn.proposal.kind == "architecture" else "hparams", turn.proposal.summary, "abcdef12", 0.1, None)
        self.rounds_list.append(info)
        return VerdictResult(True, info, f"round {self.round} accepted and applied", None)

    # history side
    def rounds(self) -> list[RoundInfo]:
        self._record("rounds")
        return list(self.rounds_list)

    def diff(self, a: int, b: int) -> RoundDiff:
        self._record("diff", a, b)
        first, second = self.rounds_list[a], self.rounds_list[b]
        patch = "".join(
            difflib.unified_diff(
                OLD_CODE.splitlines(keepends=True), NEW_CODE.splitlines(keepends=True), "a/bad_cnn.py", "b/bad_cnn.py"
            )
        )
        return RoundDiff(
            a=first,
            b=second,
            files=("bad_cnn.py",),
            patch=patch,
            metrics=(metric_change("val_accuracy", first.val_accuracy_after, second.val_accuracy_after),),
        )

    def round_epochs(self, *rounds: int) -> dict[int, list[EpochSummary]]:
        self._record("round_epochs", *rounds)
        return {number: [e for e in self._recorded if isinstance(e, EpochSummary) and e.round == number] for number in rounds}

    def rollback(self, k: int) -> BranchMoved:
        self._record("rollback", k)
        info = round_info(len(self.rounds_list), "rollback", f"back to r{k}", "77aa88bb", None, None)
        self.rounds_list.append(info)
        self._history_changed()
        return BranchMoved(info, f"rolled back to r{k} as {info.label}; training continues from r{k}'s checkpoint")

    def undo(self) -> BranchMoved:
        self._record("undo")
        self._undone.append(self.rounds_list.pop())
        self._history_changed()
        return BranchMoved(self.rounds_list[-1], f"undone: the branch is at {self.rounds_list[-1].label}")

    def redo(self) -> BranchMoved:
        self._record("redo")
        self.rounds_list.append(self._undone.pop())
        self._history_changed()
        return BranchMoved(self.rounds_list[-1], f"redone: the branch is at {self.rounds_list[-1].label}")

    def write_report(self) -> Path:
        self._record("write_report")
        return Path(".copilot/runs") / self.run_id / "report.md"


class SteadyStream:
    """LOAD GENERATOR: logged steps at a fixed rate, batched like the trainer (<= 20 messages a second)."""

    def __init__(self, steps_per_sec: float = 100.0, seed: int = 0, batches_per_sec: float = 20.0) -> None:
        self.rng = np.random.default_rng(seed)
        self.steps_per_sec = steps_per_sec
        self.batch_interval = 1.0 / batches_per_sec
        self.started = time.monotonic()
        self.emitted = 0
        self.next_batch = self.started
        self.began = False

    def poll(self, timeout: float) -> list[Event]:
        if not self.began:
            self.began = True
            return [RunStarted(run_id=RUN_ID, device="cpu", data=DATA, model=BROKEN_MODEL, hparams=HParams(epochs=1000), time=START_TIME)]
        wait = self.next_batch - time.monotonic()
        # Not waits: the load generator's fixed rate, blocking as the real poll does until the next batch is due.
        if wait > timeout:
            time.sleep(timeout)
            return []
        if wait > 0:
            time.sleep(wait)
        self.next_batch += self.batch_interval
        due = int((time.monotonic() - self.started) * self.steps_per_sec) - self.emitted
        records = []
        for _ in range(max(0, due)):
            self.emitted += 1
            epoch = 1 + self.emitted // 3000
            records.append(step_record(self.rng, self.emitted * 10, epoch, (self.emitted % 3000) / 3000, fixed=epoch % 2 == 0))
        return [StepBatch(records=tuple(records))] if records else []
