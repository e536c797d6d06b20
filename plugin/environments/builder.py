"""Building an :class:`~tiffin.environments.spec.EnvironmentSpec` into a virtual environment with uv.

::

    $TIFFIN_HOME/envs/                      0700
      KEY/                                  a built environment: bin/python, and tiffin-env.json (its marker)
      .build-KEY-XXXX/                      one being built (renamed to KEY/ whole once it is complete)
      .locks/KEY.lock                       held while KEY is being built (flock), so it is built once

KEY is :meth:`EnvironmentSpec.key` over the interpreter minor, the requirements and the runtime version
(:func:`environment_key`), so deployments and batch jobs declaring the same environment share one folder.

A build is ``uv venv --relocatable --python INTERPRETER`` then ``uv pip install -r requirements.txt`` into a
temporary folder, whose output streams to the caller's log; the marker (the spec, the interpreter, ``uv pip
freeze``) is written last and the folder renamed into place, so a half-built environment is never seen. uv's
cache (``UV_CACHE_DIR``, uv's default otherwise) makes a second build of the same packages a matter of links.
Several processes asking for one KEY at once take its lock in turn: the first builds, the others find it
built and reuse it. A failed build raises :class:`EnvironmentBuildError` with uv's own last lines (uv does not
retry a missing or conflicting requirement, so this comes within seconds).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO

from tiffin import __version__
from tiffin.environments.interpreters import Interpreter, find_interpreter
from tiffin.environments.serving import serving_packages, with_floors, without_serving
from tiffin.environments.spec import EnvironmentSpec
from tiffin.errors import EnvironmentBuildError

__all__ = ["ENVS_DIR_ENV", "MARKER", "build", "environment_key", "envs_dir", "prune", "stop_builds", "uv_binary"]

MARKER = "tiffin-env.json"
"""The file a complete environment holds (written last, before the folder is renamed into place)."""

_ERROR_LINES = 25  # the last lines of uv's output an EnvironmentBuildError carries
_BUILD_TIMEOUT_S = 1800.0  # a build that takes longer is stuck (a hung download), not slow


ENVS_DIR_ENV = "TIFFIN_ENVS_DIR"
"""Where built environments live when not under ``TIFFIN_HOME/envs``: several homes (servers, test runs) on one
machine may share one folder, since each environment is named by its recipe and built under a lock."""


def envs_dir(home: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """``$TIFFIN_ENVS_DIR``, else ``home/envs``: where built environments live."""
    given = environ.get(ENVS_DIR_ENV)
    return Path(given).expanduser() if given else home / "envs"


def environment_key(spec: EnvironmentSpec, runtime_requirements: Sequence[str] = ()) -> str:
    """The folder name of ``spec``'s environment: its key over tiffin's version and the runtime's requirements
    (what the next step installs for tiffin's runtime changes what is built, so it is part of the name)."""
    return spec.key(_runtime_version(runtime_requirements))


def uv_binary() -> str:
    """The uv binary shipped by the ``uv`` package tiffin depends on."""
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError) as exc:
        raise EnvironmentBuildError(
            f"uv is not installed with tiffin ({exc}); install it into tiffin's environment: pip install 'uv>=0.5'"
        ) from exc


def build(
    spec: EnvironmentSpec,
    home: Path,
    *,
    runtime_requirements: Sequence[str],
    log: IO[str],
    environ: Mapping[str, str] = os.environ,
    timeout_s: float = _BUILD_TIMEOUT_S,
) -> Path:
    """The folder of ``spec``'s environment under ``home/envs``, built now unless it already is.

    ``runtime_requirements``: what tiffin's runtime needs inside (installed with the spec's requirements).
    ``log``: gets the build's progress and uv's output as it comes. Raises :class:`EnvironmentBuildError`
    (uv's message inside) or :class:`~tiffin.errors.InterpreterNotFoundError`.
    """
    root = envs_dir(home, environ)
    key = environment_key(spec, runtime_requirements)
    final = root / key
    if _complete(final):
        _say(log, f"reusing environment {key[:12]} ({spec.source or 'environment'})")
        return final
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _key_lock(root, key, log):
        if _complete(final):  # built by whoever held the lock before us
            _say(log, f"reusing environment {key[:12]}, built meanwhile by another deployment")
            return final
        _remove_leftovers(root, key)
        started = time.monotonic()
        uv = uv_binary()
        interpreter = find_interpreter(spec.python_minor if spec.python is None else spec.python, environ, uv=uv)
        _say(log, f"building environment {key[:12]} on Python {interpreter.describe()} for {spec.source or 'a spec'}")
        work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=root))
        requirements = [*with_floors(spec.requirements), *runtime_requirements]
        left_out: list[str] = []
        try:
            try:
                _build_into(work, requirements, interpreter, uv, log, environ, timeout_s)
            except EnvironmentBuildError as exc:
                serving = serving_packages(spec.requirements)
                if not serving:
                    # Which deployment's environment, then uv's own words.
                    raise EnvironmentBuildError(
                        f"cannot build the environment from {spec.source or 'its spec'}: {exc}"
                    ) from None
                # Azure's serving packages must never cost the deployment (tiffin.environments.serving).
                left_out = serving
                _say(
                    log,
                    f"the build failed with {', '.join(serving)}; building it again without them (they "
                    "are Azure's inference server, which tiffin's runtime stands in for; scoring code importing "
                    "them will fail)",
                )
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(mode=0o700)
                try:
                    _build_into(work, without_serving(requirements), interpreter, uv, log, environ, timeout_s)
                except EnvironmentBuildError as again:
                    raise EnvironmentBuildError(
                        f"cannot build the environment from {spec.source or 'its spec'}, with or without "
                        f"{', '.join(serving)}: {again}"
                    ) from None
            seconds = round(time.monotonic() - started, 3)
            freeze = _run(
                [uv, "pip", "freeze", "--python", str(work / "bin" / "python")], work, None, environ, timeout_s
            )
            marker = {
                "key": key,
                "spec": asdict(spec),
                "interpreter": {"path": str(interpreter.path), "version": interpreter.version_text},
                "runtime_version": _runtime_version(runtime_requirements),
                "runtime_requirements": list(runtime_requirements),
                "left_out": left_out,
                "freeze": freeze.splitlines(),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": seconds,
            }
            (work / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
            if final.exists():  # a folder without a marker: not ours to trust, replaced whole
                _discard(final, root)
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        _say(log, f"built environment {key[:12]} in {seconds:.1f} s")
        return final


def prune(home: Path, keep: set[str]) -> list[str]:
    """Remove every environment under ``home/envs`` whose key is not in ``keep`` (and leftovers of builds that
    died); the keys removed. One being built right now (its lock held) is left alone."""
    root = envs_dir(home)
    if not root.is_dir():
        return []
    removed: list[str] = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".discard-"):  # a removal that died half-way
            shutil.rmtree(child, ignore_errors=True)
            continue
        if child.name.startswith(".build-"):
            key = child.name.removeprefix(".build-").rsplit("-", 1)[0]
        elif child.name.startswith(".") or child.name in keep or not child.is_dir():
            continue
        else:
            key = child.name
        with _try_key_lock(root, key) as held:
            if held and child.exists():
                _discard(child, root)
                if not child.name.startswith("."):
                    removed.append(key)
    return removed


def _build_into(
    work: Path,
    requirements: Sequence[str],
    interpreter: Interpreter,
    uv: str,
    log: IO[str],
    environ: Mapping[str, str],
    timeout_s: float,
) -> None:
    # --relocatable: scripts and activation use relative paths, so the folder still works once renamed.
    _run([uv, "venv", "--relocatable", "--python", str(interpreter.path), str(work)], work, log, environ, timeout_s)
    if not requirements:
        return
    # A requirements file, not arguments: a pip: section may hold option lines (--extra-index-url) as pip
    # reads them, and a line starting with '-' is never taken for one of uv's own flags.
    listed = work / ".tiffin-requirements.txt"
    listed.write_text("".join(line + "\n" for line in requirements), encoding="utf-8")
    try:
        _run(
            [uv, "pip", "install", "--python", str(work / "bin" / "python"), "-r", str(listed)],
            work,
            log,
            environ,
            timeout_s,
        )
    finally:
        listed.unlink(missing_ok=True)


def _run(argv: list[str], cwd: Path, log: IO[str] | None, environ: Mapping[str, str], timeout_s: float) -> str:
    """Run uv, streaming its output (stdout and stderr, as they come) to ``log``; its stdout when no log is given.
    :class:`EnvironmentBuildError` with uv's last lines when it fails or runs past ``timeout_s``."""
    env = {name: value for name, value in environ.items() if name not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["UV_PYTHON_DOWNLOADS"] = "never"  # the interpreter is given; never fetch one behind the user's back
    env.setdefault("UV_NO_PROGRESS", "1")  # no spinners in a log file
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    with _RUNNING_LOCK:
        _RUNNING[process.pid] = (cwd, process)
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        # The whole group: uv may have started a build backend for an sdist, which would keep running.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, stop)
    timer.start()
    tail: deque[str] = deque(maxlen=_ERROR_LINES)
    try:
        if log is not None:
            assert process.stdout is not None
            for line in process.stdout:
                tail.append(line.rstrip("\n"))
                log.write(line)
                log.flush()
            out = ""
        else:
            out, err = process.communicate()
            tail.extend(err.splitlines()[-_ERROR_LINES:])
        code = process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        with _RUNNING_LOCK:
            _RUNNING.pop(process.pid, None)
    if code != 0:
        what = f"ran past {timeout_s:.0f} s and was stopped" if timed_out.is_set() else "failed"
        said = "\n".join(line for line in tail if line.strip())
        command = " ".join([Path(argv[0]).name, *argv[1:3]])
        raise EnvironmentBuildError(f"{command} {what}:\n{said}")
    return out


_RUNNING: dict[int, tuple[Path, subprocess.Popen[str]]] = {}  # uv processes of builds in this process, by pid
_RUNNING_LOCK = threading.Lock()


def stop_builds(home: Path) -> int:
    """Kill the uv processes of builds under ``home/envs`` running in this process (the server is stopping: a
    build's thread cannot be cancelled, its uv can); those builds fail and leave nothing behind. How many."""
    root = envs_dir(home).resolve()
    with _RUNNING_LOCK:
        running = [p for cwd, p in _RUNNING.values() if cwd.resolve().is_relative_to(root)]
    for process in running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    return len(running)


def _runtime_version(runtime_requirements: Sequence[str]) -> str:
    return " ".join([f"tiffin=={__version__}", *runtime_requirements])


def _complete(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "bin" / "python").exists()


def _say(log: IO[str], line: str) -> None:
    log.write(f"[tiffin] {line}\n")
    log.flush()


def _discard(folder: Path, root: Path) -> None:
    """Remove ``folder``: renamed aside first, so it disappears at once and a half-removed one is never seen."""
    aside = Path(tempfile.mkdtemp(prefix=".discard-", dir=root))
    os.rename(folder, aside / "env")
    shutil.rmtree(aside, ignore_errors=True)


def _remove_leftovers(root: Path, key: str) -> None:
    """Folders of builds of ``key`` that died half-way (the caller holds its lock, so no build is running)."""
    for leftover in root.glob(f".build-{key}-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _lock_path(root: Path, key: str) -> Path:
    locks = root / ".locks"
    locks.mkdir(mode=0o700, exist_ok=True)
    # Lock files stay: removing one while another process waits on it would let two builders in at once.
    return locks / f"{key}.lock"


@contextlib.contextmanager
def _key_lock(root: Path, key: str, log: IO[str]) -> Iterator[None]:
    with open(_lock_path(root, key), "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(log, f"environment {key[:12]} is being built by another deployment; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _try_key_lock(root: Path, key: str) -> Iterator[bool]:
    with open(_lock_path(root, key), "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
