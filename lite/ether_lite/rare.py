"""What a node runs rarely: when it is made, when its link comes up or
goes, when it stops; and how ether_lite's own MQTT client connects.
ether_lite._rare loads this module for each use and forgets it after, so
a board holds this code only while it runs.
"""

import json
import struct
import sys
from binascii import hexlify

from . import __version__
from .methods import methods_of
from .node import ticks_add, ticks_diff, ticks_ms

try:
    from time import time_ns
except ImportError:
    from .compat import time_ns
try:
    from os import urandom
except ImportError:
    from .compat import urandom


def init(node, device, obj, host, port, session, user, password, firmware,
         buffer, keepalive, max_backoff, pool, verbose, serial,
         max_message):
    """Node.__init__."""
    node.device = device
    node.obj = obj
    node.firmware = firmware
    node.methods = methods_of(obj)
    if not node.methods:
        raise ValueError("%s has no @sensor or @actuator methods"
                         % type(obj).__name__)
    node.session = session
    # ether/<session>/device/<device>/: + schema, state, call
    node.topic = "ether/%s/device/%s/" % (session, device)
    node.prefix = ("" if session == "default"
                   else session + "/") + device + "."
    node.boot = hexlify(urandom(6)).decode()
    node.seq = 0  # readings stamped this boot; gap-free
    node.replies = 0  # replies and error events (seq 0)
    node.outbox = []  # [(topic, payload)] not yet sent, oldest first
    node.resend = 0  # how many at its front were sent, not acked
    node.buffer = buffer
    node.dropped = 0  # readings dropped this boot: the outbox was full
    node.linked = False  # connecting or connected
    node.connected = False  # and announced
    node.verbose = verbose
    node.backoff = 500  # ms
    node.max_backoff = max_backoff * 1000
    # The clock: whole seconds, ms and the ticks they were read at, kept
    # as integers (a float32 board rounds time.time() to 128 s)
    ns = time_ns()
    now = ticks_ms()
    node.clock = [ns // 1000000000, ns // 1000000 % 1000, now]
    node.next_try = now
    node.due = {}  # sensor name -> ticks when its next reading is due
    for name in node.methods:
        if node.methods[name].period:
            node.due[name] = now
    name = "ether_lite-" + device
    if serial is not None:
        from .serial import SerialClient

        node.client = SerialClient(serial, name, user, password, keepalive,
                                   max_packet=max_message)
    elif pool is not None or sys.implementation.name == "circuitpython":
        from .minimqtt import MiniMQTTClient

        node.client = MiniMQTTClient(name, host, port, user, password,
                                     keepalive, pool, max_message)
    else:
        from .mqtt import MQTTClient

        node.client = MQTTClient(name, host, port, user, password,
                                 keepalive, max_packet=max_message)
    node.client.cb = node._on_message


def where(client):
    """The broker's address, or the serial bridge, for a log line."""
    if client.port:
        return "%s:%d" % (client.server, client.port)
    return client.server


def lost(node, error):
    """The link failed (connecting or connected): keep what was not
    acknowledged, back off (0.5 s, 1 s, 2 s, ... up to max_backoff)."""
    if not node.linked:
        return
    was = node.connected
    node.linked = node.connected = False
    # Unacknowledged readings go back to the front of the outbox, in
    # order; they may have reached the broker, so _trim keeps them.
    client = node.client
    unacked = []
    for m in client.unacked:
        if not m[3]:  # retained schema/state are sent again anyway
            unacked.append((m[1], m[2]))
    client.unacked = []
    client.close()
    node.outbox = unacked + node.outbox
    node.resend = len(unacked)
    node._trim()
    if was:
        why = "connection lost (%s); %d readings buffered" % (
            error, len(node.outbox))
    else:
        why = "cannot connect to %s (%s)" % (where(node.client), error)
    node.log("%s; next try in %d ms" % (why, node.backoff))
    node.next_try = ticks_add(ticks_ms(), node.backoff)
    node.backoff = min(node.backoff * 2, node.max_backoff)


def schema(node):
    impl = sys.implementation
    v = impl.version
    methods = {}
    for name in node.methods:
        m = node.methods[name]
        d = {"kind": m.kind, "args": m.args, "unit": m.unit,
             "period": m.period}
        if m.optional:  # arguments with a default
            d["optional"] = list(m.optional)
        methods[name] = d
    return {
        "device": node.device,
        "kind": "ether_lite",
        "lib_version": __version__,
        "platform": sys.platform,
        "implementation": "%s %d.%d.%d" % (impl.name, v[0], v[1], v[2]),
        "firmware": node.firmware,
        "boot": node.boot,
        "methods": methods,
    }


def online(node):
    """Connected: subscribe (a clean session forgets them), announce."""
    client = node.client
    for name in node.methods:
        if node.methods[name].kind == "actuator":
            client.subscribe(node.prefix + name, 1)
    client.subscribe(node.topic + "call", 1)
    client.publish(node.topic + "schema", json.dumps(schema(node)), True, 1)
    client.publish(node.topic + "state", node._state("online")[:-1]
                   + ', "dropped": %d}' % node.dropped, True, 1)
    node.connected = True
    node.backoff = 500
    node.log("connected to %s (boot %s, %d readings to send)"
             % (where(node.client), node.boot, len(node.outbox)))


def stop(node, timeout):
    start = ticks_ms()
    client = node.client
    offline = None
    while node.connected:
        if not (node.outbox or client.unacked):
            if offline is None:
                offline = node._state("offline")
                node._try(node.topic + "state", offline, True, 1)
            elif not client.tx:
                break
        if ticks_diff(ticks_ms(), start) > timeout * 1000:
            node.log("stopping with %d readings unsent"
                     % (len(node.outbox) + len(client.unacked)))
            break
        node._flush()
        try:
            client.check_msg()
            client.wait(10)
        except OSError as e:
            lost(node, e)
    if node.connected:
        client.disconnect()
    node.linked = node.connected = False
    client.close()


def client(c, client_id, server, port, user, password, keepalive, timeout,
           max_packet):
    """MQTTClient.__init__."""
    c.client_id = client_id
    c.server = server
    c.port = port
    c.user = user
    c.password = password
    c.keepalive = keepalive  # seconds; 0 turns keep-alive off
    c.timeout = timeout  # seconds to connect
    c.max_packet = max_packet
    c.sock = None
    c.poller = None
    c.up = False  # the link is open (TCP connected)
    c.connected = False  # and the broker sent CONNACK
    c.cb = None  # cb(topic, msg) per PUBLISH; msg None: too big
    c.pid = 0
    c.unacked = []  # [(pid, topic, msg, retain)] awaiting PUBACK
    c.tx = b""  # bytes the socket did not take yet
    c.rx = b""  # bytes received, not yet a whole packet
    c.skip = 0  # bytes of a too-big packet still to drop
    c.lw = None  # the Last Will: (topic, msg, retain, qos)
    c.started = c.last_rx = c.last_ping = 0


def connect(c):
    """MQTTClient.connect: open the link, queue CONNECT (clean session)."""
    c.close()
    c.tx = c.rx = b""
    c.skip = 0
    c.unacked = []
    if c._open:
        c._open()
    else:
        open_socket(c)
    flags = 0x02
    body = c._str(c.client_id)
    if c.lw:
        topic, msg, retain, qos = c.lw
        flags |= 0x04 | qos << 3 | retain << 5
        body += c._str(topic) + c._str(msg)
    if c.user is not None:
        flags |= 0x80
        body += c._str(c.user)
        if c.password is not None:
            flags |= 0x40
            body += c._str(c.password)
    head = b"\x00\x04MQTT\x04" + bytes([flags])
    c._packet(0x10, head + struct.pack("!H", c.keepalive) + body)
    c.started = ticks_ms()


def open_socket(c):
    """Start the TCP connection; check_msg() sees it come up."""
    import socket  # CircuitPython has none; a serial board needs none

    from .mqtt import POLLIN, POLLOUT, select

    addr = socket.getaddrinfo(c.server, c.port, 0,
                              socket.SOCK_STREAM)[0][-1]
    sock = socket.socket()
    c.sock = sock
    try:  # Nagle would hold each small packet back ~10 ms
        sock.setsockopt(getattr(socket, "IPPROTO_TCP", 6),
                        getattr(socket, "TCP_NODELAY", 1), 1)
    except (OSError, AttributeError):
        pass
    if not select:  # cannot watch it come up: wait for it here
        sock.settimeout(c.timeout)
        c._try(sock.connect, addr)
        sock.settimeout(0)
        c.up = True
        return
    sock.setblocking(False)
    c._try(sock.connect, addr)
    c.poller = select.poll()
    c.poller.register(sock, POLLIN | POLLOUT)
