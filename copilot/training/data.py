"""The data registry and the batching the training loop draws from.

`load_data` turns `DataSettings` into a `DataBundle`: a `DataSpec` (what the model is
fed and must output) and a train and a validation split. Sets that fit in memory are
`TensorSplit`s held on the training device and batched there by indexing with a
permutation, with no per-sample Python; other sets are torch `Dataset`s batched by a
`DataLoader` with workers and pinned memory. Both paths shuffle with a CPU
`torch.Generator` the caller owns (so its state goes into checkpoints) and shard each
epoch's order by rank.

It must not know about models, optimizers or the run folder; the generators and
readers live in `copilot.training.datasets`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from copilot.config import DataSettings
from copilot.errors import DataError
from copilot.events import DataSpec
from copilot.training.datasets import shapes

SHAPES_TRAIN_SIZE = 10_000
SHAPES_VAL_SIZE = 2_000
# CUDA sets are kept on the device only while they take at most this share of its free memory.
DEVICE_MEMORY_SHARE = 0.25


@dataclass(frozen=True)
class TensorSplit:
    """A whole split held as two tensors with the same first dimension."""

    inputs: Tensor
    targets: Tensor

    def __post_init__(self) -> None:
        if self.inputs.shape[0] != self.targets.shape[0]:
            raise ValueError(f"{self.inputs.shape[0]} inputs but {self.targets.shape[0]} targets")

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def to(self, device: torch.device) -> TensorSplit:
        return TensorSplit(self.inputs.to(device), self.targets.to(device))


Split = TensorSplit | Dataset


@dataclass(frozen=True)
class DataBundle:
    spec: DataSpec
    train: Split
    val: Split


def _normalised(train: Tensor, val: Tensor) -> tuple[Tensor, Tensor]:
    """Both splits scaled per channel by the training split's mean and standard deviation."""
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True)
    return (train - mean) / std, (val - mean) / std


def _load_shapes(settings: DataSettings) -> tuple[DataSpec, Split, Split]:
    train_size = settings.train_size or SHAPES_TRAIN_SIZE
    val_size = settings.val_size or SHAPES_VAL_SIZE
    # Separate seeds per split: the validation set does not change with the training size.
    train_images, train_labels = shapes.generate_shapes(train_size, seed=2 * settings.seed)
    val_images, val_labels = shapes.generate_shapes(val_size, seed=2 * settings.seed + 1)
    train_images, val_images = _normalised(train_images, val_images)
    spec = DataSpec(
        name="shapes",
        task="classification",
        input_shape=(3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE),
        num_classes=shapes.NUM_CLASSES,
        train_size=train_size,
        val_size=val_size,
    )
    return spec, TensorSplit(train_images, train_labels), TensorSplit(val_images, val_labels)


DATASETS: dict[str, Callable[[DataSettings], tuple[DataSpec, Split, Split]]] = {
    "shapes": _load_shapes,
}


def _fits_on(split: TensorSplit, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    size_bytes = sum(t.element_size() * t.nelement() for t in (split.inputs, split.targets))
    free_bytes, _ = torch.cuda.mem_get_info(device)
    return size_bytes <= DEVICE_MEMORY_SHARE * free_bytes


def _placed(split: Split, device: torch.device) -> Split:
    """A tensor split moved to `device` when it fits there, else pinned for fast copies."""
    if not isinstance(split, TensorSplit):
        return split
    if _fits_on(split, device):
        return split.to(device)
    return TensorSplit(split.inputs.pin_memory(), split.targets.pin_memory())


def load_data(
    settings: DataSettings, device: torch.device, *, rank: int = 0, world_size: int = 1
) -> DataBundle:
    """The data set named in `settings`, placed for `device`. Unknown names raise `DataError`."""
    loader = DATASETS.get(settings.dataset)
    if loader is None:
        known = ", ".join(DATASETS)
        raise DataError(
            f"unknown data set '{settings.dataset}'", f"choose one of: {known} (--dataset NAME)"
        )
    spec, train, val = loader(settings)
    return DataBundle(spec=spec, train=_placed(train, device), val=_placed(val, device))


def _epoch_order(
    size: int, *, shuffle: bool, generator: torch.Generator | None, rank: int, world_size: int
) -> Tensor:
    """This rank's sample indices for one epoch (CPU, int64).

    Ranks take every `world_size`-th index of one shared order, so their shards are disjoint
    and equal; the `size % world_size` samples left over (different ones each shuffled
    epoch) are skipped so every rank takes the same number of steps.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    order = torch.randperm(size, generator=generator) if shuffle else torch.arange(size)
    per_rank = size // world_size
    return order[rank : per_rank * world_size : world_size]


def batches_per_epoch(split: Split, batch_size: int, world_size: int = 1) -> int:
    return math.ceil((len(split) // world_size) / batch_size)


def _dataloader_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[Tensor, Tensor]]:
    """(inputs, targets) batches on `device` covering this rank's shard of `split` once.

    The last batch may be smaller. Shuffling draws from `generator` (a CPU generator) only.
    """
    order = _epoch_order(len(split), shuffle=shuffle, generator=generator, rank=rank, world_size=world_size)
    if isinstance(split, TensorSplit):
        order = order.to(split.inputs.device)
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            yield (
                split.inputs[indices].to(device, non_blocking=True),
                split.targets[indices].to(device, non_blocking=True),
            )
        return
    loader = DataLoader(
        split,
        batch_size=batch_size,
        sampler=order.tolist(),
        num_workers=_dataloader_workers(),
        pin_memory=device.type == "cuda",
    )
    for inputs, targets in loader:
        yield inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
