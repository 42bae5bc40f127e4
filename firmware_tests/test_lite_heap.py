"""ether_lite's heap on MicroPython (boards/heap.py): ceilings, so that growth is a decision, not an accident.

The figures and where they go are in docs/devices.md ("Memory"). Each ceiling is today's figure with a
little room: the measurement is the same from run to run (the steady state: online, acknowledgements
in), but moves by a few hundred bytes with the interpreter's build.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from harness import ROOT

# bytes after import + connect: 19.4 KB (.py) / 19.3 KB (.mpy) on the 64-bit unix port, the aim is 20 KB
CEILING_64 = 20 * 1024
# on the 32-bit float32 build (the word size of ESP32 and RP2 boards): 13.7 / 13.6 KB, the aim is 16 KB
CEILING_32 = 14 * 1024 + 512


def micropython_32bit() -> str:
    """The 32-bit build, a measuring tool the project does not install: $ETHER_MICROPYTHON_32BIT, or
    shared/tools/micropython-unix-32bit beside the checkout (or beside its worktrees' folder); skip when
    it is not there or cannot run."""
    given = os.environ.get("ETHER_MICROPYTHON_32BIT")
    candidates = (
        [Path(given)]
        if given
        else [p / "shared" / "tools" / "micropython-unix-32bit" for p in ROOT.parents[:2]]
    )
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        pytest.skip(
            f"no 32-bit MicroPython at {' or '.join(map(str, candidates))} (set ETHER_MICROPYTHON_32BIT)"
        )
    try:
        subprocess.run([str(found), "-c", "pass"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as exc:  # e.g. no 32-bit C library (libc6-i386)
        pytest.skip(f"{found} does not run here: {exc}")
    return str(found)


@pytest.mark.parametrize("target", ["micropython", "micropython-mpy"])
def test_heap_after_import_and_connect_stays_under_the_ceiling(broker, start_board, target):
    board = start_board("heap.py", broker.address.host, str(broker.address.port))
    imported = int(board.wait_line("heap-import").split()[1])
    connected = int(board.wait_line("heap-connected").split()[1])
    assert imported < connected <= CEILING_64, (
        f"{target}: {imported} bytes after import, {connected} connected"
    )


@pytest.mark.parametrize("target", ["micropython", "micropython-mpy"])
def test_heap_on_a_32bit_board_stays_under_its_ceiling(broker, start_board, target, monkeypatch):
    monkeypatch.setenv("ETHER_MICROPYTHON", micropython_32bit())
    board = start_board("heap.py", broker.address.host, str(broker.address.port))
    imported = int(board.wait_line("heap-import").split()[1])
    connected = int(board.wait_line("heap-connected").split()[1])
    assert imported < connected <= CEILING_32, (
        f"{target}: {imported} bytes after import, {connected} connected"
    )
