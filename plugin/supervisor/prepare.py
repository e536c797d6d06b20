"""Before a deployment's replicas start: its replica plan written and its environment built (once per template).

Runs in a thread (:func:`prepare_template` blocks on files and on uv), so the event loop keeps serving. The plan
(:mod:`tiffin.replica.plan`) is what a replica reads instead of the YAML; the environment
(:mod:`tiffin.environments.runtime`) is the interpreter it is started with. What the environment step did
(where the environment came from, what was skipped and why, uv's output) goes to the deployment's
``environment.log``, which ``online-deployment get-logs`` shows before the replica's own log.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tiffin.containers.run import prepare_byoc_image
from tiffin.environments.runtime import PreparedEnvironment, describe, prepare
from tiffin.environments.sources import environment_of
from tiffin.replica.factory import plan_for
from tiffin.replica.plan import write_plan
from tiffin.specs import OnlineDeployment, load_spec

__all__ = ["Launch", "prepare_template", "replica_command"]


@dataclass(frozen=True)
class Launch:
    """How the replicas of one deployment template start."""

    plan: Path
    python: str
    environment: PreparedEnvironment | None = None

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The replica's process environment, from the supervisor's ``base``."""
        return dict(base) if self.environment is None else self.environment.process_env(base)


def replica_command(python: str, plan: Path, socket: Path) -> list[str]:
    """The command line of one replica serving ``plan`` on the Unix socket ``socket``.

    A socket rather than a loopback port: its folder (0700) lets only the server's user reach the
    replica, which takes requests without a credential (:mod:`tiffin.supervisor.sockets`).
    """
    return [python, "-m", "tiffin.replica.run", "--plan", str(plan), "--uds", str(socket)]


def prepare_template(
    spec_path: Path,
    *,
    name: str,
    home: Path,
    python: str,
    log_path: Path,
    environ: Mapping[str, str] = os.environ,
) -> Launch:
    """The plan of the deployment spec at ``spec_path`` (written beside it) and the environment it runs in,
    built now if need be. Raises :class:`~tiffin.errors.TiffinError` (a spec, build or interpreter error) with
    a message for the deployment's ``reason``."""
    loaded = load_spec(spec_path, OnlineDeployment)
    plan = plan_for(loaded, home=home, environ=environ)
    plan_path = spec_path.with_suffix(".plan.json")
    write_plan(plan, plan_path)
    spec = environment_of(loaded.spec, kind=plan.kind, owner=f"deployment '{name}'")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        # Azure's storage-initializer: where the model and code come from (a replica lays the model out at start).
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        log.write(f"--- deployment {name} ({spec_path.name}) at {when} ---\n[tiffin] runner: {plan.kind}\n")
        for key in ("model_dir", "model_path", "code_dir", "scoring_script", "model_uri", "model_repository"):
            if plan.runner.get(key):
                log.write(f"[tiffin] {key}: {plan.runner[key]}\n")
        if plan.kind == "byoc":
            # An image deployment: its image built (or found) here, so that its replicas start at once.
            prepare_byoc_image(plan.runner, log, environ)
        if spec is None:
            log.write(f"[tiffin] no environment to build: replicas run on tiffin's own Python ({python})\n")
            return Launch(plan=plan_path, python=python)
        describe(spec, f"environment of deployment {name} ({spec_path.name})", log)
        prepared = prepare(spec, home, log=log, environ=environ)
    return Launch(plan=plan_path, python=str(prepared.python), environment=prepared)
