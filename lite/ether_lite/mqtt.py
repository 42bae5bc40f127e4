"""A small MQTT 3.1.1 client for MicroPython and CPython, in the manner of umqtt.simple.

One class, one method per packet type. Unlike umqtt.simple it never blocks once connected:
check_msg() reads only what has arrived, keeps partial packets for later, and answers keep-alive.
Every failure raises OSError, so the caller has one thing to catch and then reconnects.
The connection is a TCP socket, touched only by _open, _send, _recv, wait and close: ether_lite.serial
overrides four of them to speak over a serial port instead.
"""

import struct

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython
    from time import monotonic

    def ticks_ms():
        return int(monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


try:
    import select
except ImportError:
    select = None

NOT_READY = (11, 35, 115, 116)  # EAGAIN (Linux, lwIP), EAGAIN (BSD), EINPROGRESS, ETIMEDOUT


class MQTTClient:
    """One connection to a broker: connect, publish (QoS 0/1), subscribe, check_msg, ping, disconnect."""

    def __init__(self, client_id, server, port=1883, user=None, password=None, keepalive=30, timeout=5):
        self.client_id = client_id
        self.server = server
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive  # seconds; 0 turns keep-alive off
        self.timeout = timeout  # seconds a blocking step (connect, send) may take
        self.sock = None
        self.poller = None
        self.cb = None  # cb(topic: bytes, msg: bytes) for each PUBLISH received
        self.pid = 0
        self.unacked = []  # [(pid, topic, msg, retain)] QoS 1 publishes still waiting for PUBACK
        self.rx = b""  # bytes received but not yet a whole packet
        self.lw = None
        self.last_rx = self.last_ping = 0

    def set_callback(self, cb):
        self.cb = cb

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.lw = (topic, msg, retain, qos)

    # -- the connection ---------------------------------------------------------------------

    def _open(self):
        """Open the TCP connection to the broker."""
        import socket  # not at the top: CircuitPython has no socket module, and serial boards need none

        addr = socket.getaddrinfo(self.server, self.port, 0, socket.SOCK_STREAM)[0][-1]
        sock = socket.socket()
        self.sock = sock
        try:
            # Nagle's algorithm would hold each small packet back ~10 ms; not every port has the option.
            sock.setsockopt(getattr(socket, "IPPROTO_TCP", 6), getattr(socket, "TCP_NODELAY", 1), 1)
        except (OSError, AttributeError):
            pass
        try:
            sock.settimeout(self.timeout)
            sock.connect(addr)
        except OSError:
            self.close()
            raise
        if select:
            self.poller = select.poll()
            self.poller.register(sock, select.POLLIN)

    def _send(self, data):
        self.sock.settimeout(self.timeout)
        try:
            self.sock.sendall(data)
        except OSError:
            self.close()
            raise

    def _recv(self):
        """The bytes that have arrived, or None; OSError if the connection is closed."""
        self.sock.settimeout(0)
        try:
            data = self.sock.recv(512)
        except OSError as e:
            if e.args and e.args[0] not in NOT_READY:
                self.close()
                raise
            return None
        if not data:
            self.close()
            raise OSError("broker closed the connection")
        return data

    def wait(self, ms):
        """Sleep until data arrives or `ms` pass (for a blocking run loop)."""
        if self.poller:
            self.poller.poll(ms)
        else:
            import time

            time.sleep(ms / 1000)

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.poller = None

    # -- packets out ------------------------------------------------------------------------

    def _packet(self, first, body):
        n = len(body)
        head = bytearray([first])
        while True:  # remaining length: 7 bits per byte, high bit = more
            byte = n & 0x7F
            n >>= 7
            head.append(byte | 0x80 if n else byte)
            if not n:
                break
        self._send(bytes(head) + body)

    @staticmethod
    def _str(s):
        if isinstance(s, str):
            s = s.encode()
        return struct.pack("!H", len(s)) + s

    def connect(self, clean_session=True):
        """Open the connection, send CONNECT and wait (up to `timeout` s) for CONNACK."""
        self.close()
        self._open()
        self.rx = b""
        self.unacked = []
        flags = 0x02 if clean_session else 0
        body = self._str(self.client_id)
        if self.lw:
            topic, msg, retain, qos = self.lw
            flags |= 0x04 | qos << 3 | retain << 5
            body += self._str(topic) + self._str(msg)
        if self.user is not None:
            flags |= 0x80
            body += self._str(self.user)
            if self.password is not None:
                flags |= 0x40
                body += self._str(self.password)
        self._packet(0x10, b"\x00\x04MQTT\x04" + bytes([flags]) + struct.pack("!H", self.keepalive) + body)
        start = ticks_ms()
        while True:
            packet = self._read_packet()
            if packet and packet[0] == 0x20:
                break
            # (Another packet can only be the tail of an earlier connection over a serial link: skip it.)
            if ticks_diff(ticks_ms(), start) > self.timeout * 1000:
                self.close()
                raise OSError("no CONNACK within %d s" % self.timeout)
            if not packet:
                self.wait(50)
        body = packet[1]
        if len(body) != 2 or body[1] != 0:
            self.close()
            raise OSError("broker refused the connection (CONNACK %r)" % body)
        self.last_rx = self.last_ping = ticks_ms()

    def disconnect(self):
        """Say goodbye (the broker then drops the Last Will) and close."""
        try:
            self._send(b"\xe0\x00")
        except OSError:
            pass
        self.close()

    def ping(self):
        self._send(b"\xc0\x00")
        self.last_ping = ticks_ms()

    def publish(self, topic, msg, retain=False, qos=0):
        """Send a PUBLISH. A QoS 1 message stays in `unacked` until the broker's PUBACK arrives."""
        if self.sock is None:
            raise OSError("not connected")
        if isinstance(msg, str):
            msg = msg.encode()
        body = self._str(topic)
        if qos:
            self.pid = self.pid % 65535 + 1
            body += struct.pack("!H", self.pid)
        self._packet(0x30 | qos << 1 | retain, body + msg)
        if qos:
            self.unacked.append((self.pid, topic, msg, retain))

    def subscribe(self, topic, qos=0):
        """Send a SUBSCRIBE; the SUBACK is read (and ignored) by check_msg."""
        self.pid = self.pid % 65535 + 1
        self._packet(0x82, struct.pack("!H", self.pid) + self._str(topic) + bytes([qos]))

    # -- packets in -------------------------------------------------------------------------

    def _read_packet(self):
        """One whole packet (first byte, body) from what has arrived, or None; never blocks."""
        if self.sock is None:
            raise OSError("not connected")
        data = self._recv()
        if data:
            self.rx += data
        rx = self.rx
        n = shift = 0
        i = 1
        while True:  # decode the remaining length, if enough bytes are here
            if i >= len(rx):
                return None
            n |= (rx[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not rx[i - 1] & 0x80:
                break
        if len(rx) < i + n:
            return None
        self.rx = rx[i + n :]
        self.last_rx = ticks_ms()
        if rx[0] == 0xE0:  # DISCONNECT: only `ether bridge` sends one, when it has no broker connection
            self.close()
            raise OSError("the serial bridge has no broker connection")
        return rx[0], rx[i : i + n]

    def check_msg(self):
        """Handle every packet that has arrived, then ping if due. Raises OSError if the link is dead."""
        while True:
            packet = self._read_packet()
            if not packet:
                break
            first, body = packet
            kind = first & 0xF0
            if kind == 0x30:  # PUBLISH
                n = body[0] << 8 | body[1]
                topic = body[2 : 2 + n]
                pos = 2 + n
                if first & 0x06:  # QoS 1: acknowledge
                    pid = body[pos : pos + 2]
                    pos += 2
                    self._send(b"\x40\x02" + pid)
                if self.cb:
                    self.cb(topic, body[pos:])
            elif kind == 0x40:  # PUBACK
                pid = body[0] << 8 | body[1]
                self.unacked = [m for m in self.unacked if m[0] != pid]
        if self.keepalive:
            now = ticks_ms()
            if ticks_diff(now, self.last_rx) > self.keepalive * 1500:
                self.close()
                raise OSError("no answer from the broker for %d s" % (self.keepalive * 3 // 2))
            if ticks_diff(now, self.last_ping) >= self.keepalive * 500:
                self.ping()
