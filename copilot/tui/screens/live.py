"""What every screen of the app shares: the status lines, refreshed from the store's view.

The app's refresh timer calls `refresh_from(view)` on the screen in front; a screen
redraws only what changed since its last call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import Screen

from copilot.tui.store import StoreView
from copilot.tui.widgets.status import StatusBar

if TYPE_CHECKING:
    from copilot.tui.app import CopilotApp


class LiveScreen(Screen):
    """A screen that follows the run: subclasses add their own widgets in `refresh_widgets`."""

    @property
    def copilot(self) -> "CopilotApp":
        return self.app  # type: ignore[return-value]

    def refresh_from(self, view: StoreView) -> None:
        status = self.query(StatusBar)
        if not status:  # a screen shown for the first time may not have composed its widgets yet
            return
        status.first().show(self.copilot.status_info(view))
        self.refresh_widgets(view)

    def refresh_widgets(self, view: StoreView) -> None:
        """Update this screen's own widgets from `view` (the status lines are done)."""

    def on_screen_resume(self) -> None:
        self.copilot.refresh_screen(force=True)
