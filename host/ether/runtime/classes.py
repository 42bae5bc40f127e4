"""Importing the user's classes by dotted path, from the session file's folder as a script would."""

from __future__ import annotations

import importlib
import inspect
import os
import sys


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
