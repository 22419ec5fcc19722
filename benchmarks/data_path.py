"""What copilot's on-device data path costs against a hand-written loop over the same tensors.

Both variants hold the same shapes split on the device and train the same bare step
(zero_grad, forward, cross-entropy, backward, SGD) on it for one epoch per block:
  hand_written   a CPU permutation moved to the device once, then `inputs[order[i:i + B]]`
  copilot        `copilot.training.data.iterate_batches` on a `TensorSplit` (the path the
                 trainer takes for every set that fits in memory)
and then the same without the training step (the data path alone).
Blocks alternate in a shuffled order; a figure is the median over repeats of the
hand-written block time over copilot's in the same repeat, i.e. copilot's samples per
second as a share of the hand-written loop's (target: at least 0.9). Prints readable lines,
then as its last line one JSON object of the figures.

    python benchmarks/data_path.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from copilot.config import DataSettings
from copilot.training.data import TensorSplit, iterate_batches, load_data
from copilot.training.hparams import build_optimizer
from instrument_overhead import HPARAMS, MODELS

BATCH_SIZE = 128
Batches = Callable[[torch.Generator], Iterator[tuple[torch.Tensor, torch.Tensor]]]


def hand_written(split: TensorSplit, device: torch.device) -> Batches:
    def batches(generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(split), generator=generator).to(device)
        for start in range(0, len(order), BATCH_SIZE):
            indices = order[start : start + BATCH_SIZE]
            yield split.inputs[indices], split.targets[indices]

    return batches


def copilot(split: TensorSplit, device: torch.device) -> Batches:
    def batches(generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iterate_batches(split, BATCH_SIZE, shuffle=True, generator=generator, device=device)

    return batches


def time_epoch(batches: Batches, step: Callable[[torch.Tensor, torch.Tensor], None] | None, device: torch.device) -> tuple[float, int]:
    generator = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    samples = 0
    for inputs, targets in batches(generator):
        if step is not None:
            step(inputs, targets)
        else:
            inputs.sum()  # touch the batch, as a step would
        samples += len(inputs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (5 if args.quick else 15)
    train_size = 2048 if args.quick else 10_000
    split = load_data(DataSettings(train_size=train_size, val_size=128), device).train
    assert isinstance(split, TensorSplit), "the shapes set is held on the device"
    model = MODELS["study"]().to(device)
    optimizer = build_optimizer(model.parameters(), HPARAMS)

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()

    paths = {"hand_written": hand_written(split, device), "copilot": copilot(split, device)}
    figures: dict[str, float] = {}
    for mode, training_step in (("with_training_step", step), ("data_only", None)):
        time_epoch(paths["copilot"], training_step, device)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in paths}
        order = list(paths)
        shuffler = random.Random(0)
        samples = 0
        for _ in range(repeats):
            shuffler.shuffle(order)
            for name in order:
                seconds, samples = time_epoch(paths[name], training_step, device)
                times[name].append(seconds)
        share = statistics.median(h / c for h, c in zip(times["hand_written"], times["copilot"]))
        figures[f"copilot_vs_hand_written_samples_per_sec_{mode}"] = round(share, 4)
        figures[f"hand_written_samples_per_sec_{mode}"] = round(samples / statistics.median(times["hand_written"]), 1)
        print(f"  {mode:20s} copilot's data path gives x{share:.3f} of the hand-written loop's samples/s ({repeats} epochs of {samples})")
    print(json.dumps({**figures, "device": str(device), "batch_size": BATCH_SIZE, "train_size": train_size, "repeats": repeats}))


if __name__ == "__main__":
    main()
