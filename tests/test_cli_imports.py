"""The CLI imports only what a command needs (issue 14, CLI start-up), checked by module, never by time.

Each case runs the command as the console script does (``tiffin.cli.run``'s steps) in a fresh interpreter and
reads ``sys.modules`` after it: ``--help`` loads no command group, no spec model, no HTTP client, no database;
``online-endpoint show`` (against a real HTTP server on 127.0.0.1) loads the SDK and httpx but no spec model,
no table, no YAML. The figures themselves are benchmarks/bench_cli.py's.

Typer 0.29 itself imports pydantic to coerce option values, and Rich's tables to draw ``--help``; those are
Typer's and are only checked where Typer does not need them (pydantic for ``--help``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tiffin.cli.lazy import LAZY_GROUPS, load_group

# Runs one command as `.venv/bin/tiffin` would, then prints the imported modules as the last line.
_RUN = """
import json, sys
from tiffin.cli import main, skip_httpx_cli
skip_httpx_cli()
code = main(sys.argv[1:])
print("\\nMODULES " + json.dumps(sorted(k for k, v in sys.modules.items() if v is not None)))
print("EXIT", code)
"""

_COMMAND_MODULES = ("tiffin.cli.online", "tiffin.cli.batch", "tiffin.cli.assets", "tiffin.cli.compute",
                    "tiffin.cli.environments")  # fmt: skip
_NEVER_FOR_A_READ = ("tiffin.specs", "sqlalchemy", "bentoml", "alembic", "yaml", "jmespath", "tiffin.store",
                     "tiffin.server")  # fmt: skip
# Rich's console is made when something goes to stderr, its tables for -o table; Typer's --help draws with both.
_RICH = ("rich.console", "rich.table", "rich.progress")


def _modules(*args: str, env: dict[str, str] | None = None) -> tuple[set[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {}), "COLUMNS": "120"},
        check=False,
    )
    assert "MODULES " in done.stdout, done.stderr
    before, _, after = done.stdout.rpartition("\nMODULES ")
    modules_line, _, exit_line = after.partition("\n")
    assert exit_line.strip() == "EXIT 0", done.stdout + done.stderr
    return set(json.loads(modules_line)), before


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_root_help_imports_no_command_group_and_no_client() -> None:
    modules, out = _modules("--help")
    assert "online-endpoint" in out and "compute" in out  # the lazy groups are listed all the same
    assert _loaded(modules, _COMMAND_MODULES) == []
    assert _loaded(modules, ("pydantic", "httpx", "tiffin.sdk", *_NEVER_FOR_A_READ)) == []


class _Endpoints(BaseHTTPRequestHandler):
    """What ``tiffin online-endpoint show -n E`` asks of the control plane, answered as it answers."""

    def do_GET(self) -> None:
        if self.path == "/api/online-endpoints/E":
            body = json.dumps({"name": "E", "auth_mode": "key", "traffic": {}, "local": False}).encode()
            self.send_response(200)
        else:
            body = json.dumps({"message": f"no {self.path}"}).encode()
            self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def control_plane() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoints)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_endpoint_show_imports_no_spec_model_table_or_database(control_plane: str) -> None:
    env = {"TIFFIN_URL": control_plane, "TIFFIN_ADMIN_TOKEN": "t"}
    modules, out = _modules("online-endpoint", "show", "-n", "E", "-o", "json", env=env)
    assert json.loads(out)["name"] == "E"
    assert "tiffin.sdk" in modules and "tiffin.cli.online" in modules
    assert _loaded(modules, (*_NEVER_FOR_A_READ, *_RICH)) == []
    # Only the group the command names is imported; httpx's own CLI (Pygments, Rich tables) is not.
    assert _loaded(modules, _COMMAND_MODULES) == ["tiffin.cli.online"]
    assert "pygments" not in modules


def test_lazy_groups_list_their_own_help() -> None:
    """The root's --help shows each group's help without importing it: the copy in LAZY_GROUPS must be the
    group's own."""
    for name, spec in LAZY_GROUPS.items():
        group = load_group(name)
        assert group.name == name
        assert group.help == spec.help, name
        assert group.list_commands(None), name  # type: ignore[arg-type]
