"""The control plane's route table: one row per REST operation.

Pure data, read by two consumers so they cannot drift apart: :func:`tiffin.api.create_api` builds
its routes from it and :func:`tiffin.api.openapi.openapi_document` describes exactly these routes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LOG_INSTANCE", "LOG_LINES", "LOG_OFFSET", "OPERATIONS", "SET_DEFAULT", "Operation", "QueryParam"]


@dataclass(frozen=True, slots=True)
class QueryParam:
    """An optional integer query parameter."""

    name: str
    default: int
    minimum: int
    description: str


@dataclass(frozen=True, slots=True)
class Operation:
    """One route: ``name`` is both the OpenAPI operationId and the handler's method name.

    ``body`` and ``returns`` name component schemas of the OpenAPI document (``returns="text"`` for a
    text/plain answer, ``None`` for an empty 204). ``write`` operations call ``on_change`` after they
    succeed; ``public`` ones need no admin token.
    """

    method: str
    path: str
    name: str
    summary: str
    body: str | None = None
    returns: str | None = None
    status: int = 200
    write: bool = False
    public: bool = False
    query: tuple[QueryParam, ...] = ()
    endpoint_auth: bool = False
    """Also open to a batch endpoint's own credentials (key or token), not only the admin token: starting
    its jobs and reading them. The endpoint is the route's ``{name}``, or the endpoint of its ``{job}``."""


LOG_LINES = QueryParam("lines", 100, 1, "How many lines, from the end.")
LOG_INSTANCE = QueryParam("instance", 0, 0, "Which replica (0-based).")
LOG_OFFSET = QueryParam(
    "offset", 0, 0, "Byte offset to read the log from (the X-Tiffin-Log-Offset of the last answer)."
)
SET_DEFAULT = QueryParam("set_default", 0, 0, "1: make it the endpoint's default deployment.")

_EP = "/online-endpoints/{name}"
_DEP = _EP + "/deployments/{deployment}"
_BEP = "/batch-endpoints/{name}"
_BDEP = _BEP + "/deployments/{deployment}"
_JOB = "/jobs/{job}"

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/health", "health", "Liveness of the control plane.", returns="Health", public=True),
    Operation("GET", "/openapi.json", "openapi", "This OpenAPI document.", returns="OpenAPI", public=True),
    Operation("GET", "/online-endpoints", "list_endpoints", "List online endpoints.", returns="EndpointList"),
    Operation(
        "POST",
        "/online-endpoints",
        "create_endpoint",
        "Create an online endpoint from its Azure spec; 409 if the name is taken.",
        body="EndpointSpec",
        returns="Endpoint",
        status=201,
        write=True,
    ),
    Operation("GET", _EP, "get_endpoint", "Show an online endpoint.", returns="Endpoint"),
    Operation(
        "PATCH",
        _EP,
        "update_endpoint",
        "Change some fields of an endpoint (description, tags, traffic, mirror_traffic, auth_mode...).",
        body="EndpointPatch",
        returns="Endpoint",
        write=True,
    ),
    Operation("DELETE", _EP, "delete_endpoint", "Delete an endpoint and all its deployments.", status=204, write=True),
    Operation(
        "PUT",
        _EP + "/traffic",
        "set_traffic",
        "Replace the live and/or mirror traffic split.",
        body="Traffic",
        returns="Endpoint",
        write=True,
    ),
    Operation(
        "GET",
        _EP + "/credentials",
        "get_credentials",
        "The endpoint's keys (key mode) or a fresh token (aml_token/aad_token modes).",
        returns="Credentials",
    ),
    Operation(
        "POST",
        _EP + "/regenerate-keys",
        "regenerate_keys",
        "Replace the primary or secondary key; in token modes, revoke every token.",
        body="RegenerateKeys",
        status=204,
        write=True,
    ),
    Operation("GET", _EP + "/stats", "get_stats", "The gateway's request statistics of the endpoint.", returns="Stats"),
    Operation(
        "GET", _EP + "/deployments", "list_deployments", "List an endpoint's deployments.", returns="DeploymentList"
    ),
    Operation("GET", _DEP, "get_deployment", "Show a deployment and its provisioning state.", returns="Deployment"),
    Operation(
        "PUT",
        _DEP,
        "put_deployment",
        "Create (201) or replace (200) a deployment from its Azure spec; the supervisor then provisions it.",
        body="DeploymentSpec",
        returns="Deployment",
        write=True,
    ),
    Operation(
        "DELETE",
        _DEP,
        "delete_deployment",
        "Delete a deployment; 409 while it still receives traffic.",
        status=204,
        write=True,
    ),
    # --- batch endpoints, deployments and jobs ----------------------------------------------------
    Operation("GET", "/batch-endpoints", "list_batch_endpoints", "List batch endpoints.", returns="BatchEndpointList"),
    Operation(
        "POST",
        "/batch-endpoints",
        "create_batch_endpoint",
        "Create a batch endpoint from its Azure spec; 409 if the name is taken.",
        body="BatchEndpointSpec",
        returns="BatchEndpoint",
        status=201,
        write=True,
    ),
    Operation("GET", _BEP, "get_batch_endpoint", "Show a batch endpoint.", returns="BatchEndpoint"),
    Operation(
        "PATCH",
        _BEP,
        "update_batch_endpoint",
        "Change some fields of a batch endpoint (description, tags, auth_mode, defaults.deployment_name).",
        body="BatchEndpointPatch",
        returns="BatchEndpoint",
        write=True,
    ),
    Operation(
        "DELETE", _BEP, "delete_batch_endpoint", "Delete a batch endpoint and its deployments.", status=204, write=True
    ),
    Operation(
        "GET",
        _BEP + "/credentials",
        "get_batch_credentials",
        "Keys or a fresh token to invoke the endpoint.",
        returns="Credentials",
    ),
    Operation(
        "GET",
        _BEP + "/deployments",
        "list_batch_deployments",
        "List a batch endpoint's deployments.",
        returns="BatchDeploymentList",
    ),
    Operation("GET", _BDEP, "get_batch_deployment", "Show a batch deployment.", returns="BatchDeployment"),
    Operation(
        "PUT",
        _BDEP,
        "put_batch_deployment",
        "Create (201) or replace (200) a batch deployment from its Azure spec.",
        body="BatchDeploymentSpec",
        returns="BatchDeployment",
        write=True,
        query=(SET_DEFAULT,),
    ),
    Operation(
        "DELETE",
        _BDEP,
        "delete_batch_deployment",
        "Delete a batch deployment; 409 while it is the default of an endpoint with others.",
        status=204,
        write=True,
    ),
    Operation(
        "POST",
        _BEP + "/jobs",
        "invoke_batch_endpoint",
        "Start a batch scoring job over input files; answers at once with the queued job. Takes the admin token "
        "(any local path) or the endpoint's own key/token (inputs from datastores and TIFFIN_INPUT_ROOTS only, "
        "outputs into datastores only, no environment_variables).",
        body="Invoke",
        returns="Job",
        status=201,
        write=True,
        endpoint_auth=True,
    ),
    Operation(
        "GET",
        _BEP + "/jobs",
        "list_batch_jobs",
        "List a batch endpoint's jobs, oldest first. Takes the admin token or the endpoint's own key/token.",
        returns="JobList",
        endpoint_auth=True,
    ),
    Operation(
        "GET",
        _BDEP + "/jobs",
        "list_batch_deployment_jobs",
        "List the jobs a batch deployment ran or will run, oldest first. Takes the admin token or the "
        "endpoint's own key/token.",
        returns="JobList",
        endpoint_auth=True,
    ),
    Operation("GET", "/jobs", "list_jobs", "List every batch job, oldest first.", returns="JobList"),
    Operation(
        "GET",
        _JOB,
        "get_job",
        "Show a job: status, progress, outputs, mini-batch errors. Takes the admin token or its endpoint's key/token.",
        returns="Job",
        endpoint_auth=True,
    ),
    Operation("POST", _JOB + "/cancel", "cancel_job", "Cancel a queued or running job.", returns="Job", write=True),
    Operation(
        "GET",
        _JOB + "/log",
        "get_job_log",
        "The job's log from a byte offset (X-Tiffin-Log-Offset: where to go on). Takes the admin token or its "
        "endpoint's key/token.",
        returns="text",
        query=(LOG_OFFSET,),
        endpoint_auth=True,
    ),
    Operation(
        "GET",
        _JOB + "/outputs/{output}",
        "download_job_output",
        "A completed job's output file ('score'). Takes the admin token or its endpoint's key/token.",
        returns="file",
        endpoint_auth=True,
    ),
)
