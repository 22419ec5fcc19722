"""Typed messages between the trainer process and everything else.

This module is the only contract between processes: the parent sends `Command`s and
the trainer sends `Event`s, as JSON, over one socket pair, and `metrics.jsonl` in the run
folder holds the same event records, one JSON object per line. Nothing else is
shared. Every message is a frozen pydantic model with a literal `type` field, so a
line of `metrics.jsonl` or an item from a queue parses back with `parse_event`.

It must not import torch or any other part of copilot: the app, the advisor and
the trainer all import it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

OptimizerName = Literal["SGD", "Adam", "AdamW", "RMSprop"]
ScheduleName = Literal["constant", "step", "cosine", "one-cycle"]
Task = Literal["classification", "sequence"]


class Message(BaseModel):
    """Base of every message: immutable, strict about unknown fields."""

    # NaN and infinity are data here (an exploding loss), so they round-trip as JSON constants.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


def _unset(value: object) -> bool:
    """For fields written only when set: the lines of runs that never set them read as before."""
    return not value


# --------------------------------------------------------------------------- hyperparameters


# The range of each hyperparameter, written once: a run's settings and an advisor's proposed
# change are validated by the same types, and the rules clamp to the same bounds.
LR_RANGE: tuple[float, float] = (1e-7, 10)  # 10, not 10.0: messages and prompts print the bound as written
LearningRate = Annotated[float, Field(ge=LR_RANGE[0], le=LR_RANGE[1])]
Momentum = Annotated[float, Field(ge=0.0, le=0.999)]
WeightDecay = Annotated[float, Field(ge=0.0, le=1.0)]
BatchSize = Annotated[int, Field(ge=1, le=65536)]
Epochs = Annotated[int, Field(ge=1, le=100_000)]
GradClip = Annotated[float, Field(gt=0)]


class HParams(Message):
    """The hyperparameters a run trains with; ranges are the advisor's validation ranges too."""

    optimizer: OptimizerName = "SGD"
    lr: LearningRate = 0.01
    momentum: Momentum = 0.0
    weight_decay: WeightDecay = 0.0
    batch_size: BatchSize = 128
    epochs: Epochs = 10
    grad_clip: GradClip | None = None
    schedule: ScheduleName = "constant"

    @field_validator("lr", "momentum", "weight_decay", "grad_clip")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


HPARAM_KEYS: tuple[str, ...] = tuple(HParams.model_fields)


def hparam_bounds(key: str) -> dict[str, float]:
    """A hyperparameter's bounds by kind ("ge", "gt", "le", "lt"), read from its `HParams` type.

    An optional one (`GradClip | None`) keeps its bounds inside the `Annotated` member of the
    union, not on the field: both places are read, so every reader sees the same ranges.
    """
    field = HParams.model_fields[key]
    rules = list(field.metadata)
    for member in get_args(field.annotation):
        for extra in getattr(member, "__metadata__", ()):
            rules.extend(getattr(extra, "metadata", [extra]))
    return {kind: getattr(rule, kind) for rule in rules for kind in ("ge", "gt", "le", "lt") if getattr(rule, kind, None) is not None}


def hparam_differences(before: HParams, after: HParams, text: Callable[[object], str] = str) -> str:
    """`lr 0.1 -> 0.0015, optimizer SGD -> Adam`: each value that differs, in the fields' order, written by `text`
    (a sampler's lr 0.0016131392477 reads better to 4 digits)."""
    old, new = before.model_dump(), after.model_dump()
    return ", ".join(f"{key} {text(old[key])} -> {text(new[key])}" for key in HPARAM_KEYS if old[key] != new[key])


# --------------------------------------------------------------------------- the model

# A constructor argument as a command line, copilot.toml or a session.json can give it.
ModelArg = float | int | str | bool | None


def split_file_reference(text: str) -> tuple[Path, str | None]:
    """`"models/net.py:Net"` -> (path, "Net"); a colon belongs to the name only after a `.py`,
    so a path with a colon in it (`C:`, `run:2/net.py`) stays whole."""
    path_part, colon, name = text.rpartition(":")
    if colon and path_part.endswith(".py") and name.isidentifier():
        return Path(path_part), name
    return Path(text), None


class ModelRef(Message):
    """Which model to build: a file, the class or factory in it, and its constructor arguments.

    Parsed once where it comes in (the command line's `file.py[:Name]` and `--model-arg`s, a
    session.json) and then passed whole, as nanoGPT passes its GPTConfig, so nothing splits
    or re-joins a string on the way. `name` None lets the file's own rules choose
    (`build_model()`, else its one `nn.Module` class).
    """

    path: Path
    name: str | None = None
    args: dict[str, ModelArg] = Field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, args: Mapping[str, ModelArg] | None = None) -> ModelRef:
        path, name = split_file_reference(text)
        return cls(path=path, name=name, args=dict(args or {}))

    def at(self, path: Path) -> ModelRef:
        """The same pick and arguments in another copy of the file (the worktree's, a proposal's)."""
        return self.model_copy(update={"path": path})


# --------------------------------------------------------------------------- descriptions


class DataSpec(Message):
    """What the model is fed and what it must output: enough to build a dummy batch."""

    name: str
    task: Task
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    input_dtype: Literal["float32", "int64"] = "float32"
    num_classes: int  # classes for classification, vocabulary size for sequence
    train_size: int
    val_size: int

    def expected_output(self, batch: int) -> tuple[int, ...]:
        """Output shape the task requires for a batch of `batch` samples."""
        if self.task == "classification":
            return (batch, self.num_classes)
        return (batch, self.input_shape[0], self.num_classes)


class ModuleInfo(Message):
    """One module of the model, in forward (registration) order."""

    name: str  # module path such as "block1.conv"; "" for the root
    type: str  # class name such as "Conv2d"
    params: int  # parameters owned directly by this module (not its children)
    detail: str = ""  # short description: "3->16, k=3, pad=1", "p=0.5", ...
    is_leaf: bool = True


# The activation types in `ModelSummary.activations` whose outputs flatten at both ends, so
# their gradients vanish when inputs grow: what the rules call saturating and codegen replaces.
SATURATING_ACTIVATIONS = frozenset({"Sigmoid", "Tanh", "Hardtanh"})


class ModelSummary(Message):
    """The model the trainer is running, for the UI and the advisor."""

    class_name: str
    source_path: str
    total_params: int
    trainable_params: int
    modules: tuple[ModuleInfo, ...]
    activations: tuple[str, ...] = ()  # distinct activation types present: "ReLU", "Sigmoid"
    has_normalization: bool = False
    has_residual: bool = False  # best effort: a skip connection was seen in forward


# --------------------------------------------------------------------------- commands (parent -> trainer)


class Pause(Message):
    type: Literal["pause"] = "pause"
    # Rank 0's own pause at an epoch's end (`TrainerSpec.hold_at_epoch_end`), shared with the other ranks.
    at_epoch_end: bool = Field(default=False, exclude_if=_unset)


class Resume(Message):
    type: Literal["resume"] = "resume"


class Stop(Message):
    """Finish the current step, write a checkpoint, emit `Finished`, exit."""

    type: Literal["stop"] = "stop"
    checkpoint: bool = True


class SetHParams(Message):
    """Change hyperparameters between steps; only the fields given change."""

    type: Literal["set_hparams"] = "set_hparams"
    changes: dict[str, float | int | str | None]
    round: int | None = None


class SwapModel(Message):
    """Load a new model file and carry over every parameter whose name and shape match.

    `carry_weights=False` carries nothing: the new model trains from its own initialisation
    (for a change that is the initialisation, which carried weights would undo).
    """

    type: Literal["swap_model"] = "swap_model"
    model: ModelRef
    round: int | None = None
    carry_weights: bool = True


class CheckpointNow(Message):
    type: Literal["checkpoint_now"] = "checkpoint_now"


class EvaluateNow(Message):
    type: Literal["evaluate_now"] = "evaluate_now"


Command = Annotated[
    Union[Pause, Resume, Stop, SetHParams, SwapModel, CheckpointNow, EvaluateNow],
    Field(discriminator="type"),
]


# --------------------------------------------------------------------------- events (trainer -> parent)


class ForwardContract(Message):
    """How the trainer calls the model and reads its result, as its forward check found them.

    The advisor's proposals keep it, and the sandbox checks that they do: the user's own code
    (a sampling loop, their own trainer) calls forward and unpacks its result the same way.
    """

    form: str  # model_outputs.OutputForm: "tensor", "(logits, loss)", "(loss, logits)", "(logits,)", "dict", "object"
    passes_targets: bool  # forward(idx, targets=None): the targets go in


class RunStarted(Message):
    """First event of a trainer: what runs where, with which hyperparameters."""

    type: Literal["run_started"] = "run_started"
    run_id: str
    device: str  # "cpu", "cuda:0", "cuda x4"
    world_size: int = 1
    data: DataSpec
    model: ModelSummary
    hparams: HParams
    resumed_from_epoch: int | None = None
    time: float  # unix seconds
    # How forward is called and read: "tensor", "(logits, loss) tuple, targets passed to forward", ...
    output_form: str = "tensor"
    ignored_hooks: tuple[str, ...] = ()  # methods the model defines that copilot does not call (configure_optimizers)
    forward_contract: ForwardContract | None = None  # None in runs recorded before it was


class NonFinite(Message):
    """Where a NaN or infinity first appeared in a step."""

    where: Literal["loss", "gradient", "weight"]
    module: str | None = None  # first module in forward order, None for the loss


class StepRecord(Message):
    """Metrics of one logged step (every `log_every` steps), measured before any clipping."""

    epoch: int
    step: int  # global optimizer step
    loss: float
    accuracy: float | None
    lr: float
    samples_per_sec: float
    device_memory_mb: float | None = None
    total_grad_norm: float
    per_module_grad_norm: dict[str, float] = Field(default_factory=dict)
    per_module_update_ratio: dict[str, float] = Field(default_factory=dict)
    nonfinite: NonFinite | None = None


class StepBatch(Message):
    """Logged steps coalesced into one message, so the parent gets ~20 messages a second at most."""

    type: Literal["steps"] = "steps"
    records: tuple[StepRecord, ...]
    attempt: int = 1  # which start of the trainer measured them (see copilot/metrics_file.py)


class ActivationStats(Message):
    """Dead ReLU units and saturated sigmoid/tanh outputs per layer, sampled at a lower interval."""

    type: Literal["activations"] = "activations"
    epoch: int
    step: int
    dead_fraction: dict[str, float] = Field(default_factory=dict)
    saturated_fraction: dict[str, float] = Field(default_factory=dict)


class EpochSummary(Message):
    type: Literal["epoch"] = "epoch"
    epoch: int  # 1-based number of the epoch just finished
    step: int
    train_loss: float
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    initial_loss: float | None = None  # loss of the run's first step
    expected_initial_loss: float | None = None  # ln(classes) for a classifier
    lr: float
    samples_per_sec: float
    duration_s: float  # training and validation; the time it stood paused is not counted
    round: int = 0
    attempt: int = 1  # which start of the trainer measured it (see copilot/metrics_file.py)


class Evaluated(Message):
    """Answer to `EvaluateNow`: validation metrics outside the epoch rhythm."""

    type: Literal["evaluated"] = "evaluated"
    epoch: int
    step: int
    val_loss: float
    val_accuracy: float | None


class LogLine(Message):
    type: Literal["log"] = "log"
    level: Literal["debug", "info", "warning", "error"] = "info"
    message: str
    time: float


ErrorKind = Literal["load", "data", "forward", "shape", "nonfinite", "oom", "runtime", "killed", "config", "environment", "disk", "stuck"]
# Errors no change to the model or its hyperparameters can fix: an invalid setting, a data
# set that cannot be read, the machine's set-up (a package that fails to import, no GPU, a
# full disk). Their fix is the error's own hint; the advisor is not asked about them.
NOT_MODEL_ERRORS: frozenset[str] = frozenset({"config", "data", "environment"})


class TrainerError(Message):
    """Something stopped training. `hint` is set when the user can fix it."""

    type: Literal["error"] = "error"
    kind: ErrorKind
    message: str  # one line
    hint: str = ""
    traceback: str = ""  # full text, for the log pane and the advisor
    epoch: int | None = None
    step: int | None = None
    user_error: bool = True  # exit 2 (user can fix) vs 1 (internal)


class CheckpointWritten(Message):
    type: Literal["checkpoint"] = "checkpoint"
    path: str
    epoch: int
    step: int
    round: int | None = None  # the round whose model it holds (None from trainers before rounds were recorded)


class TrialOutputs(Message):
    """A trial wrote its model's outputs on the fixed validation samples (a tensor file)."""

    type: Literal["trial_outputs"] = "trial_outputs"
    trial_step: int  # steps since the trial forked from the run
    step: int  # global optimizer step
    path: str


class HParamsApplied(Message):
    type: Literal["hparams_applied"] = "hparams_applied"
    hparams: HParams
    step: int
    round: int | None = None
    # Under several ranks, the step each rank applied the change at, in rank order: all the same.
    # Left out of the JSON when empty, so a single process writes what it always wrote.
    steps_per_rank: tuple[int, ...] = Field(default=(), exclude_if=_unset)


class ModelSwapped(Message):
    type: Literal["model_swapped"] = "model_swapped"
    model: ModelSummary
    transferred: int  # parameters and buffers copied from the old model
    total: int  # parameters and buffers in the new model
    step: int
    round: int | None = None
    # Under several ranks, each rank's sum of its new weights, in rank order: equal, or the swap failed.
    weight_checksums: tuple[float, ...] = Field(default=(), exclude_if=_unset)
    forward_contract: ForwardContract | None = None  # the model trained from here on; None in older runs


class StateChanged(Message):
    type: Literal["state"] = "state"
    state: Literal["running", "paused", "evaluating", "stopping"]
    # Paused by the trainer itself at an epoch's end, until the session has decided whether the
    # advisor looks now (`TrainerSpec.hold_at_epoch_end`): the session's hold, not the user's pause.
    held_at_epoch_end: bool = Field(default=False, exclude_if=_unset)


class Finished(Message):
    type: Literal["finished"] = "finished"
    reason: Literal["epochs_done", "stopped", "error"]
    epoch: int
    step: int


class Rewound(Message):
    """The run went back to an earlier point (a change applied from before a blow-up): whatever
    earlier attempts recorded after `step` is no longer the run's. Written by the session, not a trainer."""

    type: Literal["rewound"] = "rewound"
    step: int
    attempt: int  # the first attempt of the run's line from `step` on


Event = Annotated[
    Union[
        RunStarted,
        StepBatch,
        ActivationStats,
        EpochSummary,
        Evaluated,
        LogLine,
        TrainerError,
        CheckpointWritten,
        TrialOutputs,
        HParamsApplied,
        ModelSwapped,
        StateChanged,
        Finished,
        Rewound,
    ],
    Field(discriminator="type"),
]

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
_COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)


def parse_event(data: str | bytes | dict) -> Event:
    """Parse one event from a JSON line or a dict (as read back from `metrics.jsonl`)."""
    if isinstance(data, dict):
        return _EVENT_ADAPTER.validate_python(data)
    return _EVENT_ADAPTER.validate_json(data)


def parse_command(data: str | bytes | dict) -> Command:
    if isinstance(data, dict):
        return _COMMAND_ADAPTER.validate_python(data)
    return _COMMAND_ADAPTER.validate_json(data)


# The trainer's life as its events tell it: a run the user stopped is "stopped"; one whose
# epochs were spent (or whose finish was accepted, which ends its epochs) is "finished"; one
# whose trainer died (an error, a kill, the OOM killer) is "crashed".
TrainerState = Literal["starting", "running", "paused", "finished", "stopped", "crashed"]
ENDED_STATES: tuple[TrainerState, ...] = ("finished", "stopped", "crashed")
_STATE_AT_FINISH: dict[str, TrainerState] = {"epochs_done": "finished", "stopped": "stopped", "error": "crashed"}


def trainer_state_after(state: TrainerState, event: Event) -> TrainerState:
    """The trainer's state once `event` arrived: the one derivation the session and the app share.

    `StateChanged` to "evaluating" or "stopping" is a passing activity within "running", not a
    state of its own (the status bar shows it beside the state).
    """
    if isinstance(event, RunStarted):
        return "running"
    if isinstance(event, StateChanged) and event.state in ("running", "paused"):
        return event.state
    if isinstance(event, TrainerError) and event.kind in ("killed", "oom"):  # a death notice: no Finished follows
        return "crashed"
    if isinstance(event, Finished):
        return _STATE_AT_FINISH[event.reason]
    return state


def event_to_json(event: Message) -> str:
    """One line of `metrics.jsonl`; NaN and infinity are kept as the JSON constants Python reads back."""
    return event.model_dump_json()
