"""MQTT over a serial port, for a board without network: `ether bridge` on
the host carries it to the broker.

The port is usb_cdc.data (CircuitPython), a machine.UART (MicroPython) or
a tty opened as a file (unix MicroPython, CPython). It stays open from one
MQTT connection to the next: the bridge opens a broker connection for
each CONNECT, and answers DISCONNECT when it has none.
"""

from .mqtt import MQTTClient, select  # select: None if the port has none


class SerialClient(MQTTClient):
    """MQTTClient whose link is a serial port instead of a TCP socket."""

    def __init__(self, port, client_id, user=None, password=None,
                 keepalive=30, timeout=5, max_packet=2048):
        super().__init__(client_id, "the serial bridge", 0, user,
                         password, keepalive, timeout, max_packet)
        self.serial = port
        try:
            self.poller = select.poll()
            self.poller.register(port, select.POLLIN)
        except (AttributeError, OSError, TypeError):  # cannot watch it
            self.poller = None

    def _open(self):
        """Nothing to open; bytes still waiting on the port belong to an
        earlier connection: drop them."""
        while self._recv():
            pass
        self.sock = self.serial
        self.up = True

    def _send(self, data):
        if data and self.serial.write(data) != len(data):
            self.close()
            raise OSError("serial port: write timed out")

    def _recv(self):
        """The bytes that have arrived, or None."""
        data = b""
        n = self._waiting()
        while n and len(data) < 512:
            chunk = self.serial.read(min(n, 512 - len(data)))
            if not chunk:
                self.close()
                raise OSError("serial port closed")
            data += chunk
            n = self._waiting()
        return data or None

    def _waiting(self):
        """How many bytes can be read now (a file cannot tell: 1 while
        poll says more)."""
        port = self.serial
        if hasattr(port, "any"):  # machine.UART
            return port.any()
        if hasattr(port, "in_waiting"):  # usb_cdc.data
            return port.in_waiting
        return 1 if self.poller.poll(0) else 0

    def wait(self, ms):
        if self.poller:
            self.poller.poll(ms)
        else:
            import time

            time.sleep(ms / 1000)

    def close(self):
        self.sock = None  # the port stays open for the next connection
        self.up = self.connected = False
