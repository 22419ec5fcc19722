"""Training on torch.distributed for real: two gloo ranks on the CPU, started by torchrun's elastic agent.

Each test starts the ranks the way the app does (`TrainerProcess` with `train.launch`) and
reads what rank 0 reports: global gradient norms equal to one process's on the same global
batch, commands landing at the same step on both ranks, identical weights after a swap, a
killed rank named in one line with a run that resumes, and two "nodes" meeting through a
c10d rendezvous on 127.0.0.1.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from copilot.config import LaunchSettings
from copilot.events import (
    CheckpointWritten,
    Event,
    Finished,
    HParamsApplied,
    LogLine,
    ModelRef,
    ModelSwapped,
    Pause,
    RunStarted,
    SetHParams,
    StateChanged,
    StepBatch,
    SwapModel,
    TrainerError,
)
from copilot.run_folder import RunFolder
from copilot.training.checkpoints import load_checkpoint
from copilot.training.launcher import TrainerProcess, TrainerSpec
from copilot.training.ranks import RANK_ENTRY_MODULE
from tests.training.conftest import TINY_CNN_WIDER_HEAD, collect_until, of_type, run_to_end, tiny_spec

# No batch norm and no dropout: two ranks' averaged gradients are exactly one process's on the whole batch.
PLAIN_CNN = """
import torch
from torch import nn

HPARAMS = {"optimizer": "SGD", "lr": 0.05, "momentum": 0.9, "batch_size": 16, "epochs": 1}


class PlainCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
"""


def finished(event: Event) -> bool:
    return isinstance(event, Finished)


def two_ranks(spec: TrainerSpec, **launch: object) -> TrainerSpec:
    settings = LaunchSettings.model_validate({"nproc_per_node": 2, **launch})
    return spec.model_copy(update={"train": spec.train.model_copy(update={"launch": settings})})


def records(events: list[Event]) -> dict[int, object]:
    return {record.step: record for batch in of_type(events, StepBatch) for record in batch.records}


def run_ranks(spec: TrainerSpec) -> list[Event]:
    trainer = TrainerProcess(spec)
    trainer.start()
    try:
        return collect_until(trainer, finished)
    finally:
        trainer.stop(timeout=60)


def rank_pids(agent_pid: int) -> dict[int, int]:
    """The agent's ranks: {rank: pid}, read from /proc (each rank's RANK variable)."""
    found: dict[int, int] = {}
    for child in Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split():
        environment = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        rank = next(entry for entry in environment if entry.startswith(b"RANK="))
        found[int(rank.split(b"=")[1])] = int(child)
    return found


def test_two_ranks_measure_the_gradient_norms_one_process_measures_on_the_same_global_batch(tmp_path: Path, write_model) -> None:
    model = write_model("plain_cnn.py", PLAIN_CNN)
    single = run_to_end(tiny_spec(tmp_path / "single", model))
    ranked = run_ranks(two_ranks(tiny_spec(tmp_path / "ranked", model)))

    started = of_type(ranked, RunStarted)[0]
    assert started.world_size == 2 and started.device == "cpu x2"
    alone, together = records(single), records(ranked)
    assert sorted(together) == sorted(alone) == [1, 2, 3]  # 48 samples, a global batch of 16
    for step, record in together.items():
        assert record.loss == pytest.approx(alone[step].loss, rel=1e-5)
        assert record.accuracy == pytest.approx(alone[step].accuracy)
        assert record.per_module_grad_norm.keys() == alone[step].per_module_grad_norm.keys()
        for name, norm in record.per_module_grad_norm.items():
            assert norm == pytest.approx(alone[step].per_module_grad_norm[name], rel=1e-4), (step, name)
    assert any("are global; activation statistics are rank 0's" in line.message for line in of_type(ranked, LogLine))
    assert not of_type(ranked, TrainerError) and of_type(ranked, Finished)[0].reason == "epochs_done"


def test_a_hyperparameter_change_and_a_swap_land_at_the_same_step_on_both_ranks(tmp_path: Path, tiny_cnn: Path, write_model) -> None:
    head = write_model("head.py", TINY_CNN_WIDER_HEAD)
    trainer = TrainerProcess(two_ranks(tiny_spec(tmp_path / "run", tiny_cnn, log_every=2, hparams={"epochs": 1000})))
    trainer.start()
    try:
        collect_until(trainer, lambda event: isinstance(event, StepBatch))
        trainer.send(SetHParams(changes={"lr": 0.001}, round=1))
        applied = of_type(collect_until(trainer, lambda event: isinstance(event, HParamsApplied)), HParamsApplied)[0]
        trainer.send(SwapModel(model=ModelRef(path=head), round=2))
        swapped = of_type(collect_until(trainer, lambda event: isinstance(event, ModelSwapped)), ModelSwapped)[0]
        after = collect_until(trainer, lambda event: isinstance(event, StepBatch) and event.records[-1].step > swapped.step)
    finally:
        ending = trainer.stop(timeout=60)
    # Commands are agreed at logging intervals: the step is one of them, the same on both ranks.
    assert applied.steps_per_rank == (applied.step, applied.step) and applied.step % 2 == 0
    assert applied.hparams.lr == 0.001
    assert swapped.model.class_name == "TinyCNNHead" and swapped.step % 2 == 0
    assert len(swapped.weight_checksums) == 2 and swapped.weight_checksums[0] == swapped.weight_checksums[1]
    assert math.isfinite(swapped.weight_checksums[0])
    assert all(record.lr == 0.001 for batch in of_type(after, StepBatch) for record in batch.records if record.step > swapped.step)
    assert of_type(ending, Finished)[0].reason == "stopped" and not of_type(ending, TrainerError)


def test_a_killed_rank_ends_the_job_in_one_line_and_the_run_resumes_on_any_number_of_ranks(tmp_path: Path, tiny_cnn: Path) -> None:
    spec = two_ranks(tiny_spec(tmp_path / "run", tiny_cnn, log_every=4, hparams={"epochs": 1000}))
    trainer = TrainerProcess(spec)
    trainer.start()
    collect_until(trainer, lambda event: isinstance(event, CheckpointWritten))
    assert trainer.pid is not None
    os.kill(rank_pids(trainer.pid)[1], signal.SIGKILL)
    error = of_type(collect_until(trainer, lambda event: isinstance(event, TrainerError)), TrainerError)[-1]
    trainer.stop(timeout=60)

    assert error.message.startswith("rank 1 failed (killed by SIGKILL)") and "\n" not in error.message
    assert "copilot resume run" in error.hint and not error.user_error
    checkpoint = RunFolder(spec.run_folder).latest_checkpoint()
    assert checkpoint is not None and load_checkpoint(checkpoint).epoch >= 1  # intact, and loads in one process

    # "auto" on a machine without a GPU is one process: the two ranks' checkpoint continues there.
    resumed = spec.model_copy(
        update={
            "resume_from": checkpoint,
            "train": spec.train.model_copy(update={"hparams": {"epochs": load_checkpoint(checkpoint).epoch + 1}, "launch": LaunchSettings(nproc_per_node="auto")}),
        }
    )
    events = run_ranks(resumed)
    started = of_type(events, RunStarted)[0]
    assert started.world_size == 1 and started.resumed_from_epoch == load_checkpoint(checkpoint).epoch
    assert of_type(events, Finished)[0].reason == "epochs_done" and not of_type(events, TrainerError)


# Rank 1 alone fails a few steps in; rank 0 only loses it in the next collective.
FAILS_ON_RANK_1 = PLAIN_CNN + """

import os


class FailsOnRank1(PlainCNN):
    calls = 0

    def forward(self, x):
        FailsOnRank1.calls += 1
        if os.environ["RANK"] == "1" and FailsOnRank1.calls > 6:
            raise ValueError("rank one gave up")
        return super().forward(x)
"""


def test_an_exception_on_one_rank_is_named_with_its_rank_not_as_the_lost_collective_it_causes(tmp_path: Path, write_model) -> None:
    model = write_model("fails.py", FAILS_ON_RANK_1)
    trainer = TrainerProcess(two_ranks(tiny_spec(tmp_path / "run", f"{model}:FailsOnRank1", hparams={"epochs": 1000})))
    trainer.start()
    try:
        events = collect_until(trainer, lambda event: isinstance(event, TrainerError))
    finally:
        ending = trainer.stop(timeout=60)
    errors = of_type(events + ending, TrainerError)
    assert len(errors) == 1 and not of_type(events + ending, Finished)
    assert errors[0].message == "rank 1 failed (ValueError: rank one gave up); the elastic agent ended every rank"


def test_with_max_restarts_the_agent_restarts_every_rank_from_the_last_checkpoint(tmp_path: Path, tiny_cnn: Path) -> None:
    spec = two_ranks(tiny_spec(tmp_path / "run", tiny_cnn, log_every=4, hparams={"epochs": 3}), max_restarts=1)
    trainer = TrainerProcess(spec)
    trainer.start()
    try:
        before = collect_until(trainer, lambda event: isinstance(event, CheckpointWritten))
        trainer.send(Pause())  # held still, so the kill lands before the run could end
        before += collect_until(trainer, lambda event: isinstance(event, StateChanged) and event.state == "paused")
        assert trainer.pid is not None
        os.kill(rank_pids(trainer.pid)[1], signal.SIGKILL)
        events = collect_until(trainer, finished)
    finally:
        trainer.stop(timeout=60)
    # How far it trained before the pause landed depends on the machine: the last checkpoint it wrote is where it goes on.
    last = of_type(before, CheckpointWritten)[-1]
    restarted = [event for event in of_type(events, LogLine) if "restarted every rank (restart 1)" in event.message]
    assert restarted and restarted[0].message.endswith(Path(last.path).name)
    assert of_type(events, RunStarted)[0].resumed_from_epoch == last.epoch
    assert of_type(events, Finished)[0].reason == "epochs_done" and not of_type(events, TrainerError)


def test_a_batch_that_does_not_split_across_the_ranks_is_one_clear_error(tmp_path: Path, tiny_cnn: Path) -> None:
    events = run_ranks(two_ranks(tiny_spec(tmp_path / "run", tiny_cnn, hparams={"batch_size": 15})))
    error = of_type(events, TrainerError)[0]
    assert error.kind == "config" and error.message == "batch size 15 does not split evenly across 2 ranks"
    assert "multiple of 2" in error.hint


def test_two_nodes_meet_through_a_c10d_rendezvous_on_localhost(tmp_path: Path, tiny_cnn: Path) -> None:
    with socket.socket() as probe:  # a free port for the rendezvous store
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = {"nproc_per_node": 1, "nnodes": "2", "rdzv_backend": "c10d", "rdzv_endpoint": f"127.0.0.1:{port}"}
    spec = two_ranks(tiny_spec(tmp_path / "run", tiny_cnn), **launch)
    trainer = TrainerProcess(spec)
    trainer.start()
    # The second node's documented command: plain torchrun on the same (shared) run folder.
    second = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--node-rank=1", "--nproc-per-node=1",
         "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "-m", RANK_ENTRY_MODULE, str(spec.run_folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        events = collect_until(trainer, finished)
    finally:
        trainer.stop(timeout=60)
        assert second.wait(60) == 0
    assert of_type(events, RunStarted)[0].world_size == 2
    assert of_type(events, Finished)[0].reason == "epochs_done" and not of_type(events, TrainerError)
