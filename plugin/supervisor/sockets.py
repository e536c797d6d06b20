"""Where replicas listen: Unix sockets in a folder that only the server's user may enter.

A replica on a loopback TCP port answers ``/score`` to every local user without a credential; a Unix
socket in a 0700 folder answers only processes of the server's user (and root). Each supervisor
makes a folder of its own, ``$TIFFIN_HOME/run/PID-XXXXXXXX/``, so two servers on one home never share a
socket, and removes it when it stops. An AF_UNIX path holds at most 107 bytes: where the home's path
is too long for that (pytest's tmp paths can be), the folder is made in the system's temporary
directory instead (``/tmp/tiffin-run-PID-XXXXXXXX/``, 0700 too). A later supervisor removes the
folders of one that was killed before it could (:func:`remove_stale_folders`). Socket names are numbers, not
endpoint and deployment names, so they are short and no two replicas can share one:
``d{deployment number}-r{replica number}.sock``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from tiffin.pids import pid_alive

__all__ = ["SOCKET_PATH_MAX", "SocketFolder", "remove_stale_folders", "unix_url"]

logger = logging.getLogger("tiffin.supervisor")

SOCKET_PATH_MAX = 107
"""The longest path an AF_UNIX socket can be bound to on Linux (``sun_path`` is 108 bytes with its NUL)."""

# Room the longest socket name takes after its folder: "/d" + 10 digits + "-r" + 10 digits + ".sock".
_NAME_ROOM = 30
_FOLDER = re.compile(r"^(\d+)-[A-Za-z0-9_]+$")
_FALLBACK_PREFIX = "tiffin-run-"


def unix_url(path: Path) -> str:
    """The base URL the gateway and the probes use for a replica listening on ``path``."""
    return f"unix:{path}"


def run_dir(home: Path) -> Path:
    """``$TIFFIN_HOME/run``: the folder under which supervisors make their socket folders."""
    return home / "run"


class SocketFolder:
    """One supervisor's private socket folder, made on first use and removed by :meth:`remove`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        """The folder (made now, 0700, if it does not exist yet)."""
        if self._root is None or not self._root.is_dir():
            self._root = self._make()
        return self._root

    def _make(self) -> Path:
        parent = run_dir(self.home)
        # mkdtemp adds "PID-" + 8 characters; the name follows.
        if len(os.fsencode(parent)) + 1 + 20 + _NAME_ROOM <= SOCKET_PATH_MAX:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(parent, 0o700)  # mkdir's mode is cut by the umask, and the folder may predate us
            return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent))  # mkdtemp: mode 0700
        folder = Path(tempfile.mkdtemp(prefix=f"{_FALLBACK_PREFIX}{os.getpid()}-"))
        if len(os.fsencode(folder)) + _NAME_ROOM > SOCKET_PATH_MAX:
            raise OSError(f"the temporary directory {folder.parent} is too long a path for Unix sockets; set TMPDIR")
        logger.info("TIFFIN_HOME is too long a path for Unix sockets; replicas listen in %s instead", folder)
        return folder

    def path_for(self, deployment: int, replica: int) -> Path:
        """The socket of replica ``replica`` of the deployment numbered ``deployment`` (see the module)."""
        return self.root / f"d{deployment}-r{replica}.sock"

    def remove(self) -> None:
        """Remove the folder and every socket left in it."""
        root, self._root = self._root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def remove_stale_folders(home: Path) -> list[Path]:
    """Remove the socket folders of supervisors that no longer run (under ``$TIFFIN_HOME/run``, and this
    user's fallback folders in the temporary directory); returns those removed."""
    removed = []
    places = ((run_dir(home), ""), (Path(tempfile.gettempdir()), _FALLBACK_PREFIX))
    for parent, prefix in places:
        try:
            folders = [f for f in parent.iterdir() if f.name.startswith(prefix)]
        except OSError:
            continue
        for folder in folders:
            match = _FOLDER.match(folder.name.removeprefix(prefix))
            if match is None or folder.is_symlink() or not folder.is_dir():
                continue
            pid = int(match.group(1))
            with contextlib.suppress(OSError):
                if folder.stat().st_uid == os.getuid() and pid != os.getpid() and not pid_alive(pid):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
    return removed
