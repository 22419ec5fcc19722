"""The app under load, in a real pseudo-terminal: CPU, staleness, bytes written, key latency, quit time.

The app runs as it would for a user (the app's own `CopilotApp`, a 160x48 or 80x24
pty, TERM=xterm-256color, its plotext charts built by its own `ChartBuilder`),
driven by a LOAD GENERATOR: `tests/tui/synthetic.py`'s `SyntheticSession` with a
`SteadyStream` that delivers 100 logged steps a second in trainer-sized batches
through the same `poll_events` interface the real session has. No trainer runs, so
the numbers are the app's own (its ingest thread, store, charts and Textual).

Measured, after a warm-up:
- CPU of the app process (utime + stime from /proc, all its threads) as % of one core;
- staleness: from a metric reaching the app (the store's ingest) to a chart that
  shows it being painted, p95, as the app's charts record it (written by the child
  to a file when it exits);
- bytes per second the app writes to the terminal (read from the pty master);
- key latency: `p` (pause, then resume): the time from writing the key to the first
  output carrying the app's answer (the log line "pausing training" / "resuming
  training"), p95 over the presses; and separately `l`, which switches to the layers
  screen and back (a whole-screen repaint), to the first output with the new title;
- quit: from the `y` that confirms the quit dialog to the process's exit.
Targets (issue 13): <= 20% CPU, <= 1.5 s staleness p95, <= 50 ms p95 from key to screen;
(issue 5) <= 70 KiB/s, < 1 s to quit.
For scale it also times a bare two-screen Textual app's screen switch in the same kind
of pty, in the same run: the floor any Textual app has on this machine.
The LAST line is one JSON object. Usage: python benchmarks/tui_load.py [--size 80x24] [--seconds N] [--presses N]
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import json
import os
import pty
import select
import statistics
import struct
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 160, 48  # --size changes them (before the children start, which read them from the environment)
STEPS_PER_SEC = 100.0
PAUSE_MARK = b"pausing training"
RESUME_MARK = b"resuming training"
LAYERS_MARK = b"Layers \xc2\xb7 sorted by"  # the layers screen's title, in UTF-8
RUN_MARK = b"gradient norm"  # the gradient chart's legend: on the first screen at every size
QUIT_MARK = b"Quit copilot?"


def run_bare_child() -> None:
    """The floor: two screens of plain text and a footer, switched with `l`, nothing else."""
    from textual.app import App, ComposeResult
    from textual.screen import Screen
    from textual.widgets import Footer, Static

    def screen_of(title: bytes, fill: str) -> type[Screen]:
        class Filled(Screen):
            def compose(self) -> ComposeResult:
                yield Static(title.decode() + "\n" + (fill * (WIDTH - 10) + "\n") * (HEIGHT - 8))
                yield Footer()

        return Filled

    class Bare(App):
        MODES = {"run": screen_of(RUN_MARK, "x"), "layers": screen_of(LAYERS_MARK, "y")}
        DEFAULT_MODE = "run"
        BINDINGS = [("l", "flip", "Flip"), ("q", "exit", "Quit")]

        def action_flip(self) -> None:
            self.switch_mode("layers" if self.current_mode == "run" else "run")

        def action_exit(self) -> None:
            self.exit()

    Bare().run()


def run_child(staleness_file: str) -> None:
    """The app process: a steady 100 steps/s stream into the real app; its charts' staleness to a file at exit."""
    sys.path.insert(0, str(ROOT))
    from copilot.config import Settings
    from copilot.tui.app import CopilotApp
    from tests.tui.synthetic import SteadyStream, SyntheticSession

    session = SyntheticSession(stream=SteadyStream(steps_per_sec=STEPS_PER_SEC))
    # run_app's own steps, with the app kept for its charts' record (run_app does not return it).
    app = CopilotApp(session, Settings(), handle_signals=True)
    try:
        app.run()
    finally:
        gc.freeze()
    Path(staleness_file).write_text(json.dumps(list(app.chart_builder.staleness_s)))
    sys.exit(app.return_code or 0)


class Terminal:
    """The parent's side of the pty: a reader thread that counts bytes and finds markers."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.bytes = 0
        self.buffer = bytearray()
        self.lock = threading.Condition()
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.5)
                if not ready:
                    continue
                chunk = os.read(self.fd, 65536)
            except OSError:
                chunk = b""
            with self.lock:
                if not chunk:
                    self.closed = True
                    self.lock.notify_all()
                    return
                self.bytes += len(chunk)
                self.buffer += chunk
                del self.buffer[: max(0, len(self.buffer) - 1_000_000)]
                self.lock.notify_all()

    def mark(self) -> int:
        with self.lock:
            self.buffer.clear()
            return self.bytes

    def wait_for(self, marker: bytes, timeout: float = 10.0) -> float | None:
        """Seconds until `marker` appears in output written after the last `mark()`, or None."""
        started = time.perf_counter()
        with self.lock:
            while marker not in self.buffer:
                left = timeout - (time.perf_counter() - started)
                if left <= 0 or self.closed:
                    return None
                self.lock.wait(left)
        return time.perf_counter() - started

    def press(self, key: bytes) -> None:
        os.write(self.fd, key)


def key_latencies(terminal: Terminal, key: bytes, markers: tuple[bytes, ...], presses: int) -> list[float]:
    """Milliseconds from writing `key` to the first output with the next marker, cycling through `markers`."""
    latencies = []
    for _ in range(presses):
        for marker in markers:
            terminal.mark()
            terminal.press(key)
            latency = terminal.wait_for(marker)
            if latency is None:
                raise SystemExit(f"no {marker!r} after pressing {key!r}")
            latencies.append(latency * 1000)
            time.sleep(0.15)
    return latencies


def start_in_pty(child: str, *extra: str) -> tuple[int, Terminal]:
    """Run this script's `--child` mode in a new WIDTHxHEIGHT pseudo-terminal."""
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(TERM="xterm-256color", COLUMNS=str(WIDTH), LINES=str(HEIGHT))
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), "--child", child, *extra])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", HEIGHT, WIDTH, 0, 0))
    return pid, Terminal(fd)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the CPU and bandwidth window")
    parser.add_argument("--presses", type=int, default=20, help="round trips run screen -> layers -> run screen")
    parser.add_argument("--size", default="160x48", help="terminal size, e.g. 80x24")
    parser.add_argument("--child", choices=("app", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("staleness_file", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global WIDTH, HEIGHT
    WIDTH, HEIGHT = (int(part) for part in args.size.split("x"))
    if args.child:
        run_child(args.staleness_file) if args.child == "app" else run_bare_child()
        return

    bare_pid, bare_terminal = start_in_pty("bare", "--size", args.size)
    try:
        if bare_terminal.wait_for(RUN_MARK, timeout=60) is None:
            raise SystemExit("the bare app did not start")
        time.sleep(1.0)
        bare_switches = key_latencies(bare_terminal, b"l", (LAYERS_MARK, RUN_MARK), args.presses)
        bare_terminal.press(b"q")
        os.waitpid(bare_pid, 0)
        bare_pid = 0
    finally:
        if bare_pid:
            os.kill(bare_pid, 9)
            os.waitpid(bare_pid, 0)

    staleness_file = tempfile.NamedTemporaryFile(prefix="copilot-staleness-", suffix=".json", delete=False).name
    pid, terminal = start_in_pty("app", "--size", args.size, staleness_file)
    try:
        if terminal.wait_for(RUN_MARK, timeout=60) is None:
            raise SystemExit("the app did not draw its run screen within 60 s")
        time.sleep(3.0)  # warm-up: the store fills, caches settle

        start_bytes, start_cpu, started = terminal.mark(), cpu_seconds(pid), time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - started
        written = terminal.mark() - start_bytes
        cpu_percent = 100.0 * (cpu_seconds(pid) - start_cpu) / elapsed

        if WIDTH < 120 or HEIGHT < 36:  # compact layout: the log, where `p` answers, is the third pane
            terminal.press(b"3")
            time.sleep(0.5)
        latencies = key_latencies(terminal, b"p", (PAUSE_MARK, RESUME_MARK), args.presses)
        switches = key_latencies(terminal, b"l", (LAYERS_MARK, RUN_MARK), args.presses)

        terminal.mark()
        terminal.press(b"q")
        if terminal.wait_for(QUIT_MARK) is None:
            raise SystemExit("the quit dialog did not appear")
        time.sleep(0.2)
        quit_started = time.perf_counter()
        terminal.press(b"y")
        _, status = os.waitpid(pid, 0)
        quit_seconds = time.perf_counter() - quit_started
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)

    staleness_ms = [seconds * 1000 for seconds in json.loads(Path(staleness_file).read_text() or "[]")]
    Path(staleness_file).unlink()
    result = {
        "terminal": f"{WIDTH}x{HEIGHT}",
        "steps_per_sec": STEPS_PER_SEC,
        "window_s": round(elapsed, 1),
        "cpu_percent_of_one_core": round(cpu_percent, 1),
        "staleness_ms_p50": round(statistics.median(staleness_ms), 1) if staleness_ms else None,
        "staleness_ms_p95": round(statistics.quantiles(staleness_ms, n=20)[-1], 1) if len(staleness_ms) > 1 else None,
        "terminal_kib_per_s": round(written / elapsed / 1024, 1),
        "key_latency_ms_p50": round(statistics.median(latencies), 1),
        "key_latency_ms_p95": round(statistics.quantiles(latencies, n=20)[-1], 1),
        "screen_switch_ms_p50": round(statistics.median(switches), 1),
        "screen_switch_ms_p95": round(statistics.quantiles(switches, n=20)[-1], 1),
        "bare_textual_switch_ms_p50": round(statistics.median(bare_switches), 1),
        "bare_textual_switch_ms_p95": round(statistics.quantiles(bare_switches, n=20)[-1], 1),
        "quit_s": round(quit_seconds, 3),
        "exit_status": os.waitstatus_to_exitcode(status),
        "targets": {"cpu_percent": 20, "staleness_ms_p95": 1500, "kib_per_s": 70, "key_latency_ms_p95": 50, "quit_s": 1},
    }
    print(f"app at {WIDTH}x{HEIGHT}, {STEPS_PER_SEC:.0f} logged steps/s for {elapsed:.1f} s:")
    print(f"  CPU {result['cpu_percent_of_one_core']}% of one core (target <= 20%)")
    print(f"  staleness p50 {result['staleness_ms_p50']} ms, p95 {result['staleness_ms_p95']} ms (target <= 1500)")
    print(f"  terminal output {result['terminal_kib_per_s']} KiB/s (target <= 70)")
    print(f"  key -> screen p50 {result['key_latency_ms_p50']} ms, p95 {result['key_latency_ms_p95']} ms (target <= 50)")
    print(f"  screen switch (l) p50 {result['screen_switch_ms_p50']} ms, p95 {result['screen_switch_ms_p95']} ms; "
          f"a bare Textual app: p50 {result['bare_textual_switch_ms_p50']} ms, p95 {result['bare_textual_switch_ms_p95']} ms")
    print(f"  quit {result['quit_s']} s (target < 1), exit status {result['exit_status']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
