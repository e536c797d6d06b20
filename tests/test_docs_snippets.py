"""The README's commands and the docs' snippets run as written, as a newcomer runs them.

* The README's second code block (``tiffin serve &`` ...) runs in ``bash`` from the repository root, with
  ``.venv/bin`` *not* on PATH (the block says how to get there) and a temporary folder for ``mktemp``;
  only its port is changed, to a free one. (The first block's ``make serve`` and ``make test`` are the
  set-up commands themselves: they are not run from a test.)
* Every ``bash`` and ``python`` block in docs/*.md is preceded by a marker saying what the test does with it:
  ``<!-- test: run in DIR -->`` runs it with DIR (relative to the repository root) as working directory,
  against a fresh ``tiffin serve`` (TIFFIN_URL, TIFFIN_HOME, TIFFIN_ADMIN_TOKEN set, as after ``tiffin
  serve &``); a page's python blocks run in order in one interpreter, as one session would, and top-level
  ``test_*`` functions they define are called. A DIR holding a ``train.py`` (an example) has it run first,
  as the example's set-up does. ``<!-- test: skip REASON -->`` says why a block is not run
  (a fragment, or something this machine may not have). A block with no marker fails the test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tiffin.testing import free_port, serve_tiffin

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BIN = str(Path(sys.executable).parent)

_FENCE = re.compile(r"(?:<!--\s*test:\s*(?P<marker>.*?)\s*-->\s*\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)```", re.S)


@dataclass(frozen=True)
class Block:
    page: str
    lang: str
    body: str
    marker: str | None


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, each with the test marker just above it (if any)."""
    text = path.read_text(encoding="utf-8")
    return [Block(path.name, m["lang"], m["body"], m["marker"]) for m in _FENCE.finditer(text)]


def newcomer_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no tiffin variables, and PATH without the virtualenv's bin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIFFIN_")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != Path(BIN))
    env.pop("VIRTUAL_ENV", None)
    # uv's cache as this machine has it: a snippet that deploys the quickstart builds its environment, and with
    # the snippet's own HOME uv would download every package again (a minute and more) to prove nothing more.
    env.setdefault("UV_CACHE_DIR", _uv_cache_dir())
    return {**env, **extra}


def _uv_cache_dir() -> str:
    from tiffin.environments.builder import uv_binary

    return subprocess.run([uv_binary(), "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()


def run_bash(script: str, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with ``bash -e``; whatever it leaves running (a background ``tiffin serve`` and its
    replicas) is stopped with SIGTERM to its process group, then SIGKILL."""
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"timed out after {timeout}s:\n{out}")
    finally:
        _stop_group(process.pid)
    return subprocess.CompletedProcess(process.args, process.returncode, out, "")


def _stop_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary folder with a short path: replicas' Unix sockets live under TMPDIR (108 bytes at most)."""
    with tempfile.TemporaryDirectory(prefix="tiffin-docs-", dir="/tmp") as tmp:
        yield Path(tmp)


def readme_blocks() -> list[str]:
    return [b.body for b in blocks(ROOT / "README.md") if b.lang == "bash"]


def test_every_docs_snippet_says_whether_it_runs():
    unmarked = [
        f"{b.page}: {b.body.splitlines()[0]}"
        for page in sorted(DOCS.glob("*.md"))
        for b in blocks(page)
        if b.lang in ("bash", "python") and not b.marker
    ]
    assert not unmarked, "give these blocks a <!-- test: run in DIR --> or <!-- test: skip WHY --> marker"


@pytest.mark.slow
def test_readme_second_block_runs_as_written(short_tmp):
    tmp_path = short_tmp
    first, second = readme_blocks()[:2]
    assert "make serve" in first and "make test" in first
    assert "tiffin serve" in second
    port = free_port()
    # Only the port changes (7701 is taken or not here; a newcomer's is free). mktemp lands in tmp_path.
    script = second.replace("7701", str(port))
    done = run_bash(script, ROOT, newcomer_env(TMPDIR=str(tmp_path), HOME=str(tmp_path)), timeout=240)
    assert done.returncode == 0, done.stdout
    key = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[A-Za-z0-9_\-]{16,}", key), done.stdout
    # The server it started is gone with the block (it stops it itself), and it used no ~/.tiffin.
    assert not (tmp_path / ".tiffin").exists()


def _runnable(page: Path) -> list[tuple[Block, Path]]:
    chosen = []
    for b in blocks(page):
        if b.lang in ("bash", "python") and b.marker and b.marker.startswith("run"):
            where = b.marker.removeprefix("run").strip().removeprefix("in").strip() or "."
            chosen.append((b, ROOT / where))
    return chosen


RUN_PAGES = sorted(p.name for p in DOCS.glob("*.md") if _runnable(p))


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES)
def test_docs_snippets_run(page, short_tmp):
    tmp_path = short_tmp
    runnable = _runnable(DOCS / page)
    # An example's model (and data) is trained at set-up time (`make serve` does it for the quickstart), not
    # kept in git: a snippet run in an example's folder finds them there, as the page says.
    for cwd in dict.fromkeys(cwd for _, cwd in runnable):
        if (cwd / "train.py").exists():
            subprocess.run([sys.executable, "train.py"], cwd=cwd, check=True, capture_output=True, timeout=300)
    # The server keeps its environments in its own home, as a reader's would (`environment prune` refuses a
    # TIFFIN_ENVS_DIR that other homes may share, and the tests share one).
    with serve_tiffin(tmp_path / "home", env={"TIFFIN_ENVS_DIR": ""}) as server:
        env = newcomer_env(
            PATH=f"{BIN}{os.pathsep}{newcomer_env()['PATH']}",
            TIFFIN_URL=server.url,
            TIFFIN_HOME=str(server.home),
            TIFFIN_ADMIN_TOKEN=server.admin_token,
            TMPDIR=str(tmp_path),
        )
        python = []
        for block, cwd in runnable:
            if block.lang == "bash":
                done = run_bash(block.body, cwd, env, timeout=240)
                assert done.returncode == 0, f"{page}:\n{block.body}\n{done.stdout}"
            else:
                python.append(f"os.chdir({str(cwd)!r})\n{block.body}")
        if python:
            session = (
                "import os\n"
                + "\n".join(python)
                + textwrap.dedent(
                    """
                for _name, _test in list(globals().items()):
                    if _name.startswith("test_") and callable(_test):
                        _test()
                """
                )
            )
            done = subprocess.run([sys.executable, "-c", session], env=env, capture_output=True, text=True, timeout=240)
            assert done.returncode == 0, f"{page}:\n{done.stdout}\n{done.stderr}"


def test_make_serve_installs_only_what_serving_needs(tmp_path):
    """The README's first block: `make serve` installs tiffin (and the examples' scikit-learn), not the test and
    Ray extras `make test` needs (a cold `make serve` took 296 s, mostly those)."""

    def planned(target: str) -> str:
        done = subprocess.run(
            ["make", "-n", "-C", str(ROOT), target, f"VENV={tmp_path / 'venv'}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    serve = planned("serve")
    assert "pip install" in serve and "-e ." in serve
    assert "[test" not in serve and "ray" not in serve and "azureml-inference-server-http" not in serve, serve
    test = planned("test")
    assert "'.[test,ray]'" in test and "azureml-inference-server-http" in test, test


def test_docs_stand_on_their_own_and_say_how_replicas_run():
    """The docs and comments cite no file the repository does not have, and say what the supervisor runs."""
    from tiffin.supervisor.prepare import replica_command

    cited = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in ("plugin", "runners", "docs", "benchmarks", "examples", "tests")
        for path in sorted((ROOT / folder).rglob("*"))
        if path.suffix in (".py", ".md", ".sh", ".yml") and path.name != Path(__file__).name
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if "DESIGN" in line
    ]
    cited += [name for name in ("README.md", "pyproject.toml") if "DESIGN" in (ROOT / name).read_text()]
    assert not cited, f"these cite DESIGN.md, which is not in the repository: {cited}"

    # The supervisor runs the lean server, not BentoML's; the docs say so.
    assert replica_command("python", Path("d.plan.json"), Path("s.sock"))[1:3] == ["-m", "tiffin.replica.run"]
    for page in (ROOT / "README.md", DOCS / "concepts.md"):
        text = " ".join(page.read_text(encoding="utf-8").split())
        assert "replica is a BentoML service" not in text, page
        assert "tiffin replica serve" in text and "tiffin.replica.service" in text, page
