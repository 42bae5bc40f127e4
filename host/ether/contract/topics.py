"""The whole topic layout in one place: the public contract documented in docs/topics.md.

Data topics are the user's own names (``data``, ``DataProcessor.process_data``). A named session puts
them under ``<session>/`` so several sessions can share one broker. Ether's own traffic lives under
``ether/<session>/…``; the default session is called ``default`` and adds no data prefix.
"""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_SESSION = "default"
SYSTEM_ROOT = "ether"
STRUCTURE = "ether.structure"  # the data topic of runs, trials and markers (docs/experiments.md)


class TopicError(ValueError):
    """A topic a user gave cannot be used (wildcards where a concrete topic is needed, empty, …)."""


def default_topic(qualname: str) -> str:
    """``ClassName.method`` from a function's ``__qualname__`` (nested or local classes keep the last two parts)."""
    parts = [p for p in qualname.split(".") if p != "<locals>"]
    return ".".join(parts[-2:])


def check_publish_topic(topic: str) -> str:
    """Refuse topics MQTT does not allow to be published to, naming the topic and the reason."""
    if not isinstance(topic, str) or not topic:
        raise TopicError(f"topic {topic!r}: a topic must be a non-empty string")
    if "+" in topic or "#" in topic:
        raise TopicError(f"topic {topic!r}: wildcards '+' and '#' are only allowed when subscribing")
    if topic.startswith("$"):
        raise TopicError(f"topic {topic!r}: topics starting with '$' are reserved for the broker")
    if "\x00" in topic:
        raise TopicError(f"topic {topic!r}: contains a NUL character")
    return topic


SHARE_PREFIX = "$share/"  # a shared subscription: $share/<group>/<filter> (MQTT 5, section 4.8.2)


def unshared(topic_filter: str) -> str:
    """The filter of a shared subscription ``$share/<group>/<filter>``; any other filter as it is."""
    if topic_filter.startswith(SHARE_PREFIX):
        return topic_filter.split("/", 2)[2] if topic_filter.count("/") >= 2 else ""
    return topic_filter


def check_subscribe_filter(topic_filter: str) -> str:
    """Refuse malformed subscription filters ('#' not last, '+' sharing a level, a shared
    subscription without a group or a filter)."""
    if not isinstance(topic_filter, str) or not topic_filter:
        raise TopicError(f"topic {topic_filter!r}: a topic must be a non-empty string")
    if topic_filter.startswith(SHARE_PREFIX):
        group = topic_filter.split("/")[1]
        if not group or "+" in group or "#" in group or not unshared(topic_filter):
            raise TopicError(f"topic {topic_filter!r}: a shared subscription is $share/<group>/<filter>")
        check_subscribe_filter(unshared(topic_filter))
        return topic_filter
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise TopicError(f"topic {topic_filter!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise TopicError(f"topic {topic_filter!r}: '+' must be a whole level")
    return topic_filter


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic-filter matching (used where the broker cannot do it for us); a shared subscription
    matches what its filter matches."""
    if topic_filter == topic:  # no wildcard (a topic has none): the common case
        return True
    f_levels, t_levels = unshared(topic_filter).split("/"), topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or level not in ("+", t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def covers(wide: str, narrow: str) -> bool:
    """Whether every topic ``narrow`` matches also matches ``wide`` (a broker sends a client one copy of
    a message per subscription it matches: a covered filter needs none of its own). Shared
    subscriptions cover nothing and are covered by nothing."""
    if wide == narrow:
        return True
    if unshared(wide) != wide or unshared(narrow) != narrow:
        return False
    w_levels, n_levels = wide.split("/"), narrow.split("/")
    if narrow.startswith("$") and w_levels[0] in ("+", "#"):
        return False
    for i, level in enumerate(w_levels):
        if level == "#":
            return True
        if i >= len(n_levels) or n_levels[i] == "#" or level not in ("+", n_levels[i]):
            return False
    return len(w_levels) == len(n_levels)


class Topic(NamedTuple):
    """What a topic of the session is (:meth:`Topics.parse`): its ``kind``, the ``name`` of the
    instance, supervisor, device, client or source it is about, and a ``detail``: the service of a
    call, the user topic of a data message, the original broker topic of a resend."""

    kind: str
    name: str = ""
    detail: str = ""


# system topics under ether/<session>/, as levels; "*" is a name, the kind is the joined fixed levels
_LAYOUT = {
    ("errors",): "errors",
    ("log", "*"): "log",
    ("control",): "session_control",
    ("instance", "*", "status"): "instance_status",
    ("instance", "*", "control"): "instance_control",
    ("instance", "*", "call", "*"): "instance_call",
    ("instance", "*", "processed"): "instance_processed",
    ("supervisor", "*", "status"): "supervisor_status",
    ("recorder", "status"): "recorder_status",
    ("recorder", "control"): "recorder_control",
    ("recorder", "closing"): "recorder_closing",
    ("recorder", "ack", "*"): "recorder_ack",
    ("device", "*", "schema"): "device_schema",
    ("device", "*", "state"): "device_state",
    ("device", "*", "call"): "device_call",
}
KINDS = ("data", "reply", "recorder_resend", *_LAYOUT.values())  # every kind parse() can return


def session_of(broker_topic: str) -> str | None:
    """The session a system topic ``ether/<session>/...`` belongs to; None for any other topic."""
    levels = broker_topic.split("/")
    return levels[1] if len(levels) > 2 and levels[0] == SYSTEM_ROOT and levels[1] else None


class Topics:
    """Every topic of one session: data topics are mapped through :meth:`data`, system topics are methods."""

    def __init__(self, session: str = DEFAULT_SESSION) -> None:
        self.session = session or DEFAULT_SESSION
        self.root = f"{SYSTEM_ROOT}/{self.session}"

    # data -----------------------------------------------------------------
    def data(self, user_topic: str) -> str:
        """The broker topic of a user's data topic (or filter: ``$share/<group>/`` stays in front)."""
        if user_topic.startswith(SHARE_PREFIX) and self.session != DEFAULT_SESSION:
            group = user_topic.split("/")[1]
            return f"{SHARE_PREFIX}{group}/{self.data(unshared(user_topic))}"
        if self.session == DEFAULT_SESSION:
            return user_topic
        return f"{self.session}/{user_topic}"

    def user_topic(self, broker_topic: str) -> str:
        """The user's name for a broker data topic (inverse of :meth:`data`)."""
        prefix = f"{self.session}/"
        if self.session != DEFAULT_SESSION and broker_topic.startswith(prefix):
            return broker_topic[len(prefix) :]
        return broker_topic

    def parse(self, broker_topic: str) -> Topic | None:
        """What a broker topic is in this session (the inverse of the builders below); None for a topic
        of another session or one outside the layout."""
        if self.is_data(broker_topic):
            if self.session != DEFAULT_SESSION and not broker_topic.startswith(f"{self.session}/"):
                return None
            return Topic("data", detail=self.user_topic(broker_topic))
        if not broker_topic.startswith(f"{self.root}/"):
            return None
        levels = broker_topic[len(self.root) + 1 :].split("/")
        if levels[0] == "reply" and len(levels) >= 2:  # reply/<client>, and a client's own sub-topics
            return Topic("reply", levels[1], "/".join(levels[2:]))
        if levels[:2] == ["recorder", "resend"] and len(levels) > 2:
            return Topic("recorder_resend", detail="/".join(levels[2:]))
        for pattern, kind in _LAYOUT.items():
            if len(pattern) != len(levels):
                continue
            pairs = list(zip(pattern, levels, strict=True))
            if all(p == level or (p == "*" and level) for p, level in pairs):
                return Topic(kind, *(level for p, level in pairs if p == "*"))
        return None

    def pattern(self, kind: str, name: str = "+") -> str:
        """The topic filter of every topic of ``kind`` in this session (``name``: one instance, device,
        client or source; ``+`` any). Data topics of the default session have no prefix: ``#``, which
        also matches ``ether/...`` (see :meth:`is_data`)."""
        if kind == "data":
            return self.data_all()
        if kind == "reply":
            return f"{self.root}/reply/{name}/#" if name != "+" else f"{self.root}/reply/#"
        if kind == "recorder_resend":
            return self.recorder_resend()
        levels = list(next(p for p, k in _LAYOUT.items() if k == kind))
        if "*" in levels:  # the first name is the one asked for; a service name is any
            levels[levels.index("*")] = name
        return "/".join([self.root, *("+" if level == "*" else level for level in levels)])

    # instances ------------------------------------------------------------
    def instance_status(self, instance: str) -> str:
        """Retained state of one instance (starting/ready/stopped/failed/dead); its Last Will says dead."""
        return f"{self.root}/instance/{instance}/status"

    def instance_status_all(self) -> str:
        return f"{self.root}/instance/+/status"

    def instance_control(self, instance: str) -> str:
        """Commands to one instance (init, start, save_all, cleanup, shutdown, status)."""
        return f"{self.root}/instance/{instance}/control"

    def instance_call(self, instance: str, service: str) -> str:
        """Requests to one instance's ``@ether_get``/``@ether_save`` service ``ClassName.method``."""
        return f"{self.root}/instance/{instance}/call/{service}"

    def instance_calls(self, instance: str) -> str:
        return f"{self.root}/instance/{instance}/call/+"

    def instance_processed(self, instance: str) -> str:
        """What one instance processed since its last report (durable, for the recorder: docs/data.md)."""
        return f"{self.root}/instance/{instance}/processed"

    # session-wide ---------------------------------------------------------
    def errors(self) -> str:
        """Error events: a rejected message or an exception in user code (instance, topic, reason)."""
        return f"{self.root}/errors"

    def log(self, source: str) -> str:
        """One process's log records (instance, recorder, broker, supervisor), kept in the store's ``logs``."""
        return f"{self.root}/log/{source}"

    def session_control(self) -> str:
        """Commands to the session's supervisors: shutdown, stop/restart/launch an instance."""
        return f"{self.root}/control"

    def supervisor_status(self, supervisor: str) -> str:
        return f"{self.root}/supervisor/{supervisor}/status"

    def replies(self, client: str) -> str:
        """Where one client receives replies to its requests."""
        return f"{self.root}/reply/{client}"

    # recorder ---------------------------------------------------------------
    def data_all(self) -> str:
        """Filter for every data topic of the session (the default session must skip ``ether/``)."""
        return "#" if self.session == DEFAULT_SESSION else f"{self.session}/#"

    def is_data(self, broker_topic: str) -> bool:
        return not broker_topic.startswith(f"{SYSTEM_ROOT}/") and not broker_topic.startswith("$")

    def recorder_status(self) -> str:
        """Retained state of the recorder (ready/stopped/dead) with its pid, boot id and store folder."""
        return f"{self.root}/recorder/status"

    def recorder_control(self) -> str:
        """Requests to the recorder: status, barrier (answer once all received so far is on disk), shutdown."""
        return f"{self.root}/recorder/control"

    def recorder_ack(self, source: str) -> str:
        """``{boot: seq}``: every data message of ``source`` up to ``seq`` is on disk."""
        return f"{self.root}/recorder/ack/{source}"

    def recorder_resend(self, broker_topic: str = "#") -> str:
        """Where a publisher resends unacknowledged messages: only the recorder listens, so live
        subscribers never get an old message twice or late."""
        return f"{self.root}/recorder/resend/{broker_topic}"

    def recorder_closing(self) -> str:
        """A publisher's last seq per boot at its end, so a lost tail shows in the gap ledger."""
        return f"{self.root}/recorder/closing"

    # devices (ether_lite boards) -------------------------------------------
    def device_schema_all(self) -> str:
        """Retained descriptions of the boards' methods, versions and boot ids (``device/<name>/schema``)."""
        return f"{self.root}/device/+/schema"

    def device_state_all(self) -> str:
        """Retained states of the boards (online, offline, lost by Last Will; ``device/<name>/state``)."""
        return f"{self.root}/device/+/state"

    def device_call(self, device: str) -> str:
        """Requests ``{"method": name, "args": {...}}`` to any method of a board, sensors too."""
        return f"{self.root}/device/{device}/call"

    def device_method(self, device: str, method: str) -> str:
        """A board's data topic ``<device>.<method>``: its sensor's readings, or calls to its actuator."""
        return self.data(f"{device}.{method}")
