"""The trainer process: owns the model, optimizer and data, reads commands, emits events.

`run_trainer` is the process entry. It seeds, picks the device, loads the data and the
user's model, checks one forward pass against the data, resolves the hyperparameters,
and runs epochs of `loop.train_step`, reading commands between steps (without waiting
while running, with a timeout while paused). What it sends and writes goes through
`reporter.py`. A watchdog (`train.watchdog_s`) ends a run whose model is stuck, naming the
stage and the frame; a full disk ends it as a `DiskFullError`, with nothing half-written.

Whatever goes wrong ends as one `TrainerError` (classified in `failures.py`) followed by
`Finished`; a non-finite loss and a swapped model that fails are reported without ending
the run. Only rank 0 reports and writes the run folder.

Under several ranks (started by `ranks.py`) every rank runs this same trainer on its
shard, with `HParams.batch_size` split evenly across them and the model wrapped in DDP.
Commands are read only at logging intervals (and while paused), through
`distributed.CommandsInStep`, so each lands at the same step on every rank; a swap
rebuilds and re-wraps the model on every rank and checks that their weights agree. A
rank other than 0 that fails re-raises, so the elastic agent ends the job and names it.

A spec with a `TrialPlan` makes the trainer a trial: the plan's changes are applied
before the first step (a change that fails is the trial's failure, never a quiet fall
back to the old model), the outputs on the fixed validation samples are written at the
plan's steps, a non-finite loss ends the trial instead of pausing it, and after its
budget the trial checkpoints and stops, so the run can continue from its end state.

It must not print, and holds no measurement logic (that is `loop.py`/`instruments.py`).
"""

from __future__ import annotations

import math
import os
import queue
import random
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from copilot.errors import ConfigError, CopilotError, DataError, DiskFullError, is_disk_full
from copilot.events import (
    CheckpointNow,
    CheckpointWritten,
    Command,
    EpochSummary,
    Evaluated,
    EvaluateNow,
    Finished,
    ForwardContract,
    HParams,
    HParamsApplied,
    ModelRef,
    ModelSummary,
    ModelSwapped,
    NonFinite,
    Pause,
    Resume,
    RunStarted,
    SetHParams,
    StateChanged,
    Stop,
    SwapModel,
    TrainerError,
    TrialOutputs,
)
from copilot.run_folder import RunFolder
from copilot.training import distributed
from copilot.training.checkpoints import (
    Checkpoint,
    ModelOrigin,
    capture_rng_states,
    checkpoint_name,
    load_checkpoint,
    restore_rng_states,
    save_checkpoint,
)
from copilot.training.data import DataBundle, batches_per_epoch, iterate_batches, load_data
from copilot.training.failures import error_event, nonfinite_error, swap_refused
from copilot.training.hparams import apply_hparam_changes, build_optimizer, build_scheduler, resolve_hparams
from copilot.training.instruments import Instruments
from copilot.training.launcher import TrainerSpec
from copilot.training.loop import TrainState, evaluate, finish_epoch, make_loss_fn, predict, train_step
from copilot.training.model_outputs import OutputContract
from copilot.training.models import (
    LoadedModel,
    check_forward,
    load_model,
    summarize_model,
    transfer_weights,
)
from copilot.training.reporter import Reporter
from copilot.training.watchdog import LOADING, StuckAt, Watchdog

# Samples in the batch the model is checked and described with before training.
PROBE_BATCH = 2
# How long a paused trainer waits for a command before checking that its parent still lives.
PAUSED_POLL_S = 0.25

FinishReason = Literal["epochs_done", "stopped", "error"]
# Orphaned, a process is re-parented: a different parent means the one that started us is gone.
_STARTING_PARENT_PID = os.getppid()


def run_trainer(spec: TrainerSpec, commands: Any, events: Any) -> None:
    """Process entry: train as `spec` says, reading `Command`s from `commands`, putting `Event`s on `events`.

    The queues only need `get(timeout=)`, `get_nowait()` and `put()`, so tests can run this
    in a thread with `queue.Queue`s.
    """
    _Trainer(spec, commands, events).run()


# --------------------------------------------------------------------------- the trainer


@dataclass(frozen=True)
class _ActiveModel:
    """The model being trained with everything built around it; kept whole so a failed swap can go back."""

    model: nn.Module
    loss_fn: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    instruments: Instruments
    contract: OutputContract
    origin: ModelOrigin
    summary: ModelSummary
    round: int

    @classmethod
    def of(cls, state: TrainState, origin: ModelOrigin, summary: ModelSummary) -> _ActiveModel:
        return cls(
            model=state.model,
            loss_fn=state.loss_fn,
            optimizer=state.optimizer,
            scheduler=state.scheduler,
            instruments=state.instruments,
            contract=state.contract,
            origin=origin,
            summary=summary,
            round=state.round,
        )


class _StopRequested(Exception):
    """Raised between steps when a `Stop` arrived; unwinds the epoch loop."""


class _TrialBudgetSpent(Exception):
    """Raised between steps when a trial has trained its steps; unwinds the epoch loop."""


class _Trainer:
    def __init__(self, spec: TrainerSpec, commands: Any, events: Any) -> None:
        self.spec = spec
        self.settings = spec.train
        self.commands = commands
        self.folder = RunFolder(Path(spec.run_folder))
        self.group = distributed.RankGroup.current()
        self.reporter = Reporter(events, self.folder, spec.train.max_messages_per_sec, enabled=self.group.is_main)
        self.paused = False
        self.between_epochs = False  # an epoch ended and the next has not begun
        self.stop_request: Stop | None = None
        self.user_files: set[str] = set()
        self.state: TrainState | None = None
        self.generator = torch.Generator()
        self.epoch_shuffle_state = self.generator.get_state()
        self.batches_done = 0  # of the epoch in progress, skipped ones included
        self.skip_batches = 0  # when resuming in the middle of an epoch
        self.swap_backup: _ActiveModel | None = None
        self.paused_s = 0.0  # time spent paused in the epoch in progress
        self.nonfinite_reported = False  # in the epoch in progress
        self.trial = spec.trial
        self.trial_forked_at = 0  # the global step a trial started from
        self.events = events
        self.watchdog: Watchdog | None = None

    # ----------------------------------------------------------------- run

    def run(self) -> None:
        reason: FinishReason = "error"
        try:
            self._start()
            reason = self._train()
        except Exception as exc:
            if not self.group.is_main:
                raise  # the elastic agent ends every rank and names this one; rank 0 reports its own errors
            if self.group.world_size > 1 and not isinstance(exc, CopilotError):
                # Most likely another rank died and this one only lost it in a collective: the
                # agent ends this rank and names the one that failed. Ours is reported if it does not.
                distributed.wait_for_the_agent()
            state = self.state
            if is_disk_full(exc):
                exc = DiskFullError(self.folder.path, f"copilot resume {self.folder.run_id}")
            self.reporter.emit(
                error_event(
                    exc,
                    self.user_files,
                    epoch=state.epoch + 1 if state else None,
                    step=state.step if state else None,
                )
            )
        finally:
            if self.watchdog is not None:
                self.watchdog.stop()
            epoch, step = (self.state.epoch, self.state.step) if self.state else (0, 0)
            self.reporter.emit(Finished(reason=reason, epoch=epoch, step=step))
            self.reporter.close()

    def _watch(self, stage: str) -> None:
        if self.watchdog is not None:
            self.watchdog.at(stage)

    def _stuck(self, stuck: StuckAt) -> None:
        """The watchdog's verdict (on its own thread; the main one is stuck): report it and end."""
        frame = stuck.frame
        where = f" at {Path(frame.filename).name}:{frame.lineno} in {frame.name}" if frame is not None else ""
        state = self.state
        self.reporter.emit(
            TrainerError(
                kind="stuck",
                message=f"the model is stuck in {stuck.stage}: no progress for {stuck.seconds:.0f} s{where}",
                hint="every thread's stack is in events.log; fix the loop there, or raise train.watchdog_s if it is only slow",
                epoch=state.epoch + 1 if state else None,
                step=state.step if state else None,
            )
        )
        self.reporter.emit(Finished(reason="error", epoch=state.epoch if state else 0, step=state.step if state else 0))
        self.reporter.close()
        if not isinstance(self.events, queue.Queue):  # the trainer's own process, not a test's thread: end it, the stuck thread with it
            self.events.close()
            os._exit(1)

    def _start(self) -> None:
        _seed_everything(self.settings.seed)
        self.generator.manual_seed(self.settings.seed)
        self.device = distributed.pick_device(self.settings.device)
        self.data = load_data(self.spec.data, self.device, rank=self.group.rank, world_size=self.group.world_size)
        if self.settings.watchdog_s is not None:
            self.watchdog = Watchdog(self.settings.watchdog_s, self.reporter.log_file, self.user_files, self._stuck)
            self.watchdog.start()
        self.probe_inputs, self.probe_targets = self._probe_batch(self.data)
        checkpoint = load_checkpoint(self.spec.resume_from) if self.spec.resume_from else None
        if checkpoint is None:
            loaded, contract = self._load_checked(self.spec.model)
            self.origin = self._keep_copy(self.spec.model, round_number=0)
            hparams = resolve_hparams(loaded.file_hparams, self.settings.hparams)
            distributed.rank_batch_size(hparams.batch_size, self.group.world_size)  # before any step: fail at once
            self.state = self._new_state(loaded.model, hparams, contract)
        else:
            self.origin = checkpoint.model
            loaded, contract = self._load_checked(checkpoint.model.kept)
            self.state = self._resumed_state(loaded.model, contract, checkpoint)
        self.summary = summarize_model(distributed.unwrapped(self.state.model), self.origin.source, self.probe_inputs)
        self.reporter.emit(
            RunStarted(
                run_id=self.folder.run_id,
                device=distributed.describe_device(self.device),
                world_size=distributed.world_size(),
                data=self.data.spec,
                model=self.summary,
                hparams=self.state.hparams,
                resumed_from_epoch=checkpoint.epoch if checkpoint else None,
                time=time.time(),
                output_form=contract.describe(),
                ignored_hooks=loaded.ignored_hooks,
                forward_contract=_recorded(contract),
            )
        )
        if self.group.world_size > 1:  # what each figure is
            self.reporter.log(
                f"{self.group.world_size} ranks (DDP): loss, accuracy, gradient norms, update ratios and samples/s "
                "are global; activation statistics are rank 0's sample"
            )
        if checkpoint is not None:
            self.reporter.log(f"resumed from {self.spec.resume_from} at epoch {checkpoint.epoch}, step {checkpoint.step}")
        self.reporter.emit(StateChanged(state="running"))
        if self.trial is not None:
            self._begin_trial(self.state)

    def _begin_trial(self, state: TrainState) -> None:
        """Apply the trial's change as an accepted round would; then, for a second incumbent, reseed."""
        assert self.trial is not None
        self.trial_forked_at = state.step
        for command in self.trial.changes:
            self._handle(command, state)
        if self.trial.reseed is not None:
            torch.manual_seed(self.trial.reseed)
            self.generator.manual_seed(self.trial.reseed)

    def _new_state(self, model: nn.Module, hparams: HParams, contract: OutputContract, *, step: int = 0) -> TrainState:
        optimizer = build_optimizer(model.parameters(), hparams)
        return TrainState(
            model=distributed.wrap_model(model, self.device),
            loss_fn=make_loss_fn(model, self.data.spec.task, contract),
            contract=contract,
            optimizer=optimizer,
            scheduler=build_scheduler(
                optimizer, hparams, steps_per_epoch=self._steps_per_epoch(hparams.batch_size), start_step=step
            ),
            hparams=hparams,
            instruments=Instruments(model),
            task=self.data.spec.task,
            device=self.device,
            step=step,
            group=self.group,
        )

    def _resumed_state(self, model: nn.Module, contract: OutputContract, checkpoint: Checkpoint) -> TrainState:
        """The state as checkpointed, then the hyperparameters given now on top, then every random stream."""
        model.load_state_dict(checkpoint.model_state)
        state = self._new_state(model, checkpoint.hparams, contract, step=checkpoint.step)
        # The schedule built at the checkpoint's step already gives the lr the saved param groups hold.
        state.optimizer.load_state_dict(checkpoint.optimizer_state)
        state.epoch, state.round, state.initial_loss = checkpoint.epoch, checkpoint.round, checkpoint.initial_loss
        if self.settings.hparams:
            batch_size = self._planned_batch_size(self.settings.hparams, state)
            apply_hparam_changes(state, self.settings.hparams, steps_per_epoch=self._steps_per_epoch(batch_size))
        # Last, after building the model drew from the global stream: continue exactly where the run stopped.
        restore_rng_states(checkpoint.rng_states)
        self.generator.set_state(checkpoint.shuffle_state)
        self.epoch_shuffle_state = checkpoint.shuffle_state
        self.skip_batches = checkpoint.batches_done
        return state

    def _probe_batch(self, data: DataBundle) -> tuple[torch.Tensor, torch.Tensor]:
        batches = iterate_batches(data.train, PROBE_BATCH, shuffle=False, generator=None, device=self.device)
        try:
            return next(batches)
        except StopIteration:
            raise DataError(f"the {data.spec.name} training set is empty", "give it at least one sample") from None
        finally:
            batches.close()

    def _load_checked(self, ref: ModelRef) -> tuple[LoadedModel, OutputContract]:
        """Build `ref`'s model on the device and check one forward pass on real samples."""
        self.user_files.add(str(ref.path.resolve()))
        self._watch(LOADING)
        loaded = load_model(ref, self.data.spec, self.spec.max_params)
        loaded.model.to(self.device)
        self._watch("first forward")
        return loaded, check_forward(loaded, self.probe_inputs, self.data.spec, self.probe_targets)

    def _keep_copy(self, ref: ModelRef, round_number: int) -> ModelOrigin:
        """Copy a model file that loaded into the run folder as `r<round>_<file>.py`: the record of
        what was trained, and what a resumed run loads, whatever happens to the source later."""
        copy = self.folder.models / f"r{round_number}_{ref.path.name}"
        if self.group.is_main:
            self.folder.models.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ref.path, copy)
        return ModelOrigin(source=str(ref.path), path=str(copy), name=ref.name, args=dict(ref.args))

    def _steps_per_epoch(self, batch_size: int) -> int:
        return batches_per_epoch(self.data.train, self._rank_batch_size(batch_size), self.group.world_size)

    def _rank_batch_size(self, batch_size: int) -> int:
        return distributed.rank_batch_size(batch_size, self.group.world_size)

    @staticmethod
    def _planned_batch_size(changes: Mapping[str, Any], state: TrainState) -> int:
        """The batch size a change asks for (validated later by apply_hparam_changes), for the schedule's budget."""
        requested = changes.get("batch_size")
        return requested if isinstance(requested, int) and requested > 0 else state.hparams.batch_size

    # ----------------------------------------------------------------- epochs and steps

    def _train(self) -> FinishReason:
        state = self.state
        assert state is not None
        try:
            while True:
                while state.epoch < state.hparams.epochs:
                    self._run_epoch(state)
                if not self.paused:
                    break
                # Paused by a non-finite loss in the last epoch: wait, the advisor may add epochs.
                self._between_steps(state)
        except _StopRequested:
            self.reporter.emit(StateChanged(state="stopping"))
            if self.stop_request is not None and self.stop_request.checkpoint:
                self._checkpoint(at_epoch_end=False)
            return "stopped"
        except _TrialBudgetSpent:
            self.reporter.emit(StateChanged(state="stopping"))
            self._checkpoint(at_epoch_end=False)
            return "stopped"
        return "epochs_done"

    def _run_epoch(self, state: TrainState) -> None:
        self.between_epochs = False
        epoch_started = time.perf_counter()
        self.epoch_shuffle_state = self.generator.get_state()
        skip, self.skip_batches = self.skip_batches, 0
        self.batches_done = 0
        self.paused_s = 0.0
        self.nonfinite_reported = False
        samples = 0
        batches = iterate_batches(
            self.data.train,
            self._rank_batch_size(state.hparams.batch_size),  # a batch size changed mid-epoch applies from the next epoch
            shuffle=True,
            generator=self.generator,
            device=self.device,
            rank=self.group.rank,
            world_size=self.group.world_size,
        )
        for inputs, targets in batches:
            if self.batches_done < skip:
                self.batches_done += 1
                continue
            self._between_steps(state)
            self._step(state, inputs, targets)
            self.batches_done += 1
            samples += len(inputs)
        training_s = time.perf_counter() - epoch_started - self.paused_s
        train_loss, train_accuracy = finish_epoch(state)
        if not math.isfinite(train_loss) and not self.nonfinite_reported:  # it was on an unlogged step
            self._report_nonfinite(NonFinite(where="loss"), state)
        val_loss, val_accuracy = evaluate(state, self._validation_batches(state))
        self.reporter.emit(
            EpochSummary(
                epoch=state.epoch,
                step=state.step,
                train_loss=train_loss,
                train_accuracy=train_accuracy,
                val_loss=val_loss,
                val_accuracy=val_accuracy,
                initial_loss=state.initial_loss,
                expected_initial_loss=math.log(self.data.spec.num_classes),
                lr=float(state.optimizer.param_groups[0]["lr"]),
                # Every rank trains as many samples as this one: the whole job's throughput.
                samples_per_sec=samples * self.group.world_size / training_s if training_s > 0 else 0.0,
                duration_s=time.perf_counter() - epoch_started - self.paused_s,  # training, not waiting
                round=state.round,
                attempt=self.reporter.attempt,
            )
        )
        self.between_epochs = True
        if self.settings.checkpoint_every_epoch:
            self._checkpoint(at_epoch_end=True)
        else:
            self.reporter.sync_files()
        if self.spec.hold_at_epoch_end and self.trial is None and state.epoch < state.hparams.epochs:
            self._hold_at_epoch_end(state)

    def _hold_at_epoch_end(self, state: TrainState) -> None:
        """Wait here, before the next epoch's batches are drawn, for the session's next command:
        an assessment sees this epoch's end and its change applies from the next epoch's first
        step, however quickly the session reacts (a Pause it sent would land some steps later)."""
        if self.group.world_size > 1:  # the ranks pause together: at their next agreement on commands
            if self.group.is_main:
                self.commands.add(Pause(at_epoch_end=True))
            return
        self._set_paused(True, at_epoch_end=True)
        self._between_steps(state)

    def _validation_batches(self, state: TrainState) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = iterate_batches(
            self.data.val,
            self._rank_batch_size(state.hparams.batch_size),
            shuffle=False,
            generator=None,
            device=self.device,
            rank=self.group.rank,
            world_size=self.group.world_size,
        )
        for number, batch in enumerate(batches, start=1):
            self._watch(f"validation batch {number}")
            yield batch

    def _step(self, state: TrainState, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self._watch(f"step {state.step + 1}")
        log = state.step % self.settings.log_every == 0
        sample_activations = state.step % self.settings.activation_every == 0
        try:
            result = train_step(state, inputs, targets, log=log, sample_activations=sample_activations)
        except Exception as exc:
            if self.swap_backup is None or self.trial is not None:
                raise
            self._revert_swap(state, exc)
            self._step(state, inputs, targets)  # the batch is not lost: the old model trains on it
            return
        if self.swap_backup is not None:  # the new model trained one step: the old one can go
            self.swap_backup.instruments.close()
            self.swap_backup = None
        self.reporter.add_step(result.record, result.activations)
        if result.record is not None and result.record.nonfinite is not None:
            self._report_nonfinite(result.record.nonfinite, state)
        if self.trial is not None and state.step - self.trial_forked_at in self.trial.evaluate_at:
            self._write_trial_outputs(state)

    def _write_trial_outputs(self, state: TrainState) -> None:
        """The outputs on the fixed validation samples, for the parent to score against labels it alone holds."""
        assert self.trial is not None
        outputs = predict(state, self._validation_batches(state), self.trial.val_samples)
        trial_step = state.step - self.trial_forked_at
        path = self.folder.outputs / f"step{trial_step:06d}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(outputs, path)
        self.reporter.emit(TrialOutputs(trial_step=trial_step, step=state.step, path=str(path)))

    def _report_nonfinite(self, nonfinite: NonFinite, state: TrainState) -> None:
        """Report and pause: the run stays alive so the advisor (or the user) can act on it."""
        self.reporter.emit(nonfinite_error(nonfinite, state))
        self.nonfinite_reported = True
        if self.trial is not None:  # a diverged trial has its answer; nobody will resume it
            self.stop_request = Stop(checkpoint=False)
            raise _StopRequested
        if self.group.world_size > 1:  # the ranks pause together: at the next agreement on commands
            if self.group.is_main:
                self.commands.add(Pause())
            return
        self._set_paused(True)

    # ----------------------------------------------------------------- commands

    def _between_steps(self, state: TrainState) -> None:
        """Apply every waiting command; while paused, wait for more. Raises `_StopRequested`."""
        if self.trial is not None and state.step - self.trial_forked_at >= self.trial.steps:
            raise _TrialBudgetSpent
        if self.group.world_size > 1 and state.step % self.settings.log_every != 0 and not self.paused:
            return  # the ranks agree on commands at logging intervals, not with a collective every step
        paused_since = time.perf_counter() if self.paused else None
        if state.step % self.settings.log_every == 0 and not _parent_alive():
            self.stop_request = Stop()
            raise _StopRequested
        while True:
            try:
                command = self.commands.get(timeout=PAUSED_POLL_S) if self.paused else self.commands.get_nowait()
            except queue.Empty:
                if not self.paused:
                    break
                self._watch("paused")  # waiting for the user is not being stuck
                if not _parent_alive():
                    self.stop_request = Stop()
                    raise _StopRequested
                continue
            if paused_since is None and isinstance(command, Pause):
                paused_since = time.perf_counter()
            self._handle(command, state)
        if paused_since is not None:
            self.paused_s += time.perf_counter() - paused_since
            state.restart_throughput_clock()

    def _handle(self, command: Command, state: TrainState) -> None:
        if isinstance(command, Pause):
            self._set_paused(True, at_epoch_end=command.at_epoch_end)
        elif isinstance(command, Resume):
            self._set_paused(False)
        elif isinstance(command, Stop):
            self.stop_request = command
            raise _StopRequested
        elif isinstance(command, SetHParams):
            self._set_hparams(command, state)
        elif isinstance(command, SwapModel):
            self._swap_model(command, state)
        elif isinstance(command, CheckpointNow):
            self._checkpoint(at_epoch_end=False)
        elif isinstance(command, EvaluateNow):
            self.reporter.emit(StateChanged(state="evaluating"))
            val_loss, val_accuracy = evaluate(state, self._validation_batches(state))
            self.reporter.emit(Evaluated(epoch=state.epoch, step=state.step, val_loss=val_loss, val_accuracy=val_accuracy))
            self.reporter.emit(StateChanged(state="paused" if self.paused else "running"))

    def _set_paused(self, paused: bool, *, at_epoch_end: bool = False) -> None:
        if paused != self.paused:
            self.paused = paused
            self.reporter.emit(StateChanged(state="paused" if paused else "running", held_at_epoch_end=at_epoch_end))

    def _set_hparams(self, command: SetHParams, state: TrainState) -> None:
        previous_batch_size = state.hparams.batch_size
        try:
            self._rank_batch_size(self._planned_batch_size(command.changes, state))
            hparams = apply_hparam_changes(
                state, command.changes, steps_per_epoch=self._steps_per_epoch(self._planned_batch_size(command.changes, state))
            )
        except ConfigError as exc:
            self.reporter.log(f"hyperparameter change refused: {exc.message} ({exc.hint})", level="error")
            return
        if command.round is not None:
            state.round = command.round
        steps = self.group.steps(state.step, self.device) if self.group.world_size > 1 else ()
        self.reporter.emit(HParamsApplied(hparams=hparams, step=state.step, round=command.round, steps_per_rank=steps))
        if hparams.batch_size != previous_batch_size:
            self.reporter.log(f"batch size {hparams.batch_size} applies from the next epoch")

    def _swap_model(self, command: SwapModel, state: TrainState) -> None:
        """Build the new model, carry matching weights over, train it with a fresh optimizer.

        The old model is kept until the new one has trained one step, so a new model that
        fails (here or at that step) is reported and the run goes on with the old one.
        """
        round_number = command.round if command.round is not None else state.round
        try:
            loaded, contract = self._load_checked(command.model)
        except CopilotError as exc:
            if self.trial is not None:
                raise
            self.reporter.emit(swap_refused(exc, state))
            return
        origin = self._keep_copy(command.model, round_number)
        if command.carry_weights:
            transferred, total = transfer_weights(distributed.unwrapped(state.model), loaded.model)
        else:  # the change is the initialisation: the new model keeps its own
            transferred, total = 0, len(list(loaded.model.parameters())) + len(list(loaded.model.buffers()))
        self.swap_backup = _ActiveModel.of(state, self.origin, self.summary)
        fresh = self._new_state(loaded.model, state.hparams, contract, step=state.step)  # a fresh optimizer for the new parameters
        fresh.round = round_number
        summary = summarize_model(loaded.model, origin.source, self.probe_inputs)
        self._install(state, _ActiveModel.of(fresh, origin, summary))
        checksums = self.group.weight_checksums(loaded.model) if self.group.world_size > 1 else ()
        if len(set(checksums)) > 1:
            raise CopilotError(f"the ranks' weights differ after the swap: checksums {checksums}", "this is a bug in copilot")
        self.reporter.emit(
            ModelSwapped(
                model=summary, transferred=transferred, total=total, step=state.step, round=command.round,
                weight_checksums=checksums, forward_contract=_recorded(contract),
            )  # fmt: skip
        )

    def _install(self, state: TrainState, active: _ActiveModel) -> None:
        state.model, state.loss_fn, state.optimizer = active.model, active.loss_fn, active.optimizer
        state.scheduler, state.instruments, state.round = active.scheduler, active.instruments, active.round
        state.contract = active.contract
        self.origin, self.summary = active.origin, active.summary

    def _revert_swap(self, state: TrainState, exc: Exception) -> None:
        backup = self.swap_backup
        assert backup is not None
        self.swap_backup = None
        state.instruments.close()
        self._install(state, backup)
        error = error_event(exc, self.user_files, epoch=state.epoch + 1, step=state.step)
        self.reporter.emit(
            error.model_copy(
                update={
                    "message": f"the swapped model failed its first step: {error.message}",
                    "hint": "training goes on with the previous model; fix the new model and swap again",
                }
            )
        )
        everything = len(list(backup.model.parameters())) + len(list(backup.model.buffers()))
        self.reporter.emit(
            ModelSwapped(
                model=backup.summary, transferred=everything, total=everything, step=state.step, round=backup.round,
                forward_contract=_recorded(backup.contract),
            )  # fmt: skip
        )

    def _checkpoint(self, *, at_epoch_end: bool) -> None:
        state = self.state
        if state is None or not self.group.is_main:
            return
        # Asked for between two epochs (held there, or paused after the last), it is the epoch's end:
        # a mid-epoch checkpoint would have a resumed trainer skip the next epoch's batches.
        at_epoch_end = at_epoch_end or self.between_epochs
        # The record reaches disk before the checkpoint does: a trainer resumed from it never
        # lacks the steps before it (a kill loses what is still in our buffers, not the OS's).
        self.reporter.sync_files()
        self._watch("checkpoint")
        checkpoint = Checkpoint(
            model_state=distributed.unwrapped(state.model).state_dict(),  # loads under any number of ranks
            optimizer_state=state.optimizer.state_dict(),
            hparams=state.hparams,
            epoch=state.epoch,
            step=state.step,
            round=state.round,
            batches_done=0 if at_epoch_end else self.batches_done,
            initial_loss=state.initial_loss,
            model=self.origin,
            rng_states=capture_rng_states(),
            # At an epoch's end the generator already stands where the next epoch starts.
            shuffle_state=self.generator.get_state() if at_epoch_end else self.epoch_shuffle_state,
        )
        path = self.folder.unused_checkpoint(checkpoint_name(state.epoch, state.step, at_epoch_end=at_epoch_end))
        save_checkpoint(checkpoint, path)
        self.reporter.emit(CheckpointWritten(path=str(path), epoch=state.epoch, step=state.step, round=state.round))


def _recorded(contract: OutputContract) -> ForwardContract:
    """The part of the output contract the advisor's proposals must keep, as the events carry it."""
    return ForwardContract(form=contract.form, passes_targets=contract.passes_targets)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy
    except ImportError:
        return
    numpy.random.seed(seed)


def _parent_alive() -> bool:
    """False once the process that started us is gone (never an orphan training on its own)."""
    return os.getppid() == _STARTING_PARENT_PID
