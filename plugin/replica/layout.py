"""Lay a deployment's model out on disk the way Azure ML does, so scoring scripts find it unmodified.

Azure mounts a registered model under ``AZUREML_MODEL_DIR``: a model registered from a folder
``model/`` appears as ``$AZUREML_MODEL_DIR/model/...``; one registered from a single file ``m.pkl``
as ``$AZUREML_MODEL_DIR/m.pkl``. tiffin reproduces that with one symbolic link in a directory of its
own, so nothing is copied and the script sees exactly Azure's paths.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from tiffin.errors import SpecError

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
    """Create ``mounts_root/identity/`` holding a link to the model; return it as AZUREML_MODEL_DIR.

    ``identity`` names the deployment (e.g. ``endpoint/deployment``); it is made filesystem-safe.
    """
    source = model_path_of(deployment)
    if source is None:
        return None
    source = source.resolve()
    if not source.exists():
        raise SpecError(f"model path {source} does not exist", field="model.path")
    target_dir = mounts_root / re.sub(r"[^A-Za-z0-9_.-]+", "_", identity)
    target_dir.mkdir(parents=True, exist_ok=True)
    link = target_dir / source.name
    # Several replicas of one deployment stage the same directory at once: replace the link
    # atomically, and only remove entries left from an earlier model.
    for entry in target_dir.iterdir():
        if entry.name != source.name and not entry.name.startswith(".tmp-"):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    if not (link.is_symlink() and os.readlink(link) == str(source)):
        tmp = target_dir / f".tmp-{os.getpid()}-{source.name}"
        tmp.unlink(missing_ok=True)
        os.symlink(source, tmp, target_is_directory=source.is_dir())
        os.replace(tmp, link)
    return target_dir
