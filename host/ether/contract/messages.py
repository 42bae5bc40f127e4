"""Every message Ether sends, as a typed model: statuses, replies, errors, commands, acks, device messages.

Senders build a model and publish ``model.payload()``; receivers that act on a message read it with
``Model.read(payload)``. Unknown fields are kept on input and allowed in the schemas, so a newer sender
(or a foreign client) never breaks an older reader. ``python -m ether.contract.schemas`` writes the JSON
Schemas of these models to docs/schemas/. Data payloads are the user's own; only their ``_ether`` block
(:class:`EtherMeta`) is Ether's, and the data path checks it with the cheaper ``wire.Meta.from_dict``,
within the same limits (``wire.SEQ_LIMIT``, ...).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator

from ether.contract.wire import ID_LIMIT, PARENTS_LIMIT, SEQ_LIMIT, SIG_LIMIT, T_LIMIT, TOPIC_LIMIT

M = TypeVar("M", bound="Message")
B = TypeVar("B", bound=BaseModel)

# the bounded values of the metadata and of the recorder's messages (docs/topics.md#limits)
Id = Annotated[str, Field(max_length=ID_LIMIT)]
Source = Annotated[str, Field(max_length=ID_LIMIT, pattern=r"^[^/+#\s\x00-\x1f\x7f]*$")]
Seq = Annotated[int, Field(ge=0, lt=SEQ_LIMIT, strict=True)]
BOOTS_LIMIT = 16  # boots in one acknowledgement or closing report (a publisher has two: durable, latest)
RANGES_LIMIT = 1024  # boots, and ranges per boot, in a supervisor's last status (its outboxes' leftovers)
Ranges = Annotated[list[tuple[Seq, Seq]], Field(max_length=RANGES_LIMIT)]  # [first, last] seq ranges


class Message(BaseModel):
    """A message Ether sends: fields as documented; fields it does not know are kept, never refused."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    keep_null: ClassVar[frozenset[str]] = frozenset()  # fields sent as ``null`` rather than left out

    def payload(self) -> dict[str, Any]:
        """The message as a JSON object (``wire.encode`` it): unset optional fields are left out."""
        body = self.model_dump(by_alias=True)
        return {k: v for k, v in body.items() if v is not None or k in self.keep_null}

    @classmethod
    def read(cls: type[M], payload: Any) -> M | None:
        """The message, or None if the payload does not fit the contract (a foreign or broken sender)."""
        try:
            return cls.model_validate(payload)
        except ValidationError:
            return None


class ContractError(ValueError):
    """A message that does not fit its model; ``field`` is the first one at fault."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def parse(cls: type[B], payload: Any) -> B:
    """The message as ``cls`` reads it, or ContractError naming the first field that does not fit."""
    try:
        return cls.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ContractError(
            f"not a valid {cls.__name__}: {where + ': ' if where else ''}{first['msg']}", where
        ) from None


# -- the data envelope ----------------------------------------------------------------------------


class EtherMeta(Message):
    """The ``_ether`` block of every message Ether publishes (docs/topics.md#payloads)."""

    id: Id = Field(description="<boot>.<seq> for data, <boot>.c<n> for replies and events")
    src: Source = Field(description="the sending instance, board, script (main:<host>-<pid>) or recorder")
    boot: Id = Field(description="random id of the sending process's start: a new boot is a restart")
    seq: Seq = Field(description="per-source sequence of data messages from 1, without gaps; 0 otherwise")
    t: float = Field(
        ge=0,
        lt=T_LIMIT,
        allow_inf_nan=False,
        description="send time, seconds since the epoch, sender's clock",
    )
    parents: list[Id] = Field(
        default_factory=list, max_length=PARENTS_LIMIT, description="ids of the messages that caused this one"
    )
    reply_to: str | None = Field(
        None, max_length=TOPIC_LIMIT, description="on a request: the topic to reply to"
    )
    corr: Id | None = Field(None, description="on a request and its reply: the correlation id")
    dropped: Seq | None = Field(None, description="on a board's reading: readings dropped this boot")
    sig: str | None = Field(
        None,
        max_length=SIG_LIMIT,
        description="last, on a host source's data message and closing report: its signature, keyed per"
        " source: HMAC-SHA256 (32 hex digits), or on a binary frame '2.<nonce>.<tag>' (Poly1305 of the"
        " data section) (docs/operations.md#who-can-do-what)",
    )


class DataMessage(Message):
    """A data message: the user's fields (a non-object value as ``root``) and Ether's metadata."""

    ether: EtherMeta | None = Field(None, alias="_ether", description="optional on input")


# -- statuses (retained) -----------------------------------------------------------------------------

InstanceState = Literal["starting", "ready", "paused", "restarting", "stopped", "failed", "dead"]


class ServiceArgument(Message):
    type: str = Field(description="a short type name: int, float, str, list[float], ...")
    required: bool


class InstanceStatus(Message):
    """``instance/<name>/status``: the full status while the process runs; a short one from its Last
    Will (dead), a failed start, or the supervisor (restarting)."""

    instance: str
    class_path: str = Field(alias="class", description="module:Class of the hosted object")
    state: InstanceState
    pid: int | None = None
    host: str | None = None
    restarts: int | None = None
    publishes: list[str] | None = None
    subscribes: list[str] | None = None
    services: list[str] | None = None
    service_args: dict[str, dict[str, ServiceArgument]] | None = None
    started: float | None = Field(None, description="when this process began hosting the instance")
    t: float | None = None
    error: str | None = Field(None, description="why it failed")
    traceback: str | None = None
    exit_code: int | None = Field(None, description="the exit code of the process that is restarted")


class SupervisorStatus(Message):
    """``supervisor/<name>/status``: a process that supervises instances of the session."""

    name: str
    host: str
    pid: int
    state: Literal["running", "stopped", "dead"]
    instances: list[str]
    since: float
    recorder_run: str | None = Field(
        None, max_length=4096, description="the run folder of the recorder that records its data"
    )
    unsaved: dict[Id, Ranges] | None = Field(
        None,
        max_length=RANGES_LIMIT,
        description="at 'stopped': per boot, the seq ranges its outboxes still hold (never confirmed saved)",
    )
    broker_lag_s: float | None = Field(
        None,
        description="how many seconds the broker is behind (the round trip of the supervisor's probe, or"
        " the age of the oldest probe not back); above 2 it is overloaded and delays every message",
    )


class RecorderStatus(Message):
    """``recorder/status`` (and the result of its ``status`` and ``barrier`` requests); the Last Will
    carries only state and pid."""

    state: Literal["ready", "stopped", "failed", "dead"]
    pid: int
    boot: str | None = None
    run_dir: str | None = None
    saved: int | None = Field(None, description="messages in the session store")
    backlog: int | None = Field(None, description="messages received, not yet written")
    missing: int | None = Field(None, description="messages in the gap ledger")
    gaps: int | None = Field(None, description="ranges in the gap ledger")
    restarts: int | None = None
    exit_code: int | None = Field(None, description="a dead recorder's, as the supervisor saw it exit")
    unprocessed: dict[str, int] | None = Field(
        None,
        description="per subscriber instance, durable messages of the store on its topics it has not"
        " processed (yet); counted every few seconds while someone asks for the status",
    )
    t: float | None = None


# -- requests and replies ----------------------------------------------------------------------------

ErrorKind = Literal[
    "validation",  # the arguments do not fit
    "not_found",  # the service looked for an item that is not there
    "exception",  # the method (or a lifecycle step) raised
    "unknown_service",  # no such service or method
    "unknown_command",  # a control message with a command the receiver does not have
    "failed",  # a session command that could not be carried out
    "error",  # a foreign sender's error without a kind
]


class ErrorInfo(Message):
    kind: ErrorKind
    message: str


class OkReply(Message):
    """A request's answer: its result (``null`` is a result, not an error)."""

    keep_null: ClassVar[frozenset[str]] = frozenset({"result"})
    ok: Literal[True]
    result: Any = None


class ErrorReply(Message):
    """A refused request: the one error shape, ``{"ok": false, "error": {"kind", "message"}}``."""

    ok: Literal[False]
    error: ErrorInfo

    @field_validator("error", mode="before")
    @classmethod
    def _plain_text(cls, error: Any) -> Any:
        """A foreign sender may give the error as text: read it as kind ``error``."""
        return {"kind": "error", "message": error} if isinstance(error, str) else error


Reply = RootModel[OkReply | ErrorReply]


def ok(result: Any = None) -> OkReply:
    return OkReply(ok=True, result=result)


def refused(kind: ErrorKind, message: str) -> ErrorReply:
    return ErrorReply(ok=False, error=ErrorInfo(kind=kind, message=message))


def read_reply(payload: Any) -> OkReply | ErrorReply:
    """A reply as the contract reads it; one that fits neither shape is an error naming what came."""
    try:
        return Reply.model_validate(payload).root
    except ValidationError:
        return refused("error", f"unexpected reply {payload!r}")


class ErrorEvent(Message):
    """``errors``: a rejected message or an exception in user code (on a host or a board)."""

    keep_null: ClassVar[frozenset[str]] = frozenset({"method", "message_id"})
    instance: str = Field(description="the instance or board that rejected the message")
    topic: str
    method: str | None = None
    reason: str
    message_id: str | None = Field(None, description="the rejected message's id; null if it had none")
    traceback: str | None = Field(
        None, description="for an exception in user code: its traceback from the user's frame (file:line)"
    )
    sender: str | None = Field(
        None,
        description="who sent the rejected message, if known: its claimed src, or the broker's client id",
    )
    field: str | None = Field(None, description="for refused metadata: the _ether field at fault")
    size: int | None = Field(None, description="for an oversized message: its size in bytes")
    suppressed: int | None = Field(
        None, description="error events of this instance not sent just before this one (rate limit)"
    )


LOG_MESSAGE_LIMIT = 8192  # characters of a log line's message, and of its traceback x 4
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class LogRecord(Message):
    """``log/<source>``: one log line of a process; the topic names the process (the broker checks it)."""

    t: float = Field(ge=0, lt=T_LIMIT, allow_inf_nan=False, description="when it was logged, sender's clock")
    level: str = Field(max_length=16, description="DEBUG, INFO, WARNING, ERROR, CRITICAL (or a custom name)")
    logger: str = Field(
        max_length=ID_LIMIT, description="the logger's name: ether.runtime, amqtt.broker, ..."
    )
    message: str = Field(max_length=LOG_MESSAGE_LIMIT)
    pid: int = Field(ge=0, lt=SEQ_LIMIT)
    host: str = Field(max_length=ID_LIMIT)
    traceback: str | None = Field(None, max_length=4 * LOG_MESSAGE_LIMIT)
    dropped: int | None = Field(
        None, ge=0, lt=SEQ_LIMIT, description="on a 'lines dropped' record: lines not sent (rate limit)"
    )


# -- commands --------------------------------------------------------------------------------------

InstanceCommandName = Literal[
    "status", "init", "start", "pause", "resume", "save_all", "cleanup", "shutdown", "sync", "finish_inputs"
]


class InstanceCommand(Message):
    """``instance/<name>/control``; ``sync`` is answered after every message queued before it.
    ``drain`` (``finish_inputs``, ``shutdown``): the seconds left of the session's drain budget, the
    longest this instance's waits for its data may take in all (else its own ``drain_timeout``)."""

    command: InstanceCommandName
    drain: float | None = Field(None, ge=0, lt=T_LIMIT, allow_inf_nan=False)


class SessionCommand(Message):
    """``control``: to every supervisor of the session; the one owning ``instance`` answers."""

    command: Literal["shutdown", "stop", "restart", "launch"]
    instance: str | None = None


Seconds = Annotated[float, Field(ge=-T_LIMIT, lt=T_LIMIT, allow_inf_nan=False)]


class RecorderCommand(Message):
    """``recorder/control``; a ``shutdown`` with ``forced_by`` stops at once (a forced quit). ``clock``
    is answered at once with the recorder's receive and send times (``ClockReply``); ``clock_offset``
    reports what a supervisor measured with it, to be recorded (docs/experiments.md#one-clock)."""

    command: Literal["status", "barrier", "shutdown", "clock", "clock_offset"]
    forced_by: str | None = None
    unconfirmed: int | None = Field(None, description="on a forced quit: messages not confirmed saved")
    offset: Seconds | None = Field(None, description="clock_offset: recorder's clock minus the supervisor's")
    delay: Seconds | None = Field(None, ge=0, description="clock_offset: round trip of the exchange used")
    supervisor: Source | None = Field(None, description="clock_offset: the supervisor that measured it")
    host: str | None = Field(None, max_length=ID_LIMIT, description="clock_offset: its host")
    sources: list[Source] | None = Field(
        None,
        max_length=PARENTS_LIMIT,
        description="clock_offset: the sources on that host (its instances, itself)",
    )


class ClockReply(Message):
    """The result of a ``clock`` request: when the recorder received it and when it answered (its clock)."""

    received: float = Field(description="seconds since the epoch, recorder's clock")
    sent: float


class DeviceCall(Message):
    """``device/<name>/call``: call any method of a board, sensors too."""

    method: str
    args: dict[str, Any] = Field(default_factory=dict)


# -- recorder acknowledgements ---------------------------------------------------------------------


class RecorderAck(RootModel[Annotated[dict[Id, Seq], Field(max_length=BOOTS_LIMIT)]]):
    """``recorder/ack/<src>``: ``{boot: seq}``, every data message of src up to seq is on disk."""

    @classmethod
    def read(cls, payload: Any) -> RecorderAck | None:
        try:
            return cls.model_validate(payload)
        except ValidationError:
            return None

    def payload(self) -> dict[str, int]:
        return dict(self.root)


class RecorderClosing(Message):
    """``recorder/closing``: a publisher's last seq per boot at its end."""

    src: Source
    boots: dict[Id, Seq] = Field(max_length=BOOTS_LIMIT)


class ProcessedReport(Message):
    """``instance/<name>/processed``: what an instance processed since its last report, numbered in
    its own durable stream (boot ``<boot>-processed``), so the recorder of every host knows it."""

    instance: Source
    subscribes: list[Annotated[str, Field(max_length=TOPIC_LIMIT)]] = Field(
        max_length=RANGES_LIMIT, description="the user topic filters it processes (accounted for)"
    )
    processed: dict[Source, dict[Id, Ranges]] = Field(
        max_length=RANGES_LIMIT, description="src -> boot -> [first, last] seq ranges handled"
    )


# -- structure inside a session: runs, trials, markers -------------------------------------------

STRUCTURE_NAME_LIMIT = 256  # characters of a run's, trial's or marker's name
STRUCTURE_ERROR_LIMIT = 4096  # characters of a failed run's error text


class StructureEvent(Message):
    """``ether.structure`` (a data topic, docs/experiments.md): a run or trial starts or stops, or a
    marker. A stop names the entry by ``id``; without it, the innermost open entry of its ``kind``
    and ``name`` (any, when not given) stops. Without ``parent`` (the key left out), a run or trial
    nests in the innermost open run and a marker in the innermost open entry."""

    event: Literal["start", "stop", "mark"]
    kind: Literal["run", "trial"] | None = Field(None, description="start: run (default) or trial")
    name: str | None = Field(None, min_length=1, max_length=STRUCTURE_NAME_LIMIT)
    id: Id | None = Field(None, min_length=1, description="the entry's id; a start without one gets one")
    parent: Id | None = Field(None, description="the id of the enclosing entry; null: at the top")
    status: Literal["ok", "failed", "aborted"] | None = Field(None, description="stop: default ok")
    error: str | None = Field(None, max_length=STRUCTURE_ERROR_LIMIT, description="stop: why it failed")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="start: the entry's metadata; mark: the marker's fields"
    )


# -- boards (ether_lite) ----------------------------------------------------------------------------


class DeviceMethod(Message):
    kind: Literal["sensor", "actuator"]
    args: dict[str, str] = Field(description="argument name -> int, float, bool, str or any")
    unit: str | None = None
    period: float | None = Field(None, description="a sensor's reading period in seconds")
    optional: list[str] | None = Field(None, description="arguments that have a default")


class DeviceSchema(Message):
    """``device/<name>/schema`` (retained): what a board has."""

    keep_null: ClassVar[frozenset[str]] = frozenset({"firmware"})
    device: str
    kind: Literal["ether_lite"]
    lib_version: str
    platform: str
    implementation: str
    firmware: str | None = None
    boot: str
    methods: dict[str, DeviceMethod]


class DeviceState(Message):
    """``device/<name>/state`` (retained): online, offline (a clean stop) or lost (its Last Will)."""

    device: str
    state: Literal["online", "offline", "lost"]
    boot: str
    dropped: int | None = Field(None, description="readings dropped this boot (buffer full)")


MODELS: tuple[type[BaseModel], ...] = (
    EtherMeta,
    DataMessage,
    InstanceStatus,
    SupervisorStatus,
    RecorderStatus,
    OkReply,
    ErrorReply,
    ErrorEvent,
    LogRecord,
    InstanceCommand,
    SessionCommand,
    RecorderCommand,
    ClockReply,
    DeviceCall,
    RecorderAck,
    RecorderClosing,
    ProcessedReport,
    DeviceSchema,
    DeviceState,
    StructureEvent,
)

# what travels on each kind of topic (``Topics.parse(topic).kind``); a reply is either of its two shapes
ON_TOPIC: dict[str, tuple[type[BaseModel], ...]] = {
    "data": (DataMessage,),
    "instance_status": (InstanceStatus,),
    "instance_control": (InstanceCommand,),
    "instance_call": (DataMessage,),  # the service's arguments
    "instance_processed": (ProcessedReport,),
    "errors": (ErrorEvent,),
    "log": (LogRecord,),
    "session_control": (SessionCommand,),
    "supervisor_status": (SupervisorStatus,),
    "reply": (OkReply, ErrorReply),
    "recorder_status": (RecorderStatus,),
    "recorder_control": (RecorderCommand,),
    "recorder_ack": (RecorderAck,),
    "recorder_resend": (DataMessage,),
    "recorder_closing": (RecorderClosing,),
    "device_schema": (DeviceSchema,),
    "device_state": (DeviceState,),
    "device_call": (DeviceCall,),
}


def fits(kind: str, payload: Any) -> bool:
    """Whether ``payload`` is a message of the contract on a topic of this kind (``ON_TOPIC``)."""
    for model in ON_TOPIC.get(kind, ()):
        try:
            model.model_validate(payload)
        except ValidationError:
            continue
        return True
    return False
