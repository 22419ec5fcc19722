"""The model reference: parsed once from the command line, passed whole, saved in session.json,
and read back from the session.json of a run started before it existed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from copilot.errors import ModelLoadError
from copilot.events import ModelRef, SwapModel
from copilot.training.launcher import TrainerSpec, model_from_command_line, saved_model


@pytest.mark.parametrize(
    ("text", "path", "name"),
    [
        ("models/net.py:Net", "models/net.py", "Net"),
        ("models/net.py", "models/net.py", None),
        ("run:2/net.py", "run:2/net.py", None),  # a colon in a folder's name is the path's
        ("net.py:not-a-name", "net.py:not-a-name", None),  # no identifier after the colon: a path
        ("weights:Net", "weights:Net", None),  # a pick follows a .py file only
    ],
)
def test_a_reference_splits_where_the_trainer_would(text: str, path: str, name: str | None) -> None:
    ref = ModelRef.parse(text, {"width": 8})
    assert (ref.path, ref.name, ref.args) == (Path(path), name, {"width": 8})


def test_another_copy_of_the_file_keeps_the_pick_and_the_arguments(tmp_path: Path) -> None:
    ref = ModelRef.parse("net.py:Net", {"config.n_layer": 2})
    moved = ref.at(tmp_path / "worktree" / "net.py")
    assert (moved.path, moved.name, moved.args) == (tmp_path / "worktree" / "net.py", "Net", {"config.n_layer": 2})
    assert SwapModel.model_validate_json(SwapModel(model=moved).model_dump_json()).model == moved


def test_the_command_line_refuses_a_missing_file_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model file not found") as caught:
        model_from_command_line(str(tmp_path / "nowhere.py:Net"), {})
    assert "check the path" in caught.value.hint
    (tmp_path / "net.py").write_text("", encoding="utf-8")
    assert model_from_command_line(f"{tmp_path / 'net.py'}:Net", {"width": 4}) == ModelRef(path=tmp_path / "net.py", name="Net", args={"width": 4})


def test_a_session_json_from_before_the_reference_still_resumes_and_is_written_anew(tmp_path: Path) -> None:
    older = {"run_folder": str(tmp_path / "run"), "model_spec": f"{tmp_path / 'net.py'}:Net", "model_args": {"width": 4, "bias": False}}
    spec = TrainerSpec.model_validate_json(json.dumps(older))
    assert spec.model == ModelRef(path=tmp_path / "net.py", name="Net", args={"width": 4, "bias": False})
    written = json.loads(spec.model_dump_json())
    assert "model_spec" not in written and "model_args" not in written
    assert written["model"] == {"path": str(tmp_path / "net.py"), "name": "Net", "args": {"width": 4, "bias": False}}
    assert TrainerSpec.model_validate_json(spec.model_dump_json()) == spec
    assert saved_model(older) == saved_model(written) == spec.model


def test_a_session_json_that_names_no_model_that_reads_gives_none() -> None:
    assert saved_model({}) is None
    assert saved_model({"model": {"path": "net.py", "args": {"width": [1, 2]}}}) is None
