"""A replica reports readiness on a pipe (``TIFFIN_READY_FD``): the supervisor learns it at once, not by polling."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tiffin.replica import run as replica_run
from tiffin.supervisor.process import spawn_replica

# Says ready on the pipe only (nothing in the log), then waits to be stopped.
_CHILD = (
    "import os, time\n"
    "fd = int(os.environ['TIFFIN_READY_FD'])\n"
    "time.sleep(0.2)\n"
    "os.write(fd, b'ready\\n')\n"
    "time.sleep(60)\n"
)


def test_spawned_replica_reports_ready_on_its_pipe(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, bool]:
        process = spawn_replica(
            [sys.executable, "-c", _CHILD],
            socket=tmp_path / "r.sock",
            log_path=tmp_path / "logs" / "replica-0.log",
            header=lambda pid: f"--- start {pid} ---\n",
            env=dict(os.environ),
            cwd=tmp_path,
        )
        try:
            told = asyncio.Event()
            assert process.watch_ready(asyncio.get_running_loop(), told.set)
            before = process.saw_ready_line()
            await asyncio.wait_for(told.wait(), 30)
            return before, process.saw_ready_line()
        finally:
            await process.terminate()
            assert process.ready_pipe is None  # released with the process

    before, after = asyncio.run(scenario())
    assert (before, after) == (False, True)


def test_exit_without_ready_does_not_count_as_ready(tmp_path: Path) -> None:
    async def scenario() -> bool:
        process = spawn_replica(
            [sys.executable, "-c", "raise SystemExit(3)"],
            socket=tmp_path / "r.sock",
            log_path=tmp_path / "replica-0.log",
            header=lambda pid: "",
            env=dict(os.environ),
            cwd=tmp_path,
        )
        called: list[bool] = []
        assert process.watch_ready(asyncio.get_running_loop(), lambda: called.append(True))
        for _ in range(300):
            if process.poll() is not None and process.ready_pipe is None:
                break
            await asyncio.sleep(0.02)
        await process.terminate()
        return bool(called) or process.saw_ready_line()

    assert asyncio.run(scenario()) is False


def test_replica_writes_its_ready_pipe_once(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    read, write = os.pipe()
    try:
        monkeypatch.setenv(replica_run.READY_FD_ENV, str(write))
        replica_run._take_ready_fd()
        assert replica_run.READY_FD_ENV not in os.environ  # not left for the scoring script
        assert not os.get_inheritable(write)
        replica_run._announce_ready("tiffin replica ready: here")
        replica_run._announce_ready("tiffin replica ready: here")  # the second says nothing on the pipe
        assert os.read(read, 100) == b"ready\n"
        assert capsys.readouterr().out.count("tiffin replica ready: here") == 2
        with pytest.raises(OSError):
            os.fstat(write)  # closed by the replica once said
    finally:
        os.close(read)


def test_replica_ignores_a_ready_fd_that_is_not_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(replica_run.READY_FD_ENV, "987")
    replica_run._take_ready_fd()
    assert replica_run._ready_fd is None
    replica_run._announce_ready("tiffin replica ready: x")  # only prints
