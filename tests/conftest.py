"""Helpers and fixtures shared by the tests; import helpers with ``from conftest import eventually``.

``pg_server`` starts a real PostgreSQL server once per session (``initdb`` + ``pg_ctl`` from the Debian
``postgresql`` package, as the ``postgres`` user when the tests run as root); :func:`pg_database` gives a
test a fresh database on it. Both skip, with the reason, when the server binaries or ``psycopg`` are missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

# A real container engine (dockerd started when need be) and tiffin's base image in it: tests/containers_fixture.py.
from containers_fixture import base_image, container_engine  # noqa: F401

T = TypeVar("T")

# Deployments declaring an environment (Azure's samples, the quickstart) get it built with uv. Every test server
# has a TIFFIN_HOME of its own, so without this each would build the same environments again; environments are
# named by their recipe and built under a lock, so test servers (and test runs, and CI runs that keep the folder)
# share them safely. A run that sets TIFFIN_ENVS_DIR itself keeps its own.
os.environ.setdefault("TIFFIN_ENVS_DIR", str(Path.home() / ".cache" / "tiffin" / "test-envs"))


def eventually(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Call ``check`` until it returns a true value without raising AssertionError, and return that value.

    For what a test waits on (a process exits, a copy lands, a probe notices), instead of a sleep long enough
    on a quiet machine: this returns as soon as the condition holds, and waits up to ``timeout`` seconds on a
    busy one. Once time is up, the last AssertionError is raised again (or one saying the value stayed false),
    so a failure shows what was last seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        else:
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"still {value!r} after {timeout:g}s")
        time.sleep(interval)


# --- a throwaway PostgreSQL server ---------------------------------------------------------------


@dataclass(frozen=True)
class PgServer:
    """A running PostgreSQL server that trusts user ``tiffin`` on 127.0.0.1."""

    host: str
    port: int
    user: str = "tiffin"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"


def _pg_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb, else wherever PATH has it."""

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart"


@pytest.fixture(scope="session")
def quickstart_models() -> Path:
    """The quickstart's models (model/ and model-2/), trained by its train.py if a fresh clone has none yet: a
    test that serves the quickstart must not depend on an earlier test having run train.py."""
    import sys

    if not (QUICKSTART / "model").is_dir() or not (QUICKSTART / "model-2" / "model").is_dir():
        subprocess.run([sys.executable, "train.py"], cwd=QUICKSTART, check=True, capture_output=True, timeout=300)
    return QUICKSTART


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """Start a PostgreSQL server in a temporary directory for the test session, or skip."""
    try:
        import psycopg  # noqa: F401  # the driver the URLs name
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'psycopg[binary]'); PostgreSQL tests skipped")
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql")

    # PostgreSQL refuses to run as root, so run it as the 'postgres' user the package creates.
    as_user: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        if not shutil.which("runuser"):
            pytest.skip("running as root and `runuser` is missing; cannot start PostgreSQL as 'postgres'")
        as_user = ["runuser", "-u", "postgres", "--"]

    # Not under pytest's tmp_path: its base directory is private to root, which 'postgres' cannot
    # enter.
    root = Path(tempfile.mkdtemp(prefix="tiffin-pg-"))
    data, sockets, log = root / "data", root / "sock", root / "server.log"
    sockets.mkdir()
    if owner is not None:
        for path in (root, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True, timeout=120)

    started = False
    try:
        run(
            str(bin_dir / "initdb"),
            *("-D", str(data), "-U", "tiffin", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"),
        )
        for _attempt in range(3):  # another process may grab the free port before the server does
            port = _free_port()
            # -F: no fsync, this data is thrown away.
            options = f"-h 127.0.0.1 -p {port} -k {sockets} -F"
            try:
                run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", options, "start")
            except subprocess.CalledProcessError:
                continue
            started = True
            break
        if not started:
            pytest.fail(f"PostgreSQL did not start; see {log}:\n{log.read_text() if log.exists() else ''}")
        yield PgServer(host="127.0.0.1", port=port)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"{exc.cmd} failed:\n{exc.stdout}\n{exc.stderr}")
    finally:
        if started:
            with contextlib.suppress(subprocess.SubprocessError):
                run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def pg_database(server: PgServer) -> Iterator[str]:
    """A fresh, empty database on ``server``; dropped afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = dict(host=server.host, port=server.port, user=server.user, dbname="postgres", autocommit=True)
    with psycopg.connect(**admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.url(name)
    finally:
        with psycopg.connect(**admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh store migrated to head, once on SQLite and once on a real PostgreSQL; its home (and secret key)
    in ``tmp_path``. Test modules with a store of their own (test_store.py, ...) override it."""
    from tiffin.store import Store

    monkeypatch.setenv("TIFFIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TIFFIN_SECRET_KEY", raising=False)
    if request.param == "sqlite":
        with Store.open(f"sqlite:///{tmp_path / 'tiffin.db'}") as opened:
            yield opened
        return
    server: PgServer = request.getfixturevalue("pg_server")
    with pg_database(server) as url, Store.open(url) as opened:
        yield opened
