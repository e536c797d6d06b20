"""The `tiffin` command as a user runs it: exit codes, one JSON document on stdout, messages on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "azure"
TIFFIN = [sys.executable, "-m", "tiffin.cli"]


def tiffin(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TIFFIN, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def blue_yml(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Azure's sample blue-deployment.yml, unmodified, where azureml-examples keeps it, beside the model folder
    it names (``validate`` checks that the model is there, as ``create`` does): a scikit-learn regression."""
    import pickle

    from sklearn.linear_model import LinearRegression

    root = tmp_path_factory.mktemp("azureml-examples") / "cli" / "endpoints" / "online"
    sample, model = root / "managed" / "sample", root / "model-1" / "model"
    sample.mkdir(parents=True)
    model.mkdir(parents=True)
    (sample / "blue-deployment.yml").write_bytes((FIXTURES / "online" / "blue-deployment.yml").read_bytes())
    fitted = LinearRegression().fit([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0])
    (model / "sklearn_regression_model.pkl").write_bytes(pickle.dumps(fitted))
    return str(sample / "blue-deployment.yml")


def test_validate_prints_one_json_document_and_warns_on_stderr(blue_yml):
    done = tiffin("validate", "-f", blue_yml, "-o", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["kind"] == "OnlineDeployment"
    assert doc["spec"]["name"] == "blue"
    assert "instance_type" in doc["ignored"]
    assert "ignored locally: instance_type" in done.stderr


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("tsv", "1\n"), ("json", "1\n"), ("yaml", "1\n...\n")],
)
def test_query_and_output_formats(fmt, expected, blue_yml):
    done = tiffin("validate", "-f", blue_yml, "--query", "spec.instance_count", "-o", fmt)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected


def test_set_overrides_a_field(blue_yml):
    done = tiffin(
        "validate",
        "-f",
        blue_yml,
        "--set",
        "instance_count=3",
        "--query",
        "spec.instance_count",
    )
    assert json.loads(done.stdout) == 3


def test_bad_field_is_exit_1_naming_the_field(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n"
        "name: blue\ninstance_count: two\n"
    )
    done = tiffin("validate", "-f", str(bad))
    assert done.returncode == 1
    assert "bad.yml" in done.stderr and "instance_count" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_missing_file_and_bad_query_are_user_errors(tmp_path):
    done = tiffin("validate", "-f", str(tmp_path / "nope.yml"))
    assert done.returncode == 1 and "not found" in done.stderr
    done = tiffin("validate", "-f", str(FIXTURES / "online" / "endpoint.yml"), "--query", "[[[")
    assert done.returncode == 1 and "JMESPath" in done.stderr


def test_a_message_with_brackets_is_printed_as_text(tmp_path):
    """Rich would read "[/nope]" in a path as a closing tag and crash with a traceback."""
    missing = f"{tmp_path}/[/nope].yml"
    done = tiffin("validate", "-f", missing)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "[/nope].yml" in done.stderr and "not found" in done.stderr, done.stderr


def test_a_table_prints_brackets_in_values_as_text(capsys):
    from tiffin.cli.output import _table

    _table({"name": "blue", "description": "see [/docs] and [bold]this[/bold]"})
    assert "see [/docs] and [bold]this[/bold]" in capsys.readouterr().out


def test_usage_errors_exit_2():
    assert tiffin("validate", "--bogus").returncode == 2
    assert tiffin("no-such-command").returncode == 2


def test_replica_serve_refuses_a_bad_spec_before_starting(tmp_path):
    bad = tmp_path / "d.yml"
    bad.write_text("name: d\ncode_configuration: {code: ., scoring_script: missing.py}\n")
    done = tiffin("replica", "serve", "-f", str(bad), "--port", "1")
    assert done.returncode == 1
    assert "missing.py" in done.stderr or "online" in done.stderr
    assert "Traceback" not in done.stderr


def test_version_as_az_has_it():
    from importlib.metadata import version

    done = tiffin("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"tiffin {version('tiffin')}\n"


def test_output_none_prints_nothing(blue_yml):
    done = tiffin("validate", "-f", blue_yml, "-o", "none")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("query", ["spec", "[spec, spec]"])
def test_table_is_readable_at_80_columns(query, blue_yml):
    done = subprocess.run(
        [*TIFFIN, "validate", "-f", blue_yml, "--query", query, "-o", "table"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 80, done.stdout
    # Whole values, not cut off with an ellipsis: a column that does not fit is left out, and said so.
    assert "…" not in done.stdout, done.stdout
    assert "my-endpoint" in done.stdout and "Standard_DS2_v2" in done.stdout


def test_serve_says_where_it_logs(tmp_path):
    from tiffin.testing import serve_tiffin

    with serve_tiffin(tmp_path / "home") as server:
        log = server.log()
    assert str(tmp_path / "home" / "logs") in log, log
    assert "job.log" in log and "stderr" in log, log


@pytest.mark.parametrize(
    "command",
    [
        ("online-endpoint", "create"),
        ("online-endpoint", "update"),
        ("online-endpoint", "delete"),
        ("online-endpoint", "regenerate-keys"),
        ("online-deployment", "delete"),
        ("batch-endpoint", "create"),
        ("batch-endpoint", "delete"),
        ("batch-deployment", "delete"),
        ("job", "cancel"),
    ],
)
def test_no_wait_says_what_it_does(command):
    """az's --no-wait returns before a long operation ends; where the operation has ended when the request
    returns, the help says so instead of promising a difference there is none of."""
    done = subprocess.run(
        [*TIFFIN, *command, "--help"], capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "300"}
    )
    assert done.returncode == 0, done.stderr
    assert "nothing to wait for" in done.stdout, done.stdout


def test_batch_deployment_create_no_wait_skips_the_environment_build():
    """A batch deployment is provisioned (its environment built, workers warmed) before it is Succeeded, as Azure
    builds its image: --no-wait returns before that, and the help says so."""
    done = subprocess.run(
        [*TIFFIN, "batch-deployment", "create", "--help"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "environment to be built" in done.stdout, done.stdout


def test_no_wait_of_a_deployment_returns_before_it_is_ready():
    done = subprocess.run(
        [*TIFFIN, "online-deployment", "create", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert "Return without waiting for the deployment to be ready" in done.stdout, done.stdout
