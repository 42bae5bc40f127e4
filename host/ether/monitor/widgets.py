"""The monitor's widgets. Each one watches the app's ``snapshot``, keeps the part it shows as its own
reactive state, and posts a message when the user picks something; colours are in monitor.tcss."""

from __future__ import annotations

import re
import time
from collections import deque
from pathlib import Path
from typing import Any

from rich.json import JSON
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Input, Label, RichLog, Sparkline, Static

from ether.monitor.formats import Format
from ether.monitor.model import LOG_LINES, LogLine, Snapshot

BAD_STATES = (
    "dead",
    "failed",
    "lost",
    "NO",
    "NOT CONFIRMED",
    "NOT ANSWERING",
    "BEHIND",
    "absent",
    "stopped",
    "offline",
)
WARN_STATES = ("paused", "starting", "restarting", "draining", "not started", "?")
ERROR_CELL = 40  # characters of an error shown in a table; Enter opens it in full
NEW_LINES_SHOWN = (
    200  # log lines drawn per snapshot: a flood is kept (for the filter, the export) but not drawn
)
NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def state_class(state: str) -> str:
    """The component class a state is drawn with (``state--ok``, ``state--warn``, ``state--bad``)."""
    if state in BAD_STATES:
        return "state--bad"
    if state in WARN_STATES:
        return "state--warn"
    return "state--ok"


class Banner(Static):
    """Impossible to miss: every threat to the data-saving guarantee, or nothing at all."""

    problems: reactive[tuple[str, ...]] = reactive(())

    def on_mount(self) -> None:
        self.display = False
        self.watch(self.app, "snapshot", self._take)

    def _take(self, snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            self.problems = snapshot.problems

    def watch_problems(self, problems: tuple[str, ...]) -> None:
        self.display = bool(problems)
        self.update(Text("\n".join(f"!! {p}" for p in problems)))


class RecorderPanel(Static):
    """One line: the recorder's state, what it saved, what waits, the gap ledger, the store."""

    COMPONENT_CLASSES = {"state--ok", "state--warn", "state--bad"}
    line: reactive[tuple[str, ...]] = reactive(())

    def __init__(self, fmt: Format, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fmt = fmt

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self._take)

    def _take(self, snapshot: Snapshot | None) -> None:
        if snapshot is None:
            return
        r, f = snapshot.recorder, self.fmt
        self.line = (
            r.condition,
            f"saved {f.count(r.saved)}",
            f"backlog {f.count(r.backlog)}",
            f"unconfirmed {f.count(r.unconfirmed)}",
            f"gaps {f.count(r.missing)}",
            f"store {f.size(r.size)}",
            f.path(r.run_dir),
        )

    def watch_line(self, line: tuple[str, ...]) -> None:
        if not line:
            return
        text = Text("Recorder ")
        text.append(line[0], self.get_component_rich_style(state_class(line[0])))
        text.append("  " + " · ".join(line[1:]))
        self.update(text)


def sort_key(cell: str) -> tuple[int, float, str]:
    """Numbers by value (``1.2k/s``, ``1,234``), then everything else by name."""
    found = NUMBER.match(cell)
    if found is None:
        return (1, 0.0, cell.lower())
    value = float(found.group().replace(",", "") or 0)
    return (0, value * 1000 if cell[found.end() :].startswith("k") else value, cell)


class LiveTable(DataTable):
    """A table of named rows kept in step with the snapshot: cells change in place, the cursor stays.

    Rows can be filtered (``/``) and sorted (``o``, or a click on a column's header); the border says
    which row the keys act on while the table has focus."""

    COMPONENT_CLASSES = DataTable.COMPONENT_CLASSES | {"state--ok", "state--warn", "state--bad"}
    kind = ""
    columns_shown: tuple[str, ...] = ()
    state_columns: tuple[int, ...] = ()
    contents: reactive[tuple[tuple[str, tuple[str, ...]], ...]] = reactive(())
    filter: reactive[str] = reactive("")
    sorting: reactive[tuple[int, bool]] = reactive((0, False))  # (column, descending)

    class Highlighted(Message):
        """The user moved to a row: which kind of thing (instance, device, topic) and its name."""

        def __init__(self, kind: str, name: str) -> None:
            super().__init__()
            self.kind, self.name = kind, name

    def __init__(self, fmt: Format, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self.fmt = fmt
        self._shown: dict[str, tuple[str, ...]] = {}
        self._widths: tuple[int, ...] = ()
        self._all: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def on_mount(self) -> None:
        for label in self.columns_shown:
            self.add_column(label, key=label)
        self._widths = tuple(len(label) for label in self.columns_shown)
        self.watch(self.app, "snapshot", self._take)

    def _take(self, snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            self._all = self.cells_of(snapshot)
            self._arrange()

    def _arrange(self) -> None:
        """The rows the filter lets through, in the chosen order."""
        words = self.filter.lower().split()
        rows = [r for r in self._all if all(w in " ".join(r[1]).lower() for w in words)]
        column, descending = self.sorting
        if column or descending:
            rows.sort(key=lambda r: sort_key(r[1][column]), reverse=descending)
        self.contents = tuple(rows)

    def watch_filter(self) -> None:
        self._arrange()
        self._describe()

    def watch_sorting(self) -> None:
        self._arrange()
        self._describe()

    def sort_next(self) -> None:
        """Sort by the next column (after the last one: back to names)."""
        column, _ = self.sorting
        self.sorting = ((column + 1) % len(self.columns_shown), False)

    def sort_reverse(self) -> None:
        column, descending = self.sorting
        self.sorting = (column, not descending)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column, descending = self.sorting
        self.sorting = (event.column_index, not descending if column == event.column_index else False)

    def cells_of(self, snapshot: Snapshot) -> tuple[tuple[str, tuple[str, ...]], ...]:
        raise NotImplementedError

    def _cell(self, index: int, value: str) -> str | Text:
        if index in self.state_columns:
            return Text(value, self.get_component_rich_style(state_class(value)))
        return Text(value)

    def watch_contents(self, rows: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
        new = dict(rows)
        widths = tuple(
            max([len(label)] + [len(cells[i]) for _, cells in rows])
            for i, label in enumerate(self.columns_shown)
        )
        if list(new) != list(self._shown) or widths != self._widths:
            selected = self.selected
            self.clear(columns=True)  # columns as wide as what they hold now, whatever they held before
            for label, width in zip(self.columns_shown, widths, strict=True):
                self.add_column(label, key=label, width=width)
            for key, cells in rows:
                self.add_row(*(self._cell(i, c) for i, c in enumerate(cells)), key=key)
            if selected in new:
                self.move_cursor(row=self.get_row_index(selected))
            self._widths = widths
        else:
            for key, cells in rows:
                for i, (old, value) in enumerate(zip(self._shown[key], cells, strict=True)):
                    if old != value:
                        self.update_cell(key, self.columns_shown[i], self._cell(i, value))
        self._shown = new
        self._describe()

    @property
    def selected(self) -> str | None:
        """The name on the row under the cursor."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # the cursor is outside the rows while they are rebuilt
            return None

    def _describe(self, focused: bool | None = None) -> None:
        """The border's subtitle: what the keys act on (while focused), the filter and the order."""
        parts = []
        if (self.has_focus if focused is None else focused) and self.selected is not None:
            parts.append(f"keys act on: {self.selected}")
        if self.filter:
            parts.append(f"filter: {self.filter} ({len(self.contents)} of {len(self._all)})")
        column, descending = self.sorting
        if column or descending:
            parts.append(f"sorted by {self.columns_shown[column]} {'↓' if descending else '↑'}")
        self.border_subtitle = " · ".join(parts)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.post_message(self.Highlighted(self.kind, event.row_key.value))
        self._describe()
        # Which keys apply depends on the row; this screen's, not the app's current one: rows are
        # also rebuilt while the app closes, when it has no screen left (ScreenStackError).
        self.refresh_bindings()

    def on_focus(self) -> None:
        if self.selected is not None:
            self.post_message(self.Highlighted(self.kind, self.selected))
        self._describe(focused=True)

    def on_blur(self) -> None:
        self._describe(focused=False)


class InstancesTable(LiveTable):
    kind = "instance"
    columns_shown = ("instance", "state", "host:pid", "restarts", "in", "out", "uptime", "last error")
    state_columns = (1,)

    def cells_of(self, snapshot: Snapshot) -> tuple[tuple[str, tuple[str, ...]], ...]:
        f = self.fmt
        return tuple(
            (
                i.name,
                (
                    i.name,
                    i.state,
                    f.process(i.host, i.pid),
                    str(i.restarts),
                    f.rate(i.rate_in),
                    f.rate(i.rate_out),
                    f.uptime(i.since),
                    _short(i.error),
                ),
            )
            for i in snapshot.instances
        )


class DevicesTable(LiveTable):
    kind = "device"
    columns_shown = ("device", "state", "firmware", "out", "dropped", "uptime", "methods", "last error")
    state_columns = (1,)

    def cells_of(self, snapshot: Snapshot) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return tuple(
            (
                d.name,
                (
                    d.name,
                    d.state,
                    d.firmware or d.platform,
                    self.fmt.rate(d.rate_out),
                    str(d.dropped),
                    self.fmt.uptime(d.since),
                    ", ".join(d.methods),
                    _short(d.error),
                ),
            )
            for d in snapshot.devices
        )


class TopicsTable(LiveTable):
    kind = "topic"
    columns_shown = ("topic", "rate", "recorded", "msgs", "bytes/s", "last", "jitter", "stream")
    state_columns = (2,)

    def cells_of(self, snapshot: Snapshot) -> tuple[tuple[str, tuple[str, ...]], ...]:
        f = self.fmt
        return tuple(
            (
                t.topic,
                (
                    t.topic,
                    f.rate(t.rate),
                    t.recorded,
                    f"{t.count:,}",
                    f.bytes_rate(t.bytes_rate),
                    f.age(t.age),
                    f.jitter(t.jitter),
                    t.kind,
                ),
            )
            for t in snapshot.topics
        )


def _short(error: str) -> str:
    """An error as a table cell: its first line, cut (Enter on the row shows it in full)."""
    line = error.splitlines()[0] if error else ""
    return line if len(line) <= ERROR_CELL and "\n" not in error else line[: ERROR_CELL - 1] + "…"


class PayloadView(VerticalScroll):
    """The last payload of the chosen topic, as pretty JSON; paused (space), it steps through the topic's
    last messages (left/right)."""

    BINDINGS = [
        Binding("space", "pause_view", "Pause view"),
        Binding("left", "step(1)", "Older", show=False),
        Binding("right", "step(-1)", "Newer", show=False),
    ]
    topic: reactive[str | None] = reactive(None)
    payload: reactive[Any] = reactive(None)
    history: reactive[tuple[tuple[float, Any], ...]] = reactive(())
    paused: reactive[bool] = reactive(False)
    back: reactive[int] = reactive(0)  # messages back from the newest

    def __init__(self, fmt: Format, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fmt = fmt

    def compose(self) -> ComposeResult:
        yield Static("Pick a topic to see its last message.", id="payload-json")

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self._take)
        self.watch_payload(self.payload)  # a topic picked before we were mounted

    def _take(self, snapshot: Snapshot | None) -> None:
        if snapshot is None or self.paused or self.topic is None:
            return
        row = snapshot.topic(self.topic)
        if row is not None:
            self.payload = row.payload
        if snapshot.history[0] == self.topic:
            self.history = snapshot.history[1]

    def watch_topic(self, topic: str | None) -> None:
        self.paused, self.back, self.history = False, 0, ()
        self._take(self._snapshot())
        self._title()

    def _snapshot(self) -> Snapshot | None:
        """The app's newest snapshot (the one every widget watches)."""
        snapshot: Snapshot | None = getattr(self.app, "snapshot", None)
        return snapshot

    def action_pause_view(self) -> None:
        self.paused = not self.paused
        self.back = 0
        self._title()
        if not self.paused:
            self._take(self._snapshot())

    def action_step(self, older: int) -> None:
        if not self.history:
            return
        self.paused = True
        self.back = min(max(self.back + older, 0), len(self.history) - 1)
        self.payload = self.history[-1 - self.back][1]
        self._title()

    def _title(self) -> None:
        if self.topic is None:
            self.border_title = "Last message"
        elif not self.paused:
            self.border_title = f"Last message on '{self.topic}'"
        else:
            n = len(self.history)
            at = f" at {self.fmt.clock(self.history[-1 - self.back][0])}" if self.history else ""
            self.border_title = f"'{self.topic}': message {n - self.back} of {n}{at}"
        self.border_subtitle = "paused: ← → step, space resumes" if self.paused else "space pauses"

    def watch_payload(self, payload: Any) -> None:
        shown_in = self.query("#payload-json")  # empty before our children are mounted (or after)
        if self.topic is None or not shown_in:
            return
        try:
            shown: Any = JSON.from_data(payload, indent=2)
        except (TypeError, ValueError):
            shown = Text(repr(payload))
        shown_in.first(Static).update(shown)


class Plots(Vertical):
    """Sparklines of the numeric fields the user picked (f on a topic)."""

    series: reactive[tuple[tuple[str, tuple[float, ...]], ...]] = reactive(())

    def compose(self) -> ComposeResult:
        yield Label("Press f on a topic to plot one of its numeric fields.", id="plots-hint")

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self._take)

    def _take(self, snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            self.series = snapshot.plots

    def watch_series(self, series: tuple[tuple[str, tuple[float, ...]], ...]) -> None:
        shown = {line.name: line for line in self.query(PlotLine)}
        wanted = dict(series)
        for name, line in shown.items():
            if name not in wanted:
                line.remove()
        for name, values in series:
            if name in shown:
                shown[name].values = values
            else:
                self.mount(PlotLine(name, values))
        self.query_one("#plots-hint").display = not series


class PlotLine(Vertical):
    """One picked field: its name and last value, and its sparkline."""

    values: reactive[tuple[float, ...]] = reactive(())

    def __init__(self, name: str, values: tuple[float, ...]) -> None:
        super().__init__(name=name)
        self.set_reactive(PlotLine.values, values)

    def compose(self) -> ComposeResult:
        yield Label(self._title(), classes="plot-title")
        yield Sparkline(list(self.values))

    def _title(self) -> str:
        if not self.values:
            return f"{self.name}: -"
        return f"{self.name}: {self.values[-1]:g}  (min {min(self.values):g}, max {max(self.values):g})"

    def watch_values(self, values: tuple[float, ...]) -> None:
        if self.is_mounted:
            self.query_one(Label).update(self._title())
            self.query_one(Sparkline).data = list(values)


class LogPanel(Vertical):
    """Errors and log lines, newest last; the filter keeps lines containing its words."""

    COMPONENT_CLASSES = {"log--info", "log--warning", "log--error", "log--time"}
    filter: reactive[str] = reactive("")

    def __init__(self, fmt: Format, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fmt = fmt
        self.lines: deque[LogLine] = deque(maxlen=LOG_LINES)

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter the log (press / to type, Esc to leave)", id="log-filter")
        yield RichLog(id="log-lines", max_lines=LOG_LINES, wrap=False)

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self._take)

    def _take(self, snapshot: Snapshot | None) -> None:
        if snapshot is None or not snapshot.log:
            return
        self.lines.extend(snapshot.log)
        log = self.query_one(RichLog)
        shown = [line for line in snapshot.log if self._shown(line)]
        if len(shown) > NEW_LINES_SHOWN:
            hidden = len(shown) - NEW_LINES_SHOWN
            log.write(Text(f"… {hidden} more lines (w writes the whole log to a file)", "italic"))
        for line in shown[-NEW_LINES_SHOWN:]:
            log.write(self._text(line))

    def _shown(self, line: LogLine) -> bool:
        words = self.filter.lower().split()
        text = f"{line.level} {line.source} {line.text}".lower()
        return all(w in text for w in words)

    def _text(self, line: LogLine) -> Text:
        text = Text(self.fmt.clock(line.t) + " ", self.get_component_rich_style("log--time"))
        text.append(f"{line.source:7} {line.text}", self.get_component_rich_style(f"log--{line.level}"))
        return text

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter = event.value

    def watch_filter(self, _: str) -> None:
        log = self.query_one(RichLog)
        log.clear()
        for line in self.lines:
            if self._shown(line):
                log.write(self._text(line))

    def export(self, folder: Path, session: str) -> Path:
        """Write the lines the monitor keeps (the last LOG_LINES) to a text file; returns its path."""
        path = folder / f"ether-monitor-{session}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        path.write_text(
            "".join(
                f"{time.strftime('%H:%M:%S', time.localtime(line.t))} {line.level:7} {line.source:7} {line.text}\n"
                for line in self.lines
            )
        )
        return path

    def shown_lines(self) -> list[str]:
        """The lines the filter lets through (what the user sees), as plain text."""
        return [line.text for line in self.lines if self._shown(line)]
