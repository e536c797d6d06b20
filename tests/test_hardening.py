"""Lesser hardening findings, each pinned down in-process (no server processes): YAML alias bombs,
deeply nested JSON, duplicate Authorization headers, encoded slashes in endpoint names, 405 with Allow,
the OpenAPI schema agreeing with the server, and creates that fail leaving nothing behind."""

from __future__ import annotations

import asyncio
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from tiffin import v2
from tiffin.api import create_api, openapi_document
from tiffin.auth import Credentials
from tiffin.errors import BadRequestError, SpecError
from tiffin.gateway import Gateway
from tiffin.replica.app import ReplicaApp
from tiffin.routing import DeploymentRoute, EndpointRoute, RoutingTable
from tiffin.runners.protocol import Runner, RunnerSchema, ScoreRequest, ScoreResponse
from tiffin.specs import read_yaml
from tiffin.store import Store

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEYS = Credentials("key", primary_key="primary-key-0123456789", secondary_key="secondary-key-0123456789")
DEEP = b"[" * 100_000 + b"]" * 100_000  # past Python's recursion limit: json.loads raises RecursionError


def _asgi(app: Any, method: str, path: str, *, raw_path: bytes | None = None, headers=(), body=b""):
    """One request straight through an ASGI app: (status, headers, body)."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode(),
        "query_string": b"",
        "headers": [(k.lower(), v) for k, v in headers],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


# --- YAML -----------------------------------------------------------------------------------------


def _bomb(depth: int) -> str:
    lines = ["name: bomb", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, depth):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yml"
    path.write_text(_bomb(10))  # 10**10 strings once expanded
    with pytest.raises(SpecError, match="alias"):
        read_yaml(path)


def test_yaml_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yml"
    path.write_text("name: loop\ntags: &t {self: *t}\n")
    with pytest.raises(SpecError, match="alias"):
        read_yaml(path)


def test_yaml_modest_anchors_still_load(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yml"
    path.write_text(
        "name: blue\nsettings: &s {timeout: 3, retries: 2}\nliveness_probe: *s\nreadiness_probe:\n  <<: *s\n"
    )
    data, _ = read_yaml(path)
    assert data["liveness_probe"] == data["readiness_probe"] == {"timeout": 3, "retries": 2}


# --- the control plane ----------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = Store.open(home=tmp_path)
    app = create_api(store, admin_token=TOKEN, public_url="http://127.0.0.1:7700", home=tmp_path)
    with TestClient(Starlette(routes=[Mount("/api", app)])) as test_client:
        test_client.store = store  # type: ignore[attr-defined]
        yield test_client
    store.close()


@pytest.mark.parametrize(
    "body",
    [DEEP, b'{"name": "ep", "tags": ' + b'{"a": ' * 200 + b"1" + b"}" * 200 + b"}"],
    ids=["past-recursion-limit", "200-levels"],
)
def test_deeply_nested_json_is_400_on_the_control_plane(client: TestClient, body: bytes) -> None:
    r = client.post("/api/online-endpoints", content=body, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "nested" in r.json()["message"]
    assert client.get("/api/online-endpoints", headers=AUTH).json() == []


def test_control_plane_bodies_past_the_cap_are_413_and_not_read_whole(client: TestClient) -> None:
    from tiffin.api.app import MAX_BODY_BYTES

    filler = b" " * (MAX_BODY_BYTES + 1)  # whitespace: valid JSON around it, so only the size can refuse it
    for headers in ({**AUTH}, {**AUTH, "transfer-encoding": "chunked"}):
        r = client.post("/api/online-endpoints", content=b'{"name": "ep"' + filler + b"}", headers=headers)
        assert r.status_code == 413, r.text
        assert str(MAX_BODY_BYTES) in r.json()["message"]
    assert client.get("/api/online-endpoints", headers=AUTH).json() == []


def test_two_authorization_headers_are_400_on_the_control_plane(client: TestClient) -> None:
    for pair in ([f"Bearer {TOKEN}", "Bearer wrong"], ["Bearer wrong", f"Bearer {TOKEN}"]):
        headers = [("authorization", value) for value in pair]
        r = client.get("/api/online-endpoints", headers=headers)
        assert r.status_code == 400, r.text
        assert "Authorization" in r.json()["message"]


def test_authorization_header_helper() -> None:
    from tiffin.auth import authorization_header

    assert authorization_header([(b"host", b"x"), (b"authorization", b"Bearer k")]) == "Bearer k"
    assert authorization_header([(b"host", b"x")]) is None
    with pytest.raises(BadRequestError, match="Authorization"):
        authorization_header([(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")])


def test_405_names_every_allowed_method(client: TestClient) -> None:
    r = client.post("/api/online-endpoints/ep", headers=AUTH, json={})
    assert r.status_code == 405
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert {"GET", "PATCH", "DELETE"} <= allowed
    assert "POST" in r.json()["message"]


def test_deployment_without_code_or_servable_model_is_422_and_leaves_nothing(client: TestClient, tmp_path) -> None:
    assert client.post("/api/online-endpoints", headers=AUTH, json={"name": "ep"}).status_code == 201
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.json").write_text("{}")
    r = client.put("/api/online-endpoints/ep/deployments/blue", headers=AUTH, json={"model": {"path": str(model)}})
    assert r.status_code == 422, r.text
    assert "code_configuration" in r.json()["message"]
    assert client.get("/api/online-endpoints/ep/deployments", headers=AUTH).json() == []
    assert not (tmp_path / "model-mounts").exists()


def test_failed_endpoint_create_leaves_no_record(client: TestClient) -> None:
    r = client.post("/api/online-endpoints", headers=AUTH, json={"name": "ep", "traffic": {"blue": 100}})
    assert r.status_code in (400, 422), r.text
    assert client.get("/api/online-endpoints", headers=AUTH).json() == []


# --- the OpenAPI document -------------------------------------------------------------------------


def test_openapi_names_have_the_servers_pattern() -> None:
    schemas = openapi_document()["components"]["schemas"]
    name = schemas["EndpointSpec"]["properties"]["name"]
    assert name["minLength"] == 1
    pattern = re.compile(name["pattern"])
    assert pattern.search("my-endpoint_1") and not pattern.search("") and not pattern.search("1st")
    assert not pattern.search("a/b") and not pattern.search("a" * 64)


def test_openapi_traffic_needs_a_field() -> None:
    traffic = openapi_document()["components"]["schemas"]["Traffic"]
    assert traffic["minProperties"] == 1 and traffic["additionalProperties"] is False


def test_openapi_answers_list_the_statuses_the_server_gives() -> None:
    for methods in openapi_document()["paths"].values():
        for doc in methods.values():
            assert "default" in doc["responses"]
            if doc.get("security") != []:
                assert "401" in doc["responses"]


# --- the gateway ----------------------------------------------------------------------------------


def _gateway() -> Gateway:
    gateway = Gateway()
    endpoint = EndpointRoute("ep", KEYS, {"blue": 100}, {}, {"blue": DeploymentRoute("blue")})
    gateway.set_table(RoutingTable({"ep": endpoint}, generation=1))
    return gateway


def test_two_authorization_headers_are_400_at_the_gateway() -> None:
    key = f"Bearer {KEYS.primary_key}".encode()
    for pair in ([key, b"Bearer wrong"], [b"Bearer wrong", key]):
        headers = [(b"authorization", value) for value in pair]
        status, _, body = _asgi(_gateway(), "POST", "/endpoints/ep/score", headers=headers)
        assert status == 400, body
        assert b"Authorization" in body


def test_encoded_slash_in_the_endpoint_name_is_404() -> None:
    headers = [(b"authorization", f"Bearer {KEYS.primary_key}".encode())]
    status, _, body = _asgi(
        _gateway(), "POST", "/endpoints/ep/score", raw_path=b"/endpoints/ep%2Fscore", headers=headers
    )
    assert status == 404, body
    assert "ep/score" in json.loads(body)["message"]


def test_a_body_cut_short_by_the_client_is_not_forwarded() -> None:
    """The public server ends a stalled body with http.disconnect (or the client leaves): the part that
    arrived must not reach a replica as if it were the whole request."""
    from tiffin.errors import ClientDisconnectedError

    messages = iter(
        [{"type": "http.request", "body": b'{"data": [1, 2', "more_body": True}, {"type": "http.disconnect"}]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    with pytest.raises(ClientDisconnectedError):
        asyncio.run(_gateway()._read_body(receive))


def test_forwarded_target_always_starts_with_a_slash() -> None:
    from tiffin.gateway.forwarding import request_target

    scope = {"raw_path": b"/endpoints/ep%2Fscore", "query_string": b""}
    assert request_target(scope, b"/endpoints/ep", "/score").startswith(b"/")


# --- replicas: /score and V2 ----------------------------------------------------------------------


class _JsonRunner(Runner):
    """Parses the body as JSON, as typed scripts and MLflow do."""

    def load(self) -> None:
        pass

    def predict(self, request: ScoreRequest) -> ScoreResponse:
        return ScoreResponse(body=json.dumps(json.loads(request.body)).encode())

    def health(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def schema(self) -> RunnerSchema:
        return RunnerSchema()


@pytest.fixture
def replica() -> Iterator[ReplicaApp]:
    app = ReplicaApp(_JsonRunner(), name="blue", scoring_threads=0, tune_gc=False)
    app.startup()
    yield app
    app.shutdown()


def test_deeply_nested_json_is_400_on_score(replica: ReplicaApp) -> None:
    status, _, body = _asgi(replica, "POST", "/score", headers=[(b"content-type", b"application/json")], body=DEEP)
    assert status == 400, body
    assert "nested" in json.loads(body)["message"]


def test_deeply_nested_json_is_400_on_v2(replica: ReplicaApp) -> None:
    status, _, body = _asgi(replica, "POST", "/v2/models/blue/infer", body=DEEP)
    assert status == 400, body
    with pytest.raises(BadRequestError, match="nested"):
        v2.decode_infer_request(DEEP, {})


def test_replica_405_has_allow(replica: ReplicaApp) -> None:
    status, headers, _ = _asgi(replica, "DELETE", "/score")
    assert status == 405
    assert b"POST" in headers[b"allow"]


def test_deleting_a_deployment_removes_its_staged_model(client: TestClient, tmp_path: Path) -> None:
    from tiffin.paths import model_mount, model_mounts_dir, online_mount_identity
    from tiffin.replica.layout import stage_model
    from tiffin.specs import OnlineDeployment, parse_spec

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.json").write_text("{}")
    body = {"model": {"path": str(model)}, "code_configuration": {"code": str(tmp_path), "scoring_script": "s.py"}}
    assert client.post("/api/online-endpoints", headers=AUTH, json={"name": "ep"}).status_code == 201
    mounts = {name: model_mount(tmp_path, online_mount_identity("ep", name)) for name in ("blue", "green")}
    for name in mounts:
        r = client.put(f"/api/online-endpoints/ep/deployments/{name}", headers=AUTH, json=body)
        assert r.status_code == 201, r.text
        # What a replica does when it starts, and leaves behind when its init() then fails.
        spec = parse_spec({**body, "name": name, "endpoint_name": "ep"}, OnlineDeployment).spec
        stage_model(spec, model_mounts_dir(tmp_path), identity=online_mount_identity("ep", name))
        assert (mounts[name] / "current" / "model" / "weights.json").is_file()
    assert client.delete("/api/online-endpoints/ep/deployments/blue", headers=AUTH).status_code == 204
    assert not mounts["blue"].exists() and mounts["green"].exists()
    assert client.delete("/api/online-endpoints/ep", headers=AUTH).status_code == 204
    assert not mounts["green"].parent.exists()
