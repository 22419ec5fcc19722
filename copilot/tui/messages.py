"""The app's own messages: what its worker threads and the session's threads post to it.

Textual's `post_message` is the one thread-safe way into the app, so everything that
happens off the UI thread and needs an answer on screen arrives as one of these, and is
handled by `CopilotApp`'s `on_...` methods on the UI thread: the ingest thread's
`AssessmentDue` and `TrainerNotice`, the session's callbacks (`TrialsStarted`,
`ProposalWithdrawn`, `HistoryChanged`), and a background call's outcome
(`BackgroundDone`, `BackgroundFailed`). A widget's own messages stay nested in the widget.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textual.message import Message

from copilot.events import Event
from copilot.tui.store import LogSource

if TYPE_CHECKING:
    from copilot.session.controller import AdvisorTurn


class AssessmentDue(Message):
    """The session says the advisor should look now; repeated ones coalesce in the queue."""

    def __init__(self, trigger: str) -> None:
        super().__init__()
        self.trigger = trigger

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, AssessmentDue)


class TrainerNotice(Message):
    """Events that deserve more than a redraw: errors, the end of training, an applied round."""

    def __init__(self, events: tuple[Event, ...]) -> None:
        super().__init__()
        self.events = events


class TrialsStarted(Message):
    """The assessment is trialling candidates (posted from its worker thread): what and for how long."""

    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line


class ProposalWithdrawn(Message):
    """The session withdrew the waiting proposal (posted from whichever thread changed the run)."""

    def __init__(self, turn: "AdvisorTurn", line: str) -> None:
        super().__init__()
        self.turn = turn
        self.line = line


class HistoryChanged(Message):
    """The session wrote a round or a round's results into git; repeated ones coalesce in the queue."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HistoryChanged)


class BackgroundDone(Message):
    """A blocking call finished in a worker thread; `then` runs with its result on the UI thread."""

    def __init__(self, then: Callable[[Any], None], result: Any) -> None:
        super().__init__()
        self.then = then
        self.result = result


class BackgroundFailed(Message):
    def __init__(self, source: LogSource, what: str, error: BaseException, then: Callable[[], None] | None) -> None:
        super().__init__()
        self.source = source
        self.what = what
        self.error = error
        self.detail = "".join(traceback.format_exception(error))
        self.then = then
