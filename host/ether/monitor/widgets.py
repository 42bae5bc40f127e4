"""The monitor's widgets. Each one watches the app's ``snapshot``, keeps the part it shows as its own
reactive state, and posts a message when the user picks something; colours are in monitor.tcss."""

from __future__ import annotations

import math
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
from textual.reactive import reactive, var
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input, RichLog, Static, Tree
from textual.widgets.tree import TreeNode

from ether.contract import arrays
from ether.monitor.formats import Format
from ether.monitor.model import LOG_LINES, Frame, LogLine, Snapshot

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


LAG_SHOWN = 0.5  # s: a broker lag the recorder line shows (below it, every broker has it)


class KeysFooter(Footer):
    """The footer of the keys that apply, built again only when they change. Textual's rebuilds its
    keys (a widget each, styled and laid out) whenever its screen's bindings are refreshed: a dialog
    opening and closing refreshed them twice, each a layout of the screen behind the dialog and a
    redraw of the dialog over it, though a covered screen's keys are not seen and come back the same."""

    _shown: tuple[tuple[object, ...], ...] | None = None  # the keys built last

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True
        if not (screen.app.app_focus and self.is_attached and screen is self.screen and screen.is_active):
            return
        shown = tuple(
            (binding.key, binding.action, binding.description, enabled, tooltip)
            for _, binding, enabled, tooltip in screen.active_bindings.values()
            if binding.show
        )
        if shown != self._shown:
            self._shown = shown
            self.call_after_refresh(self.recompose)


class Banner(Static):
    """Impossible to miss: every threat to the data-saving guarantee, or nothing at all."""

    problems: var[tuple[str, ...]] = var(())

    def on_mount(self) -> None:
        self.display = False
        self._rows = 0  # lines it takes: the screen is laid out again only when they change
        self.watch(self.app, "snapshot", self._take)

    def _take(self, snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            self.problems = snapshot.problems

    def watch_problems(self, problems: tuple[str, ...]) -> None:
        """Its counts change every tick while the recorder is behind: redrawn in place, unless its
        height changes (a new problem, or a line that wraps once more)."""
        width = max(self.size.width, 1)
        rows = sum(-(-(len(p) + 3) // width) for p in problems)
        self.display = bool(problems)
        self.update(Text("\n".join(f"!! {p}" for p in problems)), layout=rows != self._rows)
        self._rows = rows


class RecorderPanel(Static):
    """One line: the recorder's state, what it saved, what waits, the gap ledger, the store."""

    COMPONENT_CLASSES = {"state--ok", "state--warn", "state--bad"}
    line: var[tuple[str, ...]] = var(())

    def __init__(self, fmt: Format, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fmt = fmt

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self._take)

    def _take(self, snapshot: Snapshot | None) -> None:
        if snapshot is None:
            return
        r, f = snapshot.recorder, self.fmt
        events = [f"conflicts {r.conflicts:,}"] if r.conflicts else []
        events += [f"unverified {r.unverified:,}"] if r.unverified else []
        lag = [f"broker lag {f.seconds(r.broker_lag)}"] if (r.broker_lag or 0) >= LAG_SHOWN else []
        self.line = (
            r.condition,
            f"saved {f.count(r.saved)}",
            f"backlog {f.count(r.backlog)}",
            f"unconfirmed {f.count(r.unconfirmed)}",
            f"gaps {f.count(r.missing)}",
            *events,
            *lag,
            f"store {f.size(r.size)}",
            f.path(r.run_dir),
        )

    def watch_line(self, line: tuple[str, ...]) -> None:
        if not line:
            return
        text = Text("Recorder ")
        text.append(line[0], self.get_component_rich_style(state_class(line[0])))
        text.append("  " + " · ".join(line[1:]))
        self.update(text, layout=False)  # one line, always: no need to lay the screen out again


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
    contents: var[tuple[tuple[str, tuple[str, ...]], ...]] = var(())  # cells refresh what changed
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
        self._bound_to: str | None = None  # the row the footer's keys were last worked out for

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
        same_rows = list(new) == list(self._shown)
        if not same_rows or any(w > old for w, old in zip(widths, self._widths, strict=True)):
            # Rebuilt when the rows change or a cell outgrows its column; a column narrows only with
            # the rows (a rate that flickers between '998/s' and '1.0k/s' must not rebuild each tick)
            widths = widths if not same_rows else tuple(map(max, widths, self._widths))
            selected = self.selected
            self.clear(columns=True)
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
        subtitle = " · ".join(parts)
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.post_message(self.Highlighted(self.kind, event.row_key.value))
        self._describe()
        # Which keys apply depends on the row; this screen's, not the app's current one: rows are
        # also rebuilt while the app closes, when it has no screen left (ScreenStackError). Only when
        # the row changed: the footer is built again each time (rows are rebuilt as columns widen).
        if event.row_key.value != self._bound_to:
            self._bound_to = event.row_key.value
            self.refresh_bindings()

    def on_focus(self) -> None:
        if self.selected is not None:
            self.post_message(self.Highlighted(self.kind, self.selected))
        self._describe(focused=True)

    def on_blur(self) -> None:
        self._describe(focused=False)


class InstancesTable(LiveTable):
    kind = "instance"
    columns_shown = (
        "instance",
        "state",
        "host:pid",
        "restarts",
        "in",
        "out",
        "failed",
        "unproc",
        "uptime",
        "last error",
    )
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
                    f"{i.failed:,}",
                    "-" if i.unprocessed is None else f"{i.unprocessed:,}",
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


TOPIC_LEVELS = re.compile(r"([/.])")  # a topic's levels: 'lab/bench1.temperature' -> lab, bench1, temperature


class TopicTree(Tree[str]):
    """The topics grouped by their levels (``/`` and ``.``), each node with its messages and rate summed
    over what is under it; a leaf is a topic (keys act on it as on a row of the Topics table)."""

    kind = "topic"

    def __init__(self, fmt: Format, **kwargs: Any) -> None:
        super().__init__("topics", data="", **kwargs)
        self.fmt = fmt
        self.show_root = False
        self.guide_depth = 2
        self._by_prefix: dict[str, TreeNode[str]] = {"": self.root}
        self._labels: dict[str, str] = {}

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self._take)

    def _take(self, snapshot: Snapshot | None) -> None:
        if snapshot is None or not self.display:
            return  # hidden: nothing to draw (it catches up when it is shown)
        totals: dict[str, list[float]] = {}  # prefix -> [topics, messages, rate]
        for t in snapshot.topics:
            parts = TOPIC_LEVELS.split(t.topic)
            for end in range(1, len(parts) + 1, 2):
                prefix = "".join(parts[:end])
                if prefix not in self._by_prefix:
                    parent = self._by_prefix["".join(parts[: max(end - 2, 0)])]
                    parent.allow_expand = True  # a topic can also be the level of others ('a', 'a/b')
                    leaf = end == len(parts)
                    node = parent.add(prefix, data=prefix, expand=True, allow_expand=not leaf)
                    self._by_prefix[prefix] = node
                total = totals.setdefault(prefix, [0, 0, 0.0])
                total[0] += 1
                total[1] += t.count
                total[2] += t.rate
        for prefix, (topics, count, rate) in totals.items():
            node = self._by_prefix[prefix]
            name = TOPIC_LEVELS.split(prefix)[-1]
            under = f" ({int(topics)} topics)" if node.allow_expand else ""
            label = f"{name}{under}  {int(count):,} msgs · {self.fmt.rate(rate)}"
            if self._labels.get(prefix) != label:
                self._labels[prefix] = label
                node.set_label(label)

    @property
    def selected(self) -> str | None:
        """The topic under the cursor (None on a group of topics)."""
        node = self.cursor_node
        return node.data if node is not None and not node.allow_expand and node.data else None

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        event.stop()
        if self.selected is not None:
            self.post_message(LiveTable.Highlighted(self.kind, self.selected))
        self.border_subtitle = f"keys act on: {self.selected}" if self.selected else ""
        self.refresh_bindings()

    def on_show(self) -> None:
        self._take(getattr(self.app, "snapshot", None))


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
    # vars: what changes is drawn by the payload's Static and the border, not by this container
    topic: var[str | None] = var(None)
    payload: var[Any] = var(None)
    history: var[tuple[tuple[float, Any], ...]] = var(())
    paused: var[bool] = var(False)
    back: var[int] = var(0)  # messages back from the newest

    def __init__(self, fmt: Format, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fmt = fmt
        self._lines = -1  # lines of the payload shown

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
            if isinstance(payload, Frame):
                shown: Any = frame_view(payload, max(self.content_size.width, 20))
                lines = len(shown.plain.splitlines())
            else:
                shown = JSON.from_data(payload, indent=2)
                lines = shown.text.plain.count("\n")
        except (TypeError, ValueError):
            shown, lines = Text(repr(payload)), -1
        # the screen is laid out again (and redrawn whole) only when the payload's height changes
        shown_in.first(Static).update(shown, layout=lines != self._lines or lines < 0)
        self._lines = lines


ARRAY_PLOT_LINES = 8  # the mini plot of an array's channel


def outline(header: Any) -> Any:
    """A frame's header with each array as ``array <dtype> [shape]`` and each bytes value as its size."""
    if isinstance(header, dict):
        if len(header) == 1 and isinstance(ref := next(iter(header.values())), dict):
            if arrays.ARRAY in header:
                return f"array {ref.get('dtype')} {ref.get('shape')}"
            if arrays.BYTES in header:
                return f"bytes ({ref.get('nbytes')})"
        return {k: outline(v) for k, v in header.items()}
    if isinstance(header, list):
        return [outline(v) for v in header]
    return header


def frame_view(frame: Frame, width: int) -> Text:
    """A binary message: its fields, arrays as dtype and shape, and a mini plot of one channel of its
    first numeric array (along its longest axis, index 0 of the others; thinned to the width)."""
    text = JSON.from_data(outline(frame.header), indent=2).text
    if not frame.data:
        return text  # a message of the history: its outline only
    try:
        found = _first_array(frame.decoded(), "")
    except ValueError as exc:  # numpy missing, or a malformed data section: say so, show the rest
        text.append(f"\n(its arrays cannot be shown: {exc})", "yellow")
        return text
    if found is None:
        return text
    where, values, label = found
    if values:
        text.append("\n")
        text.append_text(chart(((f"{where}{label}", values),), width, ARRAY_PLOT_LINES + 1))
    return text


def _first_array(value: Any, where: str) -> tuple[str, tuple[float, ...], str] | None:
    """(its path, the values of one channel, which channel) of the first numeric array in ``value``."""
    np = arrays.numpy_if_loaded()
    if np is not None and isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.size:
        axis = int(np.argmax(value.shape))
        index = tuple(slice(None) if i == axis else 0 for i in range(value.ndim))
        channel = value[index].astype(float)
        channel = channel[:: max(1, -(-len(channel) // 400))]  # at most 400 points (a wide terminal)
        label = "[" + ", ".join(":" if i == axis else "0" for i in range(value.ndim)) + "]"
        return where or "root", tuple(float(v) for v in channel if math.isfinite(v)), label
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _first_array(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


COLOURS = ("green", "cyan", "magenta", "yellow", "bright_blue", "red")  # one per plotted field, in order
BRAILLE = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # [row of 4][column of 2] in a cell


def chart(series: tuple[tuple[str, tuple[float, ...]], ...], width: int, height: int) -> Text:
    """The fields on one scale, as braille lines (2x4 dots a cell), newest on the right: the scale on
    the left, then a legend line per field (its colour, last value, minimum and maximum)."""
    text = Text()
    for n, (name, values) in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        text.append("━━ ", colour)
        last = f"{values[-1]:g}  (min {min(values):g}, max {max(values):g})" if values else "-"
        text.append(f"{name}: {last}\n")
    values_all = [v for _, values in series for v in values]
    rows = height - len(series) - 1
    if not values_all or rows < 2:
        text.rstrip()
        return text
    low, high = min(values_all), max(values_all)
    if high == low:
        low, high = low - 1, high + 1
    labels = [f"{high:.4g}", f"{(low + high) / 2:.4g}", f"{low:.4g}"]
    margin = max(len(label) for label in labels)
    columns = max(width - margin - 1, 1)
    dots_x, dots_y = 2 * columns, 4 * rows
    cells = [[0] * columns for _ in range(rows)]
    colour_of = [[-1] * columns for _ in range(rows)]
    for n, (_, values) in enumerate(series):
        shown = values[-dots_x:]
        start = dots_x - len(shown)
        previous = None
        for i, value in enumerate(shown):
            y = round((high - value) / (high - low) * (dots_y - 1))
            x = start + i
            top, bottom = (y, y) if previous is None else (min(y, previous), max(y, previous))
            for dot in range(top, bottom + 1):  # joined to the previous value: a line, not points
                row, column = divmod(dot, 4)[0], x // 2
                cells[row][column] |= BRAILLE[dot % 4][x % 2]
                colour_of[row][column] = n
            previous = y
    label_at = {0: labels[0], (rows - 1) // 2: labels[1], rows - 1: labels[2]}
    for row in range(rows):
        text.append(label_at.get(row, "").rjust(margin) + ("┤" if row in label_at else "│"), "dim")
        run: list[str] = []
        run_colour = -2
        for column in range(columns):
            if colour_of[row][column] != run_colour and run:
                text.append("".join(run), COLOURS[run_colour % len(COLOURS)] if run_colour >= 0 else "")
                run = []
            run_colour = colour_of[row][column]
            run.append(chr(0x2800 + cells[row][column]) if cells[row][column] else " ")
        text.append("".join(run), COLOURS[run_colour % len(COLOURS)] if run_colour >= 0 else "")
        text.append("\n")
    longest = max(len(values) for _, values in series)
    text.append(" " * margin + "└" + f" last {min(longest, dots_x)} values ".center(columns, "─"), "dim")
    return text


class Plots(Widget):
    """The numeric fields the user picked (f on a topic), overlaid on one scale with a legend; redrawn
    only when their values change."""

    series: reactive[tuple[tuple[str, tuple[float, ...]], ...]] = reactive(())

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self._take)

    def _take(self, snapshot: Snapshot | None) -> None:
        if snapshot is not None and snapshot.plots != self.series:
            self.series = snapshot.plots

    def watch_series(self, series: tuple[tuple[str, tuple[float, ...]], ...]) -> None:
        self.set_class(bool(series), "-plotting")

    def render(self) -> Text:
        if not self.series:
            return Text("Press f on a topic to plot one of its numeric fields.", "dim")
        return chart(self.series, self.content_size.width, self.content_size.height)


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
        yield RichLog(id="log-lines", max_lines=LOG_LINES, wrap=True)  # long errors wrapped, not cut

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
