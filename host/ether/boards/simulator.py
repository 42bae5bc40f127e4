"""A simulated board: an ``ether_lite`` class run on this computer, started by ``ether run`` as an instance.

The board's code is the same ``ether_lite`` code a real board runs (under CPython here): its Node
connects to the session's broker on its own connection, with its own Last Will, in a thread of the
instance's process. To the rest of the lab it is a device like any other (docs/devices.md).

    instances:
      room:
        class_path: ether.boards.simulator.SimulatedBoard
        kwargs: {device: thermo1, board: room.Room, board_kwargs: {start: 16.0}}
"""

from __future__ import annotations

import inspect
import threading
from typing import TYPE_CHECKING, Any

from ether.runtime import context
from ether.runtime.classes import import_class
from ether.runtime.decorators import ether_init, ether_shutdown
from ether.transport.broker import BrokerAddress

if TYPE_CHECKING:
    from ether_lite import Node

MAX_WAIT_MS = 50  # how long the board's loop waits for a message at most: how quickly it notices a stop


class SimulatedBoard:
    """Runs ``board`` (a class with ``@sensor``/``@actuator`` methods) as the device ``device``."""

    def __init__(
        self,
        device: str,
        board: str,
        board_kwargs: dict[str, Any] | None = None,
        firmware: str = "simulated",
        broker: str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        from ether_lite.methods import methods_of

        if not device or any(c in device for c in "/+#$. "):
            raise ValueError(
                f"device {device!r}: a device name is a word without '/', '+', '#', '$', '.' or spaces"
            )
        self.device, self.firmware, self.connect_timeout = device, firmware, connect_timeout
        self.broker = BrokerAddress.parse(broker) if broker else None
        try:
            cls = import_class(board)
        except ImportError as exc:
            raise ImportError(f"board: {exc}") from None
        try:
            inspect.signature(cls).bind(**(board_kwargs or {}))
        except TypeError as exc:
            raise TypeError(f"board_kwargs: {cls.__name__}{inspect.signature(cls)}: {exc}") from None
        self.board = cls(**(board_kwargs or {}))
        if not methods_of(self.board):
            raise ValueError(f"board: {board} has no @sensor or @actuator methods (from ether_lite)")
        self.node: Node | None = None  # made by connect(), on the session's broker
        self.online = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def code_of(device: str, board: str, *args: Any, **kwargs: Any) -> list[str]:
        """For the session manifest: the board class runs here too, so its source is hashed."""
        return [board]

    @staticmethod
    def graph_topics(device: str, board: str, *args: Any, **kwargs: Any) -> tuple[list[str], list[str]]:
        """For ``ether graph``: the board's readings, ``<device>.<sensor>`` (its actuators are called
        through ``ether.devices``, which a graph of decorators cannot see)."""
        from ether_lite.methods import methods_of

        cls = import_class(board)
        methods = methods_of(object.__new__(cls))  # the marks are on the class: no need to construct it
        return [f"{device}.{n}" for n, m in methods.items() if m.kind == "sensor"], []

    @ether_init
    def connect(self) -> None:
        """Start the board on the session's broker; return once it is online (its schema announced)."""
        from ether_lite import Node

        address = self.broker or context.current().services.requester.bus.address
        session = context.current().services.topics.session if self.broker is None else "default"
        self.node = Node(
            self.device,
            self.board,
            address.host,
            address.port,
            session=session,
            user=address.username,
            password=address.password,
            firmware=self.firmware,
        )
        self._thread = threading.Thread(target=self._run, name=f"board-{self.device}", daemon=True)
        self._thread.start()
        if not self.online.wait(self.connect_timeout):
            raise ConnectionError(
                f"simulated board '{self.device}' did not connect to {address.url} within"
                f" {self.connect_timeout:g} s"
            )

    def _run(self) -> None:
        """The board's main loop, as ``Node.run()`` but stoppable from another thread."""
        node = self.node
        assert node is not None, "connect() makes the node before it starts this thread"
        try:
            while not self._stop.is_set():
                node.poll()
                if not node.connected:
                    self._stop.wait(MAX_WAIT_MS / 1000)  # reconnect attempts follow the node's backoff
                    continue
                self.online.set()
                node.client.wait(MAX_WAIT_MS)  # returns as soon as a message arrives
        finally:
            node.stop()

    @ether_shutdown
    def disconnect(self) -> None:
        """Stop the board cleanly: its buffered readings are sent, then it says ``offline``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.connect_timeout)
