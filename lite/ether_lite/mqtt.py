"""A small MQTT 3.1.1 client for MicroPython and CPython, after umqtt.simple.

One class, one method per packet type. Unlike umqtt.simple it never
blocks: connect() only starts connecting, and check_msg() does what can
be done now (finish connecting, send what is queued, read what has
arrived, ping). A packet over `max_packet` bytes is dropped as it
arrives and reported as cb(topic, None). Every failure raises OSError,
the one thing the caller catches before it connects again.

The link is a TCP socket, touched only by _open, _send, _recv, wait and
close: ether_lite.serial overrides them to use a serial port instead.
What runs only to connect is in ether_lite.rare.
"""

import struct

from . import _rare

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython
    from .compat import ticks_diff, ticks_ms
try:
    import select
except ImportError:
    select = None

# EAGAIN (Linux, lwIP), EAGAIN (BSD), EINPROGRESS, ETIMEDOUT
NOT_READY = (11, 35, 115, 116)
POLLIN, POLLOUT, POLLFAIL = 1, 4, 8 | 16  # POLLERR | POLLHUP


class MQTTClient:
    """One connection to a broker: QoS 0/1 publish, subscribe, ping."""

    def __init__(self, client_id, server, port=1883, user=None,
                 password=None, keepalive=30, timeout=5, max_packet=2048):
        _rare("client", self, client_id, server, port, user, password,
              keepalive, timeout, max_packet)

    # -- the link -------------------------------------------------------

    _open = None  # a link of its own (serial); else rare.open_socket

    def _try(self, action, arg):
        """action(arg) on the socket; None if it would have to wait."""
        try:
            return action(arg)
        except OSError as e:
            if e.args and e.args[0] in NOT_READY:
                return None
            self.close()
            raise

    def _send(self, data):
        self.tx += data
        if self.up:
            n = self._try(self.sock.send, self.tx)
            if n:
                self.tx = self.tx[n:]

    def _recv(self):
        """The bytes that have arrived, or None."""
        data = self._try(self.sock.recv, 512)
        if data == b"":
            self.close()
            raise OSError("broker closed the connection")
        return data

    def wait(self, ms):
        """Sleep until data arrives or `ms` pass (for a run loop)."""
        if self.poller:
            out = POLLOUT if self.tx or not self.up else 0
            self.poller.modify(self.sock, POLLIN | out)
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
        self.sock = self.poller = None
        self.up = self.connected = False

    # -- packets out ----------------------------------------------------

    def _packet(self, first, body):
        n = len(body)
        head = bytearray([first])
        while True:  # remaining length: 7 bits a byte, high bit = more
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

    def connect(self):
        """Start connecting (open the link, queue CONNECT); check_msg()
        sets `connected` at CONNACK."""
        _rare("connect", self)

    def disconnect(self):
        """Say goodbye (the broker then drops the Last Will) and close."""
        try:
            self._send(b"\xe0\x00")
        except OSError:
            pass
        self.close()

    def publish(self, topic, msg, retain=False, qos=0):
        """Send a PUBLISH. At QoS 1 it is in `unacked` from now until its
        PUBACK, also if sending fails: it may have reached the broker."""
        if isinstance(msg, str):
            msg = msg.encode()
        body = self._str(topic)
        if qos:
            self.pid = self.pid % 65535 + 1
            body += struct.pack("!H", self.pid)
            self.unacked.append((self.pid, topic, msg, retain))
        if not self.connected:
            raise OSError("not connected")
        self._packet(0x30 | qos << 1 | retain, body + msg)

    def subscribe(self, topic, qos=0):
        """Send a SUBSCRIBE; check_msg() reads (and ignores) the SUBACK."""
        self.pid = self.pid % 65535 + 1
        body = struct.pack("!H", self.pid) + self._str(topic)
        self._packet(0x82, body + bytes([qos]))

    # -- packets in -----------------------------------------------------

    def _read_packet(self):
        """(first byte, body, whole) of a packet that has arrived, or None.

        A packet over max_packet is not kept: its body is only the topic
        (and packet id) and `whole` is False; the rest is skipped.
        """
        data = self._recv()
        if data:
            if self.skip:
                n = min(self.skip, len(data))
                self.skip -= n
                data = data[n:]
            self.rx += data
        rx = self.rx
        n = shift = 0
        i = 1
        while True:  # decode the remaining length, if its bytes are here
            if i >= len(rx):
                return None
            n |= (rx[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not rx[i - 1] & 0x80:
                break
        if n > self.max_packet:
            if len(rx) < i + 2:
                return None
            end = i + 4 + (rx[i] << 8 | rx[i + 1])  # topic and packet id
            if len(rx) < end <= 512:
                return None
            self.skip = i + n - len(rx)
            self.rx = b""
            return rx[0], rx[i:end], False
        if len(rx) < i + n:
            return None
        self.rx = rx[i + n:]
        self.last_rx = ticks_ms()
        if rx[0] == 0xE0:  # DISCONNECT: the serial bridge has no broker
            self.close()
            raise OSError("the serial bridge has no broker connection")
        return rx[0], rx[i:i + n], True

    def check_msg(self):
        """Do what can be done now: come up, send, handle what arrived,
        ping. Raises OSError when the link is dead."""
        now = ticks_ms()
        if not self.connected and ticks_diff(
                now, self.started) > self.timeout * 1000:
            self.close()
            raise OSError("no CONNACK within %d s" % self.timeout)
        if not self.up:
            for _, event in self.poller.poll(0):
                if event & POLLFAIL:
                    self.close()
                    raise OSError("cannot reach the broker")
                self.up = True
            if not self.up:
                return
        if self.tx:
            self._send(b"")
        while True:
            packet = self._read_packet()
            if not packet:
                break
            first, body, whole = packet
            kind = first & 0xF0
            if kind == 0x20:  # CONNACK
                if len(body) != 2 or body[1]:
                    self.close()
                    raise OSError("broker refused the connection (%r)"
                                  % body)
                self.connected = True
                self.last_rx = self.last_ping = ticks_ms()
            elif not self.connected:
                pass  # the tail of an earlier connection (serial link)
            elif kind == 0x30:  # PUBLISH
                n = body[0] << 8 | body[1]
                pos = 2 + n
                if first & 0x06 and len(body) >= pos + 2:  # QoS 1: ack
                    self._send(b"\x40\x02" + body[pos:pos + 2])
                    pos += 2
                if self.cb:
                    self.cb(body[2:2 + n], body[pos:] if whole else None)
            elif kind == 0x40:  # PUBACK
                pid = body[0] << 8 | body[1]
                self.unacked = [m for m in self.unacked if m[0] != pid]
        if self.connected and self.keepalive:
            if ticks_diff(now, self.last_rx) > self.keepalive * 1500:
                self.close()
                raise OSError("no answer from the broker for %d s"
                              % (self.keepalive * 3 // 2))
            if ticks_diff(now, self.last_ping) >= self.keepalive * 500:
                self._send(b"\xc0\x00")  # PINGREQ
                self.last_ping = now
