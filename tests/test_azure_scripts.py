"""Shell scripts written the way Azure's samples are, run unmodified against a real ``tiffin serve``.

The scripts (``tests/azure_scripts/``) follow azureml-examples' ``deploy-and-run.sh`` with ``az ml`` typed as
``tiffin``: they register models and data, refer to them as ``azureml:NAME:VERSION`` / ``@latest``, deploy,
invoke, stream, and download outputs as Azure lays them out. Each runs in a copy of its folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tiffin.testing import serve_tiffin

SCRIPTS = Path(__file__).parent / "azure_scripts"
EXAMPLES = Path(__file__).parents[1] / "examples" / "batch"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with serve_tiffin(tmp_path_factory.mktemp("azure-scripts") / "home") as running:
        yield running


def run_script(server: Any, folder: Path, script: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    env = {
        **server.env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "BENTOML_HOME": str(folder / "bentoml"),
    }
    done = subprocess.run(["bash", script], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{script} -> {done.returncode}\n{done.stdout}\n{done.stderr}\n{server.log()[-3000:]}"
    return done


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_three_deployments_of_three_registered_model_versions(server: Any, tmp_path: Path) -> None:
    folder = tmp_path / "online"
    shutil.copytree(SCRIPTS / "online", folder)
    done = run_script(server, folder, "deploy-three.sh")
    lines = done.stdout.splitlines()
    assert "latest model version: 3" in lines, done.stdout
    # Each deployment scores with the version it was given: sums (55, 55) times the version's scale.
    for n in (1, 2, 3):
        answer = next(line for line in lines if line.startswith(f"v{n}: "))
        assert json.loads(answer.removeprefix(f"v{n}: ")) == [55 * n, 55 * n], answer
    model_id = next(line for line in lines if line.startswith("model id: ")).removeprefix("model id: ")
    assert model_id.endswith("/models/scaler/versions/2"), model_id
    assert "azureml:scaler:2" in lines, done.stdout  # the deployment keeps its pinned reference


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mlflow_batch_deployment_over_a_registered_data_asset(server: Any, tmp_path: Path) -> None:
    import pandas as pd

    folder = tmp_path / "batch"
    shutil.copytree(SCRIPTS / "batch", folder)
    shutil.copy(EXAMPLES / "train.py", folder / "train.py")  # the samples ship their model ready-made
    subprocess.run([sys.executable, "train.py", "--files", "4", "--rows", "25"], cwd=folder, check=True, timeout=300)
    done = run_script(server, folder, "deploy-and-run.sh")
    assert "Job completed" in done.stdout, done.stdout
    output = folder / "named-outputs" / "score" / "predictions.csv"
    assert output.exists(), sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if "named" in str(p))
    # Read back exactly as Azure's heart-classifier-mlflow notebook reads its scores.
    score = pd.read_csv(output, names=["row", "prediction", "file"])
    assert len(score) == 4 * 25, score
    assert sorted(score["file"].unique()) == [f"diabetes-unlabeled-{i}.csv" for i in range(4)]
    assert score["prediction"].between(0, 400).all(), score["prediction"].describe()
