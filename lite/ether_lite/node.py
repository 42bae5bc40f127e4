"""The node: runs one user object on a board and connects its sensors and
actuators to the broker.

A reading's path: poll() finds a sensor due -> read() calls the method ->
publish() stamps it (boot id, seq, time) as JSON -> the outbox ->
_flush() publishes it with QoS 1 -> it waits in the client's `unacked`
list until the broker's PUBACK. If the connection dies first, the
unacknowledged readings go back to the front of the outbox and are sent
again after the reconnect; nothing is published into a dead link.

What a node runs rarely (when it is made, when its link comes up or
goes, when it stops) is in ether_lite.rare, loaded for it and then
forgotten: a board holds that code only while it runs.
"""

import json
import time

from . import _rare
from .methods import check

try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython, CircuitPython
    from .compat import ticks_add, ticks_diff, ticks_ms

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
        _rare("init", self, device, obj, host, port, session, user,
              password, firmware, buffer, keepalive, max_backoff, pool,
              verbose, serial, max_message)

    def log(self, message):
        if self.verbose:
            print("ether_lite %s: %s" % (self.device, message))

    def schema(self):
        """What the board announces (retained): methods, versions, boot."""
        return _rare("schema", self)

    def stop(self, timeout=2):
        """Send what is buffered (waiting up to `timeout` s for
        acknowledgements), say offline, disconnect."""
        _rare("stop", self, timeout)

    # -- the loop -------------------------------------------------------

    def poll(self):
        """Do what is due now and return at once: connect, handle
        messages, take readings, send."""
        now = self._tick()
        client = self.client
        if not self.linked and ticks_diff(now, self.next_try) >= 0:
            self.linked = True
            try:
                client.lw = (self.topic + "state", self._state("lost"),
                             True, 1)
                client.connect()
            except OSError as e:
                _rare("lost", self, e)
        if self.linked:
            try:
                client.check_msg()  # calls _on_message per message
                if client.connected and not self.connected:
                    _rare("online", self)
            except OSError as e:
                _rare("lost", self, e)
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
                    self._error(self.prefix + name, "%s() raised %s: %s"
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

    # -- connection -----------------------------------------------------

    def _state(self, state):
        return ('{"device": %s, "state": "%s", "boot": "%s"}'
                % (json.dumps(self.device), state, self.boot))

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
        binary = isinstance(value, dict) and _has_buffers(value)
        if binary:
            from . import frames  # loaded by the first reading with bytes or arrays

            body, parts = frames.split(value)
        elif isinstance(value, dict):
            body = json.dumps(value)
        else:
            body = '{"root": %s}' % json.dumps(value)
        # json.dumps raised first if value is not JSON. Make room: send
        # what the link takes, then drop the oldest never sent, so the
        # count this reading carries includes what its arrival dropped.
        self._flush()
        self._trim(1)
        seq = self.seq = self.seq + 1
        more = ', "dropped": %d' % self.dropped if self.dropped else ""
        payload = self._stamp(body, seq, seq, parents, more)
        if binary:
            payload = frames.frame(payload, parts)
        self.outbox.append((self.prefix + name, payload))
        self._flush()

    def _tick(self):
        """Move the clock on to now (ticks wrap: call it at least daily)."""
        clock = self.clock
        now = ticks_ms()
        ms = clock[1] + ticks_diff(now, clock[2])
        clock[0] += ms // 1000
        clock[1] = ms % 1000
        clock[2] = now
        return now

    def _stamp(self, body, ref, seq, parents, more=""):
        """The JSON object `body` with Ether's metadata added; `t` is
        written from integers."""
        self._tick()
        meta = ('"_ether": {"id": "%s.%s", "src": %s, "boot": "%s",'
                ' "seq": %d, "t": %d.%03d, "parents": %s%s}}'
                % (self.boot, ref, json.dumps(self.device), self.boot, seq,
                   self.clock[0], self.clock[1], json.dumps(list(parents)),
                   more))
        return ("{" if body == "{}" else body[:-1] + ", ") + meta

    def _trim(self, room=0):
        """Keep the outbox bounded (with `room` for readings to come):
        drop the oldest readings never sent, and count them."""
        outbox = self.outbox
        while (len(outbox) > self.resend
               and len(outbox) + room > self.buffer + self.resend):
            outbox.pop(self.resend)
            if not self.dropped:
                self.log("buffer full (%d readings): dropping the oldest"
                         % self.buffer)
            self.dropped += 1

    def _flush(self):
        client = self.client
        while (self.connected and self.outbox and not client.tx
               and len(client.unacked) < MAX_INFLIGHT):
            # from here on the client holds it (unacked) until its PUBACK
            topic, payload = self.outbox.pop(0)
            if self.resend:
                self.resend -= 1
            if not self._try(topic, payload, False, 1):
                return

    def _try(self, topic, payload, retain, qos):
        """Publish; False (and the connection is lost) if it failed."""
        try:
            self.client.publish(topic, payload, retain, qos)
            return True
        except OSError as e:
            _rare("lost", self, e)
            return False

    # -- messages in ----------------------------------------------------

    def call(self, name, args, parents=()):
        """Call method `name` with JSON fields `args` after checking them;
        a sensor's value is also sent. LookupError: no such method;
        ValueError: bad arguments; RuntimeError: the method raised."""
        method = self.methods.get(name)
        if method is None:
            raise LookupError("no method '%s' on %s (has: %s)"
                              % (name, self.device, ", ".join(self.methods)))
        kwargs = check(method, args)
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
                                 "dropped" % self.client.max_packet)
            try:
                body = json.loads(msg)
            except ValueError:
                raise ValueError("invalid JSON: %r" % (msg[:40],))
            meta = body.pop("_ether", None) if isinstance(body, dict) else None
            if isinstance(meta, dict):
                reply_to, corr = meta.get("reply_to"), meta.get("corr")
                if not isinstance(reply_to, str):  # a topic, or nothing
                    reply_to = None
                if meta.get("id"):
                    parents = (meta["id"],)
            if topic.startswith(self.prefix):  # <device>.<method>
                result = self.call(topic[len(self.prefix):], body, parents)
            elif isinstance(body, dict) and isinstance(
                    body.get("method"), str):  # the call topic
                result = self.call(body["method"], body.get("args") or {},
                                   parents)
            else:
                raise ValueError("field 'method': a call is "
                                 '{"method": name, "args": {...}}')
            if not reply_to:
                return
            body = '{"ok": true, "result": %s}' % json.dumps(result)
        except Exception as e:
            if not reply_to:
                self._error(topic, str(e))
                return
            # the contract's one error shape; the kind from the class of
            # the exception (see call); a result that is not JSON too
            if isinstance(e, ValueError):
                kind = "validation"
            elif isinstance(e, LookupError):
                kind = "unknown_service"
            else:
                kind = "exception"
            body = ('{"ok": false, "error": {"kind": "%s", "message": %s}}'
                    % (kind, json.dumps(str(e))))
        self._send_now(reply_to, body, parents, corr)

    def _error(self, topic, reason):
        """An error event nobody asked for a reply to: the host shows and
        records it."""
        self.log("error on %s: %s" % (topic, reason))
        self._send_now("ether/%s/errors" % self.session,
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
        self._try(topic, self._stamp(body, "c%d" % self.replies, 0, parents,
                                     more), False, 0)



def _has_buffers(value):
    """Whether a reading has a value that is not JSON: bytes or an array, sent
    in Ether's binary encoding (frames)."""
    for v in value.values():
        if not isinstance(v, (int, float, str, list, dict)) and v is not None:
            return True
    return False
