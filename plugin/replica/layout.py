"""Lay a deployment's model out on disk the way Azure ML does, so scoring scripts find it unmodified.

Azure mounts a registered model under ``AZUREML_MODEL_DIR``: a model registered from a folder
``model/`` appears as ``$AZUREML_MODEL_DIR/model/...``; one registered from a single file ``m.pkl``
as ``$AZUREML_MODEL_DIR/m.pkl``. tiffin reproduces that in a directory of its own with hard links to the
model's files (a copy only where the model is on another file system), so nothing is duplicated and the
script sees exactly Azure's paths.

Why not one symbolic link to the model: MLflow (3.x) refuses to load a model whose path resolves outside
the folder it is given (``mlflow.pyfunc.load_model(os.path.join(AZUREML_MODEL_DIR, "model"))``, Azure's own
batch driver, would fail). So ``AZUREML_MODEL_DIR`` itself is a link to a staged copy, and what is under
it is real folders and files; the link is swapped atomically when the deployment's replicas (or a batch
job's workers) start again. Each deployment has a mount folder of its own (:mod:`tiffin.paths`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tiffin.errors import SpecError
from tiffin.paths import safe_name

__all__ = ["model_path_of", "stage_model"]


def model_path_of(deployment: Any) -> Path | None:
    """The local path of the deployment's model, or None when it has none."""
    model = deployment.model
    if model is None:
        return None
    if isinstance(model, str):
        if model.startswith("azureml:"):
            raise SpecError(
                f"model '{model}' refers to an Azure ML registry; tiffin serves local models: give "
                "model.path (a file or folder) instead",
                field="model",
            )
        return Path(model)
    path = getattr(model, "path", None)
    return Path(path) if path else None


def stage_model(deployment: Any, mounts_root: Path, *, identity: str) -> Path | None:
    """Lay the model out under ``mounts_root/identity/`` as Azure does; return AZUREML_MODEL_DIR.

    ``identity`` names the mount, one folder per part (``online/ENDPOINT/DEPLOYMENT``, see
    :func:`tiffin.paths.online_mount_identity` and its siblings): never flattened into one folder name, so
    two deployments never share a mount. In it ``current`` (AZUREML_MODEL_DIR) links to one of ``copies/``.
    """
    source = model_path_of(deployment)
    if source is None:
        return None
    source = source.resolve()
    if not source.exists():
        raise SpecError(f"model path {source} does not exist", field="model.path")
    mount = mounts_root.joinpath(*(safe_name(part, "model mount") for part in identity.split("/")))
    model_dir = mount / "current"
    # A fresh staged copy each time: the model's files may have been rewritten in place (retrained), and a
    # hard link keeps pointing at the old contents.
    copies = mount / "copies"
    copies.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix="copy-", dir=copies))
    _link_tree(source, staged / source.name)
    # AZUREML_MODEL_DIR is a link to the copy, swapped atomically: several replicas of one deployment stage
    # at once, and a script listing the folder sees the model alone, as on Azure.
    tmp = mount / f".tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(staged, mount), tmp, target_is_directory=True)
    os.replace(tmp, model_dir)
    # This mount's earlier copies go (no other mount's: each has its own folder); one another replica made a
    # moment ago stays a while.
    current = os.path.realpath(model_dir)
    for entry in copies.iterdir():
        if str(entry) not in (str(staged), current) and not _young(entry):
            shutil.rmtree(entry, ignore_errors=True)
    return model_dir


def _link_tree(source: Path, target: Path) -> None:
    """``target`` as ``source``'s tree: real folders, hard-linked files (copied across file systems)."""
    if source.is_file():
        _link_file(source, target)
        return
    for folder, _, files in os.walk(source, followlinks=True):
        relative = Path(folder).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            _link_file(Path(folder) / name, target / relative / name)


def _link_file(source: Path, target: Path) -> None:
    try:
        os.link(os.path.realpath(source), target)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copy2(source, target)


def _young(path: Path, seconds: float = 60.0) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except OSError:
        return False
