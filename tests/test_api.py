"""The control plane REST API in-process: Starlette's TestClient over a real SQLite store, mounted at
/api as ``tiffin serve`` mounts it. No processes: the supervisor's part (setting deployment states) is
done by the tests through the store, as the supervisor does it."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from tiffin.api import create_api, openapi_document
from tiffin.auth import verify_token
from tiffin.errors import AuthError
from tiffin.paths import replica_log_path
from tiffin.store import Store

with warnings.catch_warnings():
    # Starlette 1.x would rather its TestClient ran on the httpx2 fork; httpx serves the same here.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PUBLIC = "http://127.0.0.1:7700"
# A deployment needs something to run (a deployment nothing can run is refused at create, 422).
CODE = {"code": "code/", "scoring_script": "score.py"}


class Api:
    """A TestClient that sends the admin token, plus the store and what on_change saw."""

    def __init__(self, client: TestClient, store: Store, home: Path, changes: list[int], api: Starlette) -> None:
        self.client, self.store, self.home, self.changes, self.app = client, store, home, changes, api

    def __getattr__(self, method: str) -> Any:  # get/post/put/patch/delete with the admin token
        call = getattr(self.client, method)
        return lambda url, **kw: call("/api" + url, headers={**AUTH, **kw.pop("headers", {})}, **kw)

    def endpoint(self, name: str = "ep", **fields: Any) -> dict[str, Any]:
        response = self.post("/online-endpoints", json={"name": name, **fields})
        assert response.status_code == 201, response.text
        return response.json()

    def deployment(self, name: str = "blue", endpoint: str = "ep", **fields: Any) -> dict[str, Any]:
        body = {"model": {"path": str(self.home)}, "code_configuration": CODE, **fields}
        response = self.put(f"/online-endpoints/{endpoint}/deployments/{name}", json=body)
        assert response.status_code in (200, 201), response.text
        return response.json()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    store = Store.open(home=tmp_path)
    changes: list[int] = []
    stats = {"ep": {"requests": 3}}
    app = create_api(
        store,
        admin_token=TOKEN,
        public_url=PUBLIC + "/",
        on_change=lambda: changes.append(1),
        stats=lambda name: stats.get(name, {}),
        home=tmp_path,
    )
    with TestClient(Starlette(routes=[Mount("/api", app)])) as client:
        yield Api(client, store, tmp_path, changes, app)
    store.close()


def message(response: Any) -> str:
    return response.json()["message"]


# --- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + TOKEN}])
def test_every_route_but_health_and_openapi_needs_the_admin_token(api: Api, headers: dict[str, str]) -> None:
    for op in openapi_document()["paths"].items():
        path, methods = op
        url = "/api" + path.replace("{name}", "ep").replace("{deployment}", "blue")
        for method, doc in methods.items():
            response = api.client.request(method.upper(), url, headers=headers, json={})
            if doc.get("security") == []:
                assert response.status_code == 200, (method, path)
            else:
                assert response.status_code == 401, (method, path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert "admin" in message(response)


def test_health_and_openapi_are_public(api: Api) -> None:
    assert api.client.get("/api/health").json() == {"status": "ok"}
    assert api.client.get("/api/openapi.json").json()["openapi"].startswith("3.")


# --- endpoints -----------------------------------------------------------------------------------


def test_create_show_list_an_endpoint_as_az_prints_it(api: Api) -> None:
    created = api.endpoint("ep", description="demo", tags={"team": "a"})
    assert api.changes == [1]
    assert created["scoring_uri"] == f"{PUBLIC}/endpoints/ep/score"
    assert created["openapi_uri"] == f"{PUBLIC}/endpoints/ep/swagger.json"
    assert created["provisioning_state"] == "Succeeded"
    assert created["auth_mode"] == "key"
    assert created["kind"] == "online"
    assert created["local"] is False
    assert (created["description"], created["tags"]) == ("demo", {"team": "a"})
    assert (created["traffic"], created["mirror_traffic"]) == ({}, {})
    assert api.get("/online-endpoints/ep").json() == created
    assert [e["name"] for e in api.get("/online-endpoints").json()] == ["ep"]


def test_endpoint_json_never_holds_keys_or_secrets(api: Api) -> None:
    api.endpoint("ep", auth_mode="aml_token")
    record = api.store.get_endpoint("ep")
    text = api.get("/online-endpoints/ep").text + api.get("/online-endpoints").text
    for secret in (record.primary_key, record.secondary_key, record.token_secret):
        assert secret and secret not in text


def test_duplicate_and_unknown_endpoints(api: Api) -> None:
    api.endpoint("ep")
    duplicate = api.post("/online-endpoints", json={"name": "ep"})
    assert duplicate.status_code == 409
    assert "already exists" in message(duplicate)
    missing = api.get("/online-endpoints/nope")
    assert missing.status_code == 404
    assert "'nope' not found" in message(missing)
    assert api.delete("/online-endpoints/nope").status_code == 404


def test_a_batch_endpoint_is_not_an_online_one(api: Api) -> None:
    api.store.create_endpoint("batch", "nightly", {})
    assert api.get("/online-endpoints/nightly").status_code == 404
    assert api.get("/online-endpoints").json() == []
    taken = api.post("/online-endpoints", json={"name": "nightly"})
    assert taken.status_code == 409
    assert "batch endpoint" in message(taken)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b"\xff\xfe", 400, "not UTF-8"),
        (b"{}", 422, "field 'name': is required"),
        (b'{"name": 5}', 422, "field 'name'"),
        (b'{"name": "1bad"}', 422, "must start with a letter"),
        (b'{"name": "ep", "auth_mode": "password"}', 422, "field 'auth_mode'"),
        (b'{"name": "ep", "traffic": "all"}', 422, "field 'traffic'"),
        (b'{"name": "ep", "traffic": {"blue": 100}}', 422, "deployment 'blue' does not exist"),
        (b'{"name": "ep", "local": "yes"}', 422, "field 'local'"),
    ],
)
def test_bad_endpoint_bodies_are_4xx_naming_the_problem(api: Api, body: bytes, status: int, words: str) -> None:
    response = api.post("/online-endpoints", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert words in message(response)
    assert api.changes == []


def test_patch_changes_the_given_fields_only(api: Api) -> None:
    api.endpoint("ep", description="old", tags={"a": "1"})
    api.deployment("blue")
    api.put("/online-endpoints/ep/traffic", json={"traffic": {"blue": 100}})
    patched = api.patch("/online-endpoints/ep", json={"description": "new"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == "new"
    assert patched.json()["tags"] == {"a": "1"}
    assert patched.json()["traffic"] == {"blue": 100}
    cleared = api.patch("/online-endpoints/ep", json={"description": None}).json()
    assert cleared["description"] is None
    token_mode = api.patch("/online-endpoints/ep", json={"auth_mode": "aml_token"}).json()
    assert token_mode["auth_mode"] == "aml_token"


def test_an_answer_can_be_sent_back_as_a_spec(api: Api) -> None:
    """`show` output fed back (as azure-ai-ml users do with get results) updates without keeping
    the answer's read-only fields as spec."""
    shown = api.endpoint("ep", description="old")
    back = api.patch("/online-endpoints/ep", json={**shown, "description": "new"}).json()
    assert back["description"] == "new"
    assert set(api.store.get_endpoint("ep").spec) == {"description", "tags"}
    deployment = api.deployment("blue")
    again = api.put("/online-endpoints/ep/deployments/blue", json={**deployment, "instance_count": 3}).json()
    assert again["instance_count"] == 3
    assert not {"provisioning_state", "reason", "created_at"} & set(api.store.get_deployment("ep", "blue").spec)


def test_patch_cannot_rename(api: Api) -> None:
    api.endpoint("ep")
    response = api.patch("/online-endpoints/ep", json={"name": "other"})
    assert response.status_code == 422
    assert "field 'name'" in message(response)


# --- traffic -------------------------------------------------------------------------------------


@pytest.fixture
def blue_green(api: Api) -> Api:
    api.endpoint("ep")
    api.deployment("blue")
    api.deployment("green")
    return api


def test_traffic_split_and_mirror(blue_green: Api) -> None:
    api = blue_green
    response = api.put("/online-endpoints/ep/traffic", json={"traffic": {"blue": 90, "green": 10}})
    assert response.status_code == 200, response.text
    assert response.json()["traffic"] == {"blue": 90, "green": 10}
    mirrored = api.put(
        "/online-endpoints/ep/traffic", json={"traffic": {"blue": 100, "green": 0}, "mirror_traffic": {"green": 10}}
    ).json()
    assert (mirrored["traffic"], mirrored["mirror_traffic"]) == ({"blue": 100, "green": 0}, {"green": 10})
    assert api.store.get_endpoint("ep").traffic == {"blue": 100, "green": 0}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"traffic": {"blue": 50}}, "field 'traffic': percentages must add up to 100, or all be 0 (got 50)"),
        ({"traffic": {"blue": 50, "red": 50}}, "deployment 'red' does not exist"),
        ({"traffic": {"blue": "90", "green": 10}}, "field 'traffic.blue': must be a whole number (got '90')"),
        ({"traffic": {"blue": 100}, "mirror_traffic": {"green": 60}}, "at most 50%"),
        ({"traffic": {"blue": 100}, "mirror_traffic": {"blue": 10}}, "cannot also receive mirrored"),
        ({"traffic": [1]}, "field 'traffic': must be a mapping"),
        ({"weights": {}}, "field 'weights'"),
        ({}, "send traffic"),
    ],
)
def test_bad_traffic_is_422_naming_the_rule(blue_green: Api, body: dict[str, Any], words: str) -> None:
    response = blue_green.put("/online-endpoints/ep/traffic", json=body)
    assert response.status_code == 422, response.text
    assert words in message(response)
    assert blue_green.store.get_endpoint("ep").traffic == {}


def test_a_zero_percent_mirror_entry_does_not_lock_the_endpoint(blue_green: Api) -> None:
    """Issue 11: the traffic route accepted a 0% mirror entry beside a mirrored one, and every later PATCH of
    the endpoint (its description even) answered 422, as the spec counted entries where the route did not."""
    api = blue_green
    assert api.put("/online-endpoints/ep/traffic", json={"traffic": {"blue": 100}}).status_code == 200
    mirrored = api.put("/online-endpoints/ep/traffic", json={"mirror_traffic": {"blue": 0, "green": 10}})
    assert mirrored.status_code == 200, mirrored.text
    patched = api.patch("/online-endpoints/ep", json={"description": "still editable"})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["description"], patched.json()["mirror_traffic"]) == (
        "still editable",
        {"blue": 0, "green": 10},
    )
    # The same rules answer both routes: what one refuses the other refuses too, with the same message.
    for body in ({"mirror_traffic": {"blue": 10, "green": 10}}, {"mirror_traffic": {"green": 60}}):
        via_put, via_patch = (
            api.put("/online-endpoints/ep/traffic", json=body),
            api.patch("/online-endpoints/ep", json=body),
        )
        assert (via_put.status_code, via_patch.status_code) == (422, 422)
        assert message(via_put).split("field ")[-1] == message(via_patch).split("field ")[-1]


def test_patch_traffic_is_checked_too(blue_green: Api) -> None:
    response = blue_green.patch("/online-endpoints/ep", json={"traffic": {"blue": 60, "green": 30}})
    assert response.status_code == 422
    assert "traffic" in message(response)
    ok = blue_green.patch("/online-endpoints/ep", json={"traffic": {"blue": 60, "green": 40}})
    assert ok.json()["traffic"] == {"blue": 60, "green": 40}


# --- credentials ---------------------------------------------------------------------------------


def test_key_mode_credentials_and_regeneration(api: Api) -> None:
    api.endpoint("ep")
    before = api.get("/online-endpoints/ep/credentials").json()
    record = api.store.get_endpoint("ep")
    assert before == {"primaryKey": record.primary_key, "secondaryKey": record.secondary_key}

    assert api.post("/online-endpoints/ep/regenerate-keys", json={"key_type": "secondary"}).status_code == 204
    after = api.get("/online-endpoints/ep/credentials").json()
    assert after["primaryKey"] == before["primaryKey"]
    assert after["secondaryKey"] != before["secondaryKey"]

    assert api.post("/online-endpoints/ep/regenerate-keys").status_code == 204  # default: primary
    last = api.get("/online-endpoints/ep/credentials").json()
    assert last["primaryKey"] != after["primaryKey"]
    assert last["secondaryKey"] == after["secondaryKey"]

    bad = api.post("/online-endpoints/ep/regenerate-keys", json={"key_type": "tertiary"})
    assert bad.status_code == 422
    assert "field 'key_type'" in message(bad)


@pytest.mark.parametrize("mode", ["aml_token", "aad_token"])
def test_token_mode_issues_verifiable_tokens_and_regeneration_revokes_them(api: Api, mode: str) -> None:
    api.endpoint("ep", auth_mode=mode)
    credentials = api.get("/online-endpoints/ep/credentials").json()
    assert set(credentials) >= {"accessToken", "expiryTimeUtc"}
    assert credentials["expiryTimeUtc"].endswith("Z")
    token = credentials["accessToken"]
    verify_token(token, "ep", api.store.get_endpoint("ep").token_secret)
    with pytest.raises(AuthError):
        verify_token(token, "other", api.store.get_endpoint("ep").token_secret)

    assert api.post("/online-endpoints/ep/regenerate-keys", json={}).status_code == 204
    with pytest.raises(AuthError):
        verify_token(token, "ep", api.store.get_endpoint("ep").token_secret)


# --- local endpoints -----------------------------------------------------------------------------


def test_local_endpoint_has_no_auth_and_one_deployment_with_all_traffic(api: Api) -> None:
    created = api.endpoint("loc", local=True)
    assert (created["local"], created["auth_mode"]) == (True, "none")
    assert api.get("/online-endpoints/loc/credentials").status_code == 409
    assert api.post("/online-endpoints/loc/regenerate-keys").status_code == 409

    api.deployment("blue", "loc")
    assert api.get("/online-endpoints/loc").json()["traffic"] == {"blue": 100}
    api.deployment("blue", "loc", instance_count=2)  # updating the one deployment is fine
    second = api.put(
        "/online-endpoints/loc/deployments/green", json={"model": {"path": str(api.home)}, "code_configuration": CODE}
    )
    assert second.status_code == 409
    assert "takes only one" in message(second)

    # Azure's endpoint YAML says auth_mode: key; a local endpoint ignores it, on update as on create.
    patched = api.patch("/online-endpoints/loc", json={"auth_mode": "key", "description": "d"})
    assert (patched.status_code, patched.json()["auth_mode"]) == (200, "none")

    # Its one deployment holds the traffic by rule, so deleting it needs no traffic move first.
    assert api.delete("/online-endpoints/loc/deployments/blue").status_code == 204
    assert api.get("/online-endpoints/loc").json()["traffic"] == {}
    api.deployment("green", "loc")
    assert api.get("/online-endpoints/loc").json()["traffic"] == {"green": 100}


# --- deployments ---------------------------------------------------------------------------------


def test_put_creates_then_updates_a_deployment(api: Api) -> None:
    api.endpoint("ep")
    model = str(api.home)  # a model must be there at create (tests/test_validation.py)
    first = api.put(
        "/online-endpoints/ep/deployments/blue",
        json={
            "model": {"path": model},
            "code_configuration": CODE,
            "instance_type": "Standard_DS3_v2",
            "instance_count": 1,
        },
    )
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["name"] == "blue"
    assert body["endpoint_name"] == "ep"
    assert body["provisioning_state"] == "Creating"
    assert body["reason"] is None
    assert body["model"]["path"] == model
    assert body["instance_type"] == "Standard_DS3_v2"  # kept, as Azure's show prints it
    assert {"created_at", "updated_at"} <= set(body)

    api.store.set_deployment_state("ep", "blue", "Succeeded")
    second = api.put(
        "/online-endpoints/ep/deployments/blue",
        json={"model": {"path": model}, "code_configuration": CODE, "instance_count": 2},
    )
    assert second.status_code == 200
    assert (second.json()["provisioning_state"], second.json()["instance_count"]) == ("Updating", 2)
    assert [d["name"] for d in api.get("/online-endpoints/ep/deployments").json()] == ["blue"]
    assert api.get("/online-endpoints/ep/deployments/blue").json()["instance_count"] == 2


def test_failed_state_and_reason_are_shown(api: Api) -> None:
    api.endpoint("ep")
    api.deployment("blue")
    api.store.set_deployment_state("ep", "blue", "Failed", "init() raised ValueError")
    shown = api.get("/online-endpoints/ep/deployments/blue").json()
    assert (shown["provisioning_state"], shown["reason"]) == ("Failed", "init() raised ValueError")


@pytest.mark.parametrize(
    ("url", "body", "status", "words"),
    [
        ("/online-endpoints/nope/deployments/blue", {"model": "azureml:m:1"}, 404, "'nope' not found"),
        ("/online-endpoints/ep/deployments/blue", {"name": "green"}, 422, "field 'name'"),
        ("/online-endpoints/ep/deployments/blue", {"endpoint_name": "other"}, 422, "field 'endpoint_name'"),
        ("/online-endpoints/ep/deployments/blue", {"instance_count": 0}, 422, "field 'instance_count'"),
        ("/online-endpoints/ep/deployments/blue", {"instance_count": "two"}, 422, "whole number"),
        ("/online-endpoints/ep/deployments/blue", {"request_settings": {"request_timeout_ms": -1}}, 422, "request"),
        ("/online-endpoints/ep/deployments/b%20ad", {}, 422, "field 'name'"),
    ],
)
def test_bad_deployments_are_4xx_naming_the_field(
    api: Api, url: str, body: dict[str, Any], status: int, words: str
) -> None:
    api.endpoint("ep")
    response = api.put(url, json=body)
    assert response.status_code == status, response.text
    assert words in message(response)


def test_deleting_a_deployment_with_traffic_is_refused(blue_green: Api) -> None:
    api = blue_green
    api.put("/online-endpoints/ep/traffic", json={"traffic": {"blue": 100}})
    refused = api.delete("/online-endpoints/ep/deployments/blue")
    assert refused.status_code == 409
    assert "traffic" in message(refused)
    assert api.delete("/online-endpoints/ep/deployments/green").status_code == 204
    assert api.get("/online-endpoints/ep/deployments/green").status_code == 404
    assert api.delete("/online-endpoints/ep").status_code == 204
    assert api.store.list_deployments() == []


def test_every_successful_write_calls_on_change_and_reads_do_not(blue_green: Api) -> None:
    api = blue_green
    writes = len(api.changes)
    assert writes == 3
    api.get("/online-endpoints/ep")
    api.get("/online-endpoints/ep/deployments")
    api.put("/online-endpoints/ep/traffic", json={"traffic": {"blue": 7}})  # refused: no change
    assert len(api.changes) == writes
    api.put("/online-endpoints/ep/traffic", json={"traffic": {"blue": 100}})
    api.patch("/online-endpoints/ep", json={"tags": {"x": "y"}})
    api.post("/online-endpoints/ep/regenerate-keys")
    api.delete("/online-endpoints/ep/deployments/green")
    assert len(api.changes) == writes + 4


# --- logs, stats ---------------------------------------------------------------------------------


def test_logs_route_tails_the_replica_log(api: Api) -> None:
    api.endpoint("ep")
    api.deployment("blue")
    missing = api.get("/online-endpoints/ep/deployments/blue/logs")
    assert missing.status_code == 404
    assert "no log yet" in message(missing)

    log = replica_log_path(api.home, "ep", "blue", 0)
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    tail = api.get("/online-endpoints/ep/deployments/blue/logs", params={"lines": 3})
    assert tail.status_code == 200
    assert tail.headers["content-type"].startswith("text/plain")
    assert tail.text == "line 99997\nline 99998\nline 99999\n"
    assert api.get("/online-endpoints/ep/deployments/blue/logs").text.count("\n") == 100
    assert api.get("/online-endpoints/ep/deployments/blue/logs", params={"instance": 1}).status_code == 404

    for params, words in (({"lines": "x"}, "'lines' must be a whole number"), ({"lines": 0}, "at least 1")):
        bad = api.get("/online-endpoints/ep/deployments/blue/logs", params=params)
        assert bad.status_code == 400
        assert words in message(bad)
    assert api.get("/online-endpoints/ep/deployments/red/logs").status_code == 404


def test_stats_come_from_the_gateway(api: Api, tmp_path: Path) -> None:
    api.endpoint("ep")
    assert api.get("/online-endpoints/ep/stats").json() == {"requests": 3}
    assert api.get("/online-endpoints/nope/stats").status_code == 404

    bare = create_api(api.store, admin_token=TOKEN, public_url=PUBLIC, home=tmp_path)
    with TestClient(bare) as client:
        response = client.get("/online-endpoints/ep/stats", headers=AUTH)
    assert response.status_code == 404
    assert "gateway" in message(response)


# --- OpenAPI, unknown routes ---------------------------------------------------------------------


EP = "/online-endpoints/{name}"
DEP = EP + "/deployments/{deployment}"
EXPECTED_ROUTES = {
    ("/health", "GET"),
    ("/openapi.json", "GET"),
    ("/online-endpoints", "GET"),
    ("/online-endpoints", "POST"),
    (EP, "GET"),
    (EP, "PATCH"),
    (EP, "DELETE"),
    (EP + "/traffic", "PUT"),
    (EP + "/credentials", "GET"),
    (EP + "/regenerate-keys", "POST"),
    (EP + "/stats", "GET"),
    (EP + "/deployments", "GET"),
    (DEP, "GET"),
    (DEP, "PUT"),
    (DEP, "DELETE"),
    (DEP + "/logs", "GET"),
    (DEP + "/events", "GET"),
    ("/batch-endpoints", "GET"),
    ("/batch-endpoints", "POST"),
    ("/batch-endpoints/{name}", "GET"),
    ("/batch-endpoints/{name}", "PATCH"),
    ("/batch-endpoints/{name}", "DELETE"),
    ("/batch-endpoints/{name}/credentials", "GET"),
    ("/batch-endpoints/{name}/deployments", "GET"),
    ("/batch-endpoints/{name}/deployments/{deployment}", "GET"),
    ("/batch-endpoints/{name}/deployments/{deployment}", "PUT"),
    ("/batch-endpoints/{name}/deployments/{deployment}", "DELETE"),
    ("/batch-endpoints/{name}/deployments/{deployment}/jobs", "GET"),
    ("/batch-endpoints/{name}/jobs", "POST"),
    ("/batch-endpoints/{name}/jobs", "GET"),
    ("/jobs", "GET"),
    ("/jobs/{job}", "GET"),
    ("/jobs/{job}/cancel", "POST"),
    ("/jobs/{job}/log", "GET"),
    ("/jobs/{job}/outputs/{output}", "GET"),
    # Registered assets and computes (issue 12): the same routes for models, environments and data.
    *(
        (path.replace("KINDS", kinds), method)
        for kinds in ("models", "environments", "data")
        for path, method in (
            ("/KINDS", "GET"),
            ("/KINDS/{name}/versions", "GET"),
            ("/KINDS/{name}/versions", "POST"),
            ("/KINDS/{name}/versions/{version}", "GET"),
            ("/KINDS/{name}/versions/{version}", "PUT"),
            ("/KINDS/{name}/versions/{version}", "PATCH"),
            ("/KINDS/{name}/versions/{version}", "DELETE"),
            ("/KINDS/{name}/labels/latest", "GET"),
        )
    ),
    ("/models/{name}/versions/{version}/download", "GET"),
    ("/computes", "GET"),
    ("/computes/{name}", "GET"),
    ("/computes/{name}", "PUT"),
    ("/computes/{name}", "PATCH"),
    ("/computes/{name}", "DELETE"),
    # Built environments (issue 13): `tiffin environment build|prune|list-built`.
    ("/environments/-/build", "POST"),
    ("/environments/-/prune", "POST"),
    ("/environments/-/built", "GET"),
    # Autoscale settings (issue 17): `tiffin monitor autoscale`.
    ("/autoscale-settings", "GET"),
    ("/autoscale-settings", "POST"),
    ("/autoscale-settings/{name}", "GET"),
    ("/autoscale-settings/{name}", "PATCH"),
    ("/autoscale-settings/{name}", "DELETE"),
    ("/autoscale-settings/{name}/rules", "POST"),
    ("/autoscale-settings/{name}/rules/{index}", "DELETE"),
    ("/autoscale-settings/{name}/profiles/{profile}", "PUT"),
    ("/autoscale-settings/{name}/profiles/{profile}", "DELETE"),
    # Guarded rollouts (issue 17): `tiffin online-endpoint rollout`.
    ("/online-endpoints/{name}/rollout", "GET"),
    ("/online-endpoints/{name}/rollout", "POST"),
    ("/online-endpoints/{name}/rollout/pause", "POST"),
    ("/online-endpoints/{name}/rollout/resume", "POST"),
    ("/online-endpoints/{name}/rollout/abort", "POST"),
}


def test_openapi_lists_every_route(api: Api) -> None:
    document = api.client.get("/api/openapi.json").json()
    documented = {(path, method.upper()) for path, methods in document["paths"].items() for method in methods}
    served = {
        (route.path, method)
        for route in api.app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert served == EXPECTED_ROUTES
    assert documented == EXPECTED_ROUTES
    schemas = document["components"]["schemas"]
    for methods in document["paths"].values():
        for op in methods.values():
            assert op["operationId"] and op["summary"] and op["responses"]
            for ref in json.dumps(op).split('"$ref": "')[1:]:
                assert ref.split('"')[0].rsplit("/", 1)[-1] in schemas
    logs = document["paths"][DEP + "/logs"]["get"]
    assert {p["name"] for p in logs["parameters"]} == {"name", "deployment", "lines", "instance", "container", "offset"}


def test_unknown_route_and_method_are_json_errors(api: Api) -> None:
    unknown = api.get("/nothing-here")
    assert unknown.status_code == 404
    assert "no such route" in message(unknown)
    wrong = api.post("/online-endpoints/ep")
    assert wrong.status_code == 405
    assert "not allowed" in message(wrong)
