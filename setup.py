"""Builds the Cython extensions of ``indicators/`` and stages the dashboard's Socket.IO browser
client as package data (metadata lives in pyproject.toml)."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).parent
JS_DIR = HERE / "bridge" / "js"
CLIENT_PACKAGE = "socket.io-client"
CLIENT_DIST = JS_DIR / "node_modules" / CLIENT_PACKAGE / "dist"
# Where an installed package keeps the client: bridge/webui.py serves it from here (git-ignored).
CLIENT_VENDOR = HERE / "bridge" / "dashboard" / CLIENT_PACKAGE
CLIENT_FILES = ("socket.io.min.js", "socket.io.min.js.map")


def locked_client_version() -> str | None:
    """The socket.io-client version bridge/js/package-lock.json pins (None without the lock)."""
    try:
        lock = json.loads((JS_DIR / "package-lock.json").read_text())
    except FileNotFoundError:
        return None
    return lock["packages"][f"node_modules/{CLIENT_PACKAGE}"]["version"]


def installed_client_version() -> str | None:
    """The socket.io-client version in bridge/js/node_modules, if one is there."""
    try:
        return json.loads((CLIENT_DIST.parent / "package.json").read_text())["version"]
    except (FileNotFoundError, ValueError, KeyError):
        return None


def stage_socketio_client() -> None:
    """Copy the pinned socket.io-client build into ``CLIENT_VENDOR``, running ``npm ci`` in
    bridge/js first when it is not installed at the pinned version (``NPM`` names the npm
    executable, ``npm`` by default). Without npm, or when it fails, the build still succeeds: the
    vendor copy is removed, so a stale one never ships, and the bridge answers 404 and the
    dashboard says the client is missing. A source tree without bridge/js (an unpacked sdist)
    keeps the copy it was shipped with."""
    locked = locked_client_version()
    if locked is None:
        return
    npm = shutil.which(os.environ.get("NPM", "npm"))
    if installed_client_version() != locked and npm is not None:
        try:
            result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS_DIR,
                                    capture_output=True, text=True, timeout=600)
            failure = result.stderr[-1000:] if result.returncode != 0 else ""
        except (OSError, subprocess.TimeoutExpired) as exc:
            failure = str(exc)
        if failure:
            print(f"npm ci failed in {JS_DIR}: {failure}")
    CLIENT_VENDOR.mkdir(exist_ok=True)
    if installed_client_version() == locked:
        for name in CLIENT_FILES:
            shutil.copyfile(CLIENT_DIST / name, CLIENT_VENDOR / name)
        print(f"dashboard: {CLIENT_PACKAGE} {locked} copied to {CLIENT_VENDOR}")
        return
    for name in CLIENT_FILES:
        (CLIENT_VENDOR / name).unlink(missing_ok=True)
    print(f"WARNING: {CLIENT_PACKAGE} {locked} is not installed in {JS_DIR} and npm "
          f"{'failed' if npm else 'was not found'}: the dashboard will say its Socket.IO client is missing")


class BuildPyWithClient(build_py):
    """``build_py`` that stages the browser client before collecting package data."""

    def run(self) -> None:
        stage_socketio_client()
        # build/ outlives a build: a client an earlier build copied there would otherwise ship.
        for name in CLIENT_FILES:
            if not (CLIENT_VENDOR / name).is_file():
                Path(self.build_lib, CLIENT_VENDOR.relative_to(HERE), name).unlink(missing_ok=True)
        super().run()


class SdistWithClient(sdist):
    """``sdist`` that stages the browser client, so a wheel built from the sdist carries it."""

    def run(self) -> None:
        stage_socketio_client()
        super().run()


extensions = [
    Extension(
        f"indicators.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )
    for pyx in sorted((HERE / "indicators").glob("*.pyx"))
]

setup(
    cmdclass={"build_py": BuildPyWithClient, "sdist": SdistWithClient},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
