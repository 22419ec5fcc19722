"""What copilot's instruments cost: the same model, data and steps, timed in one run.

Variants, each with its own copy of one initial model and its own optimizer:
  bare            a plain loop: zero_grad, forward, cross-entropy, backward, SGD step
  study           the bare loop plus what the study's code did: `p.grad.norm().item()`
                  for every parameter, every step (one wait for the device per tensor)
  copilot         copilot's train_step with every per-step instrument on every step
                  (log=True: per-module grad norms, update ratios, non-finite checks,
                  accuracy, throughput, memory), activations at their usual interval (50)
  copilot_all     the same with activation sampling (dead/saturated units) on every step too
  copilot_default train_step at the default intervals: logged every 10, activations every 50

Each repeat runs one block of steps per variant, back to back in a shuffled order; a
variant's figure is the median over repeats of its block time divided by bare's block
time in the same repeat, because the machine is shared and its load swings. Prints
readable lines, then as the last line one JSON object with the ratios to `bare`.

    python benchmarks/instrument_overhead.py [--quick] [--device cpu|cuda] [--model study|cnn3]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from copilot.events import HParams
from copilot.training.hparams import build_optimizer, build_scheduler
from copilot.training.instruments import Instruments
from copilot.training.loop import TrainState, make_loss_fn, train_step

BATCH_SIZE = 128
CLASSES = 10
LOG_EVERY = 10  # copilot's defaults (TrainSettings.log_every, activation_every)
ACTIVATION_EVERY = 50
HPARAMS = HParams(optimizer="SGD", lr=0.01, momentum=0.9)


def study_cnn() -> nn.Module:
    """The study's baseline: one 3x3 conv 3->16, sigmoid, flatten 16x32x32 -> linear to 10."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Sigmoid(), nn.Flatten(), nn.Linear(16 * 32 * 32, CLASSES))


def three_layer_cnn() -> nn.Module:
    """A small sound CNN: three conv-batchnorm-ReLU-pool stages and a linear head."""
    stages = []
    for channels_in, channels_out in ((3, 16), (16, 32), (32, 64)):
        stages += [nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.BatchNorm2d(channels_out), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*stages, nn.Flatten(), nn.Linear(64 * 4 * 4, CLASSES))


MODELS: dict[str, Callable[[], nn.Module]] = {"study": study_cnn, "cnn3": three_layer_cnn}

Step = Callable[[torch.Tensor, torch.Tensor], None]


def bare_step(model: nn.Module, measure_like_the_study: bool) -> Step:
    optimizer = build_optimizer(model.parameters(), HPARAMS)
    parameters = list(model.parameters())

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()
        if measure_like_the_study:
            [parameter.grad.norm().item() for parameter in parameters]
        optimizer.step()

    return step


def copilot_step(model: nn.Module, device: torch.device, log_every: int, activation_every: int) -> Step:
    optimizer = build_optimizer(model.parameters(), HPARAMS)
    state = TrainState(
        model=model,
        loss_fn=make_loss_fn(model, "classification"),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, HPARAMS, steps_per_epoch=100, start_step=0),
        hparams=HPARAMS,
        instruments=Instruments(model),
        task="classification",
        device=device,
    )

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> None:
        log = state.step % log_every == 0
        train_step(state, inputs, targets, log=log, sample_activations=state.step % activation_every == 0)

    return step


def time_block(
    step: Step, batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int, device: torch.device, clock: Callable[[], float]
) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = clock()
    for index in range(steps):
        step(*batches[index % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer, shorter blocks)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", choices=sorted(MODELS), default="study")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, the same for every variant")
    parser.add_argument("--steps", type=int, help="steps per timed block")
    parser.add_argument("--repeats", type=int, help="timed blocks per variant")
    parser.add_argument("--wall", action="store_true", help="time CPU runs by the wall clock, not process CPU time")
    args = parser.parse_args()
    # A full block holds whole logging and activation cycles, so every block does the same work.
    steps = args.steps or (10 if args.quick else ACTIVATION_EVERY)
    repeats = args.repeats or (6 if args.quick else 21)
    device = torch.device(args.device)
    # On a shared CPU, wall time mostly measures the neighbours: CPU time of this process is what
    # the instruments add. A GPU's work is not CPU time, so GPU runs use the wall clock.
    use_wall_clock = args.wall or device.type == "cuda"
    clock = time.perf_counter if use_wall_clock else time.process_time
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    batches = [
        (torch.randn(BATCH_SIZE, 3, 32, 32, device=device), torch.randint(0, CLASSES, (BATCH_SIZE,), device=device))
        for _ in range(4)
    ]
    initial = MODELS[args.model]().to(device)
    variants: dict[str, Step] = {
        "bare": bare_step(copy.deepcopy(initial), measure_like_the_study=False),
        "study": bare_step(copy.deepcopy(initial), measure_like_the_study=True),
        "copilot": copilot_step(copy.deepcopy(initial), device, 1, ACTIVATION_EVERY),
        "copilot_all": copilot_step(copy.deepcopy(initial), device, 1, 1),
        "copilot_default": copilot_step(copy.deepcopy(initial), device, LOG_EVERY, ACTIVATION_EVERY),
    }
    parameters = sum(p.numel() for p in initial.parameters())
    print(
        f"model {args.model} ({parameters:,} parameters in {len(list(initial.parameters()))} tensors), "
        f"batch {BATCH_SIZE}, device {device}, {args.threads} thread(s), {repeats} x {steps} steps per variant, "
        f"timed by {'wall clock' if use_wall_clock else 'process CPU time'}"
    )
    for step in variants.values():  # warm-up: allocator, kernels, the one-time forward-order pass
        time_block(step, batches, 2, device, clock)

    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    shuffler = random.Random(0)
    for _ in range(repeats):
        shuffler.shuffle(order)
        for name in order:
            times[name].append(time_block(variants[name], batches, steps, device, clock))

    median = {name: statistics.median(blocks) for name, blocks in times.items()}
    # Each round's blocks ran back to back, so dividing within a round cancels the slow swings
    # of a shared machine's load; the median over rounds drops the bursts.
    ratios = {
        name: statistics.median(block / bare for block, bare in zip(times[name], times["bare"])) for name in variants
    }
    # Contention only ever adds time, so the fastest block of each variant is a second,
    # independent estimate of what the variant itself costs.
    fastest_ratios = {name: min(times[name]) / min(times["bare"]) for name in variants}
    for name in variants:
        print(
            f"  {name:16s} {1000 * median[name] / steps:8.2f} ms/step  x{ratios[name]:.3f} of bare"
            f"  (fastest blocks: x{fastest_ratios[name]:.3f}; max/min block {max(times[name]) / min(times[name]):.2f})"
        )
    print(f"copilot, every instrument every step (activations every {ACTIVATION_EVERY}) / bare: {ratios['copilot']:.3f}")
    print(f"copilot, activations sampled every step too / bare:                 {ratios['copilot_all']:.3f}")
    print(f"copilot at default intervals (log {LOG_EVERY}, activations {ACTIVATION_EVERY}) / bare:       {ratios['copilot_default']:.3f}")
    print(f"study's per-parameter .norm().item() / bare:                        {ratios['study']:.3f}")
    summary = {
        "copilot_vs_bare": round(ratios["copilot"], 4),
        "copilot_all_every_step_vs_bare": round(ratios["copilot_all"], 4),
        "copilot_default_intervals_vs_bare": round(ratios["copilot_default"], 4),
        "study_method_vs_bare": round(ratios["study"], 4),
        "fastest_blocks": {name: round(ratio, 4) for name, ratio in fastest_ratios.items() if name != "bare"},
        "copilot_vs_study": round(statistics.median(c / t for c, t in zip(times["copilot"], times["study"])), 4),
        "bare_ms_per_step": round(1000 * median["bare"] / steps, 3),
        "model": args.model,
        "device": str(device),
        "threads": args.threads,
        "clock": "wall" if use_wall_clock else "process_cpu",
        "batch_size": BATCH_SIZE,
        "steps_per_block": steps,
        "repeats": repeats,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
