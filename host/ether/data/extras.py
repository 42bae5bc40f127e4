"""The optional packages an export format needs: imported on use, or a clear error naming the pip command."""

from __future__ import annotations

import importlib
from typing import Any


def need(module: str, fmt: str) -> Any:
    """``module``, or ImportError naming the extra of ``--format fmt`` (an extra of the same name)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"--format {fmt} needs {module}: pip install 'ether-lab[{fmt}]' (or pip install {module})"
        ) from None
