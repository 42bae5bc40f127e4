"""The YAML session file: load it, check it against the classes it names, report errors by file and line.

Nothing is started from a config that fails here. See docs/configuration.md for the schema.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ether.contract.topics import DEFAULT_SESSION, TopicError
from ether.data.recorder.settings import RecorderSettings
from ether.data.recorder.settings import parse as recorder_settings
from ether.runtime.decorators import DECORATORS, apply_registry
from ether.runtime.schema import ArgumentError, MethodSchema
from ether.transport.broker import BrokerAddress, BrokerError

TOP_LEVEL_KEYS = ("session", "broker", "registry", "instances", "recorder", "streams")
BROKER_KEYS = ("url", "username", "password")
INSTANCE_KEYS = ("class_path", "args", "kwargs", "autorun", "restart", "max_restarts", "backoff")
RESTART_POLICIES = ("no", "on-failure", "always")


class ConfigError(ValueError):
    """A mistake in a session file, located by file, line and key."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None, key: str = "") -> None:
        self.path, self.line, self.key, self.reason = path, line, key, message
        where = f"{path or '<config>'}" + (f":{line}" if line else "")
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}")


@dataclass
class InstanceConfig:
    name: str
    class_path: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    autorun: bool = True
    restart: str = "on-failure"
    max_restarts: int = 5
    backoff: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Config:
    path: str | None
    text: str
    session: str = DEFAULT_SESSION
    broker_url: str | None = None
    registry: dict[str, dict[str, dict[str, dict[str, Any]]]] = field(default_factory=dict)
    instances: dict[str, InstanceConfig] = field(default_factory=dict)
    recorder: RecorderSettings = field(default_factory=RecorderSettings)

    @property
    def directory(self) -> str:
        return str(Path(self.path).resolve().parent) if self.path else os.getcwd()


class _Located:
    """Plain Python data from YAML plus the line of every key, addressed by key path."""

    def __init__(self, text: str, path: str | None) -> None:
        self.path = path
        self.lines: dict[tuple, int] = {}
        try:
            node = yaml.compose(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ConfigError(
                f"not valid YAML: {getattr(exc, 'problem', exc)}", path, mark.line + 1 if mark else None
            ) from None
        self.data = self._convert(node, ()) if node is not None else {}

    def _convert(self, node: yaml.Node, key_path: tuple) -> Any:
        self.lines[key_path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out = {}
            for key_node, value_node in node.value:
                key = yaml.safe_load(yaml.serialize(key_node))
                if key in out:
                    raise ConfigError(
                        "key appears twice",
                        self.path,
                        key_node.start_mark.line + 1,
                        _dotted(key_path + (key,)),
                    )
                out[key] = self._convert(value_node, key_path + (key,))
                self.lines[key_path + (key,)] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(item, key_path + (i,)) for i, item in enumerate(node.value)]
        return yaml.safe_load(yaml.serialize(node))

    def error(self, message: str, *key_path: Any) -> ConfigError:
        line = None
        for depth in range(len(key_path), -1, -1):  # the nearest enclosing key that has a line
            line = self.lines.get(tuple(key_path[:depth]))
            if line:
                break
        return ConfigError(message, self.path, line, _dotted(key_path))


def _dotted(key_path: tuple) -> str:
    return ".".join(str(k) for k in key_path)


def _unknown(key: str, allowed: tuple[str, ...]) -> str:
    return f"unknown key '{key}' ({_hint(key, allowed)})"


def _hint(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"


def import_class(class_path: str) -> type:
    """``package.module.Class`` -> the class. Raises ImportError/AttributeError with a readable message."""
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name:
        raise ImportError(f"'{class_path}' is not a dotted path like 'package.module.ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ImportError(f"cannot import module '{module_name}' ({exc})") from exc
    try:
        cls = getattr(module, class_name)
    except AttributeError:
        raise ImportError(f"module '{module_name}' has no class '{class_name}'") from None
    if not inspect.isclass(cls):
        raise ImportError(f"'{class_path}' is a {type(cls).__name__}, not a class")
    return cls


def add_import_paths(directory: str) -> None:
    """Make the config's folder and the working directory importable, as a script would see them."""
    for p in (os.getcwd(), directory):
        if p not in sys.path:
            sys.path.insert(0, p)


def load(source: str | os.PathLike | dict) -> Config:
    """Read and check a session file (or an already-parsed dict). Raises ConfigError."""
    if isinstance(source, dict):
        path, text = None, yaml.safe_dump(source, sort_keys=False)
    else:
        path = str(source)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the file ({exc.strerror})", path) from None
    doc = _Located(text, path)
    config = Config(path=path, text=text)
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error("the file must be a mapping with an 'instances:' section")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise doc.error(_unknown(str(key), TOP_LEVEL_KEYS), key)

    add_import_paths(config.directory)
    config.session = _session_name(doc, data.get("session", DEFAULT_SESSION))
    config.broker_url = _broker_url(doc, data.get("broker"))
    config.registry = _registry(doc, data.get("registry") or {})
    for class_path, methods in config.registry.items():
        try:
            apply_registry(import_class(class_path), methods)
        except ImportError as exc:
            raise doc.error(str(exc), "registry", class_path) from None
    config.recorder = recorder_settings(doc, data, config.directory)
    for name, raw in (_mapping(doc, data.get("instances") or {}, "instances")).items():
        config.instances[name] = _instance(doc, name, raw)
    return config


def _mapping(doc: _Located, value: Any, *key_path: Any) -> dict:
    if not isinstance(value, dict):
        raise doc.error(f"expected a mapping, got {type(value).__name__}", *key_path)
    return value


def _session_name(doc: _Located, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "/+#$ "):
        raise doc.error("the session name must be a word without '/', '+', '#', '$' or spaces", "session")
    return value


def _broker_url(doc: _Located, value: Any) -> str | None:
    """``broker: mqtt://host:port`` or ``broker: {url: ..., username: ..., password: ...}``."""
    if value is None:
        return None
    broker = {"url": value} if isinstance(value, str) else _mapping(doc, value, "broker")
    for key in broker:
        if key not in BROKER_KEYS:
            raise doc.error(_unknown(str(key), BROKER_KEYS), "broker", key)
    if "url" not in broker:
        raise doc.error("needs a 'url:' such as mqtt://127.0.0.1:1883", "broker")
    try:
        address = BrokerAddress.parse(str(broker["url"]))
    except BrokerError as exc:
        raise doc.error(str(exc), *(("broker", "url") if isinstance(value, dict) else ("broker",))) from None
    if "username" in broker:
        address = replace(address, username=str(broker["username"]), password=broker.get("password"))
    return address.login_url


def _registry(doc: _Located, registry: Any) -> dict:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for class_path, entry in _mapping(doc, registry, "registry").items():
        entry = _mapping(doc, entry or {}, "registry", class_path)
        for key in entry:
            if key != "methods":
                raise doc.error(_unknown(str(key), ("methods",)), "registry", class_path, key)
        try:
            cls = import_class(class_path)
        except ImportError as exc:
            raise doc.error(str(exc), "registry", class_path) from None
        methods = _mapping(doc, entry.get("methods") or {}, "registry", class_path, "methods")
        out[class_path] = {}
        for method, decorators in methods.items():
            where = ("registry", class_path, "methods", method)
            if not callable(getattr(cls, method, None)):
                known = [n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")]
                raise doc.error(
                    f"{cls.__name__} has no method '{method}' ({_hint(method, tuple(known))})", *where
                )
            decorators = _mapping(doc, decorators or {}, *where)
            for name, options in decorators.items():
                if name not in DECORATORS:
                    raise doc.error(_unknown(str(name), tuple(DECORATORS)), *where, name)
                options = _mapping(doc, options or {}, *where, name)
                try:
                    DECORATORS[name](**options)
                except (TypeError, ValueError, TopicError) as exc:
                    raise doc.error(str(exc), *where, name) from None
                decorators[name] = options
            out[class_path][method] = decorators
    return out


def _instance(doc: _Located, name: Any, raw: Any) -> InstanceConfig:
    where = ("instances", name)
    if not isinstance(name, str) or not name or any(c in name for c in "/+#$ "):
        raise doc.error("an instance name must be a word without '/', '+', '#', '$' or spaces", *where)
    raw = _mapping(doc, raw or {}, *where)
    for key in raw:
        if key not in INSTANCE_KEYS:
            raise doc.error(_unknown(str(key), INSTANCE_KEYS), *where, key)
    if "class_path" not in raw:
        raise doc.error("missing 'class_path:' (e.g. mypackage.sensors.Thermometer)", *where)
    instance = InstanceConfig(
        name=name,
        class_path=str(raw["class_path"]),
        args=raw.get("args") or [],
        kwargs=raw.get("kwargs") or {},
        autorun=raw.get("autorun", True),
        restart=str(raw.get("restart", "on-failure")).lower(),
        max_restarts=raw.get("max_restarts", 5),
        backoff=raw.get("backoff", 0.5),
    )
    if raw.get("restart") is False:  # YAML reads a bare `no` as false
        instance.restart = "no"
    if instance.restart not in RESTART_POLICIES:
        raise doc.error(f"must be one of {', '.join(RESTART_POLICIES)}", *where, "restart")
    if not isinstance(instance.autorun, bool):
        raise doc.error("must be true or false", *where, "autorun")
    if not isinstance(instance.max_restarts, int) or instance.max_restarts < 0:
        raise doc.error("must be a whole number >= 0", *where, "max_restarts")
    if not isinstance(instance.backoff, (int, float)) or instance.backoff < 0:
        raise doc.error("must be a number of seconds >= 0", *where, "backoff")
    if not isinstance(instance.args, list):
        raise doc.error("must be a list", *where, "args")
    _mapping(doc, instance.kwargs, *where, "kwargs")
    try:
        cls = import_class(instance.class_path)
    except ImportError as exc:
        raise doc.error(str(exc), *where, "class_path") from None
    except Exception as exc:  # the user's module raised while importing
        raise doc.error(f"importing it raised {type(exc).__name__}: {exc}", *where, "class_path") from None
    check_arguments(doc, cls, instance)
    return instance


def check_arguments(doc: _Located, cls: type, instance: InstanceConfig) -> None:
    """The args/kwargs must fit the class's constructor, by name and by type hint."""
    where = ("instances", instance.name)
    try:
        signature = inspect.signature(cls)
        bound = signature.bind(*instance.args, **instance.kwargs)
    except (TypeError, ValueError) as exc:
        unknown = next((k for k in instance.kwargs if k not in _parameter_names(cls)), None)
        key = (*where, "kwargs", unknown) if unknown else (*where, "kwargs")
        if not unknown and instance.args and "positional" in str(exc):
            key = (*where, "args")
        raise doc.error(f"{cls.__name__}{_signature_text(cls)}: {exc}", *key) from None
    if cls.__init__ is object.__init__:
        return
    try:
        MethodSchema(cls.__init__).arguments(
            {k: v for k, v in bound.arguments.items() if signature.parameters[k].kind not in _VARIADIC}
        )
    except ArgumentError as exc:
        fields = set(re.findall(r"field '([^'.]+)", str(exc)))
        positional = set(list(bound.arguments)[: len(instance.args)])
        if len(fields) == 1 and fields <= set(instance.kwargs):
            key = (*where, "kwargs", *fields)
        else:
            key = (*where, "args" if fields and fields <= positional else "kwargs")
        raise doc.error(f"{cls.__name__}{_signature_text(cls)}: {exc}", *key) from None


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _parameter_names(cls: type) -> set[str]:
    try:
        return set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return set()


def _signature_text(cls: type) -> str:
    try:
        return str(inspect.signature(cls))
    except (TypeError, ValueError):
        return "(...)"
