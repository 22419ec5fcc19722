"""The two status lines at the top of every screen: the trainer's state and the advisor's.

It shows a `StatusInfo` and redraws only when that changed, so a steady run writes
nothing here between steps that do not move the numbers shown. It must not read the
session or the store itself: the app hands it what to show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rich.text import Text
from textual.widget import Widget

AdvisorActivity = Literal["idle", "thinking", "waiting", "applying", "stopping"]

TRAINER_STATE_STYLES = {
    "starting": ("◌", "dim"),
    "running": ("●", "green"),
    "paused": ("❚❚", "yellow"),
    "held": ("❚❚", "magenta"),  # paused by the advisor's work, not by the user
    "pausing": ("❚❚", "yellow dim"),
    "evaluating": ("●", "cyan"),
    "stopping": ("■", "yellow"),
    "finished": ("■", "blue"),
    "stopped": ("■", "dim"),
    "crashed": ("✖", "bold red"),
}
ADVISOR_STATE_TEXT: dict[str, tuple[str, str]] = {
    "idle": ("idle", "dim"),
    "thinking": ("thinking", "bold yellow"),
    "waiting": ("waiting for you", "bold reverse magenta"),
    "applying": ("applying your decision", "bold yellow"),
    "stopping": ("stopping: writing a checkpoint", "bold yellow"),
}


@dataclass(frozen=True)
class StatusInfo:
    run_name: str
    requested_model: str  # the model as the user named it: all there is to show before the trainer reports
    model: str  # the class the trainer built, "" until it reports
    device: str
    trainer_state: str
    epoch: int
    epochs_total: int | None
    step: int
    samples_per_sec: float | None
    advisor_name: str
    advisor_state: AdvisorActivity
    trigger: str | None
    round: int
    tokens: int


def status_text(info: StatusInfo) -> Text:
    symbol, style = TRAINER_STATE_STYLES.get(info.trainer_state, ("●", ""))
    epochs = f"{info.epoch}/{info.epochs_total}" if info.epochs_total else str(info.epoch)
    if info.trainer_state == "paused":
        speed = "paused"  # not the rate it had before it stopped
    elif info.trainer_state == "held":
        speed = "for the advisor (p: train on)"
    else:
        speed = f"{info.samples_per_sec:,.0f} samples/s" if info.samples_per_sec is not None else "– samples/s"
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"{symbol} {info.trainer_state}", style)
    line.append(f"  epoch {epochs}  step {info.step:,}  {speed}", "bold")
    if info.model:
        line.append(f"  {info.model} on {info.device}", "")
    else:  # the trainer has not reported yet (its start takes seconds): what the user asked for
        line.append(f"  {info.requested_model}, trainer starting…", "")
    line.append(f"  {info.run_name}", "dim")
    line.append("\n")
    label, advisor_style = ADVISOR_STATE_TEXT[info.advisor_state]
    if info.advisor_state == "thinking" and info.trigger:
        label = f"{label} ({info.trigger})"
    line.append(f"advisor {info.advisor_name}: ", "")
    line.append(f" {label} ", advisor_style)
    line.append(f"  round {info.round}  {info.tokens:,} tokens", "")
    return line


class StatusBar(Widget):
    """Trainer state, epoch, step and speed; then the advisor's state, the round and the tokens spent.

    A plain widget rather than a `Static`: `Static.update` asks for a new layout of the
    whole screen, and these lines change twice a second.
    """

    DEFAULT_CSS = """
    StatusBar {
        height: 2;
        padding: 0 1;
        background: $panel;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: StatusInfo | None = None
        self._text = Text("")

    def show(self, info: StatusInfo) -> None:
        if info != self._shown:
            self._shown = info
            self._text = status_text(info)
            self.refresh()

    def render(self) -> Text:
        return self._text
