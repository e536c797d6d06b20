"""A deployment's desired state as the reconciler needs it: parsed once per store generation, written for replicas.

A replica reads its deployment's spec from a file (``deployment-<generation>.yml`` in the deployment's
folder), one file per *template* (:func:`~.policy.template_of`: what a replica runs), so replicas of the old
and the new spec can run side by side during a rolling update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tiffin.errors import SpecError
from tiffin.specs import OnlineDeployment, ProbeSettings, parse_spec
from tiffin.store.records import DeploymentRecord

from .policy import template_of
from .prepare import Launch

__all__ = ["Desired", "DesiredSpecs"]


@dataclass(frozen=True, slots=True)
class Desired:
    """A deployment's desired state, parsed once per store generation."""

    generation: int
    template: str
    count: int
    readiness: ProbeSettings
    liveness: ProbeSettings


class DesiredSpecs:
    """One deployment's :class:`Desired` state, and the spec files written for its templates."""

    def __init__(self, folder: Path) -> None:
        self._dir = folder
        self._spec_files: dict[str, tuple[Path, int]] = {}  # template -> (spec file, its generation)
        self._launches: dict[str, Launch] = {}  # template -> how its replicas start, once prepared
        self._desired: Desired | None = None
        self._spec_error: tuple[int, SpecError] | None = None

    def desired(
        self,
        record: DeploymentRecord,
        name: str,
        max_instances: int,
        inline: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    ) -> Desired:
        """The desired state of ``record`` (deployment ``name``), its spec file written; :class:`SpecError` if invalid.

        ``inline`` turns the spec's pinned asset references into the assets (:func:`tiffin.assets.resolve.
        inline_assets`): the file a replica reads names the registered model's stored files, never a reference.
        Parsed (or refused) once per generation: later calls for the same generation answer the same.
        """
        if self._desired is not None and self._desired.generation == record.generation:
            return self._desired
        if self._spec_error is not None and self._spec_error[0] == record.generation:
            raise self._spec_error[1]
        # The store's names are the truth: a YAML's endpoint_name may name another endpoint (and the
        # replica lays out its model under endpoint/deployment).
        spec = {**record.spec, "name": record.name, "endpoint_name": record.endpoint_name}
        try:
            # The template is of the pinned spec (the same versions run the same), the file of the assets.
            runnable = inline(spec) if inline is not None else spec
            parsed = parse_spec(runnable, OnlineDeployment, source=f"deployment {name}").spec
        except SpecError as exc:
            self._spec_error = (record.generation, exc)
            raise
        if parsed.instance_count > max_instances:
            # Checked at PUT too; a record stored before the cap, or by a server with a higher one, ends here.
            self._spec_error = (
                record.generation,
                SpecError(
                    f"is {parsed.instance_count}, above this server's limit of {max_instances} replicas "
                    "per deployment (TIFFIN_MAX_INSTANCES); lower instance_count or raise the setting",
                    field="instance_count",
                ),
            )
            raise self._spec_error[1]
        template = template_of(spec)
        if template not in self._spec_files:
            path = self._dir / f"deployment-{record.generation}.yml"
            self._dir.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".yml.partial")
            partial.write_text(yaml.safe_dump(runnable, sort_keys=False, allow_unicode=True), encoding="utf-8")
            partial.replace(path)  # a replica never reads a half-written spec
            self._spec_files[template] = (path, record.generation)
        self._desired = Desired(
            generation=record.generation,
            template=template,
            count=parsed.instance_count,
            readiness=parsed.readiness_probe,
            liveness=parsed.liveness_probe,
        )
        return self._desired

    def current(self) -> Desired | None:
        """The desired state last parsed, if any."""
        return self._desired

    def spec_file(self, template: str) -> tuple[Path, int]:
        """The spec file written for ``template``, and the generation it was written at."""
        return self._spec_files[template]

    def launch(self, template: str) -> Launch | None:
        """How replicas of ``template`` start, once :func:`~.prepare.prepare_template` has run for it; else None."""
        return self._launches.get(template)

    def set_launch(self, template: str, launch: Launch) -> None:
        """Record what preparing ``template`` made (ignored if the template was forgotten meanwhile)."""
        if template in self._spec_files:
            self._launches[template] = launch

    def forget_parsed(self) -> None:
        """Drop what was parsed: the record is of another deployment of that name (deleted and created again)."""
        self._desired = self._spec_error = None

    def forget_unused(self, in_use: set[str]) -> None:
        """Delete the spec files of templates no longer in ``in_use``."""
        for template in [t for t in self._spec_files if t not in in_use]:
            path, _ = self._spec_files.pop(template)
            self._launches.pop(template, None)
            _remove_files(path)

    def forget(self) -> None:
        """Delete every spec file written."""
        for path, _ in self._spec_files.values():
            _remove_files(path)
        self._spec_files.clear()
        self._launches.clear()


def _remove_files(spec: Path) -> None:
    """A template's spec file and the replica plan written beside it."""
    spec.unlink(missing_ok=True)
    spec.with_suffix(".plan.json").unlink(missing_ok=True)
