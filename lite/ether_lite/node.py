"""The node: runs one user object on a board and connects its sensors and
actuators to the broker.

A reading's path: poll() finds a sensor due -> read() calls the method ->
_reading() stamps it (boot id, seq, time) as JSON -> the outbox ->
_flush() publishes it with QoS 1 -> it waits in the client's `unacked`
list until the broker's PUBACK. If the connection dies first, the
unacknowledged readings go back to the front of the outbox and are sent
again after the reconnect; nothing is published into a dead link.
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
    from time import time_ns
except ImportError:  # CircuitPython: time() is whole seconds
    def time_ns():
        return int(time.time()) * 1000000000

try:
    from os import urandom
except ImportError:
    from random import getrandbits

    def urandom(n):
        return bytes(getrandbits(8) for _ in range(n))


MAX_INFLIGHT = 8  # QoS 1 readings sent but not yet acknowledged


class Node:
    """One device: `Node("thermo1", Thermostat(), "192.168.1.10").run()`,
    or call poll() in your own loop.

    With `serial=` (usb_cdc.data, a machine.UART, a tty opened as a file)
    the board speaks MQTT over that port instead of the network, and
    `ether bridge` on the host carries it to the broker.
    """

    def __init__(self, device, obj, host="127.0.0.1", port=1883,
                 session="default", user=None, password=None, firmware=None,
                 buffer=32, keepalive=30, max_backoff=30, pool=None,
                 verbose=True, serial=None, max_message=2048):
        self.device = device
        self.obj = obj
        self.firmware = firmware
        self.max_message = max_message
        self.methods = methods_of(obj)
        if not self.methods:
            raise ValueError("%s has no @sensor or @actuator methods"
                             % type(obj).__name__)
        self.where = "%s:%d" % (host, port)
        root = "ether/%s/device/%s/" % (session, device)
        self.data_prefix = ("" if session == "default"
                            else session + "/") + device + "."
        self.schema_topic = root + "schema"
        self.state_topic = root + "state"
        self.call_topic = root + "call"
        self.errors_topic = "ether/%s/errors" % session
        self.boot = hexlify(urandom(6)).decode()
        self.seq = 0  # readings stamped this boot; gap-free
        self.replies = 0  # replies and error events (seq 0)
        self.outbox = []  # [(topic, payload)] not yet sent, oldest first
        self.resend = 0  # how many at its front were sent, not acked
        self.buffer = buffer
        self.dropped = 0  # readings dropped this boot: the outbox was full
        self.linked = False  # connecting or connected
        self.connected = False  # and announced
        self.verbose = verbose
        self.backoff = 0.5
        self.max_backoff = max_backoff
        # The clock: whole seconds and ms, kept as integers (a float32
        # board would round time.time() to 128 s)
        ns = time_ns()
        self.clock_s = ns // 1000000000
        self.clock_ms = ns // 1000000 % 1000
        now = self.clock_ticks = ticks_ms()
        self.next_try = now
        self.due = {}  # sensor name -> ticks when its next reading is due
        for name in self.methods:
            if self.methods[name].period:
                self.due[name] = now
        client_id = "ether_lite-" + device
        if serial is not None:
            from .serial import SerialClient

            self.client = SerialClient(serial, client_id, user, password,
                                       keepalive, max_packet=max_message)
            self.where = "the serial bridge"
        elif pool is not None or sys.implementation.name == "circuitpython":
            from .minimqtt import MiniMQTTClient

            self.client = MiniMQTTClient(client_id, host, port, user,
                                         password, keepalive, pool,
                                         max_message)
        else:
            from .mqtt import MQTTClient

            self.client = MQTTClient(client_id, host, port, user, password,
                                     keepalive, max_packet=max_message)
        self.client.set_callback(self._on_message)

    def log(self, message):
        if self.verbose:
            print("ether_lite %s: %s" % (self.device, message))

    def schema(self):
        """What the board announces (retained): methods, versions, boot."""
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

    # -- the loop -------------------------------------------------------

    def poll(self):
        """Do what is due now and return at once: connect, handle
        messages, take readings, send."""
        now = self._tick()
        if not self.linked and ticks_diff(now, self.next_try) >= 0:
            self._connect()
        if self.linked:
            try:
                self.client.check_msg()  # calls _on_message per message
                if self.client.connected and not self.connected:
                    self._online()
            except OSError as e:
                self._lost(e)
        for name in self.due:
            if ticks_diff(now, self.due[name]) >= 0:
                period = int(self.methods[name].period * 1000)
                due = ticks_add(self.due[name], period)
                if ticks_diff(now, due) >= 0:  # fell behind: no burst
                    due = ticks_add(now, period)
                self.due[name] = due
                try:
                    self.read(name)
                except Exception as e:
                    self._error(self.data_prefix + name, "%s() raised %s: %s"
                                % (name, type(e).__name__, e))
        self._flush()

    def run(self):
        """poll() forever, sleeping until a reading is due or a message
        arrives. Ctrl-C stops cleanly."""
        try:
            while True:
                self.poll()
                now = ticks_ms()
                ms = 1000
                for name in self.due:
                    ms = min(ms, ticks_diff(self.due[name], now))
                if not self.linked:
                    ms = min(ms, ticks_diff(self.next_try, now))
                if ms > 0:
                    if self.linked:
                        self.client.wait(ms)
                    else:
                        time.sleep(ms / 1000)
        finally:
            self.stop()

    def stop(self, timeout=2):
        """Send what is buffered (waiting up to `timeout` s for
        acknowledgements), say offline, disconnect."""
        start = ticks_ms()
        client = self.client
        state = '{"device": "%s", "state": "offline", "boot": "%s"}'
        offline = None
        while self.connected:
            if not (self.outbox or client.unacked):
                if offline is None:
                    offline = state % (self.device, self.boot)
                    self._try(self.state_topic, offline, True, 1)
                elif not client.tx:
                    break
            if ticks_diff(ticks_ms(), start) > timeout * 1000:
                self.log("stopping with %d readings unsent"
                         % (len(self.outbox) + len(client.unacked)))
                break
            self._flush()
            try:
                client.check_msg()
                client.wait(10)
            except OSError as e:
                self._lost(e)
        if self.connected:
            client.disconnect()
        self.linked = self.connected = False
        client.close()

    # -- connection -----------------------------------------------------

    def _connect(self):
        lost = '{"device": "%s", "state": "lost", "boot": "%s"}'
        try:
            self.client.set_last_will(
                self.state_topic, lost % (self.device, self.boot), True, 1)
            self.client.connect()
        except OSError as e:
            self.client.close()
            self._retry_later("cannot connect to %s (%s)" % (self.where, e))
            return
        self.linked = True

    def _online(self):
        """Connected: subscribe (a clean session forgets them), announce."""
        for name in self.methods:
            if self.methods[name].kind == "actuator":
                self.client.subscribe(self.data_prefix + name, 1)
        self.client.subscribe(self.call_topic, 1)
        self.client.publish(self.schema_topic, json.dumps(self.schema()),
                            True, 1)
        online = ('{"device": "%s", "state": "online", "boot": "%s",'
                  ' "dropped": %d}' % (self.device, self.boot, self.dropped))
        self.client.publish(self.state_topic, online, True, 1)
        self.connected = True
        self.backoff = 0.5
        self.log("connected to %s (boot %s, %d readings to send)"
                 % (self.where, self.boot, len(self.outbox)))

    def _retry_later(self, why):
        """Back off: 0.5 s, 1 s, 2 s, ... up to max_backoff."""
        self.log("%s; next try in %.1f s" % (why, self.backoff))
        self.next_try = ticks_add(ticks_ms(), int(self.backoff * 1000))
        self.backoff = min(self.backoff * 2, self.max_backoff)

    def _lost(self, error):
        if not self.linked:
            return
        was = self.connected
        self.linked = self.connected = False
        # Unacknowledged readings go back to the front of the outbox, in
        # order; they may have reached the broker, so _trim keeps them.
        unacked = []
        for m in self.client.unacked:
            if not m[3]:  # retained schema/state are sent again anyway
                unacked.append((m[1], m[2]))
        self.client.unacked = []
        self.client.close()
        self.outbox = unacked + self.outbox
        self.resend = len(unacked)
        self._trim()
        if was:
            self.log("connection lost (%s); %d readings buffered"
                     % (error, len(self.outbox)))
            self._retry_later("connection lost")
        else:
            self._retry_later("cannot connect to %s (%s)"
                              % (self.where, error))

    # -- readings -------------------------------------------------------

    def read(self, name, parents=()):
        """Read sensor `name` now and send (or buffer) the reading;
        returns the value."""
        value = getattr(self.obj, name)()
        self.publish(name, value, parents)
        return value

    def publish(self, name, value, parents=()):
        """Stamp `value` as the next reading of `<device>.<name>` and
        queue it for the broker."""
        payload = self._reading(value, parents)
        self.outbox.append((self.data_prefix + name, payload))
        self._trim()
        self._flush()

    def _tick(self):
        """Move the clock on to now (ticks wrap: call it at least daily)."""
        now = ticks_ms()
        ms = self.clock_ms + ticks_diff(now, self.clock_ticks)
        self.clock_ticks = now
        self.clock_s += ms // 1000
        self.clock_ms = ms % 1000
        return now

    def _meta(self, ref, seq, parents, more=""):
        """Ether's metadata as JSON; `t` is written from integers."""
        self._tick()
        return ('"_ether": {"id": "%s.%s", "src": %s, "boot": "%s",'
                ' "seq": %d, "t": %d.%03d, "parents": %s%s}'
                % (self.boot, ref, json.dumps(self.device), self.boot, seq,
                   self.clock_s, self.clock_ms, json.dumps(list(parents)),
                   more))

    def _reading(self, value, parents):
        binary = isinstance(value, dict) and _has_buffers(value)
        if binary:
            from . import frames  # loaded by the first reading with bytes or arrays

            body = None
        elif isinstance(value, dict):
            body = json.dumps(value)
        else:
            body = '{"root": %s}' % json.dumps(value)
        seq = self.seq + 1  # json.dumps raised first if value is not JSON
        more = ', "dropped": %d' % self.dropped if self.dropped else ""
        meta = self._meta(seq, seq, parents, more)
        payload = frames.frame(value, meta, _join) if binary else _join(body, meta)
        self.seq = seq
        return payload

    def _trim(self):
        """Keep the outbox bounded: drop the oldest readings never sent
        (and count them)."""
        while len(self.outbox) > self.buffer + self.resend:
            self.outbox.pop(self.resend)
            if not self.dropped:
                self.log("buffer full (%d readings): dropping the oldest"
                         % self.buffer)
            self.dropped += 1

    def _flush(self):
        client = self.client
        while (self.connected and self.outbox and not client.tx
               and len(client.unacked) < MAX_INFLIGHT):
            topic, payload = self.outbox[0]
            if not self._try(topic, payload, False, 1):
                return
            self.outbox.pop(0)
            if self.resend:
                self.resend -= 1

    def _try(self, topic, payload, retain, qos):
        """Publish; False (and the connection is lost) if it failed."""
        try:
            self.client.publish(topic, payload, retain, qos)
            return True
        except OSError as e:
            self._lost(e)
            return False

    # -- messages in ----------------------------------------------------

    def call(self, name, args, parents=()):
        """Call method `name` with JSON fields `args` after checking them;
        a sensor's value is also sent."""
        method = self.methods.get(name)
        if method is None:
            raise ValueError("field 'method': no method '%s' on %s (has: %s)"
                             % (name, self.device, ", ".join(self.methods)))
        kwargs = method.check(args)
        try:
            result = getattr(self.obj, name)(**kwargs)
        except Exception as e:
            raise RuntimeError("%s() raised %s: %s"
                               % (name, type(e).__name__, e))
        if method.kind == "sensor":
            self.publish(name, result, parents)
        return result

    def _on_message(self, topic, msg):
        if not isinstance(topic, str):
            topic = bytes(topic).decode()
        reply_to = corr = None
        parents = ()
        try:
            if msg is None:
                raise ValueError("message over %d bytes (max_message): "
                                 "dropped" % self.max_message)
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
                if not isinstance(body, dict) or not isinstance(
                        body.get("method"), str):
                    raise ValueError("field 'method': a call is "
                                     '{"method": name, "args": {...}}')
                result = self.call(body["method"], body.get("args") or {},
                                   parents)
            else:
                result = self.call(topic[len(self.data_prefix):], body,
                                   parents)
        except Exception as e:
            if reply_to:
                self._send_now(reply_to, '{"ok": false, "error": %s}'
                               % json.dumps(str(e)), parents, corr)
            else:
                self._error(topic, str(e))
            return
        if reply_to:
            try:
                body = '{"ok": true, "result": %s}' % json.dumps(result)
            except (TypeError, ValueError) as e:  # not what JSON carries
                body = ('{"ok": false, "error": %s}'
                        % json.dumps("result is not JSON: %s" % e))
            self._send_now(reply_to, body, parents, corr)

    def _error(self, topic, reason):
        """An error event nobody asked for a reply to: the host shows and
        records it."""
        self.log("error on %s: %s" % (topic, reason))
        self._send_now(self.errors_topic,
                       '{"instance": %s, "topic": %s, "reason": %s}'
                       % (json.dumps(self.device), json.dumps(topic),
                          json.dumps(reason)))

    def _send_now(self, topic, body, parents=(), corr=None):
        """Send a reply or an error event now, or never: unlike readings,
        they only mean something now. They are stamped outside the
        reading sequence (seq 0, id <boot>.c<n>)."""
        if not self.connected:
            return
        self.replies += 1
        more = "" if corr is None else ', "corr": %s' % json.dumps(corr)
        meta = self._meta("c%d" % self.replies, 0, parents, more)
        self._try(topic, _join(body, meta), False, 0)


def _has_buffers(value):
    """Whether a reading has a value that is not JSON: bytes or an array, sent
    in Ether's binary encoding (frames)."""
    for v in value.values():
        if not isinstance(v, (int, float, str, list, dict)) and v is not None:
            return True
    return False


def _join(body, meta):
    """A JSON object's text with the `"_ether": ...` member added."""
    if body == "{}":
        return "{" + meta + "}"
    return body[:-1] + ", " + meta + "}"
