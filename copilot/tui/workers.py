"""Blocking calls off the UI thread that a quit never waits for.

A Textual thread worker cannot be stopped while it sits in a blocking call (an LLM
request, a git command, a trainer that does not answer), so the call runs in a daemon
thread of its own and the worker only waits for it, watching for its cancellation.
What the app does with the result (`BackgroundDone`, `BackgroundFailed`) is the app's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from textual.worker import WorkerCancelled, get_current_worker


def call_interruptibly(function: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking call in a daemon thread and wait for it while the calling worker is not cancelled.

    A cancelled worker returns at once by raising `WorkerCancelled`, so quitting never
    waits for an LLM call or a git command; the daemon thread ends with the process.
    """
    worker = get_current_worker()
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["result"] = function(*args)
        except BaseException as error:  # handed to the worker, which reports it
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=target, name=f"copilot-{getattr(function, '__name__', 'call')}", daemon=True).start()
    while not done.wait(0.05):
        if worker.is_cancelled:
            raise WorkerCancelled()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
