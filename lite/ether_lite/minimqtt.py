"""The network on CircuitPython: adafruit_minimqtt behind the few methods
of ether_lite.mqtt.

minimqtt waits inside its calls (connect for CONNACK, a QoS 1 publish for
its PUBACK, its own ping for the answer), so this wrapper keeps what it
can short: it reads with a 1 ms socket timeout, pings by itself without
waiting, and holds the messages that arrive inside a minimqtt call until
that call is over (a handler that publishes would re-enter minimqtt).
Its errors (MMQTTException) become OSError, the one error the node
catches. publish() returns once acknowledged, so `unacked` holds a
message only while minimqtt waits for its PUBACK: if that wait fails,
the node sends it again (it may have reached the broker).
"""

from adafruit_minimqtt.adafruit_minimqtt import MQTT, MMQTTException

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython, CircuitPython
    from adafruit_ticks import ticks_diff, ticks_ms

READ_S = 0.001  # how long a check may wait for a byte that is not there


class _MQTT(MQTT):
    """minimqtt that skips an incoming message over `limit` bytes as it
    arrives (reading it whole would raise MemoryError on a board), and
    sends each packet whole."""

    limit = 2048
    too_big = False
    out = b""  # the start of a packet, not sent yet

    def _send_bytes(self, buffer):
        # minimqtt writes a packet in two or three pieces. A broker that
        # has its start may wait for the rest with no timeout (amqtt
        # does): a board that froze between two pieces would never be
        # shown lost. So a packet goes out once it is whole.
        out = self.out + bytes(buffer)
        n = shift = 0
        i = 1
        while i < len(out):  # remaining length: 7 bits a byte, high bit on
            n |= (out[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not out[i - 1] & 0x80:
                if len(out) >= i + n:
                    self.out = b""
                    super()._send_bytes(out)
                    return
                break
        self.out = out

    def _sock_exact_recv(self, size, timeout=None):
        if size <= self.limit:
            return super()._sock_exact_recv(size, timeout)
        self.too_big = True
        while size:
            n = min(size, 256)
            super()._sock_exact_recv(n, timeout)
            size -= n
        return b""


class MiniMQTTClient:
    def __init__(self, client_id, server, port, user, password, keepalive,
                 pool, max_packet=2048):
        if pool is None:
            import socketpool
            import wifi

            pool = socketpool.SocketPool(wifi.radio)
        self.pool = pool
        self.server = server  # for log lines
        self.port = port
        self.keepalive = keepalive
        self.unacked = []
        self.tx = b""
        self.connected = False
        self.cb = None
        self.inbox = []  # (topic, msg) arrived inside a minimqtt call
        self.last_rx = 0
        self.mqtt = _MQTT(
            broker=server,
            port=port,
            username=user,
            password=password,
            client_id=client_id,
            is_ssl=False,
            keep_alive=keepalive,
            socket_pool=pool,
            socket_timeout=1,  # to connect; then READ_S
            recv_timeout=2,  # for a CONNACK, PUBACK, or the rest of a packet
            connect_retries=1,  # the node does the backing off
        )
        self.mqtt.limit = self.max_packet = max_packet
        self.lw = None  # the Last Will: (topic, msg, retain, qos)
        self.mqtt.on_message = self._arrived

    def _arrived(self, client, topic, msg):
        if client.too_big:
            client.too_big = False
            msg = None
        self.inbox.append((topic, msg))

    def _do(self, action, *args):
        try:
            return action(*args)
        except (MMQTTException, RuntimeError) as e:
            self.close()
            raise OSError(str(e))
        except OSError:
            self.close()
            raise

    def connect(self):
        m = self.mqtt
        topic, msg, retain, qos = self.lw
        m.will_set(topic, msg, retain=retain, qos=qos)
        m._socket_timeout = 1
        self._do(m.connect)
        # minimqtt has no setting for this: a check waits READ_S at most
        m._socket_timeout = READ_S
        m._sock.settimeout(READ_S)
        try:  # minimqtt sends a packet in pieces: Nagle would delay them
            pool = self.pool
            m._sock.setsockopt(pool.IPPROTO_TCP, pool.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            pass
        self.connected = True
        self.last_rx = ticks_ms()

    def publish(self, topic, msg, retain=False, qos=0):
        if qos:  # in flight until minimqtt has its PUBACK
            self.unacked.append((0, topic, msg, retain))
        if not self.connected:
            raise OSError("not connected")
        self._do(self.mqtt.publish, topic, msg, retain, qos)
        if qos:
            self.unacked.pop()
            self.last_rx = ticks_ms()  # its PUBACK came

    def subscribe(self, topic, qos=0):
        self._do(self.mqtt.subscribe, topic, qos)

    def check_msg(self):
        m = self.mqtt
        now = ticks_ms()
        if ticks_diff(now, self.last_rx) > self.keepalive * 1500:
            self.close()
            raise OSError("no answer from the broker for %d s"
                          % (self.keepalive * 3 // 2))
        # ping before minimqtt would: its ping() waits for the answer
        sent = m._last_msg_sent_timestamp
        if ticks_diff(now, sent) >= self.keepalive * 500:
            self._do(m._send_bytes, b"\xc0\x00")
            m._last_msg_sent_timestamp = now
        if self._do(m.loop, READ_S):
            self.last_rx = ticks_ms()
        while self.inbox:  # now a handler may publish
            topic, msg = self.inbox.pop(0)
            self.cb(topic, msg)

    def wait(self, ms):
        import time

        time.sleep(min(ms, 20) / 1000)

    def disconnect(self):
        try:
            self.mqtt.disconnect()
        except (MMQTTException, OSError, RuntimeError):
            pass
        self.close()

    def close(self):
        # minimqtt cannot forget a dead socket: as its reconnect() does
        self.mqtt._close_socket()
        self.mqtt._is_connected = False
        self.mqtt._subscribed_topics = []
        self.mqtt.out = b""  # a piece of a packet for the dead link
        self.connected = False
        self.inbox = []
