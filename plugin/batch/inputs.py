"""A batch job's input as the user names it (``--input PATH``) resolved to the files it holds.

As Azure's batch deployments read their input: a folder (``uri_folder``) gives the files directly in it,
not in sub-folders; a file (``uri_file``) gives itself; a glob pattern gives what it matches. Paths are made
absolute, since the job runs in the server's working directory, not the caller's.

Azure's datastore URIs (``azureml://datastores/NAME/paths/PATH``) name folders of tiffin's home instead,
``$TIFFIN_HOME/datastores/NAME/PATH`` (:func:`datastore_path`), so scripts that read from or write to
``workspaceblobstore`` run unchanged.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path, PurePosixPath

from tiffin.errors import SpecError

__all__ = ["INPUT_TYPES", "datastore_path", "resolve_input"]

INPUT_TYPES = ("uri_folder", "uri_file")

_DATASTORE = re.compile(r"azureml://datastores/(?P<store>[A-Za-z0-9_-]+)/paths(?:/(?P<path>.*))?")


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


def resolve_input(path: str, input_type: str | None = None, *, base: Path | None = None) -> list[str]:
    """The absolute paths of the files ``path`` names, sorted; SpecError saying what is wrong otherwise."""
    if input_type is not None and input_type not in INPUT_TYPES:
        raise SpecError(f"must be one of {', '.join(INPUT_TYPES)} (got {input_type!r})", field="input_type")
    if "://" in path or path.startswith("azureml:"):
        raise SpecError(
            f"{path} is a remote or registered data asset; tiffin reads local files: give a folder, a file, a "
            "glob pattern on this machine, or azureml://datastores/NAME/paths/PATH (a folder of tiffin's home)",
            field="input",
        )
    full = Path(os.path.expanduser(path))
    if not full.is_absolute():
        full = (base or Path.cwd()) / full
    if any(ch in path for ch in "*?["):
        files = sorted(str(Path(p).resolve()) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
        if not files:
            raise SpecError(f"the pattern {path} matches no file", field="input")
        return files
    if not full.exists():
        raise SpecError(f"{full} does not exist; give a folder, a file or a glob pattern", field="input")
    if full.is_dir():
        if input_type == "uri_file":
            raise SpecError(f"{full} is a folder but --input-type is uri_file", field="input")
        # Azure reads the files of the folder itself; hidden files (.DS_Store...) are not data.
        return sorted(str(p.resolve()) for p in full.iterdir() if p.is_file() and not p.name.startswith("."))
    if input_type == "uri_folder":
        raise SpecError(f"{full} is a file but --input-type is uri_folder", field="input")
    return [str(full.resolve())]
