"""Schemathesis against a real ``tiffin serve``: the control plane's OpenAPI document (/api/openapi.json)
and what the server answers must agree, with the admin token and without credentials.

Checks: no 5xx (``not_a_server_error``), every answer's status listed (``status_code_conformance``), its
body matching the listed schema (``response_schema_conformance``), and a protected route sent again
without the token answering 401 (``ignored_auth``). Examples per operation and the
whole run are bounded; requests go to the loopback server only (its URL is the base URL, redirects are
not followed, proxies are cleared). The server's home is a throwaway folder: operations may create and
delete anything there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiffin.testing import serve_tiffin

pytestmark = pytest.mark.slow

ST = Path(sys.executable).with_name("st")
MAX_EXAMPLES = 20
RUN_SECONDS = 150  # the whole schemathesis run, per credential; past it the test fails
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,ignored_auth"


def _run_schemathesis(url: str, report: Path, headers: list[str]) -> tuple[subprocess.CompletedProcess[str], dict]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # nothing through a proxy
    env["NO_PROXY"] = env["no_proxy"] = "*"
    command = [
        str(ST),
        "run",
        f"{url}/api/openapi.json",
        "--url",
        f"{url}/api",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--phases",
        "examples,coverage,fuzzing,stateful",  # stateful: follows the links from creates to their resources
        "--seed",
        "20261201",
        "--workers",
        "1",
        "--max-redirects",
        "0",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--suppress-health-check",
        "all",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    for header in headers:
        command += ["--header", header]
    done = subprocess.run(
        command, env=env, cwd=report.parent, capture_output=True, text=True, timeout=RUN_SECONDS, check=False
    )
    summary = json.loads(report.read_text()) if report.exists() else {}
    return done, summary


@pytest.mark.timeout(RUN_SECONDS + 120)
@pytest.mark.parametrize("credentials", ["admin-token", "none"])
def test_control_plane_answers_as_its_openapi_document_says(tmp_path: Path, credentials: str) -> None:
    # Not skipped when missing: CI installs it with the test extra, and a skip would hide the check.
    assert ST.exists(), f"{ST} is missing: pip install -e '.[test]' (schemathesis is pinned there)"
    # A random deployment spec starts one replica at most; environments are the throwaway home's own (not the
    # folder conftest shares between test servers), as random prunes remove what this server does not use.
    env = {"TIFFIN_MAX_INSTANCES": "1", "TIFFIN_ENVS_DIR": ""}
    with serve_tiffin(tmp_path / "home", env=env) as server:
        headers = [f"Authorization: Bearer {server.admin_token}"] if credentials == "admin-token" else []
        done, summary = _run_schemathesis(server.url, tmp_path / "report.json", headers)
        server_log = server.log()
    output = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, f"schemathesis found problems:\n{output}\n--- server log ---\n{server_log[-3000:]}"
    assert "Internal Server Error" not in server_log and "unexpected error" not in server_log, server_log[-3000:]
    assert summary, output
    cases = summary["test_cases"]
    # Shown with -rP or on failure: what the run covered.
    print(f"schemathesis ({credentials}): {cases['generated']} test cases, {cases['with_failures']} with failures")
