"""A job's outputs as ``job download`` hands them out.

An ``append_row`` job's ``score`` output is one file. A ``summary_only`` job's ``score`` output is the folder its
scoring code wrote files into (``AZUREML_BI_OUTPUT_PATH``, Azure's "custom outputs"); it travels as a gzip'd tar
that :func:`folder_archive` builds once, after the job ended, and the CLI and SDK unpack into
``DIR/named-outputs/score/`` as ``az ml job download --output-name score`` does.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from pathlib import Path

__all__ = ["folder_archive"]


def folder_archive(folder: Path, archive: Path) -> Path:
    """``archive``, a gzip'd tar of the regular files under ``folder`` (paths relative to it), built if missing.

    Links are left out: a link in a job's output could name any file of the server. The archive is written
    to a temporary file and renamed into place, so two downloads at once never see half of one.
    """
    if archive.is_file():
        return archive  # a job's outputs do not change once it ended
    tmp = archive.with_name(f".{archive.name}.tmp-{os.getpid()}-{id(folder)}")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for root, folders, files in os.walk(folder):  # enters no link to a folder
                folders.sort()
                for name in sorted(files):
                    path = Path(root, name)
                    if path.is_file() and not path.is_symlink():
                        tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
        os.replace(tmp, archive)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return archive
