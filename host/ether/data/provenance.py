"""What ran: code identity (git commit, dirty flag, source hashes), versions, host and user.

Written into the session manifest at the start of a run, so a result can be traced to the exact code.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
import inspect
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from ether.config import Config, import_class


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def git_identity(directory: str) -> dict[str, Any]:
    """The commit and dirty flag of the git work tree holding ``directory`` (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "root": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status), "root": git("rev-parse", "--show-toplevel")}


def class_identity(class_path: str) -> dict[str, Any]:
    """The source file of a class and its sha256 (what exactly ran as this instance)."""
    try:
        cls = import_class(class_path)
        path = inspect.getsourcefile(cls)
        return {"class_path": class_path, "file": path, "sha256": sha256_of(path) if path else None}
    except Exception as exc:  # the manifest must never stop a session
        return {
            "class_path": class_path,
            "file": None,
            "sha256": None,
            "error": f"{type(exc).__name__}: {exc}",
        }


def packages() -> dict[str, str]:
    """Every installed distribution's version, by name. Only the head of each metadata file is read:
    parsing them whole (``dist.metadata``) took half a second of every session's start."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        head = _head(dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "")
        if head.get("Name"):
            found[head["Name"]] = head.get("Version", "")
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def _head(metadata: str) -> dict[str, str]:
    """The first Name and Version headers of a core metadata file (its headers end at a blank line)."""
    head: dict[str, str] = {}
    for line in metadata.splitlines():
        if not line.strip():
            break
        key, colon, value = line.partition(":")
        if colon and key in ("Name", "Version"):
            head.setdefault(key, value.strip())
    return head


def resolved_config(config: Config) -> dict[str, Any]:
    return {
        "session": config.session,
        "broker": config.broker_url,
        "registry": config.registry,
        "instances": {n: i.model_dump() for n, i in config.instances.items()},
        "recorder": {k: v for k, v in config.recorder.to_dict().items() if k != "run_dir"},
    }


def manifest(config: Config) -> dict[str, Any]:
    """Everything known at the start of a run about what runs and where."""
    classes = sorted(
        {i.class_path for i in config.instances.values()}
        | set(config.registry)
        | {c for i in config.instances.values() for c in _code_run_by(i)}
    )
    return {
        "config_path": str(Path(config.path).resolve()) if config.path else None,
        "config_text": config.text,
        "config_resolved": resolved_config(config),
        "git": git_identity(config.directory),
        "code": {c: class_identity(c) for c in classes},
        "python": sys.version,
        "executable": sys.executable,
        "platform": platform.platform(),
        "packages": packages(),
        "host": socket.gethostname(),
        "user": _user(),
        "cwd": os.getcwd(),
        "argv": sys.argv,
    }


def _code_run_by(instance) -> list[str]:
    """Classes an instance runs besides its own (``code_of`` hook, e.g. SimulatedBoard's board)."""
    try:
        cls = import_class(instance.class_path)
    except ImportError:
        return []
    code_of = getattr(cls, "code_of", None)
    return list(code_of(*instance.args, **instance.kwargs)) if code_of else []


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"
