"""Interpreters and uv-built environments (issue 13): finding Python 3.X, building an EnvironmentSpec with the real
uv into TIFFIN_HOME/envs/KEY (real PyPI downloads, kept small), sharing one build, failing fast, pruning.

The search order is checked with fake interpreters (tiny shell scripts answering a version); the real tests use
pyenv's 3.8 and 3.12/3.13, which these machines have (skipped, with the reason, only where they are missing).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tiffin.environments.builder import MARKER, build, environment_key, envs_dir, prune
from tiffin.environments.interpreters import find_interpreter, installed_interpreters
from tiffin.environments.spec import EnvironmentSpec
from tiffin.errors import EnvironmentBuildError, InterpreterNotFoundError

SMALL = ("six==1.16.0", "packaging")


@pytest.fixture(autouse=True)
def _own_envs_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests look at (and prune) TIFFIN_HOME/envs itself, not the folder the other tests share."""
    monkeypatch.delenv("TIFFIN_ENVS_DIR", raising=False)


def fake_python(folder: Path, name: str, version: str, *, fails: bool = False) -> Path:
    """``folder/name``: a script answering the probe as a Python ``version`` would (or failing, as a pyenv shim
    for a version that is not pyenv's global does)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if fails:
        body = "#!/bin/sh\necho 'pyenv: command not found' >&2\nexit 127\n"
    else:
        body = "#!/bin/sh\necho '({})'\necho \"$0\"\n".format(", ".join(version.split(".")))
    path.write_text(body)
    path.chmod(0o755)
    return path


def bare_environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment where only what a test sets up is found (no real PATH, pyenv or uv Pythons)."""
    empty = tmp_path / "nothing"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty), "PYENV_ROOT": str(empty), "UV_PYTHON_INSTALL_DIR": str(empty), **extra}


# --- finding interpreters (fake ones) -------------------------------------------------------------------


def test_search_order_is_tiffin_pythons_then_path_then_pyenv_then_uv(tmp_path):
    ours = fake_python(tmp_path / "ours", "python3.10", "3.10.1")
    on_path = fake_python(tmp_path / "bin", "python3.10", "3.10.2")
    pyenv = fake_python(tmp_path / "pyenv" / "versions" / "3.10.3" / "bin", "python3.10", "3.10.3")
    managed = fake_python(tmp_path / "uvpy" / "cpython-3.10.4-linux" / "bin", "python3.10", "3.10.4")
    environ = {
        "TIFFIN_PYTHONS": str(ours.parent),
        "PATH": str(on_path.parent),
        "PYENV_ROOT": str(tmp_path / "pyenv"),
        "UV_PYTHON_INSTALL_DIR": str(tmp_path / "uvpy"),
    }
    found = find_interpreter("3.10", environ, uv="uv")
    assert (found.path, found.origin, found.version) == (ours, "TIFFIN_PYTHONS", (3, 10, 1))
    assert find_interpreter("3.10", {**environ, "TIFFIN_PYTHONS": ""}, uv="uv").path == on_path
    assert find_interpreter("3.10", {**environ, "TIFFIN_PYTHONS": "", "PATH": ""}, uv="uv").path == pyenv
    only_uv = {**environ, "TIFFIN_PYTHONS": "", "PATH": "", "PYENV_ROOT": str(tmp_path / "none")}
    assert find_interpreter("3.10", only_uv, uv="uv").origin == "uv"
    assert find_interpreter("3.10", only_uv, uv="uv").path == managed
    # A requested patch version is preferred wherever it is found; otherwise the first of the minor.
    assert find_interpreter("3.10.3", environ, uv="uv").path == pyenv
    assert find_interpreter("3.10.9", environ, uv="uv").path == ours


def test_a_candidate_that_does_not_answer_is_passed_over(tmp_path):
    shim = fake_python(tmp_path / "shims", "python3.9", "3.9.0", fails=True)
    real = fake_python(tmp_path / "pyenv" / "versions" / "3.9.7" / "bin", "python3.9", "3.9.7")
    environ = bare_environ(tmp_path, PATH=str(shim.parent), PYENV_ROOT=str(tmp_path / "pyenv"))
    assert find_interpreter("3.9", environ).path == real
    # The name is only where to look: a python3.11 that answers 3.12 is not a 3.11.
    fake_python(tmp_path / "liar", "python3.11", "3.12.0")
    with pytest.raises(InterpreterNotFoundError):
        find_interpreter("3.11", bare_environ(tmp_path, PATH=str(tmp_path / "liar")))


def test_missing_interpreter_lists_those_found_and_how_to_add_one(tmp_path):
    fake_python(tmp_path / "bin", "python3.9", "3.9.7")
    with pytest.raises(InterpreterNotFoundError) as caught:
        find_interpreter("3.12", bare_environ(tmp_path, PATH=str(tmp_path / "bin")))
    message = caught.value.message
    assert "no Python 3.12 interpreter" in message
    assert f"3.9.7 at {tmp_path / 'bin' / 'python3.9'} (PATH)" in message
    assert "pyenv install 3.12" in message and "uv python install 3.12" in message and "TIFFIN_PYTHONS=" in message
    assert caught.value.status_code == 422


def test_unsupported_version_is_refused_with_the_supported_ones(tmp_path):
    with pytest.raises(InterpreterNotFoundError, match=r"3\.7 is not supported.*3\.8, 3\.9"):
        find_interpreter("3.7", bare_environ(tmp_path))


# --- finding interpreters (this machine's) --------------------------------------------------------------


@pytest.mark.parametrize("minor", ["3.8", "3.13"])
def test_finds_this_machines_interpreters(minor):
    if minor not in {found.minor for found in installed_interpreters()}:
        pytest.skip(f"no Python {minor} on this machine (pyenv install {minor})")
    found = find_interpreter(minor)
    done = subprocess.run(
        [str(found.path), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == minor


def need(minor: str) -> None:
    if minor not in {found.minor for found in installed_interpreters()}:
        pytest.skip(f"no Python {minor} on this machine (pyenv install {minor})")


# --- building with uv (real uv, real downloads) ---------------------------------------------------------


def run_in(env: Path, code: str) -> str:
    done = subprocess.run([str(env / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("minor", ["3.8", "3.12"])
def test_build_installs_the_requirements_on_the_declared_python(tmp_path, minor):
    need(minor)
    spec = EnvironmentSpec(python=minor, requirements=SMALL, source=f"test on {minor}")
    log = io.StringIO()
    env = build(spec, tmp_path, runtime_requirements=(), log=log)

    assert env == envs_dir(tmp_path) / environment_key(spec)
    assert run_in(env, "import sys, six, packaging; print('%d.%d' % sys.version_info[:2], six.__version__)") == (
        f"{minor} 1.16.0"
    )
    marker = json.loads((env / MARKER).read_text())
    assert marker["spec"]["requirements"] == list(SMALL) and marker["spec"]["source"] == f"test on {minor}"
    assert marker["interpreter"]["version"].startswith(minor + ".")
    assert "six==1.16.0" in marker["freeze"] and any(line.startswith("packaging==") for line in marker["freeze"])
    # Built aside and renamed whole: nothing half-built is left next to it, and it does not name where it was built.
    assert [p.name for p in envs_dir(tmp_path).iterdir() if p.name.startswith(".build-")] == []
    assert ".build-" not in (env / "bin" / "activate").read_text()
    # The build's own output (uv's) reached the log.
    assert "six==1.16.0" in log.getvalue() and "building environment" in log.getvalue()


def test_a_built_environment_is_reused_not_rebuilt(tmp_path):
    need("3.12")
    spec = EnvironmentSpec(python="3.12", requirements=SMALL, source="first")
    env = build(spec, tmp_path, runtime_requirements=(), log=io.StringIO())
    built_at = (env / MARKER).stat().st_mtime_ns
    log = io.StringIO()
    # Same packages, listed differently by another deployment: the same environment.
    again = EnvironmentSpec(python="3.12.1", requirements=tuple(reversed(SMALL)), source="second")
    assert build(again, tmp_path, runtime_requirements=(), log=log) == env
    assert "reusing environment" in log.getvalue() and "Creating virtual environment" not in log.getvalue()
    assert (env / MARKER).stat().st_mtime_ns == built_at
    # The runtime's requirements are part of what is built, so they name another environment.
    assert environment_key(spec, ("six==1.16.0",)) != environment_key(spec)


def test_a_failing_build_raises_uvs_message_quickly_and_leaves_nothing(tmp_path):
    need("3.12")
    spec = EnvironmentSpec(
        python="3.12", requirements=("six==1.16.0", "tiffin-no-such-package-q13==1.0"), source="deployment 'bad'"
    )
    log = io.StringIO()
    started = time.monotonic()
    with pytest.raises(EnvironmentBuildError) as caught:
        build(spec, tmp_path, runtime_requirements=(), log=log)
    assert time.monotonic() - started < 30
    message = caught.value.message
    assert "deployment 'bad'" in message and "uv pip install failed" in message
    assert "tiffin-no-such-package-q13" in message and "not found in the package registry" in message
    assert "tiffin-no-such-package-q13" in log.getvalue()
    assert [p.name for p in envs_dir(tmp_path).iterdir() if p.name != ".locks"] == []


def test_azures_serving_package_that_cannot_be_installed_is_left_out_not_fatal(tmp_path):
    """A conda file's azureml-inference-server-http (or azureml-defaults) never costs the deployment: built without
    it, the log and the marker saying so; with any other package the same failure fails the build."""
    need("3.12")
    spec = EnvironmentSpec(
        python="3.12", requirements=("six==1.16.0", "azureml-inference-server-http==0.0.0.1"), source="deployment 'az'"
    )
    log = io.StringIO()
    env = build(spec, tmp_path, runtime_requirements=(), log=log)
    assert run_in(env, "import six; print(six.__version__)") == "1.16.0"
    marker = json.loads((env / MARKER).read_text())
    assert marker["left_out"] == ["azureml-inference-server-http"]
    assert not any(line.startswith("azureml-inference-server-http") for line in marker["freeze"])
    said = log.getvalue()
    assert "building it again without them" in said and "azureml-inference-server-http" in said
    # The key is the spec's: the deployment asking for it again finds it built.
    assert env.name == environment_key(spec)


def test_a_missing_interpreter_fails_the_build_with_the_listing(tmp_path):
    spec = EnvironmentSpec(python="3.10", requirements=SMALL, source="deployment 'old'")
    with pytest.raises(InterpreterNotFoundError, match=r"pyenv install 3\.10"):
        build(spec, tmp_path / "home", runtime_requirements=(), log=io.StringIO(), environ=bare_environ(tmp_path))


def test_concurrent_builds_of_one_spec_build_it_once(tmp_path):
    need("3.12")
    spec = EnvironmentSpec(python="3.12", requirements=("six==1.16.0",), source="concurrent")
    logs = [io.StringIO() for _ in range(3)]
    results: list[Path | BaseException] = []
    start = threading.Barrier(len(logs))

    def deploy(log: io.StringIO) -> None:
        start.wait(timeout=30)
        try:
            results.append(build(spec, tmp_path, runtime_requirements=(), log=log))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=deploy, args=(log,)) for log in logs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(results) == 3 and len(set(results)) == 1 and isinstance(results[0], Path), results
    texts = [log.getvalue() for log in logs]
    assert sum(text.count("Creating virtual environment") for text in texts) == 1, texts
    assert sum("building environment" in text for text in texts) == 1
    assert sum("reusing environment" in text for text in texts) == 2


def test_prune_removes_the_unused_and_leftovers_and_keeps_the_rest(tmp_path):
    need("3.12")
    kept = build(
        EnvironmentSpec(python="3.12", requirements=SMALL), tmp_path, runtime_requirements=(), log=io.StringIO()
    )
    unused = build(
        EnvironmentSpec(python="3.12", requirements=("six==1.16.0",)),
        tmp_path,
        runtime_requirements=(),
        log=io.StringIO(),
    )
    # A build that died half-way (its process killed) leaves a folder nobody holds the lock of.
    dead = envs_dir(tmp_path) / f".build-{'0' * 64}-abc123"
    (dead / "bin").mkdir(parents=True)

    assert prune(tmp_path, keep={kept.name}) == [unused.name]
    assert kept.is_dir() and not unused.exists() and not dead.exists()
    assert run_in(kept, "import six; print(six.__version__)") == "1.16.0"
    assert prune(tmp_path, keep={kept.name}) == []
    assert prune(tmp_path / "no-home", keep=set()) == []


def test_an_environment_without_its_marker_is_rebuilt(tmp_path):
    need("3.12")
    spec = EnvironmentSpec(python="3.12", requirements=("six==1.16.0",))
    env = envs_dir(tmp_path) / environment_key(spec)
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").write_text("not a python")  # what a hand-made or damaged folder might hold
    assert build(spec, tmp_path, runtime_requirements=(), log=io.StringIO()) == env
    assert run_in(env, "import six; print(six.__version__)") == "1.16.0"
    assert sorted(os.listdir(envs_dir(tmp_path))) == sorted([env.name, ".locks"])


def test_console_scripts_work_once_the_environment_is_renamed_into_place(tmp_path):
    # Built under .build-KEY-XXXX and renamed: an absolute shebang would point at the folder that is gone.
    need("3.12")
    spec = EnvironmentSpec(python="3.12", requirements=("wheel==0.44.0",))
    env = build(spec, tmp_path, runtime_requirements=(), log=io.StringIO())
    done = subprocess.run([str(env / "bin" / "wheel"), "version"], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "wheel 0.44.0"), done.stderr


def test_a_stuck_step_is_stopped_at_its_timeout(tmp_path):
    from tiffin.environments.builder import _run

    with pytest.raises(EnvironmentBuildError, match="ran past 1 s and was stopped"):
        _run(["sleep", "60"], tmp_path, io.StringIO(), {"PATH": os.environ["PATH"]}, 1.0)


def test_prune_leaves_an_environment_being_built_alone(tmp_path):
    import fcntl

    need("3.12")
    env = build(
        EnvironmentSpec(python="3.12", requirements=("six==1.16.0",)),
        tmp_path,
        runtime_requirements=(),
        log=io.StringIO(),
    )
    # Whoever holds a key's lock is (re)building it right now: prune waits for another day.
    with open(envs_dir(tmp_path) / ".locks" / f"{env.name}.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert prune(tmp_path, keep=set()) == []
        assert env.is_dir()
    assert prune(tmp_path, keep=set()) == [env.name]
    assert not env.exists()
