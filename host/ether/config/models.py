"""What a session file may say, as pydantic models: the schema of ``lab.yaml`` and of scripts' configs.

The names are the original Ether's (``EtherConfig``, ``EtherInstanceConfig``, ``EtherSessionConfig``);
``docs/schemas/config.schema.json`` is generated from :class:`EtherConfig` (``python -m
ether.config``). Checks that need the user's classes (imports, constructor arguments,
registry methods) are in :mod:`ether.config.loading`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ether.config.located import Located
from ether.contract.topics import DEFAULT_SESSION
from ether.contract.wire import DEFAULT_MAX_PAYLOAD
from ether.transport.broker import MANAGED_MOSQUITTO, TLS_OPTIONS, BrokerAddress, BrokerError


def check_word(what: str, value: Any) -> str:
    """Names that become topic levels: no wildcards, separators or spaces."""
    if (
        not isinstance(value, str)
        or not value
        or any(c in value for c in "/+#$")
        or any(c.isspace() for c in value)
    ):
        raise ValueError(f"{what} must be a word without '/', '+', '#', '$' or spaces")
    return value


def _word(what: str) -> AfterValidator:
    return AfterValidator(lambda value: check_word(what, value))


SessionName = Annotated[str, _word("the session name")]
InstanceName = Annotated[str, _word("an instance name")]


class Section(BaseModel):
    """A mapping of a session file: unknown keys are mistakes, not ignored."""

    model_config = ConfigDict(extra="forbid")
    # keys of the original Ether that mean nothing here, with what to write instead
    retired_keys: ClassVar[dict[str, str]] = {}


_ZMQ = "the original Ether's ZMQ/Redis setting; this Ether runs over one MQTT broker: use 'broker: mqtt://HOST:PORT'"


class EtherSessionConfig(Section):
    """``session:``: which session of the broker this is; its name isolates its topics."""

    name: SessionName = DEFAULT_SESSION
    retired_keys: ClassVar[dict[str, str]] = {
        key: _ZMQ
        for key in (
            "allow_host",
            "host",
            "session_discovery_port",
            "session_query_port",
            "pubsub_frontend_port",
            "pubsub_backend_port",
            "reqrep_frontend_port",
            "reqrep_backend_port",
            "redis_host",
            "redis_port",
        )
    }


class BrokerConfig(Section):
    """``broker:``: join this broker instead of starting the embedded one; ``mosquitto`` starts a
    Mosquitto of the session's own (docs/operations.md). Over TLS (mqtts://, wss://): ``ca``, ``cert``
    and ``key`` are files, relative to the session file (docs/configuration.md#broker)."""

    url: str = Field(
        description="mqtt://, mqtts:// (TLS), ws:// or wss:// [user:password@]host[:port][/path], or mosquitto",
        examples=["mqtt://127.0.0.1:1883", "mqtts://lab-server:8883", "mosquitto"],
    )
    username: str | None = None
    password: str | None = None
    ca: str | None = Field(
        None,
        description="TLS: the CA certificate (PEM) the broker's certificate is checked against; default the system's",
    )
    cert: str | None = Field(
        None, description="TLS: a client certificate (PEM), for a broker that asks for one"
    )
    key: str | None = Field(None, description="TLS: the client certificate's private key (PEM)")

    @field_validator("url")
    @classmethod
    def _parses(cls, url: str) -> str:
        if url == MANAGED_MOSQUITTO:
            return url
        try:
            BrokerAddress.parse(url)
        except BrokerError as exc:
            raise ValueError(str(exc)) from None
        return url

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> BrokerConfig:
        given = [k for k in TLS_OPTIONS if getattr(self, k) is not None]
        if not given:
            return self
        if self.url == MANAGED_MOSQUITTO or not BrokerAddress.parse(self.url).tls:
            raise ValueError(f"{', '.join(given)}: TLS files need an mqtts:// or wss:// url")
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs both 'cert' and 'key'")
        return self

    def address(self, directory: str) -> BrokerAddress:
        """The broker's address with this section's login and TLS files (relative to ``directory``)."""
        address = BrokerAddress.parse(self.url)
        if self.username is not None:
            address = replace(address, username=self.username, password=self.password)

        def resolved(path: str | None) -> str | None:
            return str(Path(directory, Path(path).expanduser())) if path else None

        return replace(
            address,
            ca=resolved(self.ca or address.ca),
            cert=resolved(self.cert or address.cert),
            key=resolved(self.key or address.key),
        )


class RecorderConfig(Section):
    """``recorder:``: where and whether the session is recorded (``recorder: false`` turns it off)."""

    enabled: bool = True
    path: str | None = Field(
        None, description="relative to the config file; default $ETHER_DATA or ./ether_data"
    )
    drain_timeout: float = Field(
        8.0,
        ge=0,
        description="seconds the end of a session waits, in all, for its data to be saved and processed",
    )


class LimitsConfig(Section):
    """``limits:``: how large a message may be (docs/topics.md#limits)."""

    max_payload: ByteSize = Field(
        ByteSize(DEFAULT_MAX_PAYLOAD),
        gt=0,
        description="bytes of one message, or a size such as 64MiB; the broker and every receiver refuse more",
    )


class PubOptions(Section):
    topic: str | None = Field(None, description="default ClassName.method")
    subtopic: str | None = Field(None, description="ClassName.<subtopic>")
    interval: float | None = Field(None, gt=0, description="call the method every this many seconds")


class SubOptions(Section):
    topic: str | None = Field(None, description="topic filter; default ClassName.method")
    subtopic: str | None = None


class ServiceOptions(Section):
    name: str | None = Field(None, description="service name; default ClassName.method")


class StepOptions(Section):
    """A lifecycle step (init, start, save_all, cleanup, shutdown) takes no options."""


class EtherMethodConfig(Section):
    """The decorators to put on one method; ``ether_sub:`` with nothing after it means default options."""

    ether_pub: PubOptions | None = None
    ether_sub: SubOptions | None = None
    ether_get: ServiceOptions | None = None
    ether_save: ServiceOptions | None = None
    ether_init: StepOptions | None = None
    ether_start: StepOptions | None = None
    ether_save_all: StepOptions | None = None
    ether_cleanup: StepOptions | None = None
    ether_shutdown: StepOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_means_defaults(cls, data: Any) -> Any:
        return {k: {} if v is None else v for k, v in data.items()} if isinstance(data, dict) else data

    def decorators(self) -> dict[str, dict[str, Any]]:
        """``{decorator: options}`` for the decorators it names, in the order written."""
        return {
            name: getattr(self, name).model_dump(exclude_none=True)
            for name in type(self).model_fields
            if getattr(self, name) is not None
        }


class EtherClassConfig(Section):
    """``registry: {package.module.Class: {methods: ...}}``: decorate a class you cannot edit."""

    methods: dict[str, EtherMethodConfig] = {}

    @field_validator("methods", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return {} if value is None else value


RestartPolicy = Literal["no", "on-failure", "always"]
MAX_WORKERS = 64  # processes of one pool


def _duration(value: Any) -> float:
    from ether.runtime.schedules import parse_duration

    return parse_duration(value)


Duration = Annotated[
    float,
    BeforeValidator(_duration),
    Field(description="seconds, or text such as 90s, 10m, 1h30m, 500ms"),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]}),
]


class ScheduleEntry(Section):
    """One item of an instance's ``schedule:`` (docs/experiments.md#schedules): call ``method`` every
    interval, at the times of a cron line, or once per item of a trial sequence."""

    method: str = Field(description="a method of the instance's class")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of every call")
    every: Duration | None = Field(None, description="the interval between calls (trials: between starts)")
    cron: str | None = Field(
        None, description="minute hour day month weekday, local time", examples=["*/5 * * * *", "0 9 * * 1-5"]
    )
    after: Duration | None = Field(None, description="wait this long after the instance started")
    count: int | None = Field(None, ge=1, description="at most this many calls (every, cron)")
    trials: list[dict[str, Any]] | None = Field(
        None, min_length=1, description="a trial sequence: one call per item (its arguments), each in a trial"
    )
    repeat: int = Field(1, ge=1, description="trials: run the sequence this many times")

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, line: str | None) -> str | None:
        from ether.runtime.schedules import Cron

        if line is not None:
            Cron(line)
        return line

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleEntry:
        if self.cron is not None and (self.every is not None or self.trials is not None):
            raise ValueError("'cron' runs alone: give either cron, or every and/or trials")
        if self.cron is None and self.every is None and self.trials is None:
            raise ValueError("say when: 'every: 10s', 'cron: \"*/5 * * * *\"' or 'trials: [...]'")
        if self.count is not None and self.trials is not None:
            raise ValueError("'count' is for every/cron; a trial sequence has 'repeat'")
        return self


class EtherInstanceConfig(Section):
    """One instance: a class, its constructor arguments and how it is kept alive."""

    class_path: str = Field(
        description="package.module.ClassName", examples=["mypackage.sensors.Thermometer"]
    )
    args: list[Any] = Field(default_factory=list, description="positional arguments for the constructor")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments; 'ether_name' names the instance (original Ether)",
    )
    autorun: bool = Field(True, description="false: start it later with ether.launch_instances")
    restart: RestartPolicy = "on-failure"
    max_restarts: int = Field(5, ge=0)
    backoff: float = Field(0.5, ge=0, description="seconds before the first restart; doubles each time")
    workers: int = Field(
        1,
        ge=1,
        le=MAX_WORKERS,
        description="a pool: this many processes NAME@1..NAME@N share its input, each message handled by one",
    )
    schedule: list[ScheduleEntry] = Field(
        default_factory=list, description="methods called on a schedule (docs/experiments.md#schedules)"
    )
    retired_keys: ClassVar[dict[str, str]] = {"session_config": _ZMQ}
    _name: str = PrivateAttr("")
    _pool: str = PrivateAttr("")  # a worker's: the name of its pool
    _worker: int = PrivateAttr(0)  # a worker's: its index in the pool, 0..workers-1

    @field_validator("restart", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        if value is False:  # YAML reads a bare `no` as false
            return "no"
        return value.lower() if isinstance(value, str) else value

    @field_validator("args", "kwargs", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any, info: Any) -> Any:
        return ([] if info.field_name == "args" else {}) if value is None else value

    @field_validator("kwargs")
    @classmethod
    def _ether_name_is_a_word(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        if "ether_name" in kwargs:
            check_word("ether_name", kwargs["ether_name"])
        return kwargs

    @property
    def name(self) -> str:
        """The instance's name: its key under ``instances:``, or ``kwargs.ether_name`` (the original's way)."""
        return self._name

    @property
    def pool(self) -> str:
        """A pool worker's pool (the instance named in the file); empty for a single instance."""
        return self._pool

    @property
    def worker(self) -> int:
        """A pool worker's index (0..workers-1): it handles the messages of that share."""
        return self._worker

    def pool_workers(self) -> list[EtherInstanceConfig]:
        """The pool's workers NAME@1..NAME@N, each a copy of this instance with one share."""
        workers = []
        for index in range(self.workers):
            worker = self.model_copy(deep=True)
            worker._name, worker._pool, worker._worker = f"{self.name}@{index + 1}", self.name, index
            workers.append(worker)
        return workers

    @property
    def constructor_kwargs(self) -> dict[str, Any]:
        """The keyword arguments the class gets (``ether_name`` is Ether's, not the class's)."""
        return {k: v for k, v in self.kwargs.items() if k != "ether_name"}


def _short_form_schemas(schema: dict[str, Any]) -> None:
    """The JSON Schema of the short forms that :meth:`EtherConfig._short_forms` accepts."""
    props = schema["properties"]
    props["session"] = {"anyOf": [{"type": "string", "description": "the session name"}, props["session"]]}
    props["broker"] = {"anyOf": [{"type": "string", "description": "the broker url"}, props["broker"]]}
    props["recorder"] = {"anyOf": [{"type": "boolean", "description": "enabled"}, props["recorder"]]}
    props["instances"]["propertyNames"] = {"pattern": r"^[^/+#$\s]+$"}  # InstanceName
    for key in ("registry", "instances", "streams"):
        props[key] = {"anyOf": [props[key], {"type": "null"}]}


class EtherConfig(Section):
    """A whole session file. ``session:``, ``broker:`` and ``recorder:`` also take a short form."""

    model_config = ConfigDict(
        extra="forbid", title="Ether session file", json_schema_extra=_short_form_schemas
    )

    session: EtherSessionConfig = Field(default_factory=EtherSessionConfig)
    broker: BrokerConfig | None = None
    registry: dict[str, EtherClassConfig] = {}
    instances: dict[InstanceName, EtherInstanceConfig] = {}
    recorder: RecorderConfig = Field(default_factory=RecorderConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    streams: dict[str, Literal["durable", "latest"]] = Field(
        {}, description="topic filter: durable (default, recorded, never lost) | latest (may drop samples)"
    )

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        """``session: NAME``, ``broker: URL``, ``recorder: false``; a section with nothing under it is absent."""
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if v is not None}
        shorts = {"session": (str, "name"), "broker": (str, "url"), "recorder": (bool, "enabled")}
        for key, (kind, field) in shorts.items():
            if isinstance(data.get(key), kind):
                data[key] = {field: data[key]}
        return data

    @model_validator(mode="after")
    def _name_instances(self) -> EtherConfig:
        for key, instance in self.instances.items():
            instance._name = instance.kwargs.get("ether_name", key)
        return self

    @classmethod
    def from_yaml(cls, path: str) -> EtherConfig:
        """Read a session file; mistakes raise ConfigError naming file, line and key."""
        return Located.read(path).validate(cls)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a session file, as committed in docs/schemas/config.schema.json."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema"} | EtherConfig.model_json_schema()
