"""The end of a session on SIGHUP or SIGTERM: a checkpoint first, then a bounded shutdown, then exit.

The normal way out (the app's exit, the headless driver's `HangUp`) restores the
terminal and stops the session, but it runs on the main thread, and a terminal that
went away can block that thread for good: Textual's output writer waits on a full
queue for a terminal nobody reads, and an asyncio signal handler never runs while the
event loop is blocked. So the first stopping signal also starts a thread of its own
that stops the session (the trainer writes its checkpoint, the round's results go into
git), gives the normal way out `GRACE_S` to finish, and then ends the process,
within `LIMIT_S` of the signal whatever the checkpoint or the terminal do.

It must not decide what a stop writes (the session does) nor print anything: the
terminal may be gone.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Protocol

# After the session stopped: time for the main thread's own exit (the terminal restored).
GRACE_S = 5.0
# From the signal to the end of the process, checkpoint included (the trainer's stop waits
# 5 s, then terminates it and waits 5 s more, then kills it).
LIMIT_S = 30.0
STOPPING_SIGNALS = (signal.SIGHUP, signal.SIGTERM)


class Stoppable(Protocol):
    def stop(self) -> None: ...


class BoundedShutdown:
    """Ends the process after the first stopping signal, the session stopped first."""

    def __init__(self, session: Stoppable) -> None:
        self._session = session
        self._begun = threading.Lock()
        self.exit_code: int | None = None

    def begin(self, signum: int) -> None:
        """Start the bounded end (once; later signals change nothing). Safe in a signal handler."""
        if not self._begun.acquire(blocking=False):
            return
        self.exit_code = 128 + signum
        threading.Thread(target=self._end, args=(self.exit_code,), name="bounded-shutdown", daemon=True).start()

    def _end(self, code: int) -> None:
        deadline = time.monotonic() + LIMIT_S
        limit = threading.Timer(LIMIT_S, os._exit, (code,))
        limit.daemon = True
        limit.start()
        try:
            self._session.stop()
        except Exception:  # the checkpoint failed (a full disk): ending is still the job
            pass
        time.sleep(max(0.0, min(GRACE_S, deadline - time.monotonic())))
        os._exit(code)  # the main thread did not finish its own exit in time: blocked on the terminal
