"""Data sets read from disk: CIFAR-10's python batches, image folders, the user's own hook.

CIFAR-10 is read straight from the pickled `cifar-10-batches-py` files, so it needs no
torchvision; torchvision is imported (lazily: it cannot be imported on every PyTorch
build) only to download CIFAR-10 or to read an image folder. A user's `custom` hook is
a `module.py:function` that returns a (train, val) pair of torch Datasets.

Every problem the user can fix is a one-line `DataError` with a hint. This module knows
nothing of devices or batching: `copilot.training.data` does.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor
from torch.utils.data import Dataset

from copilot.errors import DataError, first_line
from copilot.events import split_file_reference

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
# Downloading is the data.download setting; there is no --download flag.
DOWNLOAD_HOW = "set download = true under [data] in copilot.toml (or COPILOT_DATA__DOWNLOAD=true)"
CIFAR10_CLASSES = 10
# Beyond this many samples a custom set must declare its class count instead of being scanned.
MAX_SCANNED_SAMPLES = 50_000


def _torchvision(purpose: str) -> ModuleType:
    """torchvision, or a `DataError` saying why it cannot be used for `purpose`."""
    try:
        import torchvision
    except Exception as exc:  # a broken install raises RuntimeError or OSError, not only ImportError
        reason = first_line(exc) or type(exc).__name__
        raise DataError(
            f"{purpose} needs torchvision, which cannot be imported ({reason})",
            f"install the torchvision release built for torch {torch.__version__.split('+')[0]}"
            " (pip install --force-reinstall torchvision with the same index as torch)",
        ) from None
    return torchvision


def _cifar10_folder(data_dir: Path) -> Path:
    """The folder holding the batch files: `data_dir` itself or its `cifar-10-batches-py`."""
    nested = data_dir / CIFAR10_FOLDER
    return nested if nested.is_dir() else data_dir


def _read_cifar10_batch(path: Path) -> tuple[Tensor, Tensor]:
    try:
        with path.open("rb") as file:
            batch = pickle.load(file, encoding="bytes")
        pixels = torch.as_tensor(batch[b"data"], dtype=torch.uint8)
        labels = torch.as_tensor(batch[b"labels"], dtype=torch.int64)
    except ModuleNotFoundError as exc:
        raise DataError(
            f"cannot read CIFAR-10 batch {path}: {exc}", "install numpy: the batches are pickled numpy arrays"
        ) from None
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"cannot read CIFAR-10 batch {path}: {type(exc).__name__}: {exc}",
            f"delete the folder and download it again: {DOWNLOAD_HOW}",
        ) from None
    return pixels.view(-1, 3, 32, 32), labels


def read_cifar10(data_dir: Path, *, download: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training images and labels, then test images and labels (uint8 [N, 3, 32, 32], int64 [N])."""
    folder = _cifar10_folder(data_dir)
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    if download and not all((folder / name).is_file() for name in names):
        torchvision = _torchvision("downloading CIFAR-10")
        torchvision.datasets.CIFAR10(root=str(data_dir), train=True, download=True)
        folder = _cifar10_folder(data_dir)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 batch files missing in {folder.resolve()}: {', '.join(missing)}",
            f"put {CIFAR10_FOLDER}/ (data_batch_1..5, test_batch) in {data_dir} (or name another folder with --data-dir), "
            f"or {DOWNLOAD_HOW}",
        )
    train = [_read_cifar10_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    test_images, test_labels = _read_cifar10_batch(folder / CIFAR10_TEST_FILE)
    train_images = torch.cat([images for images, _ in train])
    train_labels = torch.cat([labels for _, labels in train])
    return train_images, train_labels, test_images, test_labels


def image_folders(
    data_dir: Path, image_size: int, *, val_fraction: float, seed: int
) -> tuple[Dataset, Dataset, int]:
    """Train and validation Datasets of `data_dir`'s images, and the number of classes.

    With `train/` and `val/` subfolders each is one split; otherwise the class folders
    directly in `data_dir` are split at random (seeded) by `val_fraction`.
    """
    if not data_dir.is_dir():
        raise DataError(
            f"image folder {data_dir} does not exist", "pass --data-dir PATH with one folder per class"
        )
    torchvision = _torchvision("reading an image folder")
    transforms = torchvision.transforms
    transform = transforms.Compose(
        [
            transforms.Resize((image_size, image_size)),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )

    def folder(path: Path) -> Dataset:
        try:
            return torchvision.datasets.ImageFolder(str(path), transform=transform)
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataError(
                f"cannot read image folder {path}: {exc}", "use one subfolder of images per class"
            ) from None

    if (data_dir / "train").is_dir() and (data_dir / "val").is_dir():
        train, val = folder(data_dir / "train"), folder(data_dir / "val")
        if train.classes != val.classes:
            raise DataError(
                f"train/ and val/ in {data_dir} have different class folders",
                "give both the same class subfolders",
            )
        return train, val, len(train.classes)
    whole = folder(data_dir)
    val_size = max(1, round(len(whole) * val_fraction))
    generator = torch.Generator().manual_seed(seed)
    train, val = torch.utils.data.random_split(whole, [len(whole) - val_size, val_size], generator=generator)
    return train, val, len(whole.classes)


def _load_module(path: Path) -> ModuleType:
    if not path.is_file():
        raise DataError(
            f"custom data module {path} not found", "set data.custom to 'path/to/module.py:function'"
        )
    module_name = f"copilot_custom_data_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None  # a .py path always has a source loader
    module = importlib.util.module_from_spec(spec)
    # Registered so DataLoader workers and pickling can find the module's classes.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise DataError(
            f"custom data module {path} failed to import: {type(exc).__name__}: {exc}",
            "fix the module so `python` can import it",
        ) from None
    return module


def custom_datasets(reference: str) -> tuple[Dataset, Dataset]:
    """The (train, val) Datasets returned by the `module.py:function` named in `reference`."""
    path, function_name = split_file_reference(reference)
    if function_name is None:
        raise DataError(
            f"custom data set '{reference}' is not 'module.py:function'",
            "set data.custom to e.g. 'my_data.py:load' (a function returning (train, val) datasets)",
        )
    module = _load_module(path)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise DataError(
            f"{path} has no function '{function_name}'", "name a function defined in that file"
        )
    try:
        result = function()
    except Exception as exc:
        raise DataError(
            f"{reference} raised {type(exc).__name__}: {exc}", "fix the function so it returns (train, val)"
        ) from None
    is_dataset_pair = (
        isinstance(result, tuple)
        and len(result) == 2
        and all(hasattr(part, "__getitem__") and hasattr(part, "__len__") for part in result)
    )
    if not is_dataset_pair:
        raise DataError(
            f"{reference} returned {type(result).__name__}, not a (train, val) pair of datasets",
            "return two torch Datasets (objects with __len__ and __getitem__)",
        )
    return result


def _declared_class_count(dataset: Dataset) -> int | None:
    """`num_classes`, `vocab_size` or `len(classes)` on the dataset or the one it wraps (a Subset)."""
    for candidate in (dataset, getattr(dataset, "dataset", None)):
        for attribute in ("num_classes", "vocab_size"):
            if isinstance(getattr(candidate, attribute, None), int):
                return getattr(candidate, attribute)
        if isinstance(getattr(candidate, "classes", None), (list, tuple)):
            return len(candidate.classes)
    return None


def count_classes(dataset: Dataset, reference: str) -> int:
    """Classes (or vocabulary size) of a dataset: declared, read off a TensorDataset, or scanned."""
    declared = _declared_class_count(dataset)
    if declared is not None:
        return declared
    if isinstance(dataset, torch.utils.data.TensorDataset):
        return int(dataset.tensors[1].max()) + 1
    if len(dataset) > MAX_SCANNED_SAMPLES:
        raise DataError(
            f"{reference}: cannot tell the number of classes of {len(dataset)} samples"
            " without reading them all",
            "give the training dataset a `num_classes` attribute",
        )
    return max(int(torch.as_tensor(dataset[index][1]).max()) for index in range(len(dataset))) + 1

