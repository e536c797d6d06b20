"""`pip install .` produces a wheel whose `tiffin` and `tiffin.runners` import, migrations included."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    (found,) = out.glob("tiffin-*.whl")
    return found


def test_wheel_maps_plugin_and_runners_to_tiffin(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "tiffin/__init__.py" in names
    assert "tiffin/runners/__init__.py" in names and "tiffin/runners/script.py" in names
    assert "tiffin/store/migrations/versions/0001_initial.py" in names
    assert "tiffin/store/migrations/script.py.mako" in names
    assert not any(n.startswith(("plugin/", "runners/", "tests/")) for n in names)


def test_every_package_of_plugin_is_in_the_wheel(wheel):
    # pyproject.toml lists every package by hand (the import names differ from the folders): a new one left out
    # is missing from installs while the editable checkout still imports it.
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [
        init.parent.relative_to(REPO).as_posix()
        for init in (REPO / "plugin").rglob("__init__.py")
        if "tiffin/" + init.relative_to(REPO / "plugin").as_posix() not in names
    ]
    assert missing == [], "add these to pyproject.toml's packages"
    assert "tiffin/assets/curated.json" in names


def test_installed_wheel_imports_and_migrates(wheel, tmp_path):
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    # The installed copy, not this checkout, must be the one imported: run outside the repo with it first.
    code = (
        "import tiffin, tiffin.runners, tiffin.store, pathlib;"
        "assert tiffin.__file__.startswith({!r}), tiffin.__file__;"
        "assert tiffin.runners.__file__.startswith({!r});"
        "s = tiffin.store.Store.open(home=pathlib.Path({!r})); print(s.schema_revision())"
    ).format(str(target), str(target), str(tmp_path / "home"))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == tiffin_head()


def tiffin_head() -> str:
    from tiffin.store import head_revision

    return head_revision()


def _sources() -> list[Path]:
    """tiffin's own modules (``tiffin`` is plugin/, ``tiffin.runners`` is runners/)."""
    return [*(REPO / "plugin").rglob("*.py"), *(REPO / "runners").rglob("*.py")]


def _imports(path: Path) -> set[str]:
    """The absolute module names ``path`` imports, wherever in the file (inside functions too)."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_production_code_imports_neither_the_test_helpers_nor_another_layer():
    """tiffin.testing is for tests (it may import anything); runners serve behind replicas and use no part of
    the gateway. What both need (free_port, the pooled HTTP client) lives in tiffin.net and tiffin.http_client."""
    wrong = []
    for path in _sources():
        relative = path.relative_to(REPO).as_posix()
        for module in _imports(path):
            if module == "tiffin.testing" and relative != "plugin/testing.py":
                wrong.append(f"{relative} imports {module}")
            if relative.startswith("runners/") and module.startswith("tiffin.gateway"):
                wrong.append(f"{relative} imports {module}")
    assert wrong == []


# Declared, used, but never imported by name in tiffin's code: why each is there.
_USED_WITHOUT_IMPORT = {
    "uvloop": "uvicorn's event loop, chosen by name (loop='uvloop')",
    "opentelemetry-sdk": "BentoML's tracing, switched off with OTEL_SDK_DISABLED (tiffin.replica.service)",
}


def test_every_runtime_dependency_is_used():
    """A dependency nobody uses costs every install; each one is imported by tiffin or listed above."""
    import re
    import tomllib
    from importlib.metadata import packages_distributions

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {canonical(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]) for requirement in declared}
    imported = {module.split(".")[0] for path in _sources() for module in _imports(path)}
    distributions = packages_distributions()
    used = {canonical(dist) for module in imported for dist in distributions.get(module, ())}
    assert names - used - set(_USED_WITHOUT_IMPORT) == set()
