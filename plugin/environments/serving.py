"""Azure's serving packages in a user's requirements: ``azureml-defaults`` and ``azureml-inference-server-http``.

Azure's conda files list them because Azure's image runs its inference server from the environment. tiffin's
runtime serves the scoring script itself, so they are wanted only for what scoring code imports from them
(``azureml.contrib.services``' ``AMLRequest``/``rawhttp``, ``azureml.core``'s ``Model.get_model_path``), and they must
never break a deployment:

* **unpinned, they get a floor** (:data:`FLOORS`). ``azureml-defaults`` pulls ``azureml-dataset-runtime``, which
  caps numpy; a resolver that takes the newest numpy first then walks ``azureml-defaults`` back to 1.0.85 from
  2020, whose ``ruamel.yaml`` 0.15 no longer compiles on Python 3.11. With ``>=1.50`` (2023) the resolver
  settles numpy instead. A version the user pins is left as written.
* **if the environment cannot be built with them**, it is built without them, and the build log says so with
  uv's reason (:func:`tiffin.environments.builder.build`): the scoring script still runs; only its imports of
  those packages would fail, and the log says which packages were left out.
"""

from __future__ import annotations

from collections.abc import Iterable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["FLOORS", "serving_packages", "with_floors", "without_serving"]

FLOORS: dict[str, str] = {
    "azureml-defaults": ">=1.50",
    "azureml-inference-server-http": ">=1.0",
}
"""The lower bound an unpinned serving package gets (the first releases of 2023, for Python 3.8 to 3.12)."""


def _parsed(line: str) -> Requirement | None:
    try:
        return Requirement(line)
    except InvalidRequirement:
        return None


def serving_packages(requirements: Iterable[str]) -> list[str]:
    """The names of Azure's serving packages among ``requirements``, as canonical names."""
    names = []
    for line in requirements:
        requirement = _parsed(line)
        if requirement is not None and canonicalize_name(requirement.name) in FLOORS:
            names.append(canonicalize_name(requirement.name))
    return names


def with_floors(requirements: Iterable[str]) -> list[str]:
    """``requirements`` with each unpinned serving package given its floor (``azureml-defaults`` →
    ``azureml-defaults>=1.50``; extras and markers kept); every other line as it was."""
    out = []
    for line in requirements:
        requirement = _parsed(line)
        name = canonicalize_name(requirement.name) if requirement is not None else None
        if requirement is not None and name in FLOORS and not requirement.specifier and not requirement.url:
            requirement.specifier &= FLOORS[name]
            line = str(requirement)
        out.append(line)
    return out


def without_serving(requirements: Iterable[str]) -> list[str]:
    """``requirements`` without Azure's serving packages."""
    return [
        line
        for line in requirements
        if (requirement := _parsed(line)) is None or canonicalize_name(requirement.name) not in FLOORS
    ]
