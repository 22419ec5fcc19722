"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the model and optimizer state, the hyperparameters, the counters
(epoch, step, round, batches already taken from the current epoch), which model file
and arguments built the model, every random number generator state (torch, CUDA,
Python, NumPy) and the data shuffle generator's state as of the start of the epoch in
progress. It is written as plain dicts, lists, numbers, strings and tensors, so it loads
with a bare `torch.load(path)` (weights only); files are written whole and then renamed,
so a killed trainer never leaves half a checkpoint.

It must not decide when to checkpoint (the worker does) nor touch the optimizer or
schedule beyond their state dicts.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from copilot.errors import CopilotError
from copilot.events import HParams, ModelRef

FORMAT_VERSION = 1
# A failed save with less than this free beside it was the disk filling up.
DISK_FULL_BELOW_BYTES = 1 << 20


@dataclass(frozen=True)
class ModelOrigin:
    """Which file, pick and arguments built the model being trained."""

    source: str  # the file as the user or the advisor named it
    path: str  # its copy in the run folder's models/: what was trained, whatever happens to the source
    name: str | None  # the `file.py:Name` pick, None when the file's own rules chose
    args: dict[str, Any]

    @property
    def kept(self) -> ModelRef:
        """The kept copy as a reference to build from: what a resumed run loads."""
        return ModelRef(path=Path(self.path), name=self.name, args=self.args)


@dataclass(frozen=True)
class Checkpoint:
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    hparams: HParams
    epoch: int  # epochs finished
    step: int  # optimizer steps taken
    round: int
    batches_done: int  # batches of epoch `epoch + 1` already trained on
    initial_loss: float | None
    model: ModelOrigin
    rng_states: dict[str, Any]
    shuffle_state: torch.Tensor  # the data generator as the epoch in progress started


def capture_rng_states() -> dict[str, Any]:
    """Every global random stream a training step may draw from, as plain values."""
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy
    except ImportError:
        return states
    kind, keys, position, has_gauss, cached_gaussian = numpy.random.get_state()
    states["numpy"] = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype("int64")),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }
    return states


def restore_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "numpy" in states:
        import numpy

        saved = states["numpy"]
        numpy.random.set_state(
            (saved["kind"], saved["keys"].numpy().astype("uint32"), saved["position"], saved["has_gauss"], saved["cached_gaussian"])
        )


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> Path:
    """Write `checkpoint` to `path` atomically (temporary file, then rename)."""
    payload = {
        "format": FORMAT_VERSION,
        "model_state": checkpoint.model_state,
        "optimizer_state": checkpoint.optimizer_state,
        "hparams": checkpoint.hparams.model_dump(),
        "epoch": checkpoint.epoch,
        "step": checkpoint.step,
        "round": checkpoint.round,
        "batches_done": checkpoint.batches_done,
        "initial_loss": checkpoint.initial_loss,
        "model": asdict(checkpoint.model),
        "rng_states": checkpoint.rng_states,
        "shuffle_state": checkpoint.shuffle_state,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        torch.save(payload, partial)
        os.replace(partial, path)
    except BaseException as exc:
        # torch reports a full disk as an opaque RuntimeError: tell it by the space left.
        full = _no_space_left(path.parent)
        partial.unlink(missing_ok=True)
        if full and not isinstance(exc, OSError):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise
    return path


def _no_space_left(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < DISK_FULL_BELOW_BYTES
    except OSError:
        return False


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; tensors land on the CPU."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CopilotError(f"checkpoint not found: {path}", "pick one from the run's checkpoints/ folder") from None
    except Exception as exc:
        # Not torch's text: for a damaged file it advises weights_only=False, which runs arbitrary code.
        raise CopilotError(
            f"cannot read checkpoint {path}: the file is damaged or not a copilot checkpoint ({type(exc).__name__})",
            "delete it (or move it out of checkpoints/) to resume from the one before it",
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CopilotError(
            f"{path.name} is not a copilot checkpoint of format {FORMAT_VERSION}",
            "resume from a checkpoint written by this version of copilot",
        )
    return Checkpoint(
        model_state=payload["model_state"],
        optimizer_state=payload["optimizer_state"],
        hparams=HParams.model_validate(payload["hparams"]),
        epoch=payload["epoch"],
        step=payload["step"],
        round=payload["round"],
        batches_done=payload["batches_done"],
        initial_loss=payload["initial_loss"],
        model=ModelOrigin(**payload["model"]),
        rng_states=payload["rng_states"],
        shuffle_state=payload["shuffle_state"],
    )


def checkpoint_name(epoch: int, step: int, *, at_epoch_end: bool) -> str:
    """`epoch0003.pt` at the end of an epoch, `step00001234.pt` anywhere else."""
    return f"epoch{epoch:04d}.pt" if at_epoch_end else f"step{step:08d}.pt"
