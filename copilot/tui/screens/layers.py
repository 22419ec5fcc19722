"""The layers screen: every module's gradient norm, update ratio, dead and saturated fractions.

One row per module with a text sparkline of its recent gradient norms (on the same
log scale for all rows), anomalies in colour. Click a column header or press s to
sort by it (again to reverse); rows update in place between sorts so the cursor
stays on the module being read. It reads the store's view only.
"""

from __future__ import annotations

import math
import re
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer

from copilot.numbers import compact, percent
from copilot.tui.screens.live import LiveScreen
from copilot.tui.store import ModuleRow, StoreView, module_anomaly
from copilot.tui.widgets.modules import ANOMALY_COLORS, HEALTHY_SPARK, grad_scale, text_sparkline
from copilot.tui.widgets.status import StatusBar

SPARK_WIDTH = 24
# What a reader scans for comes first, so it survives a narrow terminal.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("module", "module"),
    ("anomaly", "anomaly"),
    ("grad norm", "grad"),
    ("update ratio", "ratio"),
    ("dead", "dead"),
    ("saturated", "saturated"),
    ("grad norm history (log)", "history"),
    ("type", "type"),
    ("params", "params"),
)
# What `s` cycles through: the model's definition order first, then the columns ("module" is by name).
SORTABLE = ("order", "module", "params", "grad", "ratio", "dead", "saturated", "anomaly")
SORT_NAMES = {"order": "definition order", "module": "module name"}


def _name_key(name: str) -> tuple[object, ...]:
    """`features.2` before `features.10`: the digits in a module name compare as numbers."""
    return tuple(int(part) if index % 2 else part for index, part in enumerate(re.split(r"(\d+)", name)))


def _sort_value(row: ModuleRow, column: str, params: int | None, order: int) -> object:
    """The value a column sorts by; None when the module has none yet (those rows go last)."""
    value = {
        "order": order,
        "module": _name_key(row.name),
        "params": params,
        "grad": row.grad_norm,
        "ratio": row.update_ratio,
        "dead": row.dead_fraction,
        "saturated": row.saturated_fraction,
        "anomaly": module_anomaly(row) or "",
    }[column]
    if isinstance(value, float) and math.isnan(value):
        return math.inf  # a NaN norm is the worst there is, not an unknown
    return value


class LayersScreen(LiveScreen):
    BINDINGS = [
        Binding("escape,l", "app.show_run", "Back"),
        Binding("s", "next_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort_column = "order"
        self.sort_reverse = False
        self._names: tuple[str, ...] = ()
        self._cells: dict[str, tuple[object, ...]] = {}
        self._shown_version = -1

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        table: DataTable = DataTable(id="layers", cursor_type="row", zebra_stripes=True)
        for label, key in COLUMNS:
            table.add_column(label, key=key, width=SPARK_WIDTH if key == "history" else None)
        yield table
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._title()

    def _title(self) -> None:
        arrow = "↓" if self.sort_reverse else "↑"
        self.query_one(DataTable).border_title = f"Layers · sorted by {SORT_NAMES.get(self.sort_column, self.sort_column)} {arrow} · s: sort · S: reverse"

    # ------------------------------------------------------------------ rows

    def refresh_widgets(self, view: StoreView) -> None:
        if view.version == self._shown_version:
            return
        self._shown_version = view.version
        info = {module.name: module for module in view.model.modules} if view.model else {}
        rows = self._ordered(view.modules, info)
        scale = grad_scale(rows, SPARK_WIDTH)
        table = self.query_one(DataTable)
        names = tuple(row.name for row in rows)
        if names != self._names:
            cursor_key = self._cursor_key()
            table.clear()
            self._cells = {}
            for row in rows:
                cells = self._row_cells(row, info, scale)
                self._cells[row.name] = cells
                table.add_row(*cells, key=row.name)
            self._names = names
            if cursor_key in names:
                table.move_cursor(row=names.index(cursor_key))
            return
        for row in rows:
            cells = self._row_cells(row, info, scale)
            previous = self._cells.get(row.name, ())
            for (_, key), new, old in zip(COLUMNS, cells, previous):
                if new != old:
                    table.update_cell(row.name, key, new)
            self._cells[row.name] = cells

    def _ordered(self, rows: tuple[ModuleRow, ...], info: dict) -> list[ModuleRow]:
        order = {name: index for index, name in enumerate(info)}

        def value(row: ModuleRow) -> object:
            module = info.get(row.name)
            return _sort_value(row, self.sort_column, module.params if module else None, order.get(row.name, len(order)))

        present = [row for row in rows if value(row) is not None]
        missing = [row for row in rows if value(row) is None]
        return sorted(present, key=value, reverse=self.sort_reverse) + missing

    def _row_cells(self, row: ModuleRow, info: dict, scale: tuple[float, float] | None) -> tuple[object, ...]:
        module = info.get(row.name)
        anomaly = module_anomaly(row)
        style = ANOMALY_COLORS.get(anomaly or "", "")
        return (
            Text(row.name, style),
            Text(anomaly or "", style),
            Text(compact(row.grad_norm), style),
            compact(row.update_ratio),
            percent(row.dead_fraction, digits=0),
            percent(row.saturated_fraction, digits=0),
            Text(text_sparkline(row.grad_history, SPARK_WIDTH, scale), style or HEALTHY_SPARK),
            module.type if module else "",
            f"{module.params:,}" if module else "",
        )

    def _cursor_key(self) -> str | None:
        table = self.query_one(DataTable)
        if not self._names or not (0 <= table.cursor_row < len(self._names)):
            return None
        return self._names[table.cursor_row]

    # ------------------------------------------------------------------ sorting

    def _resort(self) -> None:
        self._names = ()  # the next refresh rebuilds the rows in the new order
        self._shown_version = -1
        self._title()
        self.copilot.refresh_screen(force=True)

    def action_next_sort(self) -> None:
        position = SORTABLE.index(self.sort_column) if self.sort_column in SORTABLE else -1
        self.sort_column = SORTABLE[(position + 1) % len(SORTABLE)]
        self.sort_reverse = self.sort_column in ("grad", "params", "dead", "saturated", "anomaly")
        self._resort()

    def action_reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._resort()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        if column not in SORTABLE:
            return
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, column not in ("order", "module")
        self._resort()
