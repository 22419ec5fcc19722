"""Chart cost through the app's own path: plotext builds in the builder thread, and the UI thread's share.

Baseline, measured in the same run: what a plotext widget that builds inside
`render()` does (textual-plotext's way), per frame: every chart rebuilt with 2,000
points and parsed back with `Text.from_ansi`, on the event loop, at the sizes the
charts have on the screen.
Ours: the app's run screen over a store holding 100,000 logged steps; per frame one
new batch of steps arrives, the screen hands each chart its data, the app's
`ChartBuilder` builds every visible chart (plotext, downsampled to the width) in its
thread, and the widgets paint the cached strips. Reported: each build's CPU time (the
builder's thread; the baseline's is CPU time too: on a shared machine wall time counts
other processes), and the UI thread's wall time per frame (chart data + painting).

Prints medians and p95s at 160x48 and 80x24 and, as the LAST line, one JSON object.
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
import plotext as plt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.text import Text  # noqa: E402

from copilot.config import Settings  # noqa: E402
from copilot.events import StepBatch, StepRecord  # noqa: E402
from copilot.tui.app import CopilotApp  # noqa: E402
from copilot.tui.widgets.charts import ChartBuilder, PlotextChart  # noqa: E402
from tests.tui.synthetic import START_TIME, SyntheticSession, seeded_run_events  # noqa: E402

HISTORY_STEPS = 100_000
MODULES = ("features.0", "features.2", "features.4", "classifier.0", "classifier.2")
SIZES = ((160, 48), (80, 24))


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


def naive_frame(sizes: list[tuple[int, int]], series: list[tuple[list[float], list[float]]]) -> None:
    """Every chart rebuilt from all its points and re-parsed, as a widget building in render() would."""
    for (width, height), (xs, ys) in zip(sizes, series):
        plt.clear_figure()
        plt.plotsize(width, height)
        plt.plot(xs, ys, marker="braille")
        Text.from_ansi(plt.build())


async def measure_ours(size: tuple[int, int], frames: int) -> dict[str, object]:
    session = SyntheticSession(events=seeded_run_events(epochs_broken=1, epochs_fixed=0))
    app = CopilotApp(session, Settings(tui={"refresh_hz": 0.5}), clock=lambda: START_TIME)
    # Every frame is a real rebuild: the once-a-second limit would make most frames free.
    app.chart_builder = ChartBuilder(rebuild_interval_s=0.0, duty=1.0)
    rng = np.random.default_rng(0)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.3)
        for start in range(0, HISTORY_STEPS, 10_000):
            app.store.ingest(StepBatch.model_construct(type="steps", records=tuple(records(1000 + start, 10_000, rng))))
        screen = app.screen
        charts = [chart for chart in screen.query(PlotextChart) if chart.display]
        step = 1000 + HISTORY_STEPS
        ui_ms = []
        for _ in range(frames):
            app.store.ingest(StepBatch.model_construct(type="steps", records=tuple(records(step, 5, rng))))
            step += 5
            started = time.perf_counter()
            screen.refresh_widgets(app.store.view())
            ui_ms.append((time.perf_counter() - started) * 1000)
            while not all(chart.up_to_date for chart in charts):
                await pilot.pause(0.005)
            started = time.perf_counter()
            for chart in charts:
                for y in range(chart.size.height):
                    chart.render_line(y)
            ui_ms[-1] += (time.perf_counter() - started) * 1000
        assert len(app.store.view().steps["loss"][0]) == HISTORY_STEPS, "the store must hold the whole history"
        builds = [seconds * 1000 for seconds in app.chart_builder.build_seconds]
        return {
            "charts": [f"{chart.id}:{chart.size.width}x{chart.size.height}" for chart in charts],
            "build_ms_median": round(statistics.median(builds), 1),
            "build_ms_p95": round(statistics.quantiles(builds, n=20)[-1], 1),
            "builds_per_frame": len(charts),
            "ui_thread_ms_median": round(statistics.median(ui_ms), 2),
            "ui_thread_ms_p95": round(statistics.quantiles(ui_ms, n=20)[-1], 2),
            "sizes": [(chart.size.width, chart.size.height) for chart in charts],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30)
    args = parser.parse_args()

    result: dict[str, object] = {"history_steps": HISTORY_STEPS}
    for size in SIZES:
        label = f"{size[0]}x{size[1]}"
        ours = asyncio.run(measure_ours(size, args.frames))
        sizes = ours.pop("sizes")
        rng = np.random.default_rng(1)
        xs = list(range(2000))
        series = [(xs, rng.random(2000).tolist()) for _ in sizes]  # type: ignore[union-attr]
        naive = []
        for _ in range(max(5, args.frames // 4)):
            started = time.thread_time()  # CPU time, as the builder counts its builds
            naive_frame(sizes, series)  # type: ignore[arg-type]
            naive.append((time.thread_time() - started) * 1000)
        ours["naive_in_render_2000_points_ms_median"] = round(statistics.median(naive), 1)
        ours["naive_in_render_2000_points_ms_p95"] = round(statistics.quantiles(naive, n=20)[-1], 1)
        result[label] = ours
        print(f"{label}: {', '.join(ours['charts'])}")  # type: ignore[arg-type]
        print(f"  naive (all charts rebuilt in render(), 2,000 points each): median {ours['naive_in_render_2000_points_ms_median']} ms"
              f" CPU per frame on the event loop, p95 {ours['naive_in_render_2000_points_ms_p95']} ms")
        print(f"  ours: one build {ours['build_ms_median']} ms CPU median, p95 {ours['build_ms_p95']} ms, in the builder thread;"
              f" UI thread per frame median {ours['ui_thread_ms_median']} ms, p95 {ours['ui_thread_ms_p95']} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
