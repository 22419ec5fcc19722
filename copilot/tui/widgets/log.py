"""The log pane: trainer, advisor and git messages, one line each.

Errors are one red line; any line's full text (a traceback, a hint, or just what
the width cut off) opens with Enter or a click, which posts `LogPane.DetailRequested`. The pane follows the
newest line unless the user scrolled up to read, and keeps a bounded number of
lines. It shows entries the store collected; it does not produce any.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from copilot.tui.store import LogPaneEntry

MAX_LINES = 1_000
LEVEL_STYLES = {"debug": "dim", "info": "", "warning": "yellow", "error": "bold red"}
SOURCE_STYLES = {"trainer": "cyan", "advisor": "magenta", "git": "green", "app": "blue"}


def entry_text(entry: LogPaneEntry) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(time.strftime("%H:%M:%S ", time.localtime(entry.time)), "dim")
    text.append(f"{entry.source:<7} ", SOURCE_STYLES[entry.source])
    text.append(entry.message, LEVEL_STYLES[entry.level])
    if entry.detail:
        text.append("  ⏎ full text", "dim italic")
    return text


class LogPane(OptionList):
    """Newest at the bottom; Enter or a click on a line opens its full text."""

    DEFAULT_CSS = """
    LogPane {
        height: 1fr;
        border: none;
        padding: 0;
    }
    """

    class DetailRequested(Message):
        def __init__(self, entry: LogPaneEntry) -> None:
            super().__init__()
            self.entry = entry

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._entries: list[LogPaneEntry] = []
        self._seen = 0  # log entries ever added to the store that this pane has shown

    def show(self, log_total: int, log_tail: tuple[LogPaneEntry, ...]) -> None:
        """Append the entries added since the last call (the store counts them; its tail is bounded)."""
        fresh = min(log_total - self._seen, len(log_tail))
        self._seen = log_total
        if fresh <= 0:
            return
        following = self.scroll_y >= self.max_scroll_y - 1
        new_entries = list(log_tail[-fresh:])
        if len(self._entries) + len(new_entries) > MAX_LINES:
            self._entries = (self._entries + new_entries)[-(MAX_LINES * 4 // 5) :]
            self.set_options(Option(entry_text(entry)) for entry in self._entries)
        else:
            self._entries.extend(new_entries)
            self.add_options(Option(entry_text(entry)) for entry in new_entries)
        if following:
            self.scroll_end(animate=False, immediate=True)

    def on_focus(self) -> None:
        # Nothing highlighted, Enter selects nothing: start on the newest line, the one most likely wanted.
        if self.highlighted is None and self.option_count:
            self.highlighted = self.option_count - 1

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        entry = self._entries[event.option_index]
        self.post_message(self.DetailRequested(entry))
