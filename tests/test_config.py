"""Settings: bad values in copilot.toml or the COPILOT_* environment are one `ConfigError` naming them."""

from __future__ import annotations

from pathlib import Path

import pytest

from copilot.config import load_settings
from copilot.errors import ConfigError


@pytest.mark.parametrize("line", ["train_size = 0", "train_size = -5", "val_size = 0", "channels = 0"])
def test_data_sizes_below_one_are_refused(tmp_path: Path, line: str) -> None:
    (tmp_path / "copilot.toml").write_text(f"[data]\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config_dir=tmp_path)
    assert f"data.{line.split()[0]}" in caught.value.message and "greater than or equal to 1" in caught.value.message


@pytest.mark.parametrize(
    ("line", "bound"),
    [("image_size = 4", "greater than or equal to 8"), ("image_size = 1024", "less than or equal to 512"),
     ("channels = 5", "less than or equal to 4")],
)  # fmt: skip
def test_image_sizes_and_channels_out_of_bounds_are_refused(tmp_path: Path, line: str, bound: str) -> None:
    (tmp_path / "copilot.toml").write_text(f"[data]\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config_dir=tmp_path)
    assert f"data.{line.split()[0]}" in caught.value.message and bound in caught.value.message


def test_an_mnist_sized_shapes_set_is_two_lines_of_copilot_toml(tmp_path: Path) -> None:
    (tmp_path / "copilot.toml").write_text("[data]\nchannels = 1\nimage_size = 28\n", encoding="utf-8")
    data = load_settings(config_dir=tmp_path).data
    assert (data.dataset, data.channels, data.image_size) == ("shapes", 1, 28)


def test_a_malformed_environment_value_names_the_variable_not_the_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COPILOT_TRAIN__HPARAMS", "{lr: 1")
    with pytest.raises(ConfigError) as caught:
        load_settings(config_dir=tmp_path)
    assert caught.value.message.startswith("cannot parse COPILOT_TRAIN__HPARAMS: ")
    assert "copilot.toml" not in caught.value.message and "JSON" in caught.value.hint


def test_malformed_toml_still_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "copilot.toml").write_text("[data\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config_dir=tmp_path)
    assert "copilot.toml" in caught.value.message and caught.value.hint == "fix the TOML syntax"


def test_config_fields_in_toml_tables_or_dotted_keys_meet_flags_as_dotted_arguments(tmp_path: Path) -> None:
    (tmp_path / "copilot.toml").write_text(
        "[model.args]\nwidth = 8\nconfig.n_layer = 2\n\n[model.args.head]\nsize = 4\n", encoding="utf-8"
    )
    settings = load_settings({"model": {"args": {"config.n_layer": 3}}}, config_dir=tmp_path)
    assert settings.model.args == {"width": 8, "config.n_layer": 3, "head.size": 4}  # the flag wins
