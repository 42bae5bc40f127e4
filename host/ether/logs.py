"""Logging setup, the same for every Ether process (script, session, instance, recorder, broker, bridge)."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s.%(msecs)03d - Ether:%(process)d - %(levelname)s - %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def setup_logging(level: int = logging.INFO, *, whole_process: bool = False) -> None:
    """Log lines on stderr, once per process. In a user's script only Ether's own loggers are set up;
    a process Ether owns (``whole_process``: instance, recorder, broker) shows its libraries' too."""
    logger = logging.getLogger() if whole_process else logging.getLogger("ether")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = whole_process
