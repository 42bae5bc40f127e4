"""The serial bridge: pipes the MQTT bytes of a board on a serial port to the broker, and back.

A board without network (ether_lite ``Node(..., serial=usb_cdc.data)``) speaks plain MQTT 3.1.1 over
the port. The bridge cuts the bytes into packets only to know where a board connection starts and to
never interleave two connections' bytes: each CONNECT from the board opens a new TCP connection to the
broker (the previous one, if any, is ended with a DISCONNECT: the board has moved on). Whenever the
board has no broker connection behind it (the port was just opened, or the broker ended the
connection) the bridge sends it a DISCONNECT, which ether_lite takes as "connect again".

When the port vanishes (unplugged, board reset) the broker connection is closed without a DISCONNECT,
so the board's Last Will fires; the bridge then waits for the port to come back and reopens it.
"""

from __future__ import annotations

import logging
import socket
import threading

import serial

from ether.transport.broker import BrokerAddress

log = logging.getLogger("ether.bridge")

CONNECT = 0x10
DISCONNECT = b"\xe0\x00"
PORT_RETRY = 0.2  # seconds between attempts to open a port that is not there (waiting on hardware)
READ_TIMEOUT = 0.5  # a gap this long inside a packet means its writer was reset: the partial is dropped
WRITE_TIMEOUT = 5.0  # a board that reads nothing for this long is treated as gone
CONNECT_TIMEOUT = 5.0


def take_packets(buffer: bytearray) -> list[bytes]:
    """Remove the whole MQTT packets from the front of `buffer` and return them (a partial one stays)."""
    packets: list[bytes] = []
    while True:
        length = shift = 0
        i = 1
        while True:  # remaining length: 7 bits per byte, high bit = more, at most 4 bytes
            if i >= len(buffer):
                return packets
            byte = buffer[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                break
            if shift > 21:  # not MQTT: drop what we have and start afresh with the next bytes
                buffer.clear()
                return packets
        if len(buffer) < i + length:
            return packets
        packets.append(bytes(buffer[: i + length]))
        del buffer[: i + length]


class Bridge:
    """One serial port piped to the broker; serve() runs until stop is set."""

    def __init__(self, port: str, broker: BrokerAddress, baud: int = 115200) -> None:
        self.port = port
        self.broker = broker
        self.baud = baud
        self.stop = threading.Event()
        self.serial: serial.Serial | None = None
        self.upstream: socket.socket | None = None  # the broker connection of the board's MQTT connection
        self.lock = threading.Lock()  # guards upstream, and keeps writes to the port whole packets

    def serve(self) -> None:
        """Wait for the port, pipe until it vanishes, and again, until stop is set."""
        while not self.stop.is_set():
            port = self._wait_for_port()
            if port is None:
                return
            self.serial = port
            log.info("%s open: piping to the broker at %s", self.port, self.broker.url)
            try:
                self._pipe()
            except (serial.SerialException, OSError) as exc:
                log.warning("%s went away (%s): the board's broker connection is closed", self.port, exc)
            finally:
                self._end_upstream(goodbye=False)
                port.close()

    def _wait_for_port(self) -> serial.Serial | None:
        """The port, opened as soon as it is there (tried every PORT_RETRY s); None once stopped."""
        waiting = False
        while not self.stop.is_set():
            try:
                return serial.Serial(
                    self.port, self.baud, timeout=READ_TIMEOUT, write_timeout=WRITE_TIMEOUT, exclusive=True
                )
            except (serial.SerialException, OSError) as exc:
                if not waiting:
                    log.info("waiting for %s (%s)", self.port, exc)
                    waiting = True
            self.stop.wait(PORT_RETRY)
        return None

    def _pipe(self) -> None:
        """Board to broker, a packet at a time, until the port fails or the bridge stops."""
        self._to_board(DISCONNECT)  # whatever the board was doing, it starts over with a CONNECT
        buffer = bytearray()
        while not self.stop.is_set():
            data = self._open_port.read(self._open_port.in_waiting or 1)
            if not data:
                buffer.clear()  # a pause: a partial packet there will never be completed (READ_TIMEOUT)
                continue
            buffer += data
            for packet in take_packets(buffer):
                if packet[0] == CONNECT:
                    self._end_upstream(goodbye=True)
                    self._start_upstream()
                elif packet == DISCONNECT:  # the board says goodbye: so does its broker connection
                    self._end_upstream(goodbye=True)
                    continue
                with self.lock:
                    upstream = self.upstream
                if upstream is None:
                    continue  # the board was told (DISCONNECT) and will send a CONNECT
                try:
                    upstream.sendall(packet)
                except OSError as exc:
                    self._upstream_ended(upstream, f"sending to the broker failed: {exc}")

    def _start_upstream(self) -> None:
        try:
            sock = socket.create_connection((self.broker.host, self.broker.port), CONNECT_TIMEOUT)
        except OSError as exc:
            log.warning("cannot reach the broker at %s (%s): the board will try again", self.broker.url, exc)
            self._to_board(DISCONNECT)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        with self.lock:
            self.upstream = sock
        log.info("%s: the board connects; new broker connection", self.port)
        threading.Thread(
            target=self._from_broker, args=(sock,), name="bridge-from-broker", daemon=True
        ).start()

    def _from_broker(self, sock: socket.socket) -> None:
        """Broker to board, whole packets only, until this connection ends; then closes it."""
        buffer = bytearray()
        try:
            while True:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self._upstream_ended(sock, "the broker closed the connection")
                    return
                buffer += data
                with self.lock:
                    if self.upstream is not sock:
                        return  # the bridge ended it: a new CONNECT, or the port went away
                    try:
                        for packet in take_packets(buffer):
                            self._open_port.write(packet)
                        failed = None
                    except (serial.SerialException, OSError) as exc:
                        failed = f"writing to the board failed ({exc})"
                if failed:  # the port is going away, or the board reads nothing: it cannot be told
                    self._upstream_ended(sock, failed, tell_board=False)
                    return
        finally:
            sock.close()

    def _upstream_ended(self, sock: socket.socket, reason: str, tell_board: bool = True) -> None:
        """The broker connection ended on its own; the board is told, so that it connects again."""
        with self.lock:
            if self.upstream is not sock:
                return
            self.upstream = None
            log.warning("%s: %s", self.port, reason)
            if tell_board:
                try:
                    self._open_port.write(DISCONNECT)
                except (serial.SerialException, OSError):
                    pass  # the port is going away: serve() notices
        _shutdown(sock, socket.SHUT_RDWR)

    def _end_upstream(self, goodbye: bool) -> None:
        """End the broker connection: with `goodbye` by a DISCONNECT (its Last Will does not fire), else
        abruptly (it does). Its reader thread then sees the end and closes the socket."""
        with self.lock:
            sock, self.upstream = self.upstream, None
        if sock is None:
            return
        if goodbye:
            try:
                sock.sendall(DISCONNECT)
            except OSError:
                pass
            _shutdown(sock, socket.SHUT_WR)  # the broker reads the DISCONNECT, then the end
        else:
            _shutdown(sock, socket.SHUT_RDWR)

    def _to_board(self, data: bytes) -> None:
        with self.lock:
            self._open_port.write(data)

    @property
    def _open_port(self) -> serial.Serial:
        """The board's port: only the pipe's threads use it, and only while it is open."""
        assert self.serial is not None, "the port is not open"
        return self.serial


def _shutdown(sock: socket.socket, how: int) -> None:
    """Shut a broker connection down; unlike close(), this wakes the thread reading from it."""
    try:
        sock.shutdown(how)
    except OSError:
        pass
