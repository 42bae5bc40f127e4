"""Load a session file and check it against the classes it names; nothing starts from a config that fails.

The file's shape is checked by the models (:mod:`ether.config.models`); here: imports, registry methods
and decorators, constructor arguments. Mistakes are ConfigErrors naming file, line and key.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ether.config.located import Located, hint
from ether.config.models import EtherConfig, EtherInstanceConfig
from ether.contract.topics import DEFAULT_SESSION, TopicError
from ether.contract.wire import DEFAULT_MAX_PAYLOAD
from ether.data.recorder.settings import RecorderSettings
from ether.runtime.classes import add_import_paths, import_class
from ether.runtime.decorators import apply_registry
from ether.runtime.schema import ArgumentError, MethodSchema
from ether.transport.broker import MANAGED_MOSQUITTO, TLS_OPTIONS

log = logging.getLogger("ether")


@dataclass
class Config:
    """A checked session file, resolved for running: what the supervisor and recorder work from."""

    path: str | None
    text: str
    session: str = DEFAULT_SESSION
    broker_url: str | None = None
    registry: dict[str, dict[str, dict[str, dict[str, Any]]]] = field(default_factory=dict)
    instances: dict[str, EtherInstanceConfig] = field(default_factory=dict)
    recorder: RecorderSettings = field(default_factory=RecorderSettings)
    max_payload: int = DEFAULT_MAX_PAYLOAD  # bytes of one message (limits: max_payload)
    pools: dict[str, list[str]] = field(default_factory=dict)  # pool name -> its workers' names

    @property
    def directory(self) -> str:
        return str(Path(self.path).resolve().parent) if self.path else os.getcwd()


def load(source: str | os.PathLike | dict | EtherConfig) -> Config:
    """Read and check a session file, a dict of the same shape or an EtherConfig. Raises ConfigError."""
    if isinstance(source, EtherConfig):
        source = source.model_dump(mode="json", exclude_defaults=True)
    if isinstance(source, dict):
        doc = Located(yaml.safe_dump(source, sort_keys=False), None)
    else:
        doc = Located.read(str(source))
    if not isinstance(doc.data, dict):
        raise doc.error("the file must be a mapping with an 'instances:' section")
    model = doc.validate(EtherConfig)
    config = Config(path=doc.path, text=doc.text, session=model.session.name)
    config.broker_url = _broker_url(doc, model, config.directory)
    config.max_payload = int(model.limits.max_payload)
    add_import_paths(config.directory)
    for class_path, entry in model.registry.items():
        config.registry[class_path] = _decorate(doc, class_path, entry.methods)
    config.recorder = _recorder_settings(model, config.directory)
    for key, instance in model.instances.items():
        _check_class(doc, key, instance)
        workers = instance.pool_workers() if instance.workers > 1 else [instance]
        for one in workers:
            if one.name in config.instances:
                raise doc.error(f"two instances are named '{one.name}'", "instances", key)
            config.instances[one.name] = one
        if instance.workers > 1:
            config.pools[instance.name] = [w.name for w in workers]
    if doc.path and not config.instances:
        log.warning(
            "%s %s: the session will have only its broker and recorder (boards, scripts and other "
            "supervisors can still join); list instances under 'instances:' (docs/configuration.md)",
            doc.path,
            "is empty" if not doc.data else "lists no instances",
        )
    return config


def _broker_url(doc: Located, model: EtherConfig, directory: str) -> str | None:
    """``broker:`` as the url the session's processes get; a TLS file that is not there is a mistake."""
    broker = model.broker
    if broker is None or broker.url == MANAGED_MOSQUITTO:
        return broker.url if broker else None
    address = broker.address(directory)
    for what in TLS_OPTIONS:
        path = getattr(address, what)
        if path and not os.path.isfile(path):
            where = ("broker", what) if getattr(broker, what) else ("broker", "url")
            raise doc.error(f"the TLS {what} file {path} does not exist", *where)
    return address.login_url


def _decorate(doc: Located, class_path: str, methods: dict) -> dict[str, dict[str, dict[str, Any]]]:
    """Apply a ``registry:`` entry to its class, one decorator at a time so a refusal names it."""
    try:
        cls = import_class(class_path)
    except ImportError as exc:
        raise doc.error(str(exc), "registry", class_path) from None
    out = {}
    for method, decorators in methods.items():
        where = ("registry", class_path, "methods", method)
        if not callable(getattr(cls, method, None)):
            known = tuple(n for n, v in vars(cls).items() if callable(v) and not n.startswith("_"))
            raise doc.error(f"{cls.__name__} has no method '{method}' ({hint(method, known)})", *where)
        out[method] = decorators.decorators()
        for name, options in out[method].items():
            try:
                apply_registry(cls, {method: {name: options}})
            except (TypeError, ValueError, TopicError) as exc:  # e.g. contradicts a decorator in the code
                raise doc.error(str(exc), *where, name) from None
    return out


def _recorder_settings(model: EtherConfig, directory: str) -> RecorderSettings:
    recorder = model.recorder
    path = ""
    if recorder.path is not None:
        given = Path(recorder.path).expanduser()
        path = str(given if given.is_absolute() else Path(directory) / given)
    return RecorderSettings(recorder.enabled, path, recorder.drain_timeout, dict(model.streams))


def _check_class(doc: Located, key: str, instance: EtherInstanceConfig) -> None:
    where = ("instances", key)
    try:
        cls = import_class(instance.class_path)
    except ImportError as exc:
        raise doc.error(str(exc), *where, "class_path") from None
    except Exception as exc:  # the user's module raised while importing
        raise doc.error(f"importing it raised {type(exc).__name__}: {exc}", *where, "class_path") from None
    check_arguments(doc, key, cls, instance)
    for i, entry in enumerate(instance.schedule):  # docs/experiments.md#schedules
        if not callable(getattr(cls, entry.method, None)):
            known = tuple(m for m in dir(cls) if not m.startswith("_") and callable(getattr(cls, m)))
            message = f"{cls.__name__} has no method '{entry.method}' ({hint(entry.method, known)})"
            raise doc.error(message, *where, "schedule", i, "method")


def check_arguments(doc: Located, key: str, cls: type, instance: EtherInstanceConfig) -> None:
    """The args/kwargs must fit the class's constructor, by name and by type hint.

    A class whose signature Python cannot read (a compiled driver, ``collections.OrderedDict``) is
    checked by the call itself, when its instance starts."""
    where = ("instances", key)
    kwargs = instance.constructor_kwargs
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    try:
        bound = signature.bind(*instance.args, **kwargs)
    except TypeError as exc:
        unknown = next((k for k in kwargs if k not in signature.parameters), None)
        at = (*where, "kwargs", unknown) if unknown else (*where, "kwargs")
        if not unknown and instance.args and "positional" in str(exc):
            at = (*where, "args")
        raise doc.error(f"{cls.__name__}{signature}: {exc}", *at) from None
    init = cls.__init__  # type: ignore[misc]  # the class's own constructor, not an instance's
    if init is object.__init__:
        return
    try:
        MethodSchema(init).arguments(
            {k: v for k, v in bound.arguments.items() if signature.parameters[k].kind not in _VARIADIC}
        )
    except ArgumentError as exc:
        fields = set(re.findall(r"field '([^'.]+)", str(exc)))
        positional = set(list(bound.arguments)[: len(instance.args)])
        if len(fields) == 1 and fields <= set(kwargs):
            at = (*where, "kwargs", *fields)
        else:
            at = (*where, "args" if fields and fields <= positional else "kwargs")
        raise doc.error(f"{cls.__name__}{signature}: {exc}", *at) from None


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
