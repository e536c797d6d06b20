"""Names on disk: every folder tiffin derives from endpoint, deployment and job names belongs to one of them.

A name flattened into one folder name (``x_y/z`` and ``x/y_z`` both as ``x_y_z``) let two deployments
swap models: one endpoint answered with the other's predictions after both restarted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml

from tiffin import paths
from tiffin.errors import BadRequestError
from tiffin.replica.factory import app_from_file
from tiffin.replica.layout import stage_model
from tiffin.testing import serve_tiffin

PLAIN = Path(__file__).parent / "deployments" / "plain"


def _model(tmp_path: Path, name: str, scale: int) -> SimpleNamespace:
    """A deployment-like object whose model folder holds ``weights.json`` with ``scale``."""
    folder = tmp_path / "models" / name / "model"
    folder.mkdir(parents=True)
    (folder / "weights.json").write_text(json.dumps({"scale": scale}))
    return SimpleNamespace(model=SimpleNamespace(path=str(folder)))


def _scale(model_dir: Path) -> int:
    return json.loads((model_dir / "model" / "weights.json").read_text())["scale"]


def test_two_identities_never_share_a_model_folder(tmp_path: Path) -> None:
    """``x_y/z`` and ``x/y_z`` were both ``model-mounts/x_y_z``: the second staging swapped the first's model."""
    mounts = tmp_path / "model-mounts"
    first = stage_model(_model(tmp_path, "a", 2), mounts, identity="x_y/z")
    second = stage_model(_model(tmp_path, "b", 3), mounts, identity="x/y_z")
    assert first is not None and second is not None
    assert first != second
    assert (_scale(first), _scale(second)) == (2, 3)


def test_staging_one_deployment_keeps_the_copies_of_another(tmp_path: Path) -> None:
    """Old copies were found by name prefix, so staging ``e/a`` deleted the live copy of ``e/a-b``."""
    mounts = tmp_path / "model-mounts"
    other = stage_model(_model(tmp_path, "ab", 5), mounts, identity="online/e/a-b")
    assert other is not None
    live = Path(os.path.realpath(other))
    old = time.time() - 3600
    os.utime(live, (old, old))  # as if staged an hour ago
    stage_model(_model(tmp_path, "a", 7), mounts, identity="online/e/a")
    assert live.is_dir()
    assert _scale(other) == 5


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "a\\b", ".hidden", "a\x00b", "x" * 300])
def test_path_shaped_names_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(BadRequestError):
        paths.job_dir(tmp_path, bad)
    with pytest.raises(BadRequestError):
        paths.deployment_dir(tmp_path, "e", bad)
    with pytest.raises(BadRequestError):
        paths.replica_log_path(tmp_path, bad, "d", 0)


def test_every_kind_of_mount_has_its_own_folder(tmp_path: Path) -> None:
    """An online endpoint ``batch-x`` and a batch endpoint ``x`` were both ``batch-x_DEPLOYMENT``."""
    online = paths.online_mount_identity("batch-x", "y")
    batch = paths.batch_mount_identity("x", "y", {"path": "/m"})
    local = paths.local_mount_identity(tmp_path / "d.yml", "y")
    folders = {paths.model_mount(tmp_path, identity) for identity in (online, batch, local)}
    assert len(folders) == 3
    # Jobs of one deployment with another model (a job keeps the spec it was invoked with) do not share.
    assert paths.batch_mount_identity("x", "y", {"path": "/other"}) != batch
    assert paths.batch_mount_identity("x", "y", {"path": "/m"}) == batch
    # Two local runs of deployments of one name from different files do not share either.
    assert paths.local_mount_identity(tmp_path / "other.yml", "y") != local
    for folder in folders:
        assert folder.is_relative_to(paths.model_mounts_dir(tmp_path))


def _served_spec(home: Path, endpoint: str, deployment: str, scale: int) -> Path:
    """A deployment spec where the supervisor writes one, with its own model (scale)."""
    code = home.parent / f"code-{endpoint}-{deployment}"
    shutil.copytree(PLAIN, code)
    (code / "model" / "weights.json").write_text(json.dumps({"scale": scale}))
    spec = yaml.safe_load((PLAIN / "deployment.yml").read_text())
    spec.update(
        name=deployment,
        endpoint_name=endpoint,
        model={"path": str(code / "model")},
        code_configuration={"code": str(code / "code"), "scoring_script": "score.py"},
    )
    folder = paths.deployment_dir(home, endpoint, deployment)
    folder.mkdir(parents=True)
    path = folder / "deployment-1.yml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_replicas_of_two_deployments_see_their_own_models(tmp_path: Path) -> None:
    """What a replica does at start (tiffin.replica.factory), for endpoints ``x_y``/``z`` and ``x``/``y_z``."""
    home = tmp_path / "home"
    first_app, _ = app_from_file(_served_spec(home, "x_y", "z", 2), home=home)
    second_app, _ = app_from_file(_served_spec(home, "x", "y_z", 3), home=home)
    first_dir, second_dir = first_app.runner.config.model_dir, second_app.runner.config.model_dir
    # The first replica reads its AZUREML_MODEL_DIR (init) after the second replica staged its model.
    assert (_scale(first_dir), _scale(second_dir)) == (2, 3)
    assert first_dir == paths.model_mount(home, paths.online_mount_identity("x_y", "z")) / "current"


def _answer(server: Any, endpoint: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/endpoints/{endpoint}/score",
        json={"data": [[1]]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


@pytest.mark.slow
def test_two_endpoints_answer_with_their_own_models_after_both_replicas_crash(tmp_path: Path) -> None:
    """The reported case: endpoints ``x_y``/``z`` and ``x``/``y_z`` under one ``tiffin serve``, replicas killed."""
    wanted = {("x_y", "z"): 2, ("x", "y_z"): 3}
    # init() reads the model a moment after the replica staged it: the other replica stages meanwhile.
    code = tmp_path / "code"
    shutil.copytree(PLAIN / "code", code)
    script = (code / "score.py").read_text()
    (code / "score.py").write_text(script.replace("def init():\n", "def init():\n    __import__('time').sleep(3)\n"))
    with serve_tiffin(tmp_path / "home") as server:
        client = server.client()
        keys = {}
        for (endpoint, deployment), scale in wanted.items():
            model = tmp_path / f"model-{endpoint}" / "model"
            model.mkdir(parents=True)
            (model / "weights.json").write_text(json.dumps({"scale": scale}))
            client.online_endpoints.create_or_update({"name": endpoint, "auth_mode": "key"})
            spec = {
                "name": deployment,
                "model": {"path": str(model)},
                "code_configuration": {"code": str(code), "scoring_script": "score.py"},
                "readiness_probe": {"initial_delay": 1, "period": 1},
            }
            client.online_deployments.create_or_update(spec, endpoint, all_traffic=True)
            keys[endpoint] = client.online_endpoints.get_keys(endpoint)["primaryKey"]
        for attempt in range(3):
            for (endpoint, _), scale in wanted.items():
                r = _answer(server, endpoint, keys[endpoint])
                assert r.status_code == 200 and r.json()["sums"] == [scale], (attempt, endpoint, r.text)
            # Both replicas crash at once and restart, each staging its model again.
            pidfiles = [paths.deployment_dir(server.home, e, d) / "replica-0.pid" for e, d in wanted]
            for pidfile in pidfiles:
                os.kill(json.loads(pidfile.read_text())["pid"], signal.SIGKILL)
            deadline = time.monotonic() + 120
            for endpoint, _ in wanted:
                while _answer(server, endpoint, keys[endpoint]).status_code != 200:
                    assert time.monotonic() < deadline, f"{endpoint} did not come back\n{server.log()}"
                    time.sleep(0.5)
