"""What an instance process costs to start and to keep: readiness time, resident memory, modules.

ready      ``Session.open()`` of k ``Probe`` instances on a running broker (spawn to all initialised)
footprint  an idle instance's RSS and the modules it imported beyond paho and pydantic
import     modules ``import ether`` loads, beyond a bare interpreter
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline import ether_session

BASELINE = (
    "import sys, paho.mqtt.client, pydantic; pydantic.create_model('M', a=(int, ...))(a=1);"
    " print(json.dumps(sorted(sys.modules)))"
)


def modules_of(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import json; {code}"], capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


def ready_time(url: str, k: int) -> tuple[float, list[dict]]:
    """Seconds until k instances are ready and initialised, and each one's footprint."""
    instances = {f"probe{j}": {"class_path": "bench_classes.Probe"} for j in range(k)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        session = ether_session(url, instances, True, Path(tmp))
        elapsed = time.perf_counter() - t0
        try:
            prints = [session.services.call("Probe.footprint", {}, name, 10) for name in instances]
        finally:
            session.close()
    return elapsed, prints


def measure(url: str) -> dict:
    one, prints = ready_time(url, 1)
    many, _ = ready_time(url, 32)
    bare = modules_of("import sys; print(json.dumps(sorted(sys.modules)))")
    paho_pydantic = modules_of(BASELINE)
    imported = modules_of("import sys, ether; print(json.dumps(sorted(sys.modules)))")
    return {
        "ready_1_s": one,
        "ready_32_s": many,
        "instance_rss_mb": prints[0]["rss_mb"],
        "instance_modules_beyond_paho_pydantic": len(set(prints[0]["modules"]) - paho_pydantic),
        "import_ether_modules": len(imported - bare),
    }
