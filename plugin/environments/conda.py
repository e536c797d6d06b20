"""A conda environment file, as Azure's environments take it, translated to pip requirements.

tiffin builds environments with uv from PyPI, not with conda, so each conda dependency becomes a pip requirement
(:func:`conda_requirement`), using the shipped table ``conda_packages.json`` for the names that differ
(``pytorch`` is ``torch`` on PyPI) and for the packages pip wheels do not need (``mkl``, ``cudatoolkit``,
``libgcc``...: skipped and reported). ``python=X.Y`` picks the interpreter, and the ``pip:`` section is kept
as written (:func:`pip_lines`), but for the files it names. Pure: only ``-r`` files are read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from tiffin.errors import SpecError

from .spec import SUPPORTED_PYTHONS, EnvironmentSpec

__all__ = ["MAX_REQUIREMENTS_BYTES", "conda_requirement", "pip_lines", "pip_specifier", "translate"]

MAX_REQUIREMENTS_BYTES = 1 << 20
"""A requirements file a ``-r`` line names is read up to this size: such a file is a few KiB."""

_MAX_INCLUDE_DEPTH = 8
"""``-r`` files naming ``-r`` files: deeper than this is a loop."""

# [channel::]name[ [bracketed keys]] then the version part: "=1.2=build", ">=1.2,<2", " 1.2.* build".
_DEPENDENCY = re.compile(
    r"^(?:(?P<channel>[^\s:]+)::)?(?P<name>[A-Za-z0-9_][A-Za-z0-9_.\-]*)\s*(?:\[(?P<keys>[^\]]*)\])?\s*(?P<rest>.*)$"
)
_CLAUSE = re.compile(r"^(?P<op>==|!=|>=|<=|~=|>|<|=)?(?P<version>[^<>=!~]+)$")
_BRACKET_KEY = re.compile(r"""(\w+)\s*=\s*(?:'([^']*)'|"([^"]*)"|([^,\s]+))""")

# pip's options that a requirements file may carry and uv honours, kept as written; any other option is refused.
_KEPT_OPTIONS = ("--index-url", "-i", "--extra-index-url", "--no-index", "--trusted-host", "--pre", "--no-binary",
                 "--only-binary", "--prefer-binary")  # fmt: skip
# Options whose value is a local path, made absolute so the build finds it wherever it runs.
_PATH_OPTIONS = {"-c": "-c", "--constraint": "-c", "-e": "-e", "--editable": "-e", "-f": "-f", "--find-links": "-f"}
_INCLUDE_OPTIONS = ("-r", "--requirement")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://|^[A-Za-z0-9+.\-]+\+[A-Za-z]+:")


@dataclass(frozen=True, slots=True)
class _Table:
    pypi: dict[str, str]
    conda_only: frozenset[str]
    conda_only_prefixes: tuple[str, ...]
    prefix_exceptions: frozenset[str]
    no_pypi: dict[str, str]
    no_pypi_prefixes: dict[str, str]


@cache
def _table() -> _Table:
    raw = json.loads(resources.files("tiffin.environments").joinpath("conda_packages.json").read_text("utf-8"))
    return _Table(
        pypi=raw["pypi"],
        conda_only=frozenset(raw["conda_only"]),
        conda_only_prefixes=tuple(raw["conda_only_prefixes"]),
        prefix_exceptions=frozenset(raw["prefix_exceptions"]),
        no_pypi=raw["no_pypi"],
        no_pypi_prefixes=raw["no_pypi_prefixes"],
    )


def translate(conda: Any, *, source: str, base_dir: Path | None = None) -> EnvironmentSpec:
    """The environment a conda file (the mapping its YAML holds) asks for, as pip requirements.

    ``base_dir`` is the conda file's folder, against which the ``pip:`` section's relative paths (``-r
    requirements.txt``) are read; None for an inline conda mapping, where such a path is refused.
    :class:`SpecError` names the dependency and the fix for what cannot be translated.
    """
    if not isinstance(conda, Mapping):
        raise SpecError(
            f"a conda file is a YAML mapping (name:, channels:, dependencies: [...]), not {type(conda).__name__}",
            source=source,
        )
    dependencies = conda.get("dependencies") or []
    if not isinstance(dependencies, list):
        raise SpecError("'dependencies' is a list of conda packages and a '- pip: [...]' entry", source=source)
    python: str | None = None
    python_seen = False
    requirements: list[str] = []
    skipped: list[str] = []
    notes: list[str] = []
    for dependency in dependencies:
        if isinstance(dependency, Mapping):
            if set(dependency) != {"pip"} or not isinstance(dependency["pip"], list):
                raise SpecError(
                    f"{dict(dependency)!r} in dependencies is not understood; the one mapping a conda file's "
                    "dependencies hold is '- pip: [...]', a list of pip requirements",
                    source=source,
                )
            requirements.extend(pip_lines(dependency["pip"], source=source, base_dir=base_dir))
            continue
        if not isinstance(dependency, str):
            raise SpecError(
                f"{dependency!r} in dependencies is not a package; write it as 'name=version'", source=source
            )
        if _name_of(dependency, source) == "python":
            if not python_seen:
                python_seen = True
                python, note = _python(dependency, source)
                notes.extend([note] if note else [])
            continue
        requirement = conda_requirement(dependency, source=source)
        if requirement is None:
            skipped.append(dependency.strip())
        else:
            requirements.append(requirement)
    if not python_seen:
        notes.append("the conda file names no python version: tiffin's own Python's version is used; pin one "
                     "(- python=3.10) to choose")  # fmt: skip
    if conda.get("variables"):
        notes.append("conda's 'variables' are not set in the environment; give them as the deployment's "
                     "environment_variables")  # fmt: skip
    return EnvironmentSpec(
        python=python,
        requirements=tuple(dict.fromkeys(requirements)),
        skipped=tuple(dict.fromkeys(skipped)),
        source=source,
        notes=tuple(notes),
    )


def conda_requirement(dependency: str, *, source: str = "conda file") -> str | None:
    """One conda dependency (``conda-forge::numpy=1.23=py39h...``) as a pip requirement (``numpy==1.23.*``);
    None for a package pip does not need (``mkl``, ``libgcc``, ``pip``), which the caller reports as skipped.
    :class:`SpecError` for one that has no PyPI counterpart or whose version pip cannot express."""
    name, version = _split(dependency, source)
    pypi = _pypi_name(name, dependency, source)
    if pypi is None:
        return None
    try:
        specifier = pip_specifier(version)
        Requirement(pypi + specifier)  # what pip would read, checked here rather than at build time
    except (InvalidRequirement, InvalidSpecifier, ValueError) as exc:
        raise SpecError(
            f"conda dependency {dependency!r}: its version cannot be written for pip ({exc}); list it under '- pip:' "
            f"with a PEP 440 version instead (e.g. '{pypi}==1.2.3')",
            source=source,
        ) from None
    return pypi + specifier  # as written, not packaging's re-ordering: it is what the user sees reported


def pip_specifier(version: str) -> str:
    """A conda version spec (build string already dropped) as a PEP 440 specifier: ``1.2`` (conda's ``=1.2``,
    fuzzy) → ``==1.2.*``, ``==1.2.3`` kept, ``1.2.*`` → ``==1.2.*``, ``>=1.2,<2`` kept. ``|`` (either of two
    versions) has no pip form and is a ValueError."""
    if version.lstrip("=") in ("", "*"):  # "numpy=*", "numpy *": any version
        return ""
    if "|" in version:
        raise ValueError(f"'{version}' allows either of two versions, which pip cannot say")
    clauses = []
    for clause in version.split(","):
        match = _CLAUSE.match(clause.strip())
        if match is None:
            raise ValueError(f"'{clause}' is not a version constraint")
        op, number = match["op"], match["version"].strip()
        if op in (None, "=") and number.endswith("*"):
            clauses.append(f"=={number.rstrip('*').rstrip('.')}.*")
        elif op == "=":  # conda's "=1.2" means 1.2 and any 1.2.x: pip's prefix match
            clauses.append(f"=={number}.*")
        elif op is None:  # a bare version in conda's long form is exact
            clauses.append(f"=={number}")
        elif number.endswith("*") and op not in ("==", "!="):  # ">=1.2.*" is ">=1.2" to conda; pip refuses the star
            clauses.append(f"{op}{number.rstrip('*').rstrip('.')}")
        else:
            clauses.append(f"{op}{number}")
    return ",".join(clauses)


def pip_lines(lines: Iterable[Any], *, source: str, base_dir: Path | None, _depth: int = 0) -> list[str]:
    """A ``pip:`` section (or a requirements file's lines), kept as written but for the files it names.

    ``-r file`` is replaced by the file's own lines, so the environment's key changes when the file does and the
    build reads no path of the user's; ``-c``, ``-e`` and ``-f`` with a relative local path get it absolute
    (against ``base_dir``). Index options (``--extra-index-url``...) are kept; other options are refused, as are
    relative paths when there is no ``base_dir`` (an inline conda mapping).
    """
    out: list[str] = []
    for raw in lines:
        if not isinstance(raw, str):
            raise SpecError(
                f"{raw!r} in the pip section is not a requirement; write it as 'name==version'", source=source
            )
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if not line.startswith("-"):
            out.append(_local_path(line, base_dir, source) if _is_local_path(line) else line)
            continue
        option, value = _option(line)
        if option in _INCLUDE_OPTIONS:
            out.extend(_include(value, base_dir, source, _depth))
        elif option in _PATH_OPTIONS:
            local = value and not _URL.match(value) and not value.startswith("file:")
            out.append(f"{_PATH_OPTIONS[option]} {_local_path(value, base_dir, source) if local else value}")
        elif option in _KEPT_OPTIONS:
            out.append(line)
        else:
            raise SpecError(
                f"pip option {option!r} ({line!r}) is not supported in an environment; the options kept are -r, -c, "
                f"-e, -f and {', '.join(_KEPT_OPTIONS)}: remove it",
                source=source,
            )
    return out


# --- helpers ---------------------------------------------------------------------------------------


def _split(dependency: str, source: str) -> tuple[str, str]:
    """``(name, version spec)`` of a conda dependency, the channel, bracketed keys but ``version`` and the build
    string dropped."""
    match = _DEPENDENCY.match(dependency.strip())
    if match is None:
        raise SpecError(
            f"{dependency!r} in dependencies is not a conda package spec; write it as 'name', 'name=1.2' or "
            "'name>=1.2,<2'",
            source=source,
        )
    rest = match["rest"].strip()
    keys = {m[1]: m[2] or m[3] or m[4] for m in _BRACKET_KEY.finditer(match["keys"] or "")}
    if "version" in keys and not rest:
        rest = keys["version"]
        rest = rest if rest[:1] in "<>=!~" else f"={rest}"  # [version='1.2'] is conda's fuzzy 1.2
    if rest.startswith("=") and not rest.startswith("=="):
        # conda's short form name=VERSION[=BUILD]: the version is fuzzy ("=1.2" is 1.2.*)
        version, _, _build = rest[1:].partition("=")
        version = version.strip()
        return match["name"].lower(), (f"={version}" if version and version[0] not in "<>=!~" else version)
    # Long form "name VERSION [BUILD]", where operators may be spaced: "numpy >= 1.2, < 2".
    rest = re.sub(r"\s*([,|])\s*", r"\1", rest)
    rest = re.sub(r"(==|!=|>=|<=|~=|>|<)\s+", r"\1", rest)
    version = rest.split()[0] if rest else ""
    if version.startswith("==") and "=" in version[2:]:  # "==1.2.3=py38h..."
        version = "==" + version[2:].split("=", 1)[0]
    return match["name"].lower(), version


def _name_of(dependency: str, source: str) -> str:
    return _split(dependency, source)[0]


def _pypi_name(name: str, dependency: str, source: str) -> str | None:
    table = _table()
    why = table.no_pypi.get(name) or next(
        (text for prefix, text in table.no_pypi_prefixes.items() if name.startswith(prefix)), None
    )
    if why is not None:
        raise SpecError(
            f"conda package {dependency!r} has no PyPI counterpart, and tiffin installs environments from PyPI: "
            f"{why}. Remove it from the conda file's dependencies, or, where a package on PyPI provides what you "
            "need, list it under '- pip:' by its PyPI name",
            source=source,
        )
    if name in table.conda_only:
        return None
    if name not in table.prefix_exceptions and name.startswith(table.conda_only_prefixes):
        return None
    return table.pypi.get(name, name)


def _python(dependency: str, source: str) -> tuple[str | None, str | None]:
    """The interpreter ``python...`` asks for, and a note when tiffin chose among several."""
    _, version = _split(dependency, source)
    if not version:
        return None, (
            f"'{dependency.strip()}' names no version: tiffin's own Python's version is used; pin one (python=3.10) "
            "to choose"
        )
    try:
        specifier = pip_specifier(version)
        allowed = SpecifierSet(specifier)
    except (ValueError, InvalidSpecifier):
        raise SpecError(
            f"'{dependency.strip()}' is not a python version tiffin can read; write it as python=3.10", source=source
        ) from None
    exact = re.fullmatch(r"==(\d+\.\d+(?:\.\d+)?)(?:\.\*)?", specifier)
    if exact:
        return exact[1], None
    minors = [m for m in SUPPORTED_PYTHONS if any(f"{m}.{patch}" in allowed for patch in range(64))]
    if not minors:
        raise SpecError(
            f"'{dependency.strip()}' allows no Python that tiffin runs environments on ({', '.join(SUPPORTED_PYTHONS)})"
            "; pin one of those (python=3.10)",
            source=source,
        )
    note = (
        f"'{dependency.strip()}' allows Python {', '.join(minors)}: tiffin uses {minors[0]}, the lowest; pin one "
        f"(python={minors[-1]}) to choose"
        if len(minors) > 1
        else None
    )
    return minors[0], note


def _option(line: str) -> tuple[str, str]:
    """``("-r", "file")`` from ``-r file``, ``-rfile``, ``--requirement=file``."""
    head, _, tail = line.partition(" ")
    if "=" in head and head.startswith("--"):
        head, _, value = head.partition("=")
        return head, (value + " " + tail).strip()
    if not head.startswith("--") and len(head) > 2:  # "-rfile"
        return head[:2], (head[2:] + " " + tail).strip()
    return head, tail.strip()


def _is_local_path(line: str) -> bool:
    return line.startswith(("./", "../", "/", "~")) or line in (".", "..")


def _local_path(value: str, base_dir: Path | None, source: str) -> str:
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    if base_dir is None:
        raise SpecError(
            f"{value!r} is a path relative to the conda file, but this conda file is given inline; give the conda "
            "file as a path (conda_file: conda.yaml) or the path as an absolute one",
            source=source,
        )
    return str((base_dir / path).resolve())


def _include(value: str, base_dir: Path | None, source: str, depth: int) -> list[str]:
    if not value:
        raise SpecError("'-r' names no file; write it as '-r requirements.txt'", source=source)
    if depth >= _MAX_INCLUDE_DEPTH:
        raise SpecError(f"'-r {value}': requirements files include each other too deeply (a loop?)", source=source)
    path = Path(_local_path(value, base_dir, source))
    try:
        size = path.stat().st_size
        if size > MAX_REQUIREMENTS_BYTES:
            raise SpecError(f"'-r {value}': {path} is {size} bytes; a requirements file is a few KiB", source=source)
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else (exc.strerror or str(exc)).lower()
        raise SpecError(
            f"'-r {value}': {path} cannot be read ({reason}); give the requirements file's path", source=source
        ) from None
    return pip_lines(text.splitlines(), source=str(path), base_dir=path.parent, _depth=depth + 1)
