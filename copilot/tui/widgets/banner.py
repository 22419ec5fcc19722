"""The one-row banner under the status lines (the demo's): the longest of its wordings that fits.

A banner that wraps pushed the charts down by three rows at 80×24 and still stopped
mid-sentence; each wording here is a whole sentence, so a narrow terminal shows a
shorter one instead of a cut one. It renders; whoever starts the app writes the wordings.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget


def fitting_wording(wordings: Sequence[str], width: int) -> str:
    """The longest wording no wider than `width`; the shortest (cut by the row) when none fits."""
    fitting = [wording for wording in wordings if len(wording) <= width]
    return max(fitting, key=len) if fitting else min(wordings, key=len)


class Banner(Widget):
    """One row of text, worded to fit the terminal's width."""

    DEFAULT_CSS = """
    Banner {
        height: 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, wordings: Sequence[str], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.wordings = tuple(wordings)

    def render(self) -> Text:
        return Text(fitting_wording(self.wordings, self.content_size.width))
