"""The whole topic layout in one place: the public contract documented in docs/topics.md.

Data topics are the user's own names (``data``, ``DataProcessor.process_data``). A named session puts
them under ``<session>/`` so several sessions can share one broker. Ether's own traffic lives under
``ether/<session>/…``; the default session is called ``default`` and adds no data prefix.
"""

from __future__ import annotations

DEFAULT_SESSION = "default"
SYSTEM_ROOT = "ether"


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


def check_subscribe_filter(topic_filter: str) -> str:
    """Refuse malformed subscription filters ('#' not last, '+' sharing a level)."""
    if not isinstance(topic_filter, str) or not topic_filter:
        raise TopicError(f"topic {topic_filter!r}: a topic must be a non-empty string")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise TopicError(f"topic {topic_filter!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise TopicError(f"topic {topic_filter!r}: '+' must be a whole level")
    return topic_filter


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic-filter matching (used where the broker cannot do it for us)."""
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or level not in ("+", t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


class Topics:
    """Every topic of one session: data topics are mapped through :meth:`data`, system topics are methods."""

    def __init__(self, session: str = DEFAULT_SESSION) -> None:
        self.session = session or DEFAULT_SESSION
        self.root = f"{SYSTEM_ROOT}/{self.session}"

    # data -----------------------------------------------------------------
    def data(self, user_topic: str) -> str:
        """The broker topic of a user's data topic."""
        if self.session == DEFAULT_SESSION:
            return user_topic
        return f"{self.session}/{user_topic}"

    def user_topic(self, broker_topic: str) -> str:
        """The user's name for a broker data topic (inverse of :meth:`data`)."""
        prefix = f"{self.session}/"
        if self.session != DEFAULT_SESSION and broker_topic.startswith(prefix):
            return broker_topic[len(prefix) :]
        return broker_topic

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

    # session-wide ---------------------------------------------------------
    def errors(self) -> str:
        """Error events: a rejected message or an exception in user code (instance, topic, reason)."""
        return f"{self.root}/errors"

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
    def device_schema(self, device: str) -> str:
        """Retained description of a board's methods, versions and boot id."""
        return f"{self.root}/device/{device}/schema"

    def device_state(self, device: str) -> str:
        """Retained state of a board (online / lost by Last Will)."""
        return f"{self.root}/device/{device}/state"

    def device_schema_all(self) -> str:
        return f"{self.root}/device/+/schema"

    def device_state_all(self) -> str:
        return f"{self.root}/device/+/state"

    def device_call(self, device: str) -> str:
        """Requests ``{"method": name, "args": {...}}`` to any method of a board, sensors too."""
        return f"{self.root}/device/{device}/call"

    def device_method(self, device: str, method: str) -> str:
        """A board's data topic ``<device>.<method>``: its sensor's readings, or calls to its actuator."""
        return self.data(f"{device}.{method}")
