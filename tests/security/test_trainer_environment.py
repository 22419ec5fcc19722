"""The trainer's environment is the allow-list plus `train.pass_env`, always, as the kernel shows it.

`/proc/<pid>/environ` is read from outside the trainer: it holds what the process was
exec'd with, which is what code inside it can read back, whatever Python's os.environ says.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from copilot.config import DataSettings, TrainSettings
from copilot.events import ModelRef, StepBatch
from copilot.run_folder import RunFolder
from copilot.training.launcher import TrainerProcess, TrainerSpec, trainer_environment

SECRET = "canary-secret-7f3a"
USER_ENVIRONMENT = {
    "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ACCESS_KEY_ID": SECRET, "OPENAI_API_KEY": SECRET, "HF_TOKEN": SECRET,
    "GITHUB_TOKEN": SECRET, "WANDB_API_KEY": "wandb-key", "CUDA_VISIBLE_DEVICES": "", "HF_HOME": "/data/hf",
    "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8", "HOME": "/home/user", "PATH": "/usr/bin",
}  # fmt: skip
TINY_MODEL = """
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 10)

        def forward(self, x):
            return self.fc(x.mean((2, 3)))
"""


def spec_for(run_folder: Path, model: Path, *, walled: bool, pass_env: list[str]) -> TrainerSpec:
    return TrainerSpec(
        run_folder=run_folder,
        model=ModelRef(path=model),
        data=DataSettings(train_size=32, val_size=16),
        train=TrainSettings(device="cpu", log_every=1, pass_env=pass_env, hparams={"epochs": 1000, "batch_size": 16}),
        walled=walled,
    )


@pytest.mark.parametrize("walled", [False, True])
def test_the_environment_is_built_from_the_allow_list(tmp_path: Path, walled: bool) -> None:
    spec = spec_for(tmp_path / "run", tmp_path / "model.py", walled=walled, pass_env=["WANDB_API_KEY"])
    environment = trainer_environment(spec, USER_ENVIRONMENT)
    assert SECRET not in environment.values()
    assert environment["WANDB_API_KEY"] == "wandb-key"  # named by the user in train.pass_env
    assert environment["HF_HOME"] == "/data/hf" and environment["CUDA_VISIBLE_DEVICES"] == "" and environment["LC_ALL"]
    expected_home = str(RunFolder(tmp_path / "run").trainer_home) if walled else "/home/user"
    assert environment["HOME"] == expected_home
    assert environment["TMPDIR"] == str(RunFolder(tmp_path / "run").trainer_scratch)


@pytest.mark.parametrize("walled", [False, True])
def test_the_trainer_process_holds_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, walled: bool) -> None:
    for name, value in USER_ENVIRONMENT.items():
        if name not in ("HOME", "PATH"):
            monkeypatch.setenv(name, value)
    model = tmp_path / "model.py"
    model.write_text(textwrap.dedent(TINY_MODEL), encoding="utf-8")
    trainer = TrainerProcess(spec_for(tmp_path / "run", model, walled=walled, pass_env=["WANDB_API_KEY"]))
    trainer.start()
    try:
        deadline = time.monotonic() + 120
        while not any(isinstance(event, StepBatch) for event in trainer.poll(timeout=0.2)):
            assert trainer.is_alive and time.monotonic() < deadline
        assert trainer.pid is not None
        environ = Path(f"/proc/{trainer.pid}/environ").read_bytes().decode()
    finally:
        trainer.stop(timeout=60)
    assert SECRET not in environ
    assert "WANDB_API_KEY=wandb-key" in environ.split("\0")


def test_walls_refuse_a_process_that_already_runs_a_thread() -> None:
    code = textwrap.dedent(
        """
        import threading
        from copilot import walls
        threading.Thread(target=threading.Event().wait, daemon=True).start()
        try:
            walls.apply_walls(walls.WallPlan(write_roots=()))
        except walls.WallsError as error:
            print("refused:", error)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("refused: walls must be applied before any thread exists")
