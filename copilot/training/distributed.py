"""Which rank this trainer is and which device it trains on.

Today the trainer runs as one process; these helpers are the only place that knows
otherwise, so the worker and the data already shard by rank and report from rank 0
only. They read torch.distributed when a process group has been initialised (by a
launcher such as torchrun) and answer for a single process otherwise. Starting a
process group and wrapping the model for several GPUs belong to a later change; this
module must not pretend to do either.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
import torch.distributed as dist

from copilot.errors import ConfigError


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
