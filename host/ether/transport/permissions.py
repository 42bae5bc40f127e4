"""Who may publish and subscribe to what: the roles of Ether's clients, derived from the topic layout
(``contract/topics``) in this one place, for the embedded broker's plugin and Mosquitto's ACL file.

Roles (docs/operations.md, "Who can do what"):

  supervisor  a session's own process (and another host's, joining it): every topic of its session
              but the recorder's acknowledgements
  operator    ``ether`` commands and the monitor: data, requests, replies and the session's, the
              instances' and the recorder's controls; never a status, an acknowledgement or a log
  recorder    the recorder: its status and acknowledgements, replies, error events, its own log
  instance    one instance: data, requests, replies, error events, its resends and closing report,
              and only its own status, processed reports and log (the recorder checks its ``src`` by signature: ``signing``)
  device      a board's login (``ether access add NAME``): its own device topics and readings
  anonymous   any client without a login (loopback only): data, requests (service and device calls),
              and what a board sends (boards need no login on loopback): its device topics, replies
              and error events; reads everything

A login names its role, its session and its name: ``instance/<session>/<name>``. Device logins are
the names of ``ether access`` (any session); anonymous has neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ether.contract.topics import DEFAULT_SESSION, Topics, session_of

ROLES = ("supervisor", "operator", "recorder", "instance", "device", "anonymous")
DERIVED_ROLES = (
    "supervisor",
    "operator",
    "recorder",
    "instance",
)  # logins a session derives from its broker key

_REQUESTS = {"instance_call", "device_call"}
_ANSWERS = {"reply", "errors"}
_LOGS = {"log"}  # a process's log lines
PUBLISH: dict[str, set[str]] = {
    "supervisor": {
        "data",
        *_REQUESTS,
        *_ANSWERS,
        "session_control",
        "instance_control",
        "instance_status",  # 'restarting' between two processes of an instance
        "supervisor_status",
        "recorder_control",
        "recorder_status",  # 'stopped' or 'dead' for its recorder that exited without a last word
        "recorder_closing",
        "recorder_resend",
        *_LOGS,  # its own and the embedded broker's
    },
    "operator": {"data", *_REQUESTS, *_ANSWERS, "session_control", "instance_control", "recorder_control"},
    "recorder": {*_ANSWERS, *_LOGS, "recorder_status", "recorder_ack"},
    "instance": {
        "data",
        *_REQUESTS,
        *_ANSWERS,
        *_LOGS,
        "instance_status",
        "instance_processed",
        "recorder_closing",
        "recorder_resend",
    },
    "device": {"data", *_ANSWERS, "device_schema", "device_state"},
    "anonymous": {"data", *_REQUESTS, *_ANSWERS, "device_schema", "device_state"},  # boards, on loopback
}
OWN = {
    "instance": {"instance_status", "instance_processed", "log"},
    "recorder": {"log"},
    "device": {"device_schema", "device_state"},
}  # own name only
DEVICE_READS = ("device_call", "device_schema", "device_state")  # beside data, what a board may read


@dataclass(frozen=True)
class Login:
    """Who a broker connection is: its role, its session ('' = any) and its name."""

    role: str
    session: str = ""
    name: str = ""

    @property
    def username(self) -> str:
        return f"{self.role}/{self.session}/{self.name}" if self.role in DERIVED_ROLES else self.name

    @classmethod
    def parse(cls, username: str) -> Login | None:
        """The login a derived username names; None if it is not one."""
        parts = username.split("/")
        if len(parts) != 3 or parts[0] not in DERIVED_ROLES or not all(parts):
            return None
        return cls(*parts)


ANONYMOUS = Login("anonymous")


def classify(topic: str) -> tuple[str, str, str] | None:
    """(session, kind, name) of a broker topic; session '' for a data topic (any session's);
    None for a topic outside the layout or reserved for the broker."""
    if topic.startswith("$"):
        return None
    session = session_of(topic)
    if session is None:
        if topic.startswith("ether/"):
            return None
        return "", "data", ""
    where = Topics(session).parse(topic)
    return None if where is None else (session, where.kind, where.name)


@lru_cache(maxsize=8192)  # a broker checks every publish: the same few topics, again and again
def may_publish(login: Login, topic: str) -> bool:
    found = classify(topic)
    if found is None:
        return False
    session, kind, name = found
    if kind not in PUBLISH[login.role] or (login.session and session and session != login.session):
        return False
    if kind == "data" and login.role == "device":  # a board's readings: <device>.<method>
        return topic.rsplit("/", 1)[-1].startswith(f"{login.name}.")
    return kind not in OWN.get(login.role, ()) or name == login.name


@lru_cache(maxsize=1024)
def may_subscribe(login: Login, topic_filter: str) -> bool:
    """Every role reads what Ether publishes, but a board: data, and its own device topics."""
    if login.role != "device":
        return True
    found = classify(topic_filter.replace("+", "x").replace("#", "x"))
    if found is None or topic_filter.split("/")[0] in ("+", "#"):
        return False
    session, kind, name = found
    return kind == "data" or (kind in DEVICE_READS and name == login.name)


# -- Mosquitto ---------------------------------------------------------------------------------


def _data_filters(session: str) -> list[str]:
    """Data topics as Mosquitto filters. Its ACL has no "anything but ``ether/``": in the default
    session, data topics of one or two levels (``data``, ``lab/temperature``)."""
    return ["+", "+/+"] if session == DEFAULT_SESSION else [f"{session}/#"]


def _filters(login: Login, session: str, kinds: set[str]) -> list[str]:
    topics = Topics(session)
    filters: list[str] = []
    for kind in sorted(kinds):
        if kind == "data":
            filters += _data_filters(session)
        elif kind == "recorder_closing" and login.role == "instance":  # checked by signature
            filters.append(topics.pattern(kind))
        else:
            own = kind in OWN.get(login.role, ())
            filters.append(topics.pattern(kind, login.name if own else "+"))
    return filters


def mosquitto_acl(logins: list[Login], session: str) -> str:
    """A Mosquitto ``acl_file`` for one session: the anonymous role first, then one block per login."""
    lines = ["# generated by Ether: the roles of docs/operations.md", "topic read #"]
    lines += [f"topic write {f}" for f in _filters(ANONYMOUS, session, PUBLISH["anonymous"])]
    for login in logins:
        lines += ["", f"user {login.username}"]
        if login.role == "device":
            topics = Topics(session)
            reads = _data_filters(session) + [topics.pattern(k, login.name) for k in DEVICE_READS]
            lines += [f"topic read {f}" for f in reads]
        else:
            lines.append("topic read #")
        lines += [f"topic write {f}" for f in _filters(login, session, PUBLISH[login.role])]
    return "\n".join(lines) + "\n"
