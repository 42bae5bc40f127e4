"""The circup bundle of ether_lite: the zip a CircuitPython user installs from with `circup install ether_lite`.

The zip has the layout of an Adafruit bundle release, so circup treats it like one:

    ether-lite-bundle-py-<version>/lib/ether_lite/*.py
    ether-lite-bundle-py-<version>/requirements/ether_lite/requirements.txt   (adafruit-circuitpython-minimqtt)

plus, for each CircuitPython cross-compiler given, ``ether-lite-bundle-<N>.x-mpy-<version>.zip`` with .mpy
files. MicroPython's own mpy-cross does not produce CircuitPython's .mpy, so .mpy bundles are built only
from a compiler named explicitly (CircuitPython's ``mpy-cross`` for that major version).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import zipfile
from pathlib import Path

BUNDLE_ID = "ether-lite-bundle"  # names the zip files
# circup's key for the bundle ("vendor/name", name = BUNDLE_ID). No such GitHub repository is published:
# circup uses the bundle offline, unpacked into its data folder (docs/devices.md).
BUNDLE_REPO = f"ether-lab/{BUNDLE_ID}"
MODULE = "ether_lite"
REQUIREMENTS = ["adafruit-circuitpython-minimqtt"]  # the network on CircuitPython; circup installs it too


class BundleError(RuntimeError):
    """The bundle could not be built (library not found, cross-compiler failed)."""


def library_dir() -> Path:
    """lite/ether_lite in a source checkout (ether_lite is not installed on the host as a package)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent.parent / "lite" / MODULE, here.parent / MODULE):
        if (candidate / "__init__.py").exists():
            return candidate
    raise BundleError(f"cannot find the {MODULE} sources (looked for lite/{MODULE} beside host/)")


def library_version(lib: Path | None = None) -> str:
    """``__version__`` from ether_lite/__init__.py, read as text (ether_lite is not imported on the host)."""
    text = ((lib or library_dir()) / "__init__.py").read_text()
    found = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    if not found:
        raise BundleError(f'{MODULE}/__init__.py has no __version__ = "..." line')
    return found.group(1)


def _zip(zip_path: Path, root: str, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(files.items()):
            archive.writestr(f"{root}/{name}", data)
    return zip_path


def _requirements() -> dict[str, bytes]:
    req = "\n".join(REQUIREMENTS) + "\n"
    toml = f'[project]\nname = "{MODULE}"\ndependencies = [{", ".join(repr(r) for r in REQUIREMENTS)}]\n'
    return {
        f"requirements/{MODULE}/requirements.txt": req.encode(),
        f"requirements/{MODULE}/pyproject.toml": toml.replace("'", '"').encode(),
    }


def build_bundle(out_dir: str | Path, mpy_cross: dict[str, str] | None = None) -> Path:
    """Build the bundle zip(s) in `out_dir`; returns the path of the .py bundle.

    `mpy_cross` maps a CircuitPython major version to its cross-compiler, e.g. ``{"9": "/opt/mpy-cross-9"}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lib = library_dir()
    version = library_version(lib)
    sources = sorted(lib.glob("*.py"))

    root = f"{BUNDLE_ID}-py-{version}"
    files = {f"lib/{MODULE}/{s.name}": s.read_bytes() for s in sources}
    files.update(_requirements())
    py_zip = _zip(out / f"{root}.zip", root, files)

    for major, compiler in (mpy_cross or {}).items():
        platform = f"{major}.x-mpy"
        root = f"{BUNDLE_ID}-{platform}-{version}"
        compiled: dict[str, bytes] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for source in sources:
                target = Path(tmp) / f"{source.stem}.mpy"
                result = subprocess.run(
                    [compiler, "-o", str(target), str(source)], capture_output=True, text=True, timeout=120
                )
                if result.returncode != 0:
                    raise BundleError(f"{compiler} failed on {source.name}: {result.stderr.strip()}")
                compiled[f"lib/{MODULE}/{target.name}"] = target.read_bytes()
        compiled.update(_requirements())
        _zip(out / f"{root}.zip", root, compiled)
    return py_zip
