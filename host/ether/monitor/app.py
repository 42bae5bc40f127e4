"""The monitor app: composes the widgets, takes a snapshot of the model on a timer, runs commands.

Data flows down (the ``snapshot`` reactive, which every widget watches); choices flow up as messages
(a highlighted row, a dialog's request); commands go to the session on worker threads, so a slow
reply never freezes the screen.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Footer, Header, Input

from ether.monitor.commands import CommandFailed, Commands
from ether.monitor.formats import Format
from ether.monitor.model import SessionModel, Snapshot, numeric_fields
from ether.monitor.screens import CallScreen, ConfirmScreen, DrainScreen, FieldScreen, PublishScreen
from ether.monitor.widgets import (
    Banner,
    DevicesTable,
    InstancesTable,
    LiveTable,
    LogPanel,
    PayloadView,
    Plots,
    RecorderPanel,
    TopicsTable,
)

REFRESH = 0.5  # s between snapshots: the screen's pace, whatever the message rate
INSTANCE_ACTIONS = ("pause", "start", "save_all", "restart", "stop", "launch")


class MonitorApp(App[int]):
    CSS_PATH = "monitor.tcss"
    TITLE = "Ether monitor"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit_monitor", "Quit"),
        Binding("ctrl+c", "quit_monitor", "Quit", show=False, priority=True),
        Binding("p", "pause", "Pause/resume"),
        Binding("s", "start", "Start"),
        Binding("a", "save_all", "Save all"),
        Binding("r", "restart", "Restart"),
        Binding("x", "stop", "Stop"),
        Binding("l", "launch", "Launch"),
        Binding("c", "call", "Call"),
        Binding("m", "publish", "Publish"),
        Binding("f", "plot", "Plot"),
        Binding("slash", "filter", "Filter log"),
        Binding("e", "end_session", "End session"),
    ]

    snapshot: reactive[Snapshot | None] = reactive(None, always_update=True)

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
        self.target: tuple[str, str] | None = None  # ("instance" | "device", name) the keys act on
        self.topic: str | None = None
        self.ending = False
        self.forced = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Banner(id="banner")
        yield RecorderPanel(self.fmt, id="recorder")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield InstancesTable(self.fmt, id="instances")
                yield DevicesTable(self.fmt, id="devices")
                yield Plots(id="plots")
            with Vertical(id="right"):
                yield TopicsTable(self.fmt, id="topics")
                yield PayloadView(id="payload")
        yield LogPanel(self.fmt, id="log")
        yield Footer()

    def on_mount(self) -> None:
        where = f"session '{self.model.topics.session}' on {self.fmt.url(self.model.url)}"
        self.sub_title = f"{where} · {self.subtitle}" if self.subtitle else where
        for widget_id, title in (
            ("instances", "Instances"),
            ("devices", "Devices"),
            ("plots", "Plots"),
            ("topics", "Topics"),
            ("log", "Errors and log"),
        ):
            self.query_one(f"#{widget_id}").border_title = title
        self.payload_view = self.query_one(PayloadView)  # the main screen's, whatever screen is on top
        self.query_one(InstancesTable).focus()
        self.tick()
        self.set_interval(self.refresh_every, self.tick)

    def tick(self) -> None:
        """Take the model's snapshot (the widgets watch it); notice when the session has ended."""
        snapshot = self.model.snapshot()
        self.snapshot = snapshot
        if self.link.owns_session and self.link.finished(snapshot):
            self.exit(self.link.returncode)  # drained and sealed (or it ended on its own)
        elif self.ending and self.link.finished(snapshot) and isinstance(self.screen, DrainScreen):
            self.screen.done = True
            if self.forced:
                self.exit(0)

    # -- what the user picked ---------------------------------------------------------------------

    def on_live_table_highlighted(self, event: LiveTable.Highlighted) -> None:
        if event.kind == "topic":
            self.topic = event.name
            self.payload_view.topic = event.name
        else:
            self.target = (event.kind, event.name)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys that make no sense now are hidden from the footer (and do nothing)."""
        if action == "quit_monitor":
            return True
        if self.ending or isinstance(self.screen, ModalScreen):
            return False
        target = self._target()
        kind = target[0] if target else None
        if action in INSTANCE_ACTIONS:
            return kind == "instance"
        if action == "call":
            return kind in ("instance", "device")
        if action == "plot":
            return self._topic() is not None
        return True

    # -- instance actions ----------------------------------------------------------------------

    def _instance(self) -> str | None:
        target = self._target()
        return target[1] if target and target[0] == "instance" else None

    def _target(self) -> tuple[str, str] | None:
        """What the keys act on: the row under the cursor of the focused table, else the last one."""
        table = self.focused
        if isinstance(table, LiveTable) and table.kind != "topic" and table.selected is not None:
            return table.kind, table.selected
        return self.target

    def action_pause(self) -> None:
        name = self._instance()
        row = self.snapshot.instance(name) if name and self.snapshot else None
        if row is not None:
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
        self._session_command("restart")

    def action_stop(self) -> None:
        self._session_command("stop")

    def action_launch(self) -> None:
        self._session_command("launch")

    def _session_command(self, command: str) -> None:
        name = self._instance()
        if name:
            self.notify(f"{command} '{name}'…", timeout=2)
            self.send(f"{command} {name}", lambda: self.commands.session(command, name))

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
        table = self.focused
        if isinstance(table, LiveTable) and table.kind == "topic" and table.selected is not None:
            return table.selected
        return self.topic

    def action_publish(self) -> None:
        topic, payload = self._topic() or "", ""
        row = self.snapshot.topic(topic) if self.snapshot and topic else None
        if row is not None and isinstance(row.payload, dict):
            payload = json.dumps(row.payload)

        def publish(answer: tuple[str, str] | None) -> None:
            if answer is not None:
                self.send(f"publish to {answer[0]}", lambda: self.commands.publish(*answer))

        self.push_screen(PublishScreen(topic, payload), publish)

    def action_plot(self) -> None:
        topic = self._topic()
        row = self.snapshot.topic(topic) if self.snapshot and topic else None
        fields = numeric_fields(row.payload) if row else []
        if not fields:
            self.notify(f"'{topic}' has no numeric fields to plot", severity="warning")
            return

        def plot(field: str | None) -> None:
            if field is not None:
                shown = self.model.plot(topic, field)
                self.notify(f"{'plotting' if shown else 'stopped plotting'} {topic} {field}", timeout=3)

        self.push_screen(FieldScreen(topic, fields), plot)

    def action_filter(self) -> None:
        self.query_one("#log-filter", Input).focus()

    def on_key(self, event) -> None:
        if event.key == "escape" and isinstance(self.focused, Input) and self.focused.id == "log-filter":
            self.query_one(InstancesTable).focus()

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
        self.push_screen(ConfirmScreen(question, "End it"), lambda yes: yes and self._begin_end())

    def _begin_end(self) -> None:
        self.ending = True
        self.refresh_bindings()
        self.push_screen(DrainScreen(self.fmt, self.model.topics.session))
        self.send("end the session", self.link.end)

    def _ask_force(self) -> None:
        recorder = self.snapshot.recorder if self.snapshot else None
        unconfirmed = recorder.unconfirmed if recorder else 0
        question = (
            f"Force quit? {unconfirmed} messages are not confirmed saved yet. Forcing stops the recorder "
            "now: publishers stop waiting, what is unsaved stays in their outbox files, and the session "
            "store records the forced quit and the number of unsaved messages."
        )
        self.push_screen(ConfirmScreen(question, "Force quit"), lambda yes: yes and self._force(unconfirmed))

    def _force(self, unconfirmed: int) -> None:
        self.forced = True
        if self.snapshot is not None and self.snapshot.recorder.state == "ready":
            self._force_recorder(unconfirmed)
            return
        self.notify(
            "The recorder is not running: publishers give up after their drain_timeout, and the "
            "session store records what is unsaved.",
            severity="warning",
        )
        if not self.link.owns_session:
            self.exit(0)

    @work(thread=True, group="commands")
    def _force_recorder(self, unconfirmed: int) -> None:
        """Stop the recorder, recording the forced quit; an attached monitor leaves, ``ether run`` waits
        for its session process to finish (quickly now: nobody waits for confirmations any more)."""
        try:
            self.call_from_thread(self.notify, self.commands.force_end(unconfirmed), title="force quit")
        except CommandFailed as exc:
            self.call_from_thread(self.notify, str(exc), title="force quit", severity="error")
        if not self.link.owns_session:
            self.call_from_thread(self.exit, 0)


def _argument_info(args: Any) -> dict[str, dict[str, Any]] | None:
    """A service's arguments as the call form needs them (None when the instance did not say)."""
    if not isinstance(args, dict):
        return None
    return {name: info if isinstance(info, dict) else {"type": str(info)} for name, info in args.items()}
