"""The honest baseline: one raw paho-mqtt client per process, as fast as paho goes.

Each client gets its own process (as each Ether instance does), TCP_NODELAY and no in-flight cap
(paho's cap makes it scan every in-flight message on each PUBACK). The parent reads JSON lines on
stdout (``{"ready": true}`` once subscribed, then the result) and writes commands on stdin.

  source     waits for a line on stdin, then publishes n messages to raw/data (pace s apart; with
             --size, each message is that many bytes instead of a small JSON object)
  relay      republishes each raw/data message to raw/result; reports one-hop latencies
  sink       counts n messages on its topic; reports the arrival time of the last one
  responder  answers each raw/request on its reply topic (request/reply baseline)

Run: ``python bench/raw_paho.py ROLE --port P [-n N] [--pace S] [--topic T]``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def report(**fields) -> None:
    print(json.dumps(fields), flush=True)


def connect(host: str, port: int) -> mqtt.Client:
    """A connected paho client with the settings a careful user would pick for speed."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:8]}")
    c.max_inflight_messages_set(0)  # no cap: no scan of the in-flight messages on each PUBACK
    c.max_queued_messages_set(0)
    c.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(host, port)
    c.loop_start()
    if not connected.wait(10):
        sys.exit(f"raw paho: no connection to {host}:{port}")
    return c


def subscribe(c: mqtt.Client, topic: str) -> None:
    acked = threading.Event()
    c.on_subscribe = lambda *a: acked.set()
    c.subscribe(topic, qos=1)
    if not acked.wait(10):
        sys.exit(f"raw paho: the broker did not acknowledge the subscription to {topic}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["source", "relay", "sink", "responder"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("-n", type=int, default=0)
    parser.add_argument("--pace", type=float, default=0.0)
    parser.add_argument("--topic", default="raw/result", help="what a sink counts")
    parser.add_argument("--size", type=int, default=0, help="a source's message size in bytes")
    args = parser.parse_args()
    c = connect(args.host, args.port)
    finished = threading.Event()

    if args.role == "source":
        report(ready=True)
        sys.stdin.readline()
        ticker = threading.Event()
        blob = bytes(range(256)) * (args.size // 256) + bytes(args.size % 256)
        for i in range(args.n):
            c.publish("raw/data", blob if args.size else json.dumps({"i": i, "t": time.time()}), qos=1)
            if args.pace:
                ticker.wait(args.pace)
        report(sent=args.n)
        sys.stdin.readline()  # stay connected until the parent has its results
    elif args.role == "relay":
        latencies: list[float] = []

        def on_relay(client, userdata, msg):
            body = json.loads(msg.payload)
            latencies.append(time.time() - body["t"])
            client.publish("raw/result", json.dumps(body), qos=1)
            if len(latencies) == args.n:
                finished.set()

        c.on_message = on_relay
        subscribe(c, "raw/data")
        report(ready=True)
        finished.wait()
        report(latencies=latencies)
        sys.stdin.readline()
    elif args.role == "sink":
        count = [0]

        def on_sink(client, userdata, msg):
            count[0] += 1
            if count[0] == args.n:
                report(last=time.time())
                finished.set()

        c.on_message = on_sink
        subscribe(c, args.topic)
        report(ready=True)
        finished.wait()
        sys.stdin.readline()
    else:

        def respond(client, userdata, msg):
            body = json.loads(msg.payload)
            client.publish(body["reply_to"], json.dumps({"result": body["i"], "corr": body["corr"]}), qos=1)

        c.on_message = respond
        subscribe(c, "raw/request")
        report(ready=True)
        sys.stdin.readline()
    c.disconnect()
    c.loop_stop()


if __name__ == "__main__":
    main()
