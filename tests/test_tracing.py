"""Traces end to end: caller → gateway → replica → scoring code, received by a real OTLP/HTTP receiver the test
starts (issue 15, item 2). As on Azure, a deployment is traced when its YAML says ``app_insights_enabled: true``
(or every one with TIFFIN_TRACE_ALL_DEPLOYMENTS=1); the exporter only says where spans go."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tiffin.auth import Credentials
from tiffin.errors import TiffinError
from tiffin.gateway import Gateway
from tiffin.routing import DeploymentRoute, EndpointRoute, Replica, RoutingTable
from tiffin.telemetry.settings import TelemetrySettings
from tiffin.telemetry.tracing import GatewayTracing
from tiffin.testing import serve_tiffin

HERE = Path(__file__).parent / "deployments"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "00f067aa0ba902b7"
KEYS = Credentials("key", primary_key="primary-key-0123456789", secondary_key="secondary-key-0123456789")

# "sdk": whether the replica imported OpenTelemetry's SDK (only a traced replica should: the API alone is inert).
SCORE = """
import sys

from opentelemetry import trace


def init():
    pass


def run(raw_data):
    with trace.get_tracer("score").start_as_current_span("user work"):
        return {"ok": True, "sdk": any(m.startswith("opentelemetry.sdk") for m in sys.modules)}
"""


class Receiver:
    """A minimal OTLP/HTTP trace receiver: keeps every span it is sent, by name."""

    def __init__(self) -> None:
        self.spans: list = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    receiver.paths.append(self.path)
                    for resource_spans in request.resource_spans:
                        for scope_spans in resource_spans.scope_spans:
                            receiver.spans.extend(scope_spans.spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def by_name(self) -> dict[str, list]:
        with self.lock:
            found: dict[str, list] = {}
            for span in self.spans:
                found.setdefault(span.name, []).append(span)
            return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


class Echo:
    """A stand-in replica that answers every request with the headers it got, as JSON."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                answer = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echo() -> Iterator[Echo]:
    running = Echo()
    yield running
    running.close()


def _two_deployments(url: str) -> RoutingTable:
    """Endpoint "ep": "blue" with app_insights_enabled: true, "green" without, both at ``url``."""
    deployments = {
        "blue": DeploymentRoute("blue", (Replica("blue-0", url),), traced=True),
        "green": DeploymentRoute("green", (Replica("green-0", url),)),
    }
    return RoutingTable({"ep": EndpointRoute("ep", KEYS, {"blue": 50, "green": 50}, {}, deployments)})


def _pinned(gateway: Gateway, calls: list[tuple[str, str]]) -> list[dict[str, str]]:
    """POST to the gateway (in process) once per (deployment pinned, caller's trace id); the replica's headers."""

    async def send() -> list[dict[str, str]]:
        transport = httpx.ASGITransport(app=gateway)
        seen = []
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            for deployment, trace_id in calls:
                headers = {
                    "Authorization": f"Bearer {KEYS.primary_key}",
                    "azureml-model-deployment": deployment,
                    "traceparent": f"00-{trace_id}-{CALLER_SPAN}-01",
                }
                answer = await client.post("/endpoints/ep/score", content=b"{}", headers=headers)
                assert answer.status_code == 200, answer.text
                assert answer.headers["azureml-model-deployment"] == deployment
                seen.append(answer.json())
        await gateway.close()
        return seen

    return asyncio.run(send())


@pytest.mark.parametrize("all_deployments", [False, True], ids=["app_insights_enabled", "all_deployments"])
def test_the_gateway_traces_only_deployments_that_ask_and_passes_traceparent_on_for_others(
    receiver, echo, all_deployments
):
    gateway = Gateway()
    gateway.tracing = tracing = GatewayTracing(f"{receiver.url}/v1/traces", all_deployments=all_deployments)
    gateway.set_table(_two_deployments(echo.url))
    before = time.time_ns()
    to_green, to_blue = _pinned(gateway, [("green", OTHER_TRACE_ID), ("blue", TRACE_ID)])
    tracing.shutdown()  # exports what is buffered
    spans = receiver.by_name()
    by_trace = {t: [s for v in spans.values() for s in v if s.trace_id.hex() == t] for t in (TRACE_ID, OTHER_TRACE_ID)}
    # blue asked: routing, queue wait and upstream call, the routing span from the request's arrival on.
    assert sorted(s.name for s in by_trace[TRACE_ID]) == ["gateway routing", "queue wait", "upstream call"]
    blue = {s.name: s for s in by_trace[TRACE_ID]}
    routing, queue, upstream = (blue[n] for n in ("gateway routing", "queue wait", "upstream call"))
    assert before <= routing.start_time_unix_nano <= queue.start_time_unix_nano <= upstream.start_time_unix_nano
    assert _attrs(routing)["tiffin.deployment"] == "blue" and routing.parent_span_id.hex() == CALLER_SPAN
    assert to_blue["traceparent"] == f"00-{TRACE_ID}-{upstream.span_id.hex()}-01"
    if all_deployments:
        assert sorted(s.name for s in by_trace[OTHER_TRACE_ID]) == ["gateway routing", "queue wait", "upstream call"]
        assert to_green["traceparent"] != f"00-{OTHER_TRACE_ID}-{CALLER_SPAN}-01"
    else:
        # green did not ask: no span of its requests, and its replica got the caller's traceparent untouched.
        assert by_trace[OTHER_TRACE_ID] == []
        assert to_green["traceparent"] == f"00-{OTHER_TRACE_ID}-{CALLER_SPAN}-01"
    assert len(receiver.spans) == sum(len(v) for v in by_trace.values())


def test_requests_refused_before_a_deployment_is_chosen_make_no_span(receiver, echo):
    gateway = Gateway()
    gateway.tracing = tracing = GatewayTracing(f"{receiver.url}/v1/traces", all_deployments=True)
    gateway.set_table(_two_deployments(echo.url))
    caller = {"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}
    refused = [
        ("/endpoints/nowhere/score", {**caller, "Authorization": f"Bearer {KEYS.primary_key}"}, 404),
        ("/endpoints/ep/score", {**caller, "Authorization": "Bearer wrong-key"}, 401),
        (
            "/endpoints/ep/score",
            {**caller, "Authorization": f"Bearer {KEYS.primary_key}", "azureml-model-deployment": "red"},
            404,
        ),
    ]

    async def send() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gateway") as client:
            statuses = [
                (await client.post(path, content=b"{}", headers=headers)).status_code for path, headers, _ in refused
            ]
        await gateway.close()
        return statuses

    assert asyncio.run(send()) == [status for _, _, status in refused]
    tracing.shutdown()
    assert receiver.spans == []


def test_a_deployment_asking_for_traces_on_a_server_without_exporter_is_warned_of_once(echo, caplog):
    gateway = Gateway()
    with caplog.at_level(logging.WARNING, logger="tiffin.gateway"):
        gateway.set_table(_two_deployments(echo.url))
        gateway.set_table(_two_deployments(echo.url))  # a later table: no second warning
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "'blue'" in lines[0] and "OTEL_EXPORTER_OTLP_ENDPOINT" in lines[0], lines
    # ... and the requests are served, untraced: the caller's traceparent reaches the replica as sent.
    (to_blue,) = _pinned(gateway, [("blue", TRACE_ID)])
    assert to_blue["traceparent"] == f"00-{TRACE_ID}-{CALLER_SPAN}-01"


def _attrs(span) -> dict[str, object]:
    return {a.key: a.value.string_value or a.value.int_value for a in span.attributes}


def _served(tmp_path: Path, env: dict[str, str], receiver: Receiver, expect: bool) -> tuple[dict, dict, str, str]:
    """``tiffin serve`` (``env``) with endpoint "traced": "blue" (app_insights_enabled: true) and "green" (not),
    each sent one pinned request with a traceparent (green's OTHER_TRACE_ID first, blue's TRACE_ID last); once
    the receiver has blue's spans (when ``expect``), their answers, the endpoint's key and the server's log."""
    from tiffin.specs import OnlineDeployment, load_spec

    shutil.copytree(HERE / "plain", tmp_path / "traced")
    (tmp_path / "traced" / "code" / "score.py").write_text(SCORE)
    specs = {
        name: load_spec(
            tmp_path / "traced" / "deployment.yml",
            OnlineDeployment,
            overrides=[
                f"name={name}",
                "readiness_probe.period=1",
                f"app_insights_enabled={str(name == 'blue').lower()}",
            ],
        ).spec.to_yaml_dict()
        for name in ("blue", "green")
    }
    with serve_tiffin(env={"OTEL_BSP_SCHEDULE_DELAY": "100", **env}) as server:
        client = server.client()
        client.online_endpoints.create_or_update({"name": "traced", "auth_mode": "key"})
        for spec in specs.values():
            client.online_deployments.create_or_update(spec, "traced")
        client.online_endpoints.set_traffic("traced", {"blue": 100})
        key = client.online_endpoints.get_keys("traced")["primaryKey"]
        answers = {}
        for name, trace_id in (("green", OTHER_TRACE_ID), ("blue", TRACE_ID)):
            headers = {
                "Authorization": f"Bearer {key}",
                "azureml-model-deployment": name,
                "traceparent": f"00-{trace_id}-{CALLER_SPAN}-01",
            }
            answer = httpx.post(f"{server.url}/endpoints/traced/score", json={"data": [[1]]}, headers=headers)
            assert answer.status_code == 200 and answer.headers["azureml-model-deployment"] == name, answer.text
            answers[name] = answer.json()
        deadline = time.monotonic() + 20
        while expect and time.monotonic() < deadline and not all(_has(receiver, n) for n in NAMES):
            time.sleep(0.1)
        time.sleep(1.0)  # what else was coming (OTEL_BSP_SCHEDULE_DELAY=100) has come by now
        log = server.log()
    return answers["blue"], answers["green"], key, log


def _has(receiver: Receiver, name: str) -> bool:
    return any(s.trace_id.hex() == TRACE_ID for s in receiver.by_name().get(name, []))


NAMES = ("gateway routing", "queue wait", "upstream call", "replica scoring", "user work")


@pytest.mark.slow
def test_spans_arrive_for_the_deployment_that_asks_with_the_callers_trace_and_the_right_parents(tmp_path, receiver):
    blue, green, key, _ = _served(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}, receiver, expect=True)
    spans = receiver.by_name()
    assert set(receiver.paths) == {"/v1/traces"}
    got = {n: [s for s in spans.get(n, []) if s.trace_id.hex() == TRACE_ID] for n in NAMES}
    assert all(len(got[n]) == 1 for n in NAMES), {n: len(v) for n, v in got.items()}
    routing, queue, upstream, scoring, user = (got[n][0] for n in NAMES)
    assert routing.parent_span_id.hex() == CALLER_SPAN
    assert queue.parent_span_id == routing.span_id
    assert upstream.parent_span_id == routing.span_id
    assert scoring.parent_span_id == upstream.span_id
    assert user.parent_span_id == scoring.span_id
    assert (_attrs(routing)["tiffin.endpoint"], _attrs(routing)["tiffin.deployment"]) == ("traced", "blue")
    assert _attrs(routing)["http.response.status_code"] == 200
    assert _attrs(upstream)["tiffin.deployment"] == "blue" and _attrs(upstream)["tiffin.replica"]
    assert _attrs(scoring)["tiffin.endpoint"] == "traced" and _attrs(scoring)["tiffin.deployment"] == "blue"
    assert _attrs(scoring)["tiffin.replica"] and _attrs(scoring)["http.response.status_code"] == 200
    # No key, token or body in any span attribute.
    for span in (routing, queue, upstream, scoring):
        assert key not in str(_attrs(span)) and "data" not in str(_attrs(span))
    # green (no app_insights_enabled): not one span, and its replica never loaded the SDK.
    assert len(receiver.spans) == len(NAMES), sorted(s.name for s in receiver.spans)
    assert blue["sdk"] is True and green["sdk"] is False


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["all deployments", "no exporter"])
def test_the_all_deployments_switch_traces_both_and_no_exporter_traces_none(tmp_path, receiver, setting):
    traced = setting == "all deployments"
    # Without an exporter the receiver runs, but nothing names it.
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "TIFFIN_TRACE_ALL_DEPLOYMENTS": "1"} if traced else {}
    blue, green, _, log = _served(tmp_path, env, receiver, expect=traced)
    if traced:
        traces = {s.trace_id.hex() for s in receiver.spans if s.name == "replica scoring"}
        assert traces == {TRACE_ID, OTHER_TRACE_ID}
        assert len(receiver.spans) == 2 * len(NAMES)
        assert blue["sdk"] is True and green["sdk"] is True
    else:
        assert receiver.spans == []
        assert blue["sdk"] is False and green["sdk"] is False  # no OpenTelemetry SDK in either replica
        warned = [line for line in log.splitlines() if "asks for traces" in line]
        assert len(warned) == 1 and "'blue'" in warned[0], warned


def test_a_replica_without_opentelemetry_skips_tracing_with_one_line(monkeypatch, caplog):
    from tiffin.telemetry.replica import instrument

    class Runner:
        def predict(self, request):
            return request

    runner = Runner()
    original = runner.predict
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    with caplog.at_level(logging.WARNING, logger="tiffin.replica"):
        assert instrument(runner, {"traces_url": "http://127.0.0.1:9/v1/traces"}) is None
    assert runner.predict == original
    assert len(caplog.records) == 1 and "replica spans are skipped" in caplog.records[0].getMessage()


def test_traces_url_follows_the_otlp_variables():
    assert TelemetrySettings.from_environment({}).otlp_endpoint is None
    got = TelemetrySettings.from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318/"}).otlp_endpoint
    assert got == "http://h:4318/v1/traces"
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"}
    assert TelemetrySettings.from_environment(both).otlp_endpoint == "http://t/x"


def test_the_all_deployments_switch_is_off_unless_set_and_only_counts_with_an_exporter():
    exporter = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318"}
    assert TelemetrySettings.from_environment(exporter).trace_all_deployments is False
    assert TelemetrySettings.from_environment(exporter).traces(app_insights_enabled=False) is False
    assert TelemetrySettings.from_environment(exporter).traces(app_insights_enabled=True) is True
    every = TelemetrySettings.from_environment({**exporter, "TIFFIN_TRACE_ALL_DEPLOYMENTS": "1"})
    assert every.traces(app_insights_enabled=False) is True
    nowhere = TelemetrySettings.from_environment({"TIFFIN_TRACE_ALL_DEPLOYMENTS": "1"})
    assert nowhere.traces(app_insights_enabled=True) is False
    with pytest.raises(TiffinError, match="TIFFIN_TRACE_ALL_DEPLOYMENTS='maybe'"):
        TelemetrySettings.from_environment({"TIFFIN_TRACE_ALL_DEPLOYMENTS": "maybe"})


def test_app_insights_enabled_is_honoured_not_reported_as_ignored():
    from tiffin.specs import OnlineDeployment, parse_spec

    loaded = parse_spec({"name": "blue", "app_insights_enabled": True}, OnlineDeployment)
    assert loaded.spec.app_insights_enabled is True
    assert "app_insights_enabled" not in loaded.ignored and not loaded.warnings()
