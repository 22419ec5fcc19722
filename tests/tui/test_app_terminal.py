"""`run_app` in a real pseudo-terminal: quit, SIGHUP and an internal error all leave a usable terminal.

Each test starts a child process that runs `run_app` on the seeded synthetic session
at 100x30, talks to it through the pty as a terminal would, and checks the exit
status, that the session was stopped (checkpointed) and that the alternate screen was
left, with no traceback painted.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LEAVE_ALTERNATE_SCREEN = b"\x1b[?1049l"
CHILD = """
import sys
sys.path.insert(0, {root!r})
from copilot.config import Settings
from copilot.tui.app import run_app
from tests.tui.synthetic import SyntheticSession, seeded_run_events

session = SyntheticSession(events=seeded_run_events(epochs_fixed=0))
if {crash!r}:
    session.tokens_spent = None  # the status line cannot format it: an internal error on the UI thread
try:
    code = run_app(session, Settings())
except Exception as error:
    print(f"run_app raised {{type(error).__name__}}; stopped={{session.stopped.is_set()}}", flush=True)
    sys.exit(1)
print(f"run_app returned {{code}}; stopped={{session.stopped.is_set()}}", flush=True)
sys.exit(code)
"""

pytestmark = pytest.mark.timeout(120)


class Child:
    def __init__(self, *, crash: bool = False) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.environ["TERM"] = "xterm-256color"
            os.execv(sys.executable, [sys.executable, "-c", CHILD.format(root=str(ROOT), crash=crash)])
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.output = bytearray()

    def read_until(self, marker: bytes, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while marker not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the child is gone and the pty closed
                    return marker in self.output
                if not chunk:
                    return marker in self.output
                self.output += chunk
        return True

    def press(self, key: bytes) -> None:
        os.write(self.fd, key)

    def wait(self) -> int:
        self.read_until(b"run_app ", timeout=30)
        self.read_until(b"stopped=", timeout=10)
        self.read_until(b"\n", timeout=5)
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)

    def text(self) -> str:
        return self.output.decode("utf-8", errors="replace")


def test_quit_stops_the_session_and_restores_the_terminal() -> None:
    child = Child()
    assert child.read_until(b"Advisor"), child.text()[-500:]
    child.press(b"q")
    assert child.read_until(b"Quit copilot?")
    child.press(b"y")
    assert child.wait() == 0
    assert "run_app returned 0; stopped=True" in child.text()
    assert LEAVE_ALTERNATE_SCREEN in child.output


def test_sighup_stops_the_session_and_exits_129() -> None:
    child = Child()
    assert child.read_until(b"Advisor"), child.text()[-500:]
    os.kill(child.pid, signal.SIGHUP)
    assert child.wait() == 129
    assert "run_app returned 129; stopped=True" in child.text()
    assert LEAVE_ALTERNATE_SCREEN in child.output


def test_an_internal_error_is_raised_to_the_caller_without_a_traceback_on_screen() -> None:
    child = Child(crash=True)
    assert child.wait() == 1
    text = child.text()
    assert "run_app raised TypeError; stopped=True" in text
    assert "Traceback" not in text and "─ locals ─" not in text
    assert LEAVE_ALTERNATE_SCREEN in child.output
