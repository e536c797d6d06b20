"""Secrets at rest: endpoint keys and token secrets sealed in the store, TIFFIN_HOME private to its user."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from tiffin.errors import StoreError
from tiffin.store import Store
from tiffin.testing import free_port, serve_tiffin

PLAIN = Path(__file__).parent / "deployments" / "plain"


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIFFIN_SECRET_KEY", raising=False)
    monkeypatch.delenv("TIFFIN_STORE_URL", raising=False)


def _raw_secrets(store: Store, name: str) -> tuple[str, str, str]:
    with store.engine.connect() as conn:
        row = conn.execute(
            text("SELECT primary_key, secondary_key, token_secret FROM endpoints WHERE name = :n"), {"n": name}
        ).one()
    return tuple(row)  # type: ignore[return-value]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_and_token_secret_are_sealed_in_the_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Store.open(home=home) as store:
        record = store.create_endpoint("online", "ep", {})
        raw = _raw_secrets(store, "ep")
        for plain, stored in zip((record.primary_key, record.secondary_key, record.token_secret), raw, strict=True):
            assert plain and plain not in stored
        # The rest of tiffin sees plaintext, as before (the gateway compares keys from the record).
        assert store.get_endpoint("ep") == record
        assert store.list_endpoints()[0].primary_key == record.primary_key
        updated = store.set_keys("ep", primary="new-primary")
        assert updated.primary_key == "new-primary"
        assert "new-primary" not in _raw_secrets(store, "ep")[0]
    key_file = home / "secret-key"
    assert _mode(key_file) == 0o600
    # The database alone gives nothing away: another key cannot read it.
    assert Fernet(key_file.read_bytes().strip())


def test_the_environment_key_wins_and_no_file_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("TIFFIN_SECRET_KEY", key)
    with Store.open(home=home) as store:
        record = store.create_endpoint("online", "ep", {})
    assert not (home / "secret-key").exists()
    with Store.open(home=home) as store:
        assert store.get_endpoint("ep").primary_key == record.primary_key
    monkeypatch.delenv("TIFFIN_SECRET_KEY")
    with pytest.raises(StoreError, match="TIFFIN_SECRET_KEY") as info:
        Store.open(home=home)
    assert "secret-key" in str(info.value)
    assert not (home / "secret-key").exists()  # a new key would only hide the missing one


def test_a_wrong_key_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    with Store.open(home=home) as store:
        store.create_endpoint("online", "ep", {})
    (home / "secret-key").write_text(Fernet.generate_key().decode() + "\n")
    os.chmod(home / "secret-key", 0o644)  # restored by hand: made the user's alone again when read
    with pytest.raises(StoreError, match=r"secret-key") as info:
        Store.open(home=home)
    assert "another key" in str(info.value)
    assert _mode(home / "secret-key") == 0o600
    monkeypatch.setenv("TIFFIN_SECRET_KEY", Fernet.generate_key().decode())
    with pytest.raises(StoreError, match="TIFFIN_SECRET_KEY"):
        Store.open(home=home)


@pytest.mark.parametrize("bad", ["not-a-key", "", "x" * 44])
def test_a_malformed_key_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("TIFFIN_SECRET_KEY", bad or " ")
    with pytest.raises(StoreError, match=r"TIFFIN_SECRET_KEY.*Fernet\.generate_key"):
        Store.open(home=tmp_path / "home")
    monkeypatch.delenv("TIFFIN_SECRET_KEY")
    (tmp_path / "home2").mkdir()
    (tmp_path / "home2" / "secret-key").write_text(bad)
    with pytest.raises(StoreError, match="secret-key"):
        Store.open(home=tmp_path / "home2")


def test_a_second_key_in_the_environment_still_reads_old_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rotation: TIFFIN_SECRET_KEY=NEW,OLD reads what OLD sealed and seals new writes with NEW."""
    home = tmp_path / "home"
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("TIFFIN_SECRET_KEY", old)
    with Store.open(home=home) as store:
        record = store.create_endpoint("online", "ep", {})
    monkeypatch.setenv("TIFFIN_SECRET_KEY", f"{new},{old}")
    with Store.open(home=home) as store:
        assert store.get_endpoint("ep").primary_key == record.primary_key
    monkeypatch.setenv("TIFFIN_SECRET_KEY", new)  # opening with both re-sealed every row with the new key
    with Store.open(home=home) as store:
        assert store.get_endpoint("ep").primary_key == record.primary_key


def _serve_fails(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``tiffin serve`` with ``env`` added, which must exit non-zero at start-up."""
    done = subprocess.run(
        [sys.executable, "-m", "tiffin.cli", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert done.returncode != 0, done.stdout
    return done


def test_serve_with_a_wrong_key_says_so_without_a_traceback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Store.open(home=home) as store:
        store.create_endpoint("online", "ep", {})
    done = _serve_fails({"TIFFIN_HOME": str(home), "TIFFIN_SECRET_KEY": Fernet.generate_key().decode()})
    assert "TIFFIN_SECRET_KEY" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def _not_shared(path: Path) -> bool:
    return _mode(path) & 0o077 == 0


@pytest.mark.slow
def test_serve_keeps_its_home_private(tmp_path: Path) -> None:
    """Every file and folder of a real server with a deployment (store, WAL, logs, model copies) is its user's."""
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)  # an older tiffin's home
    with serve_tiffin(home) as server:
        client = server.client()
        client.online_endpoints.create_or_update({"name": "ep", "auth_mode": "key"})
        spec = {
            "name": "blue",
            "model": {"path": str(PLAIN / "model")},
            "code_configuration": {"code": str(PLAIN / "code"), "scoring_script": "score.py"},
            "instance_count": 1,
            "readiness_probe": {"initial_delay": 1, "period": 1},
        }
        client.online_deployments.create_or_update(spec, "ep", all_traffic=True)
        key = client.online_endpoints.get_keys("ep")["primaryKey"]
        r = httpx.post(
            f"{server.url}/endpoints/ep/score",
            json={"data": [[1, 2]]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert _mode(home) == 0o700
        wanted = ["tiffin.db", "tiffin.db-wal", "tiffin.db-shm", "admin-token", "secret-key"]
        for name in wanted:
            assert (home / name).exists(), name
        everything = [home, *home.rglob("*")]
        assert any(p.name == "replica-0.log" for p in everything)
        assert any(p.parts[-2:] == ("model", "weights.json") for p in everything)
        # Model files are hard links to the user's own files: as readable as those, behind the 0700 folders.
        model_files = {(p.stat().st_dev, p.stat().st_ino) for p in (PLAIN / "model").rglob("*")}
        shared = [
            f"{p} {_mode(p):o}"
            for p in everything
            if not p.is_symlink() and not _not_shared(p) and (p.stat().st_dev, p.stat().st_ino) not in model_files
        ]
        assert shared == []
        # The key the server answered with is not in its database file, nor in any other file it keeps
        # (replica logs, specs, job files), even after a request with a wrong key.
        assert key.encode() not in b"".join((home / n).read_bytes() for n in ("tiffin.db", "tiffin.db-wal"))
        wrong = httpx.post(f"{server.url}/endpoints/ep/score", json={}, headers={"Authorization": f"Bearer {key}x"})
        assert wrong.status_code == 401 and key not in wrong.text
        holding = [p for p in home.rglob("*") if p.is_file() and not p.is_symlink() and key.encode() in p.read_bytes()]
        assert holding == []


def test_a_home_that_cannot_be_made_private_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = _serve_fails({"TIFFIN_HOME": str(blocker / "home")})
    assert "TIFFIN_HOME" in done.stderr and "Traceback" not in done.stderr, done.stderr


def _admin_token_when_released(home: str, barrier: Any, results: Any) -> None:
    from tiffin.server import ensure_admin_token

    try:
        barrier.wait(timeout=30)
        results.put(("ok", ensure_admin_token(Path(home))[0]))
    except BaseException as exc:
        results.put(("error", repr(exc)))


def test_servers_starting_at_once_share_one_whole_admin_token(tmp_path: Path) -> None:
    """Several `tiffin serve` on one home at the same moment: one token, never an error or an empty read."""
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        home = tmp_path / f"home-{attempt}"
        barrier, results = context.Barrier(6), context.Queue()
        children = [
            context.Process(target=_admin_token_when_released, args=(str(home), barrier, results)) for _ in range(6)
        ]
        for child in children:
            child.start()
        answers = [results.get(timeout=60) for _ in children]
        for child in children:
            child.join(timeout=30)
        assert all(kind == "ok" for kind, _ in answers), answers
        tokens = {token for _, token in answers}
        assert len(tokens) == 1 and "" not in tokens, tokens
        assert (home / "admin-token").read_text().strip() in tokens
        assert _mode(home / "admin-token") == 0o600
