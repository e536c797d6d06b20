"""The pure rules around environments and replica plans (milliseconds, no processes): Azure's serving packages,
interpreters older than the runtime runs on, and a replica plan's round trip through JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiffin.environments.runtime import PreparedEnvironment, runtime_key, supported
from tiffin.environments.serving import serving_packages, with_floors, without_serving
from tiffin.environments.spec import EnvironmentSpec
from tiffin.replica.plan import ReplicaPlan
from tiffin.runners.byoc import ByocRunnerConfig
from tiffin.runners.kinds import runner_from_json, runner_to_json
from tiffin.runners.mlflow import MLflowRunnerConfig
from tiffin.runners.script import ScriptRunner, ScriptRunnerConfig
from tiffin.runners.triton import TritonRunnerConfig


def test_unpinned_serving_packages_get_a_floor_and_pinned_ones_are_left_alone():
    lines = [
        "azureml-defaults",
        "AzureML_Inference_Server_HTTP[extra]; python_version >= '3.8'",
        "azureml-defaults==1.43.0",
        "numpy",
        "--extra-index-url https://example.invalid/simple",
    ]
    assert with_floors(lines) == [
        "azureml-defaults>=1.50",
        'AzureML_Inference_Server_HTTP[extra]>=1.0; python_version >= "3.8"',
        "azureml-defaults==1.43.0",
        "numpy",
        "--extra-index-url https://example.invalid/simple",
    ]
    assert serving_packages(lines) == ["azureml-defaults", "azureml-inference-server-http", "azureml-defaults"]
    assert without_serving(lines) == ["numpy", "--extra-index-url https://example.invalid/simple"]


@pytest.mark.parametrize(
    ("python", "expected", "noted"),
    [
        ("3.7.11", "3.8", True),
        ("3.6", "3.8", True),
        ("3.8", "3.8", False),
        ("3.13", "3.13", False),
        (None, None, False),
    ],
)
def test_pythons_older_than_the_runtime_are_built_on_38_with_a_note(python, expected, noted):
    spec = supported(EnvironmentSpec(python=python, requirements=("numpy",)))
    assert spec.python == expected
    assert bool(spec.notes) is noted
    if noted:
        assert "3.8" in spec.notes[0] and "pin python=3.8 or later" in spec.notes[0]


def test_a_37_environment_and_its_38_twin_share_one_build():
    assert runtime_key(EnvironmentSpec(python="3.7.11", requirements=("six",))) == runtime_key(
        EnvironmentSpec(python="3.8", requirements=("six",))
    )


def test_process_env_puts_the_runtime_first_and_the_environment_on_path(tmp_path: Path):
    prepared = PreparedEnvironment(
        key="k", path=tmp_path / "env", runtime=tmp_path / "rt", spec=EnvironmentSpec(python="3.10", requirements=())
    )
    env = prepared.process_env(
        {
            "PATH": "/usr/bin",
            "PYTHONPATH": "/mine",
            "PYTHONHOME": "/x",
            "CONDA_PREFIX": "/c",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    assert env["PYTHONPATH"].split(":") == [str(tmp_path / "rt"), "/mine"]
    assert env["PATH"].split(":")[0] == str(tmp_path / "env" / "bin")
    assert env["PYTHONNOUSERSITE"] == "1" and "PYTHONHOME" not in env and "CONDA_PREFIX" not in env
    assert prepared.python == tmp_path / "env" / "bin" / "python"
    # Compiled once into the environment's own folder, not again at every replica start.
    assert "PYTHONDONTWRITEBYTECODE" not in env and env["PYTHONPYCACHEPREFIX"] == str(tmp_path / "env" / ".pycache")


@pytest.mark.parametrize(
    "config",
    [
        ScriptRunnerConfig(code_dir=Path("/c"), scoring_script="score.py", model_dir=Path("/m"),
                           environment_variables={"A": "1"}),
        ScriptRunnerConfig(code_dir=Path("/c"), scoring_script="score.py"),
        MLflowRunnerConfig(model_uri="models:/m/1", environment_variables={"MLFLOW_TRACKING_URI": "sqlite:///x.db"}),
        TritonRunnerConfig(repository=Path("/r"), model_aliases=frozenset({"a", "b"})),
        ByocRunnerConfig(command=("python", "-m", "server"), container_port=5001, model_dir=None),
    ],
)  # fmt: skip
def test_runner_configs_survive_the_plan_as_they_were(config):
    kind, data = runner_to_json(config)
    plan = ReplicaPlan(kind=kind, runner=data, name="blue", model_names=("ep",), warnings=("w",))
    again = ReplicaPlan.from_json(plan.to_json())
    assert again == plan
    assert runner_from_json(again.kind, again.runner).config == config


def test_a_plan_from_another_version_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="restart tiffin serve"):
        ReplicaPlan.from_json('{"format": 99, "kind": "script"}')
    with pytest.raises(ValueError, match="unknown runner kind"):
        runner_from_json("nope", {})
    assert isinstance(
        runner_from_json("script", {"code_dir": "/c", "scoring_script": "s.py", "model_dir": None}), ScriptRunner
    )
