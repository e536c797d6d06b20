"""tiffin's runtime inside a deployment's environment, as Azure's inference server is inside its image.

A replica or batch worker of a deployment that declares an environment runs on that environment's interpreter
(``ENV/bin/python``), not on tiffin's. What it imports of tiffin (the replica server, the script and MLflow
runners, the batch worker) comes from a copy of tiffin's own package under ``$TIFFIN_HOME/runtime/DIGEST/``, put
first on its ``PYTHONPATH``; what that code imports besides the standard library is :data:`RUNTIME_REQUIREMENTS`,
installed into the environment with the user's requirements, in one resolution, so the user's pins win and
nothing of theirs is upgraded for tiffin's sake. Those modules import and run on Python 3.8 to 3.13
(``tests/test_runtime_pythons.py``).

The copy is named by a digest of its files, so a changed tiffin (a new version, or a developer's edit) gets a
new one and a replica never runs a mix of two; environments themselves are keyed by tiffin's version and
:data:`RUNTIME_REQUIREMENTS` (:func:`~tiffin.environments.builder.environment_key`), not by the copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tiffin.environments.builder import build, environment_key
from tiffin.environments.spec import EnvironmentSpec

__all__ = [
    "RUNTIME_REQUIREMENTS",
    "PreparedEnvironment",
    "describe",
    "prepare",
    "prune_runtime_copies",
    "runtime_key",
    "runtime_path",
    "supported",
]

RUNTIME_REQUIREMENTS: tuple[str, ...] = (
    # The replica's HTTP server, as on tiffin's own Python: uvicorn's httptools protocol on uvloop. 0.30 is the
    # oldest uvicorn tiffin's protocol subclass is tested with; 0.33 is the newest that runs on Python 3.8.
    "uvicorn>=0.30",
    "httptools>=0.6",
    "uvloop>=0.19; sys_platform != 'win32'",
)
"""What tiffin's runtime needs inside an environment besides the standard library: lower bounds only, so the
resolver fits them around the user's own pins."""


@dataclass(frozen=True)
class PreparedEnvironment:
    """A built environment and the runtime copy its processes import tiffin from."""

    key: str
    path: Path
    runtime: Path
    spec: EnvironmentSpec

    @property
    def python(self) -> Path:
        """The environment's interpreter: what replicas and batch workers of its deployments are started with."""
        return self.path / "bin" / "python"

    def process_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` as a process on this environment's interpreter needs it: the runtime first on ``PYTHONPATH``
        (after nothing: a ``PYTHONPATH`` the deployment sets comes after it), the environment's ``bin`` first on
        ``PATH`` (a scoring script that runs ``python`` or a console script gets the environment's), no user site
        (``~/.local`` packages would shadow the environment's), no ``PYTHONHOME`` or ``CONDA_PREFIX``, bytecode
        kept in ``ENV/.pycache``."""
        env = {k: v for k, v in base.items() if k not in ("PYTHONHOME", "CONDA_PREFIX", "__PYVENV_LAUNCHER__")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.runtime), base.get("PYTHONPATH", "")) if p)
        env["PATH"] = os.pathsep.join(p for p in (str(self.path / "bin"), base.get("PATH", "")) if p)
        env["VIRTUAL_ENV"] = str(self.path)
        env["PYTHONNOUSERSITE"] = "1"
        # uv installs without bytecode (compiling it would make a warm build ten times slower), so the first
        # imports compile it; without a place to keep it, every replica start would compile scikit-learn again
        # (2.6 s instead of 1.2 s, measured). Bytecode goes to the environment's own folder, never beside the
        # user's code or the runtime copy, also where the server was started with PYTHONDONTWRITEBYTECODE.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.path / ".pycache")
        return env


def runtime_key(spec: EnvironmentSpec) -> str:
    """The key (folder name under ``envs/``) of ``spec``'s environment with tiffin's runtime in it."""
    return environment_key(supported(spec), RUNTIME_REQUIREMENTS)


def prepare(
    spec: EnvironmentSpec, home: Path, *, log: IO[str], environ: Mapping[str, str] = os.environ
) -> PreparedEnvironment:
    """``spec``'s environment with tiffin's runtime in it, built now unless it already is (see
    :func:`tiffin.environments.builder.build`: uv's output goes to ``log``; :class:`~tiffin.errors.
    EnvironmentBuildError` or :class:`~tiffin.errors.InterpreterNotFoundError` when it cannot be built)."""
    spec = supported(spec)
    for note in spec.notes:
        log.write(f"[tiffin] note: {note}\n")
    path = build(spec, home, runtime_requirements=RUNTIME_REQUIREMENTS, log=log, environ=environ)
    return PreparedEnvironment(key=path.name, path=path, runtime=runtime_path(home), spec=spec)


def describe(spec: EnvironmentSpec, title: str, log: IO[str]) -> None:
    """Write to ``log`` what was resolved, before :func:`prepare` writes the build: a ``--- title at TIME ---`` line,
    where the environment came from, each requirement, and each conda package skipped (notes come from
    :func:`prepare`)."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    log.write(f"--- {title} at {when} ---\n")
    log.write(f"[tiffin] from {spec.source}: Python {spec.python_minor}, {len(spec.requirements)} requirement(s)\n")
    for line in spec.requirements:
        log.write(f"[tiffin]   {line}\n")
    for package in spec.skipped:
        log.write(f"[tiffin] skipped {package}: conda's own, or bundled in pip's wheels; not installed\n")
    log.flush()


def supported(spec: EnvironmentSpec) -> EnvironmentSpec:
    """``spec`` on an interpreter tiffin's runtime runs on: a Python older than 3.8 (Azure's older MLflow samples
    were logged on 3.7, and their conda files say ``python=3.7.11``) becomes 3.8, the oldest it runs on, with a
    note saying so; pickles and wheels of 3.7 load on 3.8 in nearly every case, where refusing would turn away
    every such model. A newer Python than 3.13 is left as declared: finding its interpreter says what is there."""
    major, _, minor = spec.python_minor.partition(".")
    if not (major.isdigit() and minor.isdigit()) or (int(major), int(minor)) >= (3, 8) or int(major) != 3:
        return spec
    note = (
        f"Python {spec.python} is older than tiffin's runtime runs on (3.8 to 3.13): the environment is built on "
        "Python 3.8; pin python=3.8 or later to choose"
    )
    return dataclasses.replace(spec, python="3.8", notes=(*spec.notes, note))


_COPIED: dict[Path, Path] = {}  # home -> this process's runtime copy under it


def runtime_path(home: Path) -> Path:
    """The folder holding a copy of tiffin's package (``tiffin/``, runners included) under ``home/runtime/``,
    made once per distinct content; what processes in environments put on ``PYTHONPATH``."""
    known = _COPIED.get(home)
    if known is not None and (known / "tiffin" / "__init__.py").is_file():
        return known
    sources = _package_sources()
    digest = _digest(sources)
    root = home / "runtime"
    final = root / digest[:16]
    if not (final / "tiffin" / "__init__.py").is_file():
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".copy-", dir=root))
        try:
            for relative, source in sources:
                target = work / "tiffin" / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            try:
                os.rename(work, final)
            except OSError:  # another process made the same copy meanwhile: theirs is as good
                shutil.rmtree(work, ignore_errors=True)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    _COPIED[home] = final
    return final


def prune_runtime_copies(home: Path, *, dry_run: bool = False) -> list[str]:
    """Remove the runtime copies under ``home/runtime`` other than this process's (an older tiffin's, or one a
    developer's edit replaced); their names. Only ``tiffin serve`` (which holds the home's lock, and whose
    replicas and workers all use its own copy) calls this."""
    root = home / "runtime"
    current = runtime_path(home).name
    removed = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if child.name != current and child.is_dir():
            if not dry_run:
                shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    return removed


def _package_sources() -> list[tuple[Path, Path]]:
    """(path inside ``tiffin/``, file) for every file of tiffin's package, runners included, caches left out.

    An editable install keeps ``tiffin.runners`` in a folder of its own (``runners/``), a wheel inside
    ``tiffin/``: both end as ``tiffin/runners/`` in the copy.
    """
    import tiffin
    import tiffin.runners

    package = Path(tiffin.__file__).resolve().parent
    runners = Path(tiffin.runners.__file__).resolve().parent
    files: dict[Path, Path] = {}
    for base, prefix in ((package, Path()), (runners, Path("runners"))):
        for source in sorted(base.rglob("*")):
            if source.is_dir() or "__pycache__" in source.parts or source.suffix in (".pyc", ".pyo"):
                continue
            files[prefix / source.relative_to(base)] = source
    return sorted(files.items())


def _digest(sources: list[tuple[Path, Path]]) -> str:
    digest = hashlib.sha256()
    for relative, source in sources:
        digest.update(str(relative).encode() + b"\0")
        digest.update(hashlib.sha256(source.read_bytes()).digest())
    return digest.hexdigest()
