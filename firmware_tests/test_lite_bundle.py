"""`circup install ether_lite` from the bundle `ether lite bundle` builds, with the real circup, offline.

circup keeps downloaded bundles under its data folder (XDG_DATA_HOME/circup). The test seeds that
folder the way a download would: our bundle, and a small stand-in for the Adafruit bundle holding
adafruit_minimqtt and its own dependencies (taken from the pip-installed packages), then installs onto
a fake CIRCUITPY folder.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from harness import ADAFRUIT_MODULES, copy_adafruit_modules

from ether.boards.lite_bundle import BUNDLE_ID, BUNDLE_REPO, library_version

ADAFRUIT_REPO = "adafruit/Adafruit_CircuitPython_Bundle"
ADAFRUIT_TAG = "20250101"


def _circup() -> list[str]:
    """circup's console script (circup has no `python -m circup`)."""
    found = shutil.which("circup")
    if not found:
        pytest.skip("circup is not installed (pip install circup)")
    return [found]


def _seed_adafruit_bundle(data_dir: Path) -> None:
    root = (
        data_dir
        / "adafruit"
        / "adafruit-circuitpython-bundle-py"
        / f"adafruit-circuitpython-bundle-py-{ADAFRUIT_TAG}"
    )
    copy_adafruit_modules(root / "lib")
    for module, dist in ADAFRUIT_MODULES.items():
        requirements = root / "requirements" / module / "requirements.txt"
        requirements.parent.mkdir(parents=True, exist_ok=True)
        requirements.write_text("\n".join(importlib.metadata.requires(dist) or []) + "\n")


def test_circup_installs_ether_lite_and_minimqtt(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "ether", "lite", "bundle", "--out", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0, built.stderr
    bundle_zip = Path(built.stdout.strip())
    version = library_version()
    assert bundle_zip == tmp_path / "dist" / f"{BUNDLE_ID}-py-{version}.zip"
    with zipfile.ZipFile(bundle_zip) as archive:
        names = archive.namelist()
        init = archive.read(f"{BUNDLE_ID}-py-{version}/lib/ether_lite/__init__.py").decode()
    assert f"{BUNDLE_ID}-py-{version}/requirements/ether_lite/requirements.txt" in names
    assert "__version__" in init and "__repo__" in init

    data = tmp_path / "xdg" / "circup"
    data.mkdir(parents=True)
    vendor, repo = BUNDLE_REPO.split("/")
    with zipfile.ZipFile(bundle_zip) as archive:
        archive.extractall(data / vendor / f"{BUNDLE_ID}-py")
    _seed_adafruit_bundle(data)
    (data / "bundle_config.json").write_text(json.dumps({"ether": BUNDLE_REPO, "adafruit": ADAFRUIT_REPO}))
    (data / "circup.json").write_text(json.dumps({BUNDLE_REPO: [version], ADAFRUIT_REPO: [ADAFRUIT_TAG]}))

    device = tmp_path / "CIRCUITPY"
    (device / "lib").mkdir(parents=True)
    (device / "boot_out.txt").write_text(
        "Adafruit CircuitPython 9.2.1 on 2024-11-20; Adafruit Feather ESP32-S3 No PSRAM with ESP32S3\n"
        "Board ID:adafruit_feather_esp32s3_nopsram\n"
    )
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path))
    result = subprocess.run(
        [*_circup(), "--offline", "--path", str(device), "install", "ether_lite"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lib = device / "lib"
    assert (lib / "ether_lite" / "__init__.py").exists(), output
    assert (lib / "ether_lite" / "node.py").exists()
    assert (lib / "adafruit_minimqtt" / "adafruit_minimqtt.py").exists(), output
    assert (lib / "adafruit_connection_manager.py").exists(), output
    assert (lib / "adafruit_ticks.py").exists(), output


def test_mip_package_lists_every_micropython_module():
    """lite/package.json (mpremote mip install) names each module MicroPython needs, at the library's version,
    by a URL relative to itself (no repository is published to point at)."""
    root = Path(__file__).resolve().parent.parent / "lite"
    package = json.loads((root / "package.json").read_text())
    assert package["version"] == library_version()
    listed = {target for target, _ in package["urls"]}
    needed = {f"ether_lite/{p.name}" for p in (root / "ether_lite").glob("*.py") if p.name != "minimqtt.py"}
    assert listed == needed
    for target, url in package["urls"]:
        assert url == target and (root / url).is_file()
