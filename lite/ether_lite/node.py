"""The node: runs one user object on a board and connects its sensors and actuators to the broker.

A reading's path: poll() finds a sensor due -> read() calls the method -> _reading() stamps it
(boot id, seq) as JSON -> the outbox -> _flush() publishes it with QoS 1 -> it waits in the client's
`unacked` list until the broker's PUBACK. If the connection dies first, unacknowledged readings go back
to the front of the outbox and are sent again after the reconnect; nothing is published into a dead link.
"""

import json
import sys
import time
from binascii import hexlify

from . import __version__
from .methods import methods_of

try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython, CircuitPython
    from time import monotonic

    def ticks_ms():
        return int(monotonic() * 1000)

    def ticks_add(a, b):
        return a + b

    def ticks_diff(a, b):
        return a - b


try:
    from os import urandom
except ImportError:
    from random import getrandbits

    def urandom(n):
        return bytes(getrandbits(8) for _ in range(n))


MAX_INFLIGHT = 8  # QoS 1 readings sent but not yet acknowledged


class Node:
    """One device: `Node("thermo1", Thermostat(), "192.168.1.10").run()`, or call poll() in your own loop.

    With `serial=` (usb_cdc.data, a machine.UART, a tty opened as a file) the board speaks MQTT over that
    port instead of the network, and `ether bridge` on the host carries it to the broker.
    """

    def __init__(
        self,
        device,
        obj,
        host="127.0.0.1",
        port=1883,
        session="default",
        user=None,
        password=None,
        firmware=None,
        buffer=32,
        keepalive=30,
        max_backoff=30,
        pool=None,
        verbose=True,
        serial=None,
    ):
        self.device = device
        self.obj = obj
        self.firmware = firmware
        self.methods = methods_of(obj)
        if not self.methods:
            raise ValueError("%s has no @sensor or @actuator methods" % type(obj).__name__)
        self.where = "%s:%d" % (host, port)
        root = "ether/" + session
        self.data_prefix = ("" if session == "default" else session + "/") + device + "."
        self.schema_topic = root + "/device/" + device + "/schema"
        self.state_topic = root + "/device/" + device + "/state"
        self.call_topic = root + "/device/" + device + "/call"
        self.errors_topic = root + "/errors"
        self.boot = hexlify(urandom(6)).decode()
        self.seq = 0  # readings stamped this boot; gap-free
        self.replies = 0  # replies and error events (outside the reading sequence)
        self.outbox = []  # [(topic, payload)] readings not yet handed to the broker, oldest first
        self.buffer = buffer
        self.dropped = 0  # readings dropped this boot because the outbox was full
        self.connected = False
        self.verbose = verbose
        self.backoff = 0.5
        self.max_backoff = max_backoff
        now = ticks_ms()
        self.next_try = now
        self.due = {}  # sensor name -> ticks when its next reading is due
        for name in self.methods:
            if self.methods[name].period:
                self.due[name] = now
        client_id = "ether_lite-" + device
        if serial is not None:
            from .serial import SerialClient

            self.client = SerialClient(serial, client_id, user, password, keepalive)
            self.where = "the serial bridge"
        elif pool is not None or sys.implementation.name == "circuitpython":
            from .minimqtt import MiniMQTTClient

            self.client = MiniMQTTClient(client_id, host, port, user, password, keepalive, pool)
        else:
            from .mqtt import MQTTClient

            self.client = MQTTClient(client_id, host, port, user, password, keepalive)
        self.client.set_callback(self._on_message)

    def log(self, message):
        if self.verbose:
            print("ether_lite %s: %s" % (self.device, message))

    def schema(self):
        """What the board announces (retained): its methods, versions and boot id."""
        impl = sys.implementation
        v = impl.version
        methods = {}
        for name in self.methods:
            methods[name] = self.methods[name].describe()
        return {
            "device": self.device,
            "kind": "ether_lite",
            "lib_version": __version__,
            "platform": sys.platform,
            "implementation": "%s %d.%d.%d" % (impl.name, v[0], v[1], v[2]),
            "firmware": self.firmware,
            "boot": self.boot,
            "methods": methods,
        }

    # -- the loop ---------------------------------------------------------------------------

    def poll(self):
        """Do what is due now and return at once: connect, handle messages, take readings, send."""
        now = ticks_ms()
        if not self.connected and ticks_diff(now, self.next_try) >= 0:
            self._connect()
        if self.connected:
            try:
                self.client.check_msg()  # calls _on_message for each message
            except OSError as e:
                self._lost(e)
        for name in self.due:
            if ticks_diff(now, self.due[name]) >= 0:
                period = int(self.methods[name].period * 1000)
                due = ticks_add(self.due[name], period)
                if ticks_diff(now, due) >= 0:  # fell behind (slow sensor, long pause): no burst
                    due = ticks_add(now, period)
                self.due[name] = due
                try:
                    self.read(name)
                except Exception as e:
                    self._error(self.data_prefix + name, "%s() raised %s: %s" % (name, type(e).__name__, e))
        self._flush()

    def run(self):
        """poll() forever, sleeping until a reading is due or a message arrives. Ctrl-C stops cleanly."""
        try:
            while True:
                self.poll()
                now = ticks_ms()
                ms = 1000
                for name in self.due:
                    ms = min(ms, ticks_diff(self.due[name], now))
                if not self.connected:
                    ms = min(ms, ticks_diff(self.next_try, now))
                if ms > 0:
                    if self.connected:
                        self.client.wait(ms)
                    else:
                        time.sleep(ms / 1000)
        finally:
            self.stop()

    def stop(self, timeout=2):
        """Send what is buffered (waiting up to `timeout` s for acknowledgements), say offline, disconnect."""
        start = ticks_ms()
        while self.connected and (self.outbox or self.client.unacked):
            if ticks_diff(ticks_ms(), start) > timeout * 1000:
                self.log("stopping with %d readings unsent" % (len(self.outbox) + len(self.client.unacked)))
                break
            self._flush()
            try:
                self.client.check_msg()
                self.client.wait(10)
            except OSError as e:
                self._lost(e)
        if self.connected:
            try:
                state = {"device": self.device, "state": "offline", "boot": self.boot}
                self.client.publish(self.state_topic, json.dumps(state), True, 1)
                self.client.disconnect()
            except OSError:
                pass
        self.connected = False
        self.client.close()

    # -- connection -------------------------------------------------------------------------

    def _connect(self):
        lost = {"device": self.device, "state": "lost", "boot": self.boot}
        online = {"device": self.device, "state": "online", "boot": self.boot, "dropped": self.dropped}
        try:
            self.client.set_last_will(self.state_topic, json.dumps(lost), True, 1)
            self.client.connect()
            # Subscriptions die with the connection (clean session): make them again every time.
            for name in self.methods:
                if self.methods[name].kind == "actuator":
                    self.client.subscribe(self.data_prefix + name, 1)
            self.client.subscribe(self.call_topic, 1)
            self.client.publish(self.schema_topic, json.dumps(self.schema()), True, 1)
            self.client.publish(self.state_topic, json.dumps(online), True, 1)
        except OSError as e:
            self.client.close()
            self.log("cannot connect to %s (%s); next try in %.1f s" % (self.where, e, self.backoff))
            self._retry_later()
            return
        self.connected = True
        self.backoff = 0.5
        self.log("connected to %s (boot %s, %d readings to send)" % (self.where, self.boot, len(self.outbox)))

    def _retry_later(self):
        """Back off: 0.5 s, 1 s, 2 s, ... up to max_backoff, so a dead broker is not hammered."""
        self.next_try = ticks_add(ticks_ms(), int(self.backoff * 1000))
        self.backoff = min(self.backoff * 2, self.max_backoff)

    def _lost(self, error):
        if not self.connected:
            return
        self.connected = False
        # Readings the broker never acknowledged go back to the front of the outbox, in order.
        # (Retained schema/state are sent again on connect anyway.)
        unacked = [(m[1], m[2]) for m in self.client.unacked if not m[3]]
        self.client.unacked = []
        self.client.close()
        self.outbox = unacked + self.outbox
        self._trim()
        self.log("connection lost (%s); %d readings buffered" % (error, len(self.outbox)))
        self._retry_later()

    # -- readings ---------------------------------------------------------------------------

    def read(self, name, parents=()):
        """Read sensor `name` now and send (or buffer) the reading; returns the value."""
        value = getattr(self.obj, name)()
        self.publish(name, value, parents)
        return value

    def publish(self, name, value, parents=()):
        """Stamp `value` as the next reading of `<device>.<name>` and queue it for the broker."""
        self.outbox.append((self.data_prefix + name, self._reading(value, parents)))
        self._trim()
        self._flush()

    def _reading(self, value, parents):
        body = dict(value) if isinstance(value, dict) else {"root": value}
        seq = self.seq + 1
        meta = {
            "id": "%s.%d" % (self.boot, seq),
            "src": self.device,
            "boot": self.boot,
            "seq": seq,
            "t": float(time.time()),
            "parents": list(parents),
        }
        if self.dropped:
            meta["dropped"] = self.dropped
        body["_ether"] = meta
        payload = json.dumps(body)  # raises before the number is used if the value is not JSON
        self.seq = seq
        return payload

    def _trim(self):
        """Keep the outbox bounded: drop the oldest readings and count them."""
        while len(self.outbox) > self.buffer:
            self.outbox.pop(0)
            if not self.dropped:
                self.log("buffer full (%d readings): dropping the oldest" % self.buffer)
            self.dropped += 1

    def _flush(self):
        while self.connected and self.outbox and len(self.client.unacked) < MAX_INFLIGHT:
            topic, payload = self.outbox[0]
            try:
                self.client.publish(topic, payload, False, 1)
            except OSError as e:
                self._lost(e)
                return
            self.outbox.pop(0)

    # -- messages in ------------------------------------------------------------------------

    def call(self, name, args, parents=()):
        """Call method `name` with JSON fields `args` after checking them; a sensor's value is also sent."""
        method = self.methods.get(name)
        if method is None:
            raise ValueError("field 'method': no method '%s' on %s (has: %s)" % (name, self.device, ", ".join(self.methods)))
        kwargs = method.check(args)
        try:
            result = getattr(self.obj, name)(**kwargs)
        except Exception as e:
            raise RuntimeError("%s() raised %s: %s" % (name, type(e).__name__, e))
        if method.kind == "sensor":
            self.publish(name, result, parents)
        return result

    def _on_message(self, topic, msg):
        if not isinstance(topic, str):
            topic = bytes(topic).decode()
        reply_to = corr = None
        parents = ()
        try:
            try:
                body = json.loads(msg)
            except ValueError:
                raise ValueError("invalid JSON: %r" % (msg[:40],))
            meta = body.pop("_ether", None) if isinstance(body, dict) else None
            if isinstance(meta, dict):
                reply_to, corr = meta.get("reply_to"), meta.get("corr")
                if meta.get("id"):
                    parents = (meta["id"],)
            if topic == self.call_topic:
                if not isinstance(body, dict) or not isinstance(body.get("method"), str):
                    raise ValueError('field \'method\': a call is {"method": name, "args": {...}}')
                result = self.call(body["method"], body.get("args") or {}, parents)
            else:
                result = self.call(topic[len(self.data_prefix) :], body, parents)
        except Exception as e:
            if reply_to:
                self._send_now(reply_to, {"ok": False, "error": str(e)}, parents, corr)
            else:
                self._error(topic, str(e))
            return
        if reply_to:
            self._send_now(reply_to, {"ok": True, "result": result}, parents, corr)

    def _error(self, topic, reason):
        """An error event nobody asked for a reply to: the host shows and records it."""
        self.log("error on %s: %s" % (topic, reason))
        self._send_now(self.errors_topic, {"instance": self.device, "topic": topic, "reason": reason})

    def _send_now(self, topic, body, parents=(), corr=None):
        """Send a reply or an error event now, or never: unlike readings, they only mean something now.
        They are stamped outside the reading sequence (seq 0, id <boot>.c<n>)."""
        if not self.connected:
            return
        self.replies += 1
        meta = {
            "id": "%s.c%d" % (self.boot, self.replies),
            "src": self.device,
            "boot": self.boot,
            "seq": 0,
            "t": float(time.time()),
            "parents": list(parents),
        }
        if corr is not None:
            meta["corr"] = corr
        body["_ether"] = meta
        try:
            payload = json.dumps(body)
        except (TypeError, ValueError) as e:  # a method returned what JSON cannot carry
            payload = json.dumps({"ok": False, "error": "result is not JSON: %s" % e, "_ether": meta})
        try:
            self.client.publish(topic, payload, False, 0)
        except OSError as e:
            self._lost(e)
