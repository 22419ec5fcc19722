"""The search space of a tune: which hyperparameters the study varies, and over what.

Every dimension is a field of `HParams` and lies within its bounds (`hparam_bounds`):
learning rate and weight decay on a log scale, momentum on a linear one, optimizer,
schedule, clipping and batch size as choices; the batch sizes are the run's own times
1/4 to 4 (a budget counted in samples makes them comparable), no larger than the
training set. Epochs are the run's budget, not a hyperparameter of a short trial.

A TOML file (`copilot tune --space FILE`) narrows or widens a dimension; one left out keeps
its default, and one choice fixes it:

    [lr]
    low = 1e-4
    high = 0.3
    [optimizer]
    choices = ["SGD", "Adam"]
    [grad_clip]
    choices = ["none", 1.0]   # TOML has no null: "none" is no clipping

A bad file is one `ConfigError` naming the table and the fix. The space is plain data
(pydantic), stored with its study so a resumed tune searches the same space; optuna's
distributions are made from it in `study.py`. No torch, no I/O but reading the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Union, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from copilot.errors import ConfigError
from copilot.events import HParams, OptimizerName, ScheduleName, hparam_bounds

Choice = Union[float, int, str, None]
NO_CLIP = "none"  # how a TOML file writes "no gradient clipping"
# The default window of each continuous dimension: the bounds of HParams are far wider (lr up to 10).
DEFAULT_RANGES: dict[str, tuple[float, float, bool]] = {
    "lr": (1e-4, 1.0, True),
    "weight_decay": (1e-6, 1e-2, True),
    "momentum": (0.0, 0.99, False),
}
DEFAULT_CLIPS: tuple[Choice, ...] = (None, 0.5, 1.0, 5.0)
BATCH_FACTORS = (0.25, 0.5, 1, 2, 4)  # of the run's batch size
_WHERE = "see `copilot tune --help` for the space file's format"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FloatRange(Frozen):
    low: float
    high: float
    log: bool


class Choices(Frozen):
    choices: tuple[Choice, ...]


Dimension = Union[FloatRange, Choices]


class SearchSpace(Frozen):
    """The dimensions a study varies, by hyperparameter name, in `HParams`'s field order."""

    dimensions: dict[str, Dimension]

    def nearest(self, hparams: HParams) -> dict[str, Choice]:
        """`hparams` as a point of this space: what an enqueued trial is recorded at.

        A value outside a range is clamped into it (weight decay 0 on a log scale is its low
        end), one not among the choices is the closest number, else the first choice: the
        user's narrowed space is kept, and an enqueued point must lie in the space its
        sampler learns from.
        """
        point: dict[str, Choice] = {}
        for name, dimension in self.dimensions.items():
            value = getattr(hparams, name)
            if isinstance(dimension, FloatRange):
                point[name] = min(max(value, dimension.low), dimension.high)
            else:
                point[name] = _closest_choice(value, dimension.choices)
        return point


def _closest_choice(value: Choice, choices: tuple[Choice, ...]) -> Choice:
    if value in choices:
        return value
    numbers = [choice for choice in choices if isinstance(choice, (int, float)) and not isinstance(choice, bool)]
    if isinstance(value, (int, float)) and numbers:
        return min(numbers, key=lambda choice: abs(choice - value))
    return choices[0]


def default_space(current: HParams, train_size: int) -> SearchSpace:
    """The space for a run now at `current`, trained on `train_size` samples."""
    dimensions: dict[str, Dimension] = {}
    for name in HParams.model_fields:
        if name in DEFAULT_RANGES:
            low, high, log = DEFAULT_RANGES[name]
            dimensions[name] = FloatRange(low=low, high=high, log=log)
        elif name == "optimizer":
            dimensions[name] = Choices(choices=get_args(OptimizerName))
        elif name == "schedule":
            dimensions[name] = Choices(choices=get_args(ScheduleName))
        elif name == "grad_clip":
            dimensions[name] = Choices(choices=DEFAULT_CLIPS)
        elif name == "batch_size":
            sizes = {max(1, round(current.batch_size * factor)) for factor in BATCH_FACTORS}
            dimensions[name] = Choices(choices=tuple(sorted(size for size in sizes if size <= max(train_size, current.batch_size))))
    return SearchSpace(dimensions=dimensions)


def load_space(path: Path, base: SearchSpace) -> SearchSpace:
    """`base` with the dimensions the TOML file at `path` sets; a `ConfigError` for a bad file."""
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the space file {path}: {exc.strerror or exc}", "give a readable TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the space file {path} is not valid TOML: {exc}", _WHERE) from None
    dimensions = dict(base.dimensions)
    for name, table in tables.items():
        if name not in base.dimensions:
            raise ConfigError(f"the space file {path} names '{name}', which a tune does not vary", f"use one of: {', '.join(base.dimensions)}")
        if not isinstance(table, dict):
            raise ConfigError(f"'{name}' in the space file {path} is not a table", f"write it as [{name}] with low/high or choices")
        dimensions[name] = _dimension(name, table, base.dimensions[name], path)
    return SearchSpace(dimensions=dimensions)


def _dimension(name: str, table: dict[str, object], default: Dimension, path: Path) -> Dimension:
    where = f"[{name}] in the space file {path}"
    if isinstance(default, Choices):
        if set(table) != {"choices"} or not isinstance(table["choices"], list) or not table["choices"]:
            raise ConfigError(f"{where} needs exactly one key, choices = [...], with at least one value", _WHERE)
        choices = tuple(None if value == NO_CLIP and name == "grad_clip" else value for value in table["choices"])
        for value in choices:
            _check_value(name, value, where)
        return Choices(choices=tuple(dict.fromkeys(choices)))
    unknown = set(table) - {"low", "high", "log"}
    if unknown or not {"low", "high"} <= set(table):
        raise ConfigError(f"{where} needs low and high (and may set log = true|false)", _WHERE)
    low, high, log = table["low"], table["high"], table.get("log", default.log)
    if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (low, high)) or not isinstance(log, bool):
        raise ConfigError(f"{where}: low and high must be numbers and log true or false", _WHERE)
    for value in (low, high):
        _check_value(name, value, where)
    if not low < high:
        raise ConfigError(f"{where}: low {low} is not below high {high}", "give low < high, or one value as choices = [...]")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0 (it is {low})", "give low > 0, or set log = false")
    return FloatRange(low=float(low), high=float(high), log=log)


def _check_value(name: str, value: object, where: str) -> None:
    """A value `HParams` accepts for `name`, else a `ConfigError` naming its bounds."""
    try:
        HParams.model_validate({name: value})
    except ValidationError:
        bounds = ", ".join(f"{kind} {limit:g}" for kind, limit in hparam_bounds(name).items())
        allowed = f" ({bounds})" if bounds else ""
        raise ConfigError(f"{where}: {value!r} is not a valid {name}{allowed}", _WHERE) from None
    if name == "batch_size" and isinstance(value, float):
        raise ConfigError(f"{where}: batch size {value!r} is not a whole number", _WHERE)

