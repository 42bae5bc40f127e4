"""Classes the logging tests run as instances (imported by the instance processes)."""

from __future__ import annotations

import logging

from ether import ether_sub

log = logging.getLogger("log_classes")


class Chatty:
    """Logs what it is told to: ``lines`` lines at ``level``, and one with a traceback if ``fail``;
    prints ``say``."""

    @ether_sub(topic="chat")
    def chat(self, lines: int = 1, level: str = "INFO", fail: bool = False, say: str = "") -> None:
        if say:
            print(say, "(printed)")
        for i in range(lines):
            log.log(logging.getLevelName(level), "line %d of %d", i + 1, lines)
        if fail:
            try:
                {}["missing"]
            except KeyError:
                log.exception("looked for something missing")
