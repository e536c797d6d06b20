"""Replicas are reachable by the server's user only, and a deployment cannot start without bound.

* The supervisor serves each replica on a Unix socket in a folder only the server's user may enter
  (0700), not on a loopback port that any local user could call without a credential.
* ``instance_count`` above ``TIFFIN_MAX_INSTANCES`` is refused by the REST API (and so by the CLI and
  SDK) with a 422 naming the field and the setting, and a stored one is failed by the supervisor.
* The supervisor starts at most ``max_starts`` replicas at once, across the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.routing import Mount
from test_supervisor import eventually, run, spec_of, state_is, supervising

from tiffin.api import create_api
from tiffin.runners._server_process import listens_beyond_loopback
from tiffin.store import Store
from tiffin.supervisor import Supervisor
from tiffin.supervisor.sockets import SOCKET_PATH_MAX, SocketFolder, remove_stale_folders
from tiffin.testing import serve_deployment

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient


def _socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _tcp_listeners() -> dict[str, str]:
    """Listening TCP sockets of this machine: inode -> local address (hex, as /proc/net/tcp writes it)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    found[fields[9]] = fields[1]
    return found


def _unix_client(url: str) -> httpx.AsyncClient:
    assert url.startswith("unix:"), url
    transport = httpx.AsyncHTTPTransport(uds=url.removeprefix("unix:"))
    return httpx.AsyncClient(transport=transport, base_url="http://localhost", trust_env=False)


# --- the socket folder ------------------------------------------------------------------------------


def test_socket_folder_is_private_and_short_enough_with_a_long_home(tmp_path: Path):
    short_home = Path(tempfile.mkdtemp(prefix="th-"))  # as short as ~/.tiffin; pytest's tmp_path is not
    short = SocketFolder(short_home)
    long_home = tmp_path / ("h" * 60) / ("o" * 60)
    long = SocketFolder(long_home)
    try:
        for folder in (short, long):
            path = folder.path_for(123456, 99999)
            assert len(os.fsencode(path)) <= SOCKET_PATH_MAX
            mode = os.stat(path.parent).st_mode
            assert stat.S_IMODE(mode) == 0o700 and os.stat(path.parent).st_uid == os.getuid()
        assert short.path_for(1, 0).is_relative_to(short_home / "run")
        assert not long.path_for(1, 0).is_relative_to(long_home)  # the fallback: a private folder in /tmp
        # One name per deployment and replica number: no two replicas share a socket.
        names = {short.path_for(d, i) for d in (1, 2, 11) for i in (0, 1, 11)}
        assert len(names) == 9
        roots = [short.root, long.root]
    finally:
        short.remove()
        long.remove()
        shutil.rmtree(short_home)
    assert not any(root.exists() for root in roots)


def test_folders_of_dead_supervisors_are_removed(tmp_path: Path):
    # A supervisor killed outright (SIGKILL) leaves its folder: the next one removes it.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    home = tmp_path / "home"
    left = [home / "run" / f"{dead_pid}-abcd1234", Path(tempfile.gettempdir()) / f"tiffin-run-{dead_pid}-abcd1234"]
    kept = [home / "run" / f"{os.getpid()}-abcd1234", home / "run" / "not-a-supervisor"]
    try:
        for folder in left + kept:
            folder.mkdir(parents=True)
            (folder / "d1-r0.sock").touch()
        assert sorted(remove_stale_folders(home)) == sorted(left)
        assert not any(folder.exists() for folder in left) and all(folder.exists() for folder in kept)
    finally:
        for folder in left:
            shutil.rmtree(folder, ignore_errors=True)


# --- real replicas -------------------------------------------------------------------------------


@pytest.mark.slow
def test_replicas_listen_on_private_unix_sockets_only(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    # A TIFFIN_HOME as long as pytest's own tmp paths get: too long for AF_UNIX paths under it.
    home_parent = tmp_path / ("long" * 20)
    home_parent.mkdir()

    async def main() -> None:
        async with supervising(home_parent) as (store, supervisor):
            store.create_endpoint("online", "ep-b", {"name": "ep-b"})
            store.put_deployment("ep", "blue", "online", spec_of("plain", instance_count=2))
            store.put_deployment("ep-b", "lue", "online", spec_of("plain"))
            supervisor.notify()
            await eventually(state_is(store, "Succeeded"), what="Succeeded")
            await eventually(lambda: supervisor.ready_replicas("ep-b", "lue"), what="the second deployment")
            ready = [*supervisor.ready_replicas("ep", "blue"), *supervisor.ready_replicas("ep-b", "lue")]
            urls = [r.url for r in ready]
            assert len(set(urls)) == 3 and all(url.startswith("unix:") for url in urls), urls
            listeners = _tcp_listeners()
            for status in supervisor.replicas():
                path = Path(status.url.removeprefix("unix:"))
                assert path.is_socket() and len(os.fsencode(path)) <= SOCKET_PATH_MAX
                folder = os.stat(path.parent)
                assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.getuid()
                # Nothing of the replica listens on TCP: no port for other local users to call.
                assert status.pid is not None
                assert not _socket_inodes(status.pid) & set(listeners), "a replica listens on TCP"
            for url in urls:
                async with _unix_client(url) as client:
                    response = await client.post("/score", json={"data": [[1, 2]]})
                    assert response.status_code == 200 and response.json()["sums"] == [6]
            paths = [Path(url.removeprefix("unix:")) for url in urls]
        assert not any(path.exists() for path in paths)  # stop() removed the sockets with their folder

    with caplog.at_level(logging.INFO, logger="tiffin.supervisor"):
        run(main)
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("started replica")]
    assert started and all(" on unix:" in line and "port" not in line for line in started), started


@pytest.mark.slow
def test_replica_starts_are_bounded_across_the_server(tmp_path: Path):
    seen: list[int] = []

    async def main() -> None:
        async with supervising(tmp_path, max_starts=2) as (store, supervisor):
            store.create_endpoint("online", "ep2", {"name": "ep2"})
            store.put_deployment("ep", "blue", "online", spec_of("plain", instance_count=3))
            store.put_deployment("ep2", "green", "online", spec_of("plain", instance_count=2))
            supervisor.notify()

            def all_ready() -> bool:
                seen.append(sum(1 for r in supervisor.replicas() if r.state in ("starting",)))
                pending = [r for r in supervisor.replicas() if r.state == "pending"]
                assert all(r.pid is None for r in pending)
                return (
                    len(supervisor.ready_replicas("ep", "blue")) == 3
                    and len(supervisor.ready_replicas("ep2", "green")) == 2
                )

            await eventually(all_ready, timeout=80, what="five ready replicas")

    run(main)
    assert max(seen) == 2, seen


# --- instance_count is capped ----------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("TIFFIN_MAX_INSTANCES", "4")
    store = Store.open(home=tmp_path)
    app = create_api(store, admin_token="t", public_url="http://127.0.0.1:7700", home=tmp_path)
    with TestClient(Starlette(routes=[Mount("/api", app)]), headers={"Authorization": "Bearer t"}) as client:
        assert client.post("/api/online-endpoints", json={"name": "ep"}).status_code == 201
        yield client
    store.close()


def test_instance_count_above_the_servers_cap_is_refused(api: TestClient):
    url = "/api/online-endpoints/ep/deployments/blue"
    body = {k: v for k, v in spec_of("plain").items() if k not in ("name", "endpoint_name")}
    for count in (10_000, 5):
        refused = api.put(url, json={**body, "instance_count": count})
        assert refused.status_code == 422, refused.text
        message = refused.json()["message"]
        assert "instance_count" in message and "TIFFIN_MAX_INSTANCES" in message and "4" in message
    assert api.get(url).status_code == 404  # nothing was stored
    assert api.put(url, json={**body, "instance_count": 4}).status_code == 201
    # An update (CLI `online-deployment update --set instance_count=…` is a PUT too) is checked the same way.
    assert api.put(url, json={**body, "instance_count": 10_000}).status_code == 422
    assert api.get(url).json()["instance_count"] == 4


def test_supervisor_fails_a_stored_deployment_above_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Written before the cap existed, or by another server with a higher cap: never started all at once.
    monkeypatch.setenv("TIFFIN_MAX_INSTANCES", "2")
    with Store.open(url=f"sqlite:///{tmp_path}/t.db", home=tmp_path) as store:
        store.create_endpoint("online", "ep", {"name": "ep"})
        store.put_deployment("ep", "blue", "online", spec_of("plain", instance_count=10_000))

        async def main() -> None:
            supervisor = Supervisor(store, tmp_path / "home")
            try:
                await supervisor.reconcile_once()
                assert supervisor.replicas() == []
            finally:
                await supervisor.stop()

        asyncio.run(main())
        record = store.get_deployment("ep", "blue")
        assert record.state == "Failed"
        assert "instance_count" in (record.reason or "") and "TIFFIN_MAX_INSTANCES" in (record.reason or "")


# --- a server the user brings (BYOC) is told to stay on loopback ---------------------------------------


def test_listens_beyond_loopback_reads_proc_net_tables(tmp_path: Path):
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

    def table(*rows: tuple[str, int, str]) -> str:
        path = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        lines = [f"0: {address}:{port:04X} 00000000:0000 {state} 0:0 00:0 0 0 0 1 0" for address, port, state in rows]
        path.write_text(header + "\n".join(lines) + "\n")
        return str(path)

    loopback = table(("0100007F", 8000, "0A"), ("00000000", 9000, "0A"), ("00000000", 8000, "01"))
    assert listens_beyond_loopback(8000, [loopback]) is False  # 127.0.0.1; the 0.0.0.0 row is a connection
    assert listens_beyond_loopback(9000, [loopback]) is True  # 0.0.0.0
    v6 = table(("00000000000000000000000001000000", 8001, "0A"), ("0000000000000000FFFF00000100007F", 8002, "0A"))
    assert listens_beyond_loopback(8001, [v6]) is False and listens_beyond_loopback(8002, [v6]) is False
    assert listens_beyond_loopback(8003, [table(("00000000000000000000000000000000", 8003, "0A"))]) is True  # ::
    assert listens_beyond_loopback(8000, [str(tmp_path / "missing")]) is None


@pytest.mark.slow
def test_byoc_server_gets_a_loopback_host_to_bind(tmp_path: Path):
    spec = {
        "name": "byoc",
        "endpoint_name": "tests",
        "environment": {
            "command": f"{sys.executable} -m http.server --bind $HOST $PORT",
            "inference_config": {"readiness_route": {"path": "/", "port": 8000}},
        },
    }
    file = tmp_path / "byoc.yml"
    file.write_text(yaml.safe_dump(spec))
    with serve_deployment(file, timeout=60) as replica:
        assert httpx.get(replica.url + "/").text == "Healthy"
        started = re.search(r"--bind (\S+) (\d+)", replica.log())
        assert started is not None, replica.log()
        assert started.group(1) == "127.0.0.1"
        assert listens_beyond_loopback(int(started.group(2))) in (False, None)
        assert "beyond loopback" not in replica.log()
