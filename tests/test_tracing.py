"""Traces end to end: caller → gateway → replica → scoring code, received by a real OTLP/HTTP receiver the test
starts (issue 15, item 2)."""

from __future__ import annotations

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

from tiffin.telemetry.settings import TelemetrySettings
from tiffin.testing import serve_tiffin

HERE = Path(__file__).parent / "deployments"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"

SCORE = """
from opentelemetry import trace


def init():
    pass


def run(raw_data):
    with trace.get_tracer("score").start_as_current_span("user work"):
        return {"ok": True}
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


def _attrs(span) -> dict[str, object]:
    return {a.key: a.value.string_value or a.value.int_value for a in span.attributes}


@pytest.mark.slow
def test_spans_arrive_with_the_callers_trace_and_the_right_parents(tmp_path, receiver):
    from tiffin.specs import OnlineDeployment, load_spec

    shutil.copytree(HERE / "plain", tmp_path / "traced")
    (tmp_path / "traced" / "code" / "score.py").write_text(SCORE)
    spec = load_spec(
        tmp_path / "traced" / "deployment.yml", OnlineDeployment, overrides=["name=blue", "readiness_probe.period=1"]
    ).spec.to_yaml_dict()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with serve_tiffin(env=env) as server:
        client = server.client()
        client.online_endpoints.create_or_update({"name": "traced", "auth_mode": "key"})
        client.online_deployments.create_or_update(spec, "traced")
        client.online_endpoints.set_traffic("traced", {"blue": 100})
        key = client.online_endpoints.get_keys("traced")["primaryKey"]
        headers = {"Authorization": f"Bearer {key}", "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}
        answer = httpx.post(f"{server.url}/endpoints/traced/score", json={"data": [[1]]}, headers=headers)
        assert answer.status_code == 200, answer.text
        names = ("gateway routing", "queue wait", "upstream call", "replica scoring", "user work")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(receiver.by_name().get(n) for n in names):
            time.sleep(0.1)
        spans = receiver.by_name()
    assert set(receiver.paths) == {"/v1/traces"}
    got = {n: [s for s in spans.get(n, []) if s.trace_id.hex() == TRACE_ID] for n in names}
    assert all(len(got[n]) == 1 for n in names), {n: len(v) for n, v in got.items()}
    routing, queue, upstream, scoring, user = (got[n][0] for n in names)
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
