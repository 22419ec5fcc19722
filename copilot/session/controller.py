"""One co-pilot run: the trainer process, the advisor and the git history, kept in step.

`Session.start` forks the run's experiment branch (the history layer), points the
trainer at the model file in the run's worktree, so every metric maps to a commit,
writes the run's session.json and opens the advisor's workflow on the run folder.
From then on:

- `poll_events` drains the trainer and feeds the assessment triggers (one thread);
- `due_assessment` says when the advisor should look, `assess` runs it up to the
  human gate and `pending` shows what waits there (after a restart too); on the way,
  the advisor's candidates are trialled: the trainer is held at a fresh checkpoint,
  each candidate and the unchanged run train a short budget from it (`trialling` says
  so meanwhile), and only a measured winner reaches the gate;
- a waiting proposal belongs to the model and state it was made for: a rollback, an undo
  or redo, or training gone on more than `advisor.assess_every` epochs past the proposal
  withdraws it (`withdraw`: a "withdrawn" verdict in the ledger, no rejection), and the
  advisor may look again at once;
- `decide` takes the human's verdict: an accepted change is committed as the next
  round, then training continues from the winning trial's end state (or, for a change
  that was not trialled, the trainer swaps the model or applies the hyperparameters; a
  crashed trainer is started again with it; one paused on NaN is resumed); the first code
  the user did not write restarts the trainer walled (`copilot.walls`) from a
  checkpoint, and the run stays walled from then on; a rejection goes
  to the ledger through the workflow; an edit is checked again;
- a round's measured results go into its git note at the next assessment and when
  the run ends, with its checkpoint relative to the run folder, until the run leaves the
  round: the history then makes the note final, and no later training rewrites it;
- a rollback, an undo or a redo trains the round it goes to from that round's checkpoint
  (its weights), or, when it has none, loads its files into the weights the trainer holds;
  the `BranchMoved` line says which; `write_report` writes report.md; `stop` checkpoints and stops.

`Session.reopen` continues a stopped run from its latest checkpoint, pending proposal
included, and completes a verdict a crash cut short (the round commit's
`Copilot-Proposal` trailer says whether it was committed already). A trainer killed from
outside is resumed from its last checkpoint without an advisor round; a full disk met by
the advisor's or the report's writes is a `DiskFullError` naming the run. The Textual
app and the headless driver both drive a `Session`; it prints nothing and imports no
Textual. Blocking calls (`assess`, `decide`, history
operations, `stop`) may run in worker threads: the trainer, the history and the
advisor each have their own lock.
"""

from __future__ import annotations

import math
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from copilot.advisor.factory import build_advisor
from copilot.advisor.graph import PendingProposal
from copilot.advisor.ledger import append_entry, entry_key, proposal_id, read_ledger
from copilot.advisor.offline.codegen.source import declared_hparams
from copilot.advisor.roles import AdvisorRoles
from copilot.advisor.schemas import (
    ArchitectureProposal,
    ArmResult,
    Diagnosis,
    HParamProposal,
    LedgerEntry,
    Proposal,
    StartPoint,
    TokenUsage,
    TrialReport,
    Verdict,
)
from copilot.advisor.snapshot import TrainingSnapshot, build_snapshot
from copilot.advisor.trials.budget import remaining_steps, steps_per_epoch, trial_budget
from copilot.advisor.trials.describe import arm_lines, measured_line, start_lines
from copilot.advisor.trials.runner import INCUMBENT, Arm, TrialRunner
from copilot.advisor.workflow import Accepted, AdvisorSession, Continued, Failed, FinishReported, Rejected
from copilot.config import LaunchSettings, Settings
from copilot.errors import AdvisorError, ConfigError, CopilotError, DiskFullError, is_disk_full
from copilot.events import (
    CheckpointNow,
    CheckpointWritten,
    Command,
    EpochSummary,
    Event,
    Finished,
    HParams,
    LogLine,
    Pause,
    ActivationStats,
    HParamsApplied,
    ModelSwapped,
    Resume,
    Rewound,
    SetHParams,
    StateChanged,
    StepBatch,
    SwapModel,
    TrainerError,
    TrainerState,
    event_to_json,
    hparam_differences,
    parse_event,
    trainer_state_after,
)
from copilot.history import ExperimentHistory, RoundDiff, RoundInfo
from copilot.history.hparams_file import read_hparams
from copilot.metrics_file import applied_rounds, next_attempt, read_metrics, round_epochs
from copilot.run_folder import DEFAULT_RUNS_DIR, RunFolder, new_run_id
from copilot.session.triggers import AssessmentTriggers
from copilot.training.launcher import TrainerProcess, TrainerSpec, model_from_command_line
from copilot.tuning.study import TunedTrial, TunePlan, Tuner, TuneRequest, TuneResult, new_plan, saved_plan, study_name
from copilot.tuning.summary import table_lines, tune_note, verdict_line

# How a turn found waiting after a restart is labelled: its original trigger is not recorded.
RESTORED_TRIGGER = "restored"
# A trainer being replaced writes a checkpoint first; a big model may take a while.
REPLACE_STOP_TIMEOUT_S = 30.0
# A trainer asked for the checkpoint trials fork from answers between two steps.
FORK_CHECKPOINT_TIMEOUT_S = 60.0
# What of the winning trial's record becomes the run's own: its training, not its process's life.
CARRIED_TRIAL_EVENTS = (StepBatch, ActivationStats, EpochSummary, HParamsApplied, ModelSwapped)
# Trainers killed from outside are resumed from their checkpoint this many times in a row
# (without an epoch finished in between) before the run is left crashed for the user.
MAX_FAULT_RESTARTS = 3


@dataclass(frozen=True)
class AdvisorTurn:
    """What the advisor says and proposes; it waits for the human's verdict."""

    diagnosis: Diagnosis
    proposal: Proposal
    trigger: str
    tokens: tuple[TokenUsage, ...]
    edit_problem: str | None = None  # why the human's last edit was not taken
    epoch: int | None = None  # the epochs its evidence covers (None: unknown, from an older checkpoint)


@dataclass(frozen=True)
class BranchMoved:
    """Where a rollback, undo or redo left the branch, and which weights training goes on from."""

    round: RoundInfo  # the round now at the branch's tip
    message: str  # one line for the user


@dataclass(frozen=True)
class Continuing:
    """The advisor found nothing to change: no proposal, nothing to decide; training goes on."""

    diagnosis: Diagnosis
    trigger: str


@dataclass(frozen=True)
class VerdictResult:
    """What came of a verdict."""

    accepted: bool
    round: RoundInfo | None  # the committed round, when a change was accepted
    message: str  # one line for the user
    retry: AdvisorTurn | None  # an edit failed its check: the proposal waits again, with the reason
    report: Path | None = None  # the run ended (a finish was accepted): where its report is


def trial_arms(candidates: Sequence[Proposal]) -> list[Arm]:
    """The candidates as trial arms, named as the graph names them (c1 = the advisor's proposal)."""
    from copilot.advisor.graph import candidate_arm

    arms = []
    for index, proposal in enumerate(candidates):
        name = candidate_arm(index)
        if isinstance(proposal, ArchitectureProposal):
            arms.append(
                Arm(name, proposal.summary, model_code=proposal.code, file_name=proposal.file_name, carry_weights=proposal.carry_weights)
            )
        elif isinstance(proposal, HParamProposal):
            arms.append(Arm(name, proposal.summary, hparam_changes=dict(proposal.change.changes())))
    return arms


def start_of(candidates: Sequence[Proposal]) -> StartPoint | None:
    """Where the trials of `candidates` fork: the earlier point the first of them starts from (the
    graph gives every candidate of one trial the same one), or None: where the run stands."""
    return next((point for point in (getattr(candidate, "start_from", None) for candidate in candidates) if point), None)


def trial_winner(proposal: Proposal) -> ArmResult | None:
    """The measured arm an accepted proposal is, when its end state is there to continue from."""
    report = getattr(proposal, "trials", None)
    if not isinstance(report, TrialReport) or report.winner is None:
        return None
    arm = report.arm(report.winner)
    return arm if arm is not None and arm.checkpoint and Path(arm.checkpoint).is_file() else None


def _tokens(usages: Sequence[TokenUsage]) -> int:
    return sum(usage.input_tokens + usage.output_tokens for usage in usages)


def starting_hparams(model_file: Path, overrides: Mapping[str, object]) -> HParams | None:
    """The hyperparameters a fresh trainer will use (the file's HPARAMS under the overrides), or
    None when they do not validate: the trainer then reports the problem itself."""
    try:
        declared = declared_hparams(model_file.read_text(encoding="utf-8"))
        return HParams.model_validate({**declared, **overrides})
    except (OSError, ValidationError):
        return None


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def resume_command(run: RunFolder, runs_dir: Path = DEFAULT_RUNS_DIR) -> str:
    """`copilot resume <id>` when the run is in the runs folder the settings name (`runs_dir`,
    relative to this folder), where `resume` looks; else with the run folder's path."""
    here = (Path.cwd() / runs_dir).resolve()
    return f"copilot resume {run.run_id if run.path.resolve().parent == here else run.path}"


def _save_spec(run: RunFolder, spec: TrainerSpec) -> None:
    """The spec `resume` starts the trainer from again, walls included."""
    run.session.write_text(spec.model_dump_json(indent=2) + "\n", encoding="utf-8")


def _check_more_epochs(epochs: int, run: RunFolder) -> None:
    """A `ConfigError` when the run has already trained `epochs` epochs: a new budget must add some."""
    done = max((event.epoch for event in read_metrics(run.metrics) if isinstance(event, EpochSummary)), default=0)
    if epochs <= done:
        raise ConfigError(f"--epochs {epochs} is not more than the {done} epochs the run has trained", f"give more than {done}")


def history_of(run: RunFolder) -> ExperimentHistory:
    """The experiment history of a run a session started, found through its session.json."""
    if not run.session.exists():
        raise CopilotError(f"{run.path} has no session.json", "only runs started by `copilot run` or `copilot demo` have one")
    spec = TrainerSpec.model_validate_json(run.session.read_text(encoding="utf-8"))
    return ExperimentHistory.open(_existing_ancestor(spec.model.path.parent), run.run_id)


class Session:
    """One run of the loop: trainer, advisor and history. Make it with `start` or `reopen`."""

    def __init__(
        self,
        *,
        settings: Settings,
        run: RunFolder,
        spec: TrainerSpec,
        history: ExperimentHistory,
        advisor: AdvisorSession,
        max_rounds: int | None,
        roles: AdvisorRoles,
    ) -> None:
        self.settings = settings
        self.run = run
        self.run_id = run.run_id
        self.history = history
        self.max_rounds = max_rounds
        self._spec = spec
        self._advisor = advisor
        self._triggers = AssessmentTriggers(settings.advisor.assess_every, settings.advisor.plateau_window)
        # One trainer at a time, replaced only under this lock; history calls are not thread-safe.
        self._trainer_lock = threading.RLock()
        self._history_lock = threading.RLock()
        self._advisor_lock = threading.Lock()
        self._trainer: TrainerProcess | None = None
        self._backlog: list[Event] = []  # events read while stopping or replacing a trainer
        self._recorded: list[Event] = []  # what a reopened run recorded before this session (`take_recorded`)
        self._turn: AdvisorTurn | None = None
        self._turn_since_epoch: int | None = None  # the epoch training stood at when the proposal reached the gate
        self._assessing = False
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._stop_done = threading.Event()
        self._stopping_thread: threading.Thread | None = None
        self._unrecorded_tokens = 0  # spent on assessments that made no proposal
        self._recorded_tokens = 0
        self.trainer_state: TrainerState = "starting"
        self.paused_on_nonfinite = False
        self._holding = False  # we paused the trainer while a proposal waits for the human
        self._user_paused = False  # the user's pause: nothing of ours resumes it, and we hold nothing under it
        # The trainer paused itself at an epoch's end (`hold_at_epoch_end`) and nothing decided yet
        # whether the advisor looks: `due_assessment` lets it go on when nothing is due.
        self._held_at_epoch_end = False
        self._fault_restarts = 0  # trainers killed from outside and resumed since the last epoch
        self.last_error: TrainerError | None = None
        self.last_epoch: EpochSummary | None = None
        self._last_checkpoint: CheckpointWritten | None = None  # trials fork from it when the trainer cannot checkpoint
        self.trialling: str | None = None  # while trials run: what they are, for the status line
        self.on_trials: Callable[[str], None] | None = None  # told when trials start, e.g. to print it
        self.on_withdrawn: Callable[[AdvisorTurn, str], None] | None = None  # told when a waiting proposal is withdrawn
        # Told after a round or a round's results were written into git (from whichever thread wrote them).
        self.on_history_changed: Callable[[], None] | None = None
        self._trial_runner: TrialRunner | None = None
        self._tuner: Tuner | None = None
        self._roles = roles  # the advisor's roles, asked directly for a tune's guess
        tip = history.rounds()[-1]
        self.round = tip.round
        # Where the current round began (the epoch before its first), and what its own model
        # measured: the trainer may still report the previous round's epochs after a commit.
        self._round_started_epoch: int | None = int(tip.before.get("epoch", 0))
        # The time this round's epochs trained (their own durations leave pauses out), from its note on a reopened run.
        self._round_training_s = (tip.results.training_s if tip.results else None) or 0.0
        self._round_epoch: EpochSummary | None = None
        self._round_checkpoint: str | None = None
        # (round, epoch, checkpoint) last written to a note: the epoch's checkpoint follows its summary.
        self._results_recorded_at: tuple[int, int, str | None] | None = None
        # The history made the round's note final when the run left it: going back to it (undo, redo) rewrites none.
        self._round_final = bool(tip.results and tip.results.final)
        self._refresh_recorded_tokens()

    # ------------------------------------------------------------------ making one

    @classmethod
    def start(
        cls,
        settings: Settings,
        model: str,
        *,
        init_git: bool = False,
        run_name: str | None = None,
        max_rounds: int | None = None,
        roles: AdvisorRoles | None = None,
    ) -> Session:
        """Fork the experiment branch, start the trainer on the worktree's model file, open the advisor.

        `model` is the command line's `file.py[:Name]` (the settings give its arguments); `roles`
        replaces the advisor the settings choose (tests count its calls).
        """
        requested = model_from_command_line(model, settings.model.args)
        run_id = run_name or new_run_id(requested.path)
        run = RunFolder((settings.runs_dir / run_id).resolve())
        if run.path.exists():
            raise ConfigError(f"run folder {run.path} already exists", "choose another --run-name, or continue it with `copilot resume`")
        hparams = starting_hparams(requested.path, settings.train.hparams)
        history = ExperimentHistory.start(
            requested.path, run_id, init_git=init_git, hparams=hparams.model_dump() if hparams else None
        )
        worktree_model = history.model_path_in_worktree()
        spec = TrainerSpec(
            run_folder=run.path,
            model=requested.at(worktree_model),
            data=settings.data,
            train=settings.train,
            max_params=settings.sandbox.max_params,
        )
        run.create()
        _save_spec(run, spec)
        session = cls._opened(settings, run, spec, history, roles, max_rounds)
        session._launch(spec, ())
        return session

    @classmethod
    def reopen(
        cls,
        settings: Settings,
        run: RunFolder,
        *,
        max_rounds: int | None = None,
        roles: AdvisorRoles | None = None,
        epochs: int | None = None,
    ) -> Session:
        """Continue a stopped run from its latest checkpoint; a proposal left at the gate waits again.

        `epochs` trains to that many epochs in all: a run that spent its budget (or whose change
        was accepted after it ended) goes on.
        """
        history = history_of(run)
        saved = TrainerSpec.model_validate_json(run.session.read_text(encoding="utf-8"))
        worktree_model = history.model_path_in_worktree()  # re-created if it was removed
        spec = saved.model_copy(
            update={
                "run_folder": run.path,
                "model": saved.model.at(worktree_model),
                "resume_from": None,
                # A run that ever took generated code stays walled (also one saved before walls existed).
                "walled": saved.walled or any(info.kind == "arch" for info in history.rounds()),
            }
        )
        if epochs is not None:
            _check_more_epochs(epochs, run)
        session = cls._opened(settings, run, spec, history, roles, max_rounds)
        session._recorded = read_metrics(run.metrics)  # before the new trainer adds to it
        session._launch(session._spec_from(run.latest_checkpoint(), epochs=epochs), ())
        session._finish_interrupted_decision()
        session._turn = session._waiting_turn()
        session._turn_since_epoch = session._turn.epoch if session._turn is not None else None
        if session._turn is not None:
            session._hold()
        return session

    @classmethod
    def _opened(
        cls,
        settings: Settings,
        run: RunFolder,
        spec: TrainerSpec,
        history: ExperimentHistory,
        roles: AdvisorRoles | None,
        max_rounds: int | None,
    ) -> Session:
        roles = roles or build_advisor(settings)
        session: Session | None = None

        def trial_with(candidates: list[Proposal], snapshot: TrainingSnapshot) -> TrialReport:
            assert session is not None, "the advisor assesses only once the session exists"
            return session._trial(candidates, snapshot)

        advisor = AdvisorSession.open(run, roles, settings, trial_with=trial_with)
        session = cls(
            settings=settings,
            run=run,
            spec=spec,
            history=history,
            advisor=advisor,
            max_rounds=max_rounds,
            roles=roles,
        )
        return session

    def _waiting_turn(self) -> AdvisorTurn | None:
        """The proposal at the gate in the advisor's checkpoint, or a finish report nobody answered."""
        pending = self._advisor.pending()
        if pending is not None:
            return self._turn_of(pending, RESTORED_TRIGGER)
        entries = read_ledger(self.run)
        last = entries[-1] if entries else None
        if last is not None and last.proposal.kind == "finish" and last.verdict is None:
            return AdvisorTurn(last.diagnosis, last.proposal, last.trigger, tuple(last.tokens), epoch=last.epoch)
        return None

    def _finish_interrupted_decision(self) -> None:
        """A crash after the verdict but before the change was committed or applied: finish it now, once.

        The ledger says what was accepted and whether its commit was noted; the round's
        `Copilot-Proposal` trailer says whether it was committed before the crash, so a
        resume never commits the same proposal twice, and never offers it again.
        """
        outcome = self._advisor.recover() or self._advisor.last_decision()
        if not isinstance(outcome, Accepted):
            return
        recorded = {entry_key(entry): entry for entry in read_ledger(self.run)}.get(entry_key(outcome.entry))
        if recorded is not None and recorded.commit is not None:
            return
        with self._history_lock:
            committed = self.history.round_of_proposal(proposal_id(outcome.entry))
        if committed is None:
            self._commit(outcome)
            return
        append_entry(self.run, outcome.entry.model_copy(update={"commit": committed.sha}))
        if committed.round not in applied_rounds(self.run.metrics):
            self._apply(self._command_for(outcome.proposal, committed.round))

    @staticmethod
    def _turn_of(pending: PendingProposal, trigger: str) -> AdvisorTurn:
        return AdvisorTurn(
            pending.diagnosis, pending.proposal, trigger, tuple(pending.tokens), pending.edit_problem, pending.epoch
        )

    # ------------------------------------------------------------------ the trainer

    def _spec_from(self, checkpoint: Path | None, *, epochs: int | None = None) -> TrainerSpec:
        """The trainer's spec, continuing from `checkpoint` when there is one.

        Resumed, the checkpoint already holds the run's hyperparameters, the accepted
        changes included: the start's overrides must not be applied on top again. Only
        a new budget (`copilot resume --epochs`) is.
        """
        if checkpoint is None:
            return self._spec
        overrides = {"epochs": epochs} if epochs is not None else {}
        return self._spec.model_copy(
            update={"resume_from": checkpoint, "train": self._spec.train.model_copy(update={"hparams": overrides})}
        )

    def _launch(self, spec: TrainerSpec, commands: Sequence[Command]) -> None:
        hold = self.settings.advisor.hold_training_while_assessing
        with self._trainer_lock:
            trainer = TrainerProcess(spec.model_copy(update={"hold_at_epoch_end": hold}))
            trainer.start()
            for command in commands:
                trainer.send(command)
            self._trainer = trainer
            self.trainer_state = "starting"
            self.paused_on_nonfinite = self._holding = self._held_at_epoch_end = False
            self._user_paused = any(isinstance(command, Pause) for command in commands)  # started paused for the user

    def _replace_trainer(self, checkpoint: Path | None, commands: Sequence[Command], *, save_old: bool = True) -> None:
        """Stop the trainer (if it still runs) and start another from `checkpoint`, then send `commands`.

        `save_old=False`: the old trainer's state is abandoned (a rewind), so it writes no last
        checkpoint, which a later resume from the latest one would otherwise pick.
        """
        with self._trainer_lock:
            if self._trainer is not None:
                self._keep(self._trainer.stop(REPLACE_STOP_TIMEOUT_S, checkpoint=save_old))
            self._launch(self._spec_from(checkpoint), commands)

    def _send(self, commands: Sequence[Command]) -> str:
        """Give `commands` to the running trainer, or start a crashed one again with them. Says what happened."""
        with self._trainer_lock:
            self._catch_up()
            alive = self._trainer is not None and self._trainer.is_alive
            if alive and self.trainer_state in ("starting", "running", "paused"):
                for command in commands:
                    self._trainer.send(command)
                # Held by us, or paused on a NaN the change answers (over a pause of the user's too: accepting the fix is their go).
                if self.paused_on_nonfinite or self._holding:
                    self._trainer.send(Resume())
                    self.paused_on_nonfinite = self._holding = self._user_paused = False
                    return "training resumes with it"
                return "the trainer applies it now"
            # A trainer killed unseen (while the advisor worked) is crashed too; one that ended
            # its budget unseen exited 0.
            died = self._trainer is not None and not alive and self._trainer.exitcode not in (0, None)
            if died or self.trainer_state in ("crashed", "starting"):
                self._replace_trainer(self.run.latest_checkpoint(), commands)
                return "a new trainer starts with it"
            return self._ended_message()

    def _ended_message(self) -> str:
        command = resume_command(self.run, self.settings.runs_dir)
        return f"training has ended; it applies when the run continues: `{command} --epochs N` trains to N epochs in all"

    def _catch_up(self) -> None:
        """Observe what the trainer has already said (a Finished it sent while nobody polled), before deciding on it."""
        if self._trainer is not None:
            self._keep(self._trainer.poll(0.0))

    def _wall_from_now_on(self) -> bool:
        """Every trainer this run starts from now on is walled, `copilot resume` included; in one
        process, since ranks cannot be walled yet (`copilot/training/ranks.py`). True when that
        ended training on several ranks."""
        was_ranked = not self._spec.train.launch.single_process
        train = self._spec.train.model_copy(update={"launch": LaunchSettings()}) if was_ranked else self._spec.train
        self._spec = self._spec.model_copy(update={"walled": True, "train": train})
        _save_spec(self.run, self._spec)
        return was_ranked

    @property
    def advisor_name(self) -> str:
        """Who advises, as the header and the commits say it; read anew, since an LLM server
        that negotiates its structured output settles on a way at its first call."""
        return self._roles.name

    @property
    def _paused_by_user(self) -> bool:
        """Paused by the user's `p` (a trainer that replaces it starts paused too), not held by us or on a NaN."""
        if self.paused_on_nonfinite:
            return False  # a change that answers the NaN goes on at once, as `_send` resumes it
        return self._user_paused or (self.trainer_state == "paused" and not self._holding)

    def _send_untrusted(self, commands: Sequence[Command]) -> str:
        """Give the trainer commands that run code the user did not write; says what happened.

        The first time, the trainer is restarted walled from a checkpoint written now, not
        swapped in place: walls bind only the thread that raises them, so they cannot be
        closed around a trainer already running. Once walled, the run stays walled.
        """
        with self._trainer_lock:
            if self._spec.walled:
                return self._send(commands)
            one_process = " in one process (ranks cannot be walled yet)" if self._wall_from_now_on() else ""
            self._catch_up()
            # Ended (seen or not yet) or dead: `_send` knows what to do, and starts any new trainer walled.
            if self.trainer_state in ("finished", "stopped") or self._trainer is None or not self._trainer.is_alive:
                return self._send(commands)
            # Paused by the user, the walled trainer starts paused too; held or paused on NaN, it goes on with the change.
            paused_by_user = self._paused_by_user
            last_words = self._trainer.stop(REPLACE_STOP_TIMEOUT_S)
            self._keep(last_words)
            if any(isinstance(event, Finished) and event.reason == "epochs_done" for event in last_words):
                return self._ended_message()  # it spent its budget while being stopped: nothing to continue
            first: list[Command] = [Pause()] if paused_by_user else []
            self._launch(self._spec_from(self.run.latest_checkpoint()), [*first, *commands])
            return f"a new trainer starts with it behind the walls{one_process}, from the latest checkpoint"

    def poll_events(self, timeout: float) -> list[Event]:
        """Events from the trainer, waiting at most `timeout` s for the first; call from one thread only."""
        with self._trainer_lock:
            backlog, self._backlog = self._backlog, []
            trainer = self._trainer
            fresh = trainer.poll(timeout=0.0 if backlog else timeout) if trainer is not None else []
        if trainer is None and not backlog:
            time.sleep(timeout)
        for event in fresh:
            self._observe(event)
        if fresh:
            self._withdraw_if_outrun()
        events = backlog + fresh
        # Only the current trainer's death counts: the backlog holds those of trainers already replaced.
        killed = next((event for event in fresh if isinstance(event, TrainerError) and event.kind == "killed"), None)
        if killed is not None and not self._stopped:
            events.extend(self._recover_from_kill(killed))
        return events

    def _recover_from_kill(self, killed: TrainerError) -> list[Event]:
        """A trainer killed from outside is a fault, not a diagnosis: resume it from its last checkpoint."""
        if self._fault_restarts >= MAX_FAULT_RESTARTS:
            return []
        self._fault_restarts += 1
        checkpoint = self.run.latest_checkpoint()
        with self._trainer_lock:
            self._replace_trainer(checkpoint, ())
            if self._turn is not None:
                self._hold()
        where = f"its last checkpoint, {checkpoint.name}" if checkpoint is not None else "the start (no checkpoint yet)"
        notice = LogLine(level="warning", message=f"{killed.message}; resumed from {where}", time=time.time())
        return [notice]

    def _keep(self, events: Sequence[Event]) -> None:
        """Events read outside `poll_events` (a trainer stopping): observed now, handed out by the next poll."""
        for event in events:
            self._observe(event)
        self._backlog.extend(events)

    def _observe(self, event: Event) -> None:
        self._triggers.observe(event)
        self.trainer_state = trainer_state_after(self.trainer_state, event)
        if isinstance(event, EpochSummary):
            self.last_epoch = event
            self._fault_restarts = 0
            if event.round == self.round:
                if self._round_started_epoch is None:
                    self._round_started_epoch = event.epoch - 1
                self._round_epoch = event
                self._round_training_s += event.duration_s
        elif isinstance(event, StateChanged) and event.held_at_epoch_end:
            # It paused itself before it read a pause the user sent meanwhile: then the pause is the user's.
            self._holding = not self._user_paused
            self._held_at_epoch_end = True
        elif isinstance(event, StateChanged) and event.state == "running":
            self.paused_on_nonfinite = False
            turn = self._turn
            if turn is not None and self._turn_since_epoch is None:
                self._turn_since_epoch = self._epoch_now(turn)  # training goes on while the proposal waits
        elif isinstance(event, TrainerError):
            self.last_error = event
            if event.kind == "nonfinite":
                self.paused_on_nonfinite = True
        elif isinstance(event, CheckpointWritten):
            self._last_checkpoint = event
            if event.round == self.round:
                self._round_checkpoint = event.path

    def take_recorded(self) -> list[Event]:
        """What the run recorded before this session started its trainer (a reopened run's charts,
        rounds and state, as `read_metrics` keeps them), handed over once: `poll_events` has the rest."""
        recorded, self._recorded = self._recorded, []
        return recorded

    def recorded_diagnosis(self) -> tuple[Diagnosis, str] | None:
        """The advisor's last diagnosis in the ledger and its trigger, for a screen opened on a run."""
        entries = read_ledger(self.run)
        return (entries[-1].diagnosis, entries[-1].trigger) if entries else None

    @property
    def requested_model(self) -> str:
        """The model as the user asked for it, for a screen the trainer has not reported to yet:
        its class when named (`net.py:Net`), else its file's name."""
        return self._spec.model.name or self._spec.model.path.name

    @property
    def trainer_pid(self) -> int | None:
        """The running trainer's process id (what a user's `kill` would name)."""
        return self._trainer.pid if self._trainer is not None else None

    def pause(self) -> None:
        """The user's pause. It outlasts a hold of ours: a verdict or an assessment that ends
        afterwards leaves the trainer paused, for the user's `resume_training`."""
        with self._trainer_lock:
            self._send_live(Pause())
            self._user_paused, self._holding = True, False

    @property
    def held_for_advisor(self) -> bool:
        """Paused by us (an assessment, or a proposal waiting for the human), not by the user:
        the user's pause key then pauses for the user rather than resuming."""
        return self.trainer_state == "paused" and self._holding

    def resume_training(self) -> None:
        self.paused_on_nonfinite = self._holding = self._user_paused = False
        self._send_live(Resume())

    def _hold(self, *, while_assessing: bool = False) -> None:
        """Pause a running trainer while the human decides (see `hold_training_while_waiting`),
        or while the advisor assesses (`hold_training_while_assessing`)."""
        advisor = self.settings.advisor
        with self._trainer_lock:
            if (
                (advisor.hold_training_while_assessing if while_assessing else advisor.hold_training_while_waiting)
                and self._trainer is not None
                and self._trainer.is_alive
                and self.trainer_state in ("starting", "running")
                and not self._user_paused
            ):
                self._trainer.send(Pause())
                self._holding = True

    def _release(self) -> None:
        """Resume a trainer we held, after a decision that sends it nothing else."""
        with self._trainer_lock:
            if self._holding and self._trainer is not None and self._trainer.is_alive:
                self._trainer.send(Resume())
            self._holding = self._held_at_epoch_end = False

    def checkpoint_now(self) -> None:
        self._send_live(CheckpointNow())

    def _send_live(self, command: Command) -> None:
        with self._trainer_lock:
            if self._trainer is None or not self._trainer.is_alive:
                raise CopilotError("the trainer is not running", f"continue the run with `{resume_command(self.run, self.settings.runs_dir)}`")
            self._trainer.send(command)

    # ------------------------------------------------------------------ the advisor

    @property
    def tokens_spent(self) -> int:
        waiting = self._turn
        # A finish report is in the ledger already; a proposal at the gate is not yet.
        unrecorded = _tokens(waiting.tokens) if waiting is not None and waiting.proposal.kind != "finish" else 0
        return self._recorded_tokens + self._unrecorded_tokens + unrecorded

    def _refresh_recorded_tokens(self) -> None:
        self._recorded_tokens = sum(_tokens(entry.tokens) for entry in read_ledger(self.run))

    def due_assessment(self) -> str | None:
        """Why the advisor should look now ("error", "nonfinite", "plateau", "schedule"), or None.

        None lets a trainer held at an epoch's end go on, unless an assessment in progress or a
        proposal waiting for the human (`hold_training_while_waiting`) holds it.
        """
        trigger = self._due_trigger()
        if trigger is None and self._held_at_epoch_end and not self._assessing:
            self._held_at_epoch_end = False
            if self._turn is None or not self.settings.advisor.hold_training_while_waiting:
                self._release()
        return trigger

    def _due_trigger(self) -> str | None:
        if self._turn is not None or self._assessing or self._stopped:
            return None
        if self.max_rounds is not None and self.round >= self.max_rounds:
            return None
        trigger = self._triggers.due()
        if trigger in ("plateau", "schedule") and self.trainer_state not in ("running", "paused"):
            return None
        return trigger

    def pending(self) -> AdvisorTurn | None:
        """The proposal waiting for the human (found again after a restart)."""
        return self._turn

    def withdraw(self, reason: str) -> str | None:
        """Withdraw the waiting proposal, if one waits: what it was made for changed (`reason`).

        The ledger records a "withdrawn" verdict (no rejection: the change may come again),
        the advisor's gate is closed so it may assess at once, a trainer we held goes on,
        and `on_withdrawn` hears the line returned. Waits for an assessment or a verdict in
        progress: a proposal that assessment makes was made for what changed too.
        """
        with self._advisor_lock:
            return self._withdraw_locked(reason)

    def _withdraw_if_outrun(self) -> None:
        """Withdraw a proposal training has gone on past: more epochs than the advisor's schedule
        (`advisor.assess_every`) since it reached the gate (the user resumed training, or does not
        hold it). Never waits: a verdict in progress decides it."""
        turn, epoch, since = self._turn, self.last_epoch, self._turn_since_epoch
        interval = self.settings.advisor.assess_every
        if turn is None or since is None or epoch is None or epoch.epoch - since <= interval:
            return
        if not self._advisor_lock.acquire(blocking=False):
            return
        try:
            if self._turn is turn:
                self._withdraw_locked(
                    f"training went on past its evidence: epoch {epoch.epoch}, the proposal came at epoch {since}"
                )
        finally:
            self._advisor_lock.release()

    def _epoch_now(self, turn: AdvisorTurn) -> int | None:
        known = [epoch for epoch in (turn.epoch, self.last_epoch.epoch if self.last_epoch else None) if epoch is not None]
        return max(known) if known else None

    def _withdraw_locked(self, reason: str) -> str | None:
        turn = self._turn
        if turn is None or self._stopped:
            return None
        with self._full_disk_is_the_users():
            verdict = Verdict(decision="withdrawn", reason=reason)
            if turn.proposal.kind == "finish":  # in the ledger already, with no gate waiting
                entries = [entry for entry in read_ledger(self.run) if entry.proposal == turn.proposal and entry.verdict is None]
                if entries:
                    append_entry(self.run, entries[-1].model_copy(update={"verdict": verdict}))
            else:
                self._advisor.withdraw(reason)
        self._turn = None
        self._refresh_recorded_tokens()
        self._release()
        line = f"proposal withdrawn: {reason} (it was: {turn.proposal.summary})"
        if self.on_withdrawn is not None:
            self.on_withdrawn(turn, line)
        return line

    def assess(self, trigger: str) -> AdvisorTurn | Continuing:
        """Diagnose and propose, up to the human gate (blocking: seconds, more with an LLM).

        `Continuing` when there is nothing to change: nothing waits and the trainer is not held.
        """
        self._require_open()
        with self._advisor_lock, self._full_disk_is_the_users():
            if self._turn is not None:
                raise AdvisorError("a proposal is still waiting for your decision", "accept, reject or edit it first")
            self._assessing = True
            self._held_at_epoch_end = False  # held from here for the assessment, released by it
            self._hold(while_assessing=True)
            try:
                self._triggers.assessed()
                self.record_results()
                snapshot = build_snapshot(
                    self.run, previous=read_ledger(self.run), trigger=trigger, round=self.round,
                    target_accuracy=self.settings.advisor.target_accuracy,
                )  # fmt: skip
                outcome = self._advisor.assess(snapshot)
            except BaseException:
                self._release()
                raise
            finally:
                self._assessing = False
            if isinstance(outcome, Continued):
                self._unrecorded_tokens += _tokens(outcome.tokens)
                self._release()
                return Continuing(outcome.diagnosis, trigger)
            if isinstance(outcome, Failed):
                self._unrecorded_tokens += _tokens(outcome.tokens)
                self._release()
                raise AdvisorError(
                    f"the advisor made no proposal: {outcome.message}", "training goes on; ask again later"
                )
            if isinstance(outcome, Rejected):  # measured in trials, and nothing beat the unchanged run
                self._refresh_recorded_tokens()
                self._release()
                tried = "; ".join(arm_lines(outcome.proposal.trials))  # type: ignore[union-attr]
                raise AdvisorError(
                    f"no candidate beat the unchanged run in its trial ({tried})",
                    "training goes on unchanged; the advisor will not propose these again",
                )
            if isinstance(outcome, FinishReported):
                self._refresh_recorded_tokens()
                turn = AdvisorTurn(outcome.diagnosis, outcome.proposal, trigger, tuple(outcome.tokens), epoch=outcome.entry.epoch)
            else:
                turn = self._turn_of(outcome, trigger)
            self._turn = turn
            self._hold()
            # Counted from when training goes on with the proposal at the gate: a held trainer has not
            # yet (its epochs from while the advisor worked may still be on their way), so from its resume.
            self._turn_since_epoch = None if self._holding else self._epoch_now(turn)
            if not self.settings.advisor.hold_training_while_waiting:
                self._release()  # the trials held it; the human's wait need not
            return turn

    # ------------------------------------------------------------------ trials

    def _trial(self, candidates: list[Proposal], snapshot: TrainingSnapshot) -> TrialReport:
        """Hold the trainer at a fresh checkpoint and measure `candidates` against the unchanged run from it."""
        fork, fork_step = self._fork_point()  # holds the trainer too, wherever the trials fork
        start = start_of(candidates)
        if start is not None:  # the weights where the run stands are no use to these changes: fork earlier
            fork, fork_step = (Path(start.checkpoint) if start.checkpoint else None), start.step
        batch_size = snapshot.hparams.batch_size
        remaining = remaining_steps(
            epochs=snapshot.hparams.epochs, steps_per_epoch=steps_per_epoch(snapshot.data.train_size, batch_size), step=fork_step
        )
        budget = trial_budget(remaining, self.settings.trials, self._step_time_s(batch_size))
        if budget is None:
            return TrialReport(status="not_trialled", reason="the run has no steps left to trial them in")
        arms = trial_arms(candidates)
        folder = self.run.trials / f"r{self.round + 1}-s{fork_step}-{uuid.uuid4().hex[:6]}"
        runner = TrialRunner(
            self._spec, fork, folder, self.settings.trials, task=snapshot.data.task,
            val_samples=min(self.settings.trials.val_samples, snapshot.data.val_size), round_number=self.round + 1,
        )  # fmt: skip
        self.trialling = f"trialling {len(arms)} candidate{'s' if len(arms) != 1 else ''} beside the unchanged run: {budget.describe(len(arms) + 1)}"
        if self.on_trials is not None:
            self.on_trials(self.trialling)
        self._trial_runner = runner
        try:
            return runner.compare(arms, budget)
        except (CopilotError, OSError) as exc:  # e.g. a full disk: the proposal still reaches the human, unmeasured
            message = exc.message if isinstance(exc, CopilotError) else str(exc)
            return TrialReport(status="not_trialled", reason=f"the trials could not run: {message}")
        finally:
            self._trial_runner = None
            self.trialling = None

    # ------------------------------------------------------------------ tuning

    def tune(self, request: TuneRequest, on_trial: Callable[[TunedTrial, TunePlan], None] | None = None) -> TuneResult:
        """Hold the trainer at a fork and run the next round's Optuna study from it (blocking: every trial).

        A study of this round that was stopped resumes with the plan it was started with
        (its fork, budget and space); the advisor is not asked again then. The trainer stays
        held until `decide_tune`.
        """
        self._require_open()
        with self._advisor_lock, self._full_disk_is_the_users():
            self._assessing = True  # no assessment while the study holds the trainer
            try:
                name = study_name(self.round + 1)
                fork, fork_step = self._fork_point()
                snapshot = build_snapshot(self.run, previous=read_ledger(self.run), trigger="tune", round=self.round)
                plan = saved_plan(self.run, name)
                if plan is None:
                    plan = new_plan(
                        request, current=snapshot.hparams, advisor=self._advisor_guess(snapshot), fork=fork, fork_step=fork_step,
                        train_size=snapshot.data.train_size, seed=self.settings.train.seed, settings=self.settings.trials,
                    )  # fmt: skip
                elif plan.fork is not None and not Path(plan.fork).is_file():
                    raise ConfigError(
                        f"the stopped study {name} forks from {plan.fork}, which is gone",
                        f"delete the study (or {self.run.tune_db}) to start it over",
                    )
                else:
                    plan = plan.model_copy(update={"trials": request.trials})
                runner = TrialRunner(
                    self._spec, Path(plan.fork) if plan.fork else None, self.run.trials / name, self.settings.trials,
                    task=snapshot.data.task, val_samples=min(self.settings.trials.val_samples, snapshot.data.val_size),
                    round_number=self.round + 1,
                )  # fmt: skip
                self._tuner = Tuner(self.run, name, plan, runner, self.settings.trials)
                self.trialling = f"tuning: {plan.trials} trials of {plan.samples} samples each ({plan.sampler})"
                if self.on_trials is not None:
                    self.on_trials(self.trialling)
                return self._tuner.run(on_trial)
            finally:
                self._tuner = None
                self.trialling = None
                self._assessing = False

    def _advisor_guess(self, snapshot: TrainingSnapshot) -> HParams | None:
        """The advisor's hyperparameters for the study's second trial: the proposal waiting at the gate,
        else what its roles propose now (the rules, or the LLM: its tokens are counted)."""
        waiting = self._turn.proposal if self._turn is not None else None
        if isinstance(waiting, HParamProposal):
            return waiting.after
        try:
            diagnosis = self._roles.assess(snapshot)
            answer = self._roles.propose_hparams(snapshot, diagnosis.value, None)
        except AdvisorError:
            return None
        self._unrecorded_tokens += _tokens([*diagnosis.usage, *answer.usage])
        guess = answer.value.change.apply_to(snapshot.hparams)
        return guess if guess != snapshot.hparams else None

    def decide_tune(self, result: TuneResult, accept: bool) -> VerdictResult:
        """Commit the study's best trial as a `tune` round (or reject it); the held trainer goes on either way."""
        self._require_open()
        proposal = result.proposal
        if proposal is None:
            self._release()
            return VerdictResult(False, None, f"nothing to commit: {result.reason}; training goes on unchanged", None)
        if accept:
            self.withdraw("the hyperparameters changed: a tune was accepted")
        with self._advisor_lock, self._full_disk_is_the_users():
            entry = LedgerEntry(
                time=time.time(), run_id=self.run_id, round=self.round, epoch=self.last_epoch.epoch if self.last_epoch else 0,
                trigger="tune", diagnosis=Diagnosis(health="warning", route="hyperparameters", summary=verdict_line(result)),
                proposal=proposal, verdict=Verdict(decision="accept" if accept else "reject"),
            )  # fmt: skip
            append_entry(self.run, entry)  # durable before anything acts on it
            self._refresh_recorded_tokens()
            if not accept:
                self._release()
                return VerdictResult(False, None, f"rejected: {proposal.summary}; training goes on unchanged", None)
            self.record_results()
            report = proposal.trials
            rationale = f"{proposal.rationale}\n\n{measured_line(report)}" + "".join(f"\n- {line}" for line in table_lines(result))
            with self._history_lock:
                info = self.history.commit_round(
                    kind="tune", summary=proposal.summary, findings=[], rationale=rationale, model_code=None,
                    hparams=proposal.after.model_dump(), advisor=f"optuna:{result.plan.sampler}", before=self._before_metrics(),
                    verdict="accepted", proposal_id=proposal_id(entry),
                )  # fmt: skip
                note: dict[str, object] = {"tune": tune_note(result)}
                if report is not None and report.winner is not None:
                    note["trial"] = self._trial_note(report)
                self.history.record_result(info.round, note)
            append_entry(self.run, entry.model_copy(update={"commit": info.sha}))
            self._new_round(info)
            winner = trial_winner(proposal)
            if winner is not None:
                applied = self._continue_from_trial(winner)
            else:
                applied = self._send([SetHParams(changes=proposal.change.changes(), round=info.round)])
            return VerdictResult(True, info, f"{info.label} committed as {info.short_sha}: {info.summary}; {applied}", None)

    def _fork_point(self) -> tuple[Path | None, int]:
        """Pause the trainer and have it checkpoint where it stands; a stopped, crashed or non-finite
        one forks from its last checkpoint (or, with none, from the model file).

        Reads the trainer itself while it waits (the events are kept for the next poll),
        so this works from the headless driver's one thread as from the app's workers.
        """
        with self._trainer_lock:
            trainer = self._trainer
            # Paused on a NaN, the weights it holds now are what went wrong: fork from before it.
            healthy = not self.paused_on_nonfinite
            if healthy and trainer is not None and trainer.is_alive and self.trainer_state in ("starting", "running", "paused"):
                trainer.send(Pause())
                trainer.send(CheckpointNow())
                self._holding = not self._user_paused
                deadline = time.monotonic() + FORK_CHECKPOINT_TIMEOUT_S
                while trainer.is_alive and time.monotonic() < deadline:
                    events = trainer.poll(timeout=0.2)
                    self._keep(events)
                    written = next((event for event in events if isinstance(event, CheckpointWritten)), None)
                    if written is not None:
                        return Path(written.path), written.step
        latest = self.run.latest_checkpoint()
        if latest is None:
            return None, 0  # nothing trained yet: every arm starts from the model file, as the run did
        return latest, self._step_of(latest) or 0

    def _step_of(self, checkpoint: Path) -> int | None:
        """The step `checkpoint` was written at, as its record says (None when none does: a run
        folder moved since, whose records name the old place)."""
        known = self._last_checkpoint
        if known is not None and known.path == str(checkpoint):
            return known.step
        # Written after the last poll (the trainer ran on while the advisor worked): its record says where.
        written = [event for event in read_metrics(self.run.metrics) if isinstance(event, CheckpointWritten) and event.path == str(checkpoint)]
        return written[-1].step if written else None

    def _step_time_s(self, batch_size: int) -> float | None:
        """Seconds per step as the run measured it (its last epoch's throughput)."""
        epoch = self.last_epoch
        if epoch is None or epoch.samples_per_sec <= 0:
            return None
        return batch_size / epoch.samples_per_sec

    def _continue_from_trial(self, arm: ArmResult) -> str:
        """Replace the held trainer by the winning trial's end state; its steps become the run's own."""
        checkpoint = Path(arm.checkpoint or "")
        with self._trainer_lock:
            if self._trainer is not None:
                self._keep(self._trainer.stop(REPLACE_STOP_TIMEOUT_S, checkpoint=False))
            carried = []
            # The run's newest attempt: a trial forked from before the run's own last steps (a
            # rollback) measured them again, and the trial's measurement is what stands.
            attempt = next_attempt(self.run.metrics)
            for folder in arm.folders:
                trial_metrics = RunFolder(Path(folder)).metrics
                lines = trial_metrics.read_text(encoding="utf-8").splitlines() if trial_metrics.exists() else []
                for event in map(parse_event, filter(None, lines)):
                    if isinstance(event, (StepBatch, EpochSummary)):
                        event = event.model_copy(update={"attempt": attempt})
                    if isinstance(event, CARRIED_TRIAL_EVENTS):
                        carried.append(event)
            with self.run.metrics.open("a", encoding="utf-8") as metrics:
                metrics.writelines(event_to_json(event) + "\n" for event in carried)
            self._keep(carried)
            # In the run's own checkpoints, so a restart before the next one still continues from here.
            kept = self.run.unused_checkpoint(checkpoint.name)
            shutil.copyfile(checkpoint, kept)
            self._launch(self._spec_from(kept), ())
        return f"training continues from its trial's end ({arm.steps} trial steps kept)"

    def decide(self, verdict: Verdict) -> VerdictResult:
        """Apply the human's verdict on the waiting proposal (blocking: git, maybe a new trainer)."""
        self._require_open()
        with self._advisor_lock, self._full_disk_is_the_users():
            turn = self._turn
            if turn is None:
                raise AdvisorError("no proposal is waiting for a decision", "ask the advisor for an assessment first")
            if verdict.decision == "withdrawn":
                raise AdvisorError("a withdrawal is copilot's, not a verdict", "accept, reject or edit the proposal")
            if turn.proposal.kind == "finish":
                return self._decide_finish(turn, verdict)
            outcome = self._advisor.decide(verdict)
            if isinstance(outcome, PendingProposal):
                retry = self._turn_of(outcome, turn.trigger)
                self._turn = retry
                return VerdictResult(False, None, outcome.edit_problem or "the edit was not taken", retry)
            self._turn = None
            self._refresh_recorded_tokens()
            if isinstance(outcome, Rejected):
                self._release()
                reason = f" ({outcome.verdict.reason})" if outcome.verdict.reason else ""
                return VerdictResult(False, None, f"rejected: {outcome.proposal.summary}{reason}; training goes on", None)
            info, applied = self._commit(outcome)
            return VerdictResult(True, info, f"{info.label} committed as {info.short_sha}: {info.summary}; {applied}", None)

    def _commit(self, accepted: Accepted) -> tuple[RoundInfo, str]:
        """Commit an accepted change as the next round, note the commit in the ledger, hand it to the trainer."""
        proposal = accepted.proposal
        findings = [finding.one_line() for finding in accepted.entry.diagnosis.findings]
        verdict = "edited" if accepted.verdict.decision == "edit" else "accepted"
        edited_by = self._edited_by(accepted) if verdict == "edited" else None
        report = getattr(proposal, "trials", None)
        measured = "".join(f"\n\n{line}" for line in start_lines(proposal))
        measured += f"\n\n{measured_line(report)}" + "".join(f"\n- {line}" for line in arm_lines(report))
        self.record_results()
        identity = proposal_id(accepted.entry)
        with self._history_lock:
            if isinstance(proposal, ArchitectureProposal):
                rationale = proposal.rationale + "".join(f"\n\n- {change}" for change in proposal.changes) + measured
                info = self.history.commit_round(
                    kind="arch", summary=proposal.summary, findings=findings, rationale=rationale,
                    model_code=proposal.code, hparams=None, advisor=self.advisor_name,
                    before=self._before_metrics(), verdict=verdict, proposal_id=identity, edited_by=edited_by,
                )  # fmt: skip
            else:
                info = self.history.commit_round(
                    kind="hparams", summary=proposal.summary, findings=findings, rationale=proposal.rationale + measured,
                    model_code=None, hparams=proposal.after.model_dump(), advisor=self.advisor_name,
                    before=self._before_metrics(), verdict=verdict, proposal_id=identity, edited_by=edited_by,
                )  # fmt: skip
            if isinstance(report, TrialReport) and report.status == "trialled":
                self.history.record_result(info.round, {"trial": self._trial_note(report)})
        append_entry(self.run, accepted.entry.model_copy(update={"commit": info.sha}))
        self._new_round(info)
        self._history_changed()
        winner = trial_winner(proposal)
        if winner is not None and isinstance(proposal, ArchitectureProposal):
            self._wall_from_now_on()
        start = getattr(proposal, "start_from", None)
        if winner is not None:
            if start is not None:
                self._rewind_to(start.step)
            return info, self._continue_from_trial(winner)
        if start is not None:
            return info, self._restart_from(start, self._command_for(proposal, info.round))
        return info, self._apply(self._command_for(proposal, info.round))

    @staticmethod
    def _edited_by(accepted: Accepted) -> str:
        """The `Copilot-Edited-By` trailer: the user, and what they changed in the advisor's proposal."""
        original, applied = accepted.entry.proposal, accepted.proposal
        if isinstance(original, HParamProposal) and isinstance(applied, HParamProposal):
            return f"user ({hparam_differences(original.after, applied.after) or 'no value changed'})"
        return "user (the model code)"

    def _rewind_to(self, step: int) -> None:
        """Record that the run goes back to `step`: what it recorded after it is no longer its line."""
        with self.run.metrics.open("a", encoding="utf-8") as metrics:
            metrics.write(event_to_json(Rewound(step=step, attempt=next_attempt(self.run.metrics))) + "\n")

    def _restart_from(self, start: StartPoint, command: Command) -> str:
        """A new trainer from the proposal's earlier point (a checkpoint, or the run's start), given `command`.

        From the start, the trainer builds the worktree's model file, which holds the round's
        code already: a new model's command is then just the round's mark.
        """
        if isinstance(command, SwapModel):
            self._wall_from_now_on()
            if start.checkpoint is None:
                command = SetHParams(changes={}, round=command.round)
        self._rewind_to(start.step)
        self._replace_trainer(Path(start.checkpoint) if start.checkpoint else None, [command], save_old=False)
        where = f"the checkpoint at step {start.step}" if start.checkpoint else "the run's start"
        return f"a new trainer starts with it from {where}"

    def _apply(self, command: Command) -> str:
        """Hand a committed round to the trainer: new model code only behind the walls."""
        return self._send_untrusted([command]) if isinstance(command, SwapModel) else self._send([command])

    def _command_for(self, proposal: Proposal, round_number: int) -> Command:
        """What the trainer must do to train a committed round of `proposal`."""
        if isinstance(proposal, ArchitectureProposal):
            return self._swap_command(round_number, carry_weights=proposal.carry_weights)
        return SetHParams(changes=proposal.change.changes(), round=round_number)

    @staticmethod
    def _trial_note(report: TrialReport) -> dict[str, object]:
        """The round note's `trial` part: the change against the unchanged run, and every arm in a line."""
        winner, unchanged = report.arm(report.winner or ""), report.arm(INCUMBENT)
        best, base = (winner.final if winner else None), (unchanged.final if unchanged else None)
        return {
            "steps": winner.steps if winner else 0,
            "wall_time_s": report.wall_time_s,
            "val_loss": best.val_loss if best else None,
            "val_accuracy": best.val_accuracy if best else None,
            "unchanged_val_loss": base.val_loss if base else None,
            "unchanged_val_accuracy": base.val_accuracy if base else None,
            "noise": report.noise,
            "tried": arm_lines(report),
        }

    def _decide_finish(self, turn: AdvisorTurn, verdict: Verdict) -> VerdictResult:
        if verdict.decision == "edit":
            raise AdvisorError("a finish report cannot be edited", "accept it to end the run, or reject it to train on")
        entries = [entry for entry in read_ledger(self.run) if entry.proposal == turn.proposal and entry.verdict is None]
        if entries:
            append_entry(self.run, entries[-1].model_copy(update={"verdict": verdict}))
        self._turn = None
        if verdict.decision == "reject":
            self._release()
            return VerdictResult(False, None, "the advisor's finish was rejected; training goes on", None)
        self.stop()
        report = self.write_report()
        return VerdictResult(True, None, f"training stopped at the advisor's finish; report: {report}", None, report=report)

    def _require_open(self) -> None:
        if self._stopped:
            raise CopilotError("this session is stopped", f"continue the run with `{resume_command(self.run, self.settings.runs_dir)}`")

    # ------------------------------------------------------------------ rounds and their results

    def _before_metrics(self) -> dict[str, float | int]:
        """What the run measured last, for the round's `Copilot-Before` trailer."""
        epoch = self.last_epoch
        if epoch is None:
            return {"epoch": 0}
        measured = {"val_accuracy": epoch.val_accuracy, "val_loss": epoch.val_loss}
        return {"epoch": epoch.epoch} | {name: value for name, value in measured.items() if value is not None and math.isfinite(value)}

    def _new_round(self, info: RoundInfo) -> None:
        """Train `info` from now on: a new round, or one the branch went back to (its results final)."""
        self.round = info.round
        self._round_started_epoch = None  # known at the round's first epoch
        self._round_training_s = 0.0
        self._round_epoch = self._round_checkpoint = None
        self._round_final = bool(info.results and info.results.final)

    def record_results(self) -> None:
        """Write what the current round's own model measured into its git note (once per new epoch
        or checkpoint), until the run leaves the round: the history then makes the note final.

        Only epochs and checkpoints the trainer reports for this round count: those of the
        model before it, still arriving after the commit, are never this round's results.
        The checkpoint is stored relative to the run folder.
        """
        epoch = self._round_epoch
        started_epoch = self._round_started_epoch
        if self._round_final or epoch is None or started_epoch is None or epoch.epoch <= started_epoch:
            return
        checkpoint = self.run.relative(self._round_checkpoint) if self._round_checkpoint else None
        if self._results_recorded_at == (self.round, epoch.epoch, checkpoint):
            return
        results = {
            "val_accuracy": epoch.val_accuracy,
            "val_loss": epoch.val_loss,
            "train_loss": epoch.train_loss,
            "epoch": epoch.epoch,
            "epochs_trained": epoch.epoch - started_epoch,
            "training_s": round(self._round_training_s, 1),
            "checkpoint": checkpoint,
        }
        with self._history_lock:
            self.history.record_result(self.round, {key: value for key, value in results.items() if value is not None})
        self._results_recorded_at = (self.round, epoch.epoch, checkpoint)
        self._history_changed()

    def _history_changed(self) -> None:
        if self.on_history_changed is not None:
            self.on_history_changed()

    def rounds(self) -> list[RoundInfo]:
        with self._history_lock:
            return self.history.rounds()

    def diff(self, a: int, b: int) -> RoundDiff:
        with self._history_lock:
            return self.history.diff(a, b)

    def round_epochs(self, *rounds: int) -> dict[int, list[EpochSummary]]:
        """Each of `rounds`' epochs from the run's metrics.jsonl (a round compared in the history screen)."""
        return round_epochs(self.run.metrics, rounds)

    def rollback(self, k: int) -> BranchMoved:
        """A new round equal to round k; training continues from round k's checkpoint when it has one."""
        self.record_results()
        with self._history_lock:
            info = self.history.rollback(k, before=self._before_metrics())
            target = self.history.round(k)
        self._new_round(info)
        self._history_changed()
        training = self._train_from(target, info.round)
        self.withdraw(f"the model changed: rolled back to r{k} (now {info.label})")
        return BranchMoved(info, f"rolled back to r{k} as {info.label}; {training}")

    def undo(self) -> BranchMoved:
        """Take the last round off the branch; the trainer goes back to the round before: its checkpoint."""
        return self._move_branch(self.history.undo, "undone")

    def redo(self) -> BranchMoved:
        """Put back the round undo took off; the trainer goes back to its checkpoint."""
        return self._move_branch(self.history.redo, "redone")

    def _move_branch(self, operation: Callable[[], RoundInfo], done: str) -> BranchMoved:
        self.record_results()
        with self._history_lock:
            info = operation()
        self._new_round(info)
        self._history_changed()
        training = self._train_from(info, info.round)
        self.withdraw(f"the model changed: {done}, the branch is at {info.label}")
        return BranchMoved(info, f"{done}: the branch is at {info.label}; {training}")

    def _train_from(self, target: RoundInfo, round_number: int) -> str:
        """Train `target`'s model as round `round_number`: from its checkpoint (its weights, optimizer
        and hyperparameters) when it has one, else its files loaded into the weights the trainer
        holds now. Says which."""
        stored = target.results.checkpoint if target.results else None
        checkpoint = self.run.resolve(stored) if stored else None
        if checkpoint is None or not checkpoint.is_file():
            self._follow_worktree(round_number)
            return f"{target.label} has no checkpoint, so its files are loaded into the current weights"
        step = self._step_of(checkpoint)
        if step is not None:  # what the abandoned line trained after the checkpoint is no longer the run's
            self._rewind_to(step)
        paused_by_user = self._paused_by_user
        # The empty change marks the round; the old trainer's state is abandoned, not checkpointed.
        commands: list[Command] = [*([Pause()] if paused_by_user else []), SetHParams(changes={}, round=round_number)]
        self._replace_trainer(checkpoint, commands, save_old=False)
        return f"training continues from {target.label}'s checkpoint {checkpoint.name} (its weights)"

    def _swap_command(self, round_number: int, *, carry_weights: bool = True) -> SwapModel:
        """Load the worktree's model file, the round's code, into the trainer."""
        return SwapModel(model=self._spec.model, round=round_number, carry_weights=carry_weights)

    def _follow_worktree(self, round_number: int) -> None:
        """Train what the worktree now holds: its model file, and its hyperparameter file when it has one."""
        commands: list[Command] = [self._swap_command(round_number)]
        with self._history_lock:
            hparams_file = self.history.hparams_path_in_worktree()
        if hparams_file.is_file():
            values = read_hparams(hparams_file.read_text(encoding="utf-8"), where=str(hparams_file))
            known = {key: value for key, value in values.items() if key in HParams.model_fields}
            commands.append(SetHParams(changes=known, round=round_number))
        self._send(commands)

    # ------------------------------------------------------------------ the end

    def write_report(self) -> Path:
        """Write `report.md` (and the curves) into the run folder; returns its path."""
        from copilot.report import write_report

        self.record_results()
        with self._history_lock, self._full_disk_is_the_users():
            return write_report(self.run, self.history, advisor_name=self.advisor_name)

    @contextmanager
    def _full_disk_is_the_users(self) -> Iterator[None]:
        """A write into the run folder (advisor.sqlite, the ledger, the report) that finds the
        disk full is the user's to fix, named with the run and how to continue it."""
        try:
            yield
        except Exception as exc:
            if is_disk_full(exc):
                raise DiskFullError(self.run.path, resume_command(self.run, self.settings.runs_dir)) from exc
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Checkpoint and stop the trainer, note the round's results; a waiting proposal stays waiting.

        Called again from another thread while a stop is in progress (a signal's bounded
        shutdown beside the app's own exit), it returns once that stop is done.
        """
        with self._stop_lock:
            stopping = self._stopped
            self._stopped = True
        if stopping:
            if threading.current_thread() is not self._stopping_thread:
                self._stop_done.wait()
            return
        # Stopped from the first line: a stop that fails (a full disk) is not tried again, and
        # the advisor's database is closed whatever happened, so nothing holds the run folder.
        self._stopping_thread = threading.current_thread()
        runner, tuner = self._trial_runner, self._tuner
        if runner is not None:
            runner.cancel()  # before the trainer lock: the assessment that runs the trials does not hold it
        if tuner is not None:
            tuner.stop()
        try:
            with self._trainer_lock:
                if self._trainer is not None:
                    self._keep(self._trainer.stop(timeout))
            self.record_results()
        finally:
            self._advisor.close()
            self._stop_done.set()
