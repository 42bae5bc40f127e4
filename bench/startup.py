"""What an instance process costs to start and to keep: readiness time, memory, modules.

ready      ``Session.open()`` of k ``Probe`` instances on a running broker, the recorder included
           (spawn to all initialised; on Linux the fork server's own start is in it)
launch     ``Session.launch()`` of one more instance into the open session: one instance process
           from its start to ready and initialised
footprint  an idle instance's RSS, PSS and USS (bench_classes.Probe) and the modules it imported
           beyond paho and pydantic; the PSS of the 32 instances summed (their memory together)
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
PROBE = {"class_path": "bench_classes.Probe"}


def modules_of(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import json; {code}"], capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


def ready_time(url: str, k: int) -> tuple[float, float, dict, float]:
    """Seconds until k instances are ready and initialised, then until one more is; the first's
    footprint; the k instances' PSS summed (MB)."""
    instances = {f"probe{j}": PROBE for j in range(k)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        session = ether_session(url, instances, True, Path(tmp))
        opened = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            session.launch({"late": PROBE}, timeout=120)
            launched = time.perf_counter() - t0
            footprints = [session.services.call("Probe.footprint", {}, name, 10) for name in instances]
        finally:
            session.close()
    return opened, launched, footprints[0], sum(f["pss_mb"] for f in footprints)


def measure(url: str) -> dict:
    one, launch, footprint, _ = ready_time(url, 1)
    many, _, _, pss_32 = ready_time(url, 32)
    bare = modules_of("import sys; print(json.dumps(sorted(sys.modules)))")
    paho_pydantic = modules_of(BASELINE)
    imported = modules_of("import sys, ether; print(json.dumps(sorted(sys.modules)))")
    return {
        "ready_1_s": one,
        "ready_32_s": many,
        "launch_1_s": launch,
        "instance_rss_mb": footprint["rss_mb"],
        "instance_pss_mb": footprint["pss_mb"],
        "instance_uss_mb": footprint["uss_mb"],
        "instances_32_pss_mb": pss_32,
        "instance_modules_beyond_paho_pydantic": len(set(footprint["modules"]) - paho_pydantic),
        "import_ether_modules": len(imported - bare),
    }
