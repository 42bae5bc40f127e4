"""The recorder's process, supervised by the session: started first, restarted if it dies, stopped last."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from dataclasses import asdict

from ether.contract.messages import RecorderStatus
from ether.contract.topics import Topics
from ether.contract.wire import decode_object, encode
from ether.data.recorder.recorder import RecorderSpec
from ether.transport.broker import BrokerAddress
from ether.transport.bus import Bus
from ether.transport.requests import Requester
from ether.transport.waiting import wait_until

log = logging.getLogger("ether.recorder")

MAX_BACKOFF = 2.0


class RecorderNotReady(RuntimeError):
    """The recorder did not start; the session refuses to run unrecorded (set recorder: {enabled: false})."""


class RecorderProcess:
    def __init__(self, topics: Topics, run_dir: str) -> None:
        self.topics, self.run_dir = topics, run_dir
        self.process: subprocess.Popen | None = None
        self.address: BrokerAddress | None = None
        self.requester: Requester | None = None
        self.restarts = 0
        self.status: dict = {}
        self._changed = threading.Condition()
        self._stopping = threading.Event()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def launch(self) -> None:
        """Start the process; it imports while the broker comes up and waits for its spec on stdin."""
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from ether.data.recorder.recorder import main; main()"],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C reaches only the session, which stops the recorder last
        )
        if self.address is not None and self.requester is not None:
            self._send_spec()
        threading.Thread(
            target=self._watch, args=(self.process,), name="ether-recorder-watch", daemon=True
        ).start()

    def attach(self, address: BrokerAddress, bus: Bus, requester: Requester) -> None:
        self.address, self.requester = address, requester
        bus.subscribe(self.topics.recorder_status(), self._on_status)
        self._send_spec()

    def _send_spec(self) -> None:
        spec = RecorderSpec(self.address.to_dict(), self.topics.session, self.run_dir, self.restarts)
        try:
            self.process.stdin.write(json.dumps(asdict(spec)) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died already: _watch restarts it

    def _on_status(self, topic: str, raw: bytes) -> None:
        status = decode_object(raw)
        if status is not None:
            with self._changed:
                self.status = status
                self._changed.notify_all()

    def ready(self) -> bool:
        return self.status.get("state") == "ready" and self.status.get("pid") == self.pid

    def wait_ready(self, timeout: float) -> None:
        if not wait_until(self._changed, self.ready, timeout):
            raise RecorderNotReady(
                f"the recorder (store {self.run_dir}) was not ready within {timeout:g} s;"
                " see its log above, or run without recording (recorder: {enabled: false})"
            )

    def _watch(self, process: subprocess.Popen) -> None:
        code = process.wait()
        if self._stopping.is_set() or process is not self.process:
            return
        if code == 0:  # it was told to stop (a forced quit): a restart would undo that
            log.warning("the recorder was stopped by a shutdown command; the session is no longer recorded")
            if self.requester is not None:  # in case its own last word was lost (or its Last Will won):
                stopped = RecorderStatus(state="stopped", pid=process.pid)  # publishers must stop waiting
                topic = self.topics.recorder_status()
                self.requester.bus.publish(topic, encode(stopped.payload()), retain=True)
            return
        self.restarts += 1
        delay = min(MAX_BACKOFF, 0.1 * 2 ** min(self.restarts, 5))
        log.warning(
            "the recorder exited with code %s; restarting it in %.1f s (restart %d)",
            code,
            delay,
            self.restarts,
        )
        if self._stopping.wait(delay):
            return
        self.launch()

    def abandon(self) -> None:
        """Another recorder serves the session: let ours exit before it connects (no spec on stdin)."""
        self._stopping.set()
        try:
            self.process.stdin.close()
        except OSError:
            pass

    def stop(self, timeout: float) -> int | None:
        """Close its stdin: it commits everything it received, then exits (terminate/kill if it does not).

        A pipe, not a broker message, so the recorder stops cleanly even when the broker is unwell."""
        self._stopping.set()
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        try:
            self.process.stdin.close()
        except OSError:
            pass
        for action in (None, self.process.terminate, self.process.kill):
            if action is not None:
                log.error("the recorder did not finish its last commit in time; %s", action.__name__)
                action()
            try:
                return self.process.wait(timeout if action is None else 5.0)
            except subprocess.TimeoutExpired:
                continue
        return None
