"""``client.environments.build``, ``prune`` and ``list_built``: environments built on the server (issue 13).

The server builds (it owns ``$TIFFIN_HOME/envs``); the build streams back uv's output as it goes, so a build of
several minutes shows progress rather than a silent wait, and no fixed timeout cuts it short.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiffin.errors import SpecError, TiffinError

from ._transport import Transport, raise_for_status

if TYPE_CHECKING:  # imported where used: listing or showing needs no spec models (pydantic)
    from tiffin.specs import BatchDeployment, OnlineDeployment, SpecModel

__all__ = ["BUILD_ROUTE", "EnvironmentBuilds"]

BUILD_ROUTE = "/environments/-/build"
NDJSON = "application/x-ndjson"
_SILENCE_S = 180.0
"""How long a streamed build may send nothing before the client gives up: the server sends a line at least every
30 s (``{"waiting": S}``) while uv is quiet, so this much silence means the connection is gone."""


class EnvironmentBuilds:
    """Building and pruning environments (mixed into :class:`~tiffin.sdk._assets.EnvironmentOperations`)."""

    _t: Transport

    def build(
        self,
        environment: SpecModel | Mapping[str, Any] | str | None = None,
        *,
        deployment: OnlineDeployment | BatchDeployment | Mapping[str, Any] | None = None,
        kind: str | None = None,
        on_output: Callable[[str], object] | None = None,
    ) -> dict[str, Any]:
        """Build on the server the environment a deployment runs in (``deployment``: an online or batch deployment
        spec; a mapping is an online one unless ``kind="batch"``), or ``environment`` (an environment spec, a
        conda file's path as ``{"conda_file": PATH}``, or a reference: ``azureml:NAME:VERSION``,
        ``azureml:NAME@latest``, a curated ``azureml://registries/azureml/...``), as the deployment's replicas
        would have it; reused when built already.

        ``on_output`` gets each line of the build's output (uv's) as it comes, and a line every half minute uv
        says nothing. Returns ``key``, ``path``,
        ``python``, ``requirements``, ``skipped``, ``notes``, ``reused``, ``seconds``, ``log`` (``key`` None:
        it runs in tiffin's own environment). What cannot be resolved or built raises :class:`SpecError` (422)
        with the field, or uv's own words.
        """
        body = _build_body(environment, deployment, kind)
        result: dict[str, Any] | None = None
        for line in self._t.stream_lines("POST", BUILD_ROUTE, json=body, accept=NDJSON, read_timeout=_SILENCE_S):
            if not line.strip():
                continue
            event = json.loads(line)
            if "log" in event:
                if on_output is not None:
                    on_output(str(event["log"]))
            elif "waiting" in event:
                if on_output is not None:
                    on_output(f"[tiffin] still building ({event['waiting']} s)")
            elif "result" in event:
                result = event["result"]
            elif "error" in event:
                error = event["error"]
                _raise(int(error.get("status", 500)), str(error.get("message", "")))
        if result is None:
            raise TiffinError(f"the server at {self._t.url} ended the build's answer without its result; try again")
        return result

    def prune(self, *, dry_run: bool = False, shared: bool = False) -> dict[str, Any]:
        """Remove the built environments that no deployment, queued or running batch job or live process uses
        (``dry_run``: only say which): ``removed`` (key, size_bytes...), ``kept`` (with ``used_by``),
        ``unresolved`` (deployments whose environment cannot be resolved any more), ``freed_bytes``.

        ``shared``: prune all the same when the server's environments are in a ``TIFFIN_ENVS_DIR`` that other
        homes may share (:class:`~tiffin.errors.ConflictError` without it)."""
        return self._t.request("POST", "/environments/-/prune", json={"dry_run": dry_run, "shared": shared})

    def list_built(self) -> list[dict[str, Any]]:
        """The environments built on the server: key, path, python, source, built_at, size_bytes."""
        return self._t.request("GET", "/environments/-/built")


def _build_body(
    environment: SpecModel | Mapping[str, Any] | str | None,
    deployment: OnlineDeployment | BatchDeployment | Mapping[str, Any] | None,
    kind: str | None,
) -> dict[str, Any]:
    from tiffin.specs import BatchDeployment, Environment, OnlineDeployment, SpecModel

    if (environment is None) == (deployment is None):
        raise TiffinError("give the environment to build, or the deployment whose environment to build (not both)")
    if deployment is not None:
        if isinstance(deployment, OnlineDeployment | BatchDeployment):
            given = "batch" if isinstance(deployment, BatchDeployment) else "online"
            if kind is not None and kind != given:
                raise TiffinError(f"the deployment is {given}, but kind says {kind}")
            return {"deployment": deployment.to_yaml_dict(), "kind": given}
        if isinstance(deployment, SpecModel):
            raise TiffinError(f"expected an online or batch deployment, not a {type(deployment).__name__}")
        return {"deployment": dict(deployment), "kind": kind or "online"}
    if kind is not None:
        raise TiffinError("kind goes with a deployment; an environment is built as it is")
    if isinstance(environment, Environment):
        return {"environment": environment.to_yaml_dict()}
    if isinstance(environment, SpecModel):
        raise TiffinError(f"expected an environment, not a {type(environment).__name__}")
    if isinstance(environment, Mapping):
        data = dict(environment)
        conda_file = data.get("conda_file")
        if isinstance(conda_file, str | Path) and not str(conda_file).startswith(("http:", "https:")):
            # The server reads the file (it runs on this machine) and does not share this process's directory.
            data["conda_file"] = str(Path(conda_file).expanduser().absolute())
        return {"environment": data}
    return {"environment": str(environment)}


def _raise(status: int, message: str) -> None:
    """The error a streamed build ended with, as the SDK raises an answer of that status."""
    import httpx

    raise_for_status(httpx.Response(status, json={"message": message}, request=httpx.Request("POST", BUILD_ROUTE)))
    raise SpecError(message)  # a 2xx "error" is no answer the server gives; refuse it all the same
