"""The original Ether's ``ether.utils.get_ether_logger``, kept for scripts and classes written for it."""

from __future__ import annotations

import logging


def get_ether_logger(
    process_name: str,
    run_id: str | None = None,
    instance_name: str | None = None,
    console_level: int = logging.INFO,
    file_level: int = logging.DEBUG,
) -> logging.Logger:
    """A logger named ``ether.<process_name>[.<instance_name>]`` on Ether's terminal log, at ``console_level``.

    Unlike the original it writes no files under ./logs: what a session did is in its session store
    (docs/data.md). ``run_id`` and ``file_level`` are accepted for the original's callers."""
    from ether.logs import setup_logging

    setup_logging()
    logger = logging.getLogger(".".join(["ether", process_name, *([instance_name] if instance_name else [])]))
    logger.setLevel(console_level)
    return logger
