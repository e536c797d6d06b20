"""Azure's "Autoscale online endpoints" how-to script (azureml-examples ``cli/deploy-moe-autoscale.sh``), unmodified
but for ``az ml`` -> ``tiffin`` and ``az monitor`` -> ``tiffin monitor``, run by bash in a folder laid out as
azureml-examples' ``cli/``: Azure's sample endpoint and blue deployment YAML, the model-1 scoring script, model and
conda file (the quickstart's). The script says the deployment "will scale up 2 (since min count and count are
2)": that is checked between the script's set-up and its clean-up, which then leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import eventually
from tiffin.errors import NotFoundError
from tiffin.testing import serve_tiffin

FIXTURES = Path(__file__).parent / "fixtures" / "azure"
QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart"

pytestmark = pytest.mark.usefixtures("quickstart_models")


def azureml_examples_cli(root: Path) -> Path:
    """``cli/`` with the files the script names, where azureml-examples keeps them."""
    cli = root / "cli"
    sample, model_1 = cli / "endpoints" / "online" / "managed" / "sample", cli / "endpoints" / "online" / "model-1"
    sample.mkdir(parents=True)
    for name in ("endpoint.yml", "blue-deployment.yml"):
        shutil.copy(FIXTURES / "online" / name, sample / name)
    shutil.copytree(QUICKSTART / "onlinescoring", model_1 / "onlinescoring")
    shutil.copytree(QUICKSTART / "model", model_1 / "model")
    (model_1 / "environment").mkdir()
    shutil.copy(QUICKSTART / "environment" / "conda.yaml", model_1 / "environment" / "conda.yml")
    return cli


def as_tiffin(script: str) -> str:
    return script.replace("az ml ", "tiffin ").replace("az monitor ", "tiffin monitor ")


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done


def test_azure_autoscale_how_to_script_runs_as_written(tmp_path: Path) -> None:
    cli = azureml_examples_cli(tmp_path)
    set_up, clean_up = (FIXTURES / "deploy-moe-autoscale.sh").read_text().split("# <delete_endpoint>")
    with serve_tiffin() as server:
        env = {**server.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        done = bash(as_tiffin(set_up) + '\necho "names: $ENDPOINT_NAME $AUTOSCALE_SETTINGS_NAME"', cli, env)
        endpoint_name, setting_name = done.stdout.strip().splitlines()[-1].removeprefix("names: ").split()
        client = server.client()
        endpoint = client.online_endpoints.get(endpoint_name)
        assert endpoint["properties"]["azureml.onlineendpointid"] == endpoint["id"]

        setting = client.autoscale.get(setting_name)
        assert setting["targetResourceUri"] == client.online_deployments.get("blue", endpoint_name)["id"]
        default, weekend = setting["profiles"]
        assert default["capacity"] == {"minimum": "2", "maximum": "5", "default": "2"}
        conditions = [
            (r["metricTrigger"]["metricName"], r["metricTrigger"]["operator"], r["scaleAction"]["direction"])
            for r in default["rules"]
        ]
        assert conditions == [
            ("CpuUtilizationPercentage", "GreaterThan", "Increase"),
            ("CpuUtilizationPercentage", "LessThan", "Decrease"),
            ("RequestLatency", "GreaterThan", "Increase"),
        ]
        # The latency rule is on the endpoint's metric: the id the script read from the endpoint's properties.
        assert default["rules"][2]["metricTrigger"]["metricResourceUri"] == endpoint["id"]
        assert weekend["name"] == "weekend-profile" and weekend["capacity"]["default"] == "2"
        assert weekend["recurrence"]["schedule"]["days"] == ["Saturday", "Sunday"]
        assert weekend["recurrence"]["schedule"]["timeZone"] == "Pacific Standard Time"

        # "after applying this policy, it will scale up 2": instance_count 1 in the YAML, 2 answering now.
        blue = eventually(
            lambda: (d := client.online_deployments.get("blue", endpoint_name)).get("current_instances") == 2 and d,
            timeout=120,
            interval=0.5,
        )
        assert blue["instance_count"] == 1
        scaled = [
            e["message"] for e in client.online_deployments.get_events("blue", endpoint_name) if e["name"] == "Scaled"
        ]
        assert scaled and scaled[0].startswith("1 -> 2"), scaled

        names = {**env, "ENDPOINT_NAME": endpoint_name, "AUTOSCALE_SETTINGS_NAME": setting_name}
        bash(as_tiffin(clean_up), cli, names)
        with pytest.raises(NotFoundError):
            client.autoscale.get(setting_name)
        eventually(lambda: endpoint_name not in [e["name"] for e in client.online_endpoints.list()], timeout=60)
