"""The monitor against real sessions: Pilot presses keys and reads widgets, snapshots compare the screen,
and one test drives `ether run` in tmux as a user would. Waits are for conditions, with deadlines."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Input, Select
from textual.widgets._footer import FooterKey

from ether import exits
from ether.contract.wire import Meta, encode
from ether.data.recorder.store import connect, read_manifest
from ether.monitor.app import PANELS, MonitorApp
from ether.monitor.commands import Commands
from ether.monitor.formats import Format
from ether.monitor.link import Attached, RunProcess, launch
from ether.monitor.model import SessionModel
from ether.monitor.screens import (
    CallScreen,
    ConfirmScreen,
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
    TopicsTable,
    TopicTree,
    chart,
)
from ether.processes import parse_ready
from ether.runtime.session import new_session
from ether.transport.access import BrokerKey
from ether.transport.broker import BrokerAddress
from ether.transport.signing import sign
from support import REPO, Observer, recorder_barrier

SIZE = (130, 42)
LAB = {
    "instances": {
        "echo": {"class_path": "lab_classes.Echo"},
        "store": {"class_path": "lab_classes.DataStore"},
        "later": {"class_path": "lab_classes.Echo", "autorun": False},
        "board": {
            "class_path": "ether.boards.simulator.SimulatedBoard",
            "kwargs": {"device": "bench1", "board": "device_classes.Bench"},
        },
    }
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One session for the tests that only look and poke: echo, a data store, a board, and one to launch."""
    steps = tmp_path_factory.mktemp("steps") / "steps.txt"
    config = json.loads(json.dumps(LAB))
    config["instances"]["steps"] = {"class_path": "lab_classes.Lifecycle", "kwargs": {"path": str(steps)}}
    session = new_session(config)
    session.open()
    observer = Observer(session.address)
    session.steps = steps
    yield session, observer
    observer.close()
    session.close()


def monitor_app(session, stable: bool = True) -> tuple[SessionModel, MonitorApp]:
    """A connected model and the monitor app on it (not running yet); close the model after."""
    model = SessionModel(session.address, session.topics.session)
    model.connect()
    commands = Commands(model)
    return model, MonitorApp(model, commands, Attached(commands), fmt=Format(stable), refresh_every=0.1)


@asynccontextmanager
async def monitor(session, stable: bool = True):
    """The monitor app attached to ``session``, running headless under Pilot."""
    model, app = monitor_app(session, stable)
    try:
        async with app.run_test(size=SIZE) as pilot:
            yield app, pilot
    finally:
        model.close()


async def until(pilot, condition: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    """Let the app run until ``condition()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await pilot.pause(0.05)


def cells(app: MonitorApp, table: type[LiveTable]) -> dict[str, tuple[str, ...]]:
    """What a table shows: row name -> its cells as text."""
    return dict(app.query_one(table).contents)


def column(app: MonitorApp, table: type[LiveTable], name: str, label: str) -> str | None:
    row = cells(app, table).get(name)
    return row[table.columns_shown.index(label)] if row else None


async def select(app: MonitorApp, pilot, table: type[LiveTable], name: str) -> None:
    """Focus a table and move its cursor to ``name`` with the arrow keys, as a user would."""
    widget = app.query_one(table)
    widget.focus()
    await until(pilot, lambda: name in cells(app, table), f"{name} in the {table.kind} table")
    await pilot.pause()
    names = list(cells(app, table))
    key = "down" if names.index(name) > (widget.cursor_row or 0) else "up"
    for _ in range(len(names)):
        if widget.selected == name:
            return
        before = widget.cursor_row
        await pilot.press(key)
        moved = lambda before=before: widget.cursor_row != before  # noqa: E731
        await until(pilot, moved, "the cursor to move")  # one row a key
    assert widget.selected == name, (widget.selected, names)


async def filter_keys(app: MonitorApp, pilot, *keys: str) -> None:
    """``/``, then ``keys`` once the filter line has the focus: a key sent sooner goes to what had it."""
    await pilot.press("slash")
    await until(pilot, lambda: isinstance(app.focused, Input), "the filter line")
    await pilot.press(*keys)


def run(scenario) -> None:
    asyncio.run(scenario())


# -- what it shows -----------------------------------------------------------------------------------


def test_shows_instances_devices_topics_and_the_recorder(lab):
    session, observer = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            observer.publish("in", '{"value": 7}')
            await until(pilot, lambda: column(app, TopicsTable, "out", "msgs"), "a message on 'out'")
            instances = cells(app, InstancesTable)
            assert {n: row[1] for n, row in instances.items()} == {
                "board": "ready",
                "echo": "ready",
                "later": "not started",
                "steps": "ready",
                "store": "ready",
            }
            assert instances["echo"][2] == "host:pid" and instances["later"][2] == "-"
            await until(pilot, lambda: column(app, DevicesTable, "bench1", "state") == "online", "bench1")
            assert "set_heater" in column(app, DevicesTable, "bench1", "methods")
            await until(pilot, lambda: "bench1.temperature" in cells(app, TopicsTable), "board readings")
            kinds = {t: column(app, TopicsTable, t, "stream") for t in cells(app, TopicsTable)}
            assert (
                kinds["in"] == "plain"
                and kinds["out"] == "durable"
                and kinds["bench1.temperature"] == "device"
            )
            assert column(app, TopicsTable, "out", "recorded") == "yes"
            await until(pilot, lambda: (app.snapshot.recorder.saved or 0) >= 2, "the recorder's counts")
            assert app.snapshot.recorder.state == "ready" and app.snapshot.problems == ()
            await select(app, pilot, TopicsTable, "out")  # the last payload, as JSON
            await until(pilot, lambda: app.query_one("#payload").payload.get("value") == 7, "the payload")

    run(scenario)


def test_keys_pause_resume_start_and_save_all(lab):
    session, observer = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            await select(app, pilot, InstancesTable, "echo")
            await pilot.press("p")
            await until(pilot, lambda: column(app, InstancesTable, "echo", "state") == "paused", "paused")
            observer.publish("in", '{"value": 21}')  # held while paused
            await pilot.press("p")
            await until(pilot, lambda: column(app, InstancesTable, "echo", "state") == "ready", "resumed")
            assert any(p["value"] == 21 for p, _ in observer.wait_for("out", 1))
            await select(app, pilot, InstancesTable, "steps")
            await pilot.press("s", "a")
            await until(
                pilot, lambda: session.steps.read_text().split()[-2:] == ["start", "save_all"], "steps"
            )

    run(scenario)


def test_keys_launch_restart_and_stop_an_instance(lab):
    session, _ = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            await until(pilot, lambda: "later" in cells(app, InstancesTable), "later")
            row = list(cells(app, InstancesTable)).index("later")
            await pilot.click(InstancesTable, offset=(3, 2 + row))  # the mouse: border, header, the row
            assert app.query_one(InstancesTable).selected == "later"
            await pilot.press("l")
            await until(pilot, lambda: column(app, InstancesTable, "later", "state") == "ready", "launched")
            await pilot.press("r")  # asks first
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            assert app.screen.question.startswith("Restart instance 'later'?")
            await pilot.press("y")
            await until(
                pilot,
                lambda: cells(app, InstancesTable)["later"][1:4:2] == ("ready", "1"),
                "restarted once",
            )
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            await pilot.press("n")  # no: nothing happens
            await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "the question to close")
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question again")
            await pilot.press("y")
            await until(pilot, lambda: column(app, InstancesTable, "later", "state") == "stopped", "stopped")

    run(scenario)


def test_call_forms_for_a_service_and_a_device_actuator(lab):
    session, _ = lab
    session.services.call("DataStore.put", {"key": "k", "value": 42}, None, 10)

    async def call(app, pilot, method: str, typed: str) -> str:
        """Pick ``method`` in the form's list with the keys, type the argument, press Enter."""
        screen = app.screen
        assert isinstance(screen, CallScreen)
        names = list(screen.methods)
        steps = names.index(method) - names.index(screen.method)
        if steps:
            picker = screen.query_one("#method", Select)
            picker.focus()
            await pilot.press("enter")
            await until(pilot, lambda: picker.expanded, "the list of methods")  # keys before it are lost
            await pilot.press(*(["down"] * steps if steps > 0 else ["up"] * -steps), "enter")
            await until(pilot, lambda: screen.method == method, f"{method} picked")
        await until(pilot, lambda: screen.query("#arguments Input"), "the argument fields")
        field = screen.query("#arguments Input").first()
        field.value = ""
        field.focus()
        await pilot.press(*typed, "enter")
        answer = screen.query_one("#answer")
        await until(pilot, lambda: str(answer.render()) not in ("", "calling…"), "the answer")
        return str(answer.render())

    async def scenario():
        async with monitor(session) as (app, pilot):
            await select(app, pilot, InstancesTable, "store")
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, CallScreen), "the call form")
            assert app.screen.methods["DataStore.get_value"] == {"key": {"type": "str", "required": True}}
            assert await call(app, pilot, "DataStore.get_value", "k") == "result: 42"
            assert "not_found: KeyError: 'nope'" in await call(app, pilot, "DataStore.get_value", "nope")
            assert app.screen.query_one("#answer").has_class("-error")
            await pilot.press("escape")
            await select(app, pilot, DevicesTable, "bench1")
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, CallScreen), "the device's call form")
            assert app.screen.methods["set_heater"] == {"on": {"type": "bool", "required": True}}
            assert await call(app, pilot, "set_heater", "true") == "result: true"
            await pilot.press("escape")
            reading = lambda: app.snapshot.topic("bench1.temperature").payload  # noqa: E731
            await until(pilot, lambda: reading().get("heater") is True, "a reading with the heater on")

    run(scenario)


def test_publish_a_message_and_plot_a_field(lab):
    session, observer = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            observer.publish("in", '{"value": 1}')
            await select(app, pilot, TopicsTable, "in")
            await pilot.press("m")
            shown = lambda: isinstance(app.screen, PublishScreen) and app.screen.query("#topic")  # noqa: E731
            await until(pilot, shown, "the publish form")
            assert app.screen.query_one("#topic").value == "in"
            app.screen.query_one("#payload").value = ""
            await pilot.click("#payload")
            await pilot.press(*'{"value": 5}', "enter")
            sent = lambda: [m for p, m in observer.on("in") if p == {"value": 5}]  # noqa: E731
            await until(pilot, sent, "the published message")
            assert sent()[0].src.startswith("monitor:") and sent()[0].seq == 1  # numbered: a loss would show
            await until(pilot, lambda: any(p["value"] == 5 for p, _ in observer.on("out")), "echo's answer")

            await select(app, pilot, TopicsTable, "bench1.temperature")
            await pilot.press("f")
            await until(pilot, lambda: isinstance(app.screen, FieldScreen), "the field picker")
            assert app.screen.fields == ["temperature"]  # numbers only: the heater flag is a bool
            await pilot.press("enter")
            plots = app.query_one(Plots)
            await until(pilot, lambda: plots.series and len(plots.series[0][1]) >= 3, "a plot")
            name, values = plots.series[0]
            assert name == "bench1.temperature temperature" and set(values) == {21.0}

    run(scenario)


def test_plots_overlay_fields_of_two_topics_on_one_scale(lab):
    session, observer = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            observer.publish("in", '{"value": 40}')
            for topic in ("bench1.temperature", "in"):
                await select(app, pilot, TopicsTable, topic)
                await pilot.press("f")
                await until(pilot, lambda: isinstance(app.screen, FieldScreen), "the field picker")
                await pilot.press("enter")
            plots = app.query_one(Plots)
            await until(pilot, lambda: len(plots.series) == 2 and all(v for _, v in plots.series), "2 plots")
            shown = plots.render().plain
            assert "bench1.temperature temperature: 21" in shown and "in value: 40" in shown
            assert "40┤" in shown and "21┤" in shown  # one scale, from the lowest value to the highest
            await select(app, pilot, TopicsTable, "in")
            await pilot.press("f")  # again: stops plotting it
            await until(pilot, lambda: isinstance(app.screen, FieldScreen), "the field picker again")
            await pilot.press("enter")
            await until(pilot, lambda: len(plots.series) == 1, "one plot left")

    run(scenario)


def test_a_chart_has_a_scale_a_line_per_field_and_a_legend():
    text = chart((("a x", (0.0, 10.0)), ("b y", (5.0, 5.0, 5.0))), width=30, height=8)
    lines = text.plain.splitlines()
    assert lines[0].startswith("━━ a x: 10  (min 0, max 10)") and lines[1].startswith("━━ b y: 5")
    plot = lines[2:-1]
    assert plot[0].startswith("10┤") and plot[-1].startswith(" 0┤") and "5┤" in "".join(plot)
    assert lines[-1].strip().startswith("└") and "last 3 values" in lines[-1]
    assert any(span.style == "cyan" for span in text.spans)  # the second field has its own colour
    assert chart((("a", ()),), width=30, height=8).plain == "━━ a: -"


def test_topic_tree_groups_topics_by_level_and_keys_act_on_a_topic(lab):
    session, observer = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            await until(pilot, lambda: "bench1.temperature" in cells(app, TopicsTable), "board readings")
            app.query_one(TopicsTable).focus()
            await pilot.press("t")
            tree = app.query_one(TopicTree)
            await until(pilot, lambda: "bench1.temperature" in tree._labels, "the tree")
            assert app.focused is tree and not app.query_one(TopicsTable).region.area
            assert tree._labels["bench1"].startswith("bench1 (")  # a level: its topics, summed
            assert tree._labels["bench1.temperature"].startswith("temperature  ")
            for _ in range(20):
                if tree.selected == "bench1.temperature":
                    break
                await pilot.press("down")
            assert tree.selected == "bench1.temperature" and "keys act on" in tree.border_subtitle
            await pilot.press("f")  # acts on the topic under the cursor, as in the table
            await until(pilot, lambda: isinstance(app.screen, FieldScreen), "the field picker")
            assert app.screen.topic == "bench1.temperature"
            await pilot.press("escape")
            await pilot.press("enter")  # to its messages, as from the table
            assert app.focused is app.query_one(PayloadView)
            app.query_one(TopicTree).focus()
            await pilot.press("t")  # back to the table
            await until(pilot, lambda: app.focused is app.query_one(TopicsTable), "the table again")

    run(scenario)


def test_errors_show_in_the_log_and_the_filter_keeps_matching_lines(lab):
    session, observer = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            observer.publish("in", '{"value": 13}')
            log = app.query_one(LogPanel)
            await until(pilot, lambda: any("unlucky" in line for line in log.shown_lines()), "the error")
            assert column(app, InstancesTable, "echo", "last error") == "ValueError: unlucky number"
            await pilot.click("#log-lines")  # / filters what has focus: here the log
            await filter_keys(app, pilot, *"UNLUCKY")
            await until(pilot, lambda: log.filter == "UNLUCKY", "the filter")
            shown = log.shown_lines()
            assert shown and all("unlucky" in line for line in shown)
            assert len(log.lines) > len(shown)  # the other lines are still there
            await pilot.press("escape")
            assert app.focused is app.query_one(InstancesTable)

    run(scenario)


def test_keys_act_only_on_the_focused_table_and_it_says_on_what(lab):
    session, observer = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            instances = app.query_one(InstancesTable)
            await select(app, pilot, InstancesTable, "echo")
            assert instances.border_subtitle == "keys act on: echo"
            assert app.screen.active_bindings["p"].enabled
            await select(app, pilot, TopicsTable, "bench1.temperature")
            assert instances.border_subtitle == ""  # not focused: the keys do not act on it
            assert app.query_one(TopicsTable).border_subtitle == "keys act on: bench1.temperature"
            bindings = app.screen.active_bindings
            assert not any(key in bindings for key in "psarxlc") and bindings["f"].enabled  # footer too
            await pilot.press("p")  # the Topics table has focus: nothing to pause
            assert not isinstance(app.screen, ConfirmScreen)
            assert column(app, InstancesTable, "echo", "state") == "ready"

    run(scenario)


def test_help_shows_the_keys_and_what_the_colours_mean(lab):
    session, _ = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            await pilot.press("question_mark")
            shown = lambda: isinstance(app.screen, HelpScreen) and hasattr(app.screen, "help")  # noqa: E731
            await until(pilot, shown, "the help (built when it is mounted)")
            console = Console(file=io.StringIO(), width=120, record=True)
            console.print(app.screen.help)
            text = console.export_text()
            assert "pause, or resume" in text and "red: stopped, or data at risk" in text
            assert "NOT CONFIRMED" in text and "stream durable" in text
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "the help to close")

    run(scenario)


def test_in_is_what_an_instance_is_delivered_nothing_while_paused(lab):
    session, observer = lab

    async def scenario():
        async with monitor(session, stable=False) as (app, pilot):
            await select(app, pilot, InstancesTable, "echo")
            await pilot.press("p")
            await until(pilot, lambda: column(app, InstancesTable, "echo", "state") == "paused", "paused")
            observer.publish(
                "in", json.dumps({"value": 100})
            )  # a topic's rate counts from its first snapshot
            await until(pilot, lambda: app.snapshot.topic("in"), "the topic")
            for value in range(1, 30):
                observer.publish("in", json.dumps({"value": value + 100}))
            await until(pilot, lambda: app.snapshot.topic("in") and app.snapshot.topic("in").rate, "a rate")
            snapshot = app.snapshot  # one snapshot: its topic has a rate, the paused instance gets none
            assert snapshot.topic("in").rate > 0 and snapshot.instance("echo").rate_in == 0.0
            await pilot.press("p")
            await until(pilot, lambda: column(app, InstancesTable, "echo", "state") == "ready", "resumed")

    run(scenario)


def test_filter_and_sort_a_table_and_open_an_error_in_full(lab):
    session, observer = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            observer.publish("in", '{"value": 13}')  # echo: ValueError: unlucky number
            await until(pilot, lambda: column(app, InstancesTable, "echo", "last error"), "echo's error")
            await until(pilot, lambda: "bench1.temperature" in cells(app, TopicsTable), "board readings")
            topics = app.query_one(TopicsTable)
            await select(app, pilot, TopicsTable, "in")
            await filter_keys(app, pilot, *"bench")
            await until(pilot, lambda: list(cells(app, TopicsTable)) == ["bench1.temperature"], "filtered")
            await pilot.press("escape")
            assert app.focused is topics and "filter: bench (1 of" in topics.border_subtitle
            await filter_keys(app, pilot, *["backspace"] * 5, "enter")
            await until(pilot, lambda: len(cells(app, TopicsTable)) > 1, "every topic again")
            await pilot.press("O")  # by name, reversed
            names = list(cells(app, TopicsTable))
            assert names == sorted(names, reverse=True) and "sorted by topic ↓" in topics.border_subtitle

            await select(app, pilot, InstancesTable, "echo")
            await pilot.press("enter")
            shown = lambda: isinstance(app.screen, TextScreen) and app.screen.query("#full-text")  # noqa: E731
            await until(pilot, shown, "the error in full (its text mounted)")
            assert "ValueError: unlucky number" in str(app.screen.query_one("#full-text").render())
            await pilot.press("escape")

    run(scenario)


def test_the_last_message_view_pauses_and_steps_through_history(lab):
    session, observer = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            await until(pilot, lambda: app.snapshot.synced, "the session's state")
            for value in (1, 2, 3):
                observer.publish("in", json.dumps({"value": value}))
            await select(app, pilot, TopicsTable, "in")
            view = app.query_one(PayloadView)
            await until(pilot, lambda: view.payload == {"value": 3} and len(view.history) == 3, "history")
            await pilot.press("enter")  # on a topic: to its messages
            assert app.focused is view
            await pilot.press("space", "left")
            assert view.paused and view.payload == {"value": 2} and "message 2 of 3" in view.border_title
            observer.publish("in", '{"value": 4}')
            await until(pilot, lambda: app.snapshot.topic("in").payload == {"value": 4}, "a new message")
            await pilot.pause()
            assert view.payload == {"value": 2}  # paused: the view stays
            await pilot.press("left", "left")  # no older than the first
            assert view.payload == {"value": 1} and "message 1 of 3" in view.border_title
            await pilot.press("space")
            await until(pilot, lambda: view.payload == {"value": 4}, "live again")

    run(scenario)


def test_the_log_is_written_to_a_file(lab, tmp_path, monkeypatch):
    session, observer = lab
    monkeypatch.chdir(tmp_path)

    async def scenario():
        async with monitor(session) as (app, pilot):
            await until(pilot, lambda: app.query_one(LogPanel).lines, "log lines")
            await pilot.press("w")
            await until(pilot, lambda: list(tmp_path.glob("ether-monitor-*.log")), "the file")
            text = next(tmp_path.glob("ether-monitor-*.log")).read_text()
            assert "instance 'echo'" in text

    run(scenario)


def test_a_small_terminal_shows_one_panel_at_a_time(lab):
    session, _ = lab
    model, app = monitor_app(session)

    def shown() -> list[str]:
        return [name for name in PANELS if app.query_one(f"#{name}").region.area]

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "echo" in cells(app, InstancesTable), "instances")
            await pilot.pause()
            assert app.compact and shown() == ["instances"]
            await pilot.press("tab")
            await pilot.pause()
            assert shown() == ["devices"] and app.focused is app.query_one(DevicesTable)
            await pilot.press("tab")
            await pilot.pause()
            assert shown() == ["topics"] and app.query_one(PayloadView).region.area
            await pilot.press("shift+tab", "shift+tab", "shift+tab")
            await pilot.pause()
            assert shown() == ["log"]
            await pilot.resize_terminal(160, 45)
            await pilot.pause()
            assert not app.compact and shown() == list(PANELS)

    try:
        run(scenario)
    finally:
        model.close()


# -- the banner: the data-saving guarantee ------------------------------------------------------------


def banner(app: MonitorApp) -> str:
    return " ".join(app.query_one(Banner).problems)


def test_banner_shows_gaps_and_clears_when_they_are_filled(lab):
    session, observer = lab
    boot = uuid.uuid4().hex[:12]
    key = BrokerKey.find(session.address).signing_key("default", "probe")  # a source of the session

    def numbered(seq: int) -> bytes:
        return sign(encode({"v": seq}, Meta(f"{boot}.{seq}", "probe", boot, seq, time.time())), key)

    async def scenario():
        async with monitor(session) as (app, pilot):
            for seq in (1, 4):
                observer.publish("probe", numbered(seq))
            await until(pilot, lambda: "GAPS: 2 messages missing" in banner(app), "the gap banner")
            assert app.query_one(Banner).display
            for seq in (2, 3):  # a late resend fills the gap
                observer.publish("probe", numbered(seq))
            await until(pilot, lambda: not app.query_one(Banner).display, "the banner to clear")

    run(scenario)


def test_conflicts_and_forged_sources_show_in_the_banner_and_the_recorder_line(lab):
    session, observer = lab
    boot = uuid.uuid4().hex[:12]
    key = BrokerKey.find(session.address).signing_key("default", "prober")

    def numbered(value: int, src: str = "prober", signed: bool = True) -> bytes:
        body = encode({"v": value}, Meta(f"{boot}.1", src, boot, 1, time.time()))
        return sign(body, key) if signed else body

    async def scenario():
        async with monitor(session) as (app, pilot):
            observer.publish("forged", numbered(1, src="echo", signed=False))  # claims echo, unsigned
            await until(pilot, lambda: "UNVERIFIED SOURCES: 1 message(s)" in banner(app), "the forgery")
            observer.publish("twice", numbered(1))
            observer.publish("twice", numbered(2))  # the same numbers, other content
            await until(pilot, lambda: "CONFLICTS: 1 message(s)" in banner(app), "the conflict")
            line = str(app.query_one("#recorder").render())
            assert "conflicts 1" in line and "unverified 1" in line

    run(scenario)


def test_an_instance_shows_the_messages_it_failed_and_unprocessed_as_the_recorder_counts(lab):
    session, observer = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            observer.publish("in", '{"value": 13}')  # echo raises on it: an error event
            await until(pilot, lambda: column(app, InstancesTable, "echo", "failed") == "1", "a failure")
            # handled, if with an error: not unprocessed (the recorder's live count, every 2 s)
            await until(pilot, lambda: column(app, InstancesTable, "echo", "unproc") == "0", "the count")

    run(scenario)


def test_the_model_reads_new_fields_when_present_and_hostile_values_as_absent():
    model = SessionModel(BrokerAddress(), "default")
    model.synced.set()
    topics = model.topics

    def send(topic: str, payload: dict) -> None:
        model.on_message(topic, json.dumps(payload).encode())

    supervisor = {
        "name": "main",
        "host": "h",
        "pid": 1,
        "state": "running",
        "instances": ["a", "b", "c"],
        "since": 1.0,
    }
    send(topics.supervisor_status("main"), supervisor)
    status = {"class": "m:C", "state": "ready", "pid": 2}
    send(topics.instance_status("a"), {**status, "instance": "a", "unprocessed": 3})
    send(topics.instance_status("b"), {**status, "instance": "b", "unprocessed": "many"})
    send(topics.instance_status("c"), {**status, "instance": "c", "unprocessed": -1})
    snapshot = model.snapshot()
    assert [i.unprocessed for i in snapshot.instances] == [3, None, None]
    assert snapshot.recorder.broker_lag is None and snapshot.problems == ()  # nothing says: nothing shown
    send(topics.supervisor_status("main"), {**supervisor, "broker_lag_s": 0.25})
    send(topics.supervisor_status("other"), {**supervisor, "name": "other", "broker_lag_s": "NaN"})
    for reason in (
        "conflict: a second message numbered (x, b, 1) differs",
        "stored as foreign: src 'a' is not",
    ):
        send(topics.errors(), {"instance": "recorder", "topic": "t", "reason": reason})
    send(topics.errors(), {"instance": "a", "topic": "in", "reason": "ValueError: no"})
    snapshot = model.snapshot()
    assert snapshot.recorder.broker_lag == 0.25
    assert (snapshot.recorder.conflicts, snapshot.recorder.unverified) == (1, 1)
    assert snapshot.instance("a").failed == 1 and snapshot.instance("b").failed == 0
    assert [p.split(":")[0] for p in snapshot.problems] == ["CONFLICTS", "UNVERIFIED SOURCES"]


def test_an_array_shows_as_dtype_and_shape_with_a_plot_of_one_channel(lab):
    np = pytest.importorskip("numpy")
    session, observer = lab
    samples = np.tile(np.arange(300, dtype="<i2") % 50, (4, 1))  # 4 channels x 300 samples

    async def scenario():
        async with monitor(session) as (app, pilot):
            observer.publish("wave", encode({"samples": samples, "rate": 30000}))
            observer.publish("wave", b"\x89ETH\x01\x00\x00\x00\xff\xff\x00\x00{}")  # header past its end
            await until(pilot, lambda: column(app, TopicsTable, "wave", "msgs") == "2", "both messages")
            observer.publish("wave", encode({"samples": samples, "rate": 30000}))
            await until(pilot, lambda: column(app, TopicsTable, "wave", "msgs") == "3", "the third")
            await select(app, pilot, TopicsTable, "wave")
            shown = lambda: str(app.query_one("#payload-json").render())  # noqa: E731
            await until(pilot, lambda: "array <i2 [4, 300]" in shown(), "the array's outline")
            assert '"rate": 30000' in shown() and "samples[:, 0]" not in shown()
            assert "samples[0, :]: 49" in shown()  # the legend: channel 0's last value, min and max
            assert any(0x2800 < ord(c) <= 0x28FF for c in shown())  # and its braille line

    run(scenario)


def test_a_dialog_holds_the_screen_behind_it_and_nothing_is_lost(lab):
    session, observer = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            log = app.query_one(LogPanel)
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
            held = app.snapshot
            observer.publish("in", '{"value": 13}')  # an error line, while the dialog is up
            await until(pilot, lambda: any("unlucky" in line.text for line in app.held_log), "the error")
            assert app.snapshot is held and not any("unlucky" in line for line in log.shown_lines())
            await pilot.press("escape")
            await until(pilot, lambda: any("unlucky" in line for line in log.shown_lines()), "the line")
            assert app.snapshot is not held

    run(scenario)


def test_a_dialog_opened_again_shows_what_this_opening_is_about(lab):
    """Dialogs are made once and kept while closed (they open faster): each opening fills them anew."""
    session, observer = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            observer.publish("in", '{"value": 2}')
            forms = []
            for topic in ("in", "bench1.temperature"):
                await select(app, pilot, TopicsTable, topic)
                await pilot.press("m")
                await until(pilot, lambda: isinstance(app.screen, PublishScreen), "the publish form")
                form = app.screen
                forms.append(form)
                assert form.query_one("#topic").value == topic and form.focused is form.query_one("#topic")
                assert topic != "in" or json.loads(form.query_one("#payload").value) == {"value": 2}
                await pilot.click("#payload")  # the next opening starts on the topic again
                await pilot.press("escape")
                await until(pilot, lambda: not isinstance(app.screen, PublishScreen), "the form to close")
            assert forms[0] is forms[1]
            for name in ("echo", "store"):
                await select(app, pilot, InstancesTable, name)
                await pilot.press("enter")
                await until(pilot, lambda: isinstance(app.screen, TextScreen), "the last error")
                title = str(app.screen.query_one(".dialog-title").render())
                assert title == f"Last error of instance '{name}'"
                await pilot.press("escape")
                await until(pilot, lambda: not isinstance(app.screen, TextScreen), "it to close")

    run(scenario)


def test_a_dialog_leaves_the_footer_as_it_was_and_other_keys_rebuild_it(lab):
    """Opening and closing a dialog refreshes the screen's keys twice, to the same keys: the footer (a
    widget per key) is not built again for them, only when the keys it shows change."""
    session, _ = lab

    async def scenario():
        async with monitor(session) as (app, pilot):
            footer = app.query_one(KeysFooter)
            shown = lambda: {key.key for key in footer.query(FooterKey)}  # noqa: E731
            await select(app, pilot, InstancesTable, "echo")
            await select(app, pilot, TopicsTable, "bench1.temperature")
            await select(app, pilot, InstancesTable, "echo")  # the cursors stay: focus alone moves now
            await until(pilot, lambda: "p" in shown(), "the instance's keys in the footer")
            rebuilt = []
            build = footer.recompose
            footer.recompose = lambda: rebuilt.append(shown()) or build()  # type: ignore[method-assign]
            for _ in range(2):
                await pilot.press("m")
                await until(pilot, lambda: isinstance(app.screen, PublishScreen), "the publish form")
                await pilot.press("escape")
                await until(pilot, lambda: not isinstance(app.screen, PublishScreen), "the form to close")
            await select(app, pilot, TopicsTable, "bench1.temperature")  # other keys: built again
            await until(pilot, lambda: "f" in shown() and "p" not in shown(), "the topic's keys")
            assert len(rebuilt) == 1  # only for the topic's keys (a rebuild for a dialog came before it)

    run(scenario)


def test_the_monitor_signs_what_it_sends(lab):
    session, observer = lab
    model = SessionModel(session.address, session.topics.session)
    model.connect()
    try:
        model.publish("from-monitor", {"v": 1})
        observer.wait_for("from-monitor", 1)
        recorder_barrier(session)
    finally:
        model.close()
    db = connect(session.recording.run_dir, readonly=True)
    try:
        rows = db.execute("SELECT src FROM messages WHERE topic = 'from-monitor'").fetchall()
        claims = [
            json.loads(r["detail"]).get("claimed_src")
            for r in db.execute("SELECT detail FROM events WHERE kind = 'unverified_source'")
        ]
    finally:
        db.close()
    assert [r["src"] for r in rows] == [model.stamper.source]  # believed: not stored as foreign
    assert model.stamper.source not in claims


def test_banner_when_nothing_records_the_session(run_session):
    session, observer = run_session({"session": "lab2", "recorder": False, "instances": {}})

    async def scenario():
        async with monitor(session) as (app, pilot):  # a named session: its topics are lab2/...
            observer.publish("lab2/samples", '{"x": 1}')
            observer.publish("samples", '{"x": 2}')  # the default session's: not shown
            await until(pilot, lambda: "NOT RECORDED" in banner(app), "the banner")
            assert "session 'lab2' has no recorder; 'samples' is not being saved" in banner(app)
            assert column(app, TopicsTable, "samples", "recorded") == "NO"
            assert list(cells(app, TopicsTable)) == ["samples"]

    run(scenario)


def test_banner_when_the_recorder_is_behind_then_down(run_session, tmp_path):
    session, observer = run_session(
        {"recorder": {"path": str(tmp_path)}, "instances": {"echo": {"class_path": "lab_classes.Echo"}}}
    )
    recorder = session.recording.process

    async def scenario():
        async with monitor(session) as (app, pilot):
            await until(pilot, lambda: app.snapshot.recorder.saved is not None, "the recorder's counts")
            os.kill(recorder.pid, signal.SIGSTOP)  # alive, but saves nothing
            try:
                for value in range(5):
                    observer.publish("in", json.dumps({"value": value}))
                await until(pilot, lambda: "RECORDER BEHIND: 5 messages on 'out'" in banner(app), "behind")
                assert column(app, TopicsTable, "out", "recorded") == "NOT CONFIRMED"
                await until(pilot, lambda: "RECORDER NOT ANSWERING" in banner(app), "not answering")
            finally:
                os.kill(recorder.pid, signal.SIGCONT)
            await until(pilot, lambda: not app.query_one(Banner).display, "the recorder to catch up")
            recorder._stopping.set()  # as if it could not be brought back
            os.kill(recorder.pid, signal.SIGKILL)
            await until(pilot, lambda: "RECORDER DEAD: new data is NOT being saved" in banner(app), "dead")

    run(scenario)


# -- the end of a session ---------------------------------------------------------------------------------


def test_ether_monitor_ends_the_session_and_shows_the_drain(run_session, tmp_path):
    session, _ = run_session(
        {"recorder": {"path": str(tmp_path)}, "instances": {"ticker": {"class_path": "lab_classes.Ticker"}}}
    )
    # what `ether run` does when `ether shutdown` arrives
    threading.Thread(target=lambda: (session.end_requested.wait(), session.close()), daemon=True).start()

    async def scenario():
        async with monitor(session) as (app, pilot):
            await until(pilot, lambda: column(app, InstancesTable, "ticker", "state") == "ready", "ticker")
            await pilot.press("e")  # attached: ending a session that runs elsewhere asks first
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            await pilot.press("y")
            await until(pilot, lambda: isinstance(app.screen, DrainScreen), "the drain screen")
            await until(pilot, lambda: app.screen.done, "the end of the session", timeout=30)
            assert "instances stopped: 1 of 1" in app.screen.status[0]
            assert app.screen.status[1] == "messages waiting for the recorder's confirmation: 0"
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running, "the monitor to close")

    run(scenario)


def start_run(
    tmp_path: Path, monkeypatch, drain_timeout: float = 30
) -> tuple[subprocess.Popen, tuple[str, str]]:
    """`ether run --headless` as `ether run` on a terminal starts it, with a ticker (50 messages/s)."""
    lab = tmp_path / "lab.yaml"
    lab.write_text(
        f"recorder: {{path: {tmp_path / 'data'}, drain_timeout: {drain_timeout}}}\n"
        "instances:\n  ticker: {class_path: lab_classes.Ticker}\n"
    )
    # launch() passes our environment on
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    args = argparse.Namespace(config=str(lab), port=0, listen="127.0.0.1", timeout=30.0, broker=None)
    process = launch(args).process
    for line in process.stdout:
        ready = parse_ready(line, "session")
        if ready is not None:
            return process, (ready["url"], ready["session"])
    pytest.fail(f"ether run did not start (exit code {process.wait()})")


def test_quit_waits_for_the_drain_and_a_forced_quit_is_recorded(tmp_path, monkeypatch):
    process, (url, name) = start_run(tmp_path, monkeypatch)
    from ether.transport.broker import BrokerAddress

    model = SessionModel(BrokerAddress.parse(url), name)
    model.connect()
    link = RunProcess(process, model)
    commands = Commands(model)
    app = MonitorApp(model, commands, link, fmt=Format(stable=True), refresh_every=0.1)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: column(app, InstancesTable, "ticker", "state") == "ready", "ticker")
            await until(pilot, lambda: app.snapshot.recorder.pid, "the recorder")
            recorder = app.snapshot.recorder.pid
            os.kill(recorder, signal.SIGSTOP)  # the drain cannot finish: nothing gets confirmed
            try:
                await until(pilot, lambda: app.snapshot.recorder.unconfirmed >= 10, "unconfirmed messages")
                await pilot.press("q")  # quit = end the session, waiting for the drain
                await until(pilot, lambda: isinstance(app.screen, DrainScreen), "the drain screen")
                # ticker first finishes its inputs, then saves its data: either way it has not stopped
                waiting = "instances stopped: 0 of 1 ("
                await until(pilot, lambda: waiting in str(app.screen.status), "ticker draining")
                assert "messages waiting for the recorder's confirmation" in str(app.screen.status)
                await pilot.press("q")  # again: a forced quit, which asks first
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
                assert "Force quit?" in app.screen.question and "not confirmed saved" in app.screen.question
                await pilot.press("y")
                await until(pilot, lambda: model.requester._in_flight, "the forced quit request")
            finally:
                os.kill(recorder, signal.SIGCONT)
            await until(pilot, lambda: not app.is_running, "the session to end", timeout=30)

    run(scenario)
    model.close()
    code = link.close()
    output = "".join(link.ending_lines)
    # whether the forced quit lost data depends on how far the recorder got: the exit code tells the seal
    assert code == (exits.INCOMPLETE if "sealed incomplete" in output else 0), output
    assert "save_all -> cleanup -> exit" in output and "sealed" in output, output
    run_dir = next((tmp_path / "data").iterdir())
    db = connect(run_dir, readonly=True)
    forced = [json.loads(r[0]) for r in db.execute("SELECT detail FROM events WHERE kind = 'forced_quit'")]
    assert len(forced) == 1 and forced[0]["by"].startswith("monitor:") and forced[0]["unconfirmed"] >= 10
    # nothing silently lost: every tick is saved, or counted as unsaved and kept in the outbox file
    manifest = read_manifest(db)
    ended = [json.loads(r[0]) for r in db.execute("SELECT detail FROM events WHERE kind = 'forced_end'")]
    assert manifest["unsaved"] == (ended[0]["unsaved"] if ended else 0)
    assert manifest["status"] == ("incomplete" if manifest["unsaved"] else "complete")
    saved = {r[0] for r in db.execute("SELECT seq FROM messages WHERE topic = 'tick'")}
    outbox = run_dir / "outbox" / "ticker.sqlite"
    kept = (
        {r[0] for r in sqlite3.connect(outbox).execute("SELECT seq FROM outbox")}
        if outbox.exists()
        else set()
    )
    assert not saved & kept and saved | kept == set(range(1, max(saved | kept) + 1))
    assert len(kept) == manifest["unsaved"]


# -- snapshots ----------------------------------------------------------------------------------------


@pytest.fixture
def quiet_lab():
    """A session whose screen is the same on every run: fixed messages, nothing periodic."""
    config = {"instances": {k: v for k, v in LAB["instances"].items() if k != "board"}}
    session = new_session(config)
    session.open()
    observer = Observer(session.address)
    observer.publish("in", '{"value": 7}')
    observer.wait_for("out", 1)
    observer.publish("in", '{"value": 13}')
    observer.wait_for(session.topics.errors(), 1)
    yield session, observer
    observer.close()
    session.close()


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
def test_snapshot_of_the_main_screen(quiet_lab, snap_compare, size):
    session, observer = quiet_lab
    model, app = monitor_app(session)

    async def settle(pilot):
        observer.publish("in", '{"value": 8}')  # after the monitor connected, so it sees them
        observer.publish("in", '{"value": 13}')
        await until(pilot, lambda: column(app, TopicsTable, "out", "msgs") == "1", "out")
        await until(pilot, lambda: app.snapshot.recorder.saved == 8, "the recorder's count")
        await until(pilot, lambda: column(app, InstancesTable, "echo", "failed") == "1", "echo's error")
        await until(pilot, lambda: column(app, InstancesTable, "echo", "unproc") == "0", "the live count")
        if app.compact:
            return  # one panel: the instances (the log, whose lines come in any order, is not shown)
        await pilot.click("#log-lines")
        await filter_keys(app, pilot, *"error")  # only the error lines: status lines come in any order
        await until(pilot, lambda: len(app.query_one(LogPanel).shown_lines()) == 1, "the filtered log")
        await pilot.press("escape")

    try:
        assert snap_compare(app, terminal_size=size, run_before=settle)
    finally:
        model.close()


def test_snapshot_of_the_call_form(quiet_lab, snap_compare):
    session, _ = quiet_lab
    model, app = monitor_app(session)

    async def open_form(pilot):
        await until(pilot, lambda: app.snapshot.recorder.saved == 4, "the recorder's count")
        await until(pilot, lambda: column(app, InstancesTable, "echo", "unproc") == "0", "the live count")
        await pilot.click("#log-lines")
        await filter_keys(app, pilot, *"error", "escape")  # the log shows pids and arrives in any order
        await select(app, pilot, InstancesTable, "store")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CallScreen), "the call form")
        picker = app.screen.query_one("#method", Select)
        picker.focus()
        await pilot.press("enter")
        await until(pilot, lambda: picker.expanded, "the list of methods")
        await pilot.press("down", "enter")  # DataStore.broken -> DataStore.get_value
        await until(pilot, lambda: app.screen.query("#arg-key"), "the key field")
        await pilot.press(*"k")

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=open_form)
    finally:
        model.close()


# -- as a user: ether run in tmux ---------------------------------------------------------------------------

needs_tmux = pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed")


class Tmux:
    """A detached tmux server of our own with one pane running bash, read as a user reads the screen."""

    def __init__(self, columns: int, lines: int) -> None:
        self.command = ["tmux", "-L", f"ether-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
        subprocess.run(
            [
                *self.command,
                "new-session",
                "-d",
                "-x",
                str(columns),
                "-y",
                str(lines),
                "bash --norc --noprofile",
            ],
            check=True,
        )

    def screen(self, history: bool = False) -> str:
        """What the pane shows (and with ``history``, what scrolled off it too, wrapped lines joined)."""
        more = ["-J", "-S", "-"] if history else []
        return subprocess.run(
            [*self.command, "capture-pane", "-p", *more], capture_output=True, text=True
        ).stdout

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """Poll the pane until ``text`` shows, with a deadline (the pane has no event to wait on)."""
        deadline, poll = time.monotonic() + timeout, threading.Event()
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            poll.wait(0.1)
        raise AssertionError(f"{text!r} never appeared; the pane shows:\n{self.screen()}")

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """Poll the pane until a whole line matches ``pattern`` (a typed command is not its output)."""
        deadline, poll = time.monotonic() + timeout, threading.Event()
        while time.monotonic() < deadline:
            for line in self.screen(history=True).splitlines():
                found = re.fullmatch(pattern, line.strip())
                if found:
                    return found
            poll.wait(0.1)
        raise AssertionError(f"no line matches {pattern!r}; the pane shows:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.command, "send-keys", *keys], check=True)

    def close(self) -> None:
        subprocess.run([*self.command, "kill-server"], check=False)


def ether_run(lab: Path, data: Path, *options: str) -> str:
    """The shell line a user types: `ether run` of ``lab`` (the tests' classes importable), then its
    exit code."""
    path = os.pathsep.join([str(REPO / "tests"), str(REPO / "examples" / "thermostat")])
    return (
        f"cd {REPO} && PYTHONPATH={path} ETHER_DATA={data} {sys.executable} -m ether run {lab}"
        f" {' '.join(options)}; echo ether run ended with $?"
    )


@needs_tmux
def test_ether_run_in_a_terminal_shows_the_monitor_pauses_and_drains_on_quit(tmp_path):
    lab = tmp_path / "lab.yaml"
    lab.write_text(
        f"recorder: {{path: {tmp_path / 'data'}}}\n"
        "instances:\n  echo: {class_path: lab_classes.Echo}\n  ticker: {class_path: lab_classes.Ticker}\n"
    )
    tmux = Tmux(120, 40)
    try:
        tmux.keys(ether_run(lab, tmp_path, "--port 0"), "Enter")
        shown = tmux.wait_for("Instances")
        shown = tmux.wait_for("ticker ")
        assert "echo " in shown and "Recorder" in shown
        tmux.keys("p")  # the first row: echo
        tmux.wait_for("paused")
        tmux.keys("q")
        shown = tmux.wait_for("ether run ended with 0", timeout=60)
        assert "Stopping: save_all -> cleanup -> exit" in shown and "sealed complete" in shown, shown
    finally:
        tmux.close()


@needs_tmux
def test_quit_under_load_at_80x24_prints_the_seal_line_last(tmp_path):
    """The thermostat example at 80x24 while a foreign client floods the broker: q ends the session, the
    seal line is the last line `ether run` prints, and its exit code is the seal's."""
    example = (REPO / "examples" / "thermostat" / "config.yaml").read_text()
    lab = tmp_path / "thermostat.yaml"
    lab.write_text(f"recorder: {{path: {tmp_path / 'data'}}}\n{example}")
    tmux = Tmux(80, 24)
    stop, sent = threading.Event(), [0]

    def flood() -> None:  # plain JSON from a foreign client, ~2000 messages/s, until told or cut off
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        connected = threading.Event()
        client.on_connect = lambda *args: connected.set()
        client.connect(address.host, address.port)
        client.loop_start()
        try:
            assert connected.wait(10), "the flood could not connect"
            while not stop.is_set() and client.is_connected():
                for n in range(20):
                    client.publish(f"load/{n % 4}", json.dumps({"n": sent[0], "value": n / 10}))
                    sent[0] += 1
                stop.wait(0.01)
        finally:
            client.disconnect()
            client.loop_stop()

    try:
        tmux.keys(ether_run(lab, tmp_path, "--port 0"), "Enter")
        shown = tmux.wait_for("Instances")
        # the broker bound a free port itself (none picked here can be taken first); the header names it
        address = BrokerAddress.parse(re.search(r" on (mqtt://\S+:\d+)", shown).group(1))
        tmux.wait_for("controller ")
        source = threading.Thread(target=flood, daemon=True)
        source.start()
        tmux.keys("Tab", "Tab")  # the Topics panel (one panel at a time at 80x24)
        tmux.wait_for("load/")
        deadline = time.monotonic() + 60
        while sent[0] <= 1000:  # the load is on before q (the flood thread's pace varies with the machine)
            assert time.monotonic() < deadline and source.is_alive(), sent
            stop.wait(0.05)
        tmux.keys("q")  # under load
        code = int(tmux.wait_for_line(r"ether run ended with (\d+)", timeout=90).group(1))
        stop.set()
        source.join(10)
        printed = [line.strip() for line in tmux.screen(history=True).splitlines() if line.strip()]
        seal = printed[printed.index(f"ether run ended with {code}") - 1]  # the line before the shell's
        assert seal.startswith("Session") and " sealed " in seal, printed[-12:]
        assert code == (0 if "sealed complete" in seal else exits.INCOMPLETE), seal
        assert sent[0] > 1000, sent  # it was under load
    finally:
        stop.set()
        tmux.close()


@needs_tmux
def test_ether_run_with_stderr_to_a_file_runs_headless(tmp_path):
    """Textual draws on stderr: redirected to a file, `ether run` shows no monitor (and takes no keys)."""
    lab = tmp_path / "lab.yaml"
    lab.write_text(
        f"recorder: {{path: {tmp_path / 'data'}}}\ninstances:\n  ticker: {{class_path: lab_classes.Ticker}}\n"
    )
    log = tmp_path / "run.log"
    tmux = Tmux(80, 24)
    try:
        tmux.keys(ether_run(lab, tmp_path, "--port 0", f"2> {log}"), "Enter")
        deadline, poll = time.monotonic() + 30, threading.Event()
        while "recorder ready" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            poll.wait(0.1)
        assert "Instances" not in tmux.screen()
        tmux.keys("q")  # not a key for anything: the session runs on
        tmux.keys("C-c")  # headless: Ctrl-C ends it, drained and sealed
        tmux.wait_for("ether run ended with 0", timeout=60)
        text = log.read_text()
        assert "sealed complete" in text and "\x1b[" not in text, text[-2000:]
    finally:
        tmux.close()
