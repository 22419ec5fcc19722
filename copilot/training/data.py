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
from pathlib import Path
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from copilot import walls
from copilot.config import DataSettings
from copilot.errors import DataError
from copilot.events import DataSpec
from copilot.training.datasets import files, shapes, text

SHAPES_TRAIN_SIZE = 10_000
SHAPES_VAL_SIZE = 2_000
TEXT_TRAIN_SIZE = 2_000
TEXT_VAL_SIZE = 400
TEXT_VOCAB_SIZE = text.VOCAB_SIZE
# One sample of each bundled image set (shapes at its default settings), to say which one a model's first layer would fit.
IMAGE_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "shapes": (shapes.CHANNELS, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE),
    "cifar10": (3, 32, 32),
}
# The image settings each set honours: the shapes set draws any channel count and size, image
# folders are resized to data.image_size (and read as RGB), the others are what they are. A model
# whose first layer does not fit is told the settings of its own set that would fit, or another set.
IMAGE_SETTINGS_HONOURED: dict[str, tuple[str, ...]] = {
    "shapes": ("channels", "image_size"),
    "imagefolder": ("image_size",),
    "cifar10": (),
    "text": (),
    "custom": (),
}
IMAGE_FOLDER_VAL_FRACTION = 0.2
DEFAULT_DATA_DIR = Path("data")
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


def _synthetic_sizes(settings: DataSettings, train_default: int, val_default: int) -> tuple[int, int]:
    return settings.train_size or train_default, settings.val_size or val_default


def _load_shapes(settings: DataSettings) -> tuple[DataSpec, Split, Split]:
    train_size, val_size = _synthetic_sizes(settings, SHAPES_TRAIN_SIZE, SHAPES_VAL_SIZE)
    # Separate seeds per split: the validation set does not change with the training size.
    drawn = {"channels": settings.channels, "image_size": settings.image_size}
    train_images, train_labels = shapes.generate_shapes(train_size, seed=2 * settings.seed, **drawn)
    val_images, val_labels = shapes.generate_shapes(val_size, seed=2 * settings.seed + 1, **drawn)
    train_images, val_images = _normalised(train_images, val_images)
    spec = DataSpec(
        name="shapes",
        task="classification",
        input_shape=(settings.channels, settings.image_size, settings.image_size),
        num_classes=shapes.NUM_CLASSES,
        train_size=train_size,
        val_size=val_size,
    )
    return spec, TensorSplit(train_images, train_labels), TensorSplit(val_images, val_labels)


def _load_text(settings: DataSettings) -> tuple[DataSpec, Split, Split]:
    train_size, val_size = _synthetic_sizes(settings, TEXT_TRAIN_SIZE, TEXT_VAL_SIZE)
    spec = DataSpec(
        name="text",
        task="sequence",
        input_shape=(text.SEQUENCE_LENGTH,),
        input_dtype="int64",
        num_classes=text.VOCAB_SIZE,
        train_size=train_size,
        val_size=val_size,
    )
    train = TensorSplit(*text.generate_text(train_size, seed=2 * settings.seed))
    val = TensorSplit(*text.generate_text(val_size, seed=2 * settings.seed + 1))
    return spec, train, val


def _load_cifar10(settings: DataSettings) -> tuple[DataSpec, Split, Split]:
    data_dir = settings.data_dir or DEFAULT_DATA_DIR
    train_images, train_labels, val_images, val_labels = files.read_cifar10(
        data_dir, download=settings.download
    )
    train_inputs, val_inputs = _normalised(train_images.float() / 255, val_images.float() / 255)
    spec = DataSpec(
        name="cifar10",
        task="classification",
        input_shape=IMAGE_INPUT_SHAPES["cifar10"],
        num_classes=files.CIFAR10_CLASSES,
        train_size=len(train_labels),
        val_size=len(val_labels),
    )
    return spec, TensorSplit(train_inputs, train_labels), TensorSplit(val_inputs, val_labels)


def _load_image_folder(settings: DataSettings) -> tuple[DataSpec, Split, Split]:
    if settings.data_dir is None:
        raise DataError(
            "the imagefolder data set needs a folder", "pass --data-dir PATH (one subfolder per class)"
        )
    train, val, num_classes = files.image_folders(
        settings.data_dir, settings.image_size, val_fraction=IMAGE_FOLDER_VAL_FRACTION, seed=settings.seed
    )
    spec = DataSpec(
        name="imagefolder",
        task="classification",
        input_shape=(3, settings.image_size, settings.image_size),
        num_classes=num_classes,
        train_size=len(train),
        val_size=len(val),
    )
    return spec, train, val


def _custom_spec(train: Dataset, val: Dataset, reference: str) -> DataSpec:
    """What the user's datasets hold, read off their first sample."""
    if len(train) == 0 or len(val) == 0:
        raise DataError(
            f"{reference} returned an empty split", "return at least one sample in train and in val"
        )
    try:
        sample = train[0]
    except Exception as exc:
        raise DataError(
            f"{reference}: reading the first training sample raised {type(exc).__name__}: {exc}",
            "fix the dataset's __getitem__",
        ) from None
    if not (isinstance(sample, (tuple, list)) and len(sample) == 2):
        raise DataError(
            f"{reference}: a sample is {type(sample).__name__}, not (input, target)",
            "return (input, target) pairs",
        )
    inputs, targets = torch.as_tensor(sample[0]), torch.as_tensor(sample[1])
    if inputs.dtype not in (torch.float32, torch.int64):
        raise DataError(
            f"{reference}: inputs are {inputs.dtype}, not float32 or int64",
            "convert them in the dataset (tensor.float() or tensor.long())",
        )
    if targets.is_floating_point() or targets.ndim > 1:
        raise DataError(
            f"{reference}: targets of shape {tuple(targets.shape)} and type {targets.dtype}"
            " are not class indices",
            "return an integer class per sample, or one per position of an int64 sequence",
        )
    is_sequence = targets.ndim == 1
    if is_sequence and (inputs.dtype != torch.int64 or inputs.shape != targets.shape):
        raise DataError(
            f"{reference}: sequence targets {tuple(targets.shape)} need int64 inputs of the same shape,"
            f" got {tuple(inputs.shape)} {inputs.dtype}",
            "for next-token prediction return (tokens, next_tokens), both int64 [seq_len]",
        )
    return DataSpec(
        name="custom",
        task="sequence" if is_sequence else "classification",
        input_shape=tuple(inputs.shape),
        input_dtype="int64" if inputs.dtype == torch.int64 else "float32",
        num_classes=files.count_classes(train, reference),
        train_size=len(train),
        val_size=len(val),
    )


def _load_custom(settings: DataSettings) -> tuple[DataSpec, Split, Split]:
    if not settings.custom:
        raise DataError("the custom data set needs a hook", "set data.custom to 'module.py:function'")
    train, val = files.custom_datasets(settings.custom)
    return _custom_spec(train, val, settings.custom), train, val


DATASETS: dict[str, Callable[[DataSettings], tuple[DataSpec, Split, Split]]] = {
    "shapes": _load_shapes,
    "text": _load_text,
    "cifar10": _load_cifar10,
    "imagefolder": _load_image_folder,
    "custom": _load_custom,
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
    """The data set named in `settings`, placed for `device`. Unknown names raise `DataError`.

    Under torch.distributed with `download` set, rank 0 loads (and downloads) first and
    the other ranks wait for it, so one process writes the files.
    """
    loader = DATASETS.get(settings.dataset)
    if loader is None:
        known = ", ".join(DATASETS)
        raise DataError(
            f"unknown data set '{settings.dataset}'", f"choose one of: {known} (--dataset NAME)"
        )
    _refuse_unhonoured_image_settings(settings)
    rank_zero_first = settings.download and world_size > 1 and torch.distributed.is_initialized()
    if rank_zero_first and rank != 0:
        torch.distributed.barrier()
    spec, train, val = loader(settings)
    if rank_zero_first and rank == 0:
        torch.distributed.barrier()
    return DataBundle(spec=spec, train=_placed(train, device), val=_placed(val, device))


def _refuse_unhonoured_image_settings(settings: DataSettings) -> None:
    """A channel count or image size the chosen set cannot give is an error, not a setting silently ignored."""
    honoured = IMAGE_SETTINGS_HONOURED[settings.dataset]
    for setting in ("channels", "image_size"):
        value = getattr(settings, setting)
        if setting in honoured or value == DataSettings.model_fields[setting].default:
            continue
        sets = [name for name, settings_honoured in IMAGE_SETTINGS_HONOURED.items() if setting in settings_honoured]
        raise DataError(
            f"the {settings.dataset} data set cannot honour data.{setting} = {value}",
            f"data.{setting} applies to {' and '.join(sets)} only: remove it ([data] in copilot.toml, "
            f"COPILOT_DATA__{setting.upper()}), or use --dataset {sets[0]}",
        )


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
    # Behind the walls no unix socket can be made, and DataLoader workers hand tensors over through one.
    if walls.current() is not None:
        return 0
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
