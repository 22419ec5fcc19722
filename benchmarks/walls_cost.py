"""What the walls cost: trainer start-up and step time walled vs unwalled, and a sandbox check.

Each round starts a real trainer on the study's bad_cnn.py (CPU, part of the shapes
set, one epoch) twice, unwalled (the baseline, measured in this run) and walled
(`TrainerSpec.walled`), and times, from `TrainerProcess.start()`: the first logged
step (start-up: interpreter, walls, torch, data, model) and the end of the epoch; the
step time is the time between them divided by the steps. Then it times the sandbox
check of the same file (`check_model_code`), first in a fresh interpreter per check (the
baseline, as before the template), then in children forked from a template process:
its cold start (the template's own start and import of torch, then the first check) is
reported apart from the warm checks' median and 95th percentile. Prints one line per
measurement and, last, one JSON object.

    python benchmarks/walls_cost.py [--rounds 3] [--train-size 1024] [--fresh-checks 5] [--checks 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "sample_models" / "bad_cnn.py"


def time_trainer(run_folder: Path, *, walled: bool, train_size: int) -> tuple[float, float, int]:
    """(start-up s, step s, steps) of one epoch."""
    from copilot.config import DataSettings, TrainSettings
    from copilot.events import Finished, ModelRef, StepBatch
    from copilot.training.launcher import TrainerProcess, TrainerSpec

    spec = TrainerSpec(
        run_folder=run_folder,
        model=ModelRef(path=MODEL, name="BadCNN"),
        data=DataSettings(train_size=train_size, val_size=64),
        train=TrainSettings(device="cpu", log_every=1, hparams={"epochs": 1, "batch_size": 32}),
        walled=walled,
    )
    trainer = TrainerProcess(spec)
    started = time.perf_counter()
    trainer.start()
    first_step = finished = None
    steps = 0
    try:
        while finished is None:
            for event in trainer.poll(timeout=0.05):
                if isinstance(event, StepBatch):
                    first_step = first_step or time.perf_counter()
                    steps += len(event.records)
                if isinstance(event, Finished):
                    finished = time.perf_counter()
            if not trainer.is_alive and finished is None:
                raise SystemExit(f"the {'walled' if walled else 'unwalled'} trainer died")
    finally:
        trainer.stop(timeout=30)
    assert first_step is not None
    return first_step - started, (finished - first_step) / max(1, steps - 1), steps


def time_sandbox_checks(template, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Seconds of `count` checks through `template`, the first one included."""
    from copilot.advisor.sandbox.parent import check_model_code
    from copilot.config import SandboxSettings
    from copilot.events import DataSpec

    data = DataSpec(name="shapes", task="classification", input_shape=(3, 32, 32), input_dtype="float32", num_classes=10, train_size=1, val_size=1)
    code = MODEL.read_text(encoding="utf-8")
    times = []
    for _ in range(count):
        started = time.perf_counter()
        report = check_model_code(code, model_name="BadCNN", model_args={}, data=data, settings=SandboxSettings(), template=template)
        times.append(time.perf_counter() - started)
        if not report.ok:
            raise SystemExit(f"the sandbox check failed: {report.message}")
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=1024)
    parser.add_argument("--fresh-checks", type=int, default=5, help="checks in a fresh interpreter each (the baseline)")
    parser.add_argument("--checks", type=int, default=20, help="warm checks forked from the template")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    figures: dict[str, list[float]] = {"unwalled_startup_s": [], "walled_startup_s": [], "unwalled_step_ms": [], "walled_step_ms": []}
    with tempfile.TemporaryDirectory(prefix="walls-cost-") as root:
        for round_number in range(args.rounds):
            for walled in (False, True):
                mode = "walled" if walled else "unwalled"
                startup, step, steps = time_trainer(Path(root) / f"{mode}-{round_number}", walled=walled, train_size=args.train_size)
                figures[f"{mode}_startup_s"].append(startup)
                figures[f"{mode}_step_ms"].append(step * 1000)
                print(f"round {round_number} {mode:8s} start-up {startup:6.2f} s  step {step * 1000:7.2f} ms ({steps} steps)")
    from copilot.advisor.sandbox.template import SandboxTemplate

    fresh = time_sandbox_checks(SandboxTemplate.disabled("the baseline"), args.fresh_checks)
    template = SandboxTemplate()
    try:
        cold_started = time.perf_counter()
        template.start()
        time_sandbox_checks(template, 1)
        cold = time.perf_counter() - cold_started
        warm = time_sandbox_checks(template, args.checks)
    finally:
        template.close()
    for number, elapsed in enumerate(fresh):
        print(f"sandbox check {number}, fresh interpreter: {elapsed:.3f} s")
    print(f"sandbox template cold start (template start + first check): {cold:.3f} s")
    for number, elapsed in enumerate(warm):
        print(f"sandbox check {number}, forked from the template: {elapsed:.3f} s")
    medians = {name: statistics.median(values) for name, values in figures.items()}
    result = {
        **{name: round(value, 4) for name, value in medians.items()},
        "startup_ratio": round(medians["walled_startup_s"] / medians["unwalled_startup_s"], 3),
        "step_ratio": round(medians["walled_step_ms"] / medians["unwalled_step_ms"], 3),
        "sandbox_fresh_check_median_s": round(statistics.median(fresh), 3),
        "sandbox_fresh_check_p95_s": round(p95(fresh), 3),
        "sandbox_template_cold_start_s": round(cold, 3),
        "sandbox_template_check_median_s": round(statistics.median(warm), 3),
        "sandbox_template_check_p95_s": round(p95(warm), 3),
        "sandbox_fresh_over_template_median": round(statistics.median(fresh) / statistics.median(warm), 1),
        "sandbox_check_target_median_s": 0.5,
        "sandbox_check_target_p95_s": 1.0,
    }
    print(f"walled/unwalled: start-up x{result['startup_ratio']}, step x{result['step_ratio']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
