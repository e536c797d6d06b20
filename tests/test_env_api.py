"""What the control plane does with a deployment's environment before anything is built: a conda file that cannot
be translated is refused at create (422 naming the package), and get-logs shows the environment's log before the
replica's."""

from __future__ import annotations

from pathlib import Path

from test_api import Api, api, message  # noqa: F401  (api: the fixture, used by name)

from tiffin.paths import environment_log_path, replica_log_path


def test_a_conda_file_that_cannot_be_translated_is_refused_at_create(api: Api, tmp_path: Path) -> None:  # noqa: F811
    api.endpoint("ep")
    conda = tmp_path / "conda.yaml"
    conda.write_text("dependencies:\n  - python=3.11\n  - r-base=4.2\n  - numpy\n")
    body = {
        "model": {"path": str(tmp_path)},
        "code_configuration": {"code": str(tmp_path), "scoring_script": "score.py"},
        "environment": {"conda_file": str(conda), "image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04"},
    }
    (tmp_path / "score.py").write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    refused = api.put("/online-endpoints/ep/deployments/blue", json=body)
    assert refused.status_code == 422, refused.text
    assert "r-base" in message(refused)
    assert api.get("/online-endpoints/ep/deployments/blue").status_code == 404  # nothing stored

    conda.write_text("dependencies:\n  - python=3.11\n  - numpy=1.26\n")
    assert api.put("/online-endpoints/ep/deployments/blue", json=body).status_code == 201


def test_get_logs_shows_the_environment_log_then_the_replica_log(api: Api) -> None:  # noqa: F811
    api.endpoint("ep")
    api.deployment("blue")
    environment = environment_log_path(api.home, "ep", "blue")
    environment.parent.mkdir(parents=True)
    environment.write_text("[tiffin] building environment abc\n[tiffin] built environment abc in 3.0 s\n")
    only_build = api.get("/online-endpoints/ep/deployments/blue/logs")
    assert only_build.status_code == 200  # before any replica started: the build is what there is to see
    assert only_build.text.endswith("in 3.0 s\n")
    replica_log_path(api.home, "ep", "blue", 0).write_text("tiffin replica ready: unix:/x.sock\n")
    both = api.get("/online-endpoints/ep/deployments/blue/logs", params={"lines": 2})
    assert both.text == "[tiffin] built environment abc in 3.0 s\ntiffin replica ready: unix:/x.sock\n"
