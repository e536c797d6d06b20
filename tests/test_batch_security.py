"""What a batch endpoint's key may reach, and how much work one batch request may cause (issue 10).

The endpoint key (or token) starts jobs on datastore paths (``azureml://datastores/NAME/paths/PATH``,
folders of ``$TIFFIN_HOME/datastores``) and on paths under ``TIFFIN_INPUT_ROOTS`` only; a missing and a
forbidden input answer alike. Job names and output file names are names, for everyone. Environment variables
are set at invoke only with the admin token. Workers, instances, input files and glob walks are bounded by
server settings.

Every attack is sent through the REST API of a real ``tiffin serve`` (on a free loopback port), with the
endpoint's own key, as the issue reported it; the admin token (and so the CLI and SDK) still reads any local
path the server's user can read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tiffin.batch.inputs import resolve_input
from tiffin.errors import SpecError
from tiffin.store import Store
from tiffin.testing import serve_tiffin

SCRIPTS = Path(__file__).parent / "batch_scripts"
ENDED = ("Completed", "Failed", "Canceled")
MAX_WORKERS, MAX_INSTANCES, MAX_FILES = 4, 2, 50
slow = pytest.mark.slow


def deployment_spec(name: str, endpoint: str, **settings: Any) -> dict[str, Any]:
    """A batch deployment of ``tests/batch_scripts/driver.py`` in Azure's ``settings:`` shape."""
    return {
        "name": name,
        "endpoint_name": endpoint,
        "type": "model",
        "model": {"path": str(SCRIPTS / "model")},
        "code_configuration": {"code": str(SCRIPTS), "scoring_script": "driver.py"},
        "resources": {"instance_count": settings.pop("instance_count", 1)},
        "settings": {"mini_batch_size": 2, "max_concurrency_per_instance": 1, **settings},
    }


def text_files(folder: Path, count: int, prefix: str = "f") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}{n:03d}.txt" for n in range(count)]
    for n, path in enumerate(paths):
        path.write_text(f"word{n} other\n")
    return paths


class Batch:
    """A running server with one batch endpoint (``auth_mode: key``), its key, and an HTTP client."""

    def __init__(self, server: Any, roots: Path, outside: Path, http: httpx.Client) -> None:
        self.server, self.roots, self.outside, self.http = server, roots, outside, http
        self.datastore = server.home / "datastores" / "ws"
        with server.client() as client:
            client.batch_endpoints.create({"name": "guarded", "auth_mode": "key"})
            client.batch_deployments.create_or_update(deployment_spec("main", "guarded"))
            self.key = client.batch_endpoints.get_keys("guarded")["primaryKey"]

    def invoke(self, body: Any, *, admin: bool = False, endpoint: str = "guarded") -> httpx.Response:
        credential = self.server.admin_token if admin else self.key
        return self.http.post(
            f"{self.server.url}/api/batch-endpoints/{endpoint}/jobs",
            headers={"Authorization": f"Bearer {credential}", "Content-Type": "application/json"},
            content=json.dumps(body).encode(),
        )

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.server.admin_token}"}
        return self.http.request(method, f"{self.server.url}/api{path}", headers=headers, **kwargs)

    def finish(self, job: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.admin("GET", f"/jobs/{job}").json()
            if shown["status"] in ENDED:
                return shown
            assert time.monotonic() < deadline, f"job {job} did not end within {timeout}s: {shown}"
            time.sleep(0.2)

    def job_names(self) -> set[str]:
        return {job["name"] for job in self.admin("GET", "/jobs").json()}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Batch]:
    base = tmp_path_factory.mktemp("batch-security")
    roots, outside = base / "roots", base / "outside"
    roots.mkdir()
    outside.mkdir()
    env = {
        "TIFFIN_INPUT_ROOTS": str(roots),
        "TIFFIN_MAX_WORKERS": str(MAX_WORKERS),
        "TIFFIN_MAX_INSTANCES": str(MAX_INSTANCES),
        "TIFFIN_MAX_INPUT_FILES": str(MAX_FILES),
    }
    with serve_tiffin(base / "home", env=env) as server, httpx.Client(timeout=60) as http:
        running = Batch(server, roots, outside, http)
        yield running
        for job in running.admin("GET", "/jobs").json():
            if job["status"] not in ENDED:
                running.admin("POST", f"/jobs/{job['name']}/cancel")


# --- 1. inputs: datastore paths and input roots for the key, any local path for the admin ----------


@slow
@pytest.mark.timeout(300)
def test_the_key_reads_no_server_path_and_cannot_tell_missing_from_forbidden(batch: Batch) -> None:
    secret = batch.outside / "secret.txt"
    secret.write_text("s3cret line\n")
    text_files(batch.roots / "in", 2)
    (batch.roots / "in-link").symlink_to(secret)  # a link inside a root that leads out of it
    (batch.roots / "dir-link").symlink_to(batch.outside, target_is_directory=True)
    batch.datastore.mkdir(parents=True, exist_ok=True)
    (batch.datastore / "out-link").symlink_to(batch.outside, target_is_directory=True)
    before = batch.job_names()

    forbidden = [
        "/etc/shadow",
        "/etc/passwd",
        "/etc",
        "/etc/*",
        "/usr/**/*.py",
        str(secret),
        str(batch.outside),
        str(batch.outside / "*.txt"),
        str(batch.roots / ".." / "outside" / "secret.txt"),
        str(batch.roots / "in-link"),
        str(batch.roots / "dir-link"),
        str(batch.roots / "dir-link" / "secret.txt"),
        str(batch.roots / "*-link"),
        "azureml://datastores/ws/paths/out-link",
        "azureml://datastores/ws/paths/out-link/secret.txt",
        "~/.bashrc",
        "secret.txt",
    ]
    missing = [
        "/no/such/file",
        str(batch.outside / "absent.txt"),
        str(batch.roots / "absent.txt"),
        str(batch.roots / "in" / "*.parquet"),
        "azureml://datastores/ws/paths/absent",
        "azureml://datastores/nostore/paths/x.csv",
    ]
    answers = {}
    for source in forbidden + missing:
        answer = batch.invoke({"input": source})
        assert answer.status_code == 422, (source, answer.text)
        answers[source] = answer.content
    reference = answers["/no/such/file"]
    assert all(body == reference for body in answers.values()), {s: b for s, b in answers.items() if b != reference}
    message = json.loads(reference)["message"]
    assert "TIFFIN_INPUT_ROOTS" in message and "azureml://datastores/" in message, message
    assert batch.job_names() == before, "no job was queued"

    # A token of the endpoint is an endpoint credential too (aml_token mode).
    with batch.server.client() as client:
        client.batch_endpoints.create({"name": "guarded-token", "auth_mode": "aml_token"})
        client.batch_deployments.create_or_update(deployment_spec("main", "guarded-token"))
        token = client.batch_endpoints.get_keys("guarded-token")["accessToken"]
    answer = batch.http.post(
        f"{batch.server.url}/api/batch-endpoints/guarded-token/jobs",
        headers={"Authorization": f"Bearer {token}"},
        json={"input": "/etc/shadow"},
    )
    assert (answer.status_code, answer.content) == (422, reference)


@slow
@pytest.mark.timeout(300)
def test_the_key_scores_datastore_paths_and_input_roots_and_the_admin_any_local_path(batch: Batch) -> None:
    text_files(batch.roots / "ok", 3)
    text_files(batch.datastore / "ok", 3)
    text_files(batch.outside / "admin-only", 3)
    accepted = [
        ({"input": str(batch.roots / "ok")}, False),
        ({"input": str(batch.roots / "ok" / "*.txt")}, False),
        ({"input": str(batch.roots / "ok" / "f000.txt")}, False),
        ({"input": "azureml://datastores/ws/paths/ok"}, False),
        ({"input": str(batch.datastore / "ok")}, False),  # the datastore's own folder, as a path
        (
            {"input": "azureml://datastores/ws/paths/ok", "output_path": "azureml://datastores/ws/paths/results"},
            False,
        ),
        ({"input": str(batch.outside / "admin-only")}, True),
        ({"input": str(batch.outside / "admin-only"), "output_path": str(batch.outside / "admin-out")}, True),
    ]
    jobs = []
    for body, admin in accepted:
        answer = batch.invoke(body, admin=admin)
        assert answer.status_code == 201, (body, admin, answer.text)
        jobs.append(answer.json())
    for job in jobs:
        final = batch.finish(job["name"])
        assert final["status"] == "Completed", final
        assert final["progress"]["rows_scored"] >= 1
    assert (batch.datastore / "results" / "predictions.csv").is_file()
    assert (batch.outside / "admin-out" / "predictions.csv").is_file()

    # The admin gets the precise reason, as before.
    answer = batch.invoke({"input": str(batch.outside / "absent")}, admin=True)
    assert answer.status_code == 422 and "does not exist" in answer.json()["message"], answer.text


@slow
@pytest.mark.timeout(120)
def test_the_key_writes_outputs_into_datastores_only(batch: Batch) -> None:
    text_files(batch.roots / "o", 1)
    for output_path in (
        str(batch.outside / "written"),
        "/tmp/tiffin-key-output",
        str(batch.roots / "written"),  # input roots are read, not written, by a key
        str(batch.server.home),
        str(batch.server.home / "jobs"),
        "azureml://datastores/ws/paths/out-link",  # a link out of the datastore (made by the first test, or here)
    ):
        if output_path.endswith("out-link") and not (batch.datastore / "out-link").exists():
            batch.datastore.mkdir(parents=True, exist_ok=True)
            (batch.datastore / "out-link").symlink_to(batch.outside, target_is_directory=True)
        answer = batch.invoke({"input": str(batch.roots / "o"), "output_path": output_path})
        assert answer.status_code == 422, (output_path, answer.text)
        assert "field 'output_path'" in answer.json()["message"]
    assert not (batch.outside / "written").exists() and not Path("/tmp/tiffin-key-output").exists()


@slow
@pytest.mark.timeout(180)
def test_the_key_reads_its_own_endpoints_jobs_and_nothing_else(batch: Batch) -> None:
    text_files(batch.datastore / "readable", 2)
    with batch.server.client() as client:
        client.batch_endpoints.create({"name": "neighbour", "auth_mode": "key"})
        client.batch_deployments.create_or_update(deployment_spec("main", "neighbour"))
        neighbour_key = client.batch_endpoints.get_keys("neighbour")["primaryKey"]
    source = {"input": "azureml://datastores/ws/paths/readable"}
    own = batch.invoke(source).json()["name"]
    theirs = batch.invoke(source, admin=True, endpoint="neighbour").json()["name"]
    assert batch.finish(own)["status"] == batch.finish(theirs)["status"] == "Completed"

    def get(path: str, key: str = batch.key) -> httpx.Response:
        return batch.http.get(f"{batch.server.url}/api{path}", headers={"Authorization": f"Bearer {key}"})

    # Its own jobs: show, log, output, and the lists of its endpoint and deployment.
    assert get(f"/jobs/{own}").json()["name"] == own
    assert get(f"/jobs/{own}/log").status_code == 200
    output = get(f"/jobs/{own}/outputs/score")
    assert output.status_code == 200 and output.content == batch.admin("GET", f"/jobs/{own}/outputs/score").content
    for listing in ("/batch-endpoints/guarded/jobs", "/batch-endpoints/guarded/deployments/main/jobs"):
        names = {job["name"] for job in get(listing).json()}
        assert own in names and theirs not in names, listing
    assert get(f"/jobs/{theirs}", neighbour_key).json()["name"] == theirs

    # Nothing else: another endpoint's jobs, every job, the endpoint itself, cancel; an unknown job answers
    # exactly as another endpoint's does, so a key cannot find out which jobs exist.
    refused = [
        get(f"/jobs/{theirs}"),
        get(f"/jobs/{theirs}/log"),
        get(f"/jobs/{theirs}/outputs/score"),
        get(f"/jobs/{own}", neighbour_key),
        get("/batch-endpoints/neighbour/jobs"),
        get("/jobs"),
        get("/batch-endpoints/guarded"),
        get("/batch-endpoints/guarded/credentials"),
        batch.http.post(f"{batch.server.url}/api/jobs/{own}/cancel", headers={"Authorization": f"Bearer {batch.key}"}),
    ]
    for answer in refused:
        assert answer.status_code == 401, (answer.request.url, answer.text)
    assert get("/jobs/no-such-job").content == get(f"/jobs/{theirs}").content


# --- 2. names are names, for everyone ------------------------------------------------------------------


@slow
@pytest.mark.timeout(180)
def test_job_names_and_output_file_names_are_names_not_paths(batch: Batch) -> None:
    text_files(batch.roots / "n", 1)
    source = str(batch.roots / "n")
    planted = batch.outside / "planted-job"
    for admin in (False, True):
        for job_name in (str(planted), "../escape", "a/b", ".", "..", "", " x", "-x", "x" * 256, "x\ny", 7):
            answer = batch.invoke({"input": source, "job_name": job_name}, admin=admin)
            assert answer.status_code == 422, (job_name, admin, answer.text)
            assert "field 'job_name'" in answer.json()["message"]
        for file_name in (str(batch.outside / "p.csv"), "../../p.csv", "a/b.csv", "..", ".", "", "a\\b.csv", "x\0"):
            answer = batch.invoke({"input": source, "settings": {"output_file_name": file_name}}, admin=admin)
            assert answer.status_code == 422, (file_name, admin, answer.text)
            assert "output_file_name" in answer.json()["message"]
            bad = deployment_spec("bad-name", "guarded", output_file_name=file_name)
            answer = batch.admin("PUT", "/batch-endpoints/guarded/deployments/bad-name", json=bad)
            assert answer.status_code == 422 and "output_file_name" in answer.json()["message"], answer.text
    assert not planted.exists()
    assert not list(batch.outside.glob("p.csv")) and not (batch.server.home.parent / "p.csv").exists()

    answer = batch.invoke(
        {"input": source, "job_name": "Nightly_scores-2026", "settings": {"output_file_name": "s.csv"}}
    )
    assert answer.status_code == 201, answer.text
    final = batch.finish("Nightly_scores-2026")
    assert final["outputs"]["score"]["path"].endswith("/jobs/Nightly_scores-2026/outputs/s.csv"), final


# --- 3. environment variables at invoke: the admin's only ------------------------------------------------


@slow
@pytest.mark.timeout(180)
def test_only_the_admin_sets_environment_variables_at_invoke(batch: Batch) -> None:
    text_files(batch.roots / "e", 1)
    source = str(batch.roots / "e")
    for settings in (
        {"environment_variables": {"AZUREML_MODEL_DIR": "/"}},
        {"environment_variables.AZUREML_MODEL_DIR": "/"},
        {"settings.environment_variables.LD_PRELOAD": "/tmp/x.so"},
        {"settings.environment_variables": {"TIFFIN_RAY_ADDRESS": "ray://10.0.0.1:10001"}},
    ):
        answer = batch.invoke({"input": source, "settings": settings})
        assert answer.status_code == 422, (settings, answer.text)
        message = answer.json()["message"]
        assert "environment_variables" in message and "admin token" in message, message
    answer = batch.invoke({"input": source, "settings": {"environment_variables.BATCH_LABEL": "admin"}}, admin=True)
    assert answer.status_code == 201, answer.text
    assert batch.finish(answer.json()["name"])["status"] == "Completed"
    # Literal inputs reach the script as AZUREML_BI_<NAME>: names only, never another variable.
    for literals in ({"a=b": 1}, {"": 1}, {"x y": 1}, {"ok": "a\0b"}):
        answer = batch.invoke({"input": source, "inputs": literals})
        assert answer.status_code == 422 and "field 'inputs'" in answer.json()["message"], (literals, answer.text)


# --- 4. bounded work: workers, instances, input files, glob walks ------------------------------------------


@slow
@pytest.mark.timeout(180)
def test_workers_and_instances_are_capped_at_create_and_at_invoke(batch: Batch) -> None:
    text_files(batch.roots / "w", 1)
    source = str(batch.roots / "w")
    for settings, field, setting in (
        ({"instance_count": 10000}, "instance_count", "TIFFIN_MAX_INSTANCES"),
        ({"max_concurrency_per_instance": 1000}, "max_concurrency_per_instance", "TIFFIN_MAX_WORKERS"),
        (
            {"instance_count": 2, "max_concurrency_per_instance": 3},
            "max_concurrency_per_instance",
            "TIFFIN_MAX_WORKERS",
        ),
        ({"resources.instance_count": MAX_INSTANCES + 1}, "instance_count", "TIFFIN_MAX_INSTANCES"),
    ):
        for admin in (False, True):
            answer = batch.invoke({"input": source, "settings": settings}, admin=admin)
            assert answer.status_code == 422, (settings, answer.text)
            message = answer.json()["message"]
            assert field in message and setting in message, message
    for instance_count, concurrency, setting in ((10000, 1, "TIFFIN_MAX_INSTANCES"), (1, 1000, "TIFFIN_MAX_WORKERS")):
        spec = deployment_spec(
            "huge", "guarded", instance_count=instance_count, max_concurrency_per_instance=concurrency
        )
        answer = batch.admin("PUT", "/batch-endpoints/guarded/deployments/huge", json=spec)
        assert answer.status_code == 422 and setting in answer.json()["message"], answer.text
    assert batch.admin("GET", "/batch-endpoints/guarded/deployments/huge").status_code == 404
    spec = deployment_spec("most", "guarded", instance_count=MAX_INSTANCES, max_concurrency_per_instance=2)
    assert batch.admin("PUT", "/batch-endpoints/guarded/deployments/most", json=spec).status_code == 201


@slow
@pytest.mark.timeout(240)
def test_a_deployment_stored_earlier_over_the_cap_runs_at_most_max_workers(batch: Batch, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    text_files(batch.roots / "big", 12)
    # As an earlier tiffin stored it, without today's checks: 50 instances of 20 workers each.
    spec = deployment_spec("earlier", "guarded", instance_count=50, max_concurrency_per_instance=20)
    spec["settings"]["environment_variables"] = {"BATCH_PID_DIR": str(pids)}
    store = Store.open(f"sqlite:///{batch.server.home / 'tiffin.db'}", home=batch.server.home)
    try:
        store.put_deployment("guarded", "earlier", "batch", spec)
    finally:
        store.close()
    answer = batch.invoke({"input": str(batch.roots / "big"), "deployment_name": "earlier"}, admin=True)
    assert answer.status_code == 201, answer.text
    final = batch.finish(answer.json()["name"])
    assert final["status"] == "Completed", final
    log = batch.admin("GET", f"/jobs/{final['name']}/log").text
    assert f"starting {MAX_WORKERS} worker process(es)" in log and "TIFFIN_MAX_WORKERS" in log, log
    assert 1 <= len(list(pids.iterdir())) <= MAX_WORKERS


@slow
@pytest.mark.timeout(180)
def test_a_glob_over_symlink_loops_ends_and_lists_each_file_once(batch: Batch) -> None:
    # Two links back to their own folder: a glob that follows them walks 2**40 paths (the issue's /usr/**).
    loop = batch.roots / "loop"
    text_files(loop, 3)
    text_files(loop / "sub", 2, prefix="s")
    (loop / "again").symlink_to(loop, target_is_directory=True)
    (loop / "sub" / "up").symlink_to(loop, target_is_directory=True)
    for admin in (False, True):
        started = time.monotonic()
        try:
            answer = batch.invoke({"input": str(loop / "**"), "input_type": "uri_file"}, admin=admin)
        except httpx.TimeoutException:
            pytest.fail("the server was still walking the symlink loop after 60 s")
        assert answer.status_code == 201, answer.text
        assert answer.json()["inputs"]["input_files"] == 5
        assert time.monotonic() - started < 30
    assert batch.admin("GET", "/health").status_code == 200


@slow
@pytest.mark.timeout(180)
def test_an_input_of_too_many_files_is_refused_with_what_to_do(batch: Batch) -> None:
    many = batch.roots / "many"
    text_files(many, MAX_FILES + 1)
    for source in (str(many), str(many / "*.txt"), str(many.parent / "**" / "f0*.txt")):
        for admin in (False, True):
            answer = batch.invoke({"input": source}, admin=admin)
            assert answer.status_code == 422, (source, answer.text)
            message = answer.json()["message"]
            assert f"more than {MAX_FILES}" in message and "TIFFIN_MAX_INPUT_FILES" in message, message


# --- 5. the rules themselves, without a server --------------------------------------------------------------


def test_resolve_input_bounds_files_and_time(tmp_path: Path) -> None:
    files = text_files(tmp_path / "t", 5)
    assert resolve_input(str(tmp_path / "t"), max_files=5) == [str(p) for p in files]
    with pytest.raises(SpecError, match="more than 4 files"):
        resolve_input(str(tmp_path / "t"), max_files=4)
    with pytest.raises(SpecError, match="more than 4 files"):
        resolve_input(str(tmp_path / "**"), max_files=4)
    with pytest.raises(SpecError, match=r"took more than 0s.*narrow"):
        resolve_input(str(tmp_path / "**" / "*.txt"), time_limit_s=0)


def test_resolve_input_glob_does_not_follow_directory_links(tmp_path: Path) -> None:
    # In a child process with a deadline: a glob that follows the loop never ends and eats memory.
    tree = tmp_path / "tree"
    text_files(tree / "a" / "b", 2)
    (tree / "a" / "loop1").symlink_to(tree, target_is_directory=True)
    (tree / "a" / "b" / "loop2").symlink_to(tree / "a", target_is_directory=True)
    (tree / "a" / "file-link.txt").symlink_to(tree / "a" / "b" / "f000.txt")
    code = (
        "import json, sys; from tiffin.batch.inputs import resolve_input; print(json.dumps(resolve_input(sys.argv[1])))"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(tree / "**")], capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the glob was still walking the symlink loop after 60 s")
    assert done.returncode == 0, done.stderr
    # A link to a file counts as the file it leads to, as before; links to folders are not walked.
    assert json.loads(done.stdout) == [str(tree / "a" / "b" / "f000.txt"), str(tree / "a" / "b" / "f001.txt")]


@slow
@pytest.mark.timeout(180)
def test_jobs_stored_before_the_checks_fail_with_the_reason_and_write_nothing_outside(batch: Batch) -> None:
    from datetime import UTC, datetime

    from tiffin.store.models import Job

    text_files(batch.roots / "old", 2)
    files = [str(p) for p in sorted((batch.roots / "old").iterdir())]
    spec = batch.admin("GET", "/batch-endpoints/guarded/deployments/main").json()
    answer_fields = ("provisioning_state", "created_at", "updated_at")
    spec = {k: v for k, v in spec.items() if k not in answer_fields}
    bad_output = {**spec, "settings": {**spec["settings"], "output_file_name": "../../../planted.csv"}}
    planted_job = batch.outside / "old-job"
    rows = {str(planted_job): spec, "old-output-name": bad_output}  # as an earlier tiffin stored them
    store = Store.open(f"sqlite:///{batch.server.home / 'tiffin.db'}", home=batch.server.home)
    try:
        with store.session(write=True) as session:
            for name, job_spec in rows.items():
                session.add(
                    Job(
                        name=name,
                        endpoint_name="guarded",
                        deployment_name="main",
                        status="Queued",
                        inputs={"input": "x", "input_type": "uri_folder", "files": files},
                        spec=job_spec,
                        created_at=datetime.now(UTC),
                    )
                )
    finally:
        store.close()
    listed = batch.admin("GET", "/jobs")
    assert listed.status_code == 200, listed.text
    assert set(rows) <= {job["name"] for job in listed.json()}
    finals = {}
    deadline = time.monotonic() + 60
    while len(finals) < len(rows):
        assert time.monotonic() < deadline, finals
        for job in batch.admin("GET", "/jobs").json():
            if job["name"] in rows and job["status"] in ENDED:
                finals[job["name"]] = job
        time.sleep(0.2)
    assert finals[str(planted_job)]["status"] == "Failed" and "job name" in finals[str(planted_job)]["error"]
    assert finals["old-output-name"]["status"] == "Failed", finals["old-output-name"]
    assert "output_file_name" in finals["old-output-name"]["error"]
    assert not planted_job.exists() and not (batch.server.home.parent / "planted.csv").exists()
