"""Finding a Python interpreter of an exact minor version (3.8 to 3.13) on this machine.

An environment declares ``python=3.10`` and is built on a 3.10 interpreter already here: tiffin never downloads
one behind the user's back. Candidates are looked for, in this order:

1. the folders in ``TIFFIN_PYTHONS`` (``:``-separated; ``python3.X``, ``python3`` or ``python`` in each), the
   operator's explicit choice;
2. ``python3.X`` on ``PATH``;
3. pyenv's versions (``$PYENV_ROOT/versions/*/bin/python3.X``, ``~/.pyenv`` by default);
4. uv's managed interpreters (``uv python dir``: those ``uv python install 3.X`` put there).

A candidate counts only once running it answers its version (``sys.version_info[:3]``): a pyenv shim for a
version that is not pyenv's global fails there and is passed over, and the answer is cached per file. The path
kept is the one the interpreter reports (``sys.executable``), so a shim resolves to the real interpreter
behind it. An exact patch version (``3.10.4``) is preferred when one is found, else the first of the minor.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tiffin.environments.spec import SUPPORTED_PYTHONS, python_minor
from tiffin.errors import InterpreterNotFoundError

__all__ = ["Interpreter", "find_interpreter", "installed_interpreters"]

# What a candidate is asked; it runs on every Python 3 (and answers on 2.7, which is then not kept).
_PROBE = "import sys; print(sys.version_info[:3]); print(sys.executable)"
_VERSION = re.compile(r"\((\d+), (\d+), (\d+)\)")
_PROBE_TIMEOUT_S = 15


@dataclass(frozen=True, slots=True)
class Interpreter:
    """One interpreter that answered: its path, its version and where it was found."""

    path: Path
    version: tuple[int, int, int]
    origin: str
    """``TIFFIN_PYTHONS``, ``PATH``, ``pyenv`` or ``uv``."""

    @property
    def minor(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def describe(self) -> str:
        return f"{self.version_text} at {self.path} ({self.origin})"


def find_interpreter(python: str, environ: Mapping[str, str] = os.environ, *, uv: str | None = None) -> Interpreter:
    """The interpreter for ``python`` (``"3.10"`` or ``"3.10.4"``); :class:`InterpreterNotFoundError` listing
    what this machine has, and how to add one, when none of that minor is found.

    ``uv``: the uv binary whose managed interpreters are searched too (none searched when None).
    """
    minor = python_minor(python)
    if minor not in SUPPORTED_PYTHONS:
        raise InterpreterNotFoundError(
            f"Python {python} is not supported for environments: use one of {', '.join(SUPPORTED_PYTHONS)} "
            "(the python= line of the conda file, or python in the MLflow model's python_env.yaml)"
        )
    found = [found for found in _verified(_candidates(environ, uv, minors=(minor,))) if found.minor == minor]
    exact = [found for found in found if found.version_text == python]
    if exact or found:
        return (exact or found)[0]
    have = installed_interpreters(environ, uv=uv)
    listing = "; ".join(found.describe() for found in have) or "none"
    raise InterpreterNotFoundError(
        f"no Python {minor} interpreter found on this machine (searched TIFFIN_PYTHONS, PATH, pyenv's versions "
        f"and uv's managed Pythons; found: {listing}). Add one with `pyenv install {minor}` or "
        f"`uv python install {minor}`, or point TIFFIN_PYTHONS=/path/to/bin at a folder holding python{minor}"
    )


def installed_interpreters(environ: Mapping[str, str] = os.environ, *, uv: str | None = None) -> list[Interpreter]:
    """Every supported interpreter found, in search order, each real interpreter once."""
    return list(_verified(_candidates(environ, uv, minors=SUPPORTED_PYTHONS)))


def _verified(candidates: Iterator[tuple[Path, str]]) -> Iterator[Interpreter]:
    """The candidates that answer with a supported version, each real interpreter once (the first origin wins)."""
    seen: set[Path] = set()
    for path, origin in candidates:
        try:
            stat = path.stat()
        except OSError:
            continue
        answer = _probe(str(path), stat.st_mtime_ns)
        if answer is None:
            continue
        version, executable = answer
        real = Path(executable).resolve() if executable else path.resolve()
        if real in seen or f"{version[0]}.{version[1]}" not in SUPPORTED_PYTHONS:
            continue
        seen.add(real)
        yield Interpreter(path=Path(executable) if executable else path, version=version, origin=origin)


@lru_cache(maxsize=256)
def _probe(path: str, mtime_ns: int) -> tuple[tuple[int, int, int], str] | None:
    """What ``path`` answers when asked its version and executable; None when it fails. Cached per file and
    modification time (``mtime_ns`` is only part of the cache key), so each interpreter runs once."""
    try:
        done = subprocess.run(
            [path, "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.splitlines()
    match = _VERSION.fullmatch(lines[0].strip()) if done.returncode == 0 and lines else None
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    executable = lines[1].strip() if len(lines) > 1 else ""
    return (major, minor, patch), executable


def _candidates(environ: Mapping[str, str], uv: str | None, *, minors: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
    """(path, origin) of every file that may be a Python of one of ``minors``, in search order, unverified."""
    names = [f"python{minor}" for minor in minors]
    for folder in _split_path(environ.get("TIFFIN_PYTHONS", "")):
        # An operator's folder may hold a single interpreter under the generic names too.
        yield from _files(folder, [*names, "python3", "python"], "TIFFIN_PYTHONS")
    for folder in _split_path(environ.get("PATH", "")):
        yield from _files(folder, names, "PATH")
    pyenv_root = Path(environ.get("PYENV_ROOT") or Path(environ.get("HOME") or Path.home()) / ".pyenv")
    yield from _versions_below(pyenv_root / "versions", names, "pyenv")
    if uv is not None:
        managed = _uv_python_dir(uv, environ)
        if managed is not None:
            yield from _versions_below(managed, names, "uv")


def _split_path(value: str) -> list[Path]:
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part]


def _files(folder: Path, names: list[str], origin: str) -> Iterator[tuple[Path, str]]:
    for name in names:
        path = folder / name
        if path.is_file() and os.access(path, os.X_OK):
            yield path, origin


def _versions_below(root: Path, names: list[str], origin: str) -> Iterator[tuple[Path, str]]:
    """``root/*/bin/python3.X``: pyenv's and uv's layout, one folder per installed version, newest first."""
    try:
        versions = sorted((child for child in root.iterdir() if child.is_dir()), key=_version_order, reverse=True)
    except OSError:
        return
    for version in versions:
        yield from _files(version / "bin", names, origin)


def _version_order(folder: Path) -> tuple[int, ...]:
    """``3.10.13`` and ``cpython-3.10.13-linux-x86_64-gnu`` sort by their numbers; other names last."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", folder.name)
    return tuple(int(part or 0) for part in match.groups()) if match else (-1,)


@lru_cache(maxsize=8)
def _uv_python_dir_cached(uv: str) -> Path | None:
    try:
        done = subprocess.run(
            [uv, "python", "dir"], capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.strip()
    return Path(text) if done.returncode == 0 and text else None


def _uv_python_dir(uv: str, environ: Mapping[str, str]) -> Path | None:
    """Where uv keeps the interpreters it installed (``UV_PYTHON_INSTALL_DIR`` or uv's default)."""
    if environ.get("UV_PYTHON_INSTALL_DIR"):
        return Path(environ["UV_PYTHON_INSTALL_DIR"]).expanduser()
    return _uv_python_dir_cached(uv)
