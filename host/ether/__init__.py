"""Ether: wire a lab together over MQTT. Decorate methods, list instances in YAML, ``ether.tap(config)``.

Both ``import ether`` and ``from ether import ether`` give this module, so ``ether.tap(...)`` works
either way, as in the original Ether.
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ether.boards.devices import Devices
    from ether.config import EtherConfig
    from ether.runtime.session import Session

__version__ = "0.1.0"

# The package face is lazy: ``import ether.contract.topics`` must not load pydantic, paho and yaml.
# These names are imported on first use (module ``__getattr__``), then kept here like any other.
_LAZY = {
    "Array": "ether.runtime.schema",
    "block": "ether.contract.blocks",
    "ConfigError": "ether.config",
    "EtherConfig": "ether.config",  # ``from ether import EtherConfig, get_ether_logger``, as in the original
    "get_ether_logger": "ether.utils",
    "InstanceStartError": "ether.runtime.supervisor",
    **dict.fromkeys(("run", "trial", "mark"), "ether.experiments"),  # docs/experiments.md
    "live": "ether.notebook",  # a live view of a topic in a notebook cell
    **dict.fromkeys(
        (
            "ether_cleanup",
            "ether_get",
            "ether_init",
            "ether_pub",
            "ether_save",
            "ether_save_all",
            "ether_shutdown",
            "ether_start",
            "ether_sub",
        ),
        "ether.runtime.decorators",
    ),
    **dict.fromkeys(
        ("InvalidArguments", "NotFound", "ServiceError", "ServiceFailed", "ServiceTimeout", "UnknownService"),
        "ether.runtime.services",
    ),
}

_session: Session | None = None  # the Session this process tapped, if any
_tapped_with: tuple | None = None  # a copy of what tap() got for it: tapping it again is a no-op
# what ``ether.session_info`` shows of it: session, broker, supervisor, host, pid, started, run_dir
session_info: dict[str, Any] | None = None
_first_use = threading.RLock()  # re-entered when a lazy import does `from ether import exits`


def __getattr__(name: str) -> Any:
    with _first_use:
        if name not in globals():
            globals()[name] = _load(name)
    return globals()[name]


def _load(name: str) -> Any:
    if name == "devices":  # ``ether.devices["thermo1"].set_heater(on=True)``: one object per process
        from ether.boards.devices import Devices

        value: Any = Devices()
    elif name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'ether' has no attribute {name!r}")
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def tap(
    config: str | os.PathLike | dict | EtherConfig | None = None,
    restart: bool = False,
    allow_host: bool = True,
    ether_run: bool = False,
    *,
    broker: str | None = None,
    listen: str = "127.0.0.1",
    timeout: float = 30.0,
) -> None:
    """Start (or join) a session from a YAML file, a dict or an EtherConfig; returns when every
    autorun instance is ready.

    Tapping again with the same arguments changes nothing (a re-run notebook cell); with others it
    raises. ``restart``: shut down this process's session first; ``allow_host=False``: never start a broker,
    only join one (``broker`` or the config's ``broker:``); ``ether_run`` is the original Ether's
    internal flag and changes nothing. ``broker``: join this broker instead of starting one;
    ``listen``: where the embedded broker listens (any address but loopback requires logins, see
    docs/operations.md)."""
    global _session, _tapped_with, session_info
    from ether.logs import setup_logging
    from ether.runtime.session import new_session

    given = (config, allow_host, broker, listen)
    if _session is not None and restart:
        shutdown()
    if _session is not None and given == _tapped_with:
        return
    if _session is not None:
        raise RuntimeError(
            "this process already tapped a session with another config; call ether.shutdown() first "
            "(or tap(..., restart=True))"
        )
    setup_logging()
    session = new_session(
        config if config is not None else {"instances": {}}, broker_url=broker, listen=listen
    )
    if session.embedded and not allow_host:
        raise ValueError(
            "allow_host=False joins a running broker: give broker='mqtt://HOST:PORT' or 'broker:'"
        )
    session.open(timeout)
    _session, _tapped_with = session, copy.deepcopy(given)
    session_info = session.info()
    atexit.register(_shutdown_at_exit)
    threading.Thread(target=_end_on_request, args=(session,), name="ether-end-request", daemon=True).start()


def _shutdown_at_exit() -> None:
    """A script that ends without ``ether.shutdown()`` still stops its instances and saves their data."""
    if _session is not None:
        logging.getLogger("ether").info("The script ended without ether.shutdown(): shutting down")
        shutdown()


def _end_on_request(session: Session) -> None:
    """``ether shutdown`` from a terminal ends a tapped session as ``ether.shutdown()`` would."""
    session.end_requested.wait()
    if _session is session:
        shutdown()


def _current() -> Session:
    if _session is None:
        raise RuntimeError("no Ether session in this process: call ether.tap(config) first")
    return _session


def start(timeout: float = 30.0) -> None:
    """Call every ``@ether_start`` method of the running instances and begin periodic publishers."""
    _current().start(timeout)


def pub(data: Any, topic: str) -> None:
    """Publish ``data`` (a dict or any JSON value) to ``topic``, from a script or from inside an instance."""
    from ether.runtime import context

    context.current().publish(topic, data)


def request(
    service: type | str,
    method: str | None = None,
    params: dict | None = None,
    request_type: str = "get",
    *,
    instance: str | None = None,
    timeout: float = 5.0,
) -> Any:
    """Call the ``@ether_get``/``@ether_save`` service ``Class.method``; return its result.

    Raises a ServiceError subclass: UnknownService (at once), InvalidArguments, NotFound, ServiceFailed,
    ServiceTimeout. ``None`` is a legitimate result. ``instance`` names the instance to ask; without it
    the instances of the class share the load. ``request_type="save"`` (the original Ether's way) answers
    as :func:`save` does. ``timeout`` is in seconds.
    """
    if request_type == "save":
        return save(service, method, params, instance=instance, timeout=timeout)
    if request_type != "get":
        raise ValueError(f"request_type must be 'get' or 'save', got {request_type!r}")
    from ether.runtime import context
    from ether.runtime.services import service_name

    return context.current().services.call(service_name(service, method), params, instance, timeout)


get = request


def save(
    service: type | str,
    method: str | None = None,
    params: dict | None = None,
    *,
    instance: str | None = None,
    timeout: float = 5.0,
) -> dict:
    """Like :func:`request`, but never raises: ``{"status": "success", "result": ...}`` or
    ``{"status": "error", "error": "...", "kind": "..."}`` (the original Ether's envelope)."""
    from ether.runtime import context
    from ether.runtime.services import service_name

    return context.current().services.save(service_name(service, method), params, instance, timeout)


def launch_instances(instances: dict[str, dict[str, Any]], timeout: float = 30.0) -> list[str]:
    """Start more instances (the ``instances:`` YAML schema) in the running session."""
    return _current().launch(instances, timeout)


def get_active_instances() -> dict[str, dict[str, Any]]:
    """Every live instance of the session, by name, with its status (state, pid, host, topics, restarts)."""
    return _current().active_instances()


def get_active_devices() -> dict[str, dict[str, Any]]:
    """Every online ``ether_lite`` board of the session, by name: state, boot, last seen, clock offset,
    firmware and methods (see docs/devices.md)."""
    devices: Devices = __getattr__("devices")
    return devices.active()


def pause(*instances: str) -> None:
    """Hold data delivery to the named instances (default: every instance of the session)."""
    _current().pause(True, list(instances) or None)


def resume(*instances: str) -> None:
    """Deliver held and new messages again."""
    _current().pause(False, list(instances) or None)


def save_all(timeout: float = 30.0) -> None:
    """Call every ``@ether_save_all`` method of the running instances now (shutdown does it too)."""
    _current().step("save_all", timeout)


def cleanup(timeout: float = 30.0) -> None:
    """Call every ``@ether_cleanup`` method of the running instances now (shutdown does it too)."""
    _current().step("cleanup", timeout)


def shutdown(timeout: float = 10.0) -> None:
    """save_all -> cleanup -> exit for the instances this process started, then its broker, if it
    started one. A process that joined someone else's session leaves their instances running."""
    global _session, session_info
    if _session is None:
        return
    session, _session, session_info = _session, None, None
    atexit.unregister(_shutdown_at_exit)
    session.close(timeout)
    session.end_requested.set()
    logging.getLogger("ether").info("Ether session shut down")


def open_session(path: str | os.PathLike = "last"):
    """A recorded session (run folder, run id or ``last``): ``session["topic"]`` is a pandas DataFrame."""
    from ether.data.recorded import open_session as _open

    return _open(path)


ether = sys.modules[__name__]

__all__ = [
    *_LAZY,
    "devices",
    "ether",
    "get",
    "request",
    "save",
    "get_active_devices",
    "get_active_instances",
    "cleanup",
    "save_all",
    "session_info",
    "launch_instances",
    "open_session",
    "pause",
    "resume",
    "pub",
    "shutdown",
    "start",
    "tap",
]
