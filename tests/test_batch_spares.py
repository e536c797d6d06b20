"""Spare batch workers (issue 14, batch first row): a deployment that runs in an environment has its next job's
workers started when a job ends, their imports done; the next job takes them instead of starting its own.

The pools here run ``python -m tiffin.batch.worker_main`` on tiffin's own interpreter (a deployment environment's
interpreter is started the same way), with a scoring script written per test.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiffin.batch.pool import LocalPool, stop_spares, take_spare

SCRIPT = """
import os
def init():
    print(f"init in {os.getpid()} with SPARE_TAG={os.environ.get('SPARE_TAG')}", flush=True)
def run(mini_batch):
    return [f"{os.path.basename(p)} {os.getpid()}" for p in mini_batch]
"""


@pytest.fixture(autouse=True)
def no_spares_left() -> Iterator[None]:
    yield
    stop_spares()


def pool(tmp_path: Path, job: str, tag: str = "a") -> LocalPool:
    (tmp_path / "score.py").write_text(SCRIPT)
    settings = {
        "scorer": {"kind": "script", "code_dir": str(tmp_path), "scoring_script": "score.py", "model_dir": None,
                   "environment_variables": {}},
        "output_path": str(tmp_path / "out"),
        "logging_level": "INFO",
    }  # fmt: skip
    env = {**os.environ, "SPARE_TAG": tag}
    return LocalPool(size=1, job=job, settings=settings, log=tmp_path / f"{job}.log", python=sys.executable,
                     process_env=env)  # fmt: skip


def run_one(p: LocalPool, item: Path) -> None:
    p.start()
    deadline = time.monotonic() + 60
    kinds: list[str] = []
    while "done" not in kinds and time.monotonic() < deadline:
        for event in p.wait(0.2):
            kinds.append(event.kind)
            assert event.kind in ("ready", "done"), event
            if event.kind == "ready":
                p.submit(0, 0, [str(item)], str(item.with_suffix(".part")))
    assert "done" in kinds, kinds


def spare_pids(p: LocalPool) -> list[int]:
    from tiffin.batch import pool as pool_module

    with pool_module._SPARES_LOCK:
        return [
            child.pid for child, _ in pool_module._SPARES.get(p._spare_key(sys.executable, p.process_env or {}), [])
        ]


def test_the_next_job_takes_the_spare_started_when_a_job_ended(tmp_path: Path) -> None:
    item = tmp_path / "input.txt"
    item.write_text("x")
    first = pool(tmp_path, "first")
    run_one(first, item)
    first.close()
    first.keep_spares()
    spares = spare_pids(first)
    assert len(spares) == 1, "no spare was started when the job ended"
    second = pool(tmp_path, "second")
    run_one(second, item)
    worker_pid = second._slots[0].process.pid
    second.close()
    assert worker_pid == spares[0], "the next job started a worker of its own"
    assert spare_pids(second) == []
    # The spare's output, from init() on, is in the log of the job that took it, not the first job's.
    assert f"init in {worker_pid} with SPARE_TAG=a" in (tmp_path / "second.log").read_text()
    assert str(worker_pid) not in (tmp_path / "first.log").read_text()
    assert item.with_suffix(".part").read_text().strip() == f"input.txt {worker_pid}"


def test_a_spare_of_other_variables_is_not_taken(tmp_path: Path) -> None:
    item = tmp_path / "input.txt"
    item.write_text("x")
    pool(tmp_path, "warm", tag="old").keep_spares()
    other = pool(tmp_path, "job", tag="new")
    run_one(other, item)
    other.close()
    assert "SPARE_TAG=new" in (tmp_path / "job.log").read_text()
    old = pool(tmp_path, "warm", tag="old")
    assert take_spare(old._spare_key(sys.executable, old.process_env or {})) is not None, "the other spare stays"


def test_stop_spares_ends_their_processes(tmp_path: Path) -> None:
    p = pool(tmp_path, "job")
    p.keep_spares()
    key = p._spare_key(sys.executable, p.process_env or {})
    from tiffin.batch import pool as pool_module

    with pool_module._SPARES_LOCK:
        children = [child for child, _ in pool_module._SPARES[key]]
    stop_spares()
    assert take_spare(key) is None
    assert all(child.exitcode is not None for child in children), "a spare outlived stop_spares"
