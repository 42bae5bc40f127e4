"""One MQTT connection (paho-mqtt): publish, subscribe with callbacks, reconnect and resubscribe.

Callbacks run on paho's network thread and must not block; the instance runtime hands messages to
its own worker thread. A message larger than the session's ``max_payload`` is neither sent nor
delivered: publishing one raises PayloadTooLarge, receiving one calls ``on_oversized`` instead.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ether.contract.topics import check_publish_topic, check_subscribe_filter, matches
from ether.transport.broker import BrokerAddress, BrokerError
from ether.transport.waiting import wait_until

log = logging.getLogger("ether.bus")

MessageCallback = Callable[[str, bytes], None]
ROUTES_LIMIT = 4096  # topics whose matching filters are remembered


class PayloadTooLarge(ValueError):
    """A message larger than the session's ``max_payload`` (docs/topics.md#limits)."""


@dataclass(frozen=True)
class Will:
    """The Last Will the broker publishes if this connection dies without saying goodbye."""

    topic: str
    payload: bytes
    retain: bool = True


class Bus:
    """A paho client that knows its subscriptions, so it can restore them after a reconnect."""

    def __init__(self, address: BrokerAddress, client_id: str, will: Will | None = None) -> None:
        self.address = address
        self.client_id = client_id
        self.max_payload = address.max_payload
        self.on_oversized: Callable[[str, int], None] = self._log_oversized  # (topic, size): replace it
        self._callbacks: dict[str, list[MessageCallback]] = {}
        self._qos: dict[str, int] = {}  # filter -> the QoS it was subscribed with
        self._retained: dict[str, bytes] = {}  # what we last left retained per topic, for a new broker
        self._acked_subscriptions: set[int] = set()
        self._batch = threading.local()  # .pending: (mid, filter) of the subscriptions acknowledged together
        self._routes: dict[str, tuple[str, ...]] = {}  # topic -> the filters it matches (a cache)
        self._state = threading.Condition()
        self._connected = False
        self._connect_error: str | None = None

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
            transport="websockets" if address.websockets else "tcp",
        )
        if address.websockets:
            client.ws_set_options(path=address.path)
        if address.tls:
            _set_tls(client, address)
        if address.username:
            client.username_pw_set(address.username, address.password)
        if will:
            client.will_set(will.topic, will.payload, qos=1, retain=will.retain)
        # no in-flight cap: with one, paho 2.2 scans every in-flight message on each PUBACK
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=0.05, max_delay=2)  # type: ignore[arg-type]  # paho takes seconds as floats
        client.on_socket_open = _no_delay
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client

    # -- connection --------------------------------------------------------------------------

    def connect(self, timeout: float = 10.0) -> None:
        """Connect and return once the broker accepted us (raises BrokerError otherwise)."""
        try:
            self._client.connect(self.address.host, self.address.port, keepalive=10)
        except ssl.SSLError as exc:  # before OSError, which it is
            raise BrokerError(
                f"the TLS handshake with the MQTT broker at {self.address.url} failed: {exc}"
                " (is its certificate signed by ca= and made out to this host name?)"
            ) from None
        except OSError as exc:
            raise BrokerError(f"cannot reach the MQTT broker at {self.address.url}: {exc}") from None
        self._client.loop_start()
        if not wait_until(self._state, lambda: self._connected or self._connect_error is not None, timeout):
            self.close()
            raise BrokerError(f"no answer from the MQTT broker at {self.address.url} within {timeout:g} s")
        if self._connect_error:
            self.close()
            raise BrokerError(f"the MQTT broker at {self.address.url} refused us: {self._connect_error}")

    def close(self) -> None:
        """Disconnect cleanly (the Last Will is not sent) and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure and self._callbacks:  # a reconnect: restore what we listened to
            self._send_subscribe(list(self._callbacks))
        if not reason_code.is_failure:  # a restarted broker lost every retained message: ours again
            with self._state:
                retained = list(self._retained.items())
            for topic, payload in retained:
                self._client.publish(topic, payload, qos=1, retain=True)
        with self._state:
            if reason_code.is_failure:
                self._connect_error = str(reason_code)
            else:
                self._connected = True
            self._state.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._state:
            self._connected = False
            self._state.notify_all()
        if reason_code.is_failure:
            log.warning("%s lost its broker connection (%s); reconnecting", self.client_id, reason_code)

    # -- subscribe -----------------------------------------------------------------------------

    def subscribe(
        self, topic_filter: str, callback: MessageCallback, timeout: float | None = 10.0, qos: int = 1
    ) -> None:
        """Call ``callback(topic, payload)`` for each message matching the filter.

        With a timeout, returns once the broker acknowledged the subscription. ``qos`` 0 (for a
        viewer that may miss messages, such as the monitor) spares the acknowledgement of each one.
        """
        check_subscribe_filter(topic_filter)
        with self._state:  # paho is never called under this lock: its callbacks take it
            known = topic_filter in self._callbacks
            self._callbacks.setdefault(topic_filter, []).append(callback)
            self._qos.setdefault(topic_filter, qos)
            self._routes.clear()
        if known:
            return
        mid = self._send_subscribe([topic_filter])
        pending = getattr(self._batch, "pending", None)
        if pending is not None and mid is not None:
            pending.append((mid, topic_filter))
        elif timeout is not None and mid is not None:
            if not wait_until(self._state, lambda: mid in self._acked_subscriptions, timeout):
                raise BrokerError(f"the broker did not acknowledge the subscription to {topic_filter!r}")

    @contextmanager
    def subscribing(self, timeout: float = 10.0) -> Iterator[None]:
        """Subscriptions this thread makes inside are sent at once and acknowledged together on
        leaving: one round trip to the broker instead of one each (an instance's start makes about
        eight). Raises BrokerError naming the filters the broker did not acknowledge."""
        outer = getattr(self._batch, "pending", None)
        pending: list[tuple[int, str]] = []
        self._batch.pending = pending if outer is None else outer
        try:
            yield
        finally:
            self._batch.pending = outer
        if outer is not None:  # the outer block waits
            return
        acked = lambda: all(mid in self._acked_subscriptions for mid, _ in pending)  # noqa: E731
        if not wait_until(self._state, acked, timeout):
            missing = [f for mid, f in pending if mid not in self._acked_subscriptions]
            raise BrokerError(f"the broker did not acknowledge the subscriptions to {missing}")

    def _send_subscribe(self, filters: list[str]) -> int | None:
        result, mid = self._client.subscribe([(f, self._qos.get(f, 1)) for f in filters])
        if result != mqtt.MQTT_ERR_SUCCESS:
            return None  # not connected yet: _on_connect subscribes
        return mid

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:  # said before the subscriber is woken: it returns knowing
            log.error("%s: the broker refused a subscription: %s", self.client_id, failed)
        with self._state:
            self._acked_subscriptions.add(mid)
            self._state.notify_all()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        """Every message, on paho's network thread: to the callbacks of each filter it matches (a
        dict lookup per topic once seen, where paho's own routing walks a tree per message)."""
        topic = message.topic
        filters = self._routes.get(topic)
        if filters is None:
            filters = self._route(topic)
        if not filters:
            return
        payload = cast(bytes, message.payload)
        if len(payload) > self.max_payload:
            self.on_oversized(topic, len(payload))
            return
        for topic_filter in filters:
            for callback in self._callbacks.get(topic_filter, ()):
                try:
                    callback(topic, payload)
                except Exception:  # a callback bug must not kill the network thread
                    log.exception("%s: error handling a message on %s", self.client_id, topic)

    def _route(self, topic: str) -> tuple[str, ...]:
        """The filters ``topic`` matches, in subscription order (a shared subscription's: those its
        filter matches), remembered for the next message on it."""
        with self._state:
            filters = tuple(f for f in self._callbacks if matches(f, topic))
            if len(self._routes) >= ROUTES_LIMIT:  # topics are the senders' choice: bounded
                self._routes.clear()
            self._routes[topic] = filters
        return filters

    def _log_oversized(self, topic: str, size: int) -> None:
        log.warning("%s: %s", self.client_id, self.oversized(topic, size))

    def oversized(self, topic: str, size: int) -> str:
        """Why a message of ``size`` bytes is refused, for a log line or an error event."""
        return f"a message of {size} bytes on {topic!r} exceeds max_payload ({self.max_payload} bytes)"

    def check_size(self, topic: str, payload: bytes) -> None:
        """Raise PayloadTooLarge if ``payload`` may not be sent (the broker and the receivers refuse it)."""
        if len(payload) > self.max_payload:
            raise PayloadTooLarge(
                self.oversized(topic, len(payload)) + "; raise it with limits: {max_payload: ...}"
            )

    # -- publish ------------------------------------------------------------------------------

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, again: bool = True
    ) -> mqtt.MQTTMessageInfo:
        """Queue a message; paho sends it (and keeps QoS 1 messages across a reconnect). The result's
        ``is_published()`` tells when the broker has it. A retained message is published again after
        each reconnect (a restarted broker has lost it) unless ``again`` is False (a status we leave
        on another client's topic, which that client may since have replaced)."""
        check_publish_topic(topic)
        self.check_size(topic, payload)
        if retain:
            self._remember(topic, payload if again else b"")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise BrokerError(f"publishing to {topic!r} failed: {mqtt.error_string(info.rc)}")
        return info

    @staticmethod
    def acknowledged(info: mqtt.MQTTMessageInfo) -> bool:
        """Whether the broker has acknowledged the message of ``info``. Unlike paho's
        ``is_published`` (which raises), also for a message queued while disconnected, which paho
        sends after the reconnect. (Reads paho 2's own flag and condition.)"""
        with info._condition:
            return info._published

    def wait_published(self, info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
        """Wait until the broker has acknowledged the message of ``info``; False after ``timeout``."""
        with info._condition:  # paho's own: notified when the message is acknowledged
            return info._condition.wait_for(lambda: info._published, timeout)

    def publish_and_wait(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 5.0
    ) -> bool:
        """Publish at QoS 1 and wait for the broker's acknowledgement."""
        check_publish_topic(topic)
        self.check_size(topic, payload)
        if retain:
            self._remember(topic, payload)
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(timeout)
        except (ValueError, RuntimeError):
            return False
        return info.is_published()

    def _remember(self, topic: str, payload: bytes) -> None:
        with self._state:
            if payload:
                self._retained[topic] = payload
            else:  # cleared (or not ours to restore)
                self._retained.pop(topic, None)


def _set_tls(client: mqtt.Client, address: BrokerAddress) -> None:
    """Check the broker's certificate against ``address.ca`` (the system's CAs if None) and its host
    name; present ``address.cert``/``key`` if given."""
    for what, path in (("ca", address.ca), ("cert", address.cert), ("key", address.key)):
        if path and not os.path.isfile(path):
            raise BrokerError(f"broker {address.url}: the TLS {what} file {path!r} does not exist")
    try:
        client.tls_set(ca_certs=address.ca, certfile=address.cert, keyfile=address.key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        files = ", ".join(
            f"{k}={v}" for k, v in (("ca", address.ca), ("cert", address.cert), ("key", address.key)) if v
        )
        raise BrokerError(
            f"broker {address.url}: cannot use the TLS files ({files or 'system CAs'}): {exc}"
        ) from None


def _no_delay(client, userdata, sock) -> None:
    """Small messages must not wait for Nagle's algorithm (~10-40 ms per hop otherwise)."""
    sock = getattr(sock, "_socket", sock)  # paho's WebSocket wrapper around the TCP (or TLS) socket
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not a TCP socket (e.g. a unix socket in tests)
