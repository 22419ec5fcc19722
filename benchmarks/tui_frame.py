"""Frame cost of the run screen's four charts: a naive plotext redraw against ours, in the same run.

Baseline (what the issue measured, ~155 ms at 160x48): four textual-plotext charts,
2,000 points each, rebuilt every frame and parsed back with `Text.from_ansi`, at the
sizes the charts have on a 160x48 screen.
Ours: the app's run screen at 160x48 over a store holding 100,000 logged steps; per
frame one new batch of steps arrives, the screen builds its chart data from the
store's view and each `MetricChart` rebuilds its strips (cached strips are not
counted as free: every frame here is a real rebuild).

Prints medians and p95s, the ratio, and as the LAST line one JSON object.
Usage: python benchmarks/tui_frame.py [--frames N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.text import Text  # noqa: E402
from textual_plotext.plot import Plot  # noqa: E402

from copilot.config import Settings  # noqa: E402
from copilot.events import StepBatch, StepRecord  # noqa: E402
from copilot.tui.app import CopilotApp  # noqa: E402
from copilot.tui.widgets.charts import MetricChart  # noqa: E402
from tests.tui.synthetic import START_TIME, SyntheticSession, seeded_run_events  # noqa: E402

HISTORY_STEPS = 100_000
MODULES = ("features.0", "features.2", "features.4", "classifier.0", "classifier.2")


def records(first_step: int, count: int, rng: np.random.Generator) -> list[StepRecord]:
    """Logged steps built without validation: the benchmark measures drawing, not pydantic."""
    losses = 2.3 * np.exp(-np.arange(first_step, first_step + count) / 30_000) + rng.normal(0, 0.02, count)
    norms = 10 ** rng.normal(-1, 0.3, (count, len(MODULES)))
    return [
        StepRecord.model_construct(
            epoch=1 + (first_step + index) // 1000, step=first_step + index, loss=float(losses[index]),
            accuracy=float(1 - losses[index] / 2.5), lr=1e-3, samples_per_sec=2400.0,
            total_grad_norm=float(np.sqrt((norms[index] ** 2).sum())),
            per_module_grad_norm=dict(zip(MODULES, norms[index].tolist())),
            per_module_update_ratio=dict(zip(MODULES, (norms[index] * 0.01).tolist())),
            nonfinite=None, device_memory_mb=None,
        )
        for index in range(count)
    ]


def naive_frame(plots: list[Plot], sizes: list[tuple[int, int]], series: list[tuple[list[float], list[float]]]) -> None:
    for plot, (width, height), (xs, ys) in zip(plots, sizes, series):
        plot.clear_figure()
        plot.plotsize(width, height)
        plot._set_size(width, height)
        plot.plot(xs, ys)
        Text.from_ansi(plot.build())


async def measure_ours(frames: int) -> tuple[list[float], list[tuple[int, int]]]:
    session = SyntheticSession(events=seeded_run_events(epochs_broken=1, epochs_fixed=0))
    app = CopilotApp(session, Settings(tui={"refresh_hz": 0.5}), clock=lambda: START_TIME)
    rng = np.random.default_rng(0)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.3)
        for start in range(0, HISTORY_STEPS, 10_000):
            app.store.ingest(StepBatch.model_construct(type="steps", records=tuple(records(1000 + start, 10_000, rng))))
        screen = app.screen
        charts = list(screen.query(MetricChart))
        sizes = [(chart.size.width, chart.size.height) for chart in charts]
        step = 1000 + HISTORY_STEPS
        timings = []
        for _ in range(frames):
            app.store.ingest(StepBatch.model_construct(type="steps", records=tuple(records(step, 5, rng))))
            step += 5
            started = time.perf_counter()
            screen.refresh_widgets(app.store.view())
            for chart in charts:
                chart.build()
            timings.append((time.perf_counter() - started) * 1000)
        assert len(app.store.view().steps["loss"][0]) == HISTORY_STEPS, "the store must hold the whole history"
    return timings, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()

    ours, sizes = asyncio.run(measure_ours(args.frames))
    rng = np.random.default_rng(1)
    xs = list(range(2000))
    series = [(xs, rng.random(2000).tolist()) for _ in sizes]
    plots = [Plot() for _ in sizes]
    naive = []
    for _ in range(max(5, args.frames // 4)):
        started = time.perf_counter()
        naive_frame(plots, sizes, series)
        naive.append((time.perf_counter() - started) * 1000)

    result = {
        "chart_sizes": [f"{width}x{height}" for width, height in sizes],
        "history_steps": HISTORY_STEPS,
        "naive_plotext_2000_points_ms_median": round(statistics.median(naive), 2),
        "naive_plotext_2000_points_ms_p95": round(statistics.quantiles(naive, n=20)[-1], 2),
        "ours_100000_steps_ms_median": round(statistics.median(ours), 2),
        "ours_100000_steps_ms_p95": round(statistics.quantiles(ours, n=20)[-1], 2),
        "speedup_median": round(statistics.median(naive) / statistics.median(ours), 1),
        "target_ms": 25,
    }
    print(f"four charts at {', '.join(result['chart_sizes'])} (a 160x48 screen)")
    print(f"naive plotext, 2,000 points each: median {result['naive_plotext_2000_points_ms_median']} ms, "
          f"p95 {result['naive_plotext_2000_points_ms_p95']} ms")
    print(f"ours, 100,000 steps of history:   median {result['ours_100000_steps_ms_median']} ms, "
          f"p95 {result['ours_100000_steps_ms_p95']} ms (target <= 25 ms)")
    print(f"ours is {result['speedup_median']}x faster")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
