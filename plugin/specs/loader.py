"""Loading a spec: kind detection from ``$schema``, then overrides, validation and path resolution.

The steps live in their own modules: :mod:`~tiffin.specs.strict_yaml` reads the file,
:mod:`~tiffin.specs.overrides` applies ``--set``, :mod:`~tiffin.specs.problems` turns pydantic's errors and
unknown keys into :class:`~tiffin.errors.SpecError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import pydantic

from ..errors import SpecError
from ._base import SpecModel, collect_ignored, is_remote_path, resolve_paths
from .assets import ASSET_SPEC_KINDS, Compute, DataAsset, EnvironmentAsset, ModelAsset
from .batch import BatchDeployment, BatchEndpoint
from .online import OnlineDeployment, OnlineEndpoint
from .overrides import apply_overrides
from .problems import article, describe_value, refuse_unknown, translate_validation_error
from .strict_yaml import read_yaml

__all__ = ["SPEC_KINDS", "LoadedSpec", "Spec", "kind_from_schema", "load_spec", "parse_spec"]

Spec = OnlineEndpoint | OnlineDeployment | BatchEndpoint | BatchDeployment
"""Any of the four spec kinds."""

T = TypeVar("T", bound=SpecModel)

SPEC_KINDS: tuple[type[SpecModel], ...] = (OnlineEndpoint, OnlineDeployment, BatchEndpoint, BatchDeployment)
"""The spec classes :func:`load_spec` and :func:`parse_spec` accept as ``kind``."""

# Last part of Azure's $schema URLs (lower-cased, ".schema.json" cut off) -> spec class.
# "OnlineDeployment" is the `http://azureml/sdk-2-0/OnlineDeployment.json` form some docs use.
_SCHEMA_KINDS: dict[str, type[SpecModel]] = {
    "managedonlineendpoint": OnlineEndpoint,
    "kubernetesonlineendpoint": OnlineEndpoint,
    "onlineendpoint": OnlineEndpoint,
    "managedonlinedeployment": OnlineDeployment,
    "kubernetesonlinedeployment": OnlineDeployment,
    "onlinedeployment": OnlineDeployment,
    "batchendpoint": BatchEndpoint,
    "batchdeployment": BatchDeployment,
    "modelbatchdeployment": BatchDeployment,
    # Registered assets and computes (issue 12): Azure's model, environment, data and compute schemas.
    "model": ModelAsset,
    "environment": EnvironmentAsset,
    "data": DataAsset,
    "amlcompute": Compute,
    "kubernetescompute": Compute,
    "computeinstance": Compute,
}
_COMPUTE_TYPES = {"amlcompute": "amlcompute", "kubernetescompute": "kubernetes", "computeinstance": "computeinstance"}
_PIPELINE_SCHEMA = "pipelinecomponentbatchdeployment"
_KNOWN_SCHEMAS = (
    "managedOnlineEndpoint, kubernetesOnlineEndpoint, managedOnlineDeployment, kubernetesOnlineDeployment, "
    "batchEndpoint, batchDeployment, modelBatchDeployment, model, environment, data, amlCompute, "
    "kubernetesCompute or computeInstance schemas"
)
_SCHEMA_EXAMPLE = "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json"


@dataclass
class LoadedSpec(Generic[T]):
    """A validated spec and what the caller should tell the user about it.

    ``ignored`` lists dotted names of fields that are valid on Azure but that tiffin cannot honour
    locally (``instance_type``, ``environment.image``...); they are kept on the spec, never dropped.
    ``unknown`` is always empty: a key that is not in Azure's schema at all (most often a typo) is
    refused by the loader with a "did you mean" (see :func:`~tiffin.specs.problems.refuse_unknown`). It
    stays for callers that read it.
    """

    spec: T
    source: Path
    ignored: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    schema_url: str | None = None

    def warnings(self) -> list[str]:
        """One line per kind of problem, ready to print; empty when there is nothing to say."""
        lines = []
        if self.ignored:
            lines.append("ignored locally: " + ", ".join(self.ignored))
        return lines


def _schema_key(url: str) -> str:
    last = url.strip().rstrip("/").rsplit("/", 1)[-1].lower()
    for suffix in (".json", ".schema", ".yaml", ".yml"):
        last = last.removesuffix(suffix)
    return last


def kind_from_schema(url: str) -> type[SpecModel] | None:
    """The spec class an Azure ``$schema`` URL stands for, or ``None`` if it is not one of ours."""
    return _SCHEMA_KINDS.get(_schema_key(url))


def _guess_kind(data: Mapping[str, Any], source: str) -> type[SpecModel]:
    # Without $schema, Azure's CLI knows the kind from the command; the `type` key is the only hint
    # a file itself may carry (Azure's Kubernetes examples have no $schema line).
    kind = data.get("type")
    if isinstance(kind, str):
        kind = kind.strip().lower()
        if kind in ("managed", "kubernetes"):
            return OnlineDeployment
        if kind in ("model", "pipeline"):
            return BatchDeployment
    raise SpecError(
        "cannot tell whether this is an online or batch endpoint or deployment: "
        f"add a $schema line such as '$schema: {_SCHEMA_EXAMPLE}'",
        source=source,
    )


def _build(
    data: Mapping[str, Any],
    kind: type[SpecModel] | None,
    source: str,
    base_dir: Path | None,
    overrides: Sequence[str],
    schema_hint: str | None,
) -> tuple[SpecModel, list[str], list[str], str | None]:
    if kind is not None and kind not in SPEC_KINDS + ASSET_SPEC_KINDS:
        known = SPEC_KINDS + ASSET_SPEC_KINDS
        raise TypeError(f"kind must be one of {', '.join(k.__name__ for k in known)}, not {kind!r}")
    data = dict(data)
    schema = data.pop("$schema", None)
    if schema is None:
        schema = schema_hint
    if schema is not None and not isinstance(schema, str):
        raise SpecError(f"must be a URL (got {describe_value(schema)})", source=source, field="$schema")
    inferred = None
    if schema:
        if _schema_key(schema) == _PIPELINE_SCHEMA:
            raise SpecError(
                "pipeline component deployments are not supported by tiffin; deploy a model instead",
                source=source,
                field="$schema",
            )
        inferred = kind_from_schema(schema)
        if inferred is None and kind is None:
            raise SpecError(
                f"is not a schema tiffin knows (got {schema!r}); expected one of Azure ML's {_KNOWN_SCHEMAS}",
                source=source,
                field="$schema",
            )
    if kind is None:
        kind = inferred or _guess_kind(data, source)
    elif inferred is not None and inferred is not kind:
        label = getattr(inferred, "kind_label", inferred.__name__)
        wanted = getattr(kind, "kind_label", kind.__name__)
        raise SpecError(
            f"this file describes {article(label)} {label} (per its $schema), "
            f"but {article(wanted)} {wanted} is expected here",
            source=source,
            field="$schema",
        )
    # A Kubernetes deployment schema implies type: kubernetes, as Azure's CLI infers it.
    if kind is OnlineDeployment and schema and _schema_key(schema).startswith("kubernetes"):
        data.setdefault("type", "kubernetes")
    # So does each compute schema its compute type.
    if kind is Compute and schema and _schema_key(schema) in _COMPUTE_TYPES:
        data.setdefault("type", _COMPUTE_TYPES[_schema_key(schema)])
    data = apply_overrides(data, overrides, source=source, kind=kind)
    try:
        spec = kind.model_validate(data)
    except pydantic.ValidationError as exc:
        raise translate_validation_error(exc, source, data) from None
    refuse_unknown(spec, source, data)
    if base_dir is not None:
        resolve_paths(spec, base_dir)
        _resolve_model_string(spec, base_dir)
    return spec, collect_ignored(spec), [], schema


def _resolve_model_string(spec: SpecModel, base_dir: Path) -> None:
    """A deployment's ``model: models`` (a bare local path, not a reference) made absolute against ``base_dir``,
    as ``model.path`` is: left relative it was read from wherever the server or replica happened to run."""
    model = getattr(spec, "model", None)
    if isinstance(model, str) and model and not is_remote_path(model):
        local = model.removeprefix("file:")
        # normpath, not resolve(): pure, as resolve_paths is.
        spec.model = os.path.normpath(base_dir / local)  # type: ignore[attr-defined]


@overload
def load_spec(path: str | Path, kind: type[T], overrides: Sequence[str] = ()) -> LoadedSpec[T]: ...
@overload
def load_spec(path: str | Path, kind: None = None, overrides: Sequence[str] = ()) -> LoadedSpec[Any]: ...
def load_spec(path: str | Path, kind: type[T] | None = None, overrides: Sequence[str] = ()) -> LoadedSpec[Any]:
    """Load and validate a spec file copied from Azure (``$schema`` line and all).

    ``kind`` is one of :data:`SPEC_KINDS` or :data:`~tiffin.specs.assets.ASSET_SPEC_KINDS`; when ``None`` it
    comes from the file's ``$schema`` URL
    (or, lacking one, a ``type: kubernetes``/``type: model`` key). ``overrides`` are az-style
    ``--set`` strings, applied before validation. Local paths in the spec become absolute,
    relative to the file's folder (overridden ones too, as in Azure's CLI).
    Raises :class:`SpecError` naming the file and the field for any problem.
    """
    data, hint = read_yaml(path)
    file = Path(path).absolute()
    spec, ignored, unknown, schema = _build(data, kind, str(path), file.parent, overrides, hint)
    return LoadedSpec(spec=spec, source=file, ignored=ignored, unknown=unknown, schema_url=schema)


@overload
def parse_spec(
    data: Mapping[str, Any],
    kind: type[T],
    source: str = "<inline>",
    base_dir: Path | None = None,
    *,
    overrides: Sequence[str] = (),
) -> LoadedSpec[T]: ...
@overload
def parse_spec(
    data: Mapping[str, Any],
    kind: None,
    source: str = "<inline>",
    base_dir: Path | None = None,
    *,
    overrides: Sequence[str] = (),
) -> LoadedSpec[Any]: ...
def parse_spec(
    data: Mapping[str, Any],
    kind: type[T] | None,
    source: str = "<inline>",
    base_dir: Path | None = None,
    *,
    overrides: Sequence[str] = (),
) -> LoadedSpec[Any]:
    """Validate a spec given as a dict (from a REST body or the SDK) the way :func:`load_spec` does.

    ``source`` names the origin in error messages. Relative paths are resolved against
    ``base_dir`` when given and left as they are otherwise. ``data`` is not modified.
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"must be a mapping of fields (got {describe_value(data)})", source=source)
    spec, ignored, unknown, schema = _build(data, kind, source, base_dir, overrides, None)
    return LoadedSpec(spec=spec, source=Path(source), ignored=ignored, unknown=unknown, schema_url=schema)
