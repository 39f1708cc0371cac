"""PEP 517 backend: setuptools.build_meta, plus a standard-library wheel writer for
when setuptools cannot build wheels by itself.

setuptools older than 70.1 needs the separate ``wheel`` package for ``bdist_wheel``.
With build isolation pip installs it; with ``pip install --no-build-isolation`` on a
machine that has setuptools but not ``wheel`` (no network needed) the build would
fail, so this backend then writes the (pure-Python, ``py3-none-any``) wheel itself,
from the metadata that setuptools prepares.
"""
from __future__ import annotations

import base64
import glob
import re
import hashlib
import os
import shutil
import sys
import tempfile
import zipfile

from setuptools import build_meta as _bm
from setuptools.build_meta import (  # noqa: F401 - re-exported hooks
    build_sdist,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
)

PACKAGE = "conveyor"

import setuptools  # noqa: E402

if tuple(int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2]) < (61, 0):
    # Older setuptools ignores [project] in pyproject.toml and would build "UNKNOWN-0.0.0".
    raise RuntimeError(f"conveyor-queue needs setuptools>=61 to build, this is {setuptools.__version__}: "
                       "upgrade it, or build with isolation (plain `pip install`)")


def _can_bdist_wheel() -> bool:
    try:
        import setuptools.command.bdist_wheel  # noqa: F401 - setuptools >= 70.1
        return True
    except ImportError:
        pass
    try:
        import wheel.bdist_wheel  # noqa: F401
        return True
    except ImportError:
        return False


def _dist_info_from_egg_info(metadata_directory: str) -> str:
    """setuptools' own dist_info needs bdist_wheel before 70.1: run egg_info and turn
    its PKG-INFO (plus requires.txt as Requires-Dist) into a .dist-info directory."""
    tmp = tempfile.mkdtemp()
    argv = sys.argv
    sys.argv = ["setup.py", "egg_info", "--egg-base", tmp]
    try:
        _bm._BACKEND.run_setup()
    finally:
        sys.argv = argv
    egg = glob.glob(os.path.join(tmp, "*.egg-info"))[0]
    with open(os.path.join(egg, "PKG-INFO"), encoding="utf-8") as f:
        head, sep, body = f.read().partition("\n\n")
    head = head.rstrip("\n")
    requires = []
    req_path = os.path.join(egg, "requires.txt")
    if os.path.exists(req_path):
        with open(req_path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line.startswith("["):
                    break  # extras: none in this project
                if line:
                    requires.append(f"Requires-Dist: {line}")
    fields = dict(ln.split(": ", 1) for ln in head.splitlines() if ": " in ln)
    name = fields["Name"].replace("-", "_")
    dist_info = f"{name}-{fields['Version']}.dist-info"
    out = os.path.join(metadata_directory, dist_info)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "METADATA"), "w", encoding="utf-8") as f:
        f.write("\n".join([head, *requires]) + "\n" + (sep[1:] + body if sep else ""))
    shutil.copy(os.path.join(egg, "top_level.txt"), out)
    shutil.rmtree(tmp, ignore_errors=True)
    return dist_info


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    if _can_bdist_wheel():
        return _bm.prepare_metadata_for_build_wheel(metadata_directory, config_settings)
    return _dist_info_from_egg_info(metadata_directory)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _write_wheel(wheel_directory: str, metadata_directory, files) -> str:
    """files: [(archive name, bytes)]. Returns the wheel's file name."""
    tmp = None
    if metadata_directory is None:
        tmp = tempfile.mkdtemp()
        metadata_directory = os.path.join(tmp, prepare_metadata_for_build_wheel(tmp))
    dist_info = os.path.basename(metadata_directory)
    dist, version = dist_info[: -len(".dist-info")].rsplit("-", 1)
    name = f"{dist}-{version}-py3-none-any.whl"
    entries = list(files)
    for fn in sorted(os.listdir(metadata_directory)):
        if fn in ("WHEEL", "RECORD"):
            continue
        with open(os.path.join(metadata_directory, fn), "rb") as f:
            entries.append((f"{dist_info}/{fn}", f.read()))
    entries.append((f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: conveyor_build\n"
                    b"Root-Is-Purelib: true\nTag: py3-none-any\n"))
    record = [_record_line(n, d) for n, d in entries] + [f"{dist_info}/RECORD,,"]
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in entries:
            z.writestr(n, d)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return name


def _package_files():
    out = []
    for root, dirs, names in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for n in sorted(names):
            if n.endswith((".py", ".typed")):
                path = os.path.join(root, n)
                with open(path, "rb") as f:
                    out.append((path.replace(os.sep, "/"), f.read()))
    return out


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    if _can_bdist_wheel():
        return _bm.build_wheel(wheel_directory, config_settings, metadata_directory)
    return _write_wheel(wheel_directory, metadata_directory, _package_files())


def get_requires_for_build_editable(config_settings=None):
    return get_requires_for_build_wheel(config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    return prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    if _can_bdist_wheel() and hasattr(_bm, "build_editable"):
        return _bm.build_editable(wheel_directory, config_settings, metadata_directory)
    pth = (os.path.abspath(os.getcwd()) + "\n").encode()
    return _write_wheel(wheel_directory, metadata_directory, [("__editable__.conveyor_queue.pth", pth)])
