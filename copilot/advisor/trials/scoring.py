"""The parent's side of a trial's score: the validation targets, and loss and accuracy of outputs.

A trial runs code that may not be the user's own, so what it says about itself is a
claim; what it hands over is its model's outputs on the fixed validation samples (a
tensor file, read with `torch.load(weights_only=True)`, which runs no code). The
targets never leave this process. Loss is cross-entropy, as the trainer's default
(over every position for the sequence task); accuracy is the argmax match.

torch is imported inside the functions only: the app imports this package at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from copilot.config import DataSettings
from copilot.errors import CopilotError
from copilot.events import Task

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class Score:
    val_loss: float
    val_accuracy: float | None


def validation_targets(data: DataSettings, samples: int) -> Tensor:
    """The targets of the first `samples` validation samples, in the order trials predict them."""
    import torch

    from copilot.training.data import iterate_batches, load_data

    bundle = load_data(data, torch.device("cpu"))
    kept: list[Tensor] = []
    taken = 0
    for _inputs, targets in iterate_batches(bundle.val, 256, shuffle=False, generator=None, device=torch.device("cpu")):
        kept.append(targets[: samples - taken])
        taken += len(kept[-1])
        if taken >= samples:
            break
    return torch.cat(kept)


def score_outputs(path: Path, targets: Tensor, task: Task) -> Score:
    """Loss and accuracy of the outputs in `path` against `targets`; a `CopilotError` for outputs that do not fit."""
    import torch
    import torch.nn.functional as F

    try:
        outputs = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CopilotError(f"cannot read the trial's outputs {path.name} ({type(exc).__name__})", "") from None
    expected_dims = 2 if task == "classification" else 3
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != expected_dims or outputs.shape[:-1] != targets.shape:
        shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise CopilotError(f"the trial's outputs {shape} do not fit {len(targets)} validation targets", "")
    logits = outputs.reshape(-1, outputs.shape[-1]).double()
    flat = targets.reshape(-1)
    loss = F.cross_entropy(logits, flat).item()
    accuracy = (logits.argmax(dim=-1) == flat).double().mean().item()
    return Score(val_loss=loss, val_accuracy=accuracy if math.isfinite(loss) else None)
