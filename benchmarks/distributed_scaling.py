"""What training on several ranks gives and what copilot's instruments cost there (gloo on the CPU, or NCCL).

For 1 and 2 ranks (started by torchrun, as copilot starts them), each rank times, in one
process and one run, the same model on the same global batch (split across the ranks):
  bare_ddp          a plain DDP loop (no wrapper on one rank, as copilot does): zero_grad, forward, cross-entropy, backward, SGD step
  copilot_default   copilot's `train_step` under DDP at its default intervals (logged every
                    10 steps: loss and accuracy summed across ranks, gradient norms on rank 0;
                    activations every 50)
  copilot_every     the same with every instrument on every step (activations included)
Blocks run back to back in a shuffled order (the same on every rank); a variant's figure is
the median over repeats of its block time over bare_ddp's in the same repeat, by the wall
clock (a rank waiting for another is part of the cost). Samples per second is the global
batch times the steps over bare_ddp's median block time. Prints readable lines, then as its
last line one JSON object of the figures.

    python benchmarks/distributed_scaling.py [--quick] [--ranks 1 2] [--model study|cnn3]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

GLOBAL_BATCH = 128
LOG_EVERY = 10  # copilot's defaults (TrainSettings.log_every, activation_every)
ACTIVATION_EVERY = 50


def rank_main(args: argparse.Namespace) -> None:
    """One rank's measurements; rank 0 prints them as one JSON line."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from copilot.training import distributed
    from copilot.training.hparams import build_optimizer, build_scheduler
    from copilot.training.instruments import Instruments
    from copilot.training.loop import TrainState, make_loss_fn, train_step
    from instrument_overhead import CLASSES, HPARAMS, MODELS, time_block

    torch.set_num_threads(args.threads)
    distributed.start_process_group(args.device)
    group = distributed.RankGroup.current()
    device = distributed.pick_device(args.device)
    rank_batch = distributed.rank_batch_size(GLOBAL_BATCH, group.world_size)
    torch.manual_seed(group.rank)  # each rank its own shard of samples
    batches = [
        (torch.randn(rank_batch, 3, 32, 32, device=device), torch.randint(0, CLASSES, (rank_batch,), device=device))
        for _ in range(4)
    ]
    torch.manual_seed(0)
    initial = MODELS[args.model]().to(device)

    def bare() -> object:
        # DDP as copilot wraps it: around the model when several ranks train, nothing around one.
        model = distributed.wrap_model(copy.deepcopy(initial), device)
        optimizer = build_optimizer(model.parameters(), HPARAMS)

        def step(inputs: torch.Tensor, targets: torch.Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(inputs), targets).backward()
            optimizer.step()

        return step

    def copilot(log_every: int, activation_every: int) -> object:
        model = copy.deepcopy(initial)
        optimizer = build_optimizer(model.parameters(), HPARAMS)
        state = TrainState(
            model=distributed.wrap_model(model, device),
            loss_fn=make_loss_fn(model, "classification"),
            optimizer=optimizer,
            scheduler=build_scheduler(optimizer, HPARAMS, steps_per_epoch=100, start_step=0),
            hparams=HPARAMS,
            instruments=Instruments(model),
            task="classification",
            device=device,
            group=group,
        )

        def step(inputs: torch.Tensor, targets: torch.Tensor) -> None:
            log = state.step % log_every == 0
            train_step(state, inputs, targets, log=log, sample_activations=state.step % activation_every == 0)

        return step

    variants = {"bare_ddp": bare(), "copilot_default": copilot(LOG_EVERY, ACTIVATION_EVERY), "copilot_every": copilot(1, 1)}
    steps = args.steps or (LOG_EVERY * 2 if args.quick else ACTIVATION_EVERY)
    repeats = args.repeats or (5 if args.quick else 15)
    for step in variants.values():
        time_block(step, batches, 2, device, time.perf_counter)
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    shuffler = random.Random(0)
    for _ in range(repeats):
        shuffler.shuffle(order)
        for name in order:
            dist.barrier()  # every rank starts the block together
            times[name].append(time_block(variants[name], batches, steps, device, time.perf_counter))
    if group.is_main:
        ratios = {name: statistics.median(t / b for t, b in zip(times[name], times["bare_ddp"])) for name in variants}
        # Contention only ever adds time: the fastest blocks are a second estimate of what a variant costs.
        fastest = {name: min(times[name]) / min(times["bare_ddp"]) for name in variants}
        samples_per_sec = GLOBAL_BATCH * steps / statistics.median(times["bare_ddp"])
        result = {"ranks": group.world_size, "samples_per_sec": samples_per_sec, "ratios": ratios, "fastest": fastest}
        print(json.dumps({**result, "steps": steps, "repeats": repeats}))
    distributed.end_process_group()


def run_ranks(ranks: int, args: argparse.Namespace) -> dict:
    """Start `ranks` processes through torchrun and read rank 0's JSON line."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
        str(Path(__file__).resolve()), "--as-rank", "--model", args.model, "--device", args.device, "--threads", str(args.threads),
    ]
    command += ["--quick"] if args.quick else []
    command += ["--steps", str(args.steps)] if args.steps else []
    command += ["--repeats", str(args.repeats)] if args.repeats else []
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    lines = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    if finished.returncode != 0 or not lines:
        raise SystemExit(f"{ranks} rank(s) failed:\n{finished.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer, shorter blocks)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default="study", help="study or cnn3 (benchmarks/instrument_overhead.py)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per rank")
    parser.add_argument("--steps", type=int, help="steps per timed block")
    parser.add_argument("--repeats", type=int, help="timed blocks per variant")
    parser.add_argument("--as-rank", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_rank:
        rank_main(args)
        return
    results = {ranks: run_ranks(ranks, args) for ranks in args.ranks}
    print(f"model {args.model}, global batch {GLOBAL_BATCH}, {args.device}, {args.threads} thread(s) per rank, wall clock")
    for ranks, result in results.items():
        ratios = result["ratios"]
        print(
            f"  {ranks} rank(s): {result['samples_per_sec']:9.1f} samples/s bare DDP; copilot at default intervals "
            f"x{ratios['copilot_default']:.3f}, every instrument every step x{ratios['copilot_every']:.3f} "
            f"(fastest blocks: x{result['fastest']['copilot_default']:.3f}, x{result['fastest']['copilot_every']:.3f}; "
            f"{result['repeats']} x {result['steps']} steps)"
        )
    summary: dict[str, object] = {
        f"samples_per_sec_{ranks}_ranks": round(result["samples_per_sec"], 1) for ranks, result in results.items()
    }
    if 1 in results and 2 in results:
        summary["scaling_2_vs_1_ranks"] = round(results[2]["samples_per_sec"] / results[1]["samples_per_sec"], 3)
    for ranks, result in results.items():
        summary[f"copilot_default_vs_bare_ddp_{ranks}_ranks"] = round(result["ratios"]["copilot_default"], 4)
        summary[f"copilot_every_step_vs_bare_ddp_{ranks}_ranks"] = round(result["ratios"]["copilot_every"], 4)
        summary[f"fastest_blocks_{ranks}_ranks"] = {name: round(ratio, 4) for name, ratio in result["fastest"].items() if name != "bare_ddp"}
    summary.update(model=args.model, device=args.device, global_batch=GLOBAL_BATCH, clock="wall")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
