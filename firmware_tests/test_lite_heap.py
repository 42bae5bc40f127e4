"""ether_lite's heap on MicroPython (boards/heap.py): a ceiling, so that growth is a decision, not an accident.

The figures and where they go are in docs/devices.md ("Memory"); the aim is 16 KB, the ceiling is
today's figure with room for the collector's noise (a few hundred bytes from one build to the next).
"""

from __future__ import annotations

import pytest

# bytes after import + connect, on the 64-bit unix port: 26.6 KB since poll() stopped blocking (connect
# in stages, queued sends) and time is written from integers; the aim (20 KB here, 16 KB on a 32-bit
# board, where it is 18.1-19.0 KB) is not reached yet
CEILING = 27 * 1024


@pytest.mark.parametrize("target", ["micropython", "micropython-mpy"])
def test_heap_after_import_and_connect_stays_under_the_ceiling(broker, start_board, target):
    board = start_board("heap.py", broker.address.host, str(broker.address.port))
    imported = int(board.wait_line("heap-import").split()[1])
    connected = int(board.wait_line("heap-connected").split()[1])
    assert imported < connected <= CEILING, f"{target}: {imported} bytes after import, {connected} connected"
