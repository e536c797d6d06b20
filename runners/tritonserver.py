"""Finding, installing and starting NVIDIA's ``tritonserver`` for Triton deployments.

tiffin does not ship Triton; it runs a real one. Where it comes from, in the order looked at:

1. ``$TIFFIN_TRITONSERVER``: a ``tritonserver`` binary (its backends in ``../backends``, NVIDIA's own
   layout, as in the ``nvcr.io/nvidia/tritonserver`` image under ``/opt/tritonserver``), or a folder made by
   ``tiffin triton install``;
2. ``$TIFFIN_HOME/triton``, where ``tiffin triton install`` puts it by default;
3. ``tritonserver`` on ``PATH``, then ``/opt/tritonserver/bin/tritonserver``.

``tiffin triton install`` takes the server from the ``nvidia-pytriton`` wheel on PyPI, which carries a
real ``tritonserver`` with the Python backend, into a virtual environment of its own: that wheel pins
``numpy<2`` for the Python backend's stub process, which must not meet tiffin's own numpy. The folder gets
a ``tiffin-triton.json`` manifest naming the binary, the backends and the libraries it needs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tiffin.errors import RunnerLoadError

__all__ = [
    "EXIT_TIMEOUT_S",
    "MANIFEST",
    "TRITONSERVER_ENV",
    "TritonInstall",
    "find_tritonserver",
    "install_tritonserver",
]

TRITONSERVER_ENV = "TIFFIN_TRITONSERVER"
EXIT_TIMEOUT_S = 3
MANIFEST = "tiffin-triton.json"
_HOW_TO_GET_IT = (
    "run `tiffin triton install` (NVIDIA's tritonserver from the nvidia-pytriton wheel, about 250 MB, into "
    "$TIFFIN_HOME/triton), or point $TIFFIN_TRITONSERVER at a tritonserver binary"
)


@dataclass(frozen=True)
class TritonInstall:
    """A runnable ``tritonserver``: the binary, its backends, and what its environment needs."""

    binary: Path
    backend_directory: Path
    library_path: tuple[str, ...] = ()
    """Prepended to ``LD_LIBRARY_PATH`` (the wheel's bundled libraries, the Python library the stub links)."""
    path: tuple[str, ...] = ()
    """Prepended to ``PATH``: the Python backend's stub takes its ``sys.prefix`` (and numpy) from the first
    ``python3`` there."""
    extra_environment: Mapping[str, str] = field(default_factory=dict)

    def command(self, repository: Path, http_port: int, *, shm_prefix: str) -> list[str]:
        """The command line serving ``repository`` on ``127.0.0.1:http_port`` (HTTP only).

        ``shm_prefix`` names the Python backend's shared-memory regions: two servers on one machine (two
        replicas of a deployment) collide on the default name.
        """
        return [
            str(self.binary),
            f"--model-repository={repository}",
            f"--backend-directory={self.backend_directory}",
            "--http-address=127.0.0.1",
            f"--http-port={http_port}",
            "--allow-grpc=false",
            "--allow-metrics=false",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            # Triton waits this long for open client connections when told to stop (30 s by default, with
            # idle keep-alive connections counted); by then the supervisor has drained in-flight requests.
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        ]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with the library path, ``PATH`` and extra variables this install needs."""
        env = {**base, **self.extra_environment}
        if self.library_path:
            env["LD_LIBRARY_PATH"] = os.pathsep.join([*self.library_path, *filter(None, [base.get("LD_LIBRARY_PATH")])])
        if self.path:
            env["PATH"] = os.pathsep.join([*self.path, base.get("PATH", os.defpath)])
        return env


def find_tritonserver(environ: Mapping[str, str] = os.environ, *, home: Path | None = None) -> TritonInstall:
    """The ``tritonserver`` to run (see the module's docstring); RunnerLoadError saying how to get one."""
    from tiffin.config import tiffin_home

    given = environ.get(TRITONSERVER_ENV)
    if given:
        path = Path(given).expanduser()
        if path.is_dir():
            return _from_manifest(path)
        if path.is_file():
            return _from_binary(path)
        raise RunnerLoadError(
            f"{TRITONSERVER_ENV}={given} is neither a tritonserver binary nor a folder; {_HOW_TO_GET_IT}"
        )
    default = (home or tiffin_home(environ)) / "triton"
    if (default / MANIFEST).is_file():
        return _from_manifest(default)
    on_path = shutil.which("tritonserver", path=environ.get("PATH"))
    for candidate in (on_path, "/opt/tritonserver/bin/tritonserver"):
        if candidate and Path(candidate).is_file():
            return _from_binary(Path(candidate))
    raise RunnerLoadError(f"no tritonserver found for this Triton deployment: {_HOW_TO_GET_IT}")


def _from_binary(binary: Path) -> TritonInstall:
    backends = binary.resolve().parent.parent / "backends"
    if not backends.is_dir():
        raise RunnerLoadError(f"{binary} has no backends folder at {backends}; {_HOW_TO_GET_IT}")
    return TritonInstall(binary=binary, backend_directory=backends)


def _from_manifest(folder: Path) -> TritonInstall:
    manifest = folder / MANIFEST
    try:
        data = json.loads(manifest.read_text())
        install = TritonInstall(
            binary=Path(data["tritonserver"]),
            backend_directory=Path(data["backend_directory"]),
            library_path=tuple(data.get("library_path", ())),
            path=tuple(data.get("path", ())),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunnerLoadError(f"{manifest} is missing or unreadable ({exc}); {_HOW_TO_GET_IT}") from None
    if not install.binary.is_file():
        raise RunnerLoadError(f"{install.binary} (named in {manifest}) does not exist; {_HOW_TO_GET_IT}")
    return install


def install_tritonserver(
    target: Path, *, python: str = sys.executable, requirement: str = "nvidia-pytriton>=0.5"
) -> TritonInstall:
    """Install ``tritonserver`` (from ``requirement``) into a virtual environment at ``target``.

    Idempotent: an install whose manifest names a server that exists is kept as it is. ``python`` must be
    a CPython with a shared ``libpython`` (the Python backend's stub links against it) of a version the
    wheel has a stub for.
    """
    if (target / MANIFEST).is_file():
        try:
            return _from_manifest(target)
        except RunnerLoadError:
            pass  # broken or moved: install again
    venv_python = target / "bin" / "python"
    if not venv_python.is_file():
        _run([python, "-m", "venv", str(target)], "create a virtual environment")
    # The server needs only its wheel and, for the Python backend's stub, numpy<2; the wheel's other
    # dependencies serve pytriton's own Python API, which tiffin does not use.
    _run(
        [str(venv_python), "-m", "pip", "install", "--quiet", "--no-deps", requirement, "numpy>=1.21,<2"],
        f"pip install {requirement}",
    )
    facts = json.loads(
        _run(
            [
                str(venv_python),
                "-c",
                # find_spec, not import: pytriton's own Python API needs packages this environment lacks.
                "import json, sys, sysconfig, importlib.util as u; print(json.dumps({"
                "'version': '%d.%d' % sys.version_info[:2], 'libdir': sysconfig.get_config_var('LIBDIR'), "
                "'shared': sysconfig.get_config_var('Py_ENABLE_SHARED'), "
                "'package': list(u.find_spec('pytriton').submodule_search_locations)[0]}))",
            ],
            "inspect the installed wheel",
        )
    )
    if not facts["shared"]:
        raise RunnerLoadError(
            f"{python} has no shared libpython, which Triton's Python backend needs; install Triton with a "
            "Python built with --enable-shared (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared)"
        )
    package = Path(facts["package"])
    server = package / "tritonserver"
    stub = server / "python_backend_stubs" / facts["version"] / "triton_python_backend_stub"
    if not stub.is_file():
        raise RunnerLoadError(f"the wheel has no Python backend stub for Python {facts['version']} ({stub})")
    shutil.copy2(stub, server / "backends" / "python" / stub.name)
    manifest = {
        "tritonserver": str(server / "bin" / "tritonserver"),
        "backend_directory": str(server / "backends"),
        "library_path": [str(package.parent / "nvidia_pytriton.libs"), facts["libdir"]],
        "path": [str(target / "bin")],
        "python_version": facts["version"],
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return _from_manifest(target)


def _run(command: Sequence[str], what: str) -> str:
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RunnerLoadError(f"could not {what}: {exc}") from None
    if done.returncode != 0:
        raise RunnerLoadError(f"could not {what} (exit {done.returncode}):\n{(done.stderr or done.stdout)[-2000:]}")
    return done.stdout
