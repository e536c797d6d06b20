"""The content store: the files of registered models and data assets, kept by their content's digest.

::

    $TIFFIN_HOME/assets/blobs/<hex>/<source's name>/...   one registered file or folder, read-only
    $TIFFIN_HOME/assets/blobs/<hex>/.linked.json          size and mtime of the files hard-linked from the source
    $TIFFIN_HOME/assets/blobs/.incoming/                  a registration being laid out (removed when done)

:func:`store_tree` lays the source out, hashes what it laid out, and moves it under its digest; content stored
already is kept once. Files of :data:`LINK_MIN_BYTES` (16 MiB) or more are **hard-linked** (copied only across
file systems, or where the server's user may not link or protect the file); smaller ones are **copied**.
Registering a 1 GB model folder on the same file system thus writes no file data: one link per large file and
one read of the content for the digest (SHA-256 at ~1.6 GB/s here, several files or segments hashed at once).

Why not link everything: a hard link *is* the source file, so rewriting the source in place afterwards
(``echo '{"scale": 2}' > model/weights.json`` between two registrations, as Azure's samples do, or
``joblib.dump`` onto the same name) would change every version registered from it. Small files, the ones such
scripts rewrite, cost little to copy and are then the store's own. A large linked file is made read-only
(``a-w``), which the source's name shares: an in-place rewrite of it fails rather than silently changing a
registered version, while deleting the source, or saving a new file and renaming it over the old one, leaves
the registered version as it was. As root, permissions do not stop writes, so the store also remembers each
linked file's size and modification time (``blobs/<hex>/.linked.json``): :func:`changed_links` finds a linked
file rewritten since, and whatever runs a registered version (a replica's start, a batch job, a deployment's
create) refuses it, naming the file, rather than serve content that is no longer what was registered.

Where the content lives is ``$TIFFIN_ASSETS_DIR`` (default ``$TIFFIN_HOME/assets``): servers sharing one store
share it too, mounted at the same path, as they share ``TIFFIN_JOBS_DIR``.

Symbolic links are never stored as links: one that points inside the source folder is stored as the file it
names; one that points outside it, or nowhere, is refused. A model folder cannot carry a link to
``/etc/shadow`` (or to a file that changes later) into the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tiffin.config import assets_root
from tiffin.errors import SpecError

__all__ = [
    "DIGEST_PREFIX",
    "LINK_MIN_BYTES",
    "blob_path",
    "blobs_dir",
    "changed_links",
    "release",
    "store_tree",
    "tree_digest",
]

DIGEST_PREFIX = "sha256:"

# A file is hashed in segments of this size, several at once (hashlib lets go of the GIL while it hashes), and
# its digest is the SHA-256 of its segments' digests: one large file costs a fraction of a sequential pass.
_SEGMENT = 32 << 20

MAX_ENTRIES = 200_000
"""The most files and folders one registration may hold: a model or data folder, not a file system's worth."""

LINK_MIN_BYTES = 16 << 20
"""Files this large or larger are hard-linked into the store; smaller ones are copied (see the module's docstring)."""
_WORKERS = max(2, min(8, os.cpu_count() or 2))


_LINKED = ".linked.json"


def blobs_dir(home: Path) -> Path:
    """Where registered content lives: ``$TIFFIN_ASSETS_DIR/blobs``, by default ``$TIFFIN_HOME/assets/blobs``."""
    return assets_root(home) / "blobs"


def blob_path(home: Path, digest: str) -> Path:
    """The folder holding the content ``digest`` (``sha256:HEX``)."""
    hexdigest = digest.removeprefix(DIGEST_PREFIX)
    if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
        raise ValueError(f"not a content digest: {digest!r}")
    return blobs_dir(home) / hexdigest


def store_tree(home: Path, source: Path, *, max_entries: int = MAX_ENTRIES) -> tuple[str, Path]:
    """Store the file or folder ``source`` by content; return its digest and the stored path
    (``blobs/<hex>/<source.name>``), which a registered asset's ``path`` becomes.

    :class:`SpecError` (field ``path``) when ``source`` is missing, is neither a file nor a folder, holds more
    than ``max_entries`` files and folders, or holds a symbolic link to outside itself, a dangling one, or a
    special file. Nothing is laid out before the whole tree passed these checks.
    """
    source = Path(os.path.abspath(source))
    if not source.exists():
        raise SpecError(f"{source} does not exist; give the path of the file or folder to register", field="path")
    root = source.resolve()
    entries: list[tuple[str, Path | None]] = []
    for entry in _entries(root, source):
        entries.append(entry)
        if len(entries) > max_entries:
            raise SpecError(
                f"{source} holds more than {max_entries} files and folders; register the model's or data's own "
                "folder, not one that holds much else",
                field="path",
            )
    incoming = blobs_dir(home) / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="in-", dir=incoming))
    try:
        top = staging / source.name
        linked: dict[str, tuple[int, int]] = {}
        for relative, real in entries:
            target = top / relative if relative != "." else top
            if real is None:
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                if real.stat().st_size >= LINK_MIN_BYTES:
                    if _link_or_copy(real, target):
                        status = target.stat()
                        linked[relative] = (status.st_size, status.st_mtime_ns)
                else:
                    _copy(real, target)
        digest = tree_digest(top, name=source.name)
        final = blob_path(home, digest)
        if not final.exists():
            if linked:
                (staging / _LINKED).write_text(json.dumps(linked, sort_keys=True), encoding="utf-8")
            _make_read_only(top)
            try:
                os.rename(staging, final)
            except OSError:
                if not final.exists():  # not a concurrent registration of the same content
                    raise
        return digest, final / source.name
    finally:
        if staging.exists():
            _remove(staging)


def _entries(root: Path, shown: Path) -> Iterator[tuple[str, Path | None]]:
    """(relative path, real file or None for a folder) of everything under ``root``, links checked."""
    if root.is_file():
        yield ".", root
        return
    if not root.is_dir():
        raise SpecError(f"{shown} is neither a file nor a folder; register a model file or folder", field="path")
    yield ".", None
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        for name in sorted(dirs):
            path = base / name
            if path.is_symlink():
                raise SpecError(
                    f"{shown / path.relative_to(root)} is a symbolic link to a folder; tiffin stores real files "
                    "only: replace the link with the folder's files, or register the folder it names",
                    field="path",
                )
            yield str(path.relative_to(root)), None
        for name in sorted(files):
            path = base / name
            relative = str(path.relative_to(root))
            real = Path(os.path.realpath(path))
            if path.is_symlink():
                if not real.exists():
                    raise SpecError(f"{shown / relative} is a symbolic link to nothing; remove it", field="path")
                if not real.is_relative_to(root):
                    raise SpecError(
                        f"{shown / relative} is a symbolic link to {real}, outside the folder being registered; "
                        "tiffin stores the folder's own files only: copy that file into the folder instead",
                        field="path",
                    )
            mode = real.stat().st_mode
            if not stat.S_ISREG(mode):
                raise SpecError(
                    f"{shown / relative} is not a regular file (a pipe, socket or device); remove it", field="path"
                )
            yield relative, real


def _link_or_copy(source: Path, target: Path) -> bool:
    """Link ``target`` to ``source`` (True), or copy it where that cannot be done or protected (False)."""
    try:
        os.link(source, target)
    except OSError:  # another file system, or linking not allowed (fs.protected_hardlinks): a copy
        _copy(source, target)
        return False
    try:
        # Read-only: see the module's docstring.
        _read_only(target)
    except OSError:  # not the file's owner: it cannot be protected, so keep a copy instead of a link
        target.unlink()
        _copy(source, target)
        return False
    return True


def changed_links(stored: Path) -> list[str]:
    """The files of the stored content ``stored`` (``blobs/<hex>/<name>``) hard-linked from their source and
    rewritten in place since (size or modification time moved); empty when it is as registered. A few stats."""
    manifest = stored.parent / _LINKED
    try:
        linked = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    changed = []
    for relative, (size, mtime_ns) in sorted(linked.items()):
        path = stored if relative == "." else stored / relative
        try:
            status = path.stat()
        except OSError:
            changed.append(relative)
            continue
        if (status.st_size, status.st_mtime_ns) != (size, mtime_ns):
            changed.append(relative)
    return changed


def _copy(source: Path, target: Path) -> None:
    shutil.copy2(source, target)
    _read_only(target)


def _read_only(path: Path) -> None:
    os.chmod(path, stat.S_IMODE(path.stat().st_mode) & ~0o222)


def tree_digest(top: Path, *, name: str) -> str:
    """``sha256:HEX`` over ``top``'s layout (``name`` and relative paths, folders too) and its files' contents.

    Regular files and folders only (what :func:`store_tree` lays out). Each file's content digest is the
    SHA-256 of the SHA-256s of its 32 MiB segments, so segments hash in parallel.
    """
    files: list[tuple[str, Path]] = []
    lines: list[str] = []
    if top.is_file():
        files.append((name, top))
    else:
        lines.append(f"d {name}/")
        for folder, dirs, names in os.walk(top):
            dirs.sort()
            base = Path(folder)
            for sub in dirs:
                lines.append(f"d {name}/{(base / sub).relative_to(top)}/")
            files.extend((f"{name}/{(base / n).relative_to(top)}", base / n) for n in sorted(names))
    with ThreadPoolExecutor(_WORKERS, thread_name_prefix="tiffin-hash") as pool:
        jobs = [(label, path.stat().st_size, [pool.submit(_hash_segment, path, offset) for offset in _offsets(path)])
                for label, path in files]  # fmt: skip
        for label, size, segments in jobs:
            content = hashlib.sha256(b"".join(segment.result() for segment in segments)).hexdigest()
            lines.append(f"f {label} {size} {content}")
    lines.sort()
    whole = hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape"))
    return DIGEST_PREFIX + whole.hexdigest()


def _offsets(path: Path) -> range:
    size = path.stat().st_size
    return range(0, max(size, 1), _SEGMENT)


def _hash_segment(path: Path, offset: int) -> bytes:
    digest = hashlib.sha256()
    remaining = _SEGMENT
    with open(path, "rb", buffering=0) as handle:
        handle.seek(offset)
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        while remaining > 0:
            read = handle.readinto(view[: min(len(buffer), remaining)])
            if not read:
                break
            digest.update(view[:read])
            remaining -= read
    return digest.digest()


def _make_read_only(top: Path) -> None:
    """Files a-w (links are, already); folders r-x for the owner only, once their content is in place."""
    if top.is_file():
        return
    for folder, _, _ in os.walk(top, topdown=False):
        os.chmod(folder, 0o500)


def _remove(path: Path) -> None:
    # Folders were made read-only; make them writable again to empty them. Files stay as they are: they are
    # links to the sources' inodes, whose mode is not ours to change back.
    for folder, _, _ in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def release(home: Path, digest: str) -> None:
    """Remove the content ``digest`` from the store (once no registered version holds it)."""
    path = blob_path(home, digest)
    if path.exists():
        _remove(path)
