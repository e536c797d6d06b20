"""Batch autoscale by jobs: a compute's ``max_instances`` bounds the instances of the running jobs across every
batch deployment on it; queued jobs start as capacity frees, oldest first; nothing runs while nothing is queued.

First the pure admission rule (:func:`tiffin.batch.planner.admit`), then the store's claim on SQLite and
PostgreSQL, then real jobs on a real ``tiffin serve``. Every wait polls with a deadline.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_batch import ENDED, cli, cli_json, create, deployment_spec, finish, text_inputs, wait_for
from test_cluster import race

from tiffin.batch.planner import QueuedJob, admit, compute_name, instances_of
from tiffin.store import Store
from tiffin.testing import serve_tiffin

A, B, C = ("ep-a", "main"), ("ep-b", "main"), ("ep-c", "main")


def job(name: str, deployment: tuple[str, str], compute: str | None = "cpu", instances: int = 1) -> QueuedJob:
    return QueuedJob(name, deployment, compute, instances)


# --- the pure rule -------------------------------------------------------------------------------------


def test_one_instance_runs_the_oldest_job_of_any_deployment_on_the_compute() -> None:
    queued = [job("a1", A), job("b1", B)]
    assert admit(queued, {}, {}, {"cpu": 1}, per_deployment=1, limit=10) == ["a1"]
    # a1 runs: b1 waits for the instance, whatever its own deployment's limit says.
    assert admit([job("b1", B)], {A: 1}, {"cpu": 1}, {"cpu": 1}, per_deployment=5, limit=10) == []
    assert admit([job("b1", B)], {}, {}, {"cpu": 1}, per_deployment=5, limit=10) == ["b1"]  # a1 ended


def test_two_instances_run_two_jobs_of_one_instance_each_and_no_third() -> None:
    queued = [job("a1", A), job("b1", B), job("c1", C)]
    assert admit(queued, {}, {}, {"cpu": 2}, per_deployment=1, limit=10) == ["a1", "b1"]


def test_a_waiting_job_holds_back_later_jobs_of_its_compute_and_deployment_only() -> None:
    # One instance in use of two; a1 needs two and waits: b1 (1 instance, same compute) may not jump it,
    # a2 may not jump its own deployment's queue, c1 on another compute starts.
    queued = [job("a1", A, instances=2), job("b1", B), job("a2", A, compute="gpu"), job("c1", C, compute="gpu")]
    started = admit(queued, {}, {"cpu": 1}, {"cpu": 2, "gpu": 4}, per_deployment=1, limit=10)
    assert started == ["c1"]


def test_per_deployment_limit_still_applies_and_does_not_hold_the_compute() -> None:
    queued = [job("a1", A), job("a2", A), job("b1", B)]
    assert admit(queued, {}, {}, {"cpu": 4}, per_deployment=1, limit=10) == ["a1", "b1"]
    assert admit(queued, {}, {}, {"cpu": 4}, per_deployment=2, limit=10) == ["a1", "a2", "b1"]
    assert admit(queued, {}, {}, {"cpu": 4}, per_deployment=2, limit=2) == ["a1", "a2"]


def test_a_job_larger_than_its_compute_runs_alone_rather_than_never() -> None:
    assert admit([job("big", A, instances=5)], {}, {}, {"cpu": 2}, 1, 10) == ["big"]
    assert admit([job("big", A, instances=5)], {}, {"cpu": 1}, {"cpu": 2}, 1, 10) == []


def test_no_compute_or_an_uncapped_one_has_no_instance_limit() -> None:
    queued = [job("a1", A, compute=None, instances=9), job("b1", B, compute="k8s", instances=9)]
    assert admit(queued, {}, {}, {"cpu": 1}, per_deployment=1, limit=10) == ["a1", "b1"]


def test_compute_name_and_instances_read_a_job_spec() -> None:
    rid = "/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w/computes/cpu"
    for value in ("azureml:cpu", "cpu", rid):
        assert compute_name({"compute": value}) == "cpu"
    assert compute_name({}) is None and compute_name(None) is None
    assert instances_of({"resources": {"instance_count": 3}}) == 3
    assert instances_of({}) == 1


# --- the store's claim ---------------------------------------------------------------------------------


def spec(compute: str, instances: int = 1) -> dict[str, Any]:
    return {"compute": f"azureml:{compute}", "resources": {"instance_count": instances}}


def test_claims_share_a_compute_across_deployments_and_report_its_use(store: Store) -> None:
    store.put_compute("cpu", {"type": "amlcompute", "min_instances": 0, "max_instances": 2})
    store.create_endpoint("batch", "ep", {})
    store.create_job("j0", "ep", "d1", spec=spec("cpu"))
    store.create_job("j1", "ep", "d2", spec=spec("cpu", 2))
    store.create_job("j2", "ep", "d3", spec=spec("cpu"))
    assert store.compute_usage()["cpu"].queued_jobs == 3
    assert store.claim_queued_jobs("n", 5, 10) == ["j0"]  # j1 needs 2 of the 1 left; j2 may not jump it
    usage = store.compute_usage()["cpu"]
    assert (usage.current_node_count, usage.running_jobs, usage.queued_jobs) == (1, 1, 2)
    store.update_job("j0", status="Completed")
    assert store.claim_queued_jobs("n", 5, 10) == ["j1"]
    store.update_job("j1", status="Completed")
    assert store.claim_queued_jobs("n", 5, 10) == ["j2"]
    store.update_job("j2", status="Completed")
    assert "cpu" not in store.compute_usage()  # min_instances 0: nothing in use once nothing is queued


def test_nodes_claiming_at_once_never_pass_a_compute_cap(store: Store) -> None:
    store.put_compute("one", {"type": "amlcompute", "max_instances": 1})
    store.create_endpoint("batch", "ep", {})
    for n in range(6):
        store.create_job(f"j{n}", "ep", f"d{n}", spec=spec("one"))
    claims = race(*[lambda n=n: store.claim_queued_jobs(f"node-{n % 2}", 1, 10) for n in range(6)])
    assert [name for names in claims for name in names] == ["j0"]  # one instance, the oldest job, once
    assert [job.name for job in store.list_jobs(status="Running")] == ["j0"]


# --- real jobs ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with serve_tiffin(tmp_path_factory.mktemp("compute-serve") / "home") as running:
        yield running


def on_compute(name: str, endpoint: str, compute: str) -> dict[str, Any]:
    return {**deployment_spec(name, endpoint), "compute": f"azureml:{compute}"}


def statuses(client: Any, names: list[str]) -> dict[str, str]:
    return {n: client.jobs.get(n)["status"] for n in names}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_jobs_of_two_deployments_share_one_instance_then_two(server: Any, tmp_path: Path) -> None:
    text_inputs(tmp_path / "in", ["x.txt"])
    cli(server, "compute", "create", "--name", "one", "--type", "amlcompute", "--min-instances", "0",
        "--max-instances", "1")  # fmt: skip
    create(server, "share-a", on_compute("main", "share-a", "one"))
    create(server, "share-b", on_compute("main", "share-b", "one"))
    shown = cli_json(server, "compute", "show", "-n", "one")
    assert shown["current_node_count"] == 0 and shown["jobs"] == {"running": 0, "queued": 0}, shown

    # max_instances 1: A's job (ten minutes a mini-batch) holds the one instance; B's waits Queued.
    slow = ("--set", "inputs.sleep=600")
    a = cli_json(server, "batch-endpoint", "invoke", "-n", "share-a", "-i", str(tmp_path / "in"), *slow)["name"]
    b = cli_json(server, "batch-endpoint", "invoke", "-n", "share-b", "-i", str(tmp_path / "in"))["name"]
    with server.client() as client:
        wait_for(lambda: client.jobs.get(a)["status"] == "Running", 60, "A's job to run")
        # Several scheduling passes (each job end, invoke and poll is one): B still waits for the instance.
        for _ in range(20):
            assert client.jobs.get(b)["status"] == "Queued", statuses(client, [a, b])
            time.sleep(0.1)
        shown = cli_json(server, "compute", "show", "-n", "one")
        assert shown["current_node_count"] == 1 and shown["jobs"] == {"running": 1, "queued": 1}, shown
        # A ends (canceled): B starts on the freed instance and completes.
        cli(server, "job", "cancel", "-n", a)
        assert finish(client, b)["status"] == "Completed"
        assert client.jobs.get(a)["status"] == "Canceled"
        shown = cli_json(server, "compute", "show", "-n", "one")
        assert shown["current_node_count"] == 0 and shown["jobs"] == {"running": 0, "queued": 0}, shown

        # Three quick jobs, alternating deployments: never two running at once, all complete.
        names = [
            cli_json(server, "batch-endpoint", "invoke", "-n", ep, "-i", str(tmp_path / "in"),
                     "--set", "inputs.sleep=1")["name"]
            for ep in ("share-a", "share-b", "share-a")
        ]  # fmt: skip

        def all_ended() -> bool:
            snapshot = statuses(client, names)
            assert sum(s == "Running" for s in snapshot.values()) <= 1, f"two jobs ran at once: {snapshot}"
            return all(s in ENDED for s in snapshot.values())

        wait_for(all_ended, 180, "the three jobs to end", interval=0.05)
        jobs = [client.jobs.get(n) for n in names]
        assert [j["status"] for j in jobs] == ["Completed"] * 3
        ordered = sorted(jobs, key=lambda j: j["start_time"])
        assert [j["name"] for j in ordered] == names, "jobs started out of invoke order"
        for first, second in itertools.pairwise(ordered):
            assert first["end_time"] <= second["start_time"], "jobs overlapped on a one-instance compute"

        # max_instances 2: one job of each deployment runs at once.
        cli(server, "compute", "update", "--name", "one", "--max-instances", "2")
        both = [
            cli_json(server, "batch-endpoint", "invoke", "-n", ep, "-i", str(tmp_path / "in"), *slow)["name"]
            for ep in ("share-a", "share-b")
        ]
        wait_for(lambda: set(statuses(client, both).values()) == {"Running"}, 60, "both jobs to run at once")
        shown = cli_json(server, "compute", "show", "-n", "one")
        assert shown["current_node_count"] == 2 and shown["jobs"] == {"running": 2, "queued": 0}, shown
        for name in both:
            cli(server, "job", "cancel", "-n", name)
        wait_for(lambda: all(s in ENDED for s in statuses(client, both).values()), 60, "both jobs to end")
        shown = cli_json(server, "compute", "show", "-n", "one")
        assert shown["current_node_count"] == 0, shown


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_job_asking_more_instances_than_its_compute_has_is_refused_at_invoke(server: Any, tmp_path: Path) -> None:
    text_inputs(tmp_path / "in", ["x.txt"])
    cli(server, "compute", "create", "--name", "small", "--type", "amlcompute", "--max-instances", "1")
    create(server, "too-big", on_compute("main", "too-big", "small"))
    done = cli(server, "batch-endpoint", "invoke", "-n", "too-big", "-i", str(tmp_path / "in"),
               "--set", "instance_count=3", check=False)  # fmt: skip
    assert done.returncode != 0
    assert "max_instances (1)" in done.stderr and "--max-instances 3" in done.stderr, done.stderr
    with server.client() as client:
        assert client.batch_endpoints.list_jobs("too-big") == []
    # What show adds (current_node_count, jobs) is read-only: show's output creates the compute again unchanged.
    shown = cli(server, "compute", "show", "-n", "small", "-o", "yaml").stdout
    assert "current_node_count" in shown
    (tmp_path / "small.yml").write_text(shown)
    cli(server, "compute", "create", "-f", str(tmp_path / "small.yml"))
    again = cli_json(server, "compute", "show", "-n", "small")
    assert again["max_instances"] == 1 and again["current_node_count"] == 0, again
