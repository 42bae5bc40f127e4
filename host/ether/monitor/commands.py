"""What the monitor can ask of a session, as the existing control-plane messages (docs/topics.md).

The same messages as the ``ether pause|resume|stop|restart|launch|shutdown`` commands and
``ether.get``: instance control for pause/resume/start/save_all, session control for
stop/restart/launch/shutdown, service and device calls as requests. Each call blocks until the reply
(the app runs them on worker threads) and returns a line for the user, or raises CommandFailed.
"""

from __future__ import annotations

import json
from typing import Any

from ether.contract.messages import DeviceCall, InstanceCommand, RecorderCommand, SessionCommand, read_reply
from ether.contract.topics import TopicError, check_publish_topic
from ether.monitor.model import SessionModel
from ether.transport.requests import RequestTimeout

INSTANCE_COMMANDS = ("pause", "resume", "start", "save_all")
SESSION_COMMANDS = ("stop", "restart", "launch", "shutdown")


class CommandFailed(RuntimeError):
    """The session refused, or nobody answered; the message says which and why."""


class Commands:
    def __init__(self, model: SessionModel, timeout: float = 30.0) -> None:
        self.model, self.timeout = model, timeout
        self.topics = model.topics

    def _ask(self, topic: str, payload: Any, what: str, timeout: float | None = None) -> Any:
        """Send a request and return the result of its reply; CommandFailed if it was refused."""
        timeout = timeout or self.timeout
        try:
            reply = read_reply(self.model.request(topic, payload, timeout))
        except RequestTimeout:
            raise CommandFailed(f"{what}: no answer within {timeout:g} s") from None
        if not reply.ok:
            kind = "" if reply.error.kind == "error" else f"{reply.error.kind}: "
            raise CommandFailed(f"{what}: {kind}{reply.error.message}")
        return reply.result

    def instance(self, name: str, command: str) -> str:
        """pause | resume | start | save_all one instance (its control topic)."""
        assert command in INSTANCE_COMMANDS
        self._ask(self.topics.instance_control(name), InstanceCommand(command=command), f"{command} '{name}'")
        return f"{command} '{name}': done"

    def session(self, command: str, instance: str | None = None) -> str:
        """stop | restart | launch an instance, or shutdown the session (the session control topic)."""
        assert command in SESSION_COMMANDS
        what = f"{command} '{instance}'" if instance else command
        result = self._ask(
            self.topics.session_control(), SessionCommand(command=command, instance=instance), what
        )
        return str(result or f"{what}: done")

    def call_service(self, instance: str, service: str, args: dict[str, Any], timeout: float = 10.0) -> Any:
        """An ``@ether_get``/``@ether_save`` service of one instance; returns its result."""
        return self._ask(
            self.topics.instance_call(instance, service), args, f"{service} on '{instance}'", timeout
        )

    def call_device(self, device: str, method: str, args: dict[str, Any], timeout: float = 10.0) -> Any:
        """A board's actuator (or sensor) through its call topic; returns what the method returned."""
        topic = self.topics.device_call(device)
        return self._ask(topic, DeviceCall(method=method, args=args), f"{device}.{method}", timeout)

    def publish(self, topic: str, text: str) -> str:
        """Publish JSON typed by the user to a data topic."""
        try:
            check_publish_topic(topic)
        except TopicError as exc:
            raise CommandFailed(str(exc)) from None
        try:
            payload = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise CommandFailed(f"the payload is not JSON: {exc}") from None
        self.model.publish(topic, payload)
        return f"published to '{topic}'"

    def force_end(self, unconfirmed: int, timeout: float = 10.0) -> str:
        """Stop the recorder now, recording a forced quit: publishers waiting for confirmations give up,
        their unsaved messages stay in the outbox files and the session is sealed with their count."""
        command = RecorderCommand(
            command="shutdown", forced_by=self.model.stamper.source, unconfirmed=unconfirmed
        )
        result = self._ask(self.topics.recorder_control(), command, "force the end", timeout)
        saved = (result or {}).get("saved")
        return f"recorder stopped ({saved} messages saved); the forced quit is recorded in the session store"
