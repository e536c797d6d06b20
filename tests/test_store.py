"""Tests of the state store (``tiffin.store``) on SQLite and on a real, throwaway PostgreSQL.

The ``store_url`` fixture runs each backend-neutral test twice. The PostgreSQL case starts its own
server once per session (``initdb`` + ``pg_ctl`` from the Debian ``postgresql`` package, as the
``postgres`` user when the tests run as root) and gives every test a fresh database; it is skipped,
with the reason, when the server binaries or the ``psycopg`` driver are missing.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import PgServer, pg_database
from sqlalchemy import inspect, select, text

from tiffin.errors import BadRequestError, ConflictError, NotFoundError, SpecError, StoreError
from tiffin.store import Store, default_url, head_revision
from tiffin.store.models import Base, Counter, Deployment

# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Store.open keeps its secret key in $TIFFIN_HOME: a fresh one per test, never the user's."""
    monkeypatch.setenv("TIFFIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TIFFIN_SECRET_KEY", raising=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'tiffin.db'}"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    with pg_database(server) as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A store migrated to head."""
    with Store.open(store_url) as opened:
        yield opened


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """A SQLite store, for tests of SQLite-only behaviour."""
    with Store.open(f"sqlite:///{tmp_path / 'tiffin.db'}") as opened:
        yield opened


# --- locating the store ----------------------------------------------------------------------------


def test_default_url_uses_home_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_url(tmp_path) == f"sqlite:///{tmp_path / 'tiffin.db'}"
    monkeypatch.setenv("TIFFIN_HOME", str(tmp_path / "env-home"))
    assert default_url() == f"sqlite:///{tmp_path / 'env-home' / 'tiffin.db'}"
    monkeypatch.delenv("TIFFIN_HOME")
    assert default_url() == f"sqlite:///{Path('~/.tiffin').expanduser().resolve() / 'tiffin.db'}"


def test_open_resolves_url_home_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIFFIN_STORE_URL", raising=False)
    monkeypatch.setenv("TIFFIN_HOME", str(tmp_path / "from-env"))
    with Store.open() as store:
        assert store.url.database == str(tmp_path / "from-env" / "tiffin.db")
    assert (tmp_path / "from-env" / "tiffin.db").exists()

    with Store.open(home=tmp_path / "explicit-home") as store:
        assert store.url.database == str(tmp_path / "explicit-home" / "tiffin.db")

    monkeypatch.setenv("TIFFIN_STORE_URL", f"sqlite:///{tmp_path / 'from-url.db'}")
    with Store.open(home=tmp_path / "ignored") as store:  # the URL wins over any home
        assert store.url.database == str(tmp_path / "from-url.db")
    with Store.open(f"sqlite:///{tmp_path / 'arg.db'}") as store:  # an explicit URL wins over env
        assert store.url.database == str(tmp_path / "arg.db")


def test_in_memory_sqlite_works() -> None:
    with Store.open("sqlite://") as store:
        store.create_endpoint("online", "mem", {})
        assert [e.name for e in store.list_endpoints()] == ["mem"]


# --- schema and migrations -------------------------------------------------------------------------


def test_open_migrates_to_head(store: Store) -> None:
    assert head_revision() == "0006"
    assert store.schema_revision() == "0006"
    tables = {"endpoints", "deployments", "jobs", "counters", "mini_batches"}
    assert set(inspect(store.engine).get_table_names()) >= tables


def test_models_match_migrations(store: Store) -> None:
    """A model changed without a migration (or the reverse) shows up here."""
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_migration_0001_to_head_keeps_rows(store_url: str) -> None:
    with Store(store_url) as old:
        old.upgrade("0001")
        assert old.schema_revision() == "0001"
        assert "jobs" not in inspect(old.engine).get_table_names()
        old.create_endpoint("batch", "scorer", {"description": "kept"}, primary_key="pk-1")
        # Written as 0001's code did: its model had no owner column.
        with old.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO deployments (id, endpoint_name, name, kind, spec, state, created_at, updated_at, "
                    "generation) VALUES ('d1', 'scorer', 'v1', 'batch', :spec, 'Creating', :now, :now, 1)"
                ),
                {"spec": json.dumps({"model": "m:1"}), "now": datetime.now(UTC)},
            )
        old.set_traffic("scorer", {"v1": 100})
        generation = old.routing_generation()

    with Store.open(store_url) as new:
        assert new.schema_revision() == "0006"
        endpoint = new.get_endpoint("scorer")
        assert endpoint.spec == {"description": "kept"}
        assert endpoint.primary_key == "pk-1"
        assert endpoint.traffic == {"v1": 100}
        assert new.get_deployment("scorer", "v1").spec == {"model": "m:1"}
        assert new.routing_generation() == generation
        assert new.create_job("job-1", "scorer", "v1", {"data": "x"}).status == "Queued"


def test_migration_0002_to_head_keeps_jobs(store_url: str) -> None:
    with Store(store_url) as old:
        old.upgrade("0002")
        old.create_endpoint("batch", "scorer", {})
        # Written as 0002's code did: its model had no spec column.
        with old.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO jobs (name, endpoint_name, deployment_name, status, inputs, created_at) "
                    "VALUES ('job-1', 'scorer', 'v1', 'Queued', :inputs, :now)"
                ),
                {"inputs": json.dumps({"files": ["a.csv"]}), "now": datetime.now(UTC)},
            )
    with Store.open(store_url) as new:
        job = new.get_job("job-1")
        assert job.inputs == {"files": ["a.csv"]} and job.spec is None and new.mini_batches("job-1") == []


def test_plaintext_keys_of_an_older_store_are_sealed_on_open(store_url: str) -> None:
    """Rows written before sealing (0003's code, no secret key) keep working and are sealed in place."""
    with Store(store_url) as old:
        old.upgrade("0003")
        old.create_endpoint("online", "scorer", {}, primary_key="pk-1", secondary_key="sk-1", token_secret="ts-1")
        generation = old.routing_generation()
    with Store.open(store_url) as new:
        endpoint = new.get_endpoint("scorer")
        assert (endpoint.primary_key, endpoint.secondary_key, endpoint.token_secret) == ("pk-1", "sk-1", "ts-1")
        assert new.routing_generation() == generation  # sealing changes nothing a reader sees
        with new.engine.connect() as conn:
            raw = conn.execute(text("SELECT primary_key, secondary_key, token_secret FROM endpoints")).one()
        assert all(value.startswith("fernet:") for value in raw), raw
    with Store(store_url) as keyless, pytest.raises(StoreError, match="secret key"):
        keyless.get_endpoint("scorer")
    with Store.open(store_url) as again:  # opening again leaves sealed rows as they are
        assert again.get_endpoint("scorer").primary_key == "pk-1"


def test_job_names_that_cannot_name_a_folder_are_refused(store: Store) -> None:
    store.create_endpoint("batch", "scorer", {})
    for bad in ("../escape", "a/b", ".hidden", ""):
        with pytest.raises(BadRequestError, match="job name"):
            store.create_job(bad, "scorer")
    assert store.list_jobs() == []


def test_mini_batches_are_planned_once_and_track_progress(store: Store) -> None:
    store.create_endpoint("batch", "scorer", {})
    store.create_job("job-1", "scorer", "v1", {"files": ["a", "b", "c"]}, spec={"name": "v1"})
    assert store.get_job("job-1").spec == {"name": "v1"}
    planned = store.plan_job("job-1", [["a", "b"], ["c"]])
    assert [(b.index, b.items, b.status, b.attempts) for b in planned] == [
        (0, ["a", "b"], "pending", 0),
        (1, ["c"], "pending", 0),
    ]
    store.update_mini_batch("job-1", 0, status="done", rows=2, attempts=1)
    # A resumed job plans again and gets the plan (and progress) it had, not a new one.
    again = store.plan_job("job-1", [["x"]])
    assert [(b.items, b.status, b.rows) for b in again] == [(["a", "b"], "done", 2), (["c"], "pending", None)]
    with pytest.raises(ValueError, match="status must be one of"):
        store.update_mini_batch("job-1", 1, status="lost")
    with pytest.raises(NotFoundError):
        store.update_mini_batch("job-1", 7, status="done")
    store.delete_endpoint("scorer")  # jobs outlive their endpoint, as history
    assert len(store.mini_batches("job-1")) == 2


def test_job_updates_can_be_compare_and_set(store: Store) -> None:
    store.create_endpoint("batch", "scorer", {})
    store.create_job("job-1", "scorer")
    store.update_job("job-1", status="Running")
    store.update_job("job-1", status="Canceled")
    # A runner finishing late must not turn a canceled job into a completed one.
    assert store.update_job("job-1", expected_status="Running", status="Completed") is None
    assert store.get_job("job-1").status == "Canceled"


def test_open_twice_is_a_no_op(store_url: str) -> None:
    with Store.open(store_url) as first:
        first.create_endpoint("online", "e", {})
    with Store.open(store_url) as second:
        assert second.get_endpoint("e").name == "e"
        assert second.schema_revision() == head_revision()


def test_schema_from_newer_tiffin_is_refused(store_url: str) -> None:
    with Store.open(store_url) as store, store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match="newer tiffin"):
        Store.open(store_url)


def _open_when_released(url: str, barrier: Any, results: Any) -> None:
    """Child process: wait until every sibling is ready, then open (and so migrate) the store."""
    try:
        barrier.wait(timeout=60)
        with Store.open(url) as store:
            results.put(("ok", store.schema_revision()))
    except BaseException as exc:
        results.put(("error", repr(exc)))


def test_processes_opening_a_fresh_database_at_once_all_succeed(store_url: str) -> None:
    processes = 4
    # spawn, not fork: a forked child would inherit the parent's open database connections.
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    children = [ctx.Process(target=_open_when_released, args=(store_url, barrier, results)) for _ in range(processes)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert outcomes == [("ok", head_revision())] * processes
    with Store.open(store_url) as store:
        with store.session() as session:
            # Each counter seeded once (routing, and jobs since 0004), however many processes migrated at once.
            assert sorted(session.scalars(select(Counter.name))) == ["jobs", "routing"]
        assert store.routing_generation() == 0


# --- SQLite connection settings --------------------------------------------------------------------


def test_sqlite_uses_wal_foreign_keys_and_busy_timeout(sqlite_store: Store) -> None:
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0


def test_sqlite_reader_is_not_blocked_by_an_open_write(sqlite_store: Store) -> None:
    sqlite_store.create_endpoint("online", "e", {})
    before = sqlite_store.routing_generation()
    with sqlite_store.session(write=True) as session:
        session.execute(text("UPDATE counters SET value = value + 1"))
        # WAL: another connection still reads the last committed value while the write is open.
        assert sqlite_store.routing_generation() == before
    assert sqlite_store.routing_generation() == before + 1


# --- endpoints -------------------------------------------------------------------------------------


def test_endpoint_round_trip(store: Store) -> None:
    created = store.create_endpoint("online", "ep", {"description": "d", "tags": {"a": "1"}})
    assert created.kind == "online"
    assert created.spec == {"description": "d", "tags": {"a": "1"}}
    assert created.traffic == {} and created.mirror_traffic == {}
    assert created.auth_mode == "key"
    assert created.provisioning_state == "Creating"
    assert created.generation == 1
    assert created.primary_key and created.secondary_key and created.token_secret
    assert len({created.primary_key, created.secondary_key, created.token_secret}) == 3
    assert created.primary_key not in repr(created)  # secrets stay out of logs
    assert created.created_at.tzinfo is not None and created.created_at.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - created.created_at).total_seconds()) < 60

    fetched = store.get_endpoint("ep")
    assert fetched == created
    assert store.get_endpoint("ep", "online") == created

    fetched.spec["description"] = "changed in memory only"
    assert store.get_endpoint("ep").spec["description"] == "d"


def test_create_endpoint_with_given_keys(store: Store) -> None:
    created = store.create_endpoint("batch", "b", {}, "aad_token", primary_key="p", secondary_key="s", token_secret="t")
    assert (created.auth_mode, created.primary_key, created.secondary_key, created.token_secret) == (
        "aad_token",
        "p",
        "s",
        "t",
    )


def test_list_endpoints_by_kind(store: Store) -> None:
    store.create_endpoint("online", "b-online", {})
    store.create_endpoint("batch", "a-batch", {})
    store.create_endpoint("online", "c-online", {})
    assert [e.name for e in store.list_endpoints()] == ["a-batch", "b-online", "c-online"]
    assert [e.name for e in store.list_endpoints("online")] == ["b-online", "c-online"]
    assert [e.name for e in store.list_endpoints(kind="batch")] == ["a-batch"]
    with pytest.raises(ValueError, match="kind"):
        store.list_endpoints("streaming")


def test_create_endpoint_conflicts(store: Store) -> None:
    store.create_endpoint("online", "ep", {})
    with pytest.raises(ConflictError, match=r"online endpoint 'ep' already exists.*tiffin online-endpoint update"):
        store.create_endpoint("online", "ep", {})
    with pytest.raises(ConflictError, match="taken by an online endpoint"):
        store.create_endpoint("batch", "ep", {})
    with pytest.raises(ValueError, match="kind"):
        store.create_endpoint("streaming", "x", {})


def test_endpoint_not_found_messages(store: Store) -> None:
    with pytest.raises(NotFoundError) as info:
        store.get_endpoint("nope", "online")
    assert str(info.value) == "online endpoint 'nope' not found; list them with `tiffin online-endpoint list`"
    with pytest.raises(NotFoundError, match="tiffin batch-endpoint list"):
        store.get_endpoint("nope", "batch")
    with pytest.raises(NotFoundError, match=r"online-endpoint list.*batch-endpoint list"):
        store.get_endpoint("nope")

    store.create_endpoint("batch", "b", {})
    with pytest.raises(NotFoundError, match="online endpoint 'b' not found"):
        store.get_endpoint("b", "online")  # exists, but as the other kind
    for call in (
        lambda: store.update_endpoint("nope", spec={}),
        lambda: store.delete_endpoint("nope"),
        lambda: store.set_traffic("nope", {}),
        lambda: store.set_keys("nope", primary="x"),
        lambda: store.list_deployments("nope"),
    ):
        with pytest.raises(NotFoundError, match="endpoint 'nope' not found"):
            call()


def test_update_endpoint(store: Store) -> None:
    created = store.create_endpoint("online", "ep", {"v": 1})
    updated = store.update_endpoint("ep", spec={"v": 2}, provisioning_state="Succeeded", auth_mode="aml_token")
    assert updated.spec == {"v": 2}
    assert updated.provisioning_state == "Succeeded"
    assert updated.auth_mode == "aml_token"
    assert updated.generation == created.generation + 1
    assert updated.updated_at >= created.updated_at
    assert updated.created_at == created.created_at
    assert store.get_endpoint("ep") == updated

    with pytest.raises(ValueError, match="cannot update"):
        store.update_endpoint("ep", name="renamed")
    with pytest.raises(ValueError, match="provisioning_state"):
        store.update_endpoint("ep", provisioning_state="Sleeping")
    with pytest.raises(NotFoundError, match="batch endpoint 'ep' not found"):
        store.update_endpoint("ep", kind="batch", spec={})


def test_set_keys(store: Store) -> None:
    created = store.create_endpoint("online", "ep", {})
    rotated = store.set_keys("ep", primary="new-primary")
    assert rotated.primary_key == "new-primary"
    assert rotated.secondary_key == created.secondary_key
    assert rotated.generation == created.generation + 1
    both = store.set_keys("ep", primary="p2", secondary="s2")
    assert (both.primary_key, both.secondary_key) == ("p2", "s2")
    assert both.token_secret == created.token_secret


def test_delete_endpoint_cascades_to_deployments(store: Store) -> None:
    store.create_endpoint("online", "ep", {})
    store.create_endpoint("online", "other", {})
    store.put_deployment("ep", "blue", "online", {})
    store.put_deployment("ep", "green", "online", {})
    store.put_deployment("other", "blue", "online", {})
    store.set_traffic("ep", {"blue": 100})

    store.delete_endpoint("ep")

    with pytest.raises(NotFoundError):
        store.get_endpoint("ep")
    with store.session() as session:  # gone from the table, not just hidden by the API
        rows = session.execute(select(Deployment.endpoint_name, Deployment.name)).all()
    assert [tuple(row) for row in rows] == [("other", "blue")]
    # The name is free again.
    assert store.create_endpoint("batch", "ep", {}).generation == 1


# --- deployments -----------------------------------------------------------------------------------


def test_deployment_round_trip(store: Store) -> None:
    endpoint = store.create_endpoint("online", "ep", {})
    created = store.put_deployment("ep", "blue", "online", {"model": "m:1", "instance_count": 1})
    assert (created.endpoint_name, created.name, created.kind) == ("ep", "blue", "online")
    assert created.state == "Creating" and created.reason is None
    assert created.generation == 1
    assert created.created_at.tzinfo is not None
    assert store.get_deployment("ep", "blue") == created

    replaced = store.put_deployment("ep", "blue", "online", {"model": "m:2"})
    assert replaced.id == created.id
    assert replaced.spec == {"model": "m:2"}
    assert replaced.state == "Updating"
    assert replaced.generation == 2
    assert replaced.created_at == created.created_at
    # A deployment change is a change of the endpoint's routing too.
    assert store.get_endpoint("ep").generation == endpoint.generation + 2


def test_list_deployments(store: Store) -> None:
    store.create_endpoint("online", "b-ep", {})
    store.create_endpoint("online", "a-ep", {})
    store.put_deployment("b-ep", "green", "online", {})
    store.put_deployment("b-ep", "blue", "online", {})
    store.put_deployment("a-ep", "zeta", "online", {})
    assert [(d.endpoint_name, d.name) for d in store.list_deployments()] == [
        ("a-ep", "zeta"),
        ("b-ep", "blue"),
        ("b-ep", "green"),
    ]
    assert [d.name for d in store.list_deployments("b-ep")] == ["blue", "green"]
    # Same deployment name under two endpoints is fine: names are unique per endpoint only.
    store.put_deployment("a-ep", "blue", "online", {})
    assert len({d.id for d in store.list_deployments()}) == 4


def test_put_deployment_needs_an_endpoint_of_its_kind(store: Store) -> None:
    with pytest.raises(NotFoundError, match="online endpoint 'missing' not found"):
        store.put_deployment("missing", "blue", "online", {})
    store.create_endpoint("batch", "b", {})
    with pytest.raises(ConflictError, match="'b' is a batch endpoint and cannot hold online deployment"):
        store.put_deployment("b", "blue", "online", {})


def test_deployment_not_found_message(store: Store) -> None:
    store.create_endpoint("online", "ep", {})
    with pytest.raises(NotFoundError) as info:
        store.get_deployment("ep", "blue")
    assert str(info.value) == (
        "online deployment 'blue' not found on endpoint 'ep'; list them with "
        "`tiffin online-deployment list --endpoint-name ep`"
    )
    with pytest.raises(NotFoundError, match="deployment 'blue' not found"):
        store.delete_deployment("ep", "blue")
    with pytest.raises(NotFoundError, match="deployment 'blue' not found"):
        store.set_deployment_state("ep", "blue", "Succeeded")


def test_set_deployment_state(store: Store) -> None:
    store.create_endpoint("online", "ep", {})
    store.put_deployment("ep", "blue", "online", {})
    before = store.routing_generation()
    failed = store.set_deployment_state("ep", "blue", "Failed", "image pull failed")
    # An observed state is not a change of desired state: the deployment's generation stays where it is. The
    # routing counter moves, once per change of state: other servers' gateways route by the state.
    assert (failed.state, failed.reason, failed.generation) == ("Failed", "image pull failed", 1)
    assert store.routing_generation() == before + 1
    store.set_deployment_state("ep", "blue", "Failed", "image pull failed again")
    assert store.routing_generation() == before + 1
    ok = store.set_deployment_state("ep", "blue", "Succeeded")
    assert (ok.state, ok.reason) == ("Succeeded", None)
    assert store.routing_generation() == before + 2
    with pytest.raises(ValueError, match="state"):
        store.set_deployment_state("ep", "blue", "Sleeping")


def test_set_deployment_state_compare_and_set(store: Store) -> None:
    store.create_endpoint("online", "ep", {})
    first = store.put_deployment("ep", "blue", "online", {"instance_count": 1})
    store.put_deployment("ep", "blue", "online", {"instance_count": 2})  # a newer spec: Updating
    # A state computed for the first spec must not land on the second.
    assert store.set_deployment_state("ep", "blue", "Succeeded", expected_generation=first.generation) is None
    assert store.get_deployment("ep", "blue").state == "Updating"
    current = store.get_deployment("ep", "blue").generation
    done = store.set_deployment_state("ep", "blue", "Succeeded", expected_generation=current)
    assert done is not None and done.state == "Succeeded"


def test_delete_deployment(store: Store) -> None:
    store.create_endpoint("online", "ep", {})
    store.put_deployment("ep", "blue", "online", {})
    store.put_deployment("ep", "green", "online", {})
    store.set_traffic("ep", {"blue": 100, "green": 0}, {"green": 10})
    with pytest.raises(ConflictError, match=r"'blue' still receives traffic.*set its traffic to 0"):
        store.delete_deployment("ep", "blue")
    with pytest.raises(ConflictError, match="'green' still receives traffic"):  # mirrored traffic counts
        store.delete_deployment("ep", "green")
    store.set_traffic("ep", {"blue": 100, "green": 0}, {})
    store.delete_deployment("ep", "green")
    assert [d.name for d in store.list_deployments("ep")] == ["blue"]
    assert store.get_endpoint("ep").traffic == {"blue": 100}  # its zero entry went with it


# --- traffic ---------------------------------------------------------------------------------------


def test_set_traffic_and_mirror(store: Store) -> None:
    store.create_endpoint("online", "ep", {})
    store.put_deployment("ep", "blue", "online", {})
    store.put_deployment("ep", "green", "online", {})
    endpoint = store.set_traffic("ep", {"blue": 90, "green": 10})
    assert (endpoint.traffic, endpoint.mirror_traffic) == ({"blue": 90, "green": 10}, {})
    endpoint = store.set_traffic("ep", {"blue": 100}, {"green": 20})
    assert (endpoint.traffic, endpoint.mirror_traffic) == ({"blue": 100}, {"green": 20})
    # Without a mirror argument the mirror split stays, and is checked against the new live split.
    with pytest.raises(SpecError, match="green get live traffic"):
        store.set_traffic("ep", {"blue": 0, "green": 100})
    endpoint = store.set_traffic("ep", {"blue": 0, "green": 100}, {})
    assert (endpoint.traffic, endpoint.mirror_traffic) == ({"blue": 0, "green": 100}, {})
    endpoint = store.set_traffic("ep", {"blue": 0, "green": 0})  # all zero is allowed, as in Azure ML
    assert endpoint.traffic == {"blue": 0, "green": 0}


@pytest.mark.parametrize(
    ("traffic", "mirror", "message"),
    [
        ({"red": 100}, {}, "deployment 'red' does not exist"),
        ({"blue": 90}, {}, "add up to 100"),
        ({"blue": 60, "green": 60}, {}, "add up to 100"),
        ({"blue": -10, "green": 110}, {}, "0 to 100"),
        ({"blue": 100}, {"green": 60}, "at most 50"),
        ({"blue": 100}, {"blue": 10}, "cannot also receive mirrored"),
        ({"blue": 100}, {"red": 10}, "deployment 'red' does not exist"),
    ],
)
def test_set_traffic_rejects_bad_splits(
    store: Store, traffic: dict[str, int], mirror: dict[str, int], message: str
) -> None:
    store.create_endpoint("online", "ep", {})
    store.put_deployment("ep", "blue", "online", {})
    store.put_deployment("ep", "green", "online", {})
    before = store.get_endpoint("ep")
    with pytest.raises(SpecError, match=message):
        store.set_traffic("ep", traffic, mirror)
    assert store.get_endpoint("ep") == before  # nothing written


# --- generations -----------------------------------------------------------------------------------


def test_routing_generation_changes_on_every_routing_write(store: Store) -> None:
    seen = [store.routing_generation()]

    def changed() -> None:
        now = store.routing_generation()
        assert now > seen[-1]
        seen.append(now)

    store.create_endpoint("online", "ep", {})
    changed()
    store.put_deployment("ep", "blue", "online", {})
    changed()
    store.set_traffic("ep", {"blue": 100})
    changed()
    store.set_keys("ep", primary="k")
    changed()
    store.update_endpoint("ep", provisioning_state="Succeeded")
    changed()
    store.put_deployment("ep", "green", "online", {})
    changed()
    store.delete_deployment("ep", "green")
    changed()
    store.delete_endpoint("ep")  # a delete must not make the number go back
    changed()

    # Reads, failed writes and jobs leave it alone.
    store.list_endpoints()
    store.list_deployments()
    with pytest.raises(NotFoundError):
        store.set_traffic("ep", {})
    store.create_endpoint("batch", "b", {})
    changed()
    store.create_job("j", "b")
    store.update_job("j", status="Running")
    assert store.routing_generation() == seen[-1]


def test_concurrent_writers_lose_no_update(store: Store) -> None:
    """Writers in parallel threads: none fails and no generation bump is lost (read-modify-write)."""
    store.create_endpoint("online", "ep", {})
    start = store.routing_generation()
    threads, writes_each = 6, 8

    def writer(index: int) -> None:
        for n in range(writes_each):
            store.put_deployment("ep", f"d{index}", "online", {"n": n})

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(writer, range(threads)))

    total = threads * writes_each
    assert store.routing_generation() == start + total
    assert store.get_endpoint("ep").generation == 1 + total
    assert sorted(d.generation for d in store.list_deployments("ep")) == [writes_each] * threads


def test_endpoint_generation_counts_its_own_changes(store: Store) -> None:
    store.create_endpoint("online", "a", {})
    store.create_endpoint("online", "b", {})
    store.put_deployment("a", "blue", "online", {})
    store.set_traffic("a", {"blue": 100})
    assert store.get_endpoint("a").generation == 3
    assert store.get_endpoint("b").generation == 1  # untouched by changes to 'a'


# --- jobs ------------------------------------------------------------------------------------------


def test_job_round_trip(store: Store) -> None:
    store.create_endpoint("batch", "scorer", {})
    job = store.create_job("job-1", "scorer", "v1", {"data": {"path": "/in"}})
    assert (job.status, job.inputs, job.deployment_name) == ("Queued", {"data": {"path": "/in"}}, "v1")
    assert job.started_at is None and job.finished_at is None and job.outputs is None
    assert store.get_job("job-1") == job

    running = store.update_job("job-1", status="Running", progress={"done": 1, "total": 4})
    assert running.started_at is not None and running.finished_at is None
    assert running.progress == {"done": 1, "total": 4}
    done = store.update_job("job-1", status="Completed", outputs={"predictions": "/out"})
    assert done.finished_at is not None and done.started_at == running.started_at
    assert done.outputs == {"predictions": "/out"}

    failed_at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    store.create_job("job-2", "scorer")
    failed = store.update_job("job-2", status="Failed", error="boom", finished_at=failed_at)
    assert (failed.error, failed.finished_at) == ("boom", failed_at)


def test_list_jobs(store: Store) -> None:
    store.create_endpoint("batch", "a", {})
    store.create_endpoint("batch", "b", {})
    for name, endpoint in (("j1", "a"), ("j2", "b"), ("j3", "a")):
        store.create_job(name, endpoint)
        time.sleep(0.002)  # distinct creation times, so the order is by creation
    store.update_job("j3", status="Running")
    assert [j.name for j in store.list_jobs()] == ["j1", "j2", "j3"]
    assert [j.name for j in store.list_jobs("a")] == ["j1", "j3"]
    assert [j.name for j in store.list_jobs(status="Queued")] == ["j1", "j2"]
    assert [j.name for j in store.list_jobs("a", "Running")] == ["j3"]
    with pytest.raises(ValueError, match="status"):
        store.list_jobs(status="Sleeping")


def test_job_errors(store: Store) -> None:
    with pytest.raises(NotFoundError, match="batch endpoint 'none' not found"):
        store.create_job("j", "none")
    store.create_endpoint("online", "live", {})
    with pytest.raises(NotFoundError, match="batch endpoint 'live' not found"):
        store.create_job("j", "live")
    store.create_endpoint("batch", "b", {})
    store.create_job("j", "b")
    with pytest.raises(ConflictError, match="job 'j' already exists"):
        store.create_job("j", "b")
    with pytest.raises(NotFoundError, match=r"job 'x' not found.*tiffin batch-endpoint list-jobs"):
        store.get_job("x")
    with pytest.raises(NotFoundError, match="job 'x' not found"):
        store.update_job("x", status="Running")
    with pytest.raises(ValueError, match="cannot update"):
        store.update_job("j", name="k")
    with pytest.raises(ValueError, match="status"):
        store.update_job("j", status="Sleeping")
    with pytest.raises(ValueError, match="timezone-aware"):
        store.update_job("j", started_at=datetime(2024, 1, 1))  # naive on purpose


def test_jobs_outlive_their_endpoint(store: Store) -> None:
    store.create_endpoint("batch", "b", {})
    store.create_job("j", "b")
    store.delete_endpoint("b")
    assert store.get_job("j").endpoint_name == "b"
