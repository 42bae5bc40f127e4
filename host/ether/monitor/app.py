"""The monitor app: composes the widgets, takes a snapshot of the model on a timer, runs commands.

Data flows down (the ``snapshot`` reactive, which every widget watches); choices flow up as messages
(a highlighted row, a dialog's request); commands go to the session on worker threads, so a slow
reply never freezes the screen.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from rich.text import Text
from textual import events, work
from textual.app import App, ComposeResult, ScreenStackError
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.reactive import var
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Header, Input, RichLog, Static, Tree

from ether.data.recorder import journal
from ether.monitor.commands import CommandFailed, Commands
from ether.monitor.formats import Format
from ether.monitor.model import LIVE, LogLine, SessionModel, Snapshot, numeric_fields
from ether.monitor.screens import (
    CallScreen,
    ConfirmScreen,
    Dialog,
    DrainScreen,
    FieldScreen,
    HelpScreen,
    PublishScreen,
    TextScreen,
)
from ether.monitor.widgets import (
    Banner,
    DevicesTable,
    InstancesTable,
    KeysFooter,
    LiveTable,
    LogPanel,
    PayloadView,
    Plots,
    RecorderPanel,
    TopicsTable,
    TopicTree,
)

REFRESH = 0.5  # s between snapshots: the screen's pace, whatever the message rate
INSTANCE_ACTIONS = ("pause", "start", "save_all", "restart", "stop", "launch")
COMPACT_BELOW = Size(110, 30)  # a terminal narrower or shorter than this shows one panel at a time
PANELS = ("instances", "devices", "topics", "plots", "log")  # in that order on Tab
D = TypeVar("D", bound=Dialog[Any])


class MonitorApp(App[int]):
    CSS_PATH = "monitor.tcss"
    TITLE = "Ether monitor"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit_monitor", "Quit"),
        Binding("ctrl+c", "quit_monitor", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help"),
        Binding("tab", "panel(1)", "Next panel", show=False, priority=True),
        Binding("shift+tab", "panel(-1)", "Previous panel", show=False, priority=True),
        Binding("p", "pause", "Pause"),
        Binding("s", "start", "Start"),
        Binding("a", "save_all", "Save all"),
        Binding("r", "restart", "Restart"),
        Binding("x", "stop", "Stop"),
        Binding("l", "launch", "Launch"),
        Binding("c", "call", "Call"),
        Binding("m", "publish", "Publish"),
        Binding("f", "plot", "Plot"),
        Binding("t", "topic_tree", "Tree", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("o", "sort", "Sort", show=False),
        Binding("O", "sort_reverse", "Reverse", show=False),
        Binding("w", "write_log", "Write log", show=False),
        Binding("e", "end_session", "End"),
    ]

    # a var: setting it must not repaint the whole screen (each widget refreshes what changed in it)
    snapshot: var[Snapshot | None] = var(None, always_update=True)

    def __init__(
        self,
        model: SessionModel,
        commands: Commands,
        link: Any,
        fmt: Format | None = None,
        subtitle: str = "",
        refresh_every: float = REFRESH,
    ) -> None:
        super().__init__()
        self.model, self.commands, self.link = model, commands, link
        self.fmt = fmt or Format()
        self.refresh_every = refresh_every
        self.subtitle = subtitle
        self.topic: str | None = None  # the last topic highlighted: the payload view shows it
        self.ending = False
        self.forced = False
        self.compact = False
        self.panel = 0  # index in PANELS of the one shown on a small terminal
        self.composed = False  # a resize can come before the widgets are there
        self.filtering: LiveTable | None = None  # the table the filter line is typed for
        self.changes = -1  # the model's count of messages at the last tick
        self.idle_ticks = 0  # ticks in a row without a new message
        self.tree_view = False  # the topics shown as a tree of their levels (t) instead of the table
        self.latest: Snapshot | None = None  # the newest snapshot, also while a dialog holds the screen
        self.held_log: list[LogLine] = []  # log lines not shown yet (a dialog is on top)
        self.dialogs: dict[type[Dialog[Any]], Dialog[Any]] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Banner(id="banner")
        yield RecorderPanel(self.fmt, id="recorder")
        yield Static(id="panels")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield InstancesTable(self.fmt, id="instances")
                yield DevicesTable(self.fmt, id="devices")
                yield Plots(id="plots")
            with Vertical(id="right"):
                yield TopicsTable(self.fmt, id="topics")
                yield TopicTree(self.fmt, id="topic-tree", classes="-hidden")
                yield PayloadView(self.fmt, id="payload")
        yield LogPanel(self.fmt, id="log")
        yield Input(placeholder="filter rows (Enter or Esc to leave)", id="table-filter")
        yield KeysFooter()

    def on_mount(self) -> None:
        where = f"session '{self.model.topics.session}' on {self.fmt.url(self.model.url)}"
        self.sub_title = f"{where} · {self.subtitle}" if self.subtitle else where
        for widget_id, title in (
            ("instances", "Instances"),
            ("devices", "Devices"),
            ("plots", "Plots"),
            ("topics", "Topics"),
            ("topic-tree", "Topics by level (t: the table)"),
            ("log", "Errors and log"),
        ):
            self.query_one(f"#{widget_id}").border_title = title
        self.payload_view = self.query_one(PayloadView)  # the main screen's, whatever screen is on top
        self.main_screen = self.screen
        self.query_one("#table-filter").display = False
        self.composed = True
        self._layout(self.size)
        self.query_one(InstancesTable).focus()
        self.tick()
        self.set_interval(self.refresh_every, self.tick)
        self.screen_change_signal.subscribe(self, self._screen_changed)
        # What exists once the screen is drawn (modules, widgets, styles) lives as long as the app: out
        # of the collector's generations, a full collection no longer walks it (at 2000 msg/s one took
        # ~60 ms of CPU every few seconds, each a stall of the screen and its keys)
        self.call_after_refresh(gc.freeze)

    def _screen_changed(self, screen: object) -> None:
        """A dialog closed: the screen behind it shows the newest snapshot at once."""
        if (
            not isinstance(screen, ModalScreen)
            and self.latest is not None
            and self.latest is not self.snapshot
        ):
            self.snapshot = replace(self.latest, log=tuple(self.held_log))
            self.held_log.clear()

    def tick(self) -> None:
        """Take the model's snapshot (the widgets watch it); notice when the session has ended. While
        nothing arrives, only every other tick: ages and uptimes still move, at half the cost."""
        changes, self.changes = self.changes, self.model.changes
        self.idle_ticks = self.idle_ticks + 1 if changes == self.changes else 0
        if self.idle_ticks % 2:
            return
        try:
            screen = self.screen
        except ScreenStackError:
            return  # closing: its screens are gone (the kept dialogs last a moment longer)
        snapshot = self.model.snapshot()
        if snapshot.log:
            self.held_log.extend(snapshot.log)
        if isinstance(screen, ModalScreen):
            self.latest = snapshot  # a dialog is on top: the screen behind it stays as it was (redrawing
            # it dimmed costs as much as the whole screen), its new log lines wait
        else:
            self.latest = self.snapshot = replace(snapshot, log=tuple(self.held_log))
            self.held_log.clear()
        if self.link.owns_session and self.link.finished(snapshot):
            self.exit(self.link.returncode)  # drained and sealed (or it ended on its own)
        elif self.ending and self.link.finished(snapshot) and isinstance(screen, DrainScreen):
            screen.done = True
            if not screen.sealed:
                screen.sealed = self.link.seal(snapshot)
            if self.forced:
                self.exit(0)

    # -- the layout: every panel side by side, or one at a time on a small terminal ----------------

    def on_resize(self, event: events.Resize) -> None:
        if self.composed:
            self._layout(event.size)

    def _layout(self, size: Size) -> None:
        self.compact = size.width < COMPACT_BELOW.width or size.height < COMPACT_BELOW.height
        self.main_screen.set_class(self.compact, "-compact")
        self.query_one(Footer).compact = self.compact
        self._show_panel()

    def _show_panel(self) -> None:
        shown = PANELS[self.panel]
        for name in PANELS:
            self.query_one(f"#{name}").set_class(self.compact and name != shown, "-away")
        on_left = shown in ("instances", "devices", "plots")
        self.query_one("#left").set_class(self.compact and not on_left, "-away")
        self.query_one("#right").set_class(self.compact and (on_left or shown == "log"), "-away")
        self.query_one("#main").set_class(self.compact and shown == "log", "-away")
        bar = Text(" ")
        for i, name in enumerate(PANELS):
            bar.append(f" {name.capitalize()} ", "reverse bold" if i == self.panel else "")
        bar.append("   Tab: next panel · ?: help", "dim")
        self.query_one("#panels", Static).update(bar)

    def action_panel(self, step: int) -> None:
        """On a small terminal, Tab shows the next panel (and focuses its table)."""
        self.panel = (self.panel + step) % len(PANELS)
        self._show_panel()
        focus: dict[str, type[Widget]] = {
            "instances": InstancesTable,
            "devices": DevicesTable,
            "topics": TopicTree if self.tree_view else TopicsTable,
            "log": RichLog,
        }
        kind = focus.get(PANELS[self.panel])
        self.set_focus(self.query_one(kind) if kind else None)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """Whatever brought the focus somewhere (a key, the mouse), its panel is the one shown."""
        for node in event.widget.ancestors_with_self:
            panel = "topics" if node.id == "topic-tree" else node.id
            if panel in PANELS and self.compact and PANELS.index(panel) != self.panel:
                self.panel = PANELS.index(panel)
                self._show_panel()
                return

    def action_topic_tree(self) -> None:
        """``t``: the topics as a tree of their levels, or as the table again."""
        self.tree_view = not self.tree_view
        table, tree = self.query_one(TopicsTable), self.query_one(TopicTree)
        table.set_class(self.tree_view, "-hidden")
        tree.set_class(not self.tree_view, "-hidden")
        self.set_focus(tree if self.tree_view else table)

    def dialog(self, kind: type[D]) -> D:
        """The app's one dialog of this kind: made when it is first opened, kept while it is closed (see
        ``Dialog``). The call form is made for each call: its fields are built per method anyway."""
        dialog = self.dialogs.get(kind)
        if dialog is None:
            dialog = self.dialogs[kind] = kind()
            self.install_screen(dialog, kind.__name__)
        return dialog  # type: ignore[return-value]

    def action_help(self) -> None:
        self.push_screen(self.dialog(HelpScreen))

    # -- what the user picked ---------------------------------------------------------------------

    def on_live_table_highlighted(self, event: LiveTable.Highlighted) -> None:
        if event.kind == "topic":
            self.topic = self.model.watched = event.name
            self.payload_view.topic = event.name

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a row: an instance's or a board's last error in full; on a topic, its messages."""
        table, name = event.data_table, event.row_key.value
        if not isinstance(table, LiveTable) or name is None or self.snapshot is None:
            return
        if table.kind == "topic":
            self.payload_view.focus()
            return
        row = self.snapshot.instance(name) if table.kind == "instance" else self.snapshot.device(name)
        error = row.error if row is not None else ""
        title = f"Last error of {table.kind} '{name}'"
        self.push_screen(self.dialog(TextScreen).fill(title, error or "(no error so far)"))

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        """Enter on a topic of the tree: to its messages, as from the table."""
        if isinstance(event.control, TopicTree) and event.control.selected is not None:
            self.payload_view.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys that make no sense now are hidden from the footer (and do nothing)."""
        if action == "quit_monitor":
            return True
        if self.ending or isinstance(self.screen, ModalScreen):
            return False
        if action == "panel":
            return self.compact
        target = self._target()
        kind = target[0] if target else None
        if action in INSTANCE_ACTIONS:
            return kind == "instance"
        if action == "call":
            return kind in ("instance", "device")
        if action == "plot":
            return kind == "topic"
        if action == "topic_tree":
            return isinstance(self.focused, (TopicsTable, TopicTree))
        if action in ("sort", "sort_reverse"):
            return isinstance(self.focused, LiveTable)
        return True

    # -- instance actions ----------------------------------------------------------------------

    def _instance(self) -> str | None:
        target = self._target()
        return target[1] if target and target[0] == "instance" else None

    def _target(self) -> tuple[str, str] | None:
        """What the keys act on: the row under the cursor of the focused table, and nothing else."""
        table = self.focused
        if isinstance(table, (LiveTable, TopicTree)) and table.selected is not None:
            return table.kind, table.selected
        return None

    def action_pause(self) -> None:
        name = self._instance()
        row = self.snapshot.instance(name) if name and self.snapshot else None
        if name and row is not None:
            command = "resume" if row.state == "paused" else "pause"
            self.send(f"{command} {name}", lambda: self.commands.instance(name, command))

    def action_start(self) -> None:
        self._lifecycle("start")

    def action_save_all(self) -> None:
        self._lifecycle("save_all")

    def _lifecycle(self, command: str) -> None:
        name = self._instance()
        if name:
            self.send(f"{command} {name}", lambda: self.commands.instance(name, command))

    def action_restart(self) -> None:
        self._session_command("restart", "It saves, cleans up and stops, then starts in a new process.")

    def action_stop(self) -> None:
        self._session_command("stop", "It saves, cleans up and stops; l launches it again.")

    def action_launch(self) -> None:
        self._session_command("launch")

    def _session_command(self, command: str, ask: str = "") -> None:
        """Send a session command for the focused instance; a destructive one asks first."""
        name = self._instance()
        if not name:
            return

        def go(yes: bool | None = True) -> None:
            if yes:
                self.notify(f"{command} '{name}'…", timeout=2)
                self.send(f"{command} {name}", lambda: self.commands.session(command, name))

        if ask:
            question = f"{command.capitalize()} instance '{name}'? {ask}"
            self.push_screen(self.dialog(ConfirmScreen).fill(question, command), go)
        else:
            go()

    @work(thread=True, group="commands")
    def send(self, what: str, command: Callable[[], str]) -> None:
        """Run one command on a worker thread and say how it went."""
        try:
            result = command()
        except CommandFailed as exc:
            self.call_from_thread(self.notify, str(exc), title=what, severity="error", timeout=8)
        else:
            self.call_from_thread(self.notify, result, title=what, timeout=4)

    # -- calls, messages, plots ------------------------------------------------------------------

    def action_call(self) -> None:
        target = self._target()
        if target is None or self.snapshot is None:
            return
        kind, name = target
        methods: dict[str, Any] = {}
        if kind == "instance":
            row = self.snapshot.instance(name)
            methods = {s: _argument_info(a) for s, a in (row.services if row else {}).items()}
        else:
            device = self.snapshot.device(name)
            for method, info in (device.methods if device else {}).items():
                args = info.get("args") or {}
                methods[method] = {a: {"type": t, "required": True} for a, t in args.items()}
        if not methods:
            self.notify(f"{kind} '{name}' has no methods to call", severity="warning")
            return
        self.push_screen(CallScreen(kind, name, methods))

    def on_call_screen_requested(self, event: CallScreen.Requested) -> None:
        screen = self.screen
        if event.kind == "instance":
            call = lambda: self.commands.call_service(event.target, event.method, event.args)  # noqa: E731
        else:
            call = lambda: self.commands.call_device(event.target, event.method, event.args)  # noqa: E731
        self._call(screen, call)

    @work(thread=True, group="calls")
    def _call(self, screen: CallScreen, call: Callable[[], Any]) -> None:
        try:
            answer = CallScreen.Answered(f"result: {json.dumps(call())}", True)
        except CommandFailed as exc:
            answer = CallScreen.Answered(str(exc), False)
        self.call_from_thread(screen.post_message, answer)

    def _topic(self) -> str | None:
        target = self._target()
        return target[1] if target and target[0] == "topic" else None

    def action_publish(self) -> None:
        topic, payload = self._topic() or "", ""
        row = self.snapshot.topic(topic) if self.snapshot and topic else None
        if row is not None and isinstance(row.payload, dict):
            try:
                payload = json.dumps(row.payload)
            except TypeError:  # arrays or bytes: not something to edit as JSON text
                payload = ""

        def publish(answer: tuple[str, str] | None) -> None:
            if answer is not None:
                self.send(f"publish to {answer[0]}", lambda: self.commands.publish(*answer))

        self.push_screen(self.dialog(PublishScreen).fill(topic, payload), publish)

    def action_plot(self) -> None:
        topic = self._topic()
        row = self.snapshot.topic(topic) if self.snapshot and topic else None
        fields = numeric_fields(row.payload) if row else []
        if topic is None or not fields:
            self.notify(f"'{topic}' has no numeric fields to plot", severity="warning")
            return

        def plot(field: str | None) -> None:
            if field is not None:
                shown = self.model.plot(topic, field)
                self.notify(f"{'plotting' if shown else 'stopped plotting'} {topic} {field}", timeout=3)

        self.push_screen(self.dialog(FieldScreen).fill(topic, fields), plot)

    def action_filter(self) -> None:
        """``/`` filters the focused table's rows, or else the log."""
        table = self.focused
        if not isinstance(table, LiveTable):
            self.query_one("#log-filter", Input).focus()
            return
        self.filtering = table
        line = self.query_one("#table-filter", Input)
        line.placeholder = f"filter the {table.border_title} (Enter or Esc to leave)"
        line.value = table.filter
        line.display = True
        line.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "table-filter" and self.filtering is not None:
            self.filtering.filter = event.value

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "table-filter":
            self._leave_filter()

    def _leave_filter(self) -> None:
        line = self.query_one("#table-filter", Input)
        line.display = False
        if self.filtering is not None:
            self.filtering.focus()
        self.filtering = None

    def on_key(self, event: events.Key) -> None:
        if event.key != "escape" or not isinstance(self.focused, Input):
            return
        if self.focused.id == "log-filter":
            self.query_one(InstancesTable).focus()
        elif self.focused.id == "table-filter":
            self._leave_filter()

    def action_sort(self) -> None:
        if isinstance(self.focused, LiveTable):
            self.focused.sort_next()

    def action_sort_reverse(self) -> None:
        if isinstance(self.focused, LiveTable):
            self.focused.sort_reverse()

    def action_write_log(self) -> None:
        try:
            path = self.query_one(LogPanel).export(Path.cwd(), self.model.topics.session)
        except OSError as exc:
            self.notify(f"cannot write the log: {exc}", severity="error")
        else:
            self.notify(f"the log is in {path}", title="log written", timeout=6)

    # -- the end: drain, or a forced quit that is recorded ------------------------------------------

    def action_quit_monitor(self) -> None:
        if isinstance(self.screen, ConfirmScreen):
            return
        if self.ending:
            if isinstance(self.screen, DrainScreen) and self.screen.done:
                self.exit(self.link.returncode)
            else:
                self._ask_force()
        elif self.link.owns_session:
            self._begin_end()
        else:
            self.exit(0)  # detach: the session keeps running

    def action_end_session(self) -> None:
        if self.link.owns_session:
            self._begin_end()
            return
        question = (
            f"End session '{self.model.topics.session}'? Every supervisor saves and stops its instances; "
            "the monitor shows the drain."
        )
        self.push_screen(
            self.dialog(ConfirmScreen).fill(question, "End it"),
            lambda yes: self._begin_end() if yes else None,
        )

    def _begin_end(self) -> None:
        self.ending = True
        self.refresh_bindings()
        live = {i.name for i in self.latest.instances if i.state in LIVE} if self.latest else set()
        self.push_screen(DrainScreen(self.fmt, self.model.topics.session, live))
        self.send("end the session", self.link.end)

    def _ask_force(self) -> None:
        recorder = self.latest.recorder if self.latest else None
        unconfirmed = recorder.unconfirmed if recorder else 0
        question = (
            f"Force quit? {unconfirmed} messages are not confirmed saved yet. Forcing stops the recorder "
            "now: publishers stop waiting, what is unsaved stays in their outbox files, and the session "
            "store records the forced quit and the number of unsaved messages."
        )
        self.push_screen(
            self.dialog(ConfirmScreen).fill(question, "Force quit"),
            lambda yes: self._force(unconfirmed) if yes else None,
        )

    def _force(self, unconfirmed: int) -> None:
        self.forced = True
        if self.latest is not None and self.latest.recorder.state == "ready":
            self._force_recorder(unconfirmed)
            return
        self.notify(
            "The recorder is not running: publishers give up after their drain_timeout, and the "
            "session store records what is unsaved.",
            severity="warning",
        )
        if not self.link.owns_session:
            self.exit(0)

    def _journal_forced_quit(self, unconfirmed: int) -> None:
        """Neither recorder nor session confirmed the forced quit (the command was lost): when the run
        folder is on this machine, the session's journal records it (the seal merges it)."""
        run_dir = Path(self.latest.recorder.run_dir) if self.latest and self.latest.recorder.run_dir else None
        if run_dir is not None and run_dir.is_dir():
            source = self.model.stamper.source
            journal.note(
                run_dir, "forced_quit", source, by=source, unconfirmed=unconfirmed, noted_by="monitor"
            )

    @work(thread=True, group="commands")
    def _force_recorder(self, unconfirmed: int) -> None:
        """Stop the recorder, recording the forced quit; an attached monitor leaves, ``ether run`` waits
        for its session process to finish (quickly now: nobody waits for confirmations any more)."""
        try:
            self.call_from_thread(self.notify, self.commands.force_end(unconfirmed), title="force quit")
        except CommandFailed as exc:
            self._journal_forced_quit(unconfirmed)
            self.call_from_thread(self.notify, str(exc), title="force quit", severity="error")
        if not self.link.owns_session:
            self.call_from_thread(self.exit, 0)


def _argument_info(args: Any) -> dict[str, dict[str, Any]] | None:
    """A service's arguments as the call form needs them (None when the instance did not say)."""
    if not isinstance(args, dict):
        return None
    return {name: info if isinstance(info, dict) else {"type": str(info)} for name, info in args.items()}
