"""What a batch invoke's ``--input`` names, decided once at invoke: local files, a registered data asset, or a
file URL to download when the job runs.

The forms Azure's samples use::

    data/  data/*.csv  /abs/file.csv                 local files (:func:`tiffin.batch.inputs.resolve_input`)
    azureml://datastores/NAME/paths/PATH             files under $TIFFIN_HOME/datastores/NAME
    azureml:NAME@latest  azureml:NAME:V  azureml:NAME  a registered data asset (``tiffin data create``)
    /subscriptions/.../data/NAME/versions/V          the same, as ``data show --query id`` prints it
    https://HOST/PATH/file.csv                       a file URL, downloaded into a cache when the job runs

A data asset is resolved now and kept with the job pinned (``azureml:NAME:VERSION``): its stored files' path, its
datastore URI or its URL is used as if given directly. The admin token may name any of these; an endpoint's
key or token local files under its roots only, registered data assets (the admin registered them), and URLs
under ``TIFFIN_INPUT_URL_PREFIXES`` (see docs/security.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiffin.assets.resolve import AssetStore, asset_reference, check_intact, resolve_reference
from tiffin.errors import SpecError

from .downloads import check_url, is_url, url_allowed
from .inputs import INPUT_TYPES, datastore_path, resolve_confined, resolve_input

__all__ = ["InputPolicy", "JobInput", "resolve_job_input"]


@dataclass(frozen=True)
class JobInput:
    """An invoke's input, resolved: the files to score now (``files``), or a ``url`` to download when the job
    runs; ``input_type`` as Azure names it; ``data_asset`` the pinned asset it came from."""

    input_type: str
    files: list[str] = field(default_factory=list)
    url: str | None = None
    data_asset: str | None = None
    url_redirects: bool = False

    def as_inputs(self) -> dict[str, Any]:
        """The job record's ``inputs`` fields for it (``input`` and the literals are added by the caller)."""
        extra: dict[str, Any] = {"data_asset": self.data_asset} if self.data_asset else {}
        if self.url is not None:
            # Redirects are followed for the admin's URLs only: an allowed URL of a key's must not lead elsewhere.
            extra.update(url=self.url, url_redirects=self.url_redirects)
        return {"input_type": self.input_type, **extra, "files": self.files}


@dataclass(frozen=True)
class InputPolicy:
    """What the caller may name: ``admin`` anything; otherwise files under ``roots`` and URLs under
    ``url_prefixes``. ``max_files`` bounds a listing whoever asks."""

    admin: bool
    roots: Sequence[Path]
    url_prefixes: Sequence[str]
    max_files: int


_NO_URL = (
    "names a URL, which an endpoint's key or token may give only under the server's TIFFIN_INPUT_URL_PREFIXES "
    "({prefixes}); register it as a data asset with the admin token (`tiffin data create --name NAME --type uri_file "
    "--path URL`) and give azureml:NAME@latest, or invoke with the admin token"
)


def resolve_job_input(
    source: str, input_type: str | None, *, store: AssetStore, home: Path, policy: InputPolicy
) -> JobInput:
    """``source`` (``--input``) resolved as the module says; :class:`SpecError` saying what is wrong."""
    if input_type is not None and input_type not in INPUT_TYPES:
        raise SpecError(f"must be one of {', '.join(INPUT_TYPES)} (got {input_type!r})", field="input_type")
    reference = asset_reference(source, "data", "input")
    if reference is not None:
        return _data_asset(source, input_type, store=store, home=home, policy=policy, reference=reference)
    if is_url(source):
        check_url(source)
        if not policy.admin and not url_allowed(source, policy.url_prefixes):
            raise SpecError(_NO_URL.format(prefixes=", ".join(policy.url_prefixes) or "none set"), field="input")
        return JobInput(_url_input(source, input_type).input_type, url=source, url_redirects=policy.admin)
    return _local(source, input_type, home=home, policy=policy, confined=not policy.admin)


def _url_input(url: str, input_type: str | None) -> JobInput:
    if input_type == "uri_folder":
        raise SpecError(
            f"{url} is given as a uri_folder, and a folder cannot be listed over plain HTTP(S); give the URL of one "
            "file (--input-type uri_file), or download the folder and give its path",
            field="input_type",
        )
    return JobInput("uri_file", url=url)


def _local(source: str, input_type: str | None, *, home: Path, policy: InputPolicy, confined: bool) -> JobInput:
    local = datastore_path(source, home)
    where = str(local) if local is not None else source
    files = (
        resolve_confined(where, policy.roots, input_type, max_files=policy.max_files)
        if confined
        else resolve_input(where, input_type, max_files=policy.max_files)
    )
    return JobInput(input_type or ("uri_folder" if Path(where).is_dir() else "uri_file"), files=files)


def _data_asset(
    source: str, input_type: str | None, *, store: AssetStore, home: Path, policy: InputPolicy, reference: Any
) -> JobInput:
    record = resolve_reference(store, reference, "data", "input")
    spec = record.spec if isinstance(record.spec, dict) else {}
    pinned = f"azureml:{record.name}:{record.version}"
    kind, path = spec.get("type") or "uri_folder", spec.get("path")
    if kind not in INPUT_TYPES:
        raise SpecError(
            f"{source} is a {kind} data asset; batch jobs read uri_folder and uri_file data assets: register the "
            "folder of files as uri_folder (`tiffin data create --type uri_folder --path DIR`)",
            field="input",
        )
    if input_type is not None and input_type != kind:
        raise SpecError(f"is {input_type} but {source} ({pinned}) is a {kind} data asset", field="input_type")
    if not isinstance(path, str) or not path:
        raise SpecError(f"{pinned} has no path; register it again with --path", field="input")
    if is_url(path):  # registered by the admin: a key may use it
        return JobInput(_url_input(path, kind).input_type, url=path, data_asset=pinned, url_redirects=True)
    local = datastore_path(path, home)
    where = Path(local) if local is not None else Path(path)
    check_intact(record, where, "input")
    # Registered by the admin, so a key may read it; confined to the asset itself, so a link inside it does not
    # lead a key anywhere else.
    confined = InputPolicy(policy.admin, (where,), (), policy.max_files)
    resolved = _local(str(where), kind, home=home, policy=confined, confined=not policy.admin)
    return JobInput(kind, files=resolved.files, data_asset=pinned)
