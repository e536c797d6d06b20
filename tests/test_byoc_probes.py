"""A BYOC server's liveness route is probed as Azure probes it: all along, not only at start."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tiffin.testing import serve_deployment

pytestmark = pytest.mark.slow

SERVER = textwrap.dedent(
    """
    import os, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            dead = self.path == "/live" and os.path.exists(os.environ["BYOC_DEAD_FLAG"])
            self.send_response(500 if dead else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
    """
)


def test_liveness_route_is_probed_after_start(tmp_path: Path) -> None:
    (tmp_path / "server.py").write_text(SERVER)
    flag = tmp_path / "dead"
    spec = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
        "name": "own",
        "endpoint_name": "tests",
        "environment": {
            "command": f"{sys.executable} {tmp_path / 'server.py'}",
            "inference_config": {
                "liveness_route": {"path": "/live", "port": 5000},
                "readiness_route": {"path": "/ready", "port": 5000},
                "scoring_route": {"path": "/score", "port": 5000},
            },
        },
        "environment_variables": {"BYOC_DEAD_FLAG": str(flag)},
    }
    file = tmp_path / "own.yml"
    file.write_text(yaml.safe_dump(spec))
    with serve_deployment(file, timeout=60) as replica:
        assert httpx.get(replica.url + "/", timeout=10).status_code == 200
        flag.touch()  # the server still runs and is ready, but says it is not alive
        deadline = time.monotonic() + 20
        while (status := httpx.get(replica.url + "/", timeout=10).status_code) == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 503
        flag.unlink()
        assert httpx.get(replica.url + "/", timeout=10).status_code == 200
