"""Worker pools (``workers: N``): which worker of a pool handles a message (docs/configuration.md#pools).

Every worker receives the pool's whole input and handles only its share: the message's (src, boot)
and sequence number decide, so each numbered message has exactly one worker on every broker, a
restarted worker catches up on its own share only, and consecutive messages of one source go to the
workers in turn. A message without a sequence number (a foreign client's) is shared by its bytes.
The embedded broker (amqtt 0.12.1) has no MQTT shared subscriptions, so the pool does not use them.
"""

from __future__ import annotations

import zlib

from ether.contract.wire import Meta
from ether.data.processed import numbered


def share_of(meta: Meta | None, raw: bytes, workers: int) -> int:
    """The index (0..workers-1) of the worker whose share this message is; 0 outside a pool."""
    if workers <= 1:
        return 0
    if numbered(meta):
        return (zlib.crc32(f"{meta.src}\0{meta.boot}".encode()) + meta.seq) % workers
    return zlib.crc32(raw) % workers
