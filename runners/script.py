"""Runs an Azure ML online scoring script (``init()`` / ``run()``) unmodified.

The calling convention is azmlinfsrv's (azureml-inference-server-http), so a script behaves here as it
does on Azure:

* plain ``run(raw_data)`` gets the request body as a ``str``;
* ``run`` decorated with inference-schema's ``@input_schema`` (or tiffin's ``@typed``) gets the body's
  JSON object spread into keyword arguments by parameter name;
* ``run`` decorated with ``@rawhttp`` gets a Flask request object and may return an ``AMLResponse``;
* a ``request_headers`` parameter, when ``run`` declares one, receives the request's headers.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

from tiffin.errors import (
    BadRequestError,
    RunnerLoadError,
    ScoringError,
    TiffinError,
    UnsupportedMediaTypeError,
)
from tiffin.runners import _json
from tiffin.runners.protocol import Runner, RunnerSchema, ScoreRequest, ScoreResponse

__all__ = ["ScriptRunner", "ScriptRunnerConfig", "call_init", "import_scoring_script"]

logger = logging.getLogger("tiffin.runners.script")

_RAWHTTP_MODULES = ("azureml_inference_server_http.api.aml_request", "azureml.contrib.services.aml_request")
# (Where the first is installed, the second is an alias of it: see _alias_contrib_services.)
_RAWHTTP_HINT = (
    "this scoring script uses @rawhttp / AMLRequest from Azure's inference server: install it in the "
    "deployment's environment with `pip install azureml-inference-server-http` (tiffin then hands run() a "
    "Flask request as Azure does)"
)
_SCRIPT_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."


@dataclass(frozen=True)
class ScriptRunnerConfig:
    """Where the script and the model live, and the environment ``init()`` runs in."""

    code_dir: Path
    scoring_script: str
    model_dir: Path | None = None
    """The directory exported as ``AZUREML_MODEL_DIR`` (and ``TIFFIN_MODEL_DIR``)."""
    environment_variables: Mapping[str, str] = field(default_factory=dict)


def import_scoring_script(cfg: ScriptRunnerConfig) -> tuple[ModuleType, Path]:
    """Import the scoring script of ``cfg`` as Azure's servers do (online and batch alike): its variables and
    ``AZUREML_MODEL_DIR`` set first, its folder first on ``sys.path``; check it has ``init`` and ``run``."""
    script = (cfg.code_dir / cfg.scoring_script).resolve()
    if not script.is_file():
        raise RunnerLoadError(
            f"scoring script {script} does not exist; check code_configuration.code and "
            "code_configuration.scoring_script in the deployment YAML"
        )
    # Environment first: scripts read AZUREML_MODEL_DIR at import time as often as in init().
    os.environ.update(cfg.environment_variables)
    if cfg.model_dir is not None:
        os.environ["AZUREML_MODEL_DIR"] = str(cfg.model_dir)
        os.environ["TIFFIN_MODEL_DIR"] = str(cfg.model_dir)
    # Sibling modules of score.py must import, and must win over installed packages of the same name.
    code_dir = str(cfg.code_dir.resolve())
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    _alias_contrib_services()
    spec = importlib.util.spec_from_file_location("tiffin_user_score", script)
    if spec is None or spec.loader is None:
        raise RunnerLoadError(f"cannot import {script}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("azureml_inference_server_http", "azureml"):
            raise RunnerLoadError(f"{script.name}: {_RAWHTTP_HINT} ({exc})") from exc
        raise RunnerLoadError(
            f"importing {script.name} failed: {exc}; install the missing package in the environment "
            "the deployment runs in"
        ) from exc
    except BaseException as exc:
        logger.error("importing %s failed:\n%s", script, traceback.format_exc())
        raise RunnerLoadError(f"importing {script.name} raised {type(exc).__name__}: {exc}") from exc
    for name in ("init", "run"):
        if not callable(getattr(module, name, None)):
            raise RunnerLoadError(f"scoring script {script} does not define a {name}() function")
    return module, script


def _alias_contrib_services() -> None:
    """Where Azure's inference server is installed, make its older import path work, as the server does at start:
    ``azureml.contrib.services.aml_request`` / ``.aml_response`` are its ``api.aml_request`` / ``api.aml_response``.

    Only when nothing else provides that path (the old ``azureml-contrib-services`` package wins), and only where
    the server's package is there: the aliases import it (and Flask), which other scripts need not pay for.
    """
    if "azureml.contrib.services.aml_request" in sys.modules:
        return
    try:
        if importlib.util.find_spec("azureml_inference_server_http") is None:
            return
        if importlib.util.find_spec("azureml.contrib.services") is not None:
            return
    except (ImportError, ValueError):  # "azureml" absent, or a half-installed namespace: not provided
        pass
    try:
        request = importlib.import_module("azureml_inference_server_http.api.aml_request")
        response = importlib.import_module("azureml_inference_server_http.api.aml_response")
    except ImportError as exc:  # the package is there but broken (Flask missing): say so when a script needs it
        logger.warning("Azure's inference server is installed but does not import (%s); azureml.contrib.services "
                       "will not be importable", exc)  # fmt: skip
        return
    sys.modules["azureml.contrib.services.aml_request"] = request
    sys.modules["azureml.contrib.services.aml_response"] = response


def call_init(module: ModuleType, script: Path) -> None:
    """The script's ``init()``; RunnerLoadError with the exception when it raises (traceback in the log)."""
    try:
        module.init()
    except BaseException as exc:
        logger.error("init() of %s failed:\n%s", script, traceback.format_exc())
        raise RunnerLoadError(f"init() of {script.name} raised {type(exc).__name__}: {exc}") from exc


class ScriptRunner(Runner):
    """A :class:`~tiffin.runners.Runner` over an Azure-style scoring script."""

    def __init__(self, config: ScriptRunnerConfig) -> None:
        self.config = config
        self._module: ModuleType | None = None
        self._run: Callable[..., Any] | None = None
        self._call: Callable[[ScoreRequest], Any] | None = None
        self._schema = RunnerSchema()
        self._healthy = False

    # --- lifecycle -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Import the script, pick the calling convention, and call its ``init()``."""
        module, script = import_scoring_script(self.config)
        # Some Azure SDKs generate a driver module that forwards to the real script; azmlinfsrv calls the
        # real run() directly because the driver loses inference-schema's arguments. Do the same.
        driver = getattr(module, "driver_module", None)
        run = driver.run if isinstance(driver, ModuleType) and hasattr(driver, "run") else module.run
        self._module, self._run = module, run
        self._call = self._calling_convention(run, script)
        self._schema = self._read_schema(run)
        call_init(module, script)
        self._healthy = True

    def health(self) -> bool:
        """True once ``init()`` has returned."""
        return self._healthy

    def close(self) -> None:
        """Forget the script (Azure has no shutdown hook for scoring scripts)."""
        self._healthy = False

    def schema(self) -> RunnerSchema:
        """Schemas from ``@input_schema``/``@output_schema``, ``@typed``, or a swagger file beside the script."""
        return self._schema

    # --- scoring -------------------------------------------------------------------------------------

    def predict(self, request: ScoreRequest) -> ScoreResponse:
        """Call ``run()`` with the request as its convention wants; map its failures to responses."""
        assert self._call is not None, "load() must be called before predict()"
        try:
            result = self._call(request)
        except TiffinError:
            raise
        except Exception as exc:
            logger.error("run() raised:\n%s", traceback.format_exc())
            raise ScoringError(_SCRIPT_FAILED) from exc
        if _is_werkzeug_response(result):
            return _from_werkzeug(result)
        return ScoreResponse(body=_json.dumps(result))

    def _calling_convention(self, run: Callable[..., Any], script: Path) -> Callable[[ScoreRequest], Any]:
        params = list(inspect.signature(run).parameters.values())
        if any(p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params):
            raise RunnerLoadError(f"{script.name}: run() cannot take positional-only arguments, *args or **kwargs")
        wants_headers = any(p.name == "request_headers" for p in params)
        params = [p for p in params if p.name != "request_headers"]
        if not params:
            raise RunnerLoadError(f"{script.name}: run() must take an argument for the input data")

        schema_decorated = _is_schema_decorated(run)
        if _rawhttp_requested():
            if schema_decorated:
                raise RunnerLoadError(f"{script.name}: run() cannot be decorated with both @rawhttp and @input_schema")
            return _rawhttp_call(run, params[0].name)

        if schema_decorated:
            names = [(p.name, p.default) for p in params]

            def call_with_object(request: ScoreRequest) -> Any:
                kwargs = _object_arguments(request, names)
                if wants_headers:
                    kwargs["request_headers"] = dict(request.headers)
                return run(**kwargs)

            return call_with_object

        first = params[0].name

        def call_with_string(request: ScoreRequest) -> Any:
            if request.method == "GET":
                raw = json.dumps(_query_arguments(request))
            else:
                try:
                    raw = request.body.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise BadRequestError(f"Input cannot be decoded as UTF-8: {exc}") from None
            if wants_headers:
                return run(**{first: raw, "request_headers": dict(request.headers)})
            return run(raw)

        return call_with_string

    def _read_schema(self, run: Callable[..., Any]) -> RunnerSchema:
        user_swagger = {}
        # Azure serves a swagger file the user put in the code directory instead of generating one.
        for version, names in (("2", ("swagger.json", "swagger2.json")), ("3", ("swagger3.json",))):
            for name in names:
                path = self.config.code_dir / name
                if path.is_file():
                    user_swagger[version] = json.loads(path.read_text(encoding="utf-8"))
                    break
        typed_schema = getattr(run, "__tiffin_schema__", None)
        if typed_schema is not None:
            return RunnerSchema(input=typed_schema.input, output=typed_schema.output, swagger=user_swagger)
        if _inference_schema_decorated(run):
            from inference_schema import schema_util
            from inference_schema.schema_util import get_input_schema, get_output_schema

            # get_supported_versions came with inference-schema 1.4; older ones generate swagger 2 and 3 alike.
            supported = getattr(schema_util, "get_supported_versions", None)
            found = supported(run) if supported is not None else ()
            versions = tuple(sorted({v.split(".")[0] for v in found})) or ("2", "3")
            return RunnerSchema(
                input=get_input_schema(run) or None,
                output=get_output_schema(run) or None,
                versions=versions,
                swagger=user_swagger,
            )
        return RunnerSchema(swagger=user_swagger)


# --- calling conventions -------------------------------------------------------------------------------


def _query_arguments(request: ScoreRequest) -> dict[str, Any]:
    """azmlinfsrv's reading of GET parameters: JSON-decoded values, repeated keys as lists."""
    parsed: dict[str, Any] = {}
    for key, value in parse_qsl(request.query_string.decode("latin-1"), keep_blank_values=True):
        try:
            decoded: Any = json.loads(value)
        except ValueError:
            decoded = value
        if key in parsed:
            previous = parsed[key]
            parsed[key] = [*previous, decoded] if isinstance(previous, list) else [previous, decoded]
        else:
            parsed[key] = decoded
    return parsed


def _object_arguments(request: ScoreRequest, names: list[tuple[str, Any]]) -> dict[str, Any]:
    if request.method == "GET":
        body: Any = _query_arguments(request)
    else:
        if request.content_type != "application/json" and not request.content_type.endswith("+json"):
            raise UnsupportedMediaTypeError("Expects Content-Type to be application/json")
        if not request.body:
            raise BadRequestError("POST body is empty. Expecting a JSON dictionary.")
        try:
            body = json.loads(request.body)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested past json's stack
            raise BadRequestError(f"POST body could not be decoded as JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequestError("POST body should be a JSON dictionary.")
    kwargs: dict[str, Any] = {}
    for name, default in names:
        # Defaults are passed explicitly, as azmlinfsrv does: inference-schema's wrapper expects them.
        value = body.get(name, default)
        if value is inspect.Parameter.empty:
            raise BadRequestError(f"A value is not provided for the {name!r} parameter.")
        kwargs[name] = value
    return kwargs


def _is_schema_decorated(run: Callable[..., Any]) -> bool:
    return hasattr(run, "__tiffin_schema__") or _inference_schema_decorated(run)


def _inference_schema_decorated(run: Callable[..., Any]) -> bool:
    if "inference_schema" not in sys.modules:  # a script that never imported it cannot be decorated
        return False
    from inference_schema.schema_util import is_schema_decorated

    return bool(is_schema_decorated(run))


def _rawhttp_requested() -> bool:
    # @rawhttp only flips a module-level flag in Azure's package; read the same flag.
    return any(getattr(sys.modules.get(name), "_rawHttpRequested", False) for name in _RAWHTTP_MODULES)


def _rawhttp_call(run: Callable[..., Any], param: str) -> Callable[[ScoreRequest], Any]:
    try:
        from flask import Request
        from werkzeug.test import EnvironBuilder
    except ImportError as exc:  # pragma: no cover - flask comes with Azure's package
        raise RunnerLoadError(_RAWHTTP_HINT) from exc

    def call(request: ScoreRequest) -> Any:
        builder = EnvironBuilder(
            path=request.path,
            method=request.method,
            headers=list(request.headers.items()),
            data=request.body,
            query_string=request.query_string.decode("latin-1"),
        )
        try:
            return run(**{param: builder.get_request(Request)})
        finally:
            builder.close()

    return call


def _is_werkzeug_response(value: Any) -> bool:
    return hasattr(value, "get_data") and hasattr(value, "status_code") and hasattr(value, "headers")


def _from_werkzeug(response: Any) -> ScoreResponse:
    headers = [
        (k.lower(), str(v))
        for k, v in response.headers.items()
        if k.lower() not in ("content-length", "content-type", "x-ms-run-function-failed")
    ]
    failed = str(response.headers.get("x-ms-run-function-failed", "False")).lower() == "true"
    return ScoreResponse(
        body=response.get_data(),
        status=response.status_code,
        content_type=response.headers.get("content-type", "application/octet-stream"),
        headers=headers,
        run_function_failed=failed,
    )
