"""Dialogs and the drain screen. They post what the user asked for; the app sends it to the session."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Group
from rich.segment import Segment
from rich.style import Style as RichStyle
from rich.table import Table
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.styles import RulesMap
from textual.geometry import Region
from textual.message import Message
from textual.reactive import reactive
from textual.renderables.background_screen import BackgroundScreen
from textual.screen import ModalScreen, Screen
from textual.strip import Strip
from textual.style import Style
from textual.visual import RenderOptions, Visual
from textual.widgets import Button, Input, Label, OptionList, ProgressBar, Select, Static

from ether.monitor.formats import Format
from ether.monitor.model import LIVE, Snapshot
from ether.monitor.widgets import Banner, KeysFooter

if TYPE_CHECKING:
    from typing_extensions import Self

KEYS = (  # (key, what it acts on, what it does): the help screen and docs/monitor.md say the same
    ("Tab / Shift-Tab", "", "next / previous table (on a small terminal: the next panel)"),
    ("?", "", "this help and what the colours mean"),
    ("p", "instance", "pause, or resume, data delivery (held messages are delivered on resume)"),
    ("s", "instance", "run its @ether_start methods"),
    ("a", "instance", "run its @ether_save_all methods"),
    ("r", "instance", "restart it in order (asks first)"),
    ("x", "instance", "stop it in order (asks first)"),
    ("l", "instance", "launch one of the YAML that is not running"),
    ("c", "instance, device", "call a service, or a board's method, with a form"),
    ("Enter", "instance, device", "its last error in full (the log wraps long lines)"),
    ("m", "", "publish a message (the focused topic's, if any)"),
    ("f", "topic", "plot one of its numeric fields (again to stop); all plots share one scale"),
    (
        "t",
        "topics",
        "the topics as a tree of their levels (/ and .), with counts and rates; again: the table",
    ),
    ("space", "last message", "pause the view; then left / right step through the last 50 messages"),
    ("/", "table or log", "filter its rows (Esc leaves the filter, Esc on an empty one clears it)"),
    ("o / O", "table", "sort by the next column / reverse the order (or click a column's name)"),
    ("w", "", "write the log to a file in the current folder"),
    ("e", "", "end the session (ether monitor asks first)"),
    ("q, Ctrl-C", "", "quit: under ether run, ends the session and waits for its data to be saved"),
)
LEGEND = (  # (state class, what it says)
    ("state--ok", "green: running and recorded (ready, online, yes)"),
    ("state--warn", "yellow: in between (starting, paused, restarting, draining, not started)"),
    (
        "state--bad",
        "red: stopped, or data at risk (dead, failed, lost, offline, stopped, NO, NOT CONFIRMED, "
        "NOT ANSWERING, BEHIND)",
    ),
)
TERMS = (
    ("stream durable", "kept in its publisher's outbox until the recorder confirms it"),
    ("stream latest", "may lose samples; a loss goes to the gap ledger"),
    ("stream device", "a board's readings (numbered per boot)"),
    ("stream plain", "no sequence number (a foreign client, an actuator command): a loss cannot be seen"),
    ("recorded", "yes; NOT CONFIRMED (no confirmation for 3 s); NO (no recorder is running)"),
    ("in / out", "messages/s delivered to an instance (0 while paused or stopped) / that it sent"),
    ("last / jitter", "time since a topic's last message / spread of the gaps between its messages"),
    ("banner (red)", "the data-saving guarantee is at risk: it says why (docs/monitor.md)"),
)


Result = TypeVar("Result")


class Held(Visual):
    """Lines drawn once and shown as they are."""

    def __init__(self, strips: list[Strip]) -> None:
        self.strips = strips

    def render_strips(
        self, width: int, height: int | None, style: Style, options: RenderOptions
    ) -> list[Strip]:
        return self.strips

    def get_optimal_width(self, rules: RulesMap, container_width: int) -> int:
        return max((strip.cell_length for strip in self.strips), default=0)

    def get_height(self, rules: RulesMap, width: int) -> int:
        return len(self.strips)


class Dialog(ModalScreen[Result]):
    """A dialog over the screen behind it, dimmed. The app holds that screen while a dialog is open (its
    new snapshot is shown when the dialog closes), so it is drawn dimmed once, not again on each of the
    dialog's later layouts and refreshes (they took a third of the CPU of opening one).

    The app makes each kind of dialog once and keeps it while it is closed (``MonitorApp.dialog``); its
    ``fill`` puts in what one opening shows. A dialog shown before opens in half the CPU time of a new
    one (no widgets to build and style): a key shows its dialog at once, also on a busy machine."""

    _behind: tuple[tuple[int, int], Held] | None = None

    def on_screen_suspend(self) -> None:
        self._behind = None  # closed: the screen behind it moves on

    def _on_screen_resume(self, event: events.ScreenResume) -> None:
        """Opened: before Textual's own handler (it runs each class's), which would restyle every widget
        of the dialog, a sixth of what an opening cost. Its styles hold: what changes them while it is
        closed (its contents, focus, classes) restyles what it changed."""
        event.refresh_styles = False

    def refresh(
        self, *regions: Region, repaint: bool = True, layout: bool = False, recompose: bool = False
    ) -> Self:
        """What the screen behind redraws (its regions, as Textual passes them on to the dialog over
        it) is not shown while it is held: not a redraw of the whole dialog. Opening one refreshed the
        screen behind, a full redraw of the dialog again (4-26 ms of CPU) right after its first."""
        if regions and self._behind is not None and not (layout or recompose):
            return self
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def render(self) -> Any:
        behind = super().render()
        if not isinstance(behind, BackgroundScreen):
            return behind
        if self._behind is None or self._behind[0] != self.size:
            lines = behind.screen._compositor.render_strips(self.size)
            strips = _tinted(lines, behind.color, self.visual_style.rich_style)
            self._behind = (self.size, Held(strips))
        return self._behind[1]


def _tinted(strips: list[Strip], color: Color, under: RichStyle) -> list[Strip]:
    """The lines of a screen tinted with ``color`` over the style ``under``, as Textual draws a
    ``BackgroundScreen``, each style once (a screen has a few dozen: its segments share them), not
    through Rich's rendering."""
    styles: dict[RichStyle | None, RichStyle] = {}
    plain = RichStyle()

    def mixed(rich_color: Any) -> Any:
        return None if rich_color is None else (Color.from_rich_color(rich_color) + color).rich_color

    def tint(style: RichStyle | None) -> RichStyle:
        tinted = styles.get(style)
        if tinted is None:
            base = plain if style is None else style.clear_meta_and_links()
            tinted = styles[style] = (
                under + base + RichStyle.from_color(mixed(base.color), mixed(base.bgcolor))
            )
        return tinted

    return [
        Strip(
            [seg if seg.control else Segment(seg.text, tint(seg.style)) for seg in strip],
            strip.cell_length,
        )
        for strip in strips
    ]


def parse_argument(text: str, type_name: str) -> Any:
    """A form field as the value to send: text for ``str`` arguments, JSON when it parses, else text."""
    if type_name == "str":
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


class CallScreen(Dialog[None]):
    """A small form to call a service of an instance or a method of a device, arguments from its schema."""

    BINDINGS = [Binding("escape", "dismiss", "Close")]

    class Requested(Message):
        def __init__(self, kind: str, target: str, method: str, args: dict[str, Any]) -> None:
            super().__init__()
            self.kind, self.target, self.method, self.args = kind, target, method, args

    class Answered(Message):
        def __init__(self, text: str, ok: bool) -> None:
            super().__init__()
            self.text, self.ok = text, ok

    def __init__(self, kind: str, target: str, methods: dict[str, dict[str, dict[str, Any]] | None]) -> None:
        """``methods``: name -> {argument: {"type": ..., "required": ...}}, or None if unknown (JSON)."""
        super().__init__()
        self.kind, self.target, self.methods = kind, target, methods
        self.method = next(iter(methods))

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Call a method of {self.kind} '{self.target}'", classes="dialog-title")
            yield Select(
                [(name, name) for name in self.methods], value=self.method, allow_blank=False, id="method"
            )
            yield Vertical(id="arguments")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Call", variant="primary", id="call")
                yield Button("Close", id="close")
            yield Static("", id="answer")

    async def on_mount(self) -> None:
        await self._show_arguments()

    async def on_select_changed(self, event: Select.Changed) -> None:
        self.method = str(event.value)
        await self._show_arguments()

    async def _show_arguments(self) -> None:
        box = self.query_one("#arguments", Vertical)
        await box.remove_children()
        args = self.methods[self.method]
        fields: list[Any] = []
        if args is None:
            fields += [Label("arguments (JSON object)"), Input("{}", id="arg-json")]
        elif not args:
            fields.append(Label("(no arguments)"))
        for name, info in (args or {}).items():
            hint = info.get("type", "any") + ("" if info.get("required", True) else ", optional")
            fields += [Label(f"{name} ({hint})"), Input(placeholder=hint, id=f"arg-{name}")]
        await box.mount_all(fields)
        inputs = box.query(Input)
        (inputs.first() if inputs else self.query_one("#call", Button)).focus()

    def arguments(self) -> dict[str, Any]:
        """The typed arguments; raises ValueError naming a missing required one."""
        args = self.methods[self.method]
        if args is None:
            value = json.loads(self.query_one("#arg-json", Input).value or "{}")
            if not isinstance(value, dict):
                raise ValueError("the arguments must be a JSON object")
            return value
        values = {}
        for name, info in args.items():
            text = self.query_one(f"#arg-{name}", Input).value.strip()
            if not text:
                if info.get("required", True):
                    raise ValueError(f"argument '{name}' is required")
                continue
            values[name] = parse_argument(text, info.get("type", "any"))
        return values

    def _call(self) -> None:
        try:
            args = self.arguments()
        except ValueError as exc:
            self.post_message(self.Answered(str(exc), False))
            return
        self.query_one("#answer", Static).update("calling…")
        self.post_message(self.Requested(self.kind, self.target, self.method, args))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "call":
            self._call()
        else:
            self.dismiss()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._call()

    def on_call_screen_answered(self, event: Answered) -> None:
        answer = self.query_one("#answer", Static)
        answer.set_class(not event.ok, "-error")
        answer.update(Text(event.text))


class PublishScreen(Dialog[tuple[str, str] | None]):
    """Publish a message: a topic and a JSON payload."""

    BINDINGS = [Binding("escape", "dismiss", "Close")]

    def __init__(self, topic: str = "", payload: str = "") -> None:
        super().__init__()
        self.topic, self.payload = topic, payload

    def fill(self, topic: str, payload: str) -> PublishScreen:
        """The topic and payload to start from (the focused topic's last message)."""
        self.topic, self.payload = topic, payload
        if self.is_mounted:
            self.query_one("#topic", Input).value = topic
            self.query_one("#payload", Input).value = payload
            self.set_focus(self.query_one("#topic", Input))
        return self

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Publish a message", classes="dialog-title")
            yield Label("topic")
            yield Input(self.topic, placeholder="data", id="topic")
            yield Label("payload (JSON)")
            yield Input(self.payload, placeholder='{"value": 1}', id="payload")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Publish", variant="primary", id="publish")
                yield Button("Close", id="close")

    def _send(self) -> None:
        topic = self.query_one("#topic", Input).value.strip()
        payload = self.query_one("#payload", Input).value
        self.dismiss((topic, payload))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "publish":
            self._send()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "topic":
            self.query_one("#payload", Input).focus()
        else:
            self._send()


class FieldScreen(Dialog[str | None]):
    """Pick a numeric field of a topic to plot."""

    BINDINGS = [Binding("escape", "dismiss", "Close")]

    def __init__(self, topic: str = "", fields: list[str] | None = None) -> None:
        super().__init__()
        self.topic, self.fields = topic, fields or []

    def fill(self, topic: str, fields: list[str]) -> FieldScreen:
        self.topic, self.fields = topic, fields
        if self.is_mounted:
            self.query_one(".dialog-title", Label).update(self._title())
            options = self.query_one(OptionList)
            options.clear_options()
            options.add_options(fields)
            options.highlighted = 0
            self.set_focus(options)
        return self

    def _title(self) -> str:
        return f"Plot a field of '{self.topic}'"

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self._title(), classes="dialog-title")
            yield OptionList(*self.fields, id="fields")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.fields[event.option_index])


class ConfirmScreen(Dialog[bool]):
    """A question that needs an explicit yes."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str = "", yes: str = "Yes") -> None:
        super().__init__()
        self.question, self.yes = question, yes

    def fill(self, question: str, yes: str = "Yes") -> ConfirmScreen:
        self.question, self.yes = question, yes
        if self.is_mounted:
            self.query_one("#question", Static).update(Text(question))
            self.query_one("#yes", Button).label = f"{yes} (y)"
            self.on_mount()
        return self

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="confirm"):
            yield Static(Text(self.question), id="question")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button("No (n)", id="no")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.set_focus(self.query_one("#no", Button))  # the safe answer, at each opening

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class HelpScreen(Dialog[None]):
    """The keys, what they act on, and what the colours and columns mean."""

    COMPONENT_CLASSES = {"state--ok", "state--warn", "state--bad"}
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close"),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="help"):
            yield Label("Keys act on the row under the cursor of the focused table", classes="dialog-title")
            yield Static(id="help-text")
        yield KeysFooter()

    def on_mount(self) -> None:
        keys = Table(box=None, show_header=True, padding=(0, 1), expand=True)
        for name in ("key", "on", "what it does"):
            keys.add_column(name, no_wrap=name != "what it does")
        for key, on, what in KEYS:
            keys.add_row(key, on, what)
        legend = [Text(text, self.get_component_rich_style(style)) for style, text in LEGEND]
        terms = Table(box=None, show_header=False, padding=(0, 1), expand=True)
        terms.add_column(no_wrap=True)
        terms.add_column()
        for term, meaning in TERMS:
            terms.add_row(term, meaning)
        self.help = Group(keys, Text(""), *legend, Text(""), terms)
        self.query_one("#help-text", Static).update(self.help)


class TextScreen(Dialog[None]):
    """A long text in full (an instance's last error), wrapped and scrollable."""

    BINDINGS = [Binding("escape", "dismiss", "Close"), Binding("enter", "dismiss", "Close", show=False)]

    def __init__(self, title: str = "", text: str = "") -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def fill(self, title: str, text: str) -> TextScreen:
        self.title_text, self.text = title, text
        if self.is_mounted:
            self.query_one(".dialog-title", Label).update(title)
            self.query_one("#full-text", Static).update(Text(text))
            self.query_one("#dialog", VerticalScroll).scroll_home(animate=False)
        return self

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(Text(self.text), id="full-text")
        yield KeysFooter()


class DrainScreen(Screen):
    """The end of a session: instances stop, the recorder confirms every message, then the store is sealed."""

    done: reactive[bool] = reactive(False)
    status: reactive[tuple[str, ...]] = reactive(())
    sealed: reactive[str] = reactive("")  # how the store was sealed, once it is known

    def __init__(self, fmt: Format, session: str, live: set[str] | frozenset[str] = frozenset()) -> None:
        """``live``: the instances running when the end was asked (they may stop before a snapshot)."""
        super().__init__()
        self.fmt, self.session = fmt, session
        self.instances: set[str] = set(live)
        self.most_unconfirmed = 0

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")  # what threatens the data stays in sight until the end
        with Vertical(id="drain"):
            yield Label(
                f"Ending session '{self.session}': saving every message before exit", id="drain-title"
            )
            yield ProgressBar(total=1, show_eta=False, id="drain-progress")
            yield Static("", id="drain-status")
            yield Static("", id="drain-log")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self._take)

    def _take(self, snapshot: Snapshot | None) -> None:
        if snapshot is None:
            return
        live = {i.name for i in snapshot.instances if i.state in LIVE}
        draining = {i.name for i in snapshot.instances if i.state == "draining"}
        self.instances |= live
        r = snapshot.recorder
        self.most_unconfirmed = max(self.most_unconfirmed, r.unconfirmed)
        total = len(self.instances) + self.most_unconfirmed
        finished = len(self.instances - live) + self.most_unconfirmed - r.unconfirmed
        self.query_one(ProgressBar).update(total=max(total, 1), progress=total if self.done else finished)
        lines = (
            f"instances stopped: {len(self.instances - live)} of {len(self.instances)}"
            + (f" (still running: {', '.join(sorted(live - draining))})" if live - draining else "")
            + (f" (saving their data: {', '.join(sorted(draining))})" if draining else ""),
            f"messages waiting for the recorder's confirmation: {r.unconfirmed}",
            f"recorder: {r.condition} · saved {self.fmt.count(r.saved)} · backlog {self.fmt.count(r.backlog)}"
            f" · gaps {self.fmt.count(r.missing)}",
        )
        self.status = lines
        if snapshot.log:
            tail = [line.text for line in snapshot.log if line.source == "run"][-8:]
            if tail:
                self.query_one("#drain-log", Static).update(Text("\n".join(tail)))

    def watch_status(self, lines: tuple[str, ...]) -> None:
        end = (
            "Session ended. Press q to close."
            if self.done
            else "Press q to force quit (asks first: what is not saved is recorded as lost)."
        )
        sealed = (self.sealed,) if self.sealed else ()
        self.query_one("#drain-status", Static).update(Text("\n".join((*lines, "", *sealed, end))))

    def watch_done(self, done: bool) -> None:
        self.set_class(done, "-done")
        self.watch_status(self.status)

    def watch_sealed(self) -> None:
        self.watch_status(self.status)
