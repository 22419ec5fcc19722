"""The search space: from `HParams` and the run, narrowed or widened by a TOML file, bad files refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from copilot.errors import ConfigError
from copilot.events import HParams, hparam_bounds
from copilot.tuning.space import Choices, FloatRange, default_space, load_space


def test_the_default_space_varies_every_hparam_but_the_epochs_within_their_bounds() -> None:
    current = HParams(lr=0.1, batch_size=64)
    space = default_space(current, train_size=100)
    assert set(space.dimensions) == set(HParams.model_fields) - {"epochs"}
    for name, dimension in space.dimensions.items():
        values = [dimension.low, dimension.high] if isinstance(dimension, FloatRange) else list(dimension.choices)
        for value in values:
            HParams.model_validate({name: value})  # every end and choice is a valid value
    assert space.dimensions["lr"] == FloatRange(low=1e-4, high=1.0, log=True)
    assert space.dimensions["weight_decay"].log and not space.dimensions["momentum"].log
    # Batch sizes around the run's, none larger than the training set.
    assert space.dimensions["batch_size"] == Choices(choices=(16, 32, 64))
    assert None in space.dimensions["grad_clip"].choices
    assert hparam_bounds("lr")["le"] >= space.dimensions["lr"].high


def test_a_space_file_narrows_and_widens_dimensions_and_leaves_the_rest(tmp_path: Path) -> None:
    base = default_space(HParams(), train_size=10_000)
    file = tmp_path / "space.toml"
    file.write_text('[lr]\nlow = 1e-6\nhigh = 0.3\n[optimizer]\nchoices = ["SGD", "Adam"]\n[grad_clip]\nchoices = ["none", 1.0]\n')
    space = load_space(file, base)
    assert space.dimensions["lr"] == FloatRange(low=1e-6, high=0.3, log=True)  # widened below, narrowed above
    assert space.dimensions["optimizer"] == Choices(choices=("SGD", "Adam"))
    assert space.dimensions["grad_clip"] == Choices(choices=(None, 1.0))
    assert space.dimensions["momentum"] == base.dimensions["momentum"]


def test_enqueued_points_are_recorded_at_their_nearest_point_of_a_narrowed_space(tmp_path: Path) -> None:
    file = tmp_path / "space.toml"
    file.write_text('[lr]\nlow = 0.01\nhigh = 0.3\n[batch_size]\nchoices = [32, 128]\n[optimizer]\nchoices = ["Adam"]\n')
    space = load_space(file, default_space(HParams(), train_size=10_000))
    point = space.nearest(HParams(lr=1e-4, batch_size=48, weight_decay=0.0, optimizer="SGD"))
    assert point["lr"] == 0.01 and point["batch_size"] == 32 and point["optimizer"] == "Adam"
    assert point["weight_decay"] == space.dimensions["weight_decay"].low  # 0 on a log scale: its low end


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[lr]\nlow = 0.5\nhigh = 0.1\n", "low 0.5 is not below high 0.1"),
        ("[lr]\nlow = 1e-3\nhigh = 50\n", "50 is not a valid lr (ge 1e-07, le 10)"),
        ("[weight_decay]\nlow = 0\nhigh = 0.1\n", "a log scale needs low > 0"),
        ("[epochs]\nchoices = [1, 2]\n", "names 'epochs', which a tune does not vary"),
        ("[optimizer]\nchoices = ['Lion']\n", "'Lion' is not a valid optimizer"),
        ("[lr]\nlo = 1e-3\nhigh = 0.1\n", "needs low and high"),
        ("[lr\nlow = 1\n", "is not valid TOML"),
    ],
)
def test_a_bad_space_file_is_one_line_naming_the_problem_and_the_fix(tmp_path: Path, text: str, named: str) -> None:
    file = tmp_path / "space.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_space(file, default_space(HParams(), train_size=1000))
    assert named in raised.value.message and "\n" not in raised.value.message
    assert raised.value.hint
