"""``tiffin export kubernetes`` against a real ``tiffin serve`` holding the quickstart endpoint (examples/quickstart).

The manifests it prints or writes are validated against Kubernetes' schemas (the pinned kubernetes-validate);
tests/test_kubernetes.py checks their content in detail.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate  # the test extra pins it: missing, these tests fail rather than skip
import pytest
import yaml
from conftest import PgServer, pg_database

from tiffin.testing import TiffinProcess, free_port, serve_tiffin

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("quickstart_models")]  # the quickstart's models, trained once

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart"
K8S_VERSIONS = ("1.25.0", "1.37.0")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TiffinProcess]:
    from tiffin.specs import OnlineDeployment, OnlineEndpoint, load_spec

    with serve_tiffin(tmp_path_factory.mktemp("k8s") / "home") as running, running.client() as client:
        client.online_endpoints.create(load_spec(QUICKSTART / "endpoint.yml", OnlineEndpoint).spec)
        # Waited for, although export reads only specs: a server stopped while it builds the deployment's
        # environment would leave that build to be cleaned up.
        client.online_deployments.create_or_update(
            load_spec(QUICKSTART / "blue-deployment.yml", OnlineDeployment).spec, all_traffic=True
        )
        client.batch_endpoints.create({"name": "batch-ep"})
        yield running


def _tiffin(server: TiffinProcess, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tiffin.cli", *args],
        env=env or server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _validate(items: list[dict[str, Any]]) -> None:
    for item in items:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(item, version, strict=True)


def test_yaml_on_stdout_validates_and_names_the_quickstart_image(server: TiffinProcess) -> None:
    done = _tiffin(server, "export", "kubernetes", "-n", "my-endpoint", "--image-registry", "ghcr.io/me")
    assert done.returncode == 0, done.stderr
    items = list(yaml.safe_load_all(done.stdout))
    _validate(items)
    assert [(m["kind"], m["metadata"]["name"]) for m in items] == [
        ("Secret", "my-endpoint-keys"),
        ("Secret", "tiffin-store"),
        ("Deployment", "tiffin-gateway"),
        ("Service", "tiffin-gateway"),
        ("Deployment", "my-endpoint-blue"),
        ("Service", "my-endpoint-blue"),
    ]
    blue = items[4]
    container = blue["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/me/tiffin-my-endpoint-blue:latest"
    assert blue["spec"]["replicas"] == 1
    # The quickstart's Standard_DS3_v2: 4 vCPUs, 14 GiB; Azure's default probe settings.
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "14336Mi"}
    assert container["readinessProbe"]["failureThreshold"] == 30
    assert blue["metadata"]["annotations"]["tiffin.ai/traffic"] == "100"
    # Without --include-keys, the real keys are nowhere in the output.
    with server.client() as client:
        keys = client.online_endpoints.get_keys("my-endpoint")
    assert keys["primaryKey"] not in done.stdout and keys["secondaryKey"] not in done.stdout
    # A client given the unfilled placeholder is refused: the Secret fails closed.
    placeholder = items[0]["stringData"]["primaryKey"]
    refused = httpx.post(
        f"{server.url}/endpoints/my-endpoint/score", content=b"{}", headers={"Authorization": f"Bearer {placeholder}"}
    )
    assert refused.status_code == 401


def test_json_is_a_list_kubectl_reads(server: TiffinProcess) -> None:
    done = _tiffin(server, "export", "kubernetes", "-n", "my-endpoint", "-o", "json", "--namespace", "ml")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert (document["apiVersion"], document["kind"]) == ("v1", "List")
    _validate(document["items"])
    assert {item["metadata"]["namespace"] for item in document["items"]} == {"ml"}


def test_output_dir_with_keys_writes_private_files_and_keys_only_in_the_secret(
    server: TiffinProcess, tmp_path: Path
) -> None:
    out = tmp_path / "manifests"
    done = _tiffin(
        server, "export", "kubernetes", "-n", "my-endpoint", "--output-dir", str(out), "--include-keys",
        "--store-secret", "prod-store", "-o", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = [Path(p) for p in json.loads(done.stdout)["files"]]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files)
    assert files[0].name == "01-secret-my-endpoint-keys.yaml"
    with server.client() as client:
        keys = client.online_endpoints.get_keys("my-endpoint")
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        (item,) = yaml.safe_load_all(path.read_text())
        _validate([item])
        text = path.read_text()
        if item["kind"] == "Secret":
            assert item["stringData"] == {"primaryKey": keys["primaryKey"], "secondaryKey": keys["secondaryKey"]}
        else:
            assert keys["primaryKey"] not in text and keys["secondaryKey"] not in text, path
    assert not [p for p in files if "tiffin-store" in p.name]  # the user's own Secret is named, not written


@pytest.mark.parametrize("name", ["nope", "batch-ep"])
def test_unknown_or_batch_endpoint_is_a_clear_error(server: TiffinProcess, name: str) -> None:
    done = _tiffin(server, "export", "kubernetes", "-n", name)
    assert done.returncode == 1
    assert f"online endpoint '{name}' not found" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_bad_options_are_clear_errors(server: TiffinProcess) -> None:
    bad_tag = _tiffin(server, "export", "kubernetes", "-n", "my-endpoint", "--image-tag", "-x")
    assert bad_tag.returncode == 1 and "image tag '-x' is not a valid tag" in bad_tag.stderr
    assert bad_tag.stdout == ""
    table = _tiffin(server, "export", "kubernetes", "-n", "my-endpoint", "-o", "table")
    assert table.returncode == 2 and "yaml or json" in table.stderr


def test_no_server_is_a_clear_error(server: TiffinProcess) -> None:
    env = {**server.env, "TIFFIN_URL": f"http://127.0.0.1:{free_port()}"}
    done = _tiffin(server, "export", "kubernetes", "-n", "my-endpoint", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr


def _pod_env(container: dict[str, Any], secret: dict[str, str], fields: dict[str, str]) -> dict[str, str]:
    """A container's environment as the kubelet makes it: Secret keys and pod fields filled in, ``$(VAR)`` expanded
    from the variables before it."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
        elif "secretKeyRef" in item["valueFrom"]:
            env[item["name"]] = secret[item["valueFrom"]["secretKeyRef"]["key"]]
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def test_gateway_pod_as_written_serves_the_stores_endpoint_with_the_same_keys(
    pg_server: PgServer, tmp_path: Path
) -> None:
    """The gateway Deployment's init container and server, run as the manifest says (its volume a folder here, its
    port a free loopback one), on the PostgreSQL store a first tiffin serve made the endpoint in: the admin token
    is the Secret's, and the keys `get-credentials` showed before answer the same."""
    from cryptography.fernet import Fernet

    from tiffin.containers.kubernetes import endpoint_manifests

    secret_key = Fernet.generate_key().decode()
    with pg_database(pg_server) as url:
        store_env = {"TIFFIN_STORE_URL": url, "TIFFIN_SECRET_KEY": secret_key}
        with serve_tiffin(tmp_path / "first", env=store_env) as first, first.client() as client:
            client.online_endpoints.create({"name": "kube-ep", "auth_mode": "key"})
            keys = client.online_endpoints.get_keys("kube-ep")
            manifests = endpoint_manifests(client.online_endpoints.get("kube-ep"), [])
        (gateway,) = [m for m in manifests.items if m["kind"] == "Deployment"]
        pod = gateway["spec"]["template"]["spec"]
        (init,), (server,) = pod["initContainers"], pod["containers"]
        assert server["command"] == ["tiffin", "serve", "--host", "0.0.0.0", "--port", "7700"]
        mount = server["volumeMounts"][0]["mountPath"]
        assert init["volumeMounts"][0]["mountPath"] == mount
        volume = tmp_path / "volume"
        volume.mkdir()
        secret = {**store_env, "TIFFIN_ADMIN_TOKEN": "admin-token-from-the-secret-" + Fernet.generate_key().decode()}
        fields = {"metadata.name": "tiffin-gateway-7d9f-abcde", "status.podIP": "127.0.0.1"}

        def here(text: str) -> str:  # the volume's mount path, as this machine has it
            return text.replace(mount, str(volume))

        init_env = _pod_env(init, secret, fields)
        subprocess.run([here(arg) for arg in init["command"]], env=init_env, check=True, timeout=30)
        env = {name: here(value) for name, value in _pod_env(server, secret, fields).items()}
        home = Path(env["TIFFIN_HOME"])
        assert stat.S_IMODE((home / "admin-token").stat().st_mode) == 0o600
        assert "TIFFIN_ADMIN_TOKEN" not in env
        with serve_tiffin(home, env=env) as pod_server:
            assert pod_server.admin_token == secret["TIFFIN_ADMIN_TOKEN"]
            with pod_server.client() as client:
                assert client.online_endpoints.get_keys("kube-ep") == keys
            refused = httpx.get(f"{pod_server.url}/api/online-endpoints", headers={"Authorization": "Bearer wrong"})
            assert refused.status_code == 401
            assert httpx.get(f"{pod_server.url}/api/health").status_code == 200
