"""Registered models in BentoML's model store, so ``bentoml models list`` shows them and ``tiffin build`` packs them.

tiffin's own registry (the store's ``assets`` table and :mod:`tiffin.assets.blobs`) is the truth: versions,
archive, ``@latest``, in-use checks. Each registered model version with local files is also saved as the BentoML
model ``NAME:VERSION`` (both made BentoML-legal by :func:`bento_tag`) in ``$BENTOML_HOME/models``, its files hard
links to the stored ones (no second copy on the same file system), with tiffin's name, version and type in its
labels. Deleting the version deletes that BentoML model; archiving leaves it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

from tiffin.errors import SpecError
from tiffin.store.records import AssetRecord

__all__ = ["LABEL_NAME", "LABEL_VERSION", "bento_tag", "delete_bento_model", "find_bento_model", "save_bento_model"]

LABEL_NAME = "tiffin.model"
LABEL_VERSION = "tiffin.version"
_META_ENTRY = "tiffin_path_name"
"""Metadata key: the name of the stored file or folder inside the BentoML model's folder."""

_ILLEGAL = re.compile(r"[^a-z0-9._-]+")


def _legal(text: str) -> str:
    # BentoML's tag rule: lower-case letters, digits, '.', '_' and '-', starting and ending with a letter or digit,
    # at most 63 characters.
    legal = _ILLEGAL.sub("-", text.lower()).strip("._-")[:63].strip("._-")
    return legal or "model"


def bento_tag(name: str, version: str) -> str:
    """The BentoML tag of a registered model version: ``My_Model`` version ``1`` is ``my_model:1``."""
    return f"{_legal(name)}:{_legal(version)}"


def _model_store() -> Any:
    """BentoML's model store of ``$BENTOML_HOME`` as it is now (BentoML's own default is fixed at first use)."""
    from bentoml._internal.models.model import ModelStore

    root = _store_root()
    os.makedirs(root, exist_ok=True)
    return ModelStore(root)


def save_bento_model(record: AssetRecord) -> str | None:
    """Save a model version into BentoML's model store (a no-op when the tag is there); its tag, or None for a
    model registered as a URI (nothing to pack).

    Not through ``bentoml.models.create``: it copies every file into the store (a 1 GB model would cost 1 GB and
    seconds) and reports usage to BentoML over the network. BentoML's own ``Model.create``/``save`` write the
    model's ``model.yaml``; its files are then hard-linked into the saved model's folder.
    """
    path = Path(str(record.spec.get("path", "")))
    if record.digest is None or not path.exists():
        return None
    import bentoml
    from bentoml._internal.models.model import Model, ModelContext
    from bentoml.exceptions import NotFound

    store = _model_store()
    tag = bento_tag(record.name, record.version)
    try:
        bentoml.models.get(tag, _model_store=store)
        return tag
    except NotFound:
        pass
    labels = {LABEL_NAME: _legal(record.name), LABEL_VERSION: _legal(record.version)}
    metadata: dict[str, Any] = {
        "name": record.name,
        "version": record.version,
        "type": record.spec.get("type", "custom_model"),
        "digest": record.digest,
        _META_ENTRY: path.name,
    }
    context = ModelContext(framework_name="tiffin", framework_versions={})
    model = Model.create(
        tag, module="tiffin.assets", api_version="v1", signatures={}, labels=labels, metadata=metadata, context=context
    )
    model.flush()
    saved = model.save(store)
    _link_tree(path, Path(saved.path) / path.name)
    return tag


def delete_bento_model(name: str, version: str) -> None:
    """Remove a deleted model version from BentoML's model store, if it is there."""
    import bentoml
    from bentoml.exceptions import NotFound

    with contextlib.suppress(NotFound):
        bentoml.models.delete(bento_tag(name, version), _model_store=_model_store())


def find_bento_model(name: str, version: str | None) -> tuple[str, Path, dict[str, Any]]:
    """The BentoML model of a registered version (``version`` None: the highest whole-number one there): its tag,
    the path of the model's files inside it, and its metadata. :class:`SpecError` naming how to register it."""
    import bentoml
    from bentoml.exceptions import NotFound

    store = _model_store()
    if version is None:
        try:
            found = bentoml.models.list(_legal(name), _model_store=store)
        except NotFound:
            found = []
        versions = [str(model.tag.version) for model in found if str(model.tag.version).isdigit()]
        if not versions:
            raise SpecError(
                f"model '{name}' is not in BentoML's model store ({_store_root()}); register it with `tiffin model "
                f"create --name {name} --path ...` against a tiffin serve using the same BENTOML_HOME",
                field="model",
            )
        version = max(versions, key=int)
    tag = bento_tag(name, version)
    try:
        model = bentoml.models.get(tag, _model_store=store)
    except NotFound:
        raise SpecError(
            f"model '{name}' version {version} is not in BentoML's model store ({_store_root()}) as {tag}; register "
            f"it with `tiffin model create --name {name} --version {version} --path ...` against a tiffin serve using "
            "the same BENTOML_HOME",
            field="model",
        ) from None
    metadata = dict(model.info.metadata)
    entry = str(metadata.get(_META_ENTRY, ""))
    return str(model.tag), Path(model.path) / entry, metadata


def _store_root() -> str:
    home = os.environ.get("BENTOML_HOME") or os.path.expanduser("~/bentoml")
    return os.path.join(home, "models")


def _link_tree(source: Path, target: Path) -> None:
    """``target`` as ``source``'s tree: folders, and files hard-linked (copied across file systems)."""
    if source.is_file():
        _link(source, target)
        return
    for folder, _, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            _link(Path(folder) / name, target / relative / name)


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
