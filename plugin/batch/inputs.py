"""A batch job's input as the user names it (``--input PATH``) resolved to the files it holds.

As Azure's batch deployments read their input: a folder (``uri_folder``) gives the files directly in it,
not in sub-folders; a file (``uri_file``) gives itself; a glob pattern gives what it matches. Paths are made
absolute, since the job runs in the server's working directory, not the caller's.

Azure's datastore URIs (``azureml://datastores/NAME/paths/PATH``) name folders of tiffin's home instead,
``$TIFFIN_HOME/datastores/NAME/PATH`` (:func:`datastore_path`), so scripts that read from or write to
``workspaceblobstore`` run unchanged.

Listing is bounded, whoever asks: at most ``max_files`` files (``TIFFIN_MAX_INPUT_FILES``) and
``time_limit_s`` seconds, and a ``**`` never follows a link to a folder, so a link back to its own folder
(``/usr/**`` met several) cannot make a walk endless. :func:`resolve_confined` is the endpoint credential's
view: files under given roots only, and one answer for "absent" and "not yours".
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tiffin.config import INPUT_ROOTS_ENV, MAX_INPUT_FILES_ENV
from tiffin.errors import SpecError

__all__ = [
    "DEFAULT_MAX_FILES",
    "DEFAULT_TIME_LIMIT_S",
    "INPUT_TYPES",
    "NOT_OPEN",
    "datastore_path",
    "is_within",
    "resolve_confined",
    "resolve_input",
]

INPUT_TYPES = ("uri_folder", "uri_file")

DEFAULT_MAX_FILES = 100_000
"""The most files one input may name unless the server says otherwise (``TIFFIN_MAX_INPUT_FILES``)."""

DEFAULT_TIME_LIMIT_S = 10.0
"""How long listing one input may take; past it the request is refused rather than holding the server."""

NOT_OPEN = (
    "names no input this endpoint's key or token may read. Give azureml://datastores/NAME/paths/PATH (files "
    f"under $TIFFIN_HOME/datastores/NAME on the server) or a path under one of the server's {INPUT_ROOTS_ENV}, "
    "naming files that exist there; any other path on the server takes the admin token"
)
"""The one answer an endpoint credential gets for an input that is absent or outside its reach: the same
words for both, so the answer tells nothing about the server's files. It does not repeat the path either."""

_DATASTORE = re.compile(r"azureml://datastores/(?P<store>[A-Za-z0-9_-]+)/paths(?:/(?P<path>.*))?")
_MAGIC = re.compile(r"[*?[]")


class _Absent(SpecError):
    """The input names nothing: a path that does not exist, a pattern that matches no file."""


def datastore_path(uri: str, home: Path, *, field: str = "input") -> Path | None:
    """The local folder or file standing for an ``azureml://datastores/NAME/paths/PATH`` URI under ``home``
    (``home/datastores/NAME/PATH``); None when ``uri`` is not such a URI."""
    match = _DATASTORE.fullmatch(uri)
    if match is None:
        return None
    parts = PurePosixPath(match["path"] or "").parts
    if ".." in parts or (parts and parts[0] == "/"):
        raise SpecError(f"{uri} climbs out of its datastore; give a path inside it", field=field)
    return home / "datastores" / match["store"] / Path(*parts) if parts else home / "datastores" / match["store"]


def is_within(path: Path | str, roots: Sequence[Path]) -> bool:
    """Whether ``path``, its links and ``..`` followed, lies in one of ``roots`` (theirs followed too)."""
    real = Path(os.path.realpath(path))
    return any(real.is_relative_to(os.path.realpath(root)) for root in roots)


@dataclass
class _Budget:
    """What one listing may still spend: files found, and time."""

    shown: str
    max_files: int
    deadline: float
    time_limit_s: float
    found: int = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise SpecError(
                f"listing {self.shown} took more than {self.time_limit_s:g}s; narrow the glob pattern (a ** walks "
                "every folder below it) or give the folder that holds the files",
                field="input",
            )

    def count(self) -> None:
        self.found += 1
        if self.found > self.max_files:
            raise SpecError(
                f"{self.shown} names more than {self.max_files} files (the server's {MAX_INPUT_FILES_ENV}); split "
                "the input into several jobs (a folder or pattern each), or raise the limit where tiffin serve runs",
                field="input",
            )


def _entries(folder: str, budget: _Budget) -> Iterator[os.DirEntry[str]]:
    """The entries of ``folder`` (none if it cannot be read, as glob does), spending the budget's time."""
    try:
        with os.scandir(folder) as listing:
            for entry in listing:
                budget.tick()
                yield entry
    except OSError:
        return


def _is_dir(path: str, follow_links: bool) -> bool:
    return os.path.isdir(path) and (follow_links or not os.path.islink(path))


def _glob(root: Path, components: list[str], budget: _Budget, follow_links: bool) -> Iterator[str]:
    """The files under ``root`` that ``components`` (glob components, ``**`` for any folders) match.

    As :func:`glob.glob` with ``recursive=True``: a name starting with '.' is matched only by a component
    that starts with '.'; a component without wildcards is looked up, not listed. Unlike it, ``**`` never
    enters a link to a folder, so a link to an ancestor cannot make the walk endless; other components
    follow links only with ``follow_links`` (each of them takes one level, so the walk stays as deep as the
    pattern). Each (folder, component) pair is visited once.
    """
    matchers = [re.compile(fnmatch.translate(c)) for c in components]
    stack, seen = [(str(root), 0)], set()
    while stack:
        folder, k = stack.pop()
        if (folder, k) in seen:
            continue
        seen.add((folder, k))
        budget.tick()
        last, component = k == len(components) - 1, components[k]
        if component == "**" and not last:
            stack.append((folder, k + 1))  # ** may stand for no folder at all
        if component != "**" and not _MAGIC.search(component):
            candidate = os.path.join(folder, component)
            if last and os.path.isfile(candidate):
                yield candidate
            elif not last and _is_dir(candidate, follow_links):
                stack.append((candidate, k + 1))
            continue
        for entry in _entries(folder, budget):
            if entry.name.startswith(".") and not component.startswith("."):
                continue
            if component == "**":
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, k))
                elif last and entry.is_file():
                    yield entry.path
            elif matchers[k].match(entry.name):
                if last:
                    if entry.is_file():
                        yield entry.path
                elif entry.is_dir(follow_symlinks=follow_links):
                    stack.append((entry.path, k + 1))


def _real(path: str, folders: dict[str, str]) -> str:
    """``path`` with links and ``..`` followed, as :meth:`Path.resolve`; each folder resolved once (``folders``
    keeps them), so that 100,000 files cost 100,000 ``lstat`` calls, not one per part of each path."""
    folder, name = os.path.split(path)
    real_folder = folders.get(folder)
    if real_folder is None:
        real_folder = folders[folder] = os.path.realpath(folder)
    full = os.path.join(real_folder, name)
    return os.path.realpath(full) if os.path.islink(full) else full


def _split_pattern(full: Path) -> tuple[Path, list[str]]:
    """``full`` as its leading folder without wildcards and the glob components after it."""
    parts = full.parts
    for index, part in enumerate(parts):
        if _MAGIC.search(part):
            return Path(*parts[:index]), list(parts[index:])
    return full, []


def _absolute(path: str, base: Path | None) -> Path:
    if "://" in path or path.startswith("azureml:"):
        raise SpecError(
            f"{path} is a remote or registered data asset; tiffin reads local files: give a folder, a file, a "
            "glob pattern on this machine, or azureml://datastores/NAME/paths/PATH (a folder of tiffin's home)",
            field="input",
        )
    full = Path(os.path.expanduser(path))
    return full if full.is_absolute() else (base or Path.cwd()) / full


def _check_type(input_type: str | None) -> None:
    if input_type is not None and input_type not in INPUT_TYPES:
        raise SpecError(f"must be one of {', '.join(INPUT_TYPES)} (got {input_type!r})", field="input_type")


def _files(
    path: str, full: Path, input_type: str | None, max_files: int, time_limit_s: float, follow_links: bool
) -> list[str]:
    budget = _Budget(path, max_files, time.monotonic() + time_limit_s, time_limit_s)
    root, components = _split_pattern(full)
    folders: dict[str, str] = {}
    if components:
        found = set()
        for file in _glob(root, components, budget, follow_links):
            resolved = _real(file, folders)
            if resolved not in found:  # a link to a file and the file are one input
                budget.count()
                found.add(resolved)
        if not found:
            raise _Absent(f"the pattern {path} matches no file", field="input")
        return sorted(found)
    if not full.exists():
        raise _Absent(f"{full} does not exist; give a folder, a file or a glob pattern", field="input")
    if full.is_dir():
        if input_type == "uri_file":
            raise SpecError(f"{full} is a folder but --input-type is uri_file", field="input")
        files = []
        # Azure reads the files of the folder itself; hidden files (.DS_Store...) are not data.
        for entry in _entries(str(full), budget):
            if entry.is_file() and not entry.name.startswith("."):
                budget.count()
                files.append(_real(entry.path, folders))
        return sorted(files)
    if input_type == "uri_folder":
        raise SpecError(f"{full} is a file but --input-type is uri_folder", field="input")
    return [str(full.resolve())]


def resolve_input(
    path: str,
    input_type: str | None = None,
    *,
    base: Path | None = None,
    max_files: int = DEFAULT_MAX_FILES,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
) -> list[str]:
    """The absolute paths of the files ``path`` names, sorted; SpecError saying what is wrong otherwise.

    Any local path the server's user can read: this is the admin's (and the local CLI's) view. A relative
    path is taken from ``base`` (default: the working directory).
    """
    _check_type(input_type)
    full = _absolute(path, base)
    return _files(path, full, input_type, max_files, time_limit_s, follow_links=True)


def resolve_confined(
    path: str,
    roots: Sequence[Path],
    input_type: str | None = None,
    *,
    max_files: int = DEFAULT_MAX_FILES,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
) -> list[str]:
    """As :func:`resolve_input`, for an endpoint's key or token: only files that lie in ``roots``.

    The leading folder of ``path`` must lie in a root before anything is listed, a glob enters no link to a
    folder, and every file found must lie in a root once its links are followed. Whatever is not so, and
    whatever does not exist, gets the same :data:`NOT_OPEN` answer, so a caller cannot learn which paths
    exist outside its reach.
    """
    _check_type(input_type)
    full = _absolute(path, None)
    leading, components = _split_pattern(full)
    # '..' after a wildcard would take the walk out of the roots before any file is checked.
    if ".." in components or not is_within(leading, roots):
        raise SpecError(NOT_OPEN, field="input")
    try:
        files = _files(path, full, input_type, max_files, time_limit_s, follow_links=False)
    except _Absent:
        raise SpecError(NOT_OPEN, field="input") from None
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    if not all(any(Path(file).is_relative_to(root) for root in real_roots) for file in files):  # already resolved
        raise SpecError(NOT_OPEN, field="input")
    return files
