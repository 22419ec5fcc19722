"""Which rank this trainer is, the process group of the ranks, and what they do together.

A trainer is one process (rank 0 of 1) unless torch.distributed's elastic agent started it
as one of several ranks (`copilot/training/ranks.py`). Then `start_process_group` joins the
group torchrun described in the environment (NCCL on GPUs, gloo on CPUs), `wrap_model`
wraps the model in DDP, and `RankGroup` is the one handle the loop and the worker use to
sum figures across ranks and agree on commands. In a single process every helper here
answers for rank 0 of 1 and does no collective at all, so one process trains exactly as it
did before ranks existed.

What is reduced, and how often (the instruments stay correct and cheap):
- gradients are all-reduced by DDP during backward, so per-module norms measured after
  backward are global on every rank: rank 0 measures them with no collective of ours;
- a logged step's loss and accuracy: one all-reduce of four numbers per logging interval;
- an epoch's training sums and the validation sums: one all-reduce each per epoch;
- commands: rank 0 broadcasts the ones it received at each logging interval
  (`CommandsInStep`), so they take effect at the same step on every rank.

It must not talk to the app or write the run folder (rank 0's worker does both).
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from copilot.errors import ConfigError
from copilot.events import Command, event_to_json, parse_command

# How long a rank whose collective failed waits for the agent to end it before reporting its own error;
# the agent looks at its ranks every 0.1 s (torchrun's --monitor-interval).
PEER_FAILURE_GRACE_S = 10.0


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _initialised() else 0


def world_size() -> int:
    return dist.get_world_size() if _initialised() else 1


def is_main() -> bool:
    """Rank 0 reports events and writes the run folder; the other ranks only train."""
    return rank() == 0


def pick_device(requested: Literal["auto", "cpu", "cuda"]) -> torch.device:
    """`auto`: this rank's GPU when CUDA works, else the CPU. Asking for CUDA without it is a user error."""
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        # torchrun sets LOCAL_RANK; a single process uses the first visible GPU.
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if requested == "cuda":
        raise ConfigError("CUDA was asked for but no GPU is usable here", "use --device cpu or --device auto")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    """"cpu", "cuda:0", or "cuda x4" when several ranks train."""
    if world_size() > 1:
        return f"{device.type} x{world_size()}"
    return str(device)


def start_process_group(requested: Literal["auto", "cpu", "cuda"]) -> None:
    """Join the group torchrun set up (RANK, WORLD_SIZE, MASTER_ADDR in the environment) on this rank's device.

    NCCL on GPUs (one GPU per rank: NCCL refuses two ranks on one), gloo on CPUs.
    """
    device = pick_device(requested)
    if device.type == "cuda":
        if device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {os.environ.get('RANK', '?')} wants GPU {device.index}, but this machine has {torch.cuda.device_count()}",
                "give --nproc-per-node at most the number of GPUs (or auto); NCCL takes one GPU per rank",
            )
        torch.cuda.set_device(device)
    store, this_rank, ranks = next(dist.rendezvous("env://"))
    # torchrun's agent keeps one store across the restarts it makes, and the keys a killed attempt's
    # ranks wrote there (their addresses) outlive them: a slow rank's peer would read a dead address.
    # Each attempt gets keys of its own.
    attempt = dist.PrefixStore(f"copilot/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        store=attempt,
        rank=this_rank,
        world_size=ranks,
        device_id=device if device.type == "cuda" else None,
    )


def end_process_group() -> None:
    if _initialised():
        dist.destroy_process_group()


def wait_for_the_agent() -> None:
    """Give the elastic agent time to end this rank (SIGTERM) after another rank failed, so the
    failure it reports is the first one, not this rank's lost collective."""
    threading.Event().wait(PEER_FAILURE_GRACE_S)


def rank_batch_size(global_batch_size: int, ranks: int) -> int:
    """Each rank's share of the global batch: `HParams.batch_size` means samples per step in all,
    so the learning rate keeps its meaning whatever the number of ranks."""
    if global_batch_size % ranks:
        raise ConfigError(
            f"batch size {global_batch_size} does not split evenly across {ranks} ranks",
            f"use a multiple of {ranks} (the batch size is global: each rank takes an equal share)",
        )
    return global_batch_size // ranks


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around `model` when several ranks train (its constructor gives every rank rank 0's
    weights and buffers); the model itself in a single process."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrapped(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper: what checkpoints hold (they load in one process and
    under any number of ranks), what swaps carry weights from and what the instruments watch."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


@dataclass(frozen=True)
class RankGroup:
    """The ranks training together, as the loop sees them; `SINGLE_PROCESS` is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> RankGroup:
        return cls(rank=rank(), world_size=world_size())

    def sum_across(self, tensor: Tensor) -> Tensor:
        """The element-wise sum over every rank (the tensor itself in one process); every rank must call it."""
        if self.world_size == 1:
            return tensor
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def weight_checksums(self, model: nn.Module) -> tuple[float, ...]:
        """Every rank's sum of its parameters and buffers, in rank order: equal when the ranks agree."""
        local = torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device)
        for tensor in (*model.parameters(), *model.buffers()):
            local += tensor.detach().double().sum()
        return tuple(float(value) for value in self._gathered(local))

    def steps(self, step: int, device: torch.device) -> tuple[int, ...]:
        """Every rank's step counter, in rank order: the evidence that a command landed at the same step."""
        return tuple(int(value) for value in self._gathered(torch.tensor(step, dtype=torch.int64, device=device)))

    def _gathered(self, local: Tensor) -> list[Tensor]:
        """One value from each rank; rare (once per command), never on the step path."""
        gathered = [torch.zeros_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        return gathered


SINGLE_PROCESS = RankGroup()


class CommandsInStep:
    """Rank 0's command queue as every rank sees it: the same commands, at the same steps.

    Rank 0 alone hears the app. Each time the queue runs dry, every rank agrees on what comes
    next: rank 0 takes what arrived (waiting up to `timeout` for the first, as a paused trainer
    does) and broadcasts it as JSON lines of the typed commands. The worker reads commands at
    the same steps on every rank (each logging interval, and while paused), so the ranks call
    this in step and each command takes effect at the same step everywhere.
    """

    def __init__(self, commands: Any, group: RankGroup) -> None:
        self._commands = commands  # rank 0: the connection to the app; the others: never read
        self._group = group
        self._agreed: deque[Command] = deque()
        self._own: list[Command] = []

    def get(self, timeout: float | None = None) -> Command:
        if not self._agreed:
            self._agreed.extend(self._agree(timeout))
        if not self._agreed:
            raise queue.Empty
        return self._agreed.popleft()

    def get_nowait(self) -> Command:
        return self.get(0.0)

    def add(self, command: Command) -> None:
        """Rank 0's own command (a pause after a non-finite loss), shared with the next ones from the app."""
        self._own.append(command)

    def _agree(self, timeout: float | None) -> Sequence[Command]:
        received: list[str] = []
        if self._group.is_main:
            received.extend(event_to_json(command) for command in self._own)
            self._own.clear()
            try:  # with commands of its own to share, rank 0 does not wait for the app's
                received.append(event_to_json(self._commands.get(timeout=0.0 if received else timeout)))
                while True:
                    received.append(event_to_json(self._commands.get_nowait()))
            except queue.Empty:
                pass
        shared: list[Any] = [received]
        dist.broadcast_object_list(shared, src=0)
        return [parse_command(line) for line in shared[0]]
