"""The data registry: documented shapes and specs, determinism, readers, hooks and batching."""

from __future__ import annotations

import pickle
import re
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from copilot.config import DataSettings
from copilot.errors import DataError
from copilot.training.data import (
    DATASETS,
    IMAGE_SETTINGS_HONOURED,
    TEXT_VOCAB_SIZE,
    TensorSplit,
    batches_per_epoch,
    iterate_batches,
    load_data,
)
from copilot.training.datasets import shapes, text

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def small(dataset: str = "shapes", **fields: object) -> DataSettings:
    return DataSettings(dataset=dataset, train_size=200, val_size=100, **fields)


# --------------------------------------------------------------------------- synthetic sets


def test_shapes_has_the_documented_shape_spec_and_normalisation() -> None:
    bundle = load_data(small(), CPU)

    assert bundle.spec.name == "shapes"
    assert bundle.spec.task == "classification"
    assert bundle.spec.input_shape == (3, 32, 32)
    assert bundle.spec.input_dtype == "float32"
    assert bundle.spec.num_classes == 10
    assert (bundle.spec.train_size, bundle.spec.val_size) == (200, 100)
    assert bundle.train.inputs.shape == (200, 3, 32, 32)
    assert bundle.train.inputs.dtype == torch.float32
    assert bundle.val.targets.shape == (100,)
    assert bundle.val.targets.dtype == torch.int64
    per_channel_mean = bundle.train.inputs.mean(dim=(0, 2, 3))
    per_channel_std = bundle.train.inputs.std(dim=(0, 2, 3))
    assert torch.allclose(per_channel_mean, torch.zeros(3), atol=1e-4)
    assert torch.allclose(per_channel_std, torch.ones(3), atol=1e-4)
    # The validation split is scaled by the training statistics, so it is close but not exact.
    assert bundle.val.inputs.mean().abs() < 0.2


def test_shapes_draws_grayscale_28_by_28_for_mnist_models_and_the_defaults_are_unchanged() -> None:
    gray = load_data(small(channels=1, image_size=28), CPU)
    assert gray.spec.input_shape == (1, 28, 28)
    assert gray.train.inputs.shape == (200, 1, 28, 28) and gray.val.inputs.shape == (100, 1, 28, 28)
    assert torch.bincount(gray.train.targets, minlength=10).tolist() == [20] * 10
    # The defaults draw what they always drew, so earlier runs are the same run.
    default, spelled_out = load_data(small(), CPU), load_data(small(channels=3, image_size=32), CPU)
    assert torch.equal(default.train.inputs, spelled_out.train.inputs)
    started = time.perf_counter()
    shapes.generate_shapes(10_000, seed=0, channels=1, image_size=28)
    print(f"10,000 1x28x28 shapes drawn in {time.perf_counter() - started:.2f} s")


def test_shapes_default_sizes_are_the_documented_ones() -> None:
    spec = load_data(DataSettings(), CPU).spec

    assert (spec.train_size, spec.val_size) == (10_000, 2_000)


def test_shapes_classes_are_balanced_in_both_splits() -> None:
    bundle = load_data(small(), CPU)

    assert torch.bincount(bundle.train.targets, minlength=10).tolist() == [20] * 10
    assert torch.bincount(bundle.val.targets, minlength=10).tolist() == [10] * 10


@pytest.mark.parametrize("dataset", ["shapes", "text"])
def test_synthetic_sets_are_deterministic_per_seed_and_differ_across_seeds(dataset: str) -> None:
    first = load_data(small(dataset, seed=3), CPU)
    again = load_data(small(dataset, seed=3), CPU)
    other = load_data(small(dataset, seed=4), CPU)

    assert torch.equal(first.train.inputs, again.train.inputs)
    assert torch.equal(first.val.targets, again.val.targets)
    assert not torch.equal(first.train.inputs, other.train.inputs)
    assert not torch.equal(first.train.inputs[:10], first.val.inputs[:10])


def test_validation_split_does_not_change_with_the_training_size() -> None:
    smaller = load_data(DataSettings(train_size=100, val_size=50), CPU)
    larger = load_data(DataSettings(train_size=300, val_size=50), CPU)

    assert torch.equal(smaller.val.targets, larger.val.targets)


def test_text_is_next_character_prediction_over_the_documented_vocabulary() -> None:
    bundle = load_data(small("text"), CPU)

    assert bundle.spec.task == "sequence"
    assert bundle.spec.input_shape == (64,)
    assert bundle.spec.input_dtype == "int64"
    assert bundle.spec.num_classes == TEXT_VOCAB_SIZE == len(text.VOCABULARY)
    inputs, targets = bundle.train.inputs, bundle.train.targets
    assert inputs.shape == targets.shape == (200, 64)
    assert inputs.dtype == targets.dtype == torch.int64
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    # Windows are consecutive: each one's last target is the next one's first input.
    assert torch.equal(targets[:-1, -1], inputs[1:, 0])
    assert 0 <= int(inputs.min()) and int(inputs.max()) < TEXT_VOCAB_SIZE


def test_text_reads_as_sentences_of_the_grammar() -> None:
    inputs = load_data(small("text"), CPU).train.inputs
    characters = "".join(text.VOCABULARY[index] for index in inputs.flatten().tolist())
    sentences = [s.strip() for s in characters.split(".")[1:-1]]

    assert len(sentences) > 100
    assert all(s.split(" ")[0] in {"the", "a", "an", "two", "three", "four", "many"} for s in sentences)
    assert {"sees", "chases", "see", "chase"} <= set(characters.split())


def test_unknown_data_set_names_the_known_ones() -> None:
    with pytest.raises(DataError) as caught:
        load_data(DataSettings(dataset="mnist"), CPU)

    assert "'mnist'" in caught.value.message
    assert all(name in caught.value.hint for name in DATASETS)
    assert set(DATASETS) == {"shapes", "text", "cifar10", "imagefolder", "custom"}
    assert set(IMAGE_SETTINGS_HONOURED) == set(DATASETS)


@pytest.mark.parametrize(
    ("dataset", "setting", "value", "hint"),
    [
        ("cifar10", "channels", 1, "data.channels applies to shapes only"),
        ("imagefolder", "channels", 1, "data.channels applies to shapes only"),
        ("cifar10", "image_size", 28, "data.image_size applies to shapes and imagefolder only"),
        ("text", "image_size", 64, "data.image_size applies to shapes and imagefolder only"),
    ],
)
def test_an_image_setting_the_set_cannot_honour_is_refused_before_anything_is_read(
    tmp_path: Path, dataset: str, setting: str, value: int, hint: str
) -> None:
    with pytest.raises(DataError) as caught:
        load_data(DataSettings(dataset=dataset, data_dir=tmp_path, **{setting: value}), CPU)
    assert caught.value.message == f"the {dataset} data set cannot honour data.{setting} = {value}"
    assert caught.value.hint.startswith(hint + ": remove it ([data] in copilot.toml")
    assert caught.value.hint.endswith("or use --dataset shapes")


# --------------------------------------------------------------------------- cifar10


def write_fake_cifar10(folder: Path, per_batch: int) -> dict[str, tuple[np.ndarray, list[int]]]:
    """CIFAR-10's python batches as the real archive has them: pickled dicts with bytes keys."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [b"x.png"] * per_batch,
        }
        with (folder / name).open("wb") as file:
            pickle.dump(batch, file)
        written[name] = (data, labels)
    return written


def test_cifar10_reads_the_python_batches_without_torchvision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    written = write_fake_cifar10(tmp_path / "cifar-10-batches-py", per_batch=8)

    bundle = load_data(DataSettings(dataset="cifar10", data_dir=tmp_path), CPU)

    assert bundle.spec.input_shape == (3, 32, 32)
    assert (bundle.spec.num_classes, bundle.spec.train_size, bundle.spec.val_size) == (10, 40, 8)
    assert bundle.train.targets.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert bundle.val.targets.tolist() == written["test_batch"][1]
    # Rows are 1024 red, then green, then blue values: image 0's green pixel (row 0, col 1) is value 1025.
    raw = torch.as_tensor(written["data_batch_1"][0][:, 1025], dtype=torch.float32)
    green = bundle.train.inputs[:8, 1, 0, 1]
    assert torch.corrcoef(torch.stack([raw, green]))[0, 1] > 0.999
    assert torch.allclose(bundle.train.inputs.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)


def test_cifar10_missing_files_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_data(DataSettings(dataset="cifar10", data_dir=tmp_path), CPU)

    assert "data_batch_1" in caught.value.message
    assert "download = true under [data] in copilot.toml" in caught.value.hint, "copilot has no --download flag"
    assert str(tmp_path) in caught.value.hint


def test_cifar10_download_without_torchvision_is_one_line_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)

    with pytest.raises(DataError) as caught:
        load_data(DataSettings(dataset="cifar10", data_dir=tmp_path, download=True), CPU)

    assert "torchvision" in caught.value.message
    assert "\n" not in caught.value.message
    assert "torchvision" in caught.value.hint


def test_cifar10_corrupt_batch_is_a_data_error(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path, per_batch=2)
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")

    with pytest.raises(DataError, match="data_batch_3"):
        load_data(DataSettings(dataset="cifar10", data_dir=tmp_path), CPU)


# --------------------------------------------------------------------------- image folders


def test_imagefolder_without_a_usable_torchvision_is_one_line_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On this CPU build the real import fails too (RuntimeError); None makes it fail everywhere.
    monkeypatch.setitem(sys.modules, "torchvision", None)
    (tmp_path / "cat").mkdir()

    with pytest.raises(DataError) as caught:
        load_data(DataSettings(dataset="imagefolder", data_dir=tmp_path), CPU)

    assert caught.value.message.startswith("reading an image folder needs torchvision")
    assert "\n" not in caught.value.message
    assert "pip install" in caught.value.hint


def test_imagefolder_needs_a_folder() -> None:
    with pytest.raises(DataError, match="needs a folder") as caught:
        load_data(DataSettings(dataset="imagefolder"), CPU)

    assert "--data-dir" in caught.value.hint


# --------------------------------------------------------------------------- custom hook


def write_module(folder: Path, source: str) -> Path:
    path = folder / "my_data.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_custom_hook_loads_classification_datasets_from_a_module(tmp_path: Path) -> None:
    path = write_module(
        tmp_path,
        """
        import torch
        from torch.utils.data import TensorDataset

        def load():
            inputs = torch.randn(30, 5)
            labels = torch.arange(30) % 4
            return TensorDataset(inputs[:20], labels[:20]), TensorDataset(inputs[20:], labels[20:])
        """,
    )

    bundle = load_data(DataSettings(dataset="custom", custom=f"{path}:load"), CPU)

    assert bundle.spec.task == "classification"
    assert bundle.spec.input_shape == (5,)
    assert (bundle.spec.num_classes, bundle.spec.train_size, bundle.spec.val_size) == (4, 20, 10)
    batches = list(iterate_batches(bundle.train, 8, shuffle=False, generator=None, device=CPU))
    assert [len(targets) for _, targets in batches] == [8, 8, 4]
    assert torch.equal(torch.cat([targets for _, targets in batches]), torch.arange(20) % 4)


def test_custom_hook_infers_a_sequence_task_and_declared_vocabulary(tmp_path: Path) -> None:
    path = write_module(
        tmp_path,
        """
        import torch
        from torch.utils.data import Dataset

        class Tokens(Dataset):
            vocab_size = 50

            def __len__(self):
                return 12

            def __getitem__(self, index):
                tokens = torch.arange(index, index + 9) % 7
                return tokens[:-1], tokens[1:]

        def load():
            return Tokens(), Tokens()
        """,
    )

    spec = load_data(DataSettings(dataset="custom", custom=f"{path}:load"), CPU).spec

    described = (spec.task, spec.input_shape, spec.input_dtype, spec.num_classes)
    assert described == ("sequence", (8,), "int64", 50)


@pytest.mark.parametrize(
    ("source", "reference_suffix", "message"),
    [
        ("def load():\n    return 1, 2, 3\n", ":load", "not a (train, val) pair"),
        ("def load():\n    return []\n", ":missing", "no function 'missing'"),
        ("import not_a_module\n", ":load", "failed to import"),
        ("def load():\n    raise ValueError('no data here')\n", ":load", "no data here"),
        (
            "import torch\nfrom torch.utils.data import TensorDataset\n"
            "def load():\n    d = TensorDataset(torch.randn(0, 2), torch.zeros(0))\n    return d, d\n",
            ":load",
            "empty split",
        ),
        (
            "class Broken:\n    def __len__(self):\n        return 3\n"
            "    def __getitem__(self, index):\n        raise OSError('disk gone')\n"
            "def load():\n    return Broken(), Broken()\n",
            ":load",
            "disk gone",
        ),
        (
            "import torch\nfrom torch.utils.data import TensorDataset\n"
            "def load():\n    d = TensorDataset(torch.randn(4, 2), torch.randn(4))\n    return d, d\n",
            ":load",
            "not class indices",
        ),
    ],
)
def test_custom_hook_problems_are_one_line_data_errors(
    tmp_path: Path, source: str, reference_suffix: str, message: str
) -> None:
    path = write_module(tmp_path, source)

    with pytest.raises(DataError, match=re.escape(message)) as caught:
        load_data(DataSettings(dataset="custom", custom=f"{path}{reference_suffix}"), CPU)

    assert "\n" not in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize("reference", [None, "my_data.py", "my_data:load", "missing_file.py:load"])
def test_custom_hook_reference_must_name_an_existing_file_and_function(reference: str | None) -> None:
    with pytest.raises(DataError) as caught:
        load_data(DataSettings(dataset="custom", custom=reference), CPU)

    assert "module.py:function" in caught.value.hint or "data.custom" in caught.value.hint


# --------------------------------------------------------------------------- batching


def numbered_split(size: int) -> TensorSplit:
    """Inputs that name their own index, so batches show which samples they hold."""
    return TensorSplit(torch.arange(size).float().unsqueeze(1), torch.arange(size))


def epoch_indices(
    split, batch_size: int, generator: torch.Generator | None, **sharding: int
) -> list[list[int]]:
    return [
        targets.tolist()
        for _, targets in iterate_batches(
            split, batch_size, shuffle=generator is not None, generator=generator, device=CPU, **sharding
        )
    ]


def test_an_epoch_covers_the_split_exactly_once_in_batches_of_the_given_size() -> None:
    split = numbered_split(103)
    generator = torch.Generator().manual_seed(0)

    batches = epoch_indices(split, 10, generator)

    assert [len(batch) for batch in batches] == [10] * 10 + [3]
    assert len(batches) == batches_per_epoch(split, 10)
    assert sorted(sum(batches, [])) == list(range(103))
    assert sum(batches, []) != list(range(103))


def test_inputs_and_targets_stay_paired_when_shuffled() -> None:
    split = numbered_split(50)

    for inputs, targets in iterate_batches(
        split, 7, shuffle=True, generator=torch.Generator().manual_seed(1), device=CPU
    ):
        assert torch.equal(inputs.squeeze(1).long(), targets)


def test_shuffling_follows_the_generator_state_and_changes_each_epoch() -> None:
    split = numbered_split(40)
    generator = torch.Generator().manual_seed(5)
    saved_state = generator.get_state()

    first_epoch = epoch_indices(split, 8, generator)
    second_epoch = epoch_indices(split, 8, generator)
    generator.set_state(saved_state)
    replayed = epoch_indices(split, 8, generator)

    assert first_epoch != second_epoch
    assert replayed == first_epoch


def test_unshuffled_batches_keep_the_split_order() -> None:
    assert sum(epoch_indices(numbered_split(25), 10, None), []) == list(range(25))


@pytest.mark.parametrize("as_dataset", [False, True], ids=["tensors", "dataset"])
def test_ranks_take_disjoint_equal_shards_of_one_order(as_dataset: bool) -> None:
    size, world_size = 101, 4
    split = numbered_split(size)
    if as_dataset:
        split = torch.utils.data.TensorDataset(split.inputs, split.targets)

    shards = []
    for rank in range(world_size):
        generator = torch.Generator().manual_seed(9)  # every rank seeds alike, as under DDP
        batches = epoch_indices(split, 8, generator, rank=rank, world_size=world_size)
        assert len(batches) == batches_per_epoch(split, 8, world_size)
        shards.append(set(sum(batches, [])))

    assert all(len(shard) == size // world_size for shard in shards)
    assert all(not (a & b) for i, a in enumerate(shards) for b in shards[i + 1 :])
    assert len(set().union(*shards)) == size - size % world_size


def test_a_rank_outside_the_world_is_refused() -> None:
    with pytest.raises(ValueError, match="rank 2"):
        epoch_indices(numbered_split(10), 4, None, rank=2, world_size=2)
