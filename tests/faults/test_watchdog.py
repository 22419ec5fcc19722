"""A model that never returns: the watchdog names the stage and the frame it is stuck in, in
one `error:`/`hint:` pair, and leaves every thread's stack in events.log."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from copilot.cli import main
from tests.training.conftest import TINY_CNN

CONFIG = """
[data]
train_size = 48
val_size = 16

[train]
watchdog_s = 10
"""
# Far above what an honest stage of this tiny model takes even on a loaded 2-core machine
# (the first forward has taken over 2 s there), so only the stuck stage trips it.
FOREVER = "while True:\n    pass\n"


def stuck_at_import() -> str:
    return textwrap.dedent(TINY_CNN) + "\n\n" + FOREVER


def stuck_in_forward(from_step: int) -> str:
    """The model's forward never returns from its `from_step`-th training call (0: the first forward)."""
    code = textwrap.dedent(TINY_CNN).replace(
        "    def forward(self, x):\n",
        "    calls = 0\n\n"
        "    def forward(self, x):\n"
        f"        type(self).calls += self.training\n"
        f"        while type(self).calls >= {from_step} and (self.training or {from_step} == 0):\n"
        "            pass\n",
    )
    assert code != textwrap.dedent(TINY_CNN)
    return code


@pytest.mark.parametrize(
    ("code", "stage", "frame"),
    [
        (stuck_at_import(), "import", "in <module>"),
        (stuck_in_forward(0), "first forward", "in forward"),
        (stuck_in_forward(3), "step 3", "in forward"),
    ],
    ids=["import", "first-forward", "step-3"],
)
def test_a_model_that_never_returns_is_named_with_its_stage_and_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], code: str, stage: str, frame: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "copilot.toml").write_text(CONFIG, encoding="utf-8")
    (tmp_path / "hangs.py").write_text(code, encoding="utf-8")
    assert main(["train", "hangs.py", "--device", "cpu", "--epochs", "2", "--run-name", "hangs"]) == 2
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: the model is stuck in {stage}: no progress for "), err
    assert "hangs.py:" in lines[0] and lines[0].endswith(frame), err
    assert lines[1].startswith("hint: every thread's stack is in events.log"), err
    log = (tmp_path / ".copilot" / "runs" / "hangs" / "events.log").read_text(encoding="utf-8")
    assert "hangs.py" in log and "most recent call first" in log, "faulthandler's dump of the stuck stack"
