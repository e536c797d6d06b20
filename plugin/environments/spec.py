"""What a deployment's environment is, once its source (a conda file, an MLflow model's ``python_env.yaml``, a
requirements file) has been read: an interpreter version and pip requirement lines.

:class:`EnvironmentSpec` is the one shape the sources (:mod:`tiffin.environments.sources`), the conda
translation (:mod:`tiffin.environments.conda`) and the builder share; its :meth:`~EnvironmentSpec.key` names the
built environment, so two deployments with equal keys share one.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["SUPPORTED_PYTHONS", "EnvironmentSpec", "normalise_requirement", "python_minor"]

SUPPORTED_PYTHONS: tuple[str, ...] = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")
"""The interpreter minors tiffin's runtime runs on inside an environment (issue 13)."""


def python_minor(version: str) -> str:
    """``"3.10"`` for ``"3.10"`` and ``"3.10.4"``: environments are keyed and interpreters found by minor."""
    return ".".join(version.split(".")[:2])


def normalise_requirement(line: str) -> str:
    """One requirement line as the key compares it: a PEP 508 requirement in packaging's canonical spelling
    (``Scikit_Learn >= 1.2`` and ``scikit-learn>=1.2`` are one), anything else (``-r file``, ``--extra-index-url``,
    a URL) with its whitespace collapsed, as written."""
    stripped = " ".join(line.split())
    try:
        requirement = Requirement(stripped)
    except InvalidRequirement:
        return stripped
    requirement.name = canonicalize_name(requirement.name)
    return str(requirement)


@dataclass(frozen=True, slots=True)
class EnvironmentSpec:
    """An environment to build: the interpreter and the pip requirements, and what was left out on the way."""

    python: str | None
    """``"3.10"`` (major.minor) or ``"3.10.4"``; None: tiffin's own interpreter's minor."""
    requirements: tuple[str, ...]
    """PEP 508 lines (and pip options kept verbatim from a ``pip:`` section), in their order, duplicates dropped."""
    skipped: tuple[str, ...] = ()
    """Conda packages with no pip counterpart that were skipped (``mkl``, ``cudatoolkit``...): reported, not built."""
    source: str = ""
    """Where it came from, for messages: ``"conda_file of deployment 'blue'"``."""
    notes: tuple[str, ...] = ()
    """Choices made on the user's behalf, to report with ``skipped``: a python range narrowed to one minor, an
    image that tiffin does not run."""

    @property
    def python_minor(self) -> str:
        """The interpreter minor the environment runs on: its own, else tiffin's."""
        if self.python is None:
            return f"{sys.version_info.major}.{sys.version_info.minor}"
        return python_minor(self.python)

    def key(self, runtime_version: str) -> str:
        """sha256 (hex) over the interpreter minor, the normalised requirements and tiffin's runtime version.

        The requirements are compared as a set (sorted after normalising): their order changes nothing pip
        or uv resolves, and deployments listing the same packages differently should share one environment.
        ``skipped``, ``source`` and ``notes`` are left out: they do not change what is built.
        """
        requirements = sorted({normalise_requirement(line) for line in self.requirements})
        payload = json.dumps([self.python_minor, requirements, runtime_version], separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()
